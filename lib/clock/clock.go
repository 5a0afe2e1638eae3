// Package clock makes time a dependency: code whose timing is behaviour
// (pacing, pauses, stalls, retries, smoothing) takes a Clock, and its tests
// pass a fake one (package clocktest) that they move forward themselves,
// instead of sleeping and hoping the machine is fast enough.
//
// Bounds that only guard against a peer that never answers (a dial
// timeout, a wait for a report) may stay on the real clock: they are not
// what a test checks.
package clock

import "time"

// Clock tells the time and makes timers.
type Clock interface {
	// Now returns the current time. Durations between two Now values of
	// the same Clock are meaningful (the system clock's carry a monotonic
	// reading).
	Now() time.Time
	// NewTimer returns a timer that fires once, d from now. A timer of
	// d <= 0 fires at once.
	NewTimer(d time.Duration) Timer
}

// Timer is a single-shot timer, as time.Timer.
type Timer interface {
	// C delivers the time once the timer fires.
	C() <-chan time.Time
	// Stop prevents the timer from firing; it reports whether it did.
	Stop() bool
}

// System is the real clock.
var System Clock = system{}

// OrSystem returns c, or System when c is nil: for Options fields that
// default to the real clock.
func OrSystem(c Clock) Clock {
	if c == nil {
		return System
	}
	return c
}

type system struct{}

func (system) Now() time.Time { return time.Now() }

func (system) NewTimer(d time.Duration) Timer { return sysTimer{time.NewTimer(d)} }

type sysTimer struct{ t *time.Timer }

func (t sysTimer) C() <-chan time.Time { return t.t.C }
func (t sysTimer) Stop() bool          { return t.t.Stop() }
