package session

import (
	"testing"
	"time"
)

// TestLagMeterSmoothsAndForgets checks the realtime lag signal: one slow
// second moves it only part of the way, a sustained lag takes it there,
// it comes back as scores come on time again, and with no score for
// lagStale it reads 0 (no evidence of lag).
func TestLagMeterSmoothsAndForgets(t *testing.T) {
	var g lagMeter
	at := time.Unix(1_800_000_000, 0)
	second := func(d float64) {
		for range 100 { // 100 calls' scores in a second
			g.observe(at, d)
		}
		at = at.Add(time.Second)
	}
	if v := g.value(at); v != 0 {
		t.Fatalf("no scores yet: %v; want 0", v)
	}
	for range 10 {
		second(0.2)
	}
	if v := g.value(at); v < 190*time.Millisecond || v > 210*time.Millisecond {
		t.Fatalf("scores 200 ms late: %v; want 200 ms", v)
	}
	second(3) // one slow second
	v := g.value(at)
	if v < 400*time.Millisecond || v > time.Second {
		t.Errorf("after one second 3 s late: %v; want part of the way (about 0.7 s)", v)
	}
	for range 20 {
		second(3)
	}
	if v := g.value(at); v < 2800*time.Millisecond {
		t.Errorf("after 20 s of scores 3 s late: %v; want near 3 s", v)
	}
	for range 30 {
		second(0.2)
	}
	if v := g.value(at); v > 250*time.Millisecond {
		t.Errorf("30 s after realtime caught up: %v; want back near 200 ms", v)
	}
	if v := g.value(at.Add(lagStale + time.Second)); v != 0 {
		t.Errorf("with no score for longer than %v: %v; want 0", lagStale, v)
	}
}
