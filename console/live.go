package console

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/calmline/calmline/lib/backoff"
)

// The wall's data path. Every signed-in key has one view: the merged live
// calls of every gateway as that key may see them, fed by one upstream
// subscription per gateway to the gateway's own feed (GET /api/v1/live)
// made with the key itself, so the gateway's tenant scoping and role rules
// apply first and Access is applied again here. Browsers of the same key
// share the view (and its history, so that a reload keeps the sparklines).
// The view sends each browser a snapshot, then batches of changes every
// FlushEvery: with hundreds of calls a browser parses a few messages a
// second instead of hundreds.

// point is one second of a live call's scores (nil: abstained or withheld).
type point struct {
	S  uint32
	CP *float64
	AS *float64
}

func (p point) MarshalJSON() ([]byte, error) {
	return json.Marshal([]any{p.S, p.CP, p.AS})
}

func (p *point) UnmarshalJSON(b []byte) error {
	var a [3]*float64
	if err := json.Unmarshal(b, &a); err != nil {
		return err
	}
	if a[0] == nil || *a[0] < 0 {
		return fmt.Errorf("point: want [second, caller_pressure, agent_stress]")
	}
	*p = point{S: uint32(*a[0]), CP: a[1], AS: a[2]}
	return nil
}

type liveCall struct {
	ID          string
	Agent       string
	Protocol    string
	StartedAt   string
	Gateway     string
	Labels      map[string]string
	hist        []point
	Alert       string // "", "firing", "cleared"
	AlertScore  string
	unconfirmed int // the upstream connection epoch that must confirm it, 0 when confirmed
}

// callJSON is a live call as the browser gets it.
type callJSON struct {
	K         string            `json:"k,omitempty"`
	ID        string            `json:"id"`
	Agent     string            `json:"agent"`
	Protocol  string            `json:"protocol"`
	StartedAt string            `json:"started_at"`
	Gateway   string            `json:"gateway"`
	Labels    map[string]string `json:"labels,omitempty"`
	Alert     string            `json:"alert,omitempty"`
	AlertOn   string            `json:"alert_score,omitempty"`
	Hist      []point           `json:"h"`
}

func (c *liveCall) json() callJSON {
	return callJSON{ID: c.ID, Agent: c.Agent, Protocol: c.Protocol, StartedAt: c.StartedAt, Gateway: c.Gateway,
		Labels: c.Labels, Alert: c.Alert, AlertOn: c.AlertScore, Hist: append([]point(nil), c.hist...)}
}

// gwState is one gateway's upstream as the browser sees it.
type gwState struct {
	Name  string `json:"name"`
	Up    bool   `json:"up"`
	Error string `json:"error,omitempty"`
	epoch int
}

// liveSub is one browser's stream.
type liveSub struct {
	ch     chan []byte
	kicked chan struct{}
	once   sync.Once
}

func (s *liveSub) kick() { s.once.Do(func() { close(s.kicked) }) }

// view is one key's merged wall.
type view struct {
	h      *liveHub
	id     string
	key    string
	access Access
	cancel context.CancelFunc

	mu       sync.Mutex
	calls    map[string]*liveCall
	gws      map[string]*gwState
	subs     map[*liveSub]struct{}
	pending  []any
	gwDirty  bool
	idleFrom time.Time
}

// liveHub owns the views.
type liveHub struct {
	s      *Server
	mu     sync.Mutex
	vs     map[string]*view
	closed bool
	wg     sync.WaitGroup
}

func newLiveHub(s *Server) *liveHub { return &liveHub{s: s, vs: map[string]*view{}} }

