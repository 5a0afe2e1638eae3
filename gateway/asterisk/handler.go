// Package asterisk is the gateway's adapter for Asterisk's WebSocket
// channel driver (chan_websocket): Asterisk connects out once per call
// leg (subprotocol "media"), sends MEDIA_START (plain text or JSON), then
// the leg's audio as binary frames, and hangs up by closing the
// WebSocket. The call id and the leg's role (caller or agent) come as URL
// parameters (the dial string's v() option); two legs with the same call
// id and different roles join one stereo call, aligned by when each leg
// started, and a call whose second leg never comes is analysed as a mono
// call. Whichever leg ends last ends the call, once.
//
// Asterisk reads text frames as commands, so nothing is sent back.
// docs/protocols.md documents the mapping; the package also holds a
// Client that plays a recording as two legs, as Asterisk would.
package asterisk

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"log/slog"

	"github.com/gorilla/websocket"

	"github.com/calmline/calmline/gateway/edge"
	"github.com/calmline/calmline/gateway/session"
	"github.com/calmline/calmline/gateway/stereo"
	"github.com/calmline/calmline/gateway/wsconn"
	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/field"
	"github.com/calmline/calmline/lib/tenant"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// Protocol is the protocol's name in reports and metrics.
const Protocol = "asterisk"

// Subprotocol is the WebSocket subprotocol chan_websocket asks for.
const Subprotocol = "media"

// Roles a leg may have (role= in the URL).
const (
	RoleCaller = "caller"
	RoleAgent  = "agent"
)

// Options configures the adapter.
type Options struct {
	Conn wsconn.Options
	// JoinWait is how long the first leg of a call waits for the second
	// before the call starts as a one-leg (mono) call (default 2 s).
	// Audio is held meanwhile.
	JoinWait time.Duration
	// IdleTimeout closes a leg that sends no MEDIA_START, or no media,
	// for this long (default 30 s: edge.Timeout's).
	IdleTimeout time.Duration
	// JoinLag is how far one leg may lag the other before its missing
	// audio counts as silence (default 200 ms).
	JoinLag time.Duration
}

// protocol is what the adapter's legs share: the calls being joined.
type protocol struct {
	o Options
	e *edge.Edge

	mu    sync.Mutex
	calls map[string]*joined // tenant id + "\x00" + call id
}

// NewProtocol returns the protocol for an edge's handler.
func NewProtocol(o Options, e *edge.Edge) *edge.Protocol {
	o.JoinWait = cmp.Or(o.JoinWait, 2*time.Second)
	o.JoinLag = cmp.Or(o.JoinLag, 200*time.Millisecond)
	p := &protocol{o: o, e: e, calls: map[string]*joined{}}
	return &edge.Protocol{
		Name:         Protocol,
		Subprotocols: []string{Subprotocol},
		Conn:         o.Conn,
		Start:        edge.Timeout{After: o.IdleTimeout, Missing: "MEDIA_START"},
		Idle:         edge.Timeout{After: o.IdleTimeout, Missing: "media"},
		Accept:       p.accept,
	}
}

// NewHandler returns the protocol's handler on an edge of its own; the
// gateway serves every protocol on one edge (NewProtocol).
func NewHandler(o Options, m *session.Manager, tenants *tenant.Registry, log *slog.Logger) *edge.Single {
	return edge.NewSingle(edge.Options{Sessions: m, Tenants: tenants, Logger: log}, func(e *edge.Edge) *edge.Protocol { return NewProtocol(o, e) })
}

