package gateway

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/calmline/calmline/gateway/native"
	"github.com/calmline/calmline/gateway/session"
	"github.com/calmline/calmline/lib/tenant"
)

// TestKeyRotation disables a key by reloading the tenants file while a call
// made with it is live: the call goes on to its report, new connections
// with the old key are refused, the new key works.
func TestKeyRotation(t *testing.T) {
	oldKey, newKey := tenant.NewKey(), tenant.NewKey()
	acme := func(oldDisabled bool) string {
		return tenantsYAML(tenantDef{id: "acme", max: 10, keys: []keyDef{
			{id: "acme-2026-05", key: oldKey, disabled: oldDisabled},
			{id: "acme-2026-11", key: newKey},
		}})
	}
	f := newFixture(t, acme(false), nil)
	live := f.start(t, oldKey, "rotating", "a1")
	live.audio(t, 50)

	f.reload(t, acme(true))

	if code, reason := f.dialStatus(t, oldKey); code != http.StatusUnauthorized || reason != "unauthenticated" {
		t.Errorf("new connection with the disabled key: %d %s; want 401 unauthenticated", code, reason)
	}
	fresh := f.start(t, newKey, "fresh", "a2")
	live.audio(t, 50) // the live call is not cut
	stopped, code := live.stop(t)
	if code != websocket.CloseNormalClosure || stopped["type"] != "stopped" {
		t.Fatalf("live call after the rotation: %v, close %d; want stopped and 1000", stopped, code)
	}
	if rep := stopped["report"].(map[string]any); rep["audio_bytes"] != float64(100*320) {
		t.Errorf("report of the call that outlived its key: %v; want all %d bytes", rep, 100*320)
	}
	fresh.stop(t)
}

// TestReloadedLimits changes a tenant's concurrent-call limit while it has
// live calls: a raised limit admits more calls at once; a lowered one
// never cuts live calls, only refuses new ones.
func TestReloadedLimits(t *testing.T) {
	key := tenant.NewKey()
	limit := func(n int) string {
		return tenantsYAML(tenantDef{id: "acme", max: n, keys: []keyDef{{id: "k", key: key}}})
	}
	f := newFixture(t, limit(1), nil)
	a := f.start(t, key, "a", "")
	if code, reason := f.dialStatus(t, key); code != http.StatusTooManyRequests || reason != "over_quota" {
		t.Fatalf("second call at a limit of one: %d %s; want 429 over_quota", code, reason)
	}
	f.reload(t, limit(2))
	b := f.start(t, key, "b", "")
	f.reload(t, limit(1))
	if code, _ := f.dialStatus(t, key); code != http.StatusTooManyRequests {
		t.Errorf("third call after the limit went back to one: %d; want 429", code)
	}
	for _, c := range []*call{a, b} {
		c.audio(t, 10)
		if _, code := c.stop(t); code != websocket.CloseNormalClosure {
			t.Errorf("a live call ended with %d after the limit was lowered; want 1000", code)
		}
	}
	if v := f.mt.Value("calmline.gateway.calls.refused", "tenant", "acme", "reason", "quota"); v != 2 {
		t.Errorf("quota refusals counted for acme: %v; want 2", v)
	}
}

// TestRefusalsCountedPerTenantAndReason makes each kind of refusal once.
func TestRefusalsCountedPerTenantAndReason(t *testing.T) {
	acme, tiny, care := tenant.NewKey(), tenant.NewKey(), tenant.NewKey()
	f := newFixture(t, tenantsYAML(
		tenantDef{id: "acme", max: 10, keys: []keyDef{{id: "a", key: acme}, {id: "care", key: care, role: "care"}}},
		tenantDef{id: "tiny", max: 1, keys: []keyDef{{id: "t", key: tiny}}},
	), func(o *Options) {
		o.Session.Pacing = session.Pacing{Policy: session.PaceRefuse, MaxLead: 500 * time.Millisecond}
	})
	f.dialStatus(t, "clk_unknown")
	if code, reason := f.dialStatus(t, care); code != http.StatusForbidden || reason != "forbidden" {
		t.Errorf("streaming with a care-team key: %d %s; want 403 forbidden", code, reason)
	}
	live := f.start(t, tiny, "x", "")
	f.dialStatus(t, tiny)
	dup, m := f.tryStart(t, acme, "dup", "")
	dup2, m2 := f.tryStart(t, acme, "dup", "")
	if m["type"] != "started" || m2["close"] != native.CloseCallLive {
		t.Errorf("same call id twice: %v then %v; want started then close %d", m, m2, native.CloseCallLive)
	}
	_ = dup2
	// A client 2 s ahead of the clock with a 0.5 s lead: closed with 4420.
	fast := f.start(t, acme, "fast", "")
	frame := make([]byte, 320)
	for range 100 {
		if fast.ws.WriteMessage(websocket.BinaryMessage, frame) != nil {
			break // the gateway closed the connection meanwhile
		}
	}
	if _, code := fast.finish(t); code != native.CloseTooFast {
		t.Errorf("too fast a client closed with %d; want %d", code, native.CloseTooFast)
	}
	live.stop(t)
	dup.stop(t)
	for _, c := range []struct{ tenant, reason string }{
		{"", "unauthenticated"},
		{"acme", "forbidden"},
		{"tiny", "quota"},
		{"acme", "duplicate_call"},
		{"acme", "close_4420"},
	} {
		if v := f.mt.Value("calmline.gateway.calls.refused", "tenant", c.tenant, "reason", c.reason); v != 1 {
			t.Errorf("refusals counted for tenant %q, reason %s: %v; want 1", c.tenant, c.reason, v)
		}
	}
	if v := f.mt.Value("calmline.gateway.calls.too_fast", "tenant", "acme"); v != 1 {
		t.Errorf("too-fast calls counted: %v; want 1", v)
	}
}

