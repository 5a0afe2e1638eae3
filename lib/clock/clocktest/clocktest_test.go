package clocktest

import (
	"testing"
	"time"
)

func TestTimersFireWhenTheClockReachesThem(t *testing.T) {
	c := New(time.Unix(100, 0))
	a, b := c.NewTimer(2*time.Second), c.NewTimer(time.Second)
	now := c.NewTimer(0)
	select {
	case <-now.C():
	default:
		t.Error("a timer of 0 did not fire at once")
	}
	if got := c.WaitForTimers(t, 2); len(got) != 2 || got[0] != 2*time.Second || got[1] != time.Second {
		t.Fatalf("timers %v; want [2s 1s]", got)
	}
	c.Advance(999 * time.Millisecond)
	select {
	case <-b.C():
		t.Fatal("a 1 s timer fired after 999 ms")
	default:
	}
	c.Advance(time.Millisecond)
	if at := <-b.C(); !at.Equal(time.Unix(101, 0)) {
		t.Errorf("fired at %v; want the clock's time, 101 s", at)
	}
	if !a.Stop() {
		t.Error("Stop of a pending timer reported false")
	}
	c.Advance(time.Hour)
	select {
	case <-a.C():
		t.Error("a stopped timer fired")
	default:
	}
	if a.Stop() || b.Stop() {
		t.Error("Stop of a fired or stopped timer reported true")
	}
	if got := c.Now(); !got.Equal(time.Unix(100+1+3600, 0)) {
		t.Errorf("Now %v after advancing 1 h 1 s", got)
	}
}

func TestChangedSignalsANewTimer(t *testing.T) {
	c := New(time.Unix(0, 0))
	ch := c.Changed()
	go c.NewTimer(time.Second)
	select {
	case <-ch:
	case <-time.After(10 * time.Second): // a bound, not a synchronisation
		t.Fatal("no signal for a new timer")
	}
	if n := len(c.Timers()); n != 1 {
		t.Errorf("%d timers; want 1", n)
	}
}
