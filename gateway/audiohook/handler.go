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
package audiohook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/calmline/calmline/gateway/admission"
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
	if o.Verifier == nil {
		o.Verifier = &Verifier{}
	}
	if o.OpenTimeout == 0 {
		o.OpenTimeout = 10 * time.Second
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = 60 * time.Second
	}
	if o.DisconnectWait == 0 {
		o.DisconnectWait = 5 * time.Second
	}
	if o.MaxGap == 0 {
		o.MaxGap = time.Hour
	}
	if o.MaxUnackedEvents == 0 {
		o.MaxUnackedEvents = 32
	}
	if o.MeterProvider == nil {
		o.MeterProvider = noop.NewMeterProvider()
	}
}

// Handler serves AudioHook connections.
type Handler struct {
	o        Options
	m        *session.Manager
	tenants  *tenant.Registry
	log      *slog.Logger
	upgrader websocket.Upgrader
	probes   metric.Int64Counter
}

// NewHandler returns the adapter.
func NewHandler(o Options, m *session.Manager, tenants *tenant.Registry, log *slog.Logger) *Handler {
	o.defaults()
	h := &Handler{
		o: o, m: m, tenants: tenants, log: log.With("protocol", Protocol),
		upgrader: websocket.Upgrader{
			ReadBufferSize:  1024,
			WriteBufferSize: 1024,
			WriteBufferPool: &writePool,
			// Requests are authenticated by their signed headers, which a
			// browser cannot set: the origin need not be checked.
			CheckOrigin: func(*http.Request) bool { return true },
		},
	}
	h.probes, _ = o.MeterProvider.Meter("github.com/calmline/calmline/gateway/audiohook").Int64Counter(
		"calmline.gateway.audiohook.probes", metric.WithUnit("{session}"),
		metric.WithDescription("AudioHook connection probes answered (sessions with the null conversation id; not calls), by tenant."))
	if tenants != nil && h.probes != nil {
		// Every tenant's series exists from the start (docs/metrics.md).
		zero := func() {
			for _, t := range tenants.Tenants() {
				h.probes.Add(context.Background(), 0, metric.WithAttributes(attribute.String("tenant", t.ID)))
			}
		}
		zero()
		tenants.OnReload(zero)
	}
	return h
}

var writePool sync.Pool

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

// ServeHTTP checks the connection request (headers, API key, signature,
// quota), upgrades it and runs the session.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	apiKey := strings.TrimSpace(r.Header.Get(HeaderAPIKey))
	t, key, ok := h.tenants.AuthenticateKey(apiKey)
	if !ok {
		h.m.Refused(ctx, "", "audiohook_unauthenticated")
		refuse(w, http.StatusUnauthorized, "unauthenticated", "missing or unknown API key (X-API-KEY)")
		return
	}
	if !tenant.Allows(key.Role, tenant.ActionStreamCalls) {
		// As on the native endpoint: care-team and agent keys read the
		// live feed only.
		h.m.Refused(ctx, t.ID, "forbidden")
		refuse(w, http.StatusForbidden, "forbidden", fmt.Sprintf("a key with role %q reads the live feed only; stream calls with a general key", key.Role))
		return
	}
	hdr := map[string]string{}
	for _, name := range []string{HeaderOrganizationID, HeaderSessionID, HeaderCorrelationID} {
		v := strings.TrimSpace(r.Header.Get(name))
		if !IsUUID(v) {
			h.m.Refused(ctx, t.ID, "audiohook_bad_request")
			refuse(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("missing or invalid %s header (want a UUID)", name))
			return
		}
		hdr[name] = strings.ToLower(v)
	}
	if !t.AudioHook.AllowsOrganization(hdr[HeaderOrganizationID]) {
		h.m.Refused(ctx, t.ID, "audiohook_organization")
		refuse(w, http.StatusForbidden, "forbidden", "this Genesys Cloud organization may not stream for the tenant")
		return
	}
	var err error
	switch {
	case len(key.ClientSecret) > 0:
		err = h.o.Verifier.Verify(r, apiKey, key.ClientSecret)
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
			h.m.Refused(ctx, t.ID, "audiohook_replay_cache_full")
			refuse(w, http.StatusServiceUnavailable, "busy", err.Error())
			return
		}
		code := "signature_invalid"
		var se *SignatureError
		if errors.As(err, &se) {
			code = se.Code
		}
		h.m.Refused(ctx, t.ID, "audiohook_"+code)
		h.log.Info("connection refused: bad signature", "tenant", t.ID, "reason", code, "remote", r.RemoteAddr)
		refuse(w, http.StatusUnauthorized, code, err.Error())
		return
	}
	if err := h.m.Admit(t); err != nil {
		if errors.Is(err, session.ErrDraining) {
			h.m.Refused(ctx, t.ID, "draining")
			refuse(w, http.StatusServiceUnavailable, "draining", "this gateway is draining; reconnect to another")
			return
		}
		h.m.Refused(ctx, t.ID, "quota")
		refuse(w, http.StatusTooManyRequests, "over_quota", err.Error())
		return
	}
	ws, err := h.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	c := &conn{
		h:           h,
		tenant:      t,
		ticket:      admission.FromContext(r.Context()),
		sessionID:   hdr[HeaderSessionID],
		orgID:       hdr[HeaderOrganizationID],
		correlation: hdr[HeaderCorrelationID],
		connected:   time.Now(),
		private:     t.AgentScoring == tenant.AgentScoringPrivate,
	}
	c.log = h.log.With("tenant", t.ID, "audiohook_session", c.sessionID, "remote", r.RemoteAddr)
	c.lastSeen.Store(time.Now().UnixNano())
	co := h.o.Conn
	co.OnTick = c.tick
	co.OnWrite = func(n int) {
		// Events, pongs and the protocol's replies count as the call's
		// traffic out, as native's messages do.
		if call := c.callLive.Load(); call != nil {
			call.Sent(n)
		}
	}
	c.ws = wsconn.New(ws, co)
	c.run()
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