// subscribe adds a browser to key's view, starting the view if needed, and
// returns the snapshot to send first; ok is false once the hub is closed.
func (h *liveHub) subscribe(ctx context.Context, key string, a Access) (*view, *liveSub, []byte, bool) {
	id := tokenID(key)
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, nil, nil, false
	}
	v := h.vs[id]
	if v == nil {
		vctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		v = &view{h: h, id: id, key: key, access: a, cancel: cancel, calls: map[string]*liveCall{}, gws: map[string]*gwState{}, subs: map[*liveSub]struct{}{}}
		h.vs[id] = v
		h.wg.Add(1)
		go func() { defer h.wg.Done(); v.run(vctx) }()
	}
	h.mu.Unlock()
	sub := &liveSub{ch: make(chan []byte, h.s.o.BrowserQueue), kicked: make(chan struct{})}
	v.mu.Lock()
	v.access = a // the latest reading of the key's role
	v.subs[sub] = struct{}{}
	snap := v.snapshotLocked()
	v.mu.Unlock()
	return v, sub, snap, true
}

func (v *view) unsubscribe(sub *liveSub) {
	v.mu.Lock()
	delete(v.subs, sub)
	if len(v.subs) == 0 {
		v.idleFrom = v.h.s.o.Now()
	}
	v.mu.Unlock()
}

func (v *view) gwListLocked() []gwState {
	out := make([]gwState, 0, len(v.gws))
	for _, g := range v.gws {
		out = append(out, *g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (v *view) snapshotLocked() []byte {
	calls := make([]callJSON, 0, len(v.calls))
	for _, c := range v.calls {
		if c.unconfirmed == 0 {
			calls = append(calls, c.json())
		}
	}
	sort.Slice(calls, func(i, j int) bool { return calls[i].ID < calls[j].ID })
	b, _ := json.Marshal(map[string]any{"t": "snap", "calls": calls, "gw": v.gwListLocked(), "history_s": int(v.h.s.o.History / time.Second)})
	return b
}

// run keeps one upstream per gateway target, flushes batches to the
// browsers and ends the view once no browser has watched it for Linger.
func (v *view) run(ctx context.Context) {
	o := v.h.s.o
	ups := map[string]context.CancelFunc{}
	var wg sync.WaitGroup
	defer func() {
		for _, c := range ups {
			c()
		}
		wg.Wait()
	}()
	resolve := func() {
		ts := v.h.s.targets.current()
		seen := map[string]bool{}
		for _, t := range ts {
			seen[t.name] = true
			if _, ok := ups[t.name]; ok {
				continue
			}
			uctx, cancel := context.WithCancel(ctx)
			ups[t.name] = cancel
			v.mu.Lock()
			v.gws[t.name] = &gwState{Name: t.name}
			v.gwDirty = true
			v.mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); v.upstream(uctx, t) }()
		}
		for name, cancel := range ups {
			if !seen[name] {
				cancel()
				delete(ups, name)
				v.mu.Lock()
				delete(v.gws, name)
				v.dropGatewayLocked(name, 0)
				v.gwDirty = true
				v.mu.Unlock()
			}
		}
	}
	resolve()
	flush := time.NewTicker(o.FlushEvery)
	defer flush.Stop()
	reresolve := time.NewTicker(o.ResolveEvery)
	defer reresolve.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-reresolve.C:
			resolve()
		case <-flush.C:
			if v.flush() {
				return
			}
		}
	}
}

// flush sends the pending changes to every browser; it reports whether the
// view has been idle for long enough to end.
func (v *view) flush() (ended bool) {
	h := v.h
	h.mu.Lock()
	defer h.mu.Unlock()
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.subs) == 0 {
		v.pending = nil
		if !v.idleFrom.IsZero() && h.s.o.Now().Sub(v.idleFrom) >= h.s.o.Linger {
			delete(h.vs, v.id)
			v.cancel()
			return true
		}
		return false
	}
	if len(v.pending) == 0 && !v.gwDirty {
		return false
	}
	msg := map[string]any{"t": "b", "ev": v.pending}
	if v.gwDirty {
		msg["gw"] = v.gwListLocked()
	}
	b, _ := json.Marshal(msg)
	v.pending, v.gwDirty = nil, false
	for s := range v.subs {
		select {
		case s.ch <- b:
		default:
			// The browser reads too slowly: end its stream; EventSource
			// reconnects and starts again from a snapshot.
			h.s.metrics.slowBrowsers.Add(1)
			s.kick()
			delete(v.subs, s)
		}
	}
	return false
}

