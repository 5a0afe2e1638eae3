package gateway

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/calmline/calmline/gateway/admission"
	"github.com/calmline/calmline/lib/tenant"
)

// dialWS dials path with headers; it returns the connection (nil when
// refused), the status and the refusal's code.
func (f *fixture) dialWS(t *testing.T, path string, h http.Header) (*websocket.Conn, int, string) {
	t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial("ws://"+f.addr+path, h)
	if err == nil {
		t.Cleanup(func() { ws.Close() })
		return ws, http.StatusSwitchingProtocols, ""
	}
	if resp == nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	defer resp.Body.Close()
	var body struct{ Error struct{ Code string } }
	json.NewDecoder(resp.Body).Decode(&body)
	if (resp.StatusCode == 429 || resp.StatusCode == 503) && resp.Header.Get("Retry-After") == "" {
		t.Errorf("%s refused with %d without Retry-After", path, resp.StatusCode)
	}
	return nil, resp.StatusCode, body.Error.Code
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func bearer(key string) http.Header { return http.Header{"Authorization": {"Bearer " + key}} }

func basic(key, origin string) http.Header {
	r, _ := http.NewRequest("GET", "/", nil)
	r.SetBasicAuth("pbx", key)
	if origin != "" {
		r.Header.Set("Origin", origin)
	}
	return r.Header
}

// The hostile test's case: a tenant's key opens connections and never
// starts a call. Past the tenant's quota plus the margin they are refused
// before the upgrade, on every protocol alike, and a closed one frees its
// place.
func TestConnectionsWithoutACallAreBounded(t *testing.T) {
	key := tenant.NewKey()
	f := newFixture(t, tenantsYAML(tenantDef{id: "acme", max: 2, keys: []keyDef{{id: "a", key: key}}}), func(o *Options) {
		o.Admission.TenantMargin = 4
	})
	var held []*websocket.Conn
	for i, c := range []struct {
		path string
		h    http.Header
	}{
		{"/ws/native", bearer(key)},
		{"/ws/twilio", bearer(key)},
		{"/ws/asterisk?call_id=c1&role=caller", basic(key, "")},
		{"/ws/native", bearer(key)},
		{"/ws/twilio", basic(key, "")},
		{"/ws/asterisk?call_id=c2&role=agent", bearer(key)},
	} {
		ws, code, reason := f.dialWS(t, c.path, c.h)
		if ws == nil {
			t.Fatalf("connection %d (%s) refused: %d %s", i, c.path, code, reason)
		}
		held = append(held, ws)
	}
	for _, path := range []string{"/ws/native", "/ws/twilio", "/ws/asterisk?call_id=c3&role=caller", "/ws/audiohook"} {
		if _, code, reason := f.dialWS(t, path, bearer(key)); code != http.StatusTooManyRequests || reason != "too_many_connections" {
			t.Errorf("%s past quota 2 + margin 4: %d %s; want 429 too_many_connections", path, code, reason)
		}
	}
	if v := f.mt.Value("calmline.gateway.calls.refused", "tenant", "acme", "reason", admission.ReasonTenantConns); v != 4 {
		t.Errorf("refusals counted: %v; want 4", v)
	}
	held[0].Close()
	waitFor(t, "the closed connection's place", func() bool { n, _ := f.s.admission.Pending("acme"); return n == 5 })
	if ws, code, reason := f.dialWS(t, "/ws/native", bearer(key)); ws == nil {
		t.Fatalf("after a close: %d %s", code, reason)
	}
	// A call that starts leaves the waiting connections: the tenant's
	// live calls and waiting connections together stay within the bound.
	held[1].Close()
	waitFor(t, "the second closed connection's place", func() bool { n, _ := f.s.admission.Pending("acme"); return n == 5 })
	c := f.start(t, key, "live-1", "")
	waitFor(t, "the started call", func() bool { n, _ := f.s.admission.Pending("acme"); return n == 5 })
	if _, code, _ := f.dialWS(t, "/ws/native", bearer(key)); code != http.StatusTooManyRequests {
		t.Errorf("with 1 live call and 5 waiting: %d; want 429", code)
	}
	c.stop(t)
}

// Connections whose tenant is unknown before the upgrade (a Twilio-style
// key in the start message) are bounded in total.
func TestConnectionsWithoutACallAreBoundedInTotal(t *testing.T) {
	key := tenant.NewKey()
	f := newFixture(t, tenantsYAML(tenantDef{id: "acme", max: 2, keys: []keyDef{{id: "a", key: key}}}), func(o *Options) {
		o.Admission.MaxPending = 3
	})
	for i := range 3 {
		if ws, code, _ := f.dialWS(t, "/ws/twilio", nil); ws == nil {
			t.Fatalf("anonymous connection %d refused: %d", i, code)
		}
	}
	if _, code, reason := f.dialWS(t, "/ws/twilio", nil); code != http.StatusServiceUnavailable || reason != "busy" {
		t.Errorf("past the total: %d %s; want 503 busy", code, reason)
	}
	if _, code, _ := f.dialWS(t, "/ws/native", bearer(key)); code != http.StatusServiceUnavailable {
		t.Errorf("a tenant's connection past the total: %d; want 503", code)
	}
}

// Handshakes are rate-limited per source address on every path.
func TestHandshakesAreRateLimited(t *testing.T) {
	key := tenant.NewKey()
	now := time.Unix(1_800_000_000, 0)
	f := newFixture(t, tenantsYAML(tenantDef{id: "acme", max: 10, keys: []keyDef{{id: "a", key: key}}}), func(o *Options) {
		o.Admission.HandshakeRate, o.Admission.HandshakeBurst = 1, 3
		o.Admission.Now = func() time.Time { return now } // no refill during the test
	})
	for _, path := range []string{"/ws/native", "/ws/audiohook", "/ws/twilio"} {
		if _, code, _ := f.dialWS(t, path, http.Header{"Authorization": {"Bearer clk_unknown"}}); code != http.StatusUnauthorized {
			t.Errorf("%s within the burst: %d; want the protocol's own 401", path, code)
		}
	}
	for _, path := range []string{"/ws/native", "/ws/audiohook", "/ws/twilio", "/ws/asterisk"} {
		if _, code, reason := f.dialWS(t, path, bearer(key)); code != http.StatusTooManyRequests || reason != "rate_limited" {
			t.Errorf("%s past the burst: %d %s; want 429 rate_limited", path, code, reason)
		}
	}
	if v := f.mt.Value("calmline.gateway.calls.refused", "tenant", "acme", "reason", admission.ReasonRateLimited); v != 4 {
		t.Errorf("rate-limited handshakes counted: %v; want 4", v)
	}
}

// A browser sends Basic credentials by itself: a foreign Origin is refused
// on the paths that take them.
func TestBasicAuthFromAForeignOriginIsRefused(t *testing.T) {
	key := tenant.NewKey()
	f := newFixture(t, tenantsYAML(tenantDef{id: "acme", max: 10, keys: []keyDef{{id: "a", key: key}}}), func(o *Options) {
		o.Admission.AllowedOrigins = []string{"https://wall.acme.example"}
	})
	for _, path := range []string{"/ws/twilio", "/ws/asterisk?call_id=o1&role=caller"} {
		if _, code, reason := f.dialWS(t, path, basic(key, "https://evil.example")); code != http.StatusForbidden || reason != "forbidden_origin" {
			t.Errorf("%s from a foreign origin: %d %s; want 403 forbidden_origin", path, code, reason)
		}
		if ws, code, _ := f.dialWS(t, path, basic(key, "https://wall.acme.example")); ws == nil {
			t.Errorf("%s from an allowed origin: %d", path, code)
		}
		if ws, code, _ := f.dialWS(t, path, basic(key, "")); ws == nil {
			t.Errorf("%s without an Origin: %d", path, code)
		}
	}
}

// The hostile test's numbers, scaled down: one tenant's key opens 300
// connections and starts nothing. Only quota + margin are upgraded.
func TestAFloodOfIdleConnectionsIsHeldToTheTenantsBound(t *testing.T) {
	key := tenant.NewKey()
	f := newFixture(t, tenantsYAML(tenantDef{id: "acme", max: 5, keys: []keyDef{{id: "a", key: key}}}), nil)
	upgraded, refused := 0, 0
	for range 300 {
		ws, code, _ := f.dialWS(t, "/ws/native", bearer(key))
		switch {
		case ws != nil:
			upgraded++
		case code == http.StatusTooManyRequests:
			refused++
		default:
			t.Fatalf("refused with %d", code)
		}
	}
	if upgraded != 15 || refused != 285 {
		t.Errorf("%d upgraded, %d refused; want 15 (quota 5 + margin 10) and 285", upgraded, refused)
	}
}