// TestLiveFeedIsTenantScoped checks that a key reaches only its tenant's
// calls on the live feed and on the native protocol, even with the same
// call id, and that a late subscriber gets a snapshot of live calls.
func TestLiveFeedIsTenantScoped(t *testing.T) {
	acme, globex := tenant.NewKey(), tenant.NewKey()
	f := newFixture(t, tenantsYAML(
		tenantDef{id: "acme", max: 10, keys: []keyDef{{id: "a", key: acme}}},
		tenantDef{id: "globex", max: 10, keys: []keyDef{{id: "g", key: globex}}},
	), nil)
	if _, code := f.subscribe(t, "clk_unknown", ""); code != http.StatusUnauthorized {
		t.Errorf("feed with an unknown key: %d; want 401", code)
	}
	acmeFeed, _ := f.subscribe(t, acme, "")
	globexFeed, _ := f.subscribe(t, globex, "")

	a := f.start(t, acme, "same-id", "agent-a")
	a.audio(t, 100)
	a.stop(t)
	got := acmeFeed.until(t, "ended", "same-id")
	var types []string
	for _, ev := range got {
		types = append(types, ev.typ)
		if ev.data["agent_id"] != "agent-a" {
			t.Errorf("acme's feed: event %v", ev.data)
		}
	}
	if s := strings.Join(types, ","); s != "started,score,score,ended" {
		t.Errorf("acme's feed: %s; want started, two scores, ended", s)
	}
	ended := got[len(got)-1].data
	if ended["reason"] != "hangup" || ended["report_url"] != "/api/v1/reports/same-id" || ended["duration_s"] != 2.0 {
		t.Errorf("ended event %v", ended)
	}

	// globex's call with the same id, live while a late subscriber joins.
	g := f.start(t, globex, "same-id", "agent-g")
	late, _ := f.subscribe(t, globex, "")
	if ev := late.until(t, "started", "same-id"); len(ev) != 1 || ev[0].data["agent_id"] != "agent-g" {
		t.Errorf("late subscriber's snapshot: %v", ev)
	}
	g.audio(t, 50)
	g.stop(t)
	// Events reach each subscriber in order: everything globex's feed
	// received before its own call's end is globex's.
	for _, ev := range globexFeed.until(t, "ended", "same-id") {
		if ev.data["agent_id"] != "agent-g" {
			t.Errorf("globex's feed carried another tenant's event: %v", ev.data)
		}
	}
	late.until(t, "ended", "same-id")
}

