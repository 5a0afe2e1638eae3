// Package native is the gateway's adapter for calmline's own WebSocket
// protocol, for PBXs and contact-center platforms that integrate with
// calmline directly. The protocol is documented in docs/protocol-native.md;
// this file is its reference implementation.
//
// A client authenticates with its tenant's API key in a header, sends a
// JSON "start" (call id, agent id, codec, sample rate, channel roles), then
// binary frames of interleaved audio, and "stop" at hang-up. The server
// answers "started", sends a "score" message for every second of audio and
// "alert" messages when the tenant's rule fires, and "stopped" with the
// report's summary before it closes the connection.
package native

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/calmline/calmline/gateway/admission"
	"github.com/calmline/calmline/gateway/session"
	"github.com/calmline/calmline/gateway/wsconn"
	"github.com/calmline/calmline/lib/tenant"
	"github.com/calmline/calmline/lib/wire"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// Subprotocol is the WebSocket subprotocol of version 1; clients may offer
// it, and the server then selects it.
const Subprotocol = "calmline.native.v1"

// Close codes the server uses, besides the standard 1000 (normal, after
// "stopped"), 1001 (going away: the gateway drains), 1009 (message too
// big), 1011 (internal error) and 1013 (try again later: backends
// unavailable).
const (
	// CloseBadMessage: malformed JSON, an unknown message type, a missing
	// or invalid field, or a binary frame that is not whole sample frames.
	CloseBadMessage = 4400
	// CloseIdle: no audio (or no start) for the idle timeout.
	CloseIdle = 4408
	// CloseOutOfOrder: audio before start, start twice, stop before start.
	CloseOutOfOrder = 4409
	// CloseCallLive: a call with this call id is already live.
	CloseCallLive = 4410
	// CloseNotResumable refuses a resume: no such call to continue, or
	// its report is already stored.
	CloseNotResumable = 4411
	// CloseUnsupportedMedia: unsupported codec, sample rate or channels.
	CloseUnsupportedMedia = 4415
	// CloseTooFast: the client sends audio faster than real time, past
	// what the gateway's pacing policy allows.
	CloseTooFast = 4420
	// CloseOverQuota: the tenant is at its concurrent-call limit.
	CloseOverQuota = 4429
)

// Options configures the adapter.
type Options struct {
	Conn wsconn.Options
	// IdleTimeout closes a connection that sends no audio (or no start)
	// for this long (default 30 s).
	IdleTimeout time.Duration
}

// Handler serves the native protocol.
type Handler struct {
	o        Options
	m        *session.Manager
	tenants  *tenant.Registry
	log      *slog.Logger
	upgrader websocket.Upgrader

	// Connections run on their own goroutines once upgraded (the HTTP
	// server's goroutine returns, freeing its buffers); the Handler owns
	// them.
	mu     sync.Mutex
	conns  map[*conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// NewHandler returns the adapter.
func NewHandler(o Options, m *session.Manager, tenants *tenant.Registry, log *slog.Logger) *Handler {
	if o.IdleTimeout == 0 {
		o.IdleTimeout = 30 * time.Second
	}
	return &Handler{
		o: o, m: m, tenants: tenants, log: log.With("protocol", "native"), conns: map[*conn]struct{}{},
		upgrader: websocket.Upgrader{
			ReadBufferSize:  1024,
			WriteBufferSize: 1024,
			WriteBufferPool: &writePool,
			Subprotocols:    []string{Subprotocol},
			// Authentication is by header, which browsers cannot set on
			// a WebSocket: a foreign page cannot ride on a user's
			// credentials, so the origin need not be checked.
			CheckOrigin: func(*http.Request) bool { return true },
		},
	}
}

var writePool = syncPool{}

// refuse answers before the upgrade with a JSON error.
func refuse(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "5")
	}
	w.WriteHeader(status)
	b, _ := json.Marshal(map[string]any{"error": map[string]string{"code": code, "message": msg}})
	w.Write(append(b, '\n'))
}

