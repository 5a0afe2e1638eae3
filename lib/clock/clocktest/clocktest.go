// Package clocktest provides a fake clock.Clock that tests move forward
// themselves: timers fire when Advance passes their deadline, and
// WaitForTimers lets a test know that the code under test is waiting on
// one, without sleeping.
package clocktest

import (
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/calmline/calmline/lib/clock"
)

// Clock is a fake clock. Its zero value is not usable; call New.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*timer
	changed chan struct{} // closed and replaced when a timer is added
}

// New returns a fake clock reading start.
func New(start time.Time) *Clock {
	return &Clock{now: start, changed: make(chan struct{})}
}

// Now returns the fake time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTimer returns a timer that fires when the clock reaches now+d.
func (c *Clock) NewTimer(d time.Duration) clock.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &timer{c: c, at: c.now.Add(d), d: d, ch: make(chan time.Time, 1)}
	if d <= 0 {
		t.ch <- c.now
		return t
	}
	c.timers = append(c.timers, t)
	close(c.changed)
	c.changed = make(chan struct{})
	return t
}

// Advance moves the clock forward by d, firing every timer whose deadline
// it reaches, in deadline order.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	sort.SliceStable(c.timers, func(i, j int) bool { return c.timers[i].at.Before(c.timers[j].at) })
	keep := c.timers[:0]
	for _, t := range c.timers {
		if !t.at.After(c.now) {
			t.ch <- c.now
			continue
		}
		keep = append(keep, t)
	}
	clear(c.timers[len(keep):])
	c.timers = keep
}

// Timers returns the durations of the timers waiting to fire, in the order
// they were made.
func (c *Clock) Timers() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]time.Duration, len(c.timers))
	for i, t := range c.timers {
		out[i] = t.d
	}
	return out
}

// Changed returns a channel closed when the next timer is made. Take it
// before looking at Timers, so that no timer made in between is missed.
func (c *Clock) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// WaitForTimers blocks until at least n timers wait to fire, and returns
// their durations; it fails the test after a bound of 10 s (real time), a
// bound, not a synchronisation.
func (c *Clock) WaitForTimers(t testing.TB, n int) []time.Duration {
	t.Helper()
	bound := time.NewTimer(10 * time.Second)
	defer bound.Stop()
	for {
		c.mu.Lock()
		have, changed := len(c.timers), c.changed
		c.mu.Unlock()
		if have >= n {
			return c.Timers()
		}
		select {
		case <-changed:
		case <-bound.C:
			t.Fatalf("clocktest: %d timers after 10 s; want %d", have, n)
			return nil
		}
	}
}

type timer struct {
	c  *Clock
	at time.Time
	d  time.Duration
	ch chan time.Time
}

func (t *timer) C() <-chan time.Time { return t.ch }

func (t *timer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	for i, o := range t.c.timers {
		if o == t {
			t.c.timers = append(t.c.timers[:i], t.c.timers[i+1:]...)
			return true
		}
	}
	return false
}