// accept authenticates a leg — by the password of Basic authentication
// (websocket_client.conf's username and password), a Bearer or X-API-Key
// header, or, for a sender that can set no header, the api_key query
// parameter (URLs end up in logs: prefer the password) — and checks its
// parameters; a call's second leg takes no new slot of the tenant's quota.
func (p *protocol) accept(r *http.Request) (*edge.Accepted, error) {
	t, _, ref := p.e.Authenticate(edge.KeyOf(r))
	if ref != nil {
		if ref.Status == http.StatusUnauthorized {
			ref.Challenge = `Basic realm="calmline"`
			ref.Msg += " (use the password of websocket_client.conf, or a Bearer token)"
		}
		return nil, ref
	}
	q := r.URL.Query()
	callID, role := q.Get("call_id"), strings.ToLower(q.Get("role"))
	// Dialplans in the field also spell them callid and customer.
	if callID == "" {
		callID = q.Get("callid")
	}
	if role == "customer" {
		role = RoleCaller
	}
	legs := 2
	if s := q.Get("legs"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 2 {
			legs = 0
		} else {
			legs = n
		}
	}
	// Call labels (queue, skill, agent group ...) come as
	// label.KEY=VALUE query parameters, checked before the upgrade.
	labels := edge.Labels(q)
	var problem error
	if err := field.ID("call_id", callID); err != nil {
		problem = err
	} else if err := field.OptionalID("agent_id", q.Get("agent_id")); err != nil {
		problem = err
	} else if err := field.Labels("labels", labels); err != nil {
		problem = err
	}
	switch {
	case problem != nil:
	case role != RoleCaller && role != RoleAgent:
		problem = fmt.Errorf("role %q: want caller or agent", q.Get("role"))
	case legs == 0:
		problem = errors.New("legs: want 1 or 2")
	}
	if problem != nil {
		return nil, &edge.Refusal{Status: http.StatusBadRequest, Code: "bad_request", Count: "asterisk_bad_request", Tenant: t.ID, Msg: problem.Error()}
	}
	key := t.ID + "\x00" + callID
	p.mu.Lock()
	_, second := p.calls[key]
	p.mu.Unlock()
	l := &leg{p: p, tenant: t, key: key, callID: callID, agentID: q.Get("agent_id"), role: role, legs: legs, labels: labels}
	return &edge.Accepted{Tenant: t, Codec: l, NoAdmit: second, Log: []any{"call_id", callID, "role", role}}, nil
}

// leg is the codec of one WebSocket from Asterisk, which reads text as
// commands: a close frame says it all.
type leg struct {
	edge.CloseFrame
	p      *protocol
	tenant *tenant.Tenant
	key    string
	// labels are the leg's label.* query parameters.
	labels  map[string]string
	callID  string
	agentID string
	role    string
	legs    int

	ec    *edge.Conn // set at MEDIA_START
	j     *joined
	width int

	// Guarded by j.mu.
	offset  uint64 // the leg's first sample on the call's timeline
	written uint64 // samples written
	pending []byte // audio held before the call starts
	ended   bool
	clean   bool // ended with a close frame (a hangup)
	idled   bool // closed for the idle timeout
	channel string
}

// Finish implements edge.Finisher: the leg's end is its call's, once the
// other leg's (if any) has ended too.
func (l *leg) Finish(ec *edge.Conn, _ session.EndReason) {
	if l.j == nil {
		return
	}
	l.j.mu.Lock()
	l.clean = ec.WS().PeerClosed()
	l.idled = ec.Idled()
	l.j.mu.Unlock()
	l.j.legEnded(l)
}

// Frame implements edge.Codec.
func (l *leg) Frame(ec *edge.Conn, typ int, data []byte) error {
	if typ == websocket.TextMessage {
		return l.control(ec, data)
	}
	if l.j == nil {
		return edge.Errorf(edge.CloseOutOfOrder, "media before MEDIA_START")
	}
	if len(data)%l.width != 0 {
		return edge.Errorf(edge.CloseBadMessage, "frame of %d bytes is not a whole number of %d-byte samples", len(data), l.width)
	}
	ec.Touch()
	pause, err := l.j.audio(l, data)
	if err != nil {
		if errors.Is(err, session.ErrTooFast) {
			// The call is refused, not the leg: every leg closes.
			l.j.failAll(edge.CloseTooFast, err.Error())
			return nil
		}
		return edge.Errorf(edge.CloseBadMessage, "%s", err)
	}
	if pause > 0 {
		ec.WS().PauseRead(pause)
	}
	return nil
}

func (l *leg) control(ec *edge.Conn, data []byte) error {
	e, err := ParseEvent(data)
	if err != nil {
		return edge.Errorf(edge.CloseBadMessage, "%s", err)
	}
	switch e.Name {
	case "MEDIA_START":
		if l.j != nil {
			return edge.Errorf(edge.CloseOutOfOrder, "MEDIA_START sent twice")
		}
		codec, rate, err := e.MediaFormat()
		if err != nil {
			return edge.Errorf(edge.CloseUnsupportedMedia, "MEDIA_START: %s", err)
		}
		l.width = codec.BytesPerSample()
		l.channel = e.Fields["channel_id"]
		l.ec = ec
		ec.SetStarted()
		ec.Touch()
		return l.p.attach(l, codec, rate)
	case "ERROR":
		ec.Log().Warn("Asterisk reported an error", "error", e.Fields["error_text"])
	default:
		// Flow control and status events concern media sent to Asterisk,
		// and DTMF digits are not kept (they may be card numbers).
	}
	return nil
}

