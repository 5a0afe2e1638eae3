package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/calmline/calmline/gateway/admission"
	"github.com/calmline/calmline/gateway/session"
	"github.com/calmline/calmline/gateway/wsconn"
	"github.com/calmline/calmline/lib/tenant"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// Conn is one upgraded connection, driven by its reader goroutine. Its
// methods are for that goroutine (the Codec's Frame, Finish and Flush)
// unless they say otherwise.
type Conn struct {
	e      *Edge
	p      *Protocol
	codec  Codec
	render Renderer
	ws     *wsconn.Conn
	ticket *admission.Ticket // released once a call is live

	// tenant and log change when a protocol authenticates after the
	// upgrade, while timers and the writer may read them.
	tenant atomic.Pointer[tenant.Tenant]
	log    atomic.Pointer[slog.Logger]

	call    *session.Call // the call this connection owns (ends)
	private bool          // the tenant's agent scoring is private

	// live is the call whose events and traffic are this connection's,
	// for the writer and Close (the owned call, or one Attached).
	live atomic.Pointer[session.Call]
	// last is when the connection last showed life (Unix nanoseconds);
	// started switches from the start timeout to the idle timeout.
	last    atomic.Int64
	started atomic.Bool
	idled   atomic.Bool
	failed  bool // Fail ran (reader only)

	idleMu   sync.Mutex
	idleT    *time.Timer
	idleDone bool
}

// Tenant returns the connection's tenant (nil before Authenticate on
// protocols that authenticate after the upgrade).
func (c *Conn) Tenant() *tenant.Tenant { return c.tenant.Load() }

func (c *Conn) tenantID() string {
	if t := c.tenant.Load(); t != nil {
		return t.ID
	}
	return ""
}

// Log returns the connection's logger.
func (c *Conn) Log() *slog.Logger { return c.log.Load() }

// WS returns the WebSocket, to queue messages and read its state.
func (c *Conn) WS() *wsconn.Conn { return c.ws }

// Sessions returns the call core.
func (c *Conn) Sessions() *session.Manager { return c.e.m }

// Call returns the call this connection owns; nil before Start and after
// End.
func (c *Conn) Call() *session.Call { return c.call }

// Failed reports whether the connection failed (Fail): what the Codec
// still holds is not to become a call.
func (c *Conn) Failed() bool { return c.failed }

// Idled reports whether the connection was closed for a timeout.
func (c *Conn) Idled() bool { return c.idled.Load() }

// Touch records a sign of life: the idle timeout counts from the last one.
// Safe from any goroutine.
func (c *Conn) Touch() { c.last.Store(time.Now().UnixNano()) }

// SetStarted switches from the start timeout to the idle timeout, for a
// session that started without a call (an AudioHook connection probe).
// Start does it for a call.
func (c *Conn) SetStarted() { c.started.Store(true) }

// Send queues a text message; a droppable one (a score) is the first to go
// when the client reads too slowly (counted). Safe from any goroutine.
func (c *Conn) Send(b []byte, droppable bool) { c.ws.SendText(b, droppable) }

// SendJSON queues v as a JSON text message.
func (c *Conn) SendJSON(v any, droppable bool) {
	b, err := json.Marshal(v)
	if err != nil {
		c.Log().Error("encoding a message failed", "err", err)
		return
	}
	c.ws.SendText(b, droppable)
}

// Refused counts a refusal under the tenant (when known) and the
// connection's protocol.
func (c *Conn) Refused(reason string) {
	c.e.m.Refused(context.Background(), c.tenantID(), c.p.Name, reason)
}

// Authenticate authenticates the connection after the upgrade, for
// senders that can only pass their key in the stream (a Twilio-style
// start's parameters). It returns a 4401 or 4403 Error to close with.
func (c *Conn) Authenticate(key string) error {
	t, _, ref := c.e.Authenticate(key)
	if ref != nil {
		code := CloseUnauthenticated
		if ref.Status != 401 {
			code = CloseForbidden
		}
		c.e.m.Refused(context.Background(), ref.Tenant, c.p.Name, ref.Code)
		return &Error{Code: code, Reason: ref.Code + ": " + ref.Msg, Refused: true}
	}
	c.tenant.Store(t)
	c.log.Store(c.Log().With("tenant", t.ID))
	return nil
}