// Close closes every connection still open with 1001 (going away) and
// waits for them to finish, until ctx ends; later upgrades are refused.
// The gateway calls it once its drain is over, when no call is live.
func (h *Handler) Close(ctx context.Context) error {
	h.mu.Lock()
	h.closed = true
	for c := range h.conns {
		c.ws.Close(websocket.CloseGoingAway, "gateway stopping; reconnect")
	}
	h.mu.Unlock()
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ServeHTTP authenticates and upgrades a connection, and runs it on a
// goroutine of its own.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t, key, ok := h.tenants.AuthenticateKey(tenant.KeyFromRequest(r))
	if !ok {
		h.m.Refused(r.Context(), "", "unauthenticated")
		w.Header().Set("WWW-Authenticate", `Bearer realm="calmline"`)
		refuse(w, http.StatusUnauthorized, "unauthenticated", "missing or unknown API key (send Authorization: Bearer KEY or X-API-Key)")
		return
	}
	if !tenant.Allows(key.Role, tenant.ActionStreamCalls) {
		// Care-team and agent keys live on less trusted desktops: they
		// read the live feed, they do not stream calls.
		h.m.Refused(r.Context(), t.ID, "forbidden")
		refuse(w, http.StatusForbidden, "forbidden", fmt.Sprintf("a key with role %q reads the live feed only; stream calls with a general key", key.Role))
		return
	}
	if err := h.m.Admit(t); err != nil {
		if errors.Is(err, session.ErrDraining) {
			h.m.Refused(r.Context(), t.ID, "draining")
			refuse(w, http.StatusServiceUnavailable, "draining", "this gateway is draining; reconnect to another")
			return
		}
		h.m.Refused(r.Context(), t.ID, "quota")
		refuse(w, http.StatusTooManyRequests, "over_quota", err.Error())
		return
	}
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if closed {
		h.m.Refused(r.Context(), t.ID, "draining")
		refuse(w, http.StatusServiceUnavailable, "draining", "this gateway is stopping; reconnect to another")
		return
	}
	ws, err := h.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	c := &conn{h: h, tenant: t, ticket: admission.FromContext(r.Context()), log: h.log.With("tenant", t.ID, "remote", r.RemoteAddr)}
	c.lastAudio.Store(time.Now().UnixNano())
	co := h.o.Conn
	co.OnDrop = func() { h.m.EventDropped(t.ID) }
	co.OnWrite = func(n int) {
		if call := c.callLive.Load(); call != nil {
			call.Sent(n)
		}
	}
	c.ws = wsconn.New(ws, co)
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		c.ws.Close(websocket.CloseGoingAway, "gateway stopping; reconnect")
		c.ws.Finish()
		return
	}
	h.conns[c] = struct{}{}
	h.wg.Add(1)
	h.mu.Unlock()
	// Returning from ServeHTTP lets the HTTP server drop the connection's
	// request, response and buffers (about 10 KiB): the call lives on in
	// this goroutine alone.
	go func() {
		defer h.wg.Done()
		c.run()
		h.mu.Lock()
		delete(h.conns, c)
		h.mu.Unlock()
	}()
}

// conn is one native connection, driven by its reader goroutine.
type conn struct {
	h         *Handler
	tenant    *tenant.Tenant
	ticket    *admission.Ticket // released once the call is live
	ws        *wsconn.Conn
	log       *slog.Logger
	call      *session.Call
	callLive  atomic.Pointer[session.Call]
	lastAudio atomic.Int64 // unix nanoseconds
	private   bool
}

// closeIdle closes a connection that sent no audio (or no start) for the
// idle timeout.
func (c *conn) closeIdle() {
	what := "audio"
	if c.callLive.Load() == nil {
		what = "start"
	}
	c.ws.Close(CloseIdle, fmt.Sprintf("no %s for %s", what, c.h.o.IdleTimeout))
}

