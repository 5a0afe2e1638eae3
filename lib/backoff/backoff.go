// Package backoff is calmline's one retry schedule for loops that try
// again after a failure (reopening a backend stream, posting an alert,
// redialling a gateway): exponential delays with "equal jitter" — the
// n-th delay is uniform in [d/2, d) for d = Initial·Multiplier^(n-1), at
// most Max — waited on an injectable clock, so that many instances that
// failed together do not retry in step, and tests drive the waits instead
// of sleeping. lib/webhook's persistent schedule (deliveries that survive
// restarts) uses the same delays and jitter.
package backoff

import (
	"context"
	"math"
	"math/rand/v2"
	"time"

	"github.com/calmline/calmline/lib/clock"
)

// Policy is an exponential schedule.
type Policy struct {
	// Initial is the first delay before jitter (must be positive).
	Initial time.Duration
	// Max bounds every delay before jitter (default: Initial).
	Max time.Duration
	// Multiplier is the growth per failure (default 2).
	Multiplier float64
}

// Delay returns the un-jittered delay after the given failed attempt
// (1-based): Initial·Multiplier^(attempt-1), at most Max.
func (p Policy) Delay(attempt int) time.Duration {
	mult := p.Multiplier
	if mult < 1 {
		mult = 2
	}
	maxD := max(p.Max, p.Initial)
	d := float64(p.Initial) * math.Pow(mult, float64(max(attempt-1, 0)))
	if d >= float64(maxD) || math.IsInf(d, 0) || math.IsNaN(d) {
		return maxD
	}
	return time.Duration(d)
}

// Jitter spreads d uniformly over [d/2, d) with rnd, a uniform random
// number in [0, 1): "equal jitter", which keeps half the delay (so a
// retry never comes at once) and spreads the rest.
func Jitter(d time.Duration, rnd float64) time.Duration {
	return d/2 + time.Duration(rnd*float64(d/2))
}

// Backoff is one retry loop's place in a Policy. It is not safe for
// concurrent use: each loop has its own.
type Backoff struct {
	p     Policy
	clock clock.Clock
	rand  func() float64
	n     int
}

// New returns a Backoff on clk (nil: the system clock).
func New(p Policy, clk clock.Clock) *Backoff {
	return &Backoff{p: p, clock: clock.OrSystem(clk), rand: rand.Float64}
}

// WithRand makes b draw its jitter from rnd (tests).
func (b *Backoff) WithRand(rnd func() float64) *Backoff {
	b.rand = rnd
	return b
}

// Next returns the delay after one more failure, jittered.
func (b *Backoff) Next() time.Duration {
	b.n++
	return Jitter(b.p.Delay(b.n), b.rand())
}

// Failures returns the failures since the last Reset.
func (b *Backoff) Failures() int { return b.n }

// Reset starts the schedule again, after a success.
func (b *Backoff) Reset() { b.n = 0 }

// Wait waits out the delay after one more failure on b's clock; it returns
// ctx's error, at once, when ctx ends first.
func (b *Backoff) Wait(ctx context.Context) error {
	t := b.clock.NewTimer(b.Next())
	defer t.Stop()
	select {
	case <-t.C():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
