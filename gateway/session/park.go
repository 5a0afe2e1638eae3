package session

import (
	"context"
	"fmt"
	"time"

	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// eventsRef holds an adapter's Events for an atomic swap.
type eventsRef struct{ Events }

func (c *Call) setEvents(ev Events) {
	if ev == nil {
		c.events.Store(nil)
		return
	}
	c.events.Store(&eventsRef{ev})
}

// eventsNow returns the adapter's Events, nil while the call is parked.
func (c *Call) eventsNow() Events {
	if r := c.events.Load(); r != nil {
		return r.Events
	}
	return nil
}

// Park keeps the call open after its connection dropped without a
// hang-up (the network broke), for Options.ResumeGrace: a Start with
// Resume and the same call id within it continues this very call — same
// session, same backend streams, nothing lost or counted twice. When the
// grace ends the call ends with END_REASON_DISCONNECTED (its report
// stored). Park returns false, leaving the call to the adapter's End, when
// parking is off or the call has ended. Called instead of End from the
// adapter's reader, which must not touch the call afterwards.
func (c *Call) Park() bool {
	grace := c.m.o.ResumeGrace
	if grace <= 0 || c.ended {
		return false
	}
	select {
	case <-c.aborted:
		return false // the gateway ends it anyway
	default:
	}
	c.flush() // what the client sent reaches the backends; a partial frame does not count
	c.pending = c.pending[:0]
	c.setEvents(nil)
	m := c.m
	unpark := make(chan struct{})
	m.mu.Lock()
	if m.draining {
		m.mu.Unlock()
		return false
	}
	c.parked, c.unpark = true, unpark
	c.takeover = nil // no connection left to drop
	m.parkedPer[c.info.TenantId]++
	m.mu.Unlock()
	select {
	case c.parkedSig <- struct{}{}:
	default:
	}
	m.m.parked.Add(context.Background(), 1, c.attrs)
	c.log.Info("connection lost; the call waits for its client to resume it", "grace", grace, "timeline_sample", c.timeline.Load())
	t := m.clock.NewTimer(grace) // the grace counts from now
	go func() {
		defer t.Stop()
		reason := fullcallv1.EndReason_END_REASON_DISCONNECTED
		select {
		case <-t.C():
		case <-c.aborted:
			if r, _ := c.AbortReason(); r == fullcallv1.EndReason_END_REASON_ERROR {
				reason = r
			}
		case <-unpark:
			return
		}
		m.mu.Lock()
		if !c.parked || c.unpark != unpark {
			m.mu.Unlock()
			return // resumed meanwhile
		}
		c.parked = false
		m.unparkedLocked(c)
		m.mu.Unlock()
		c.log.Info("nobody resumed the call in time", "grace", grace)
		c.End(context.Background(), reason)
	}()
	return true
}

// OnTakeover sets what the call's adapter does when a resume for the call
// arrives while its connection still looks alive (a network that dropped
// silently is noticed only when pongs stop, 30 s later): drop the old
// connection without a close frame, so that the call parks and the resume
// takes it over. Adapters that do not set it get ErrCallLive for such a
// resume.
func (c *Call) OnTakeover(f func()) {
	c.m.mu.Lock()
	c.takeover = f
	c.m.mu.Unlock()
}

// takeoverWait bounds how long a resume waits for the call's old
// connection to let go of it.
const takeoverWait = 5 * time.Second

// unpark hands a parked call to the Start st resuming it. It returns nil
// and no error when no such call is live here (fullcall may hold it). A
// call still on its old connection is taken from it (OnTakeover) when its
// adapter allows.
func (m *Manager) unpark(st Start) (*Call, error) {
	key := st.Tenant.ID + "\x00" + st.CallID
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.live[key]
	if c == nil {
		return nil, nil
	}
	if !c.parked && c.takeover != nil && !m.draining {
		kick, parkedSig := c.takeover, c.parkedSig
		c.takeover = nil
		m.mu.Unlock()
		c.log.Info("a resume arrived for the call while its connection looked alive; dropping the old connection")
		kick()
		t := time.NewTimer(takeoverWait)
		select {
		case <-parkedSig:
		case <-c.aborted:
		case <-t.C:
		}
		t.Stop()
		m.mu.Lock()
		if m.live[key] != c {
			return nil, nil // it ended meanwhile (fullcall may resume it)
		}
	}
	if !c.parked {
		return nil, ErrCallLive
	}
	if m.draining {
		return nil, ErrDraining
	}
	if st.Format != c.format || len(st.Roles) != len(c.info.Format.Channels) {
		return nil, fmt.Errorf("%w: the resumed call's format differs from the call's (%v, %d Hz, %d channels)", ErrBadStart, c.format.Codec, c.format.SampleRate, c.format.Channels)
	}
	for i, r := range st.Roles {
		if c.info.Format.Channels[i] != r {
			return nil, fmt.Errorf("%w: the resumed call's channel roles differ from the call's", ErrBadStart)
		}
	}
	at := c.timeline.Load()
	if limit := at + uint64(MaxReconnectGap.Seconds()*float64(c.format.SampleRate)); st.ResumeAt > limit {
		return nil, fmt.Errorf("%w: resume_at_sample %d is more than %v past the call's end (%d)", ErrBadStart, st.ResumeAt, MaxReconnectGap, at)
	}
	c.parked = false
	m.unparkedLocked(c)
	close(c.unpark)
	c.unpark = nil
	return c, nil
}

func (m *Manager) unparkedLocked(c *Call) {
	if m.parkedPer[c.info.TenantId]--; m.parkedPer[c.info.TenantId] <= 0 {
		delete(m.parkedPer, c.info.TenantId)
	}
}

// resumeParked continues a parked call for its new connection, on the
// goroutine that now owns it.
func (c *Call) resumeParked(ctx context.Context, st Start, ev Events) {
	at := c.timeline.Load()
	c.resumedAt = at
	c.paceClock = c.m.now()
	c.paceFrom = max(st.ResumeAt, at)
	c.lagKnown, c.readPause = false, 0
	c.skip = 0
	switch {
	case st.ResumeAt > at:
		// Audio the client sent while its connection was dying never
		// reached the gateway.
		c.Gap(st.ResumeAt-at, callv1.GapReason_GAP_REASON_RECONNECT, "the client reconnected; this audio never reached the gateway")
	case st.ResumeAt > 0 && st.ResumeAt < at:
		// The client sends again what the gateway already has: skip it.
		c.skip = (at - st.ResumeAt) * uint64(c.frameBytes)
	}
	c.setEvents(ev)
	c.m.m.resumed.Add(ctx, 1, c.attrs)
	c.log.Info("call resumed on a new connection", "timeline_sample", at, "resume_at", st.ResumeAt)
}
