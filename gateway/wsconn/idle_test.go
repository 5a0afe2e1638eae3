package wsconn

import (
	"sync/atomic"
	"testing"
	"time"
)

// Idle fires once, no earlier than the timeout after the last activity,
// however often the activity moved meanwhile.
func TestIdleFiresOnceAfterTheLastActivity(t *testing.T) {
	const d = 50 * time.Millisecond
	var last atomic.Int64
	// The last activity lies two timeouts after the start, as if the
	// connection had been busy meanwhile: the timer must re-arm when it
	// first fires instead of closing.
	lastActive := time.Now().Add(2 * d)
	last.Store(lastActive.UnixNano())
	fired := make(chan time.Time, 2)
	i := StartIdle(d, &last, func() { fired <- time.Now() })
	defer i.Stop()
	select {
	case at := <-fired:
		if at.Sub(lastActive) < d {
			t.Errorf("fired %v after the last activity; want at least %v", at.Sub(lastActive), d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("never fired")
	}
	if !i.Fired() {
		t.Error("Fired() is false after firing")
	}
	select {
	case <-fired:
		t.Error("fired twice")
	default:
	}
}