// TestLiveFeedPrivacy checks who sees agent-side scores when the tenant's
// agent scoring is private: not a general key, yes the care team, yes the
// agent's own desktop key, which sees only that agent's calls.
func TestLiveFeedPrivacy(t *testing.T) {
	general, care, desk42, desk7 := tenant.NewKey(), tenant.NewKey(), tenant.NewKey(), tenant.NewKey()
	f := newFixture(t, tenantsYAML(tenantDef{id: "acme", max: 10, scoring: "private", keys: []keyDef{
		{id: "pbx", key: general},
		{id: "care", key: care, role: "care"},
		{id: "desk-42", key: desk42, role: "agent", agent: "agent-42"},
		{id: "desk-7", key: desk7, role: "agent", agent: "agent-7"},
	}}), nil)
	stress := 61.5
	f.rt.Configure(func() { f.rt.AgentStress = &stress })
	if _, code := f.subscribe(t, desk42, "?agent_id=agent-7"); code != http.StatusForbidden {
		t.Errorf("agent key asking for another agent's calls: %d; want 403", code)
	}
	feeds := map[string]*feedClient{}
	for name, key := range map[string]string{"general": general, "care": care, "desk42": desk42, "desk7": desk7} {
		feeds[name], _ = f.subscribe(t, key, "")
	}
	c := f.start(t, general, "private-call", "agent-42")
	c.audio(t, 50)
	stopped, _ := c.stop(t)
	if rep := stopped["report"].(map[string]any); rep["agent_stress_peak"] != nil {
		t.Errorf("the PBX's stopped message carries agent_stress_peak in private mode: %v", rep)
	}
	scoreOf := func(name string) map[string]any {
		for _, ev := range feeds[name].until(t, "ended", "private-call") {
			if ev.typ == "score" {
				return ev.data
			}
		}
		t.Fatalf("%s: no score", name)
		return nil
	}
	if s := scoreOf("general"); s["agent_stress"] != nil || !strings.HasPrefix(s["abstain"].(map[string]any)["agent_stress"].(string), "private") {
		t.Errorf("general key's score in private mode: %v; want agent_stress withheld as private", s)
	}
	for _, name := range []string{"care", "desk42"} {
		if s := scoreOf(name); s["agent_stress"] != stress {
			t.Errorf("%s's score: %v; want agent_stress %v", name, s, stress)
		}
	}
	// agent-7's desktop saw nothing of agent-42's call: its first event is
	// its own call's.
	own := f.start(t, general, "call-7", "agent-7")
	if evs := feeds["desk7"].until(t, "started", "call-7"); len(evs) != 1 {
		t.Errorf("agent-7's desktop received another agent's events: %v", evs)
	}
	own.stop(t)
}

// TestAdminDrain drains through POST /admin/drain: it needs the token; then
// readiness fails and new calls are refused, a call that stops finishes
// normally, and the one that lingers is closed with 1001 after the drain
// timeout with every byte it sent in fullcall's report.
func TestAdminDrain(t *testing.T) {
	key := tenant.NewKey()
	const token = "admin-token-0123456789"
	f := newFixture(t, tenantsYAML(tenantDef{id: "acme", keys: []keyDef{{id: "k", key: key}}}), func(o *Options) {
		o.AdminToken = token
		o.DrainTimeout = time.Second
	})
	finishing := f.start(t, key, "finishing", "")
	lingering := f.start(t, key, "lingering", "")
	lingering.audio(t, 77) // 1.54 s: 15 whole chunks and a partial one

	post := func(tok string) int {
		req, _ := http.NewRequest("POST", "http://"+f.addr+"/admin/drain", nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tok := range []string{"", "wrong-token-0123456789", key} {
		if code := post(tok); code != http.StatusUnauthorized {
			t.Errorf("POST /admin/drain with token %q: %d; want 401", tok, code)
		}
	}
	if readyz(f.addr) != http.StatusOK {
		t.Fatal("not ready before the drain")
	}
	if code := post(token); code != http.StatusAccepted {
		t.Fatalf("POST /admin/drain: %d; want 202", code)
	}
	if code := readyz(f.addr); code != http.StatusServiceUnavailable {
		t.Errorf("readyz during the drain: %d; want 503", code)
	}
	if code, reason := f.dialStatus(t, key); code != http.StatusServiceUnavailable || reason != "draining" {
		t.Errorf("new call during the drain: %d %s; want 503 draining", code, reason)
	}
	finishing.audio(t, 10)
	if m, code := finishing.stop(t); code != websocket.CloseNormalClosure || m["type"] != "stopped" {
		t.Errorf("a call stopping during the drain: %v, close %d; want stopped, 1000", m, code)
	}
	if _, code := lingering.finish(t); code != websocket.CloseGoingAway {
		t.Errorf("lingering call closed with %d; want 1001", code)
	}
	// Shutdown waits for the drain's last reports.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f.s.Shutdown(ctx)
	r := f.fc.Report("lingering")
	// (Chunks queued behind a busy sender go out merged: the count of
	// chunks is not fixed, their sequence is.)
	if r == nil || r.AudioBytes != 77*320 || r.Chunks != uint64(len(f.fc.Seqs("lingering"))) || r.EndReason.String() != "END_REASON_DRAIN" {
		t.Fatalf("report of the drained call: %v; want %d bytes in the %d chunks received, ended by the drain", r, 77*320, len(f.fc.Seqs("lingering")))
	}
	for i, s := range f.fc.Seqs("lingering") {
		if s != uint64(i+1) {
			t.Fatalf("fullcall's chunks %v; want 1..%d once each", f.fc.Seqs("lingering"), r.Chunks)
		}
	}
}

func TestNoAdminAPIWithoutAToken(t *testing.T) {
	f := newFixture(t, tenantsYAML(tenantDef{id: "acme"}), nil)
	resp, err := http.Post("http://"+f.addr+"/admin/drain", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /admin/drain without a configured token: %d; want no such endpoint", resp.StatusCode)
	}
}
