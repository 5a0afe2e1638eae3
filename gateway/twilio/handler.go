// Package twilio is the gateway's adapter for Twilio-style media streams:
// the JSON protocol of Twilio's <Stream> (connected, start, media, mark,
// dtmf, stop), with base64 audio per track, and the dialects of Telnyx,
// Exotel and Plivo, which send the same events under other field names
// (an Envelope). The inbound track is the caller, the outbound track the
// agent; with both, the two tracks are aligned by their timestamps, not
// by arrival, and joined into one stereo call.
//
// Such senders cannot always set request headers, so a tenant's API key
// may come in the start message's custom parameters; the connection then
// is upgraded first and authenticated at start. The protocol gives the
// server no way to send events back: scores and alerts reach the tenant
// through calmline's APIs and escalations.
//
// docs/protocols.md documents the mapping. The package also holds a
// Client that streams a recording as these senders do.
package twilio

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/calmline/calmline/gateway/admission"
	"github.com/calmline/calmline/gateway/session"
	"github.com/calmline/calmline/gateway/stereo"
	"github.com/calmline/calmline/gateway/wsconn"
	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/tenant"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// Close codes the server uses, besides 1000 (after stop), 1001 (the
// gateway drains), 1009 (message too big), 1011 (the call was lost) and
// 1013 (backends unavailable). They match the native protocol's.
const (
	CloseBadMessage       = 4400 // malformed JSON, unknown event, bad field, base64 garbage, bad payload size
	CloseUnauthenticated  = 4401 // no or unknown API key in the start's custom parameters
	CloseForbidden        = 4403 // a feed-only key (role care or agent) in the start's custom parameters
	CloseIdle             = 4408 // no start, or no media, for the idle timeout
	CloseOutOfOrder       = 4409 // media before start, start twice, sequence numbers out of order or repeated
	CloseCallLive         = 4410 // the tenant already has a live call with this call id
	CloseUnsupportedMedia = 4415 // unsupported encoding, sample rate or track
	CloseTooFast          = 4420 // media faster than real time, past the gateway's pacing policy
	CloseOverQuota        = 4429 // the tenant is at its concurrent-call limit
)

// feedOnly is the refusal of a feed-only key.
func feedOnly(role string) string {
	return fmt.Sprintf("forbidden: a key with role %q reads the live feed only; stream calls with a general key", role)
}

// KeyParameter is the custom parameter that carries the API key when the
// sender cannot set a header; AgentParameter the agent's id.
const (
	KeyParameter   = wsconn.KeyParameter
	AgentParameter = "agent_id"
)

// Options configures the adapter.
type Options struct {
	Conn wsconn.Options
	// IdleTimeout closes a connection that sends no start, or no media,
	// for this long (default 30 s).
	IdleTimeout time.Duration
	// MaxUnauthenticated bounds the connections upgraded before their
	// start authenticated them; past it new ones are refused with 503
	// (default 1000).
	MaxUnauthenticated int64
	// JoinLag is how long one track may lag the other before its missing
	// audio counts as silence (default 400 ms).
	JoinLag time.Duration
	// MaxHole bounds a jump of a track's timestamps (default 1 h).
	MaxHole time.Duration
	// TrackWait is how much media one declared track may send before the
	// call starts without a declared track that sent none (default
	// 1 s): only tracks that carry audio become channels.
	TrackWait time.Duration
	// JitterTolerance is how far a track's media timestamps may run ahead
	// of the audio received on it before the difference counts as lost
	// audio (default 60 ms). Senders stamp media with their wall clock,
	// which jitters by milliseconds and now and then by tens of them:
	// within the tolerance a packet follows the one before it.
	JitterTolerance time.Duration
}

// Handler serves Twilio-style media streams.
type Handler struct {
	o        Options
	m        *session.Manager
	tenants  *tenant.Registry
	log      *slog.Logger
	upgrader websocket.Upgrader
	pending  atomic.Int64
}