// dropGatewayLocked removes the calls of a gateway, all of them (epoch 0)
// or those an upstream connection of that epoch did not confirm.
func (v *view) dropGatewayLocked(gw string, epoch int) {
	for id, c := range v.calls {
		if c.Gateway == gw && (epoch == 0 || c.unconfirmed == epoch) {
			delete(v.calls, id)
			v.pending = append(v.pending, map[string]any{"k": "end", "id": id, "reason": "gone"})
		}
	}
}

func (v *view) setGateway(name string, up bool, errText string, epoch int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	g := v.gws[name]
	if g == nil {
		return
	}
	if g.Up != up || g.Error != errText {
		g.Up, g.Error, v.gwDirty = up, errText, true
	}
	if epoch > 0 {
		g.epoch = epoch
	}
}

// upstream follows one gateway's feed with the key, reconnecting with
// backoff, until ctx ends.
func (v *view) upstream(ctx context.Context, t target) {
	o := v.h.s.o
	retry := backoff.New(backoff.Policy{Initial: o.ReconnectMin, Max: o.ReconnectMax}, nil)
	epoch := 0
	for ctx.Err() == nil {
		epoch++
		err := v.follow(ctx, t, epoch)
		if ctx.Err() != nil {
			return
		}
		v.h.s.metrics.upstreamErrors.Add(1)
		v.h.s.log.Debug("console: gateway feed ended", "gateway", t.name, "err", err)
		v.setGateway(t.name, false, errText(err), 0)
		if err == nil {
			retry.Reset() // the feed was followed until it ended cleanly
		}
		if retry.Wait(ctx) != nil {
			return
		}
	}
}

// errText is an upstream error as the browser may see it: its kind, never
// a URL (which could carry credentials) or a key.
func errText(err error) string {
	if err == nil {
		return "disconnected"
	}
	var se statusError
	if ok := asStatus(err, &se); ok {
		return se.Error()
	}
	if strings.Contains(err.Error(), "connection refused") {
		return "unreachable"
	}
	return "disconnected"
}

type statusError struct{ code int }

func (e statusError) Error() string { return fmt.Sprintf("gateway answered %d", e.code) }

func asStatus(err error, out *statusError) bool {
	se, ok := err.(statusError)
	if ok {
		*out = se
	}
	return ok
}

// follow reads one connection to a gateway's feed.
func (v *view) follow(ctx context.Context, t target, epoch int) error {
	req, err := http.NewRequestWithContext(ctx, "GET", t.base+"/api/v1/live", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+v.key)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := t.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return statusError{resp.StatusCode}
	}
	// Calls this gateway had must be confirmed by the new snapshot.
	v.mu.Lock()
	for _, c := range v.calls {
		if c.Gateway == t.name {
			c.unconfirmed = epoch
		}
	}
	v.mu.Unlock()
	v.setGateway(t.name, true, "", epoch)
	reconciled := false
	reconcile := func() {
		v.mu.Lock()
		defer v.mu.Unlock()
		if g := v.gws[t.name]; g != nil && g.epoch == epoch {
			v.dropGatewayLocked(t.name, epoch)
		}
	}
	// The snapshot is written at once after the opening comment; whatever
	// it did not confirm within a second has ended meanwhile.
	timer := time.AfterFunc(time.Second, reconcile)
	defer timer.Stop()
	rd := newSSEReader(resp.Body)
	for {
		ev, err := rd.Next()
		if err != nil {
			return err
		}
		if ev.IsComment {
			continue
		}
		if ev.Type != "started" && !reconciled {
			reconciled = true
			timer.Stop()
			reconcile()
		}
		if err := v.apply(t.name, ev); err != nil {
			v.h.s.metrics.badEvents.Add(1)
			v.h.s.log.Warn("console: unreadable live-feed event", "gateway", t.name, "type", truncate(ev.Type, 40), "err", err)
		}
	}
}

