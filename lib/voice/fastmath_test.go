package voice

import (
	"math"
	"testing"
)

func TestFastLog2(t *testing.T) {
	worst := 0.0
	for x := 1e-12; x < 1e6; x *= 1.0037 {
		got := float64(fastLog2(float32(x)))
		want := math.Log2(float64(float32(x)))
		worst = max(worst, math.Abs(got-want))
	}
	if worst > 5e-6 {
		t.Errorf("fastLog2: worst error %g; want ≤ 5e-6 (float32 rounding of values up to 40)", worst)
	}
}
