package admission

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/calmline/calmline/gateway/gatewaytest"
	"github.com/calmline/calmline/gateway/session"
	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/rpc"
	"github.com/calmline/calmline/lib/tenant"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// loadCalls is fakeCalls with a load the test sets.
type loadCalls struct {
	*fakeCalls
	load session.Load
}

func (l *loadCalls) Load() session.Load { l.mu.Lock(); defer l.mu.Unlock(); return l.load }

func (l *loadCalls) set(f func(*session.Load)) { l.mu.Lock(); defer l.mu.Unlock(); f(&l.load) }

// TestHeadroomPolicy drives the headroom judgement with a hand-driven
// clock: the ceiling counts the connections about to start a call; the
// realtime lag and fullcall backlog trip above their limits and clear only
// once at or under half the limit for the hold, so admission does not
// flap around a limit.
func TestHeadroomPolicy(t *testing.T) {
	g, fc, c, _ := newGuard(t, Options{Capacity: Capacity{MaxRealtimeLag: time.Second, MaxFullcallBacklog: 10 * time.Second}})
	calls := &loadCalls{fakeCalls: fc, load: session.Load{Calls: 9, MaxCalls: 10}}
	g.calls = calls
	rt := Route{}
	admit := func() (*Ticket, *Error) {
		return g.admit(request("10.0.0.1:1000", "", "", false), rt)
	}
	// Ceiling: 9 live calls leave room for one more, and one connection
	// about to start a call takes it.
	if _, err := admit(); err != nil {
		t.Fatalf("10th call under a ceiling of 10: %v", err)
	}
	tk, err := admit()
	if err == nil || err.Status != http.StatusServiceUnavailable || err.Reason != ReasonCapacityCalls || err.RetryAfter != 5*time.Second {
		t.Fatalf("past the ceiling with a connection pending: %v; want 503 capacity_calls, Retry-After 5s", err)
	}
	if tk != nil {
		t.Fatal("a refused connection holds a ticket")
	}
	g.mu.Lock()
	g.total = 0 // the pending connection closed
	g.mu.Unlock()

	step := func(lag time.Duration, wantRefused bool, why string) {
		t.Helper()
		calls.set(func(l *session.Load) { l.RealtimeLag = lag })
		tk, err := admit()
		switch {
		case wantRefused && (err == nil || err.Reason != ReasonCapacityLag):
			t.Errorf("%s (lag %v): %v; want capacity_realtime_lag", why, lag, err)
		case !wantRefused && err != nil:
			t.Errorf("%s (lag %v): refused %v", why, lag, err)
		}
		tk.release()
		c.t = c.t.Add(time.Second)
	}
	step(900*time.Millisecond, false, "under the limit")
	step(1500*time.Millisecond, true, "above the limit")
	step(800*time.Millisecond, true, "back under the limit, above half of it")
	step(400*time.Millisecond, true, "under half, not yet for the hold")
	step(400*time.Millisecond, true, "under half for 1 s of a 2 s hold")
	step(600*time.Millisecond, true, "above half again: the hold starts over")
	step(400*time.Millisecond, true, "under half")
	step(400*time.Millisecond, true, "under half for 1 s")
	step(400*time.Millisecond, false, "under half for the hold")
	step(900*time.Millisecond, false, "under the limit, cleared")

	// The fullcall backlog trips alike.
	calls.set(func(l *session.Load) { l.FullcallBacklog = 12 * time.Second })
	if _, err := admit(); err == nil || err.Reason != ReasonCapacityBacklog || !strings.Contains(err.Msg, "12s of audio per call") {
		t.Errorf("12 s per call unacknowledged over a 10 s limit: %v; want capacity_fullcall_backlog saying how much", err)
	}
	// A start on a connection already upgraded is judged too, counted.
	if err := g.AdmitCall(context.Background(), "acme", "native"); err == nil || err.Reason != ReasonCapacityBacklog {
		t.Errorf("AdmitCall with the backlog tripped: %v; want capacity_fullcall_backlog", err)
	}
	if n := fc.refused[ReasonCapacityBacklog]; n != 1 {
		t.Errorf("AdmitCall's refusals counted: %d; want 1", n)
	}
	// AdmitCall leaves the ceiling to the call core (it knows it exactly).
	calls.set(func(l *session.Load) { l.FullcallBacklog, l.Calls = 0, 10 })
	g.AdmitCall(context.Background(), "acme", "native") // the backlog is back under half: its hold starts
	c.t = c.t.Add(2 * time.Second)
	if err := g.AdmitCall(context.Background(), "acme", "native"); err != nil {
		t.Errorf("AdmitCall at the ceiling: %v; want nil (Start refuses it)", err)
	}
}