// feedMsg is a gateway feed event (docs/api.md, live feed).
type feedMsg struct {
	Type           string            `json:"type"`
	CallID         string            `json:"call_id"`
	AgentID        string            `json:"agent_id"`
	Protocol       string            `json:"protocol"`
	StartedAt      string            `json:"started_at"`
	Labels         map[string]string `json:"labels"`
	Second         uint32            `json:"second"`
	CallerPressure *float64          `json:"caller_pressure"`
	AgentStress    *float64          `json:"agent_stress"`
	State          string            `json:"state"`
	Score          string            `json:"score"`
	Value          float64           `json:"value"`
	Threshold      float64           `json:"threshold"`
	Reason         string            `json:"reason"`
}

// apply folds one feed event into the view and queues its change.
func (v *view) apply(gw string, ev sseEvent) error {
	var m feedMsg
	if err := json.Unmarshal(ev.Data, &m); err != nil {
		return fmt.Errorf("decode %s: %w", ev.Type, err)
	}
	if m.CallID == "" {
		return fmt.Errorf("%s event without call_id", ev.Type)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	a := v.access
	if !a.SeesAgent(m.AgentID) {
		return nil
	}
	hist := int(v.h.s.o.History / time.Second)
	c := v.calls[m.CallID]
	switch ev.Type {
	case "started":
		if c == nil {
			if len(v.calls) >= v.h.s.o.MaxCalls {
				v.h.s.metrics.callsDropped.Add(1)
				return nil
			}
			c = &liveCall{ID: m.CallID}
			v.calls[m.CallID] = c
		}
		c.Agent, c.Protocol, c.StartedAt, c.Gateway, c.Labels, c.unconfirmed = m.AgentID, m.Protocol, m.StartedAt, gw, m.Labels, 0
		j := c.json()
		j.K = "start"
		v.pending = append(v.pending, j)
	case "score":
		if c == nil {
			return nil
		}
		p := point{S: m.Second, CP: finite(m.CallerPressure)}
		if a.AgentScores {
			p.AS = finite(m.AgentStress)
		}
		c.hist = append(c.hist, p)
		if len(c.hist) > hist {
			c.hist = append(c.hist[:0], c.hist[len(c.hist)-hist:]...)
		}
		v.pending = append(v.pending, map[string]any{"k": "s", "id": c.ID, "p": p})
	case "alert":
		if c == nil || (m.Score == "agent_stress" && !a.AgentScores) {
			return nil
		}
		c.Alert, c.AlertScore = m.State, m.Score
		v.pending = append(v.pending, map[string]any{"k": "a", "id": c.ID, "state": m.State, "score": m.Score, "second": m.Second})
	case "ended":
		if c == nil {
			return nil
		}
		delete(v.calls, m.CallID)
		v.pending = append(v.pending, map[string]any{"k": "end", "id": m.CallID, "reason": m.Reason})
	default:
		return fmt.Errorf("unknown event type %q", truncate(ev.Type, 40))
	}
	return nil
}

// liveCall returns a live call's recent history for the call view.
func (h *liveHub) liveCall(key, callID string) (callJSON, bool) {
	h.mu.Lock()
	v := h.vs[tokenID(key)]
	h.mu.Unlock()
	if v == nil {
		return callJSON{}, false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	c := v.calls[callID]
	if c == nil || c.unconfirmed != 0 {
		return callJSON{}, false
	}
	return c.json(), true
}

// close ends every view and waits for their upstreams.
func (h *liveHub) close() {
	h.mu.Lock()
	h.closed = true
	for id, v := range h.vs {
		v.cancel()
		v.mu.Lock()
		for s := range v.subs {
			s.kick()
		}
		v.mu.Unlock()
		delete(h.vs, id)
	}
	h.mu.Unlock()
	h.wg.Wait()
}
