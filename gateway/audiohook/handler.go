// Package audiohook is the gateway's adapter for Genesys Cloud AudioHook
// (protocol version 2): Genesys Cloud opens a WebSocket per conversation,
// signed with the tenant's API key and client secret, negotiates a media
// format in an open/opened transaction, streams binary PCMU frames
// (stereo: external = caller, internal = agent), pauses, resumes, reports
// discarded audio, pings, and ends with a close/closed transaction. The
// server answers, sends calmline's score and alert events as AudioHook
// event messages, and asks the client to end a session with disconnect.
//
// The protocol is specified at developer.genesys.cloud (AudioHook
// Protocol Specification); docs/protocols.md says how calmline maps it.
// The package also holds a Client that speaks the protocol as Genesys
// Cloud does, for tests and load generation.
//
// The connection's life (admission, upgrade, idle, close codes, drain) is
// gateway/edge's; this package keeps what is AudioHook's own: the request
// signatures, the sequence numbers, the open/close transactions,
// pause/resume and disconnect.
package audiohook

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/calmline/calmline/gateway/edge"
	"github.com/calmline/calmline/gateway/session"
	"github.com/calmline/calmline/gateway/wsconn"
	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/tenant"
	"github.com/calmline/calmline/lib/wire"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// Protocol is the protocol name calls carry in their reports.
const Protocol = "audiohook"

// Options configures the adapter.
type Options struct {
	Conn wsconn.Options
	// MeterProvider receives the adapter's own metrics (probes).
	MeterProvider metric.MeterProvider
	// Verifier checks request signatures; its zero value has the
	// defaults (10 s maximum age, 5 s clock skew, 100,000 nonces).
	Verifier *Verifier
	// OpenTimeout is how long a connection may go without an open
	// message (default 10 s).
	OpenTimeout time.Duration
	// IdleTimeout ends a session that sends neither audio nor a message
	// for this long (default 60 s; Genesys Cloud pings every few
	// seconds, paused or not).
	IdleTimeout time.Duration
	// DisconnectWait is how long the server waits for the client's close
	// after a disconnect before it closes the WebSocket (default 5 s).
	DisconnectWait time.Duration
	// MaxGap bounds one paused or discarded span (default 1 h): the
	// backends walk a gap second by second.
	MaxGap time.Duration
	// MaxUnackedEvents bounds the events sent that the client has not
	// acknowledged yet through serverseq; further events are dropped and
	// counted until it catches up (default 32).
	MaxUnackedEvents int
	// NoEvents stops the score and alert events (for a client that
	// refuses event entities it does not know).
	NoEvents bool
}

func (o *Options) defaults() {
	o.Verifier = cmp.Or(o.Verifier, &Verifier{})
	o.OpenTimeout = cmp.Or(o.OpenTimeout, 10*time.Second)
	o.IdleTimeout = cmp.Or(o.IdleTimeout, 60*time.Second)
	o.DisconnectWait = cmp.Or(o.DisconnectWait, 5*time.Second)
	o.MaxGap = cmp.Or(o.MaxGap, time.Hour)
	o.MaxUnackedEvents = cmp.Or(o.MaxUnackedEvents, 32)
	o.MeterProvider = cmp.Or[metric.MeterProvider](o.MeterProvider, noop.NewMeterProvider())
}