func (c *conn) run() {
	idle := wsconn.StartIdle(c.h.o.IdleTimeout, &c.lastAudio, c.closeIdle)
	defer idle.Stop()
	defer c.ws.Finish()
	reason := fullcallv1.EndReason_END_REASON_DISCONNECTED
	defer func() {
		if c.call == nil {
			return
		}
		// A connection that broke (no close frame either way, the
		// gateway did not end the call) may come back: the call waits
		// for its resume instead of ending.
		if reason == fullcallv1.EndReason_END_REASON_DISCONNECTED && !c.ws.Closing() && !c.ws.PeerClosed() && c.call.Park() {
			c.call = nil
			return
		}
		c.endCall(reason)
	}()
	for {
		typ, data, err := c.ws.Read()
		if err != nil {
			if idle.Fired() {
				reason = fullcallv1.EndReason_END_REASON_IDLE_TIMEOUT
			}
			switch code, bad := wsconn.ClientError(err); {
			case bad:
				c.log.Info("closing connection on bad input", "code", code, "reason", err.Error())
				c.h.m.Refused(context.Background(), c.tenant.ID, fmt.Sprintf("close_%d", code))
				reason = fullcallv1.EndReason_END_REASON_ERROR
			case c.call != nil:
				if r, aerr := c.call.AbortReason(); aerr != nil {
					reason = r
				}
			}
			return
		}
		if c.ws.Closing() {
			continue // draining the peer's last frames until its close
		}
		if c.call != nil {
			select {
			case <-c.call.Done():
				r, aerr := c.call.AbortReason()
				reason = r
				c.closeForAbort(r, aerr)
				continue
			default:
			}
		}
		if typ == websocket.BinaryMessage {
			if !c.audio(data) {
				reason = fullcallv1.EndReason_END_REASON_ERROR
			}
			continue
		}
		m, perr := parseText(data)
		if perr != nil {
			if m != nil && m.typ == "start" && c.call != nil {
				perr = &protoError{CloseOutOfOrder, "start sent twice"}
			}
			c.fail(perr.code, perr.reason)
			reason = fullcallv1.EndReason_END_REASON_ERROR
			continue
		}
		switch m.typ {
		case "start":
			c.start(m)
		case "gap":
			if c.call == nil {
				c.fail(CloseOutOfOrder, "gap before start")
				continue
			}
			if err := c.call.Gap(m.gapSamples, m.gapReason, "client: "+m.gapDetail); err != nil {
				if errors.Is(err, session.ErrTooFast) {
					c.fail(CloseTooFast, err.Error())
				}
				reason = fullcallv1.EndReason_END_REASON_ERROR
			}
		case "stop":
			if c.call == nil {
				c.fail(CloseOutOfOrder, "stop before start")
				continue
			}
			c.stop()
			reason = fullcallv1.EndReason_END_REASON_HANGUP
		}
	}
}

// refuse closes a connection whose call could not start and says so in
// the log.
func (c *conn) refuse(code int, reason string) {
	c.log.Info("call refused after the upgrade", "code", code, "reason", reason)
	c.ws.Close(code, reason)
}

// fail closes the connection for a client error; a live call ends.
func (c *conn) fail(code int, reason string) {
	c.log.Info("closing connection on bad input", "code", code, "reason", reason)
	c.h.m.Refused(context.Background(), c.tenant.ID, fmt.Sprintf("close_%d", code))
	if c.call != nil {
		c.endCall(fullcallv1.EndReason_END_REASON_ERROR)
	}
	c.ws.Close(code, reason)
}