// TestNoHeadroomRefusesBeforeTheUpgrade puts a real call core at its
// ceiling (one live call of one, on fake backends over gRPC) in front of
// a real HTTP server: a new connection gets 503 with Retry-After and a
// JSON error naming the reason before its handler (the upgrade) runs, and
// the refusal is counted; once the call ends, connections are admitted
// again.
func TestNoHeadroomRefusesBeforeTheUpgrade(t *testing.T) {
	rtB, fcB := gatewaytest.StartRealtime(t), gatewaytest.StartFullcall(t)
	rp, err := rpc.NewPool(rtB.Addr, 1, rpc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fp, err := rpc.NewPool(fcB.Addr, 1, rpc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rp.Close(); fp.Close() })
	mt := gatewaytest.NewMetrics(t)
	mgr, err := session.NewManager(session.Options{Realtime: rp, Fullcall: fp, MeterProvider: mt.Provider, MaxCalls: 1, Pacing: session.Pacing{Policy: session.PaceOff}})
	if err != nil {
		t.Fatal(err)
	}
	key := tenant.NewKey()
	acme := &tenant.Tenant{ID: "acme", MaxConcurrentCalls: 5, AlertRule: tenant.DefaultAlertRule, APIKeys: []tenant.APIKey{{ID: "a", SHA256: tenant.HashKey(key)}}}
	reg, err := tenant.NewRegistry([]*tenant.Tenant{acme})
	if err != nil {
		t.Fatal(err)
	}
	g := New(Options{}, mgr, reg)
	upgraded := 0
	srv := httptest.NewServer(g.Wrap(Route{Key: tenant.KeyFromRequest}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upgraded++
		w.WriteHeader(http.StatusNoContent) // stands in for the upgrade
	})))
	defer srv.Close()
	get := func() *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL, nil)
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}

	call, err := mgr.Start(context.Background(), session.Start{Tenant: acme, CallID: "live", Format: audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 1},
		Roles: []callv1.ChannelRole{callv1.ChannelRole_CHANNEL_ROLE_CALLER}, Protocol: "test"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", srv.URL, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Error struct{ Code, Message string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "5" || body.Error.Code != ReasonCapacityCalls {
		t.Errorf("at the ceiling: %d, Retry-After %q, code %q; want 503, 5, capacity_calls", resp.StatusCode, resp.Header.Get("Retry-After"), body.Error.Code)
	}
	if upgraded != 0 {
		t.Error("the handler ran for a connection refused for want of headroom")
	}
	if v := mt.Value("calmline.gateway.calls.refused", "tenant", "acme", "reason", ReasonCapacityCalls); v != 1 {
		t.Errorf("capacity refusals counted: %v; want 1", v)
	}
	// A start past the ceiling (a connection admitted earlier) is refused
	// as over quota: adapters answer 4429.
	if _, err := mgr.Start(context.Background(), session.Start{Tenant: acme, CallID: "late", Format: audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 1},
		Roles: []callv1.ChannelRole{callv1.ChannelRole_CHANNEL_ROLE_CALLER}, Protocol: "test"}, nil); !errors.Is(err, session.ErrOverQuota) {
		t.Errorf("a start past the ceiling: %v; want ErrOverQuota (4429)", err)
	}
	if _, err := call.End(context.Background(), fullcallv1.EndReason_END_REASON_HANGUP); err != nil {
		t.Fatal(err)
	}
	if resp := get(); resp.StatusCode != http.StatusNoContent || upgraded != 1 {
		t.Errorf("after the call ended: %d, %d upgrades; want 204, 1", resp.StatusCode, upgraded)
	}
}
