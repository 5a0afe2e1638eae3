package session

import (
	"context"
	"sync"
	"time"

	"github.com/calmline/calmline/lib/backoff"
)

// backendStream is a call's gRPC client stream to a backend, as a link
// uses it.
type backendStream[Req, Resp any] interface {
	Send(Req) error
	Recv() (Resp, error)
	CloseSend() error
}

// reopen is the schedule of a link's attempts after its stream failed:
// the first within 25–50 ms (the pool hands the call to another healthy
// instance at once), then doubling to 1–2 s while attempts keep failing.
var reopen = backoff.Policy{Initial: 50 * time.Millisecond, Max: 2 * time.Second}

// outbox is what a link's own queue decides: what goes out next on a
// stream and what happens to what went out or could not. Its Locked
// methods are called with the link's mu held.
type outbox[Req any] interface {
	// readyLocked reports whether there is something to send on a fresh
	// or idle stream.
	readyLocked() bool
	// nextLocked takes the next batch to send. Once nothing else is left
	// and the call closes, it returns the close message instead, with
	// closing true (the skeleton sends it once per stream).
	nextLocked() (batch []Req, closeMsg Req, closing bool)
	// sent is called after r went out.
	sent(r Req)
	// unsentLocked takes back the part of a batch that a failed stream
	// did not send.
	unsentLocked(rs []Req)
}

// streamHooks are what a link does at the points of its stream's life
// where realtime and fullcall differ.
type streamHooks[Req, Resp any] interface {
	// open opens a stream for a reopen (attempt ≥ 1) and makes it ready
	// to carry the call (the open message sent, fullcall's answer read).
	open(ctx context.Context, attempt int) (backendStream[Req, Resp], context.CancelFunc, error)
	// openFailed is told that a reopen failed; it returns true to stop
	// trying.
	openFailed(err error, attempt int) (stop bool)
	// reopened is told that a reopen succeeded, before the stream is
	// handed the queue.
	reopened(attempt int)
	// recv receives on s until the backend ends it: nil when the call is
	// done with the backend, else why the stream broke.
	recv(s backendStream[Req, Resp]) error
	// broken is told why a stream broke (closeSent: after the call's
	// close went out on it); it returns true to stop, false to reopen.
	broken(err error, closeSent bool) (stop bool)
}

// link is the stream skeleton both backend links share. One goroutine
// (keep) owns the stream: it opens it, receives on it and reopens it after
// a failure. Sending is done by a short-lived goroutine (drain), started
// when there is something to send and none runs: a call sends a chunk
// every 100 ms and is idle in between, so a sender goroutine per call
// would mostly hold an idle stack. A send that fails retires the stream
// and cancels it, so that keep's receive ends and keep reopens.
type link[Req, Resp any] struct {
	c   *Call
	out outbox[Req]

	mu        sync.Mutex
	stream    backendStream[Req, Resp] // nil between streams
	cancel    context.CancelFunc       // ends stream
	sending   bool                     // a drain goroutine runs
	closeSent bool                     // the close went out on stream
}

// kickLocked starts a drain goroutine when there is a stream, something to
// send on it, and no drain running.
func (l *link[Req, Resp]) kickLocked() {
	if l.sending || l.stream == nil || !l.out.readyLocked() {
		return
	}
	l.sending = true
	l.c.wg.Add(1)
	go l.drain(l.stream, l.cancel)
}

// drain sends what the outbox gives on s (and, once the call closes and
// all is out, the close) until there is nothing more, or s fails.
func (l *link[Req, Resp]) drain(s backendStream[Req, Resp], cancel context.CancelFunc) {
	defer l.c.wg.Done()
	for {
		l.mu.Lock()
		if l.stream != s {
			l.sending = false
			l.kickLocked() // for the stream that replaced s
			l.mu.Unlock()
			return
		}
		batch, closeMsg, closing := l.out.nextLocked()
		if len(batch) == 0 && !closing {
			l.sending = false
			l.mu.Unlock()
			return
		}
		l.closeSent = l.closeSent || closing
		l.mu.Unlock()
		for i, r := range batch {
			if err := s.Send(r); err != nil {
				// Send fails with io.EOF when the stream broke; keep sees
				// why from Recv and reopens.
				l.mu.Lock()
				l.out.unsentLocked(batch[i:])
				l.mu.Unlock()
				l.failed(s, cancel)
				return
			}
			l.out.sent(r)
		}
		if closing {
			if err := s.Send(closeMsg); err != nil {
				l.failed(s, cancel)
				return
			}
			s.CloseSend()
			l.mu.Lock()
			l.sending = false
			l.kickLocked() // for a stream that replaced s meanwhile
			l.mu.Unlock()
			return // the backend answers the close and ends the stream
		}
	}
}

// failed retires a stream a send failed on.
func (l *link[Req, Resp]) failed(s backendStream[Req, Resp], cancel context.CancelFunc) {
	l.mu.Lock()
	if l.stream == s {
		l.stream = nil
	}
	l.sending = false
	l.kickLocked() // keep may have reopened meanwhile, seeing a drain running
	l.mu.Unlock()
	cancel() // keep's Recv ends, and keep reopens
}

// keep carries the call on a stream for the call's life: first (when not
// nil, already open) or one it opens, then, after each failure, another,
// backing off while reopening fails.
func (l *link[Req, Resp]) keep(h streamHooks[Req, Resp], first backendStream[Req, Resp], firstCancel context.CancelFunc) {
	ctx := l.c.ctx
	retry := backoff.New(reopen, l.c.m.clock)
	s, cancel := first, firstCancel
	for attempt := 0; ; {
		if s == nil {
			attempt++
			var err error
			s, cancel, err = h.open(ctx, attempt)
			if err != nil {
				if ctx.Err() != nil || h.openFailed(err, attempt) || retry.Wait(ctx) != nil {
					return
				}
				continue
			}
			retry.Reset()
			h.reopened(attempt)
		}
		l.mu.Lock()
		l.stream, l.cancel, l.closeSent = s, cancel, false
		l.kickLocked()
		l.mu.Unlock()
		err := h.recv(s)
		l.mu.Lock()
		if l.stream == s {
			l.stream = nil
		}
		closeSent := l.closeSent
		l.mu.Unlock()
		cancel()
		if err == nil || ctx.Err() != nil || h.broken(err, closeSent) {
			return
		}
		s = nil
		if retry.Wait(ctx) != nil {
			return
		}
	}
}