// NewHandler returns the adapter.
func NewHandler(o Options, m *session.Manager, tenants *tenant.Registry, log *slog.Logger) *Handler {
	if o.IdleTimeout == 0 {
		o.IdleTimeout = 30 * time.Second
	}
	if o.MaxUnauthenticated == 0 {
		o.MaxUnauthenticated = 1000
	}
	if o.JoinLag == 0 {
		o.JoinLag = 400 * time.Millisecond
	}
	if o.MaxHole == 0 {
		o.MaxHole = time.Hour
	}
	if o.TrackWait == 0 {
		o.TrackWait = time.Second
	}
	if o.JitterTolerance == 0 {
		o.JitterTolerance = 60 * time.Millisecond
	}
	return &Handler{o: o, m: m, tenants: tenants, log: log.With("protocol", "twilio"),
		upgrader: websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 1024,
			// Streams authenticate with a key the page cannot know.
			CheckOrigin: func(*http.Request) bool { return true }}}
}

func refuse(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "5")
	}
	w.WriteHeader(status)
	b, _ := json.Marshal(map[string]any{"error": map[string]string{"code": code, "message": msg}})
	w.Write(append(b, '\n'))
}

// keyFromRequest returns an API key sent before the upgrade: in a header
// (Bearer, X-API-Key, or the password of Basic authentication — Exotel's
// wss://KEY:TOKEN@host puts the token there), or as the api_key query
// parameter for senders that can set no header. The query parameter is
// removed from the request's URL, so that nothing after this logs it.
func keyFromRequest(r *http.Request) string {
	k := tenant.KeyFromRequest(r)
	if k == "" {
		if _, pw, ok := r.BasicAuth(); ok {
			k = pw
		}
	}
	if qk := wsconn.TakeQueryKey(r); k == "" {
		k = qk
	}
	return k
}

// ServeHTTP accepts a stream. With a key in a header the tenant is checked
// before the upgrade; without, at start.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	env := Twilio
	if name := r.URL.Query().Get("envelope"); name != "" {
		e, ok := Envelopes[strings.ToLower(name)]
		if !ok {
			h.m.Refused(r.Context(), "", "twilio_bad_request")
			refuse(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("unknown envelope %q (want twilio, telnyx, exotel or plivo)", name))
			return
		}
		env = e
	}
	var tracks []string
	if t := r.URL.Query().Get("tracks"); t != "" {
		switch t {
		case "inbound", "inbound_track":
			tracks = []string{"inbound"}
		case "outbound", "outbound_track":
			tracks = []string{"outbound"}
		case "both", "both_tracks":
			tracks = []string{"inbound", "outbound"}
		default:
			h.m.Refused(r.Context(), "", "twilio_bad_request")
			refuse(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("unknown tracks %q (want inbound, outbound or both)", t))
			return
		}
	}
	var t *tenant.Tenant
	if key := keyFromRequest(r); key != "" {
		t2, k, ok := h.tenants.AuthenticateKey(key)
		if !ok {
			h.m.Refused(r.Context(), "", "unauthenticated")
			refuse(w, http.StatusUnauthorized, "unauthenticated", "unknown API key")
			return
		}
		if !tenant.Allows(k.Role, tenant.ActionStreamCalls) {
			h.m.Refused(r.Context(), t2.ID, "forbidden")
			refuse(w, http.StatusForbidden, "forbidden", feedOnly(k.Role))
			return
		}
		t = t2
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
	} else {
		if h.m.Draining() {
			h.m.Refused(r.Context(), "", "draining")
			refuse(w, http.StatusServiceUnavailable, "draining", "this gateway is draining; reconnect to another")
			return
		}
		if h.pending.Add(1) > h.o.MaxUnauthenticated {
			h.pending.Add(-1)
			h.m.Refused(r.Context(), "", "twilio_too_many_unauthenticated")
			refuse(w, http.StatusServiceUnavailable, "busy", "too many connections waiting for their start; retry")
			return
		}
	}
	ws, err := h.upgrader.Upgrade(w, r, nil)
	if err != nil {
		if t == nil {
			h.pending.Add(-1)
		}
		return
	}
	c := &conn{h: h, env: env, tenant: t, ticket: admission.FromContext(r.Context()), tracks: tracks, pendingAuth: t == nil, log: h.log.With("envelope", env.Name, "remote", r.RemoteAddr)}
	c.lastMedia.Store(time.Now().UnixNano())
	c.ws = wsconn.New(ws, h.o.Conn)
	c.run()
}

