package loadgen

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// flaky is a protocol whose connections can be broken on demand: a
// protocol-level fake for loadgen's reconnect logic (the real gateways'
// side is tested end to end in cmd/calmline). It keeps what each call's
// "gateway" received, makes all but the last lost frames durable, and
// answers a resume with where that ends.
type flaky struct {
	mu       sync.Mutex
	durable  map[string]uint64 // bytes per call made durable
	conns    map[string]*flakyConn
	resumes  int
	spf, fb  int
	inflight int // frames lost with each broken connection
}

type flakyConn struct {
	p      *flaky
	id     string
	ev     Events
	mu     sync.Mutex
	bytes  uint64 // received on this connection
	broken bool
	closed bool
}

func (p *flaky) CanResume() bool { return true }

func (p *flaky) Open(ctx context.Context, spec CallSpec, ev Events) (Conn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := &flakyConn{p: p, id: spec.CallID, ev: ev}
	if spec.Resume {
		p.resumes++
	}
	p.conns[spec.CallID] = c
	return c, nil
}

func (p *flaky) ResumedAtFor(id string) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.durable[id] * uint64(p.spf) / uint64(p.fb)
}

// breakAll breaks every open connection: its writes fail, and its reader
// reports a connection lost without a close frame.
func (p *flaky) breakAll() {
	p.mu.Lock()
	conns := make([]*flakyConn, 0, len(p.conns))
	for _, c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.mu.Lock()
		c.broken = true
		lost := min(c.bytes, uint64(c.p.inflight*c.p.fb))
		c.mu.Unlock()
		c.p.mu.Lock()
		c.p.durable[c.id] -= lost
		c.p.mu.Unlock()
	}
}

func (c *flakyConn) ResumedAt() uint64 { return c.p.ResumedAtFor(c.id) }

func (c *flakyConn) Audio(frame []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken {
		c.closeLocked(0, errors.New("broken pipe"))
		return errors.New("write: broken pipe")
	}
	c.bytes += uint64(len(frame))
	c.p.mu.Lock()
	c.p.durable[c.id] += uint64(len(frame))
	c.p.mu.Unlock()
	return nil
}

func (c *flakyConn) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken {
		c.closeLocked(0, errors.New("broken pipe"))
		return errors.New("write: broken pipe")
	}
	c.p.mu.Lock()
	b := c.p.durable[c.id]
	c.p.mu.Unlock()
	go func() {
		c.ev.Stopped(Stopped{ReportStored: true, AudioBytes: b, Chunks: 1})
		c.mu.Lock()
		c.closeLocked(1000, nil)
		c.mu.Unlock()
	}()
	return nil
}

func (c *flakyConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked(0, errors.New("closed"))
	return nil
}

// closeLocked reports the connection's end once, from its own goroutine
// as a reader would.
func (c *flakyConn) closeLocked(code int, err error) {
	if c.closed {
		return
	}
	c.closed = true
	go c.ev.Closed(code, "", err)
}

// TestReconnectAfterWriteFailure breaks every call's connection in the
// middle: the next write fails before the reader sees the end, the call
// resumes once as the same call, and its report is checked against what
// was sent minus what the dead connection never made durable.
func TestReconnectAfterWriteFailure(t *testing.T) {
	audio := Synthetic(2)
	p := &flaky{durable: map[string]uint64{}, conns: map[string]*flakyConn{}, spf: 160, fb: 320, inflight: 3}
	Register("flaky-test", p)
	defer delete(protocols, "flaky-test")
	done := make(chan *Summary, 1)
	go func() {
		s, err := Run(context.Background(), Options{URL: "ws://unused", Protocol: "flaky-test", Calls: 3, Ramp: 0,
			Duration: 1500 * time.Millisecond, Audio: audio, Reconnect: true, ReconnectWindow: 5 * time.Second})
		if err != nil {
			t.Error(err)
		}
		done <- s
	}()
	// Break once every call has sent some audio.
	deadline := time.After(5 * time.Second)
	for {
		p.mu.Lock()
		n := 0
		for _, b := range p.durable {
			if b >= 10*320 {
				n++
			}
		}
		p.mu.Unlock()
		if n == 3 {
			break
		}
		select {
		case <-deadline:
			t.Fatal("the calls sent no audio")
		case <-time.After(10 * time.Millisecond):
		}
	}
	p.breakAll()
	var s *Summary
	select {
	case s = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not end: a call was left waiting for a reconnect")
	}
	if s == nil {
		return
	}
	if !s.OK || s.Calls.Completed != 3 || s.Reconnects.Count != 3 || p.resumes != 3 || s.Reconnects.LostBytes != 3*3*320 {
		t.Errorf("calls %+v, reconnects %+v (resumes %d), errors %v; want 3 completed, each resumed once losing 3 frames",
			s.Calls, s.Reconnects, p.resumes, s.Errors)
	}
}
