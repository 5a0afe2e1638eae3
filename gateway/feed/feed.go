// Package feed is the gateway's live feed: the state and scores of every
// live call (started, score, alert, ended), streamed to a tenant's
// dashboards and agent desktops as Server-Sent Events on
// GET /api/v1/live.
//
// A subscriber authenticates with one of its tenant's API keys and sees
// that tenant's calls only. What it sees of agent-side scores follows the
// tenant's privacy mode and the key's role: in "private" mode agent_stress
// (and alerts on it) reach only care-team keys and the agent's own desktop
// key, never a general key (PBXs, wallboards). See docs/api.md.
//
// Every subscriber has a bounded queue: when it reads too slowly the
// oldest queued score is dropped (counted); when only state events
// (started, alert, ended), which must not be lost silently, fill the queue
// the subscriber is disconnected (counted) and reconnects to a fresh
// snapshot.
package feed

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/calmline/calmline/gateway/edge"
	"github.com/calmline/calmline/gateway/session"
	"github.com/calmline/calmline/lib/service"
	"github.com/calmline/calmline/lib/tenant"
	"github.com/calmline/calmline/lib/wire"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// Options configures a Hub.
type Options struct {
	Logger        *slog.Logger
	MeterProvider metric.MeterProvider
	// Tenants authenticates subscribers.
	Tenants *tenant.Registry
	// Queue bounds each subscriber's pending events (default 256).
	Queue int
	// MaxSubscribers bounds the subscribers per tenant (default 100).
	MaxSubscribers int
	// Heartbeat is how often an idle stream gets a comment line, so that
	// proxies keep it open and dead subscribers are noticed (default 15 s).
	Heartbeat time.Duration
	// WriteTimeout bounds each write to a subscriber (default 10 s).
	WriteTimeout time.Duration
}

func (o *Options) defaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MeterProvider == nil {
		o.MeterProvider = noop.NewMeterProvider()
	}
	if o.Queue <= 0 {
		o.Queue = 256
	}
	if o.MaxSubscribers <= 0 {
		o.MaxSubscribers = 100
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = 15 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
}

// Hub fans the events of live calls out to subscribers, per tenant. It is a
// session.Observer; its ServeHTTP serves the stream.
type Hub struct {
	o   Options
	log *slog.Logger

	events    metric.Int64Counter
	dropped   metric.Int64Counter
	refused   metric.Int64Counter
	closeOnce sync.Once
	closed    chan struct{}

	mu      sync.Mutex
	tenants map[string]*tenantFeed
	known   map[string]bool // tenants whose series exist at zero
}

type tenantFeed struct {
	calls map[*session.Call]*event // live calls and their started event
	subs  map[*subscriber]struct{}
}

// New returns a Hub.
func New(o Options) (*Hub, error) {
	o.defaults()
	if o.Tenants == nil {
		return nil, fmt.Errorf("feed: Tenants is required")
	}
	h := &Hub{o: o, log: o.Logger.With("component", "feed"), closed: make(chan struct{}), tenants: map[string]*tenantFeed{}}
	meter := o.MeterProvider.Meter("github.com/calmline/calmline/gateway/feed")
	var err error
	if h.events, err = meter.Int64Counter("calmline.gateway.feed.events", metric.WithUnit("{event}"),
		metric.WithDescription("Events written to live-feed subscribers, by tenant.")); err != nil {
		return nil, err
	}
	if h.dropped, err = meter.Int64Counter("calmline.gateway.feed.dropped", metric.WithUnit("{event}"),
		metric.WithDescription("Live-feed events dropped, by tenant and reason: queue_full (oldest score dropped), slow_subscriber (subscriber disconnected).")); err != nil {
		return nil, err
	}
	if h.refused, err = meter.Int64Counter("calmline.gateway.feed.refused", metric.WithUnit("{subscriber}"),
		metric.WithDescription("Live-feed subscriptions refused, by tenant and reason.")); err != nil {
		return nil, err
	}
	_, err = meter.Int64ObservableGauge("calmline.gateway.feed.subscribers", metric.WithUnit("{subscriber}"),
		metric.WithDescription("Live-feed subscribers, by tenant."),
		metric.WithInt64Callback(func(_ context.Context, ob metric.Int64Observer) error {
			h.mu.Lock()
			defer h.mu.Unlock()
			seen := map[string]bool{}
			for id, tf := range h.tenants {
				if len(tf.subs) > 0 {
					seen[id] = true
					ob.Observe(int64(len(tf.subs)), metric.WithAttributes(attribute.String("tenant", id)))
				}
			}
			for id := range h.known {
				if !seen[id] {
					ob.Observe(0, metric.WithAttributes(attribute.String("tenant", id)))
				}
			}
			return nil
		}))
	if err != nil {
		return nil, err
	}
	h.refused.Add(context.Background(), 0, metric.WithAttributes(attribute.String("tenant", ""), attribute.String("reason", "unauthenticated")))
	return h, nil
}