// conn is one stream, driven by its reader goroutine.
type conn struct {
	h           *Handler
	env         Envelope
	tenant      *tenant.Tenant
	tracks      []string // from the URL, overriding the start's
	pendingAuth bool
	ticket      *admission.Ticket // released once the call is live
	ws          *wsconn.Conn
	log         *slog.Logger

	call     *session.Call
	callLive atomic.Bool
	joiner   *stereo.Joiner
	lanes    map[string]int // track -> channel
	rate     int
	width    int
	seq      seqCheck
	stopped  bool
	payload  []byte // media payloads are decoded here (the joiner copies them)
	// declared are the tracks the start names (inbound before outbound);
	// with two, the call waits (holding) for their media, held in held,
	// to start with only those that carry audio (startMsg is the start).
	declared    []string
	startMsg    *Start
	holding     bool
	held        []*Media
	heldSamples map[string]uint64
	lateTrack   bool // media came on a declared track left out of the call

	lastMedia atomic.Int64
}

// closeIdle closes a stream that sent no start, or no media, for the idle
// timeout.
func (c *conn) closeIdle() {
	what := "media"
	if !c.callLive.Load() {
		what = "start"
	}
	c.ws.Close(CloseIdle, fmt.Sprintf("no %s for %s", what, c.h.o.IdleTimeout))
}

func (c *conn) tenantID() string {
	if c.tenant == nil {
		return ""
	}
	return c.tenant.ID
}

func (c *conn) run() {
	idle := wsconn.StartIdle(c.h.o.IdleTimeout, &c.lastMedia, c.closeIdle)
	defer idle.Stop()
	defer c.ws.Finish()
	defer func() {
		if c.pendingAuth {
			c.h.pending.Add(-1)
		}
		// A stream that ends without stop (the socket closed, or bad
		// input) still ends its call, with what arrived.
		reason := fullcallv1.EndReason_END_REASON_DISCONNECTED
		if idle.Fired() {
			reason = fullcallv1.EndReason_END_REASON_IDLE_TIMEOUT
		}
		if c.holding && len(c.held) > 0 {
			// The stream ended before every declared track spoke: its
			// audio still makes a call.
			c.openHeld()
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
			if code, bad := wsconn.ClientError(err); bad {
				c.log.Info("closing stream on bad input", "code", code, "reason", err.Error())
				c.h.m.Refused(context.Background(), c.tenantID(), fmt.Sprintf("close_%d", code))
				c.endCall(fullcallv1.EndReason_END_REASON_ERROR)
			}
			return
		}
		if c.ws.Closing() {
			continue
		}
		if c.call != nil {
			select {
			case <-c.call.Done():
				r, aerr := c.call.AbortReason()
				c.closeForAbort(r, aerr)
				continue
			default:
			}
		}
		if typ == websocket.BinaryMessage {
			c.fail(CloseBadMessage, "binary frames are not part of the protocol (media travels as base64 in JSON)")
			continue
		}
		m, err := c.env.parse(data, &c.payload)
		if err != nil {
			var bm *BadMessage
			if errors.As(err, &bm) {
				c.fail(bm.Code, bm.Msg)
			}
			continue
		}
		if m.HasSeq {
			if err := c.seq.next(m.Seq, c.env.StrictSequence); err != nil {
				c.fail(CloseOutOfOrder, err.Error())
				continue
			}
		}
		c.handle(m)
	}
}

func (c *conn) handle(m *Message) {
	switch m.Event {
	case "connected":
	case "start":
		c.start(m.Start)
	case "media":
		c.media(m.Media)
	case "stop":
		if c.holding {
			c.openHeld()
		}
		if c.call == nil {
			if !c.ws.Closing() {
				c.fail(CloseOutOfOrder, "stop before start")
			}
			return
		}
		c.endCall(fullcallv1.EndReason_END_REASON_HANGUP)
		c.stopped = true
		c.ws.Close(websocket.CloseNormalClosure, "stream stopped")
	case "mark", "dtmf":
		// Marks acknowledge audio the server played (calmline plays
		// none); DTMF digits may be card numbers: neither is kept.
		if c.call == nil && !c.holding {
			c.fail(CloseOutOfOrder, m.Event+" before start")
		}
	case "error":
		c.log.Warn("the sender reported an error")
	default:
		c.fail(CloseBadMessage, fmt.Sprintf("unknown event %q", m.Event))
	}
}

