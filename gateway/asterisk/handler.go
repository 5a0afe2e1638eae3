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
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/calmline/calmline/gateway/admission"
	"github.com/calmline/calmline/gateway/session"
	"github.com/calmline/calmline/gateway/stereo"
	"github.com/calmline/calmline/gateway/wsconn"
	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/field"
	"github.com/calmline/calmline/lib/tenant"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// Subprotocol is the WebSocket subprotocol chan_websocket asks for.
const Subprotocol = "media"

// Close codes, as in the native protocol, besides 1000, 1001 (drain),
// 1009, 1011 and 1013.
const (
	CloseBadMessage       = 4400 // malformed or unknown control message, bad frame size
	CloseIdle             = 4408 // no MEDIA_START, or no media, for the idle timeout
	CloseOutOfOrder       = 4409 // media before MEDIA_START, MEDIA_START twice
	CloseCallLive         = 4410 // the call already has this role, or started without this leg
	CloseUnsupportedMedia = 4415 // unsupported format, or legs in different formats
	CloseTooFast          = 4420 // media faster than real time, past the gateway's pacing policy
	CloseOverQuota        = 4429 // the tenant is at its concurrent-call limit
)

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
	// for this long (default 30 s).
	IdleTimeout time.Duration
	// JoinLag is how far one leg may lag the other before its missing
	// audio counts as silence (default 200 ms).
	JoinLag time.Duration
}

// Handler serves chan_websocket legs.
type Handler struct {
	o        Options
	m        *session.Manager
	tenants  *tenant.Registry
	log      *slog.Logger
	upgrader websocket.Upgrader

	mu      sync.Mutex
	calls   map[string]*joined // tenant id + "\x00" + call id
	closed  bool
	quit    chan struct{}  // closed by Close: lone legs stop waiting
	waiting sync.WaitGroup // lone legs waiting for their call's other leg
}

// Close ends the waits of legs whose call's other leg has not come, and
// returns once they have settled their calls. The gateway calls it when
// it shuts down.
func (h *Handler) Close() {
	h.mu.Lock()
	if !h.closed {
		h.closed = true
		close(h.quit)
	}
	h.mu.Unlock()
	h.waiting.Wait()
}