// KnowTenants makes these tenants' feed series exist at zero before their
// first subscriber.
func (h *Hub) KnowTenants(ids []string) {
	h.mu.Lock()
	if h.known == nil {
		h.known = map[string]bool{}
	}
	var added []string
	for _, id := range ids {
		if !h.known[id] {
			h.known[id] = true
			added = append(added, id)
		}
	}
	h.mu.Unlock()
	ctx := context.Background()
	for _, id := range added {
		ten := attribute.String("tenant", id)
		h.events.Add(ctx, 0, metric.WithAttributes(ten))
		for _, r := range []string{"queue_full", "slow_subscriber"} {
			h.dropped.Add(ctx, 0, metric.WithAttributes(ten, attribute.String("reason", r)))
		}
	}
}

// Close ends every subscriber's stream (the gateway is stopping); clients
// reconnect to another gateway. Later subscriptions are refused.
func (h *Hub) Close() { h.closeOnce.Do(func() { close(h.closed) }) }

// event is one feed event, encoded once per view.
type event struct {
	typ     string
	callID  string
	agentID string
	// general is what every subscriber may see; full, when set, is the
	// version with agent-side scores for care-team and agent keys. A nil
	// general hides the event from general subscribers.
	general []byte
	full    []byte
	score   bool // droppable
}

func (e *event) view(full bool) []byte {
	if full && e.full != nil {
		return e.full
	}
	return e.general
}

func (h *Hub) tenant(id string) *tenantFeed {
	tf := h.tenants[id]
	if tf == nil {
		tf = &tenantFeed{calls: map[*session.Call]*event{}, subs: map[*subscriber]struct{}{}}
		h.tenants[id] = tf
	}
	return tf
}

func (h *Hub) forget(id string, tf *tenantFeed) {
	if len(tf.calls) == 0 && len(tf.subs) == 0 {
		delete(h.tenants, id)
	}
}

// publish queues ev for every subscriber of the tenant that may see it.
func (h *Hub) publish(tenantID string, ev *event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if tf := h.tenants[tenantID]; tf != nil {
		h.publishLocked(tenantID, tf, ev)
	}
}

func (h *Hub) publishLocked(tenantID string, tf *tenantFeed, ev *event) {
	for s := range tf.subs {
		if s.wants(ev) {
			if reason := s.push(ev); reason != "" {
				h.dropped.Add(context.Background(), 1, metric.WithAttributes(attribute.String("tenant", tenantID), attribute.String("reason", reason)))
			}
		}
	}
}

// subscribed reports whether the tenant has subscribers, so that events
// nobody reads are not even encoded.
func (h *Hub) subscribed(tenantID string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	tf := h.tenants[tenantID]
	return tf != nil && len(tf.subs) > 0
}

// CallStarted implements session.Observer.
func (h *Hub) CallStarted(c *session.Call) {
	info := c.Info()
	b := marshal(startedMsg{Type: "started", CallID: info.CallId, AgentID: info.AgentId, SessionID: info.SessionId,
		Protocol: info.Protocol, StartedAt: c.StartedAt().UTC().Format(time.RFC3339Nano), Labels: info.Labels})
	ev := &event{typ: "started", callID: info.CallId, agentID: info.AgentId, general: b}
	// The call joins the snapshot and its event goes out under one lock,
	// so that a new subscriber sees it once.
	h.mu.Lock()
	defer h.mu.Unlock()
	tf := h.tenant(info.TenantId)
	tf.calls[c] = ev
	h.publishLocked(info.TenantId, tf, ev)
}

// CallScore implements session.Observer. What a general key sees of a
// private tenant's score is gateway/edge's one rendering of the privacy
// mode, as for the PBXs.
func (h *Hub) CallScore(c *session.Call, u *callv1.ScoreUpdate) {
	info := c.Info()
	if !h.subscribed(info.TenantId) {
		return
	}
	view := func(private bool) []byte {
		s := edge.ViewScore(u, private)
		return marshal(scoreMsg{Type: "score", CallID: info.CallId, AgentID: info.AgentId, Second: s.Second, EndSample: s.EndSample,
			CallerPressure: s.CallerPressure, AgentStress: s.AgentStress, Abstain: s.Abstain("caller_pressure", "agent_stress"),
			Model: modelMsg{Name: s.ModelName, Version: s.ModelVersion}})
	}
	ev := &event{typ: "score", callID: info.CallId, agentID: info.AgentId, score: true}
	ev.full = view(false)
	ev.general = ev.full
	if edge.Private(c.Tenant()) {
		ev.general = view(true)
	}
	h.publish(info.TenantId, ev)
}

