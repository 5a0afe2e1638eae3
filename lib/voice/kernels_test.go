package voice

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestKernels(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{1, 3, 4, 27, 104} {
		a := make([]float32, n)
		b := make([]float32, n+3)
		for i := range a {
			a[i] = r.Float32()*2 - 1
		}
		for i := range b {
			b[i] = r.Float32()*2 - 1
		}
		ref := func(l int) float64 {
			var s float64
			for i := range a {
				s += float64(a[i]) * float64(b[i+l])
			}
			return s
		}
		near := func(got float32, want float64) bool { return math.Abs(float64(got)-want) < 1e-4 }
		if got := dot(a, b); !near(got, ref(0)) {
			t.Errorf("dot n=%d: %v; want %v", n, got, ref(0))
		}
		r0, r1, r2 := dot3(a, b)
		for l, got := range []float32{r0, r1, r2} {
			if !near(got, ref(l)) {
				t.Errorf("dot3 n=%d lag %d: %v; want %v", n, l, got, ref(l))
			}
		}
		q0, q1, q2, q3 := dot4(a, b)
		for l, got := range []float32{q0, q1, q2, q3} {
			if !near(got, ref(l)) {
				t.Errorf("dot4 n=%d lag %d: %v; want %v", n, l, got, ref(l))
			}
		}
	}
}

func BenchmarkKernels(b *testing.B) {
	x := make([]float32, 104)
	y := make([]float32, 120)
	for i := range y {
		y[i] = float32(i%7) * 0.1
	}
	for i := range x {
		x[i] = float32(i%5) * 0.1
	}
	var s float32
	b.Run("dot104x12", func(b *testing.B) {
		for b.Loop() {
			for l := range 12 {
				s += dot(x, y[l:])
			}
		}
	})
	b.Run("dot3_104x4", func(b *testing.B) {
		for b.Loop() {
			for l := 0; l < 12; l += 3 {
				r0, r1, r2 := dot3(x, y[l:])
				s += r0 + r1 + r2
			}
		}
	})
	b.Run("dot4_104x3", func(b *testing.B) {
		for b.Loop() {
			for l := 0; l < 12; l += 4 {
				r0, r1, r2, r3 := dot4(x, y[l:])
				s += r0 + r1 + r2 + r3
			}
		}
	})
	_ = s
}