// joined is a call made of one or two legs.
type joined struct {
	p      *protocol
	key    string
	callID string
	expect int
	codec  audio.Codec
	rate   int
	t0     time.Time

	mu      sync.Mutex
	legs    map[string]*leg // by role
	arrived chan struct{}   // closed when the second leg joins
	call    *session.Call
	joiner  *stereo.Joiner
	lanes   map[string]int // role -> channel
	state   int
	failed  bool // failAll ran
	// pauseUntil is when the legs' read pause ends: a leg's write that
	// completes one of the call's chunks sets it (session.Call.ReadPause),
	// and each leg leaves its connection unread until then after its
	// next frame, so that both legs' frames are read a few at a time.
	// (Their audio goes to the call through the joiner, not Conn.Audio,
	// where the edge pauses other protocols.)
	pauseUntil time.Time
}

const (
	waiting = iota // the first leg waits for the second
	live
	done // started and ended, or failed to start
)

// attach adds a leg that sent MEDIA_START to its call, creating the call
// for its first leg.
func (p *protocol) attach(l *leg, codec audio.Codec, rate int) error {
	p.mu.Lock()
	j, ok := p.calls[l.key]
	if !ok {
		j = &joined{p: p, key: l.key, callID: l.callID, expect: l.legs, codec: codec, rate: rate, t0: time.Now(),
			legs: map[string]*leg{}, arrived: make(chan struct{})}
		p.calls[l.key] = j
	}
	p.mu.Unlock()
	j.mu.Lock()
	defer j.mu.Unlock()
	switch {
	case j.state == done:
		return edge.Errorf(edge.CloseCallLive, "call %q has ended", l.callID)
	case j.legs[l.role] != nil:
		return edge.Errorf(edge.CloseCallLive, "call %q already has a %s leg", l.callID, l.role)
	case j.state == live:
		return edge.Errorf(edge.CloseCallLive, "call %q started without its %s leg (it came more than %s after the first)", l.callID, l.role, p.o.JoinWait)
	case codec != j.codec || rate != j.rate:
		return edge.Errorf(edge.CloseUnsupportedMedia, "the %s leg is %v at %d Hz; the call's first leg is %v at %d Hz", l.role, codec, rate, j.codec, j.rate)
	}
	l.j = j
	l.offset = uint64(time.Since(j.t0) * time.Duration(rate) / time.Second)
	if len(j.legs) == 0 {
		l.offset = 0
	}
	j.legs[l.role] = l
	if len(j.legs) == 2 {
		close(j.arrived)
	}
	if len(j.legs) >= j.expect || len(j.legs) == 2 {
		j.startLocked(l)
	}
	return nil
}

// startLocked starts the call with the legs present, on the connection of
// the leg by (whose reader runs this); the other legs attach to it.
func (j *joined) startLocked(by *leg) {
	var present []string
	labels := map[string]string{}
	agentID := ""
	for _, role := range []string{RoleCaller, RoleAgent} {
		l := j.legs[role]
		if l == nil || l.ended && len(l.pending) == 0 && len(j.legs) > 1 {
			continue
		}
		present = append(present, role)
		for k, v := range l.labels {
			if _, set := labels[k]; !set { // the caller leg's label wins
				labels[k] = v
			}
		}
		if l.channel != "" {
			labels["asterisk_"+role+"_channel_id"] = l.channel
		}
		if l.agentID != "" {
			agentID = l.agentID
		}
	}
	st, lanes := edge.StartOf(j.callID, agentID, j.codec, j.rate, present, RoleAgent, labels)
	j.lanes = lanes
	call, err := by.ec.Start(st)
	if err != nil {
		j.state = done
		e := edge.ErrorOf(err)
		for _, l := range j.legs {
			l.ec.Log().Info("call refused after the upgrade", "code", e.Code, "reason", e.Reason)
			l.ec.Close(e.Code, e.Reason)
		}
		return
	}
	w := j.codec.BytesPerSample()
	o := j.p.o
	j.joiner, _ = stereo.New(stereo.Options{Channels: len(lanes), Silence: stereo.Silence(j.codec),
		MaxLag:    uint64(o.JoinLag * time.Duration(j.rate) / time.Second),
		MaxHole:   uint64(o.JoinWait*time.Duration(j.rate)/time.Second) + uint64(j.rate),
		GapDetail: "asterisk: no media on any leg"})
	j.call = call
	j.state = live
	for role, l := range j.legs {
		if l != by {
			// Its traffic and the gateway's end of the call (the drain)
			// are this leg's too.
			l.ec.Attach(call)
		}
		lane, ok := j.lanes[role]
		if ok && len(l.pending) > 0 {
			j.joiner.Write(call, lane, l.offset, l.pending)
			l.written = uint64(len(l.pending) / w)
		}
		l.pending = nil
		if l.ended && ok {
			j.joiner.End(call, lane)
		}
	}
}

