//go:build amd64 && !purego

package voice

import (
	"math/rand/v2"
	"syscall"
	"testing"
	"unsafe"
)

// TestKernelsAVX2AllLengths calls the assembly directly, also on the
// lengths under minAsm that dot, dot3 and dot4 leave to Go, and checks
// that it never reads past the slices: a and b end at a page whose
// successor is unmapped, so a read beyond them faults.
func TestKernelsAVX2AllLengths(t *testing.T) {
	if !useAVX2 {
		t.Skip("this CPU lacks AVX2 or FMA; the pure-Go kernels run")
	}
	page := syscall.Getpagesize()
	mem, err := syscall.Mmap(-1, 0, 4*page, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(mem)
	// Pages 1 and 3 are guards.
	if err := syscall.Mprotect(mem[page:2*page], syscall.PROT_NONE); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mprotect(mem[3*page:], syscall.PROT_NONE); err != nil {
		t.Fatal(err)
	}
	// The pages as float32s (mmap returns page-aligned memory).
	floats := func(p []byte) []float32 {
		return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(p))), len(p)/4)
	}
	pa, pb := floats(mem[:page]), floats(mem[2*page:3*page])
	r := rand.New(rand.NewPCG(15, 3))
	for i := range pa {
		pa[i] = r.Float32()*2 - 1
	}
	for i := range pb {
		pb[i] = r.Float32()*2 - 1
	}
	for n := 0; n <= 200; n++ {
		a := pa[len(pa)-n:]
		for lags := 1; lags <= 4; lags++ {
			b := pb[len(pb)-n-lags+1:]
			var got []float32
			switch lags {
			case 1:
				got = []float32{dotAVX2(a, b)}
			case 3:
				r0, r1, r2 := dot3AVX2(a, b)
				got = []float32{r0, r1, r2}
			case 4:
				r0, r1, r2, r3 := dot4AVX2(a, b)
				got = []float32{r0, r1, r2, r3}
			default:
				continue
			}
			for l, g := range got {
				want, mag := exactDot(a, b, l)
				if diff := float64(g) - want; diff > kernelTolerance(n, mag) || -diff > kernelTolerance(n, mag) {
					t.Errorf("%d-lag assembly n=%d lag %d = %v; exact %v", lags, n, l, g, want)
				}
			}
		}
	}
}