// NewProtocol returns the protocol for an edge's handler: the request's
// headers, API key and signature are checked before the upgrade.
func NewProtocol(o Options, e *edge.Edge) *edge.Protocol {
	o.defaults()
	probes, _ := o.MeterProvider.Meter("github.com/calmline/calmline/gateway/audiohook").Int64Counter(
		"calmline.gateway.audiohook.probes", metric.WithUnit("{session}"),
		metric.WithDescription("AudioHook connection probes answered (sessions with the null conversation id; not calls), by tenant."))
	if tenants := e.Tenants(); tenants != nil && probes != nil {
		// Every tenant's series exists from the start (docs/metrics.md).
		zero := func() {
			for _, t := range tenants.Tenants() {
				probes.Add(context.Background(), 0, metric.WithAttributes(attribute.String("tenant", t.ID)))
			}
		}
		zero()
		tenants.OnReload(zero)
	}
	p := &protocol{o: o, e: e, probes: probes}
	return &edge.Protocol{
		Name:   Protocol,
		Accept: p.accept,
		Conn:   o.Conn,
		Start:  edge.Timeout{After: o.OpenTimeout, Missing: "open message", Count: "audiohook_no_open"},
		Idle:   edge.Timeout{After: o.IdleTimeout, Missing: "audio or message", Count: "audiohook_idle"},
		// Between chunks of a call at real-time pace the connection is
		// left unread for less than a chunk (100 ms): a ping, a close or
		// the client's answer to a disconnect waits at most that, far
		// inside Genesys Cloud's timeouts (seconds); audio loses nothing.
		ReadPause: true,
		Counts:    map[int]string{edge.CloseTooBig: "audiohook_message_too_big", edge.CloseInvalidText: "audiohook_invalid_utf8"},
	}
}

// NewHandler returns the protocol's handler on an edge of its own; the
// gateway serves every protocol on one edge (NewProtocol).
func NewHandler(o Options, m *session.Manager, tenants *tenant.Registry, log *slog.Logger) *edge.Single {
	return edge.NewSingle(edge.Options{Sessions: m, Tenants: tenants, Logger: log}, func(e *edge.Edge) *edge.Protocol { return NewProtocol(o, e) })
}

type protocol struct {
	o      Options
	e      *edge.Edge
	probes metric.Int64Counter
}

// accept checks the connection request: API key, headers, organization,
// signature.
func (p *protocol) accept(r *http.Request) (*edge.Accepted, error) {
	apiKey := strings.TrimSpace(r.Header.Get(HeaderAPIKey))
	t, key, ref := p.e.Authenticate(apiKey)
	if ref != nil {
		if ref.Status == http.StatusUnauthorized {
			ref.Msg, ref.Count, ref.Challenge = "missing or unknown API key (X-API-KEY)", "audiohook_unauthenticated", ""
		}
		return nil, ref
	}
	refuse := func(status int, code, count, msg string) (*edge.Accepted, error) {
		return nil, &edge.Refusal{Status: status, Code: code, Count: "audiohook_" + count, Tenant: t.ID, Msg: msg}
	}
	hdr := map[string]string{}
	for _, name := range []string{HeaderOrganizationID, HeaderSessionID, HeaderCorrelationID} {
		v := strings.TrimSpace(r.Header.Get(name))
		if !IsUUID(v) {
			return refuse(http.StatusBadRequest, "bad_request", "bad_request", fmt.Sprintf("missing or invalid %s header (want a UUID)", name))
		}
		hdr[name] = strings.ToLower(v)
	}
	if !t.AudioHook.AllowsOrganization(hdr[HeaderOrganizationID]) {
		return refuse(http.StatusForbidden, "forbidden", "organization", "this Genesys Cloud organization may not stream for the tenant")
	}
	var err error
	switch {
	case len(key.ClientSecret) > 0:
		err = p.o.Verifier.Verify(r, apiKey, key.ClientSecret)
	default:
		if _, serr := parseSignatures(r.Header); !errors.Is(serr, ErrUnsigned) || !t.AudioHook.AllowUnsigned {
			err = &SignatureError{Code: "no_client_secret", Msg: "the API key has no client secret configured, so its signature cannot be verified (set client_secret_file or client_secret_env)"}
			if errors.Is(serr, ErrUnsigned) {
				err = &SignatureError{Code: "unsigned", Msg: "unsigned requests are not accepted for this tenant; configure a client secret in Genesys Cloud and calmline"}
			}
		}
	}
	if err != nil {
		if errors.Is(err, ErrNonceCacheFull) {
			return refuse(http.StatusServiceUnavailable, "busy", "replay_cache_full", err.Error())
		}
		code := "signature_invalid"
		var se *SignatureError
		if errors.As(err, &se) {
			code = se.Code
		}
		p.e.Log().Info("connection refused: bad signature", "protocol", Protocol, "tenant", t.ID, "reason", code, "remote", r.RemoteAddr)
		return refuse(http.StatusUnauthorized, code, code, err.Error())
	}
	c := &conn{p: p, sessionID: hdr[HeaderSessionID], orgID: hdr[HeaderOrganizationID], correlation: hdr[HeaderCorrelationID]}
	return &edge.Accepted{Tenant: t, Codec: c, Log: []any{"audiohook_session", c.sessionID}}, nil
}

