//go:build amd64 && !purego

package voice

import "golang.org/x/sys/cpu"

// useAVX2 selects the assembly kernels: the CPU and the operating system
// support AVX2 and FMA (x/sys/cpu checks both, including that the OS saves
// the YMM registers).
var useAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// kernelsAsm says whether dot, dot3 and dot4 run assembly.
var kernelsAsm = useAVX2

// minAsm is the shortest input worth the assembly's call: below one
// vector of eight the inlined pure-Go loop is as fast.
const minAsm = 8

// dot returns the inner product of a and b[:len(a)].
func dot(a, b []float32) float32 {
	b = b[:len(a)] // the bounds check the assembly relies on
	if useAVX2 && len(a) >= minAsm {
		return dotAVX2(a, b)
	}
	return dotGo(a, b)
}

// dot3 returns the inner products of a with b, b[1:] and b[2:]; b must hold
// len(a)+2 samples.
func dot3(a, b []float32) (r0, r1, r2 float32) {
	b = b[:len(a)+2]
	if useAVX2 && len(a) >= minAsm {
		return dot3AVX2(a, b)
	}
	return dot3Go(a, b)
}

// dot4 returns the inner products of a with b, b[1:], b[2:] and b[3:]; b
// must hold len(a)+3 samples.
func dot4(a, b []float32) (r0, r1, r2, r3 float32) {
	b = b[:len(a)+3]
	if useAVX2 && len(a) >= minAsm {
		return dot4AVX2(a, b)
	}
	return dot4Go(a, b)
}

// The assembly in kernels_amd64.s. Each reads a[:len(a)] and b from its
// start to len(a)-1 plus its largest lag; the callers above have checked
// that b is that long.

//go:noescape
func dotAVX2(a, b []float32) float32

//go:noescape
func dot3AVX2(a, b []float32) (r0, r1, r2 float32)

//go:noescape
func dot4AVX2(a, b []float32) (r0, r1, r2, r3 float32)
