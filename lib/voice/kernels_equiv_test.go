package voice

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
)

// The kernels the analysis calls (assembly on amd64 with AVX2 and FMA)
// must agree with the pure-Go ones within float32 rounding: both are
// within (n+1)·2⁻²⁴·Σ|aᵢbᵢ₊ₗ| of the exact inner product, plus n·2⁻¹⁴⁸
// for products that underflow to subnormals. kernelTolerance is that
// bound; against each other they may differ by twice it.

// exactDot returns the inner product of a and b[l:] in float64, where the
// products of float32s are exact, and the sum of their magnitudes.
func exactDot(a, b []float32, l int) (sum, mag float64) {
	for i, x := range a {
		p := float64(x) * float64(b[i+l])
		sum += p
		mag += math.Abs(p)
	}
	return sum, mag
}

// kernelTolerance is the bound on a float32 inner product's error.
func kernelTolerance(n int, mag float64) float64 {
	return float64(n+1)*0x1p-24*mag + float64(n)*0x1p-148
}

// checkKernels compares dot, dot3 and dot4 on a and b (len(b) ≥ len(a)+3)
// with the exact inner products and with the pure-Go kernels.
func checkKernels(t *testing.T, name string, a, b []float32) {
	t.Helper()
	n := len(a)
	type result struct {
		kernel string
		lag    int
		got    float32
		pure   float32
	}
	d := dot(a, b)
	r0, r1, r2 := dot3(a, b)
	q0, q1, q2, q3 := dot4(a, b)
	p0, p1, p2 := dot3Go(a, b)
	s0, s1, s2, s3 := dot4Go(a, b)
	for _, r := range []result{
		{"dot", 0, d, dotGo(a, b)},
		{"dot3", 0, r0, p0}, {"dot3", 1, r1, p1}, {"dot3", 2, r2, p2},
		{"dot4", 0, q0, s0}, {"dot4", 1, q1, s1}, {"dot4", 2, q2, s2}, {"dot4", 3, q3, s3},
	} {
		want, mag := exactDot(a, b, r.lag)
		tol := kernelTolerance(n, mag)
		if diff := math.Abs(float64(r.got) - want); !(diff <= tol) {
			t.Fatalf("%s: %s n=%d lag %d = %v; exact %v, off by %g > %g", name, r.kernel, n, r.lag, r.got, want, diff, tol)
		}
		if diff := math.Abs(float64(r.got) - float64(r.pure)); !(diff <= 2*tol) {
			t.Fatalf("%s: %s n=%d lag %d = %v; pure Go %v, apart by %g > %g", name, r.kernel, n, r.lag, r.got, r.pure, diff, 2*tol)
		}
	}
}

// TestKernelsMatchPureGo covers every length 0–300 (so every remainder of
// the vector width and of the unrolled loops), every alignment of a and b
// within a 32-byte vector, and inputs of one sign (no cancellation, the
// bound tight), mixed signs, wide magnitudes and zeros.
func TestKernelsMatchPureGo(t *testing.T) {
	t.Logf("assembly kernels: %v", kernelsAsm)
	r := rand.New(rand.NewPCG(15, 2))
	gens := map[string]func() float32{
		"uniform":  func() float32 { return r.Float32()*2 - 1 },
		"positive": func() float32 { return r.Float32() },
		"wide":     func() float32 { return float32(math.Ldexp(r.Float64()*2-1, r.IntN(60)-30)) },
		"sparse": func() float32 {
			if r.IntN(4) == 0 {
				return r.Float32()
			}
			return 0
		},
	}
	bufA := make([]float32, 320)
	bufB := make([]float32, 320)
	for name, gen := range gens {
		for n := 0; n <= 300; n++ {
			for off := range 8 {
				offB := (off * 5) % 8
				a := bufA[off : off+n]
				b := bufB[offB : offB+n+3]
				for i := range a {
					a[i] = gen()
				}
				for i := range b {
					b[i] = gen()
				}
				checkKernels(t, name, a, b)
			}
		}
	}
}

// TestKernelsExact checks inputs whose inner products are exact in float32
// (small integers), where every summation order gives the same result.
func TestKernelsExact(t *testing.T) {
	for n := 0; n <= 100; n++ {
		a := make([]float32, n)
		b := make([]float32, n+3)
		for i := range a {
			a[i] = float32(i%7 - 3)
		}
		for i := range b {
			b[i] = float32(i%5 - 2)
		}
		want := func(l int) float32 {
			s, _ := exactDot(a, b, l)
			return float32(s)
		}
		if got := dot(a, b); got != want(0) {
			t.Errorf("dot n=%d = %v; want %v", n, got, want(0))
		}
		r0, r1, r2 := dot3(a, b)
		q0, q1, q2, q3 := dot4(a, b)
		for l, got := range []float32{r0, r1, r2} {
			if got != want(l) {
				t.Errorf("dot3 n=%d lag %d = %v; want %v", n, l, got, want(l))
			}
		}
		for l, got := range []float32{q0, q1, q2, q3} {
			if got != want(l) {
				t.Errorf("dot4 n=%d lag %d = %v; want %v", n, l, got, want(l))
			}
		}
	}
}

// TestKernelsShortB checks that a b too short for the lags panics (a
// bounds check) rather than reading past it.
func TestKernelsShortB(t *testing.T) {
	a := make([]float32, 16)
	for _, c := range []struct {
		name string
		call func()
	}{
		{"dot", func() { dot(a, make([]float32, 15)) }},
		{"dot3", func() { dot3(a, make([]float32, 17)) }},
		{"dot4", func() { dot4(a, make([]float32, 18)) }},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s with a short b did not panic", c.name)
				}
			}()
			c.call()
		}()
	}
}

// FuzzKernels feeds arbitrary float32 bit patterns (NaN, infinities and
// magnitudes above 2⁶⁰, whose sums could overflow, mapped to finite
// values), lengths and alignments.
func FuzzKernels(f *testing.F) {
	f.Add([]byte{}, uint8(0))
	f.Add(make([]byte, 4*(104+3+104)), uint8(3))
	seed := make([]byte, 4*(27+3+27))
	for i := range seed {
		seed[i] = byte(i * 37)
	}
	f.Add(seed, uint8(5))
	f.Fuzz(func(t *testing.T, data []byte, off uint8) {
		vals := make([]float32, 8+len(data)/4)
		for i := 8; i < len(vals); i++ {
			x := math.Float32frombits(binary.LittleEndian.Uint32(data[4*(i-8):]))
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) || math.Abs(float64(x)) > 0x1p60 {
				x = float32(math.Mod(float64(binary.LittleEndian.Uint32(data[4*(i-8):])), 1000)) - 500
			}
			vals[i] = x
		}
		vals = vals[8:]
		if len(vals) < 3 {
			return
		}
		n := (len(vals) - 3) / 2
		o := int(off % 8)
		a := make([]float32, n+8)[o : o+n]
		copy(a, vals[:n])
		b := vals[n : 2*n+3]
		checkKernels(t, "fuzz", a, b)
	})
}
