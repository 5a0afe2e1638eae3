package session

import (
	"math"
	"sync"
	"time"
)

// The realtime lag signal's smoothing: scores' delays are averaged per
// lagBucket, and the buckets' means weighted exponentially with time
// constant lagTau; a signal with no score for lagStale reads 0.
const (
	lagBucket = time.Second
	lagTau    = 5 * time.Second
	lagStale  = 10 * time.Second
)

// lagMeter smooths how late realtime's scores come after their audio,
// across the Manager's calls. It is fed once per score (and per chunk
// realtime's queue drops) and read by admission on every new connection,
// so both are a few operations under a mutex.
type lagMeter struct {
	mu     sync.Mutex
	bucket time.Time // when the current bucket began
	sum    float64   // seconds, in the current bucket
	n      int
	ewma   float64 // seconds
	have   bool
	last   time.Time // last sample
}

// observe adds one delay (seconds) seen at now.
func (g *lagMeter) observe(now time.Time, d float64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.rollLocked(now)
	g.sum += d
	g.n++
	g.last = now
}

// value returns the smoothed delay at now.
func (g *lagMeter) value(now time.Time) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.rollLocked(now)
	if !g.have || now.Sub(g.last) > lagStale {
		return 0
	}
	return time.Duration(g.ewma * float64(time.Second))
}

// rollLocked closes the current bucket once it is lagBucket old, folding
// its mean into the average.
func (g *lagMeter) rollLocked(now time.Time) {
	if g.bucket.IsZero() {
		g.bucket = now
		return
	}
	if now.Sub(g.bucket) < lagBucket {
		return
	}
	if g.n > 0 {
		mean := g.sum / float64(g.n)
		if !g.have {
			g.ewma, g.have = mean, true
		} else {
			// The weight of a bucket depends on how long it covered, so a
			// bucket closed late (a quiet spell) counts for more.
			a := 1 - math.Exp(-float64(now.Sub(g.bucket))/float64(lagTau))
			g.ewma += a * (mean - g.ewma)
		}
	}
	g.sum, g.n, g.bucket = 0, 0, now
}