// state is where a session stands.
type state uint8

const (
	statePreparing     state = iota // connected; waiting for open
	stateActive                     // opened; audio flows
	statePaused                     // the client paused the stream
	stateClosing                    // close received; ending the call
	stateDisconnecting              // the server sent disconnect; waiting for close
	stateClosed                     // closed sent
)

// conn is the codec of one AudioHook session: its sequence numbers, its
// state and the session's identifiers.
type conn struct {
	p           *protocol
	sessionID   string
	orgID       string
	correlation string

	// Owned by the reader goroutine.
	probe bool
	frame int // bytes per sample frame of the accepted format

	// mu guards the sequence numbers and the state, which the writer
	// (aborts), the idle timer and the backends (events) read.
	mu        sync.Mutex
	state     state
	seq       uint64 // last server message sequence number
	clientSeq uint64 // last client message sequence number
	acked     uint64 // highest serverseq the client reported
	timer     *time.Timer
}

// send writes a server message with the next sequence number.
func (c *conn) send(ec *edge.Conn, typ string, params any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sendLocked(ec, typ, params)
}

func (c *conn) sendLocked(ec *edge.Conn, typ string, params any) {
	c.seq++
	b, err := json.Marshal(ServerMessage{Version: Version, ID: c.sessionID, Type: typ, Seq: c.seq, ClientSeq: c.clientSeq, Parameters: params})
	if err != nil {
		ec.Log().Error("encoding a message failed", "type", typ, "err", err)
		return
	}
	ec.Send(b, false)
}

func (c *conn) setState(s state) {
	c.mu.Lock()
	c.state = s
	c.mu.Unlock()
}

