package wsconn

import (
	"sync"
	"sync/atomic"
	"time"
)

// Idle calls a function once when nothing happened for a timeout: last
// holds when something last happened (Unix nanoseconds), updated by the
// adapter as often as it likes. One timer per connection, re-armed only
// when it fires, ends an idle connection at the timeout — a check at
// every ping ended it up to a ping interval late — without a timer update
// per frame.
type Idle struct {
	d     time.Duration
	last  *atomic.Int64
	f     func()
	mu    sync.Mutex
	t     *time.Timer
	done  bool
	fired atomic.Bool
}

// StartIdle starts watching last; f runs once, on its own goroutine, when
// last is d old.
func StartIdle(d time.Duration, last *atomic.Int64, f func()) *Idle {
	i := &Idle{d: d, last: last, f: f}
	i.mu.Lock()
	i.t = time.AfterFunc(d, i.check)
	i.mu.Unlock()
	return i
}

func (i *Idle) check() {
	i.mu.Lock()
	if i.done {
		i.mu.Unlock()
		return
	}
	if rest := i.d - time.Since(time.Unix(0, i.last.Load())); rest > 0 {
		i.t.Reset(rest)
		i.mu.Unlock()
		return
	}
	i.done = true
	i.mu.Unlock()
	i.fired.Store(true)
	i.f()
}

// Fired reports whether the timeout ran out (and f was called).
func (i *Idle) Fired() bool { return i.fired.Load() }

// Stop stops watching; f is not called after Stop returns unless it
// already runs.
func (i *Idle) Stop() {
	i.mu.Lock()
	i.done = true
	i.t.Stop()
	i.mu.Unlock()
}