// CallAlert implements session.Observer.
func (h *Hub) CallAlert(c *session.Call, a *callv1.AlertEvent) {
	info := c.Info()
	if !h.subscribed(info.TenantId) {
		return
	}
	b := marshal(alertMsg{Type: "alert", CallID: info.CallId, AgentID: info.AgentId, AlertID: a.AlertId, RuleID: a.RuleId,
		Episode: a.Episode, State: edge.AlertState(a), Score: wire.ScoreName(a.Score), Value: a.Value, Threshold: a.Threshold, Second: a.Second})
	ev := &event{typ: "alert", callID: info.CallId, agentID: info.AgentId, general: b, full: b}
	if !edge.AlertVisible(a, edge.Private(c.Tenant())) {
		ev.general = nil // an alert on the agent's stress tells of it
	}
	h.publish(info.TenantId, ev)
}

// CallEnded implements session.Observer.
func (h *Hub) CallEnded(c *session.Call, reason session.EndReason, r *fullcallv1.Report) {
	info := c.Info()
	m := endedMsg{Type: "ended", CallID: info.CallId, AgentID: info.AgentId,
		Reason: strings.ToLower(strings.TrimPrefix(reason.String(), "END_REASON_"))}
	if r != nil {
		m.DurationS, m.Incomplete, m.ReportURL = &r.DurationS, r.Incomplete, "/api/v1/reports/"+r.CallId
	} else {
		m.Error = "the report could not be stored"
	}
	ev := &event{typ: "ended", callID: info.CallId, agentID: info.AgentId, general: marshal(m)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if tf := h.tenants[info.TenantId]; tf != nil {
		delete(tf.calls, c)
		h.publishLocked(info.TenantId, tf, ev)
		h.forget(info.TenantId, tf)
	}
}

func marshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("feed: encoding %T: %v", v, err)) // plain structs always encode
	}
	return b
}

// subscriber is one stream, owned by its HTTP handler's goroutine.
type subscriber struct {
	tenantID string
	full     bool   // sees agent-side scores
	agentID  string // only this agent's calls, when set
	callID   string // only this call, when set
	max      int

	mu     sync.Mutex
	q      []*event
	kicked bool
	wake   chan struct{}
}

func (s *subscriber) wants(ev *event) bool {
	return (s.agentID == "" || s.agentID == ev.agentID) && (s.callID == "" || s.callID == ev.callID) && ev.view(s.full) != nil
}

// push queues ev and returns the reason of a drop, if any.
func (s *subscriber) push(ev *event) (dropped string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kicked {
		return ""
	}
	if len(s.q) >= s.max {
		i := 0
		for i < len(s.q) && !s.q[i].score {
			i++
		}
		switch {
		case i < len(s.q): // drop the oldest score
			s.q = append(s.q[:i], s.q[i+1:]...)
			dropped = "queue_full"
		case ev.score:
			s.signal()
			return "queue_full"
		default: // only state events queued: they may not be lost silently
			s.kicked = true
			s.q = nil
			s.signal()
			return "slow_subscriber"
		}
	}
	s.q = append(s.q, ev)
	s.signal()
	return dropped
}

func (s *subscriber) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscriber) take() ([]*event, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.q
	s.q = nil
	return q, s.kicked
}