func (c *conn) start(m *message) {
	if c.call != nil {
		c.fail(CloseOutOfOrder, "start sent twice")
		return
	}
	// Decided before the call starts, since scores may follow at once.
	c.private = c.tenant.AgentScoring == tenant.AgentScoringPrivate
	call, err := c.h.m.Start(context.Background(), session.Start{
		Tenant:   c.tenant,
		CallID:   m.callID,
		AgentID:  m.agentID,
		Format:   m.format,
		Roles:    m.roles,
		Protocol: "native",
		Labels:   m.labels,
		Resume:   m.resume,
		ResumeAt: m.resumeAt,
	}, c)
	switch {
	case err == nil:
	case errors.Is(err, session.ErrOverQuota):
		c.refuse(CloseOverQuota, err.Error())
		return
	case errors.Is(err, session.ErrDraining):
		c.refuse(websocket.CloseGoingAway, "gateway draining; reconnect")
		return
	case errors.Is(err, session.ErrCallLive):
		c.refuse(CloseCallLive, fmt.Sprintf("call %q is already live", m.callID))
		return
	case errors.Is(err, session.ErrNotResumable):
		c.refuse(CloseNotResumable, err.Error())
		return
	case errors.Is(err, session.ErrBadStart):
		c.fail(CloseBadMessage, "start: "+err.Error())
		return
	default:
		c.refuse(websocket.CloseTryAgainLater, "analysis backends unavailable; try again")
		return
	}
	c.call = call
	c.callLive.Store(call)
	c.ticket.Started()
	// A resume on a new connection while this one looks alive: the
	// network dropped silently. Drop this one; the call parks and moves.
	call.OnTakeover(c.ws.Drop)
	c.lastAudio.Store(time.Now().UnixNano())
	var resumed *uint64
	if m.resume {
		at := call.ResumedAt()
		resumed = &at
	}
	c.sendJSON(startedMsg{Type: "started", CallID: m.callID, SessionID: call.Info().SessionId, ResumedAt: resumed,
		ChunkMS: int(time.Duration(call.ChunkBytes()/call.Format().FrameBytes()) * time.Second / time.Duration(call.Format().SampleRate) / time.Millisecond)}, false)
	// The writer watches for the call being aborted (drain, lost
	// backend) even while the reader waits for the next frame.
	c.ws.Watch(call.Done(), func() {
		r, err := call.AbortReason()
		c.closeForAbort(r, err)
	})
}

func (c *conn) closeForAbort(r session.EndReason, err error) {
	if r == fullcallv1.EndReason_END_REASON_DRAIN {
		c.ws.Close(websocket.CloseGoingAway, "gateway draining; reconnect to continue the call")
		return
	}
	c.ws.Close(websocket.CloseInternalServerErr, "call ended by the gateway: "+err.Error())
}

func (c *conn) audio(data []byte) bool {
	if c.call == nil {
		c.fail(CloseOutOfOrder, "audio before start")
		return false
	}
	if fb := c.call.Format().FrameBytes(); len(data)%fb != 0 {
		c.fail(CloseBadMessage, fmt.Sprintf("binary frame of %d bytes is not a whole number of %d-byte sample frames", len(data), fb))
		return false
	}
	c.lastAudio.Store(time.Now().UnixNano())
	if err := c.call.Audio(data); err != nil {
		if errors.Is(err, session.ErrTooFast) {
			c.fail(CloseTooFast, err.Error())
		}
		return false
	}
	if d := c.call.ReadPause(); d > 0 {
		c.ws.PauseRead(d)
	}
	return true
}

func (c *conn) stop() {
	r := c.endCall(fullcallv1.EndReason_END_REASON_HANGUP)
	msg := stoppedMsg{Type: "stopped", CallID: c.callLive.Load().Info().CallId}
	if r != nil {
		msg.Report = &reportSummary{
			DurationS:      r.DurationS,
			Incomplete:     r.Incomplete,
			CallerPressure: peak(r.CallerPressure),
			Alerts:         len(r.Alerts),
			URL:            "/api/v1/reports/" + r.CallId,
			Chunks:         r.Chunks,
			AudioBytes:     r.AudioBytes,
		}
		if !c.private {
			msg.Report.AgentStress = peak(r.AgentStress)
		}
	} else {
		msg.Error = "the report could not be stored; the call's audio may be incomplete"
	}
	c.sendJSON(msg, false)
	c.ws.Close(websocket.CloseNormalClosure, "call ended")
}

// endCall ends the call once and returns its report.
func (c *conn) endCall(reason session.EndReason) *fullcallv1.Report {
	call := c.call
	if call == nil {
		return nil
	}
	c.call = nil
	r, err := call.End(context.Background(), reason)
	if err != nil && !errors.Is(err, session.ErrEnded) {
		c.log.Warn("call ended without a report", "err", err)
	}
	return r
}