func (c *conn) getState() state {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// disconnect asks the client to end the session (reason error,
// unauthorized or completed), then waits for its close under a bound
// before closing the WebSocket with wsCode. Safe from any goroutine;
// only the first disconnect counts.
func (c *conn) disconnect(ec *edge.Conn, reason, info string, wsCode int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state >= stateDisconnecting {
		return
	}
	c.state = stateDisconnecting
	c.sendLocked(ec, TypeDisconnect, DisconnectParameters{Reason: reason, Info: info})
	if len(info) > 120 {
		info = info[:120]
	}
	c.timer = time.AfterFunc(c.p.o.DisconnectWait, func() { ec.Close(wsCode, info) })
}

// Close implements edge.Codec: the protocol's way to end a session is a
// disconnect (reason error, with the cause in info), then the WebSocket's
// close should the client not close in time: 1001 for the drain, 4420
// for audio too fast, 1008 for other client errors.
func (c *conn) Close(ec *edge.Conn, code int, reason string) {
	switch code {
	case edge.CloseGoingAway:
		c.disconnect(ec, DisconnectError, "The gateway is draining (deploy or scale-in); the session ends", code)
	case edge.CloseInternal:
		c.disconnect(ec, DisconnectError, "Server error: "+reason, code)
	case edge.CloseIdle:
		c.disconnect(ec, DisconnectError, reason, edge.ClosePolicy)
	case edge.CloseTooFast, edge.CloseTooBig, edge.CloseInvalidText:
		c.disconnect(ec, DisconnectError, "Client Error: "+reason, code)
	default:
		c.disconnect(ec, DisconnectError, "Client Error: "+reason, edge.ClosePolicy)
	}
}

// Finish implements edge.Finisher: a session that ends without a close
// transaction (connection lost, idle, disconnected) still ends its call.
func (c *conn) Finish(ec *edge.Conn, reason session.EndReason) {
	c.mu.Lock()
	if c.timer != nil {
		c.timer.Stop()
	}
	c.mu.Unlock()
	ec.End(reason)
}

// fail is a client error: the call ends now (its report stored), then
// disconnect with reason error, as the protocol prescribes.
func fail(reason, info string) error {
	return &edge.Error{Code: edge.CloseBadMessage, Reason: info, Count: "audiohook_" + reason}
}

// Frame implements edge.Codec.
func (c *conn) Frame(ec *edge.Conn, typ int, data []byte) error {
	if c.getState() != statePreparing {
		ec.Touch() // the open timeout counts from the connection
	}
	if typ == websocket.BinaryMessage {
		return c.audio(ec, data)
	}
	return c.text(ec, data)
}

// audio handles a binary frame.
func (c *conn) audio(ec *edge.Conn, data []byte) error {
	switch c.getState() {
	case statePreparing:
		return fail("audio_before_open", "Received audio before the session was opened")
	case statePaused:
		return fail("audio_while_paused", "Received audio while the stream is paused")
	case stateActive:
	case stateDisconnecting:
		// The gateway asked the client to end (a drain): its call goes on
		// until the client's close, frames in flight included. After an
		// error the call has ended and frames go nowhere.
		if ec.Call() == nil {
			return nil
		}
	default:
		return nil
	}
	if len(data) == 0 {
		return nil
	}
	if len(data)%c.frame != 0 {
		return fail("bad_frame", fmt.Sprintf("Binary frame of %d bytes is not a whole number of %d-byte sample frames", len(data), c.frame))
	}
	if ec.Call() == nil {
		return nil // a probe's audio goes nowhere
	}
	if err := ec.Audio(data); err != nil {
		// The pacing refusal: native closes with 4420; AudioHook's way is
		// disconnect (reason error) with the cause in info, and 4420
		// should the client not close in time.
		return refused(err, "audiohook_audio_refused", "audiohook_too_fast")
	}
	return nil
}

// refused is the call core refusing audio or a gap: counted under its
// reason (tooFast for the pacing), closed with 4420 for the pacing.
func refused(err error, reason, tooFast string) error {
	e := &edge.Error{Code: edge.CloseBadMessage, Reason: edge.ErrorOf(err).Reason, Count: reason, Err: err}
	if errors.Is(err, session.ErrTooFast) {
		e.Code, e.Count = edge.CloseTooFast, tooFast
	}
	return e
}

// text handles a text frame: a protocol message.
func (c *conn) text(ec *edge.Conn, data []byte) error {
	m, err := ParseClientMessage(data)
	if err != nil {
		return protoFail(err)
	}
	c.mu.Lock()
	st := c.state
	if st >= stateDisconnecting {
		// After a disconnect (or closed) only the client's close matters;
		// its numbering may be off when the error was a numbering error.
		c.clientSeq = max(c.clientSeq, m.Seq)
		c.mu.Unlock()
		if m.Type == TypeClose && st == stateDisconnecting {
			return c.close(ec, m)
		}
		return nil
	}
	var seqErr string
	switch {
	case m.Seq != c.clientSeq+1:
		seqErr = fmt.Sprintf("Invalid seq value %d (want %d: sequence numbers increase by one)", m.Seq, c.clientSeq+1)
	case m.ServerSeq > c.seq:
		seqErr = fmt.Sprintf("Invalid serverseq value %d (the server has sent %d messages)", m.ServerSeq, c.seq)
	case m.ServerSeq < c.acked:
		seqErr = fmt.Sprintf("Invalid serverseq value %d (it went back from %d)", m.ServerSeq, c.acked)
	case !strings.EqualFold(m.ID, c.sessionID):
		seqErr = "Session identifier mismatch (id differs from the Audiohook-Session-Id header)"
	}
	if seqErr == "" {
		c.clientSeq, c.acked = m.Seq, m.ServerSeq
	}
	c.mu.Unlock()
	if seqErr != "" {
		return fail("sequence", seqErr)
	}

	switch m.Type {
	case TypeOpen:
		return c.open(ec, m)
	case TypeClose:
		return c.close(ec, m)
	case TypePing:
		if _, err := m.DecodePing(); err != nil {
			return protoFail(err)
		}
		c.send(ec, TypePong, struct{}{})
	case TypeError:
		p, err := m.DecodeError()
		if err != nil {
			return protoFail(err)
		}
		// The client reports a problem; it ends the session itself if
		// it must.
		ec.Log().Warn("client reported an error", "code", p.Code, "message", p.Message)
	case TypeUpdate, TypePaused, TypeResumed, TypeDiscarded:
		if st == statePreparing {
			return fail("out_of_order", fmt.Sprintf("Received %q before the session was opened", m.Type))
		}
		return c.streamEvent(ec, m, st)
	default:
		return fail("unknown_type", fmt.Sprintf("Invalid Message: %q is not a supported client message", m.Type))
	}
	return nil
}

func protoFail(err error) error {
	var pe *ProtocolError
	reason := "bad_message"
	if errors.As(err, &pe) && strings.Contains(pe.Msg, "not valid JSON") {
		reason = "malformed_json"
	}
	return fail(reason, err.Error())
}

// streamEvent handles update, paused, resumed and discarded.
func (c *conn) streamEvent(ec *edge.Conn, m *ClientMessage, st state) error {
	switch m.Type {
	case TypeUpdate:
		lang, err := m.DecodeUpdate()
		if err != nil {
			return protoFail(err)
		}
		ec.Log().Info("session updated", "language", lang)
		c.send(ec, TypeUpdated, struct{}{})
	case TypePaused:
		if err := m.DecodeEmpty(); err != nil {
			return protoFail(err)
		}
		// A repeated paused is how a client confirms it is still paused.
		c.setState(statePaused)
	case TypeResumed, TypeDiscarded:
		span, err := m.DecodeSpan()
		if err != nil {
			return protoFail(err)
		}
		reason, detail := callv1.GapReason_GAP_REASON_DISCARDED, "audiohook: audio discarded by the client"
		if m.Type == TypeResumed {
			if st != statePaused {
				ec.Log().Info("resumed while not paused")
			}
			c.setState(stateActive)
			reason, detail = callv1.GapReason_GAP_REASON_PAUSED, "audiohook: stream paused"
		}
		return c.gapTo(ec, span.End(), reason, detail)
	}
	return nil
}

// gapTo advances the call's timeline to the stream position pos over a
// stretch without audio.
func (c *conn) gapTo(ec *edge.Conn, pos time.Duration, reason callv1.GapReason, detail string) error {
	call := ec.Call()
	if call == nil {
		return nil
	}
	rate := call.Format().SampleRate
	end, tl := Samples(pos, rate), call.Timeline()
	if end <= tl {
		return nil
	}
	if n := end - tl; n > Samples(c.p.o.MaxGap, rate) {
		return fail("gap_too_long", fmt.Sprintf("A span of %.0f s without audio exceeds the %s limit", float64(n)/float64(rate), c.p.o.MaxGap))
	}
	if err := ec.Gap(end-tl, reason, detail); err != nil {
		return refused(err, "audiohook_gap_refused", "audiohook_gap_refused")
	}
	return nil
}

// SelectMedia chooses the media format to accept among those offered:
// stereo PCMU at 8 kHz (either channel order: the call's roles follow the
// order the frames carry), else mono PCMU with the caller (external),
// else mono with the agent (internal). It returns the roles of the
// channels in frame order.
func SelectMedia(offered []MediaParameter) (MediaParameter, []callv1.ChannelRole, bool) {
	usable := func(m MediaParameter) bool {
		return m.Type == "audio" && m.Format == "PCMU" && m.Rate == 8000
	}
	for _, want := range [][]string{{"external", "internal"}, {"internal", "external"}, {"external"}, {"internal"}} {
		for _, m := range offered {
			if usable(m) && len(m.Channels) == len(want) && m.Channels[0] == want[0] && (len(want) == 1 || m.Channels[1] == want[1]) {
				_, roles := edge.Channels(want, "internal")
				return m, roles, true
			}
		}
	}
	return MediaParameter{}, nil, false
}

// open handles the open transaction.
func (c *conn) open(ec *edge.Conn, m *ClientMessage) error {
	if c.getState() != statePreparing {
		return fail("out_of_order", "Received open twice")
	}
	p, err := m.DecodeOpen()
	if err != nil {
		return protoFail(err)
	}
	if !strings.EqualFold(p.OrganizationID, c.orgID) {
		ec.Refused("audiohook_organization")
		c.disconnect(ec, DisconnectUnauthorized, `Mismatch between "organizationId" open parameter and "audiohook-organization-id" header field`, edge.ClosePolicy)
		return nil
	}
	media, roles, ok := SelectMedia(p.Media)
	if !ok {
		ec.Refused("audiohook_unsupported_media")
		c.disconnect(ec, DisconnectError, "No offered media format is supported: calmline takes PCMU at 8000 Hz, stereo (external, internal) or mono", edge.ClosePolicy)
		return nil
	}
	c.frame = len(roles)
	opened := OpenedParameters{Media: []MediaParameter{media}}
	if p.SupportedLanguages {
		// calmline transcribes nothing: no languages to offer.
		opened.SupportedLanguages = &[]string{}
	}
	if strings.EqualFold(p.ConversationID, NullUUID) {
		c.probe = true
		c.p.probes.Add(context.Background(), 1, metric.WithAttributes(attribute.String("tenant", ec.Tenant().ID)))
		ec.Log().Info("connection probe answered")
		c.send(ec, TypeOpened, opened)
		c.setState(stateActive)
		ec.SetStarted()
		ec.Touch()
		return nil
	}
	// The call's labels: customConfig's string entries (queue, skill,
	// agent group ... as the Genesys integration sets them), then the
	// session's own, which a customConfig entry cannot override.
	labels, err := customLabels(p.CustomConfig)
	if err != nil {
		return fail("bad_message", err.Error())
	}
	for k, v := range map[string]string{
		"audiohook_session_id":      c.sessionID,
		"audiohook_correlation_id":  c.correlation,
		"audiohook_organization_id": c.orgID,
	} {
		labels[k] = v
	}
	if p.Participant != nil && p.Participant.ID != "" {
		labels["audiohook_participant_id"] = strings.ToLower(p.Participant.ID)
	}
	if p.Language != "" {
		labels["language"] = p.Language
	}
	st, _ := edge.StartOf(strings.ToLower(p.ConversationID), agentID(p.CustomConfig), audio.CodecPCMU, 8000, media.Channels, "internal", labels)
	if _, err = ec.Start(st); err != nil {
		info := "Analysis backends unavailable; try again"
		switch {
		case errors.Is(err, session.ErrOverQuota):
			info = "The tenant is at its concurrent-call limit"
		case errors.Is(err, session.ErrDraining):
			info = "The gateway is draining; reconnect to another"
		case errors.Is(err, session.ErrCallLive):
			info = "The conversation already has a live AudioHook session on this gateway"
		case errors.Is(err, session.ErrBadStart):
			info = "Invalid session: " + errors.Unwrap(err).Error()
		}
		ec.Log().Info("session refused after the upgrade", "reason", info)
		c.disconnect(ec, DisconnectError, info, edge.CloseTryAgainLater)
		return nil
	}
	c.send(ec, TypeOpened, opened)
	c.setState(stateActive)
	return nil
}

// customLabels returns the call labels an open message's customConfig
// carries in its "labels" object ({"labels": {"queue": "vip"}}); other
// customConfig entries are not labels. session.Start checks the values.
func customLabels(cfg json.RawMessage) (map[string]string, error) {
	labels := map[string]string{}
	var m struct {
		Labels json.RawMessage `json:"labels"`
	}
	if json.Unmarshal(cfg, &m) != nil || len(m.Labels) == 0 || string(m.Labels) == "null" {
		return labels, nil
	}
	if err := json.Unmarshal(m.Labels, &labels); err != nil {
		return nil, errors.New("customConfig.labels must be an object of strings")
	}
	return labels, nil
}

// agentID reads the agent's id from the open's customConfig ("agentId"
// or "agent_id"), where an integrator can pass it.
func agentID(cfg json.RawMessage) string {
	var m map[string]any
	if json.Unmarshal(cfg, &m) != nil {
		return ""
	}
	for _, k := range []string{"agentId", "agent_id"} {
		if s, ok := m[k].(string); ok && len(s) <= 128 {
			return s
		}
	}
	return ""
}

// close handles the close transaction: the call's last audio reaches the
// backends and its report is stored before closed goes out.
func (c *conn) close(ec *edge.Conn, m *ClientMessage) error {
	p, err := m.DecodeClose()
	if err != nil {
		return protoFail(err)
	}
	prev := c.getState()
	c.setState(stateClosing)
	reason := fullcallv1.EndReason_END_REASON_HANGUP
	switch p.Reason {
	case "error":
		reason = fullcallv1.EndReason_END_REASON_ERROR
	case "disconnect", "reconnect":
		reason = fullcallv1.EndReason_END_REASON_DISCONNECTED
	}
	if ec.Idled() {
		reason = fullcallv1.EndReason_END_REASON_IDLE_TIMEOUT
	}
	if call := ec.Call(); call != nil {
		if r, aerr := call.AbortReason(); aerr != nil {
			reason = r
		}
		if prev == statePaused {
			// Paused until the end: the pause lasts to the close's position.
			if err := c.gapTo(ec, m.Position, callv1.GapReason_GAP_REASON_PAUSED, "audiohook: stream paused"); err != nil {
				ec.Fail(err)
			}
		}
	}
	ec.End(reason)
	c.mu.Lock()
	if c.timer != nil {
		c.timer.Stop()
	}
	c.sendLocked(ec, TypeClosed, struct{}{})
	c.state = stateClosed
	c.mu.Unlock()
	ec.Close(edge.CloseNormal, "session closed")
	return nil
}

// sendEvent sends an event unless the session is not open or the client
// is too far behind.
func (c *conn) sendEvent(ec *edge.Conn, e EventEntity) {
	if c.p.o.NoEvents {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateActive && c.state != statePaused && c.state != stateClosing {
		return
	}
	if c.seq-c.acked >= uint64(c.p.o.MaxUnackedEvents) {
		ec.Sessions().EventDropped(ec.Tenant().ID)
		return
	}
	c.sendLocked(ec, TypeEvent, EventParameters{Entities: []EventEntity{e}})
}

// Score implements edge.Renderer.
func (c *conn) Score(ec *edge.Conn, s edge.Score) {
	c.sendEvent(ec, EventEntity{Type: EntityScore, Data: ScoreData{
		Second:         s.Second,
		Position:       FormatDuration(time.Duration(s.EndSample) * time.Second / 8000),
		CallerPressure: s.CallerPressure,
		AgentStress:    s.AgentStress,
		Abstain:        s.Abstain("callerPressure", "agentStress"),
		Model:          ModelData{Name: s.ModelName, Version: s.ModelVersion},
	}})
}

// Alert implements edge.Renderer.
func (c *conn) Alert(ec *edge.Conn, a *callv1.AlertEvent) {
	c.sendEvent(ec, EventEntity{Type: EntityAlert, Data: AlertData{AlertID: a.AlertId, RuleID: a.RuleId, Episode: a.Episode, State: edge.AlertState(a),
		Score: wire.ScoreName(a.Score), Value: a.Value, Threshold: a.Threshold, Second: a.Second}})
}