// conn is one AudioHook session, driven by its reader goroutine.
type conn struct {
	h           *Handler
	tenant      *tenant.Tenant
	idled       atomic.Bool       // disconnected for the idle timeout
	ticket      *admission.Ticket // released once the call is live
	ws          *wsconn.Conn
	log         *slog.Logger
	sessionID   string
	orgID       string
	correlation string
	connected   time.Time
	private     bool

	// callLive is the call, for the writer goroutine's traffic count.
	callLive atomic.Pointer[session.Call]

	// Owned by the reader goroutine.
	call  *session.Call
	probe bool
	frame int // bytes per sample frame of the accepted format

	lastSeen atomic.Int64 // unix nanoseconds of the last message or audio

	// mu guards the sequence numbers and the state, which the writer
	// (ticks, aborts) and the backends (events) read.
	mu        sync.Mutex
	state     state
	seq       uint64 // last server message sequence number
	clientSeq uint64 // last client message sequence number
	acked     uint64 // highest serverseq the client reported
	timer     *time.Timer
}

// send writes a server message with the next sequence number.
func (c *conn) send(typ string, params any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sendLocked(typ, params)
}

func (c *conn) sendLocked(typ string, params any) {
	c.seq++
	b, err := json.Marshal(ServerMessage{Version: Version, ID: c.sessionID, Type: typ, Seq: c.seq, ClientSeq: c.clientSeq, Parameters: params})
	if err != nil {
		c.log.Error("encoding a message failed", "type", typ, "err", err)
		return
	}
	c.ws.SendText(b, false)
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
func (c *conn) disconnect(reason, info string, wsCode int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state >= stateDisconnecting {
		return
	}
	c.state = stateDisconnecting
	c.sendLocked(TypeDisconnect, DisconnectParameters{Reason: reason, Info: info})
	if len(info) > 120 {
		info = info[:120]
	}
	c.timer = time.AfterFunc(c.h.o.DisconnectWait, func() { c.ws.Close(wsCode, info) })
}

// fail ends the session for a client error: the call ends now (its report
// stored), then disconnect with reason error, as the protocol prescribes.
func (c *conn) fail(reason, info string) {
	c.log.Info("disconnecting on bad input", "reason", reason, "info", info)
	c.h.m.Refused(context.Background(), c.tenant.ID, "audiohook_"+reason)
	c.endCall(fullcallv1.EndReason_END_REASON_ERROR)
	c.disconnect(DisconnectError, "Client Error: "+info, websocket.ClosePolicyViolation)
}

// tick runs on the writer goroutine at every WebSocket ping.
func (c *conn) tick() {
	c.mu.Lock()
	st := c.state
	c.mu.Unlock()
	idle := time.Since(time.Unix(0, c.lastSeen.Load()))
	switch {
	case st == statePreparing && time.Since(c.connected) > c.h.o.OpenTimeout:
		c.h.m.Refused(context.Background(), c.tenant.ID, "audiohook_no_open")
		c.disconnect(DisconnectError, fmt.Sprintf("no open message within %s", c.h.o.OpenTimeout), websocket.ClosePolicyViolation)
	case (st == stateActive || st == statePaused) && idle > c.h.o.IdleTimeout:
		c.h.m.Refused(context.Background(), c.tenant.ID, "audiohook_idle")
		c.idled.Store(true)
		c.disconnect(DisconnectError, fmt.Sprintf("no audio or message for %s", c.h.o.IdleTimeout), websocket.ClosePolicyViolation)
	}
}

func (c *conn) run() {
	defer c.ws.Finish()
	defer func() {
		c.mu.Lock()
		if c.timer != nil {
			c.timer.Stop()
		}
		c.mu.Unlock()
		// A session that ends without a close transaction (connection
		// lost, idle, disconnected) still ends its call.
		reason := fullcallv1.EndReason_END_REASON_DISCONNECTED
		if c.idled.Load() {
			reason = fullcallv1.EndReason_END_REASON_IDLE_TIMEOUT
		}
		if c.call != nil {
			if r, err := c.call.AbortReason(); err != nil {
				reason = r
			}
		}
		c.endCall(reason)
	}()
	for {
		typ, data, err := c.ws.Read()
		if err != nil {
			var tooBig *wsconn.TooBigError
			if errors.As(err, &tooBig) {
				// The connection is already closing with 1009; the
				// disconnect goes out first when the writer has not
				// written the close frame yet.
				c.h.m.Refused(context.Background(), c.tenant.ID, "audiohook_message_too_big")
				c.endCall(fullcallv1.EndReason_END_REASON_ERROR)
				c.disconnect(DisconnectError, "Client Error: "+tooBig.Error(), websocket.CloseMessageTooBig)
			}
			var badText *wsconn.InvalidTextError
			if errors.As(err, &badText) {
				// As for 1009: the disconnect goes out before the close
				// when the writer has not written it yet.
				c.h.m.Refused(context.Background(), c.tenant.ID, "audiohook_invalid_utf8")
				c.endCall(fullcallv1.EndReason_END_REASON_ERROR)
				c.disconnect(DisconnectError, "Client Error: text message is not valid UTF-8", websocket.CloseInvalidFramePayloadData)
			}
			return
		}
		if c.ws.Closing() {
			continue // draining the peer's last frames until its close
		}
		c.lastSeen.Store(time.Now().UnixNano())
		if typ == websocket.BinaryMessage {
			c.audio(data)
			continue
		}
		c.text(data)
	}
}

// audio handles a binary frame.
func (c *conn) audio(data []byte) {
	switch c.getState() {
	case statePreparing:
		c.fail("audio_before_open", "Received audio before the session was opened")
		return
	case statePaused:
		c.fail("audio_while_paused", "Received audio while the stream is paused")
		return
	case stateActive:
	case stateDisconnecting:
		// The gateway asked the client to end (a drain): its call goes on
		// until the client's close, frames in flight included. After an
		// error the call has ended and frames go nowhere.
		if c.call == nil {
			return
		}
	default:
		return
	}
	if len(data) == 0 {
		return
	}
	if len(data)%c.frame != 0 {
		c.fail("bad_frame", fmt.Sprintf("Binary frame of %d bytes is not a whole number of %d-byte sample frames", len(data), c.frame))
		return
	}
	if c.call == nil {
		return // a probe's audio goes nowhere
	}
	if err := c.call.Audio(data); err != nil && !errors.Is(err, session.ErrEnded) {
		c.log.Info("audio refused", "err", err)
		reason, wsCode := "audiohook_audio_refused", websocket.ClosePolicyViolation
		if errors.Is(err, session.ErrTooFast) {
			// The pacing refusal: native closes with 4420; AudioHook's
			// way is disconnect (reason error) with the cause in info,
			// and 4420 should the client not close in time.
			reason, wsCode = "audiohook_too_fast", CloseTooFast
		}
		c.h.m.Refused(context.Background(), c.tenant.ID, reason)
		c.endCall(fullcallv1.EndReason_END_REASON_ERROR)
		c.disconnect(DisconnectError, "Client Error: "+err.Error(), wsCode)
	}
}

// text handles a text frame: a protocol message.
func (c *conn) text(data []byte) {
	m, err := ParseClientMessage(data)
	if err != nil {
		c.failProto(err)
		return
	}
	c.mu.Lock()
	st := c.state
	if st >= stateDisconnecting {
		// After a disconnect (or closed) only the client's close matters;
		// its numbering may be off when the error was a numbering error.
		c.clientSeq = max(c.clientSeq, m.Seq)
		c.mu.Unlock()
		if m.Type == TypeClose && st == stateDisconnecting {
			c.close(m)
		}
		return
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
		c.fail("sequence", seqErr)
		return
	}

	switch m.Type {
	case TypeOpen:
		c.open(m)
	case TypeClose:
		c.close(m)
	case TypePing:
		if _, err := m.DecodePing(); err != nil {
			c.failProto(err)
			return
		}
		c.send(TypePong, struct{}{})
	case TypeError:
		p, err := m.DecodeError()
		if err != nil {
			c.failProto(err)
			return
		}
		// The client reports a problem; it ends the session itself if
		// it must.
		c.log.Warn("client reported an error", "code", p.Code, "message", p.Message)
	case TypeUpdate, TypePaused, TypeResumed, TypeDiscarded:
		if st == statePreparing {
			c.fail("out_of_order", fmt.Sprintf("Received %q before the session was opened", m.Type))
			return
		}
		c.streamEvent(m, st)
	default:
		c.fail("unknown_type", fmt.Sprintf("Invalid Message: %q is not a supported client message", m.Type))
	}
}

func (c *conn) failProto(err error) {
	var pe *ProtocolError
	reason := "bad_message"
	if errors.As(err, &pe) && strings.Contains(pe.Msg, "not valid JSON") {
		reason = "malformed_json"
	}
	c.fail(reason, err.Error())
}

// streamEvent handles update, paused, resumed and discarded.
func (c *conn) streamEvent(m *ClientMessage, st state) {
	switch m.Type {
	case TypeUpdate:
		lang, err := m.DecodeUpdate()
		if err != nil {
			c.failProto(err)
			return
		}
		c.log.Info("session updated", "language", lang)
		c.send(TypeUpdated, struct{}{})
	case TypePaused:
		if err := m.DecodeEmpty(); err != nil {
			c.failProto(err)
			return
		}
		// A repeated paused is how a client confirms it is still paused.
		c.setState(statePaused)
	case TypeResumed, TypeDiscarded:
		span, err := m.DecodeSpan()
		if err != nil {
			c.failProto(err)
			return
		}
		reason, detail := callv1.GapReason_GAP_REASON_DISCARDED, "audiohook: audio discarded by the client"
		if m.Type == TypeResumed {
			if st != statePaused {
				c.log.Info("resumed while not paused")
			}
			c.setState(stateActive)
			reason, detail = callv1.GapReason_GAP_REASON_PAUSED, "audiohook: stream paused"
		}
		c.gapTo(span.End(), reason, detail)
	}
}

// gapTo advances the call's timeline to the stream position pos over a
// stretch without audio.
func (c *conn) gapTo(pos time.Duration, reason callv1.GapReason, detail string) {
	if c.call == nil {
		return
	}
	rate := c.call.Format().SampleRate
	end, tl := Samples(pos, rate), c.call.Timeline()
	if end <= tl {
		return
	}
	if n := end - tl; n > Samples(c.h.o.MaxGap, rate) {
		c.fail("gap_too_long", fmt.Sprintf("A span of %.0f s without audio exceeds the %s limit", float64(n)/float64(rate), c.h.o.MaxGap))
		return
	}
	if err := c.call.Gap(end-tl, reason, detail); err != nil && !errors.Is(err, session.ErrEnded) {
		c.log.Info("gap refused", "err", err)
		wsCode := websocket.ClosePolicyViolation
		if errors.Is(err, session.ErrTooFast) {
			wsCode = CloseTooFast // as for audio too fast
		}
		c.h.m.Refused(context.Background(), c.tenant.ID, "audiohook_gap_refused")
		c.endCall(fullcallv1.EndReason_END_REASON_ERROR)
		c.disconnect(DisconnectError, "Client Error: "+err.Error(), wsCode)
	}
}

// SelectMedia chooses the media format to accept among those offered:
// stereo PCMU at 8 kHz (either channel order: the call's roles follow the
// order the frames carry), else mono PCMU with the caller (external),
// else mono with the agent (internal). It returns the roles of the
// channels in frame order.
func SelectMedia(offered []MediaParameter) (MediaParameter, []callv1.ChannelRole, bool) {
	role := map[string]callv1.ChannelRole{"external": callv1.ChannelRole_CHANNEL_ROLE_CALLER, "internal": callv1.ChannelRole_CHANNEL_ROLE_AGENT}
	usable := func(m MediaParameter) bool {
		return m.Type == "audio" && m.Format == "PCMU" && m.Rate == 8000
	}
	for _, want := range [][]string{{"external", "internal"}, {"internal", "external"}, {"external"}, {"internal"}} {
		for _, m := range offered {
			if usable(m) && len(m.Channels) == len(want) && m.Channels[0] == want[0] && (len(want) == 1 || m.Channels[1] == want[1]) {
				roles := make([]callv1.ChannelRole, len(want))
				for i, ch := range want {
					roles[i] = role[ch]
				}
				return m, roles, true
			}
		}
	}
	return MediaParameter{}, nil, false
}

// open handles the open transaction.
func (c *conn) open(m *ClientMessage) {
	if c.getState() != statePreparing {
		c.fail("out_of_order", "Received open twice")
		return
	}
	p, err := m.DecodeOpen()
	if err != nil {
		c.failProto(err)
		return
	}
	if !strings.EqualFold(p.OrganizationID, c.orgID) {
		c.h.m.Refused(context.Background(), c.tenant.ID, "audiohook_organization")
		c.disconnect(DisconnectUnauthorized, `Mismatch between "organizationId" open parameter and "audiohook-organization-id" header field`, websocket.ClosePolicyViolation)
		return
	}
	media, roles, ok := SelectMedia(p.Media)
	if !ok {
		c.h.m.Refused(context.Background(), c.tenant.ID, "audiohook_unsupported_media")
		c.disconnect(DisconnectError, "No offered media format is supported: calmline takes PCMU at 8000 Hz, stereo (external, internal) or mono", websocket.ClosePolicyViolation)
		return
	}
	c.frame = len(roles)
	opened := OpenedParameters{Media: []MediaParameter{media}}
	if p.SupportedLanguages {
		// calmline transcribes nothing: no languages to offer.
		opened.SupportedLanguages = &[]string{}
	}
	if strings.EqualFold(p.ConversationID, NullUUID) {
		c.probe = true
		c.h.probes.Add(context.Background(), 1, metric.WithAttributes(attribute.String("tenant", c.tenant.ID)))
		c.log.Info("connection probe answered")
		c.send(TypeOpened, opened)
		c.setState(stateActive)
		return
	}
	// The call's labels: customConfig's string entries (queue, skill,
	// agent group ... as the Genesys integration sets them), then the
	// session's own, which a customConfig entry cannot override.
	labels, err := customLabels(p.CustomConfig)
	if err != nil {
		c.fail("bad_message", err.Error())
		return
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
	call, err := c.h.m.Start(context.Background(), session.Start{
		Tenant:   c.tenant,
		CallID:   strings.ToLower(p.ConversationID),
		AgentID:  agentID(p.CustomConfig),
		Format:   audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: len(roles)},
		Roles:    roles,
		Protocol: Protocol,
		Labels:   labels,
	}, c)
	if err != nil {
		info := "Analysis backends unavailable; try again"
		switch {
		case errors.Is(err, session.ErrOverQuota):
			info = "The tenant is at its concurrent-call limit"
		case errors.Is(err, session.ErrDraining):
			info = "The gateway is draining; reconnect to another"
		case errors.Is(err, session.ErrCallLive):
			info = "The conversation already has a live AudioHook session on this gateway"
		case errors.Is(err, session.ErrBadStart):
			info = "Invalid session: " + err.Error()
		}
		c.log.Info("session refused after the upgrade", "reason", info)
		c.disconnect(DisconnectError, info, websocket.CloseTryAgainLater)
		return
	}
	c.call = call
	c.callLive.Store(call)
	c.ticket.Started()
	c.send(TypeOpened, opened)
	c.setState(stateActive)
	// The writer watches for the call being aborted (drain, lost
	// backend) even while the reader waits for the next frame.
	c.ws.Watch(call.Done(), func() {
		r, aerr := call.AbortReason()
		if r == fullcallv1.EndReason_END_REASON_DRAIN {
			c.disconnect(DisconnectError, "The gateway is draining (deploy or scale-in); the session ends", websocket.CloseGoingAway)
			return
		}
		c.disconnect(DisconnectError, "Server error: the call was ended by the gateway: "+aerr.Error(), websocket.CloseInternalServerErr)
	})
}

// agentID reads the agent's id from the open's customConfig ("agentId"
// or "agent_id"), where an integrator can pass it.
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
func (c *conn) close(m *ClientMessage) {
	p, err := m.DecodeClose()
	if err != nil {
		c.failProto(err)
		return
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
	if c.idled.Load() {
		reason = fullcallv1.EndReason_END_REASON_IDLE_TIMEOUT
	}
	if c.call != nil {
		if r, aerr := c.call.AbortReason(); aerr != nil {
			reason = r
		}
		if prev == statePaused {
			// Paused until the end: the pause lasts to the close's position.
			c.gapTo(m.Position, callv1.GapReason_GAP_REASON_PAUSED, "audiohook: stream paused")
		}
	}
	c.endCall(reason)
	c.mu.Lock()
	if c.timer != nil {
		c.timer.Stop()
	}
	c.sendLocked(TypeClosed, struct{}{})
	c.state = stateClosed
	c.mu.Unlock()
	c.ws.Close(websocket.CloseNormalClosure, "session closed")
}

// endCall ends the call once.
func (c *conn) endCall(reason session.EndReason) {
	call := c.call
	if call == nil {
		return
	}
	c.call = nil
	if _, err := call.End(context.Background(), reason); err != nil && !errors.Is(err, session.ErrEnded) {
		c.log.Warn("call ended without a report", "err", err)
	}
}

// sendEvent sends an event unless the session is not open or the client
// is too far behind.
func (c *conn) sendEvent(e EventEntity) {
	if c.h.o.NoEvents {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateActive && c.state != statePaused && c.state != stateClosing {
		return
	}
	if c.seq-c.acked >= uint64(c.h.o.MaxUnackedEvents) {
		c.h.m.EventDropped(c.tenant.ID)
		return
	}
	c.sendLocked(TypeEvent, EventParameters{Entities: []EventEntity{e}})
}

// Score implements session.Events.
func (c *conn) Score(u *callv1.ScoreUpdate) {
	d := ScoreData{
		Second:         u.Second,
		Position:       FormatDuration(time.Duration(u.EndSample) * time.Second / 8000),
		CallerPressure: u.CallerPressure,
		AgentStress:    u.AgentStress,
		Model:          ModelData{Name: u.Model.GetName(), Version: u.Model.GetVersion()},
	}
	abstain := map[string]string{}
	if u.CallerPressureAbstain != "" {
		abstain["callerPressure"] = u.CallerPressureAbstain
	}
	if u.AgentStressAbstain != "" {
		abstain["agentStress"] = u.AgentStressAbstain
	}
	if c.private {
		// Private mode: agent-side scores reach only the agent and the
		// care team, never the contact-center platform.
		d.AgentStress = nil
		abstain["agentStress"] = "private: shown only to the agent and the care team"
	}
	if len(abstain) > 0 {
		d.Abstain = abstain
	}
	c.sendEvent(EventEntity{Type: EntityScore, Data: d})
}

// Alert implements session.Events.
func (c *conn) Alert(a *callv1.AlertEvent) {
	state := "firing"
	if a.State == callv1.AlertState_ALERT_STATE_CLEARED {
		state = "cleared"
	}
	c.sendEvent(EventEntity{Type: EntityAlert, Data: AlertData{AlertID: a.AlertId, RuleID: a.RuleId, Episode: a.Episode, State: state,
		Score: wire.ScoreName(a.Score), Value: a.Value, Threshold: a.Threshold, Second: a.Second}})
}