// Start starts the connection's call: Tenant and Protocol are filled in.
// The call's events reach the Codec when it is a Renderer. A refusal comes
// back as an *Error with the close code of the one table.
func (c *Conn) Start(st session.Start) (*session.Call, error) {
	if c.call != nil {
		return nil, Errorf(CloseOutOfOrder, "start sent twice")
	}
	t := c.tenant.Load()
	if t == nil {
		return nil, Errorf(CloseUnauthenticated, "unauthenticated: no API key")
	}
	if c.e.isClosed() {
		c.Refused("draining")
		return nil, ErrorOf(session.ErrDraining)
	}
	if c.e.admit != nil && !st.Resume {
		// A resume continues a call already admitted.
		if e := c.e.admit(context.Background(), t.ID, c.p.Name); e != nil {
			return nil, &Error{Code: CloseOverQuota, Reason: e.Code + ": " + e.Msg, Refused: true, Err: e}
		}
	}
	st.Tenant, st.Protocol = t, c.p.Name
	// Decided before the call starts, since scores may follow at once.
	c.private = Private(t)
	call, err := c.e.m.Start(context.Background(), st, c)
	if err != nil {
		return nil, StartError(err, st.CallID)
	}
	c.call = call
	c.Attach(call)
	// A resume on a new connection while this one looks alive: the
	// network dropped silently. Drop this one; the call parks and moves.
	call.OnTakeover(c.ws.Drop)
	return call, nil
}

// StartError maps an error of session.Manager.Start to the Error the
// connection closes with, naming the call id of a duplicate.
func StartError(err error, callID string) *Error {
	e := ErrorOf(err)
	switch {
	case errors.Is(err, session.ErrCallLive):
		e.Reason = fmt.Sprintf("call %q is already live", callID)
	case errors.Is(err, session.ErrBadStart):
		e.Reason = "start: " + err.Error()
	}
	return e
}

// Attach makes call this connection's live call without handing it its
// end: its traffic counts here, the connection leaves the admission count
// of connections without a call, and when the gateway ends the call the
// connection closes the Codec's way. Start does it for the call it starts;
// a protocol whose call spans connections (Asterisk's legs) attaches each,
// and may do so from another connection's reader: Attach is safe from any
// goroutine.
func (c *Conn) Attach(call *session.Call) {
	c.live.Store(call)
	c.ticket.Started()
	c.SetStarted()
	c.Touch()
	// The writer watches for the call being aborted (drain, lost backend)
	// even while the reader waits for the next frame.
	c.ws.Watch(call.Done(), func() { c.aborted(call) })
}

// aborted closes the connection of a call the gateway ended.
func (c *Conn) aborted(call *session.Call) {
	r, err := call.AbortReason()
	if r == fullcallv1.EndReason_END_REASON_DRAIN {
		c.codec.Close(c, CloseGoingAway, "gateway draining; reconnect to continue the call")
		return
	}
	c.codec.Close(c, CloseInternal, "call ended by the gateway: "+err.Error())
}

// Audio passes a frame of the call's audio on. The error, an *Error, is
// the client's (audio before start, faster than real time).
func (c *Conn) Audio(data []byte) error {
	if c.call == nil {
		return Errorf(CloseOutOfOrder, "audio before start")
	}
	c.Touch()
	if err := c.call.Audio(data); err != nil {
		if errors.Is(err, session.ErrEnded) {
			return nil
		}
		return ErrorOf(err)
	}
	if c.p.ReadPause {
		if d := c.call.ReadPause(); d > 0 {
			c.ws.PauseRead(d)
		}
	}
	return nil
}

// Gap advances the call's timeline over samples without audio.
func (c *Conn) Gap(samples uint64, reason callv1.GapReason, detail string) error {
	if c.call == nil {
		return Errorf(CloseOutOfOrder, "gap before start")
	}
	if err := c.call.Gap(samples, reason, detail); err != nil {
		if errors.Is(err, session.ErrEnded) {
			return nil
		}
		return ErrorOf(err)
	}
	return nil
}

// End ends the connection's call once (a Flusher hands over what it holds
// first) and returns its stored report (nil when none could be stored, or
// when there was no call).
func (c *Conn) End(reason session.EndReason) *fullcallv1.Report {
	call := c.call
	if call == nil {
		return nil
	}
	c.call = nil
	if f, ok := c.codec.(Flusher); ok {
		f.Flush(c, call)
	}
	r, err := call.End(context.Background(), reason)
	if err != nil && !errors.Is(err, session.ErrEnded) {
		c.Log().Warn("call ended without a report", "err", err)
	}
	return r
}

