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
// The connection's life (authentication before the upgrade, admission,
// idle, close codes, drain) is gateway/edge's; this package is the
// protocol's codec: its envelopes, sequence numbers, tracks and timing.
// docs/protocols.md documents the mapping. The package also holds a
// Client that streams a recording as these senders do.
package twilio

import (
	"cmp"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/calmline/calmline/gateway/edge"
	"github.com/calmline/calmline/gateway/session"
	"github.com/calmline/calmline/gateway/stereo"
	"github.com/calmline/calmline/gateway/wsconn"
	"github.com/calmline/calmline/lib/tenant"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// Protocol is the protocol's name in reports and metrics.
const Protocol = "twilio"

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
	// for this long (default 30 s: edge.Timeout's).
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

func (o *Options) defaults() {
	o.MaxUnauthenticated = cmp.Or(o.MaxUnauthenticated, 1000)
	o.JoinLag = cmp.Or(o.JoinLag, 400*time.Millisecond)
	o.MaxHole = cmp.Or(o.MaxHole, time.Hour)
	o.TrackWait = cmp.Or(o.TrackWait, time.Second)
	o.JitterTolerance = cmp.Or(o.JitterTolerance, 60*time.Millisecond)
}

// protocol is what the adapter's connections share.
type protocol struct {
	o Options
	e *edge.Edge
	// pending counts the connections upgraded before their start
	// authenticated them.
	pending atomic.Int64
}

// NewProtocol returns the protocol for an edge's handler.
func NewProtocol(o Options, e *edge.Edge) *edge.Protocol {
	o.defaults()
	p := &protocol{o: o, e: e}
	return &edge.Protocol{
		Name:  Protocol,
		Conn:  o.Conn,
		Start: edge.Timeout{After: o.IdleTimeout, Missing: "start"},
		Idle:  edge.Timeout{After: o.IdleTimeout, Missing: "media"},
		// Both tracks travel on the one connection, so a read pause
		// between chunks delays them alike (well inside JoinLag); marks
		// and DTMF are not acted on, and a stop waits less than a chunk.
		ReadPause: true,
		Accept:    p.accept,
	}
}

// NewHandler returns the protocol's handler on an edge of its own; the
// gateway serves every protocol on one edge (NewProtocol).
func NewHandler(o Options, m *session.Manager, tenants *tenant.Registry, log *slog.Logger) *edge.Single {
	return edge.NewSingle(edge.Options{Sessions: m, Tenants: tenants, Logger: log}, func(e *edge.Edge) *edge.Protocol { return NewProtocol(o, e) })
}

// accept reads a stream's envelope and tracks from the URL. A key sent
// before the upgrade — in a header (Bearer, X-API-Key, or the password of
// Basic authentication: Exotel's wss://KEY:TOKEN@host puts the token
// there), or as the api_key query parameter for senders that can set no
// header, taken out of the URL so that nothing logs it — is checked before
// the upgrade; without one the stream authenticates at start.
func (p *protocol) accept(r *http.Request) (*edge.Accepted, error) {
	env := Twilio
	if name := r.URL.Query().Get("envelope"); name != "" {
		e, ok := Envelopes[strings.ToLower(name)]
		if !ok {
			return nil, fmt.Errorf("unknown envelope %q (want twilio, telnyx, exotel or plivo)", name)
		}
		env = e
	}
	var tracks []string
	switch t := r.URL.Query().Get("tracks"); t {
	case "":
	case "inbound", "inbound_track":
		tracks = []string{"inbound"}
	case "outbound", "outbound_track":
		tracks = []string{"outbound"}
	case "both", "both_tracks":
		tracks = []string{"inbound", "outbound"}
	default:
		return nil, fmt.Errorf("unknown tracks %q (want inbound, outbound or both)", t)
	}
	c := &conn{p: p, env: env, tracks: tracks}
	acc := &edge.Accepted{Codec: c, Log: []any{"envelope", env.Name}}
	if key := edge.KeyOf(r); key != "" {
		t, _, ref := p.e.Authenticate(key)
		if ref != nil {
			if ref.Status == http.StatusUnauthorized {
				ref.Msg = "unknown API key"
			}
			return nil, ref
		}
		acc.Tenant = t
		return acc, nil
	}
	if p.pending.Add(1) > p.o.MaxUnauthenticated {
		p.pending.Add(-1)
		return nil, &edge.Refusal{Status: http.StatusServiceUnavailable, Code: "busy", Count: "twilio_too_many_unauthenticated",
			Msg: "too many connections waiting for their start; retry"}
	}
	c.pendingAuth = true
	return acc, nil
}

// conn is the codec of one stream; the protocol has only the close frame
// to end it with.
type conn struct {
	edge.CloseFrame
	p           *protocol
	env         Envelope
	tracks      []string // from the URL, overriding the start's
	pendingAuth bool     // counted in p.pending until the start authenticates

	joiner  *stereo.Joiner
	lanes   map[string]int // track -> channel
	rate    int
	width   int
	seq     seqCheck
	stopped bool
	payload []byte // media payloads are decoded here (the joiner copies them)
	// declared are the tracks the start names (inbound before outbound);
	// with two, the call waits (holding) for their media, held in held,
	// to start with only those that carry audio (startMsg is the start).
	declared    []string
	startMsg    *Start
	holding     bool
	held        []*Media
	heldSamples map[string]uint64
	// heldFrom is when the held media's audio began (the first's
	// arrival less its duration).
	heldFrom  time.Time
	lateTrack bool // media came on a declared track left out of the call
}

// authenticated stops counting the connection as waiting for its start.
func (c *conn) authenticated() {
	if c.pendingAuth {
		c.pendingAuth = false
		c.p.pending.Add(-1)
	}
}

// Discard implements edge.Discarder: a connection accepted but not served.
func (c *conn) Discard() { c.authenticated() }

// Finish implements edge.Finisher: a stream that ends without stop (the
// socket closed, bad input, the drain) still ends its call, with what
// arrived; a stream that ended before every declared track spoke still
// makes a call of its audio.
func (c *conn) Finish(ec *edge.Conn, reason session.EndReason) {
	c.authenticated()
	if c.holding && len(c.held) > 0 && !ec.Failed() {
		if err := c.openHeld(ec); err != nil {
			ec.Log().Info("the stream's held media made no call", "err", err)
		}
	}
	ec.End(reason)
}

// Flush implements edge.Flusher: the tracks' last audio goes out before
// the call ends.
func (c *conn) Flush(ec *edge.Conn, call *session.Call) { c.joiner.Flush(call) }

// Frame implements edge.Codec.
func (c *conn) Frame(ec *edge.Conn, typ int, data []byte) error {
	if typ == websocket.BinaryMessage {
		return edge.Errorf(edge.CloseBadMessage, "binary frames are not part of the protocol (media travels as base64 in JSON)")
	}
	m, err := c.env.parse(data, &c.payload)
	if err != nil {
		var bm *BadMessage
		if errors.As(err, &bm) {
			return &edge.Error{Code: bm.Code, Reason: bm.Msg}
		}
		return nil
	}
	if m.HasSeq {
		if err := c.seq.next(m.Seq, c.env.StrictSequence); err != nil {
			return edge.Errorf(edge.CloseOutOfOrder, "%s", err)
		}
	}
	switch m.Event {
	case "connected":
	case "start":
		return c.start(ec, m.Start)
	case "media":
		return c.media(ec, m.Media)
	case "stop":
		if c.holding {
			if err := c.openHeld(ec); err != nil {
				return err
			}
		}
		if ec.Call() == nil {
			if ec.WS().Closing() {
				return nil
			}
			return edge.Errorf(edge.CloseOutOfOrder, "stop before start")
		}
		ec.End(fullcallv1.EndReason_END_REASON_HANGUP)
		c.stopped = true
		ec.Close(edge.CloseNormal, "stream stopped")
	case "mark", "dtmf":
		// Marks acknowledge audio the server played (calmline plays
		// none); DTMF digits may be card numbers: neither is kept.
		if ec.Call() == nil && !c.holding {
			return edge.Errorf(edge.CloseOutOfOrder, "%s before start", m.Event)
		}
	case "error":
		ec.Log().Warn("the sender reported an error")
	default:
		return edge.Errorf(edge.CloseBadMessage, "unknown event %q", m.Event)
	}
	return nil
}

func (c *conn) start(ec *edge.Conn, s *Start) error {
	if ec.Call() != nil || c.stopped || c.holding {
		return edge.Errorf(edge.CloseOutOfOrder, "start sent twice")
	}
	if ec.Tenant() == nil {
		if err := ec.Authenticate(s.Parameters[KeyParameter]); err != nil {
			var e *edge.Error
			if errors.As(err, &e) && e.Code == edge.CloseUnauthenticated {
				e.Reason = "unauthenticated: missing or unknown API key (send it in a header, ?" + KeyParameter + "= or the " + KeyParameter + " custom parameter)"
			}
			return err
		}
		c.authenticated()
	}
	if s.CallID == "" {
		s.CallID = s.StreamID
	}
	if s.CallID == "" {
		return edge.Errorf(edge.CloseBadMessage, "start: no call id and no stream id")
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
			return edge.Errorf(edge.CloseUnsupportedMedia, "start: unknown track %q (want inbound and/or outbound)", t)
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
		ec.Touch()
		return nil
	}
	return c.open(ec, c.declared)
}

// open starts the call with the given tracks as its channels.
func (c *conn) open(ec *edge.Conn, tracks []string) error {
	s := c.startMsg
	c.holding = false
	// The call's labels: the start's custom parameters named label.KEY
	// (queue, skill, agent group ...), then the stream's own, which a
	// parameter cannot override. Other parameters (the API key, the agent
	// id, whatever else the integration passes) are not labels.
	labels := edge.Labels(s.Parameters)
	labels["stream_id"], labels["envelope"] = s.StreamID, c.env.Name
	st, lanes := edge.StartOf(s.CallID, s.Parameters[AgentParameter], s.Codec, s.SampleRate, tracks, "outbound", labels)
	o := c.p.o
	j, err := stereo.New(stereo.Options{
		Channels:  len(lanes),
		Silence:   stereo.Silence(s.Codec),
		MaxLag:    uint64(o.JoinLag * time.Duration(c.rate) / time.Second),
		MaxHole:   uint64(o.MaxHole * time.Duration(c.rate) / time.Second),
		Delay:     uint64(c.env.Reorder * time.Duration(c.rate) / time.Second),
		GapDetail: c.env.Name + ": no media on any track",
	})
	if err != nil {
		return edge.Errorf(edge.CloseUnsupportedMedia, "start: %s", err)
	}
	c.joiner, c.lanes = j, lanes
	if !c.heldFrom.IsZero() {
		st.AudioAge = time.Since(c.heldFrom)
	}
	_, err = ec.Start(st)
	return err
}

func (c *conn) media(ec *edge.Conn, m *Media) error {
	if c.holding {
		return c.hold(ec, m)
	}
	call := ec.Call()
	if call == nil {
		if c.stopped {
			return nil
		}
		return edge.Errorf(edge.CloseOutOfOrder, "media before start")
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
				ec.Log().Info("media on a declared track that sent none before the call started; ignored", "track", track)
			}
			ec.Touch()
			return nil
		}
		return edge.Errorf(edge.CloseUnsupportedMedia, "media on track %q, which the start did not declare", m.Track)
	}
	if len(m.Payload)%c.width != 0 {
		return edge.Errorf(edge.CloseBadMessage, "media payload of %d bytes is not a whole number of %d-byte samples", len(m.Payload), c.width)
	}
	// The joiner writes to the connection, which passes the audio on to
	// the call (ec.Audio) and says what its errors close with.
	if err := c.joiner.Write(ec, lane, c.place(lane, m), m.Payload); err != nil {
		return c.writeError(err, m)
	}
	ec.Touch()
	return nil
}