// audio handles a leg's frame and returns how long the leg may leave its
// connection unread.
func (j *joined) audio(l *leg, data []byte) (time.Duration, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	switch j.state {
	case waiting:
		l.pending = append(l.pending, data...)
		if time.Since(j.t0) >= j.p.o.JoinWait {
			// The second leg did not come: a call of the legs present.
			j.startLocked(l)
		}
		return 0, nil
	case live:
		lane, ok := j.lanes[l.role]
		if !ok {
			return 0, nil
		}
		pos := l.offset + l.written
		l.written += uint64(len(data) / l.width)
		if err := j.joiner.Write(j.call, lane, pos, data); err != nil {
			return 0, err
		}
		now := time.Now()
		if d := j.call.ReadPause(); d > 0 {
			j.pauseUntil = now.Add(d)
		}
		return j.pauseUntil.Sub(now), nil
	}
	return 0, nil
}

// failAll closes every leg of the call for a client error (counted once,
// however many frames the legs still send).
func (j *joined) failAll(code int, reason string) {
	j.mu.Lock()
	if j.failed {
		j.mu.Unlock()
		return
	}
	j.failed = true
	legs := make([]*leg, 0, len(j.legs))
	for _, l := range j.legs {
		legs = append(legs, l)
	}
	j.mu.Unlock()
	for i, l := range legs {
		if i == 0 {
			l.ec.Refused(fmt.Sprintf("close_%d", code))
		}
		l.ec.Log().Info("closing the call's legs on bad input", "code", code, "reason", reason)
		l.ec.Close(code, reason)
	}
}

// legEnded records that a leg's WebSocket ended; the last leg of a call
// ends it.
func (j *joined) legEnded(l *leg) {
	j.mu.Lock()
	if j.legs[l.role] != l {
		j.mu.Unlock()
		return // refused before it joined
	}
	l.ended = true
	if j.state == live {
		if lane, ok := j.lanes[l.role]; ok {
			j.joiner.End(j.call, lane)
		}
	}
	if j.state == waiting && len(j.legs) < j.expect {
		// The only leg ended while the other may still be on its way
		// (it connected late, or its messages wait behind this leg's):
		// give it the rest of the join wait before the call is settled
		// as one leg — unless the gateway drains, when no leg comes.
		if wait := j.p.o.JoinWait - time.Since(j.t0); wait > 0 {
			arrived := j.arrived
			j.mu.Unlock()
			t := time.NewTimer(wait)
			select {
			case <-arrived:
			case <-t.C:
			case <-j.p.e.Closing():
			}
			t.Stop()
			j.mu.Lock()
		}
	}
	for _, other := range j.legs {
		if !other.ended {
			j.mu.Unlock()
			return
		}
	}
	if j.state == waiting {
		var audio bool
		for _, other := range j.legs {
			audio = audio || len(other.pending) > 0
		}
		if audio {
			j.startLocked(l)
		}
	}
	call := j.call
	var reason session.EndReason = fullcallv1.EndReason_END_REASON_HANGUP
	for _, other := range j.legs {
		if !other.clean {
			reason = fullcallv1.EndReason_END_REASON_DISCONNECTED
		}
	}
	for _, other := range j.legs {
		if other.idled {
			reason = fullcallv1.EndReason_END_REASON_IDLE_TIMEOUT
		}
	}
	if call != nil {
		if r, err := call.AbortReason(); err != nil {
			reason = r
		}
		j.joiner.Flush(call)
	}
	j.state = done
	j.call = nil
	j.mu.Unlock()
	if call != nil {
		if _, err := call.End(context.Background(), reason); err != nil && !errors.Is(err, session.ErrEnded) {
			l.ec.Log().Warn("call ended without a report", "err", err)
		}
	}
	j.p.mu.Lock()
	if j.p.calls[j.key] == j {
		delete(j.p.calls, j.key)
	}
	j.p.mu.Unlock()
}
