package webhook

import (
	"errors"
	"fmt"
	"time"

	"github.com/calmline/calmline/lib/backoff"
)

// Backoff is a retry schedule: exponential delays with jitter, from Initial
// growing by Multiplier up to MaxInterval, until GiveUpAfter has passed
// since the first attempt or MaxAttempts attempts were made.
type Backoff struct {
	Initial     time.Duration
	Multiplier  float64
	MaxInterval time.Duration
	// GiveUpAfter bounds the whole schedule, counted from the first
	// attempt.
	GiveUpAfter time.Duration
	// MaxAttempts bounds the number of attempts; 0 means only GiveUpAfter
	// does.
	MaxAttempts int
}

// DefaultBackoff retries for about a day: 1 s, 2 s, 4 s ... doubling to one
// hour, then hourly until 24 h have passed, each delay jittered down to as
// little as half: 35 to 59 attempts, about 43.
var DefaultBackoff = Backoff{
	Initial:     time.Second,
	Multiplier:  2,
	MaxInterval: time.Hour,
	GiveUpAfter: 24 * time.Hour,
}

// Validate names the first problem of a schedule.
func (b Backoff) Validate() error {
	switch {
	case b.Initial <= 0:
		return fmt.Errorf("initial %v must be positive", b.Initial)
	case b.Multiplier < 1:
		return fmt.Errorf("multiplier %g must be at least 1", b.Multiplier)
	case b.MaxInterval < b.Initial:
		return fmt.Errorf("max_interval %v is below initial %v", b.MaxInterval, b.Initial)
	case b.GiveUpAfter <= 0:
		return fmt.Errorf("give_up_after %v must be positive", b.GiveUpAfter)
	case b.MaxAttempts < 0:
		return errors.New("max_attempts must not be negative")
	}
	return nil
}

// Delay returns the un-jittered delay after the given failed attempt
// (1-based).
func (b Backoff) Delay(attempt int) time.Duration {
	return backoff.Policy{Initial: b.Initial, Max: b.MaxInterval, Multiplier: b.Multiplier}.Delay(attempt)
}

// Next schedules the attempt after a failed one: attempt is how many
// attempts were made, first when the first was made, retryAfter what the
// receiver asked for (0: nothing), and rnd a uniform random number in
// [0, 1). The delay is the schedule's with "equal jitter" (uniform in
// [d/2, d)), never shorter than retryAfter. It reports false when the
// schedule is exhausted: too many attempts, or the next one would start
// after GiveUpAfter.
func (b Backoff) Next(attempt int, first, now time.Time, retryAfter time.Duration, rnd float64) (time.Time, bool) {
	if b.MaxAttempts > 0 && attempt >= b.MaxAttempts {
		return time.Time{}, false
	}
	d := b.Delay(attempt)
	d = backoff.Jitter(d, rnd)
	d = max(d, retryAfter)
	next := now.Add(d)
	if next.Sub(first) > b.GiveUpAfter {
		return time.Time{}, false
	}
	return next, true
}
