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
//
// The connection's life (authentication, admission, idle, close codes,
// drain) is gateway/edge's; this package is the protocol's codec.
package native

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/gorilla/websocket"

	"github.com/calmline/calmline/gateway/edge"
	"github.com/calmline/calmline/gateway/session"
	"github.com/calmline/calmline/gateway/wsconn"
	"github.com/calmline/calmline/lib/tenant"
	"github.com/calmline/calmline/lib/wire"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// Protocol is the protocol's name in reports and metrics.
const Protocol = "native"

// Subprotocol is the WebSocket subprotocol of version 1; clients may offer
// it, and the server then selects it.
const Subprotocol = "calmline.native.v1"

// Close codes the server uses (gateway/edge declares them for every
// protocol), besides the standard 1000 (normal, after "stopped"), 1001
// (going away: the gateway drains), 1009 (message too big), 1011
// (internal error) and 1013 (try again later: backends unavailable).
const (
	CloseBadMessage       = edge.CloseBadMessage
	CloseIdle             = edge.CloseIdle
	CloseOutOfOrder       = edge.CloseOutOfOrder
	CloseCallLive         = edge.CloseCallLive
	CloseNotResumable     = edge.CloseNotResumable
	CloseUnsupportedMedia = edge.CloseUnsupportedMedia
	CloseTooFast          = edge.CloseTooFast
	CloseOverQuota        = edge.CloseOverQuota
)

// Options configures the adapter.
type Options struct {
	Conn wsconn.Options
	// IdleTimeout closes a connection that sends no audio (or no start)
	// for this long (default 30 s).
	IdleTimeout time.Duration
}

// NewProtocol returns the protocol for an edge's handler.
func NewProtocol(o Options, e *edge.Edge) *edge.Protocol {
	return &edge.Protocol{
		Name:         Protocol,
		Subprotocols: []string{Subprotocol},
		Conn:         o.Conn,
		ReadPause:    true,
		Start:        edge.Timeout{After: o.IdleTimeout, Missing: "start"},
		Idle:         edge.Timeout{After: o.IdleTimeout, Missing: "audio"},
		Accept: func(r *http.Request) (*edge.Accepted, error) {
			t, _, ref := e.Authenticate(tenant.KeyFromRequest(r))
			if ref != nil {
				if ref.Status == http.StatusUnauthorized {
					ref.Msg += " (send Authorization: Bearer KEY or X-API-Key)"
				}
				return nil, ref
			}
			return &edge.Accepted{Tenant: t, Codec: &conn{}}, nil
		},
	}
}

// NewHandler returns the protocol's handler on an edge of its own; the
// gateway serves every protocol on one edge (NewProtocol).
func NewHandler(o Options, m *session.Manager, tenants *tenant.Registry, log *slog.Logger) *edge.Single {
	return edge.NewSingle(edge.Options{Sessions: m, Tenants: tenants, Logger: log}, func(e *edge.Edge) *edge.Protocol { return NewProtocol(o, e) })
}

// conn is the codec of one connection.
type conn struct {
	callID string
}

// Frame implements edge.Codec.
func (c *conn) Frame(ec *edge.Conn, typ int, data []byte) error {
	if typ == websocket.BinaryMessage {
		return c.audio(ec, data)
	}
	m, perr := parseText(data)
	if perr != nil {
		if m != nil && m.typ == "start" && ec.Call() != nil {
			return edge.Errorf(CloseOutOfOrder, "start sent twice")
		}
		return &edge.Error{Code: perr.code, Reason: perr.reason}
	}
	switch m.typ {
	case "start":
		return c.start(ec, m)
	case "gap":
		if ec.Call() == nil {
			return edge.Errorf(CloseOutOfOrder, "gap before start")
		}
		return ec.Gap(m.gapSamples, m.gapReason, "client: "+m.gapDetail)
	default: // stop
		if ec.Call() == nil {
			return edge.Errorf(CloseOutOfOrder, "stop before start")
		}
		c.stop(ec)
	}
	return nil
}

// Close implements edge.Codec: a close frame says it all.
func (c *conn) Close(ec *edge.Conn, code int, reason string) { ec.Close(code, reason) }

// Finish implements edge.Finisher: a connection that broke (no close frame
// either way, the gateway did not end the call) may come back, so its call
// waits for the resume instead of ending.
func (c *conn) Finish(ec *edge.Conn, reason session.EndReason) {
	ws := ec.WS()
	if call := ec.Call(); call != nil && reason == fullcallv1.EndReason_END_REASON_DISCONNECTED && !ws.Closing() && !ws.PeerClosed() && call.Park() {
		return
	}
	ec.End(reason)
}

func (c *conn) start(ec *edge.Conn, m *message) error {
	call, err := ec.Start(session.Start{
		CallID:   m.callID,
		AgentID:  m.agentID,
		Format:   m.format,
		Roles:    m.roles,
		Labels:   m.labels,
		Resume:   m.resume,
		ResumeAt: m.resumeAt,
	})
	if err != nil {
		return err
	}
	c.callID = m.callID
	var resumed *uint64
	if m.resume {
		at := call.ResumedAt()
		resumed = &at
	}
	ec.SendJSON(startedMsg{Type: "started", CallID: m.callID, SessionID: call.Info().SessionId, ResumedAt: resumed,
		ChunkMS: int(time.Duration(call.ChunkBytes()/call.Format().FrameBytes()) * time.Second / time.Duration(call.Format().SampleRate) / time.Millisecond)}, false)
	return nil
}

func (c *conn) audio(ec *edge.Conn, data []byte) error {
	call := ec.Call()
	if call == nil {
		return edge.Errorf(CloseOutOfOrder, "audio before start")
	}
	if fb := call.Format().FrameBytes(); len(data)%fb != 0 {
		return edge.Errorf(CloseBadMessage, "binary frame of %d bytes is not a whole number of %d-byte sample frames", len(data), fb)
	}
	return ec.Audio(data)
}

func (c *conn) stop(ec *edge.Conn) {
	r := ec.End(fullcallv1.EndReason_END_REASON_HANGUP)
	msg := stoppedMsg{Type: "stopped", CallID: c.callID}
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
		if !edge.Private(ec.Tenant()) {
			msg.Report.AgentStress = peak(r.AgentStress)
		}
	} else {
		msg.Error = "the report could not be stored; the call's audio may be incomplete"
	}
	ec.SendJSON(msg, false)
	ec.Close(edge.CloseNormal, "call ended")
}

func peak(s *fullcallv1.ScoreSummary) *float64 {
	if !s.GetScored() {
		return nil
	}
	v := s.Peak
	return &v
}

// Score implements edge.Renderer.
func (c *conn) Score(ec *edge.Conn, s edge.Score) {
	ec.SendJSON(scoreMsg{
		Type:           "score",
		CallID:         s.CallID,
		Second:         s.Second,
		EndSample:      s.EndSample,
		CallerPressure: s.CallerPressure,
		AgentStress:    s.AgentStress,
		Abstain:        s.Abstain("caller_pressure", "agent_stress"),
		Model:          modelMsg{Name: s.ModelName, Version: s.ModelVersion},
	}, true)
}

// Alert implements edge.Renderer.
func (c *conn) Alert(ec *edge.Conn, a *callv1.AlertEvent) {
	ec.SendJSON(alertMsg{Type: "alert", AlertID: a.AlertId, RuleID: a.RuleId, Episode: a.Episode, State: edge.AlertState(a),
		Score: wire.ScoreName(a.Score), Value: a.Value, Threshold: a.Threshold, Second: a.Second}, false)
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