// ServeHTTP serves GET /api/v1/live: an event stream of the tenant's live
// calls, starting with a started event for every call already live.
// Query parameters agent_id and call_id narrow it down.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t, key, ok := h.o.Tenants.AuthenticateKey(tenant.KeyFromRequest(r))
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="calmline"`)
		h.refused.Add(r.Context(), 1, metric.WithAttributes(attribute.String("tenant", ""), attribute.String("reason", "unauthenticated")))
		service.WriteError(w, http.StatusUnauthorized, "unauthenticated", "missing or unknown API key (send Authorization: Bearer KEY or X-API-Key)")
		return
	}
	refuse := func(status int, code, msg string) {
		h.refused.Add(r.Context(), 1, metric.WithAttributes(attribute.String("tenant", t.ID), attribute.String("reason", code)))
		service.WriteError(w, status, code, msg)
	}
	if err := key.Authorize(tenant.ActionReadLiveFeed); err != nil {
		refuse(http.StatusForbidden, "forbidden", err.Error())
		return
	}
	s := &subscriber{
		tenantID: t.ID,
		full:     tenant.Allows(key.Role, tenant.ActionReadPrivateAgentScores),
		agentID:  r.URL.Query().Get("agent_id"),
		callID:   r.URL.Query().Get("call_id"),
		max:      h.o.Queue,
		wake:     make(chan struct{}, 1),
	}
	if key.Access(tenant.ActionReadLiveFeed) == tenant.ScopeOwnAgent {
		if s.agentID != "" && s.agentID != key.AgentID {
			refuse(http.StatusForbidden, "forbidden", "an agent key sees only its own agent's calls")
			return
		}
		s.agentID = key.AgentID
	}
	// Register and take the snapshot under one lock, so that every call
	// is announced exactly once: by the snapshot or by its started event.
	h.mu.Lock()
	select {
	case <-h.closed:
		h.mu.Unlock()
		refuse(http.StatusServiceUnavailable, "draining", "this gateway is stopping; reconnect to another")
		return
	default:
	}
	tf := h.tenant(t.ID)
	if len(tf.subs) >= h.o.MaxSubscribers {
		h.forget(t.ID, tf)
		h.mu.Unlock()
		refuse(http.StatusTooManyRequests, "too_many_subscribers", fmt.Sprintf("the tenant has %d live-feed subscribers, the limit", h.o.MaxSubscribers))
		return
	}
	var snapshot []*event
	for _, ev := range tf.calls {
		if s.wants(ev) {
			snapshot = append(snapshot, ev)
		}
	}
	tf.subs[s] = struct{}{}
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(tf.subs, s)
		h.forget(t.ID, tf)
		h.mu.Unlock()
	}()

	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	attrs := metric.WithAttributes(attribute.String("tenant", t.ID))
	write := func(evs []*event, comment string) bool {
		rc.SetWriteDeadline(time.Now().Add(h.o.WriteTimeout))
		var b strings.Builder
		if comment != "" {
			b.WriteString(": " + comment + "\n\n")
		}
		for _, ev := range evs {
			b.WriteString("event: " + ev.typ + "\ndata: ")
			b.Write(ev.view(s.full))
			b.WriteString("\n\n")
		}
		if _, err := w.Write([]byte(b.String())); err != nil {
			return false
		}
		if len(evs) > 0 {
			h.events.Add(context.Background(), int64(len(evs)), attrs)
		}
		return rc.Flush() == nil
	}
	if !write(snapshot, "calmline live feed v1") {
		return
	}
	beat := time.NewTicker(h.o.Heartbeat)
	defer beat.Stop()
	for {
		select {
		case <-s.wake:
			evs, kicked := s.take()
			if kicked {
				write(nil, "disconnected: too slow to read the feed; reconnect")
				return
			}
			if !write(evs, "") {
				return
			}
		case <-beat.C:
			if !write(nil, "ping") {
				return
			}
		case <-r.Context().Done():
			return
		case <-h.closed:
			write(nil, "gateway stopping; reconnect")
			return
		}
	}
}

// Events on the wire.
type (
	startedMsg struct {
		Type      string            `json:"type"`
		CallID    string            `json:"call_id"`
		AgentID   string            `json:"agent_id"`
		SessionID string            `json:"session_id"`
		Protocol  string            `json:"protocol"`
		StartedAt string            `json:"started_at"`
		Labels    map[string]string `json:"labels,omitempty"`
	}
	modelMsg struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	}
	scoreMsg struct {
		Type           string            `json:"type"`
		CallID         string            `json:"call_id"`
		AgentID        string            `json:"agent_id"`
		Second         uint32            `json:"second"`
		EndSample      uint64            `json:"end_sample"`
		CallerPressure *float64          `json:"caller_pressure"`
		AgentStress    *float64          `json:"agent_stress"`
		Abstain        map[string]string `json:"abstain,omitempty"`
		Model          modelMsg          `json:"model"`
	}
	alertMsg struct {
		Type      string  `json:"type"`
		CallID    string  `json:"call_id"`
		AgentID   string  `json:"agent_id"`
		AlertID   string  `json:"alert_id"`
		RuleID    string  `json:"rule_id"`
		Episode   uint32  `json:"episode"`
		State     string  `json:"state"`
		Score     string  `json:"score"`
		Value     float64 `json:"value"`
		Threshold float64 `json:"threshold"`
		Second    uint32  `json:"second"`
	}
	endedMsg struct {
		Type       string   `json:"type"`
		CallID     string   `json:"call_id"`
		AgentID    string   `json:"agent_id"`
		Reason     string   `json:"reason"`
		DurationS  *float64 `json:"duration_s,omitempty"`
		Incomplete bool     `json:"incomplete"`
		ReportURL  string   `json:"report_url,omitempty"`
		Error      string   `json:"error,omitempty"`
	}
)
