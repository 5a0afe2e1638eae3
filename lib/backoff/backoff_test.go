package backoff

import (
	"context"
	"testing"
	"time"

	"github.com/calmline/calmline/lib/clock/clocktest"
)

func TestDelayGrowsToMax(t *testing.T) {
	p := Policy{Initial: 50 * time.Millisecond, Max: time.Second}
	want := []time.Duration{50, 100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		if got := p.Delay(i + 1); got != w*time.Millisecond {
			t.Errorf("Delay(%d) = %v; want %v", i+1, got, w*time.Millisecond)
		}
	}
	if got := p.Delay(10_000); got != time.Second {
		t.Errorf("Delay(10000) = %v; want the max (no overflow)", got)
	}
	if got := (Policy{Initial: time.Second, Multiplier: 3, Max: time.Minute}).Delay(3); got != 9*time.Second {
		t.Errorf("multiplier 3, attempt 3: %v; want 9s", got)
	}
}

func TestJitterKeepsHalf(t *testing.T) {
	d := 100 * time.Millisecond
	if got := Jitter(d, 0); got != d/2 {
		t.Errorf("Jitter(d, 0) = %v; want d/2", got)
	}
	if got := Jitter(d, 0.999999); got >= d || got < d*99/100 {
		t.Errorf("Jitter(d, ~1) = %v; want just under d", got)
	}
	// Over many draws the delays spread over [d/2, d).
	b := New(Policy{Initial: d, Max: d}, nil)
	lo, hi := d, time.Duration(0)
	for range 1000 {
		x := b.Next()
		if x < d/2 || x >= d {
			t.Fatalf("delay %v outside [%v, %v)", x, d/2, d)
		}
		lo, hi = min(lo, x), max(hi, x)
	}
	if hi-lo < d/4 {
		t.Errorf("1000 delays spread over only %v; want jitter", hi-lo)
	}
}

func TestWaitUsesTheClockAndResets(t *testing.T) {
	clk := clocktest.New(time.Unix(0, 0))
	b := New(Policy{Initial: 100 * time.Millisecond, Max: time.Second}, clk).WithRand(func() float64 { return 0 })
	ctx := context.Background()
	for i, want := range []time.Duration{50, 100, 200} {
		done := make(chan error, 1)
		go func() { done <- b.Wait(ctx) }()
		if got := clk.WaitForTimers(t, 1); got[0] != want*time.Millisecond {
			t.Fatalf("wait %d: timer of %v; want %v", i+1, got[0], want*time.Millisecond)
		}
		select {
		case <-done:
			t.Fatal("Wait returned before the clock moved")
		default:
		}
		clk.Advance(want * time.Millisecond)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if b.Failures() != 3 {
		t.Errorf("%d failures; want 3", b.Failures())
	}
	b.Reset()
	if d := b.Next(); d != 50*time.Millisecond {
		t.Errorf("after Reset the delay is %v; want the first again", d)
	}
}

func TestWaitEndsWithTheContext(t *testing.T) {
	clk := clocktest.New(time.Unix(0, 0))
	b := New(Policy{Initial: time.Hour}, clk)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Wait(ctx) }()
	clk.WaitForTimers(t, 1)
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("Wait after cancel: %v; want context.Canceled", err)
	}
	if n := len(clk.Timers()); n != 0 {
		t.Errorf("%d timers left behind; want the wait's stopped", n)
	}
}