// writeError says what a failed write of media closes with. (Apart from
// media, so that the hot path allocates nothing for errors.As.)
func (c *conn) writeError(err error, m *Media) error {
	var e *edge.Error
	switch {
	case errors.Is(err, stereo.ErrHole):
		return edge.Errorf(edge.CloseBadMessage, "media timestamp %d ms jumps more than %s ahead", m.Timestamp, c.p.o.MaxHole)
	case errors.As(err, &e) && e.Code != edge.CloseTryAgainLater:
		return e
	}
	return edge.Errorf(edge.CloseBadMessage, "%s", err)
}

// hold keeps a stream's media until it is known which declared tracks
// carry audio, then starts the call with those and plays the media held.
func (c *conn) hold(ec *edge.Conn, m *Media) error {
	track := strings.TrimSuffix(m.Track, "_track")
	if !slices.Contains(c.declared, track) {
		return edge.Errorf(edge.CloseUnsupportedMedia, "media on track %q, which the start did not declare", m.Track)
	}
	if len(m.Payload)%c.width != 0 {
		return edge.Errorf(edge.CloseBadMessage, "media payload of %d bytes is not a whole number of %d-byte samples", len(m.Payload), c.width)
	}
	ec.Touch()
	if c.held == nil {
		c.heldFrom = time.Now().Add(-time.Duration(len(m.Payload)/c.width) * time.Second / time.Duration(c.rate))
	}
	held := *m
	held.Payload = append([]byte(nil), m.Payload...)
	c.held = append(c.held, &held)
	if c.heldSamples == nil {
		c.heldSamples = map[string]uint64{}
	}
	c.heldSamples[track] += uint64(len(m.Payload) / c.width)
	wait := uint64(c.p.o.TrackWait * time.Duration(c.rate) / time.Second)
	if len(c.heldSamples) == len(c.declared) || c.heldSamples[track] >= wait {
		return c.openHeld(ec)
	}
	return nil
}

// openHeld starts a held call with the declared tracks that sent media
// (all of them when none did) and plays what was held.
func (c *conn) openHeld(ec *edge.Conn) error {
	var tracks []string
	for _, t := range c.declared {
		if c.heldSamples[t] > 0 {
			tracks = append(tracks, t)
		}
	}
	if len(tracks) == 0 {
		tracks = c.declared
	}
	held := c.held
	c.held, c.heldSamples = nil, nil
	if err := c.open(ec, tracks); err != nil {
		return err
	}
	for _, m := range held {
		if ec.Call() == nil || ec.WS().Closing() {
			return nil
		}
		if err := c.media(ec, m); err != nil {
			return err
		}
	}
	return nil
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
	tol := uint64(c.p.o.JitterTolerance * time.Duration(c.rate) / time.Second)
	switch {
	case ts > known+tol:
		return ts // audio was lost: a hole of the real amount
	case c.env.Reorder > 0 && ts+tol < known:
		return ts // a reordered packet, to its place in the held-back window
	}
	return known
}

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
