//go:build !amd64 || purego

package voice

// Without the amd64 assembly the analysis calls the pure-Go kernels.

// dot returns the inner product of a and b[:len(a)].
func dot(a, b []float32) float32 { return dotGo(a, b) }

// dot3 returns the inner products of a with b, b[1:] and b[2:]; b must hold
// len(a)+2 samples.
func dot3(a, b []float32) (r0, r1, r2 float32) { return dot3Go(a, b) }

// dot4 returns the inner products of a with b, b[1:], b[2:] and b[3:]; b
// must hold len(a)+3 samples.
func dot4(a, b []float32) (r0, r1, r2, r3 float32) { return dot4Go(a, b) }

// kernelsAsm says whether dot, dot3 and dot4 run assembly.
const kernelsAsm = false