func peak(s *fullcallv1.ScoreSummary) *float64 {
	if !s.GetScored() {
		return nil
	}
	v := s.Peak
	return &v
}

// Score implements session.Events.
func (c *conn) Score(u *callv1.ScoreUpdate) {
	m := scoreMsg{
		Type:           "score",
		CallID:         u.CallId,
		Second:         u.Second,
		EndSample:      u.EndSample,
		CallerPressure: u.CallerPressure,
		AgentStress:    u.AgentStress,
		Model:          modelMsg{Name: u.Model.GetName(), Version: u.Model.GetVersion()},
	}
	abstain := map[string]string{}
	if u.CallerPressureAbstain != "" {
		abstain["caller_pressure"] = u.CallerPressureAbstain
	}
	if u.AgentStressAbstain != "" {
		abstain["agent_stress"] = u.AgentStressAbstain
	}
	if c.private {
		// Private mode: agent-side scores reach only the agent and the
		// care team, never the PBX.
		m.AgentStress = nil
		abstain["agent_stress"] = "private: shown only to the agent and the care team"
	}
	if len(abstain) > 0 {
		m.Abstain = abstain
	}
	c.sendJSON(m, true)
}

// Alert implements session.Events.
func (c *conn) Alert(a *callv1.AlertEvent) {
	state := "firing"
	if a.State == callv1.AlertState_ALERT_STATE_CLEARED {
		state = "cleared"
	}
	c.sendJSON(alertMsg{Type: "alert", AlertID: a.AlertId, RuleID: a.RuleId, Episode: a.Episode, State: state,
		Score: wire.ScoreName(a.Score), Value: a.Value, Threshold: a.Threshold, Second: a.Second}, false)
}

func (c *conn) sendJSON(v any, droppable bool) {
	b, err := json.Marshal(v)
	if err != nil {
		c.log.Error("encoding a message failed", "err", err)
		return
	}
	c.ws.SendText(b, droppable)
}

// Messages to the client.
type (
	startedMsg struct {
		Type      string `json:"type"`
		CallID    string `json:"call_id"`
		SessionID string `json:"session_id"`
		ChunkMS   int    `json:"chunk_ms"`
		// ResumedAt answers a resume: where the call's durable record
		// ended (the client's audio after it is not in the report).
		ResumedAt *uint64 `json:"resumed_at_sample,omitempty"`
	}
	modelMsg struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	}
	scoreMsg struct {
		Type           string            `json:"type"`
		CallID         string            `json:"call_id"`
		Second         uint32            `json:"second"`
		EndSample      uint64            `json:"end_sample"`
		CallerPressure *float64          `json:"caller_pressure"`
		AgentStress    *float64          `json:"agent_stress"`
		Abstain        map[string]string `json:"abstain,omitempty"`
		Model          modelMsg          `json:"model"`
	}
	alertMsg struct {
		Type      string  `json:"type"`
		AlertID   string  `json:"alert_id"`
		RuleID    string  `json:"rule_id"`
		Episode   uint32  `json:"episode"`
		State     string  `json:"state"`
		Score     string  `json:"score"`
		Value     float64 `json:"value"`
		Threshold float64 `json:"threshold"`
		Second    uint32  `json:"second"`
	}
	reportSummary struct {
		DurationS      float64  `json:"duration_s"`
		Incomplete     bool     `json:"incomplete"`
		CallerPressure *float64 `json:"caller_pressure_peak"`
		AgentStress    *float64 `json:"agent_stress_peak,omitempty"`
		Alerts         int      `json:"alerts"`
		URL            string   `json:"url"`
		Chunks         uint64   `json:"chunks"`
		AudioBytes     uint64   `json:"audio_bytes"`
	}
	stoppedMsg struct {
		Type   string         `json:"type"`
		CallID string         `json:"call_id"`
		Report *reportSummary `json:"report,omitempty"`
		Error  string         `json:"error,omitempty"`
	}
)