// NewHandler returns the adapter.
func NewHandler(o Options, m *session.Manager, tenants *tenant.Registry, log *slog.Logger) *Handler {
	if o.JoinWait == 0 {
		o.JoinWait = 2 * time.Second
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = 30 * time.Second
	}
	if o.JoinLag == 0 {
		o.JoinLag = 200 * time.Millisecond
	}
	return &Handler{o: o, m: m, tenants: tenants, log: log.With("protocol", "asterisk"), calls: map[string]*joined{}, quit: make(chan struct{}),
		upgrader: websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 1024, Subprotocols: []string{Subprotocol},
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

// keyFromRequest reads the API key: the password of Basic authentication
// (websocket_client.conf's username and password), or a Bearer or
// X-API-Key header.
//
// A sender that can set no header may send it as the api_key query
// parameter (URLs end up in logs: prefer the password). The parameter is
// removed from the request's URL, so that nothing after this logs it.
func keyFromRequest(r *http.Request) string {
	k := ""
	if _, pw, ok := r.BasicAuth(); ok {
		k = pw
	} else {
		k = tenant.KeyFromRequest(r)
	}
	if qk := wsconn.TakeQueryKey(r); k == "" {
		k = qk
	}
	return k
}

// KeyParameter is the query parameter that may carry the API key.
const KeyParameter = wsconn.KeyParameter

// ServeHTTP authenticates a leg, checks its parameters and the tenant's
// quota (for a call's first leg), upgrades it and runs it.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t, apiKey, ok := h.tenants.AuthenticateKey(keyFromRequest(r))
	if !ok {
		h.m.Refused(r.Context(), "", "unauthenticated")
		w.Header().Set("WWW-Authenticate", `Basic realm="calmline"`)
		refuse(w, http.StatusUnauthorized, "unauthenticated", "missing or unknown API key (use the password of websocket_client.conf, or a Bearer token)")
		return
	}
	if !tenant.Allows(apiKey.Role, tenant.ActionStreamCalls) {
		// As on the native endpoint: care-team and agent keys read the
		// live feed only.
		h.m.Refused(r.Context(), t.ID, "forbidden")
		refuse(w, http.StatusForbidden, "forbidden", fmt.Sprintf("a key with role %q reads the live feed only; stream calls with a general key", apiKey.Role))
		return
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
	labels := map[string]string{}
	for k, vs := range q {
		if name, ok := strings.CutPrefix(k, session.LabelParamPrefix); ok && len(vs) > 0 {
			labels[name] = vs[0]
		}
	}
	var problem string
	if err := field.ID("call_id", callID); err != nil {
		problem = err.Error()
	} else if err := field.OptionalID("agent_id", q.Get("agent_id")); err != nil {
		problem = err.Error()
	} else if err := field.Labels("labels", labels); err != nil {
		problem = err.Error()
	}
	switch {
	case problem != "":
	case role != RoleCaller && role != RoleAgent:
		problem = fmt.Sprintf("role %q: want caller or agent", q.Get("role"))
	case legs == 0:
		problem = "legs: want 1 or 2"
	}
	if problem != "" {
		h.m.Refused(r.Context(), t.ID, "asterisk_bad_request")
		refuse(w, http.StatusBadRequest, "bad_request", problem)
		return
	}
	key := t.ID + "\x00" + callID
	h.mu.Lock()
	_, second := h.calls[key]
	h.mu.Unlock()
	if !second {
		// A call's second leg takes no new slot.
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
	}
	ws, err := h.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	l := &leg{h: h, tenant: t, ticket: admission.FromContext(r.Context()), key: key, callID: callID, agentID: q.Get("agent_id"), role: role, legs: legs, labels: labels,
		log: h.log.With("tenant", t.ID, "call_id", callID, "role", role, "remote", r.RemoteAddr)}
	l.lastMedia.Store(time.Now().UnixNano())
	l.ws = wsconn.New(ws, h.o.Conn)
	l.run()
}

// leg is one WebSocket from Asterisk, driven by its reader goroutine.
type leg struct {
	h      *Handler
	tenant *tenant.Tenant
	key    string
	// labels are the leg's label.* query parameters.
	labels  map[string]string
	callID  string
	agentID string
	role    string
	legs    int
	ticket  *admission.Ticket // released once the call is live
	ws      *wsconn.Conn
	log     *slog.Logger

	started   atomic.Bool // MEDIA_START received
	lastMedia atomic.Int64
	j         *joined
	width     int

	// Guarded by j.mu.
	offset  uint64 // the leg's first sample on the call's timeline
	written uint64 // samples written
	pending []byte // audio held before the call starts
	ended   bool
	clean   bool // ended with a close frame (a hangup)
	idled   bool // closed for the idle timeout
	channel string
}

// closeIdle closes a leg that sent no MEDIA_START, or no media, for the
// idle timeout.
func (l *leg) closeIdle() {
	what := "media"
	if !l.started.Load() {
		what = "MEDIA_START"
	}
	l.ws.Close(CloseIdle, fmt.Sprintf("no %s for %s", what, l.h.o.IdleTimeout))
}

func (l *leg) fail(code int, reason string) {
	l.log.Info("closing leg on bad input", "code", code, "reason", reason)
	l.h.m.Refused(context.Background(), l.tenant.ID, fmt.Sprintf("close_%d", code))
	l.ws.Close(code, reason)
}

func (l *leg) run() {
	idle := wsconn.StartIdle(l.h.o.IdleTimeout, &l.lastMedia, l.closeIdle)
	defer idle.Stop()
	defer l.ws.Finish()
	defer func() {
		if l.j != nil {
			l.j.mu.Lock()
			l.idled = idle.Fired()
			l.j.mu.Unlock()
			l.j.legEnded(l)
		}
	}()
	for {
		typ, data, err := l.ws.Read()
		if err != nil {
			if code, bad := wsconn.ClientError(err); bad {
				l.log.Info("closing leg on bad input", "code", code, "reason", err.Error())
				l.h.m.Refused(context.Background(), l.tenant.ID, fmt.Sprintf("close_%d", code))
			}
			l.clean = wsconn.IsClose(err) || l.ws.PeerClosed()
			return
		}
		if l.ws.Closing() {
			continue
		}
		if typ == websocket.TextMessage {
			l.control(data)
			continue
		}
		if l.j == nil {
			l.fail(CloseOutOfOrder, "media before MEDIA_START")
			continue
		}
		if len(data)%l.width != 0 {
			l.fail(CloseBadMessage, fmt.Sprintf("frame of %d bytes is not a whole number of %d-byte samples", len(data), l.width))
			continue
		}
		l.lastMedia.Store(time.Now().UnixNano())
		if err := l.j.audio(l, data); err != nil {
			if errors.Is(err, session.ErrTooFast) {
				// The call is refused, not the leg: every leg closes.
				l.j.failAll(CloseTooFast, err.Error())
				continue
			}
			l.fail(CloseBadMessage, err.Error())
		}
	}
}

func (l *leg) control(data []byte) {
	e, err := ParseEvent(data)
	if err != nil {
		l.fail(CloseBadMessage, err.Error())
		return
	}
	switch e.Name {
	case "MEDIA_START":
		if l.j != nil {
			l.fail(CloseOutOfOrder, "MEDIA_START sent twice")
			return
		}
		codec, rate, err := e.MediaFormat()
		if err != nil {
			l.fail(CloseUnsupportedMedia, "MEDIA_START: "+err.Error())
			return
		}
		l.width = codec.BytesPerSample()
		l.channel = e.Fields["channel_id"]
		l.started.Store(true)
		l.lastMedia.Store(time.Now().UnixNano())
		l.h.attach(l, codec, rate)
	case "ERROR":
		l.log.Warn("Asterisk reported an error", "error", e.Fields["error_text"])
	default:
		// Flow control and status events concern media sent to Asterisk,
		// and DTMF digits are not kept (they may be card numbers).
	}
}

// joined is a call made of one or two legs.
type joined struct {
	h      *Handler
	key    string
	tenant *tenant.Tenant
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
}

const (
	waiting = iota // the first leg waits for the second
	live
	done // started and ended, or failed to start
)

// attach adds a leg that sent MEDIA_START to its call, creating the call
// for its first leg.
func (h *Handler) attach(l *leg, codec audio.Codec, rate int) {
	h.mu.Lock()
	j, ok := h.calls[l.key]
	if !ok {
		j = &joined{h: h, key: l.key, tenant: l.tenant, callID: l.callID, expect: l.legs, codec: codec, rate: rate, t0: time.Now(),
			legs: map[string]*leg{}, arrived: make(chan struct{})}
		h.calls[l.key] = j
	}
	h.mu.Unlock()
	j.mu.Lock()
	defer j.mu.Unlock()
	switch {
	case j.state == done:
		l.fail(CloseCallLive, fmt.Sprintf("call %q has ended", l.callID))
		return
	case j.legs[l.role] != nil:
		l.fail(CloseCallLive, fmt.Sprintf("call %q already has a %s leg", l.callID, l.role))
		return
	case j.state == live:
		l.fail(CloseCallLive, fmt.Sprintf("call %q started without its %s leg (it came more than %s after the first)", l.callID, l.role, h.o.JoinWait))
		return
	case codec != j.codec || rate != j.rate:
		l.fail(CloseUnsupportedMedia, fmt.Sprintf("the %s leg is %v at %d Hz; the call's first leg is %v at %d Hz", l.role, codec, rate, j.codec, j.rate))
		return
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
		j.startLocked()
	}
}

// startLocked starts the call with the legs present.
func (j *joined) startLocked() {
	var roles []callv1.ChannelRole
	j.lanes = map[string]int{}
	labels := map[string]string{}
	agentID := ""
	for _, role := range []string{RoleCaller, RoleAgent} {
		l := j.legs[role]
		if l == nil || l.ended && len(l.pending) == 0 && len(j.legs) > 1 {
			continue
		}
		j.lanes[role] = len(roles)
		r := callv1.ChannelRole_CHANNEL_ROLE_CALLER
		if role == RoleAgent {
			r = callv1.ChannelRole_CHANNEL_ROLE_AGENT
		}
		roles = append(roles, r)
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
	call, err := j.h.m.Start(context.Background(), session.Start{
		Tenant:   j.tenant,
		CallID:   j.callID,
		AgentID:  agentID,
		Format:   audio.Format{Codec: j.codec, SampleRate: j.rate, Channels: len(roles)},
		Roles:    roles,
		Protocol: "asterisk",
		Labels:   labels,
	}, events{})
	if err != nil {
		j.state = done
		code, reason := websocket.CloseTryAgainLater, "analysis backends unavailable; try again"
		switch {
		case errors.Is(err, session.ErrOverQuota):
			code, reason = CloseOverQuota, err.Error()
		case errors.Is(err, session.ErrDraining):
			code, reason = websocket.CloseGoingAway, "gateway draining; reconnect"
		case errors.Is(err, session.ErrCallLive):
			code, reason = CloseCallLive, fmt.Sprintf("call %q is already live", j.callID)
		case errors.Is(err, session.ErrBadStart):
			code, reason = CloseBadMessage, err.Error()
		}
		for _, l := range j.legs {
			l.log.Info("leg refused after the upgrade", "code", code, "reason", reason)
			l.ws.Close(code, reason)
		}
		return
	}
	w := j.codec.BytesPerSample()
	silenceSample := map[audio.Codec][]byte{audio.CodecPCMU: {0xff}, audio.CodecPCMA: {0xd5}, audio.CodecL16: {0, 0}}[j.codec]
	j.joiner, _ = stereo.New(stereo.Options{Channels: len(roles), Silence: silenceSample,
		MaxLag:    uint64(j.h.o.JoinLag * time.Duration(j.rate) / time.Second),
		MaxHole:   uint64(j.h.o.JoinWait*time.Duration(j.rate)/time.Second) + uint64(j.rate),
		GapDetail: "asterisk: no media on any leg"})
	j.call = call
	j.state = live
	for role, l := range j.legs {
		l.ticket.Started()
		lane, ok := j.lanes[role]
		if ok && len(l.pending) > 0 {
			j.joiner.Write(call, lane, l.offset, l.pending)
			l.written = uint64(len(l.pending) / w)
		}
		l.pending = nil
		if l.ended && ok {
			j.joiner.End(call, lane)
		}
		ws := l.ws
		ws.Watch(call.Done(), func() {
			if r, err := call.AbortReason(); r == fullcallv1.EndReason_END_REASON_DRAIN {
				ws.Close(websocket.CloseGoingAway, "gateway draining; reconnect to continue the call")
			} else {
				ws.Close(websocket.CloseInternalServerErr, "call ended by the gateway: "+err.Error())
			}
		})
	}
}

// audio handles a leg's frame.
func (j *joined) audio(l *leg, data []byte) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	switch j.state {
	case waiting:
		if time.Since(j.t0) < j.h.o.JoinWait {
			l.pending = append(l.pending, data...)
			return nil
		}
		// The second leg did not come: a call of the legs present.
		l.pending = append(l.pending, data...)
		j.startLocked()
		return nil
	case live:
		lane, ok := j.lanes[l.role]
		if !ok {
			return nil
		}
		pos := l.offset + l.written
		l.written += uint64(len(data) / l.width)
		return j.joiner.Write(j.call, lane, pos, data)
	}
	return nil
}

// failAll closes every leg of the call for a client error (counted once).
func (j *joined) failAll(code int, reason string) {
	j.mu.Lock()
	legs := make([]*leg, 0, len(j.legs))
	for _, l := range j.legs {
		legs = append(legs, l)
	}
	j.mu.Unlock()
	j.h.m.Refused(context.Background(), j.tenant.ID, fmt.Sprintf("close_%d", code))
	for _, l := range legs {
		l.ws.Close(code, reason)
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
		// as one leg.
		h := j.h
		h.mu.Lock()
		wait := h.o.JoinWait - time.Since(j.t0)
		if h.closed {
			wait = 0
		}
		if wait > 0 {
			h.waiting.Add(1)
			defer h.waiting.Done()
		}
		h.mu.Unlock()
		if wait > 0 {
			arrived := j.arrived
			j.mu.Unlock()
			t := time.NewTimer(wait)
			select {
			case <-arrived:
			case <-t.C:
			case <-h.quit:
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
			j.startLocked()
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
			l.log.Warn("call ended without a report", "err", err)
		}
	}
	j.h.mu.Lock()
	if j.h.calls[j.key] == j {
		delete(j.h.calls, j.key)
	}
	j.h.mu.Unlock()
}

// events drops live events: Asterisk would read text as commands.
type events struct{}

func (events) Score(*callv1.ScoreUpdate) {}
func (events) Alert(*callv1.AlertEvent)  {}