// refuse closes a connection whose call could not start, after the
// upgrade, and says so in the log (a sender that reconnects on every
// refusal is otherwise invisible).
func (c *conn) refuse(code int, reason, tenantID string) {
	c.log.Info("stream refused after the upgrade", "code", code, "reason", reason, "tenant", tenantID)
	c.ws.Close(code, reason)
}

// fail closes the connection for a client error; a live call ends, its
// report stored.
func (c *conn) fail(code int, reason string) {
	c.log.Info("closing stream on bad input", "code", code, "reason", reason)
	c.h.m.Refused(context.Background(), c.tenantID(), fmt.Sprintf("close_%d", code))
	c.holding, c.held = false, nil
	c.endCall(fullcallv1.EndReason_END_REASON_ERROR)
	c.ws.Close(code, reason)
}

func (c *conn) start(s *Start) {
	if c.call != nil || c.stopped || c.holding {
		c.fail(CloseOutOfOrder, "start sent twice")
		return
	}
	if c.tenant == nil {
		key := s.Parameters[KeyParameter]
		t, k, ok := c.h.tenants.AuthenticateKey(key)
		if !ok {
			c.h.m.Refused(context.Background(), "", "unauthenticated")
			msg := "unauthenticated: missing or unknown API key (send it in a header, ?" + KeyParameter + "= or the " + KeyParameter + " custom parameter)"
			c.refuse(CloseUnauthenticated, msg, "")
			return
		}
		if !tenant.Allows(k.Role, tenant.ActionStreamCalls) {
			c.h.m.Refused(context.Background(), t.ID, "forbidden")
			c.refuse(CloseForbidden, feedOnly(k.Role), t.ID)
			return
		}
		c.tenant = t
		c.pendingAuth = false
		c.h.pending.Add(-1)
	}
	if s.CallID == "" {
		s.CallID = s.StreamID
	}
	if s.CallID == "" {
		c.fail(CloseBadMessage, "start: no call id and no stream id")
		return
	}
	tracks := c.tracks
	if tracks == nil {
		tracks = s.Tracks
	}
	if len(tracks) == 0 {
		tracks = c.env.DefaultTracks
	}
	for _, t := range tracks {
		if n := strings.TrimSuffix(t, "_track"); n != "inbound" && n != "outbound" {
			c.fail(CloseUnsupportedMedia, fmt.Sprintf("start: unknown track %q (want inbound and/or outbound)", t))
			return
		}
	}
	c.declared = nil
	for _, name := range []string{"inbound", "outbound"} {
		for _, t := range tracks {
			if strings.TrimSuffix(t, "_track") == name {
				c.declared = append(c.declared, name)
				break
			}
		}
	}
	c.rate, c.width = s.SampleRate, s.Codec.BytesPerSample()
	c.startMsg = s
	if len(c.declared) > 1 {
		// Only the tracks that carry audio become channels: the call
		// starts once every declared track has sent media, or one has
		// sent TrackWait of it without the other.
		c.holding = true
		c.lastMedia.Store(time.Now().UnixNano())
		return
	}
	c.open(c.declared)
}