// Fail ends the connection for err: it is logged at INFO and counted
// (unless the call core refused a start and counted it), the call ends as
// an error, and the Codec closes with the code of the one table.
func (c *Conn) Fail(err error) {
	c.failed = true
	e := ErrorOf(err)
	if e.Refused {
		// The logger names the tenant once it is known.
		c.Log().Info("call refused after the upgrade", "code", e.Code, "reason", e.Reason)
	} else {
		c.Log().Info("closing connection on bad input", "code", e.Code, "reason", e.Reason)
		count := e.Count
		if count == "" {
			count = c.p.Counts[e.Code]
		}
		if count == "" {
			count = fmt.Sprintf("close_%d", e.Code)
		}
		c.Refused(count)
		c.End(fullcallv1.EndReason_END_REASON_ERROR)
	}
	c.codec.Close(c, e.Code, e.Reason)
}

// Close closes the WebSocket with a close frame after what is queued.
// Safe from any goroutine; the first close counts.
func (c *Conn) Close(code int, reason string) { c.ws.Close(code, reason) }

// Score implements session.Events: the Codec renders what the tenant's
// privacy mode lets a PBX see.
func (c *Conn) Score(u *callv1.ScoreUpdate) {
	if c.render != nil {
		c.render.Score(c, ViewScore(u, c.private))
	}
}

// Alert implements session.Events.
func (c *Conn) Alert(a *callv1.AlertEvent) {
	if c.render != nil && AlertVisible(a, c.private) {
		c.render.Alert(c, a)
	}
}

// run reads until the connection ends, then settles the call.
func (c *Conn) run() {
	c.idleMu.Lock()
	c.idleT = time.AfterFunc(c.p.Start.After, c.checkIdle)
	c.idleMu.Unlock()
	defer c.stopIdle()
	defer c.ws.Finish()
	for {
		typ, data, err := c.ws.Read()
		if err != nil {
			if _, bad := wsconn.ClientError(err); bad {
				c.Fail(err)
			}
			break
		}
		if c.ws.Closing() {
			// The peer's last frames, until its close. When the drain
			// ended the call, what the PBX sent before it saw the going
			// away still belongs to the call (not ended yet) and is kept;
			// after anything else (a failure, a hang-up) they go.
			if c.call != nil && drained(c.call) {
				c.codec.Frame(c, typ, data)
			}
			continue
		}
		if call := c.live.Load(); call != nil {
			select {
			case <-call.Done():
				c.aborted(call)
				if c.ws.Closing() {
					// This frame too came before the peer saw the close.
					if c.call != nil && drained(c.call) {
						c.codec.Frame(c, typ, data)
					}
					continue
				}
			default:
			}
		}
		if err := c.codec.Frame(c, typ, data); err != nil {
			c.Fail(err)
		}
	}
	reason := fullcallv1.EndReason_END_REASON_DISCONNECTED
	if c.idled.Load() {
		reason = fullcallv1.EndReason_END_REASON_IDLE_TIMEOUT
	}
	if c.call != nil {
		if r, err := c.call.AbortReason(); err != nil {
			reason = r
		}
	}
	if f, ok := c.codec.(Finisher); ok {
		f.Finish(c, reason)
	} else {
		c.End(reason)
	}
}

// drained reports whether the gateway ended call for a drain.
func drained(call *session.Call) bool {
	r, err := call.AbortReason()
	return err != nil && r == fullcallv1.EndReason_END_REASON_DRAIN
}

// checkIdle runs when the connection may have gone quiet: one timer per
// connection, re-armed only when it fires, ends it at the timeout without
// a timer update per frame.
func (c *Conn) checkIdle() {
	c.idleMu.Lock()
	if c.idleDone {
		c.idleMu.Unlock()
		return
	}
	to := c.p.Start
	if c.started.Load() {
		to = c.p.Idle
	}
	if rest := to.After - time.Since(time.Unix(0, c.last.Load())); rest > 0 {
		c.idleT.Reset(rest)
		c.idleMu.Unlock()
		return
	}
	c.idleDone = true
	c.idleMu.Unlock()
	c.idled.Store(true)
	if to.Count != "" {
		c.Refused(to.Count)
	}
	c.codec.Close(c, CloseIdle, fmt.Sprintf("no %s for %s", to.Missing, to.After))
}

func (c *Conn) stopIdle() {
	c.idleMu.Lock()
	c.idleDone = true
	c.idleT.Stop()
	c.idleMu.Unlock()
}