// open starts the call with the given tracks as its channels.
func (c *conn) open(tracks []string) {
	s := c.startMsg
	c.holding = false
	c.lanes = map[string]int{}
	var roles []callv1.ChannelRole
	for _, name := range tracks {
		c.lanes[name] = len(roles)
		role := callv1.ChannelRole_CHANNEL_ROLE_CALLER
		if name == "outbound" {
			role = callv1.ChannelRole_CHANNEL_ROLE_AGENT
		}
		roles = append(roles, role)
	}
	j, err := stereo.New(stereo.Options{
		Channels:  len(roles),
		Silence:   silence(s.Codec),
		MaxLag:    uint64(c.h.o.JoinLag * time.Duration(c.rate) / time.Second),
		MaxHole:   uint64(c.h.o.MaxHole * time.Duration(c.rate) / time.Second),
		Delay:     uint64(c.env.Reorder * time.Duration(c.rate) / time.Second),
		GapDetail: c.env.Name + ": no media on any track",
	})
	if err != nil {
		c.fail(CloseUnsupportedMedia, "start: "+err.Error())
		return
	}
	c.joiner = j
	// The call's labels: the start's custom parameters named label.KEY
	// (queue, skill, agent group ...), then the stream's own, which a
	// parameter cannot override. Other parameters (the API key, the agent
	// id, whatever else the integration passes) are not labels.
	labels := map[string]string{}
	for k, v := range s.Parameters {
		if name, ok := strings.CutPrefix(k, session.LabelParamPrefix); ok {
			labels[name] = v
		}
	}
	labels["stream_id"], labels["envelope"] = s.StreamID, c.env.Name
	call, err := c.h.m.Start(context.Background(), session.Start{
		Tenant:   c.tenant,
		CallID:   s.CallID,
		AgentID:  s.Parameters[AgentParameter],
		Format:   audio.Format{Codec: s.Codec, SampleRate: s.SampleRate, Channels: len(roles)},
		Roles:    roles,
		Protocol: "twilio",
		Labels:   labels,
	}, events{})
	switch {
	case err == nil:
	case errors.Is(err, session.ErrOverQuota):
		c.refuse(CloseOverQuota, err.Error(), c.tenant.ID)
		return
	case errors.Is(err, session.ErrDraining):
		c.refuse(websocket.CloseGoingAway, "gateway draining; reconnect", c.tenant.ID)
		return
	case errors.Is(err, session.ErrCallLive):
		c.refuse(CloseCallLive, fmt.Sprintf("call %q is already live", s.CallID), c.tenant.ID)
		return
	case errors.Is(err, session.ErrBadStart):
		c.fail(CloseBadMessage, "start: "+err.Error())
		return
	default:
		c.refuse(websocket.CloseTryAgainLater, "analysis backends unavailable; try again", c.tenant.ID)
		return
	}
	c.call = call
	c.callLive.Store(true)
	c.ticket.Started()
	c.lastMedia.Store(time.Now().UnixNano())
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

func (c *conn) media(m *Media) {
	if c.holding {
		c.hold(m)
		return
	}
	if c.call == nil {
		if c.stopped {
			return
		}
		c.fail(CloseOutOfOrder, "media before start")
		return
	}
	track := strings.TrimSuffix(m.Track, "_track")
	if track == "" && len(c.lanes) == 1 {
		for t := range c.lanes {
			track = t
		}
	}
	lane, ok := c.lanes[track]
	if !ok {
		if slices.Contains(c.declared, track) {
			// Declared, but silent when the call started: not one of its
			// channels.
			if !c.lateTrack {
				c.lateTrack = true
				c.log.Info("media on a declared track that sent none before the call started; ignored", "track", track)
			}
			c.lastMedia.Store(time.Now().UnixNano())
			return
		}
		c.fail(CloseUnsupportedMedia, fmt.Sprintf("media on track %q, which the start did not declare", m.Track))
		return
	}
	if len(m.Payload)%c.width != 0 {
		c.fail(CloseBadMessage, fmt.Sprintf("media payload of %d bytes is not a whole number of %d-byte samples", len(m.Payload), c.width))
		return
	}
	pos := c.place(lane, m)
	c.lastMedia.Store(time.Now().UnixNano())
	if err := c.joiner.Write(c.call, lane, pos, m.Payload); err != nil {
		if errors.Is(err, stereo.ErrHole) {
			c.fail(CloseBadMessage, fmt.Sprintf("media timestamp %d ms jumps more than %s ahead", m.Timestamp, c.h.o.MaxHole))
			return
		}
		c.log.Info("audio refused", "err", err)
		if errors.Is(err, session.ErrTooFast) {
			c.fail(CloseTooFast, err.Error())
			return
		}
		c.fail(CloseBadMessage, err.Error())
	}
}

// hold keeps a stream's media until it is known which declared tracks
// carry audio, then starts the call with those and plays the media held.
func (c *conn) hold(m *Media) {
	track := strings.TrimSuffix(m.Track, "_track")
	if !slices.Contains(c.declared, track) {
		c.fail(CloseUnsupportedMedia, fmt.Sprintf("media on track %q, which the start did not declare", m.Track))
		return
	}
	if len(m.Payload)%c.width != 0 {
		c.fail(CloseBadMessage, fmt.Sprintf("media payload of %d bytes is not a whole number of %d-byte samples", len(m.Payload), c.width))
		return
	}
	c.lastMedia.Store(time.Now().UnixNano())
	held := *m
	held.Payload = append([]byte(nil), m.Payload...)
	c.held = append(c.held, &held)
	if c.heldSamples == nil {
		c.heldSamples = map[string]uint64{}
	}
	c.heldSamples[track] += uint64(len(m.Payload) / c.width)
	wait := uint64(c.h.o.TrackWait * time.Duration(c.rate) / time.Second)
	if len(c.heldSamples) == len(c.declared) || c.heldSamples[track] >= wait {
		c.openHeld()
	}
}

// openHeld starts a held call with the declared tracks that sent media
// (all of them when none did) and plays what was held.
func (c *conn) openHeld() {
	var tracks []string
	for _, t := range c.declared {
		if c.heldSamples[t] > 0 {
			tracks = append(tracks, t)
		}
	}
	if len(tracks) == 0 {
		tracks = c.declared
	}
	c.open(tracks)
	held := c.held
	c.held, c.heldSamples = nil, nil
	for _, m := range held {
		if c.call == nil || c.ws.Closing() {
			return
		}
		c.media(m)
	}
}

// place returns where a track's media goes on the call's timeline. Media
// arrives in order (the sequence numbers say so), so each packet follows
// the one before it on its track; the timestamps serve only as a clock to
// notice real loss: when a packet's timestamp runs ahead of the audio its
// track has received by more than the jitter tolerance, the difference —
// the real amount — is a hole. A timestamp behind the track's audio (a
// late stamp) never drops the packet's samples. Senders that may reorder
// (Telnyx) are placed by timestamp within their reorder window, with the
// same tolerance around the track's end.
func (c *conn) place(lane int, m *Media) uint64 {
	known := c.joiner.Known(lane)
	if !m.HasTimestamp {
		return known
	}
	ts := m.Timestamp * uint64(c.rate) / 1000
	tol := uint64(c.h.o.JitterTolerance * time.Duration(c.rate) / time.Second)
	switch {
	case ts > known+tol:
		return ts // audio was lost: a hole of the real amount
	case c.env.Reorder > 0 && ts+tol < known:
		return ts // a reordered packet, to its place in the held-back window
	}
	return known
}

// endCall flushes what the tracks hold and ends the call once.
func (c *conn) endCall(reason session.EndReason) {
	call := c.call
	if call == nil {
		return
	}
	c.call = nil
	c.joiner.Flush(call)
	if _, err := call.End(context.Background(), reason); err != nil && !errors.Is(err, session.ErrEnded) {
		c.log.Warn("call ended without a report", "err", err)
	}
}

// events drops the call's live events: the protocol has no message to
// carry them back.
type events struct{}

func (events) Score(*callv1.ScoreUpdate) {}
func (events) Alert(*callv1.AlertEvent)  {}

// seqCheck enforces a stream's sequence numbers: rising by one (strict),
// or in any order but never twice (within a window of recent numbers).
type seqCheck struct {
	started bool
	last    uint64 // strict: the last number; loose: the highest
	seen    [4]uint64
}

const seqWindow = 256

func (s *seqCheck) next(n uint64, strict bool) error {
	if !s.started {
		s.started, s.last = true, n
		s.mark(n)
		return nil
	}
	if strict {
		if n != s.last+1 {
			return fmt.Errorf("sequence number %d after %d (want %d)", n, s.last, s.last+1)
		}
		s.last = n
		return nil
	}
	switch {
	case n > s.last:
		for i := s.last + 1; i < n && i <= s.last+seqWindow; i++ {
			s.unmark(i)
		}
		if n-s.last >= seqWindow {
			s.seen = [4]uint64{}
		}
		s.last = n
	case s.last-n >= seqWindow:
		return fmt.Errorf("sequence number %d is too old (highest %d)", n, s.last)
	case s.marked(n):
		return fmt.Errorf("sequence number %d repeated", n)
	}
	s.mark(n)
	return nil
}

func (s *seqCheck) mark(n uint64)        { s.seen[(n%seqWindow)/64] |= 1 << (n % 64) }
func (s *seqCheck) unmark(n uint64)      { s.seen[(n%seqWindow)/64] &^= 1 << (n % 64) }
func (s *seqCheck) marked(n uint64) bool { return s.seen[(n%seqWindow)/64]&(1<<(n%64)) != 0 }

// encodePayload is how senders write media payloads.
func encodePayload(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
