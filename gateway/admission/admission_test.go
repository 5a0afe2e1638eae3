package admission

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calmline/calmline/lib/tenant"
)

type fakeCalls struct {
	mu      sync.Mutex
	live    map[string]int
	refused map[string]int
}

func (f *fakeCalls) LiveCalls(id string) int { f.mu.Lock(); defer f.mu.Unlock(); return f.live[id] }
func (f *fakeCalls) Refused(_ context.Context, _, _, reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refused[reason]++
}

// clock is a hand-driven clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newGuard(t *testing.T, o Options) (*Guard, *fakeCalls, *clock, string) {
	t.Helper()
	key := tenant.NewKey()
	reg, err := tenant.NewRegistry([]*tenant.Tenant{{ID: "acme", MaxConcurrentCalls: 3, APIKeys: []tenant.APIKey{{ID: "a", SHA256: tenant.HashKey(key)}}}})
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	o.Now = c.now
	fc := &fakeCalls{live: map[string]int{}, refused: map[string]int{}}
	return New(o, fc, reg), fc, c, key
}

func request(addr, key, origin string, basic bool) *http.Request {
	r := httptest.NewRequest("GET", "/ws/x", nil)
	r.RemoteAddr = addr
	if key != "" {
		if basic {
			r.SetBasicAuth("any", key)
		} else {
			r.Header.Set("Authorization", "Bearer "+key)
		}
	}
	if origin != "" {
		r.Header.Set("Origin", origin)
	}
	return r
}

func keyOf(r *http.Request) string {
	if k := tenant.KeyFromRequest(r); k != "" {
		return k
	}
	_, pw, _ := r.BasicAuth()
	return pw
}

func TestHandshakeRatePerAddress(t *testing.T) {
	g, _, c, _ := newGuard(t, Options{HandshakeRate: 2, HandshakeBurst: 3})
	rt := Route{}
	for i := range 3 {
		tk, err := g.admit(request("10.0.0.1:1000", "", "", false), rt)
		if err != nil {
			t.Fatalf("handshake %d within the burst refused: %v", i, err)
		}
		tk.release()
	}
	_, err := g.admit(request("10.0.0.1:1001", "", "", false), rt)
	if err == nil || err.Status != http.StatusTooManyRequests || err.Reason != ReasonRateLimited {
		t.Fatalf("handshake past the burst: %v; want 429 rate_limited", err)
	}
	if err.RetryAfter <= 0 || err.RetryAfter > time.Second {
		t.Errorf("Retry-After %v; want (0, 1s] at 2 a second", err.RetryAfter)
	}
	// Another address has its own bucket.
	if _, err := g.admit(request("10.0.0.2:1000", "", "", false), rt); err != nil {
		t.Errorf("another address refused: %v", err)
	}
	// Half a second refills one token at 2 a second.
	c.t = c.t.Add(500 * time.Millisecond)
	if _, err := g.admit(request("10.0.0.1:1002", "", "", false), rt); err != nil {
		t.Errorf("after the refill: %v", err)
	}
	if _, err := g.admit(request("10.0.0.1:1003", "", "", false), rt); err == nil {
		t.Error("a second handshake after one token's refill was admitted")
	}
}

func TestAddressMapIsBoundedAndForgetsTheLeastRecent(t *testing.T) {
	g, _, _, _ := newGuard(t, Options{HandshakeRate: 1, HandshakeBurst: 1, MaxAddresses: 3, MaxPending: 100})
	rt := Route{}
	admit := func(addr string) *Error { _, err := g.admit(request(addr+":1", "", "", false), rt); return err }
	for _, a := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"} {
		if err := admit(a); err != nil {
			t.Fatal(err)
		}
	}
	if err := admit("10.0.0.1"); err == nil {
		t.Fatal("10.0.0.1's second handshake admitted; its bucket is empty")
	}
	// 10.0.0.4 evicts the least recently seen, 10.0.0.2 (10.0.0.1 was
	// just seen), which then starts afresh.
	if err := admit("10.0.0.4"); err != nil {
		t.Fatal(err)
	}
	if n := g.Addresses(); n != 3 {
		t.Errorf("%d addresses remembered; want 3", n)
	}
	if err := admit("10.0.0.1"); err == nil {
		t.Error("10.0.0.1 was forgotten though it was the most recent")
	}
	if err := admit("10.0.0.2"); err != nil {
		t.Errorf("10.0.0.2, forgotten, refused: %v", err)
	}
}

func TestConnectionsWithoutACallAreBoundedPerTenantAndInTotal(t *testing.T) {
	g, calls, _, key := newGuard(t, Options{HandshakeRate: -1, TenantMargin: 2, MaxPending: 8})
	rt := Route{Key: keyOf}
	var tickets []*Ticket
	// Quota 3 + margin 2: five connections without a call.
	for i := range 5 {
		tk, err := g.admit(request("10.0.0.1:1", key, "", false), rt)
		if err != nil {
			t.Fatalf("connection %d refused: %v", i, err)
		}
		tickets = append(tickets, tk)
	}
	_, err := g.admit(request("10.0.0.1:1", key, "", false), rt)
	if err == nil || err.Status != http.StatusTooManyRequests || err.Reason != ReasonTenantConns || err.RetryAfter <= 0 {
		t.Fatalf("sixth connection: %v; want 429 too_many_connections with Retry-After", err)
	}
	// A call starts on one: it now counts as a live call, not as waiting;
	// the tenant is still full.
	tickets[0].Started()
	tickets[0].Started() // idempotent
	calls.live["acme"] = 1
	if n, total := g.Pending("acme"); n != 4 || total != 4 {
		t.Errorf("pending after a start: %d of %d; want 4 of 4", n, total)
	}
	if _, err := g.admit(request("10.0.0.1:1", key, "", false), rt); err == nil {
		t.Error("admitted past quota + margin with one live call")
	}
	// One closes: room for one more.
	tickets[1].release()
	tickets[1].release()
	if _, err := g.admit(request("10.0.0.1:1", key, "", false), rt); err != nil {
		t.Errorf("after a close: %v", err)
	}
	// Connections whose tenant is not known before the upgrade count in
	// the total only: 4 waiting, 8 at most.
	for i := range 4 {
		if _, err := g.admit(request("10.0.0.2:1", "", "", false), rt); err != nil {
			t.Fatalf("anonymous connection %d refused: %v", i, err)
		}
	}
	_, err = g.admit(request("10.0.0.2:1", "", "", false), rt)
	if err == nil || err.Status != http.StatusServiceUnavailable || err.Reason != ReasonPending {
		t.Errorf("past the total: %v; want 503 too_many_pending", err)
	}
}

func TestBasicAuthFromAForeignOriginIsRefused(t *testing.T) {
	g, _, _, key := newGuard(t, Options{HandshakeRate: -1, AllowedOrigins: []string{"https://console.example.com/"}})
	rt := Route{Key: keyOf, CheckOrigin: true}
	for _, c := range []struct {
		name   string
		origin string
		basic  bool
		ok     bool
	}{
		{"no origin: not a browser", "", true, true},
		{"allowed origin", "https://Console.example.com", true, true},
		{"foreign origin with Basic", "https://evil.example", true, false},
		{"foreign origin with a bearer header (a page cannot set it)", "https://evil.example", false, true},
	} {
		_, err := g.admit(request("10.0.0.1:1", key, c.origin, c.basic), rt)
		if (err == nil) != c.ok {
			t.Errorf("%s: %v; want admitted %v", c.name, err, c.ok)
		}
		if err != nil && (err.Status != http.StatusForbidden || err.Reason != ReasonOrigin) {
			t.Errorf("%s: %d %s; want 403 %s", c.name, err.Status, err.Reason, ReasonOrigin)
		}
	}
}

func TestWrapAnswersBeforeTheHandlerAndReleasesUnhijacked(t *testing.T) {
	g, calls, _, key := newGuard(t, Options{HandshakeRate: 1, HandshakeBurst: 1})
	var saw *Ticket
	h := g.Wrap(Route{Key: keyOf}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		saw = FromContext(r.Context())
		w.WriteHeader(http.StatusUnauthorized) // refused by the protocol
	}))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, request("10.0.0.1:1", key, "", false))
	if saw == nil || w.Code != http.StatusUnauthorized {
		t.Fatalf("first request: ticket %v, status %d", saw, w.Code)
	}
	if n, total := g.Pending("acme"); n != 0 || total != 0 {
		t.Errorf("a request the handler refused still counts: %d, %d", n, total)
	}
	w = httptest.NewRecorder()
	h.ServeHTTP(w, request("10.0.0.1:1", key, "", false))
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "1" {
		t.Errorf("rate-limited: %d Retry-After %q; want 429 and 1", w.Code, w.Header().Get("Retry-After"))
	}
	if calls.refused[ReasonRateLimited] != 1 {
		t.Errorf("refusals counted: %v", calls.refused)
	}
}

// FuzzAdmit feeds the Guard any source address, Origin and Authorization:
// it never panics, a refusal always has a status, code and reason, and an
// admitted connection's ticket is released exactly once.
func FuzzAdmit(f *testing.F) {
	f.Add("10.0.0.1:1", "https://evil.example", "Basic cGJ4OmtleQ==", "")
	f.Add("[::1]:443", "", "Bearer clk_x", "203.0.113.1, ::1")
	f.Add("not an address", "null", "Basic !!!", ",,,")
	f.Fuzz(func(t *testing.T, addr, origin, auth, xff string) {
		g, _, _, _ := newGuard(t, Options{HandshakeRate: 1, HandshakeBurst: 2, MaxAddresses: 2, MaxPending: 1, AllowedOrigins: []string{"https://ok.example"},
			TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}})
		r := httptest.NewRequest("GET", "/ws/x", nil)
		r.RemoteAddr = addr
		r.Header.Set("Origin", origin)
		r.Header.Set("Authorization", auth)
		r.Header.Set("X-Forwarded-For", xff)
		if src := g.source(r); src != "" && !strings.Contains(addr, src) && !strings.Contains(xff, src) {
			t.Fatalf("source %q is neither in the address %q nor in X-Forwarded-For %q", src, addr, xff)
		}
		for range 3 {
			tk, err := g.admit(r, Route{Key: keyOf, CheckOrigin: true})
			if err != nil {
				if err.Status == 0 || err.Code == "" || err.Reason == "" || err.Msg == "" {
					t.Fatalf("refusal without status, code, reason or message: %+v", err)
				}
				continue
			}
			tk.release()
			tk.release()
			if _, total := g.Pending(""); total != 0 {
				t.Fatalf("%d pending after release", total)
			}
		}
	})
}

// Behind a trusted proxy the client address in X-Forwarded-For counts,
// not the proxy's; from anyone else the header is ignored.
func TestTrustedProxiesPassTheClientAddressOn(t *testing.T) {
	g, _, _, _ := newGuard(t, Options{HandshakeRate: 1, HandshakeBurst: 1, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	req := func(remote, xff string) *http.Request {
		r := request(remote, "", "", false)
		if xff != "" {
			r.Header.Set("X-Forwarded-For", xff)
		}
		return r
	}
	for _, c := range []struct {
		remote, xff, want string
	}{
		{"10.0.0.1:1", "203.0.113.7", "203.0.113.7"},
		{"10.0.0.1:1", "198.51.100.1, 203.0.113.8, 10.1.1.1", "203.0.113.8"}, // a client-sent entry further left is not believed
		{"10.0.0.1:1", "", "10.0.0.1"},
		{"10.0.0.1:1", "garbage, 10.2.2.2", "10.2.2.2"},
		{"192.0.2.1:1", "203.0.113.9", "192.0.2.1"}, // not a trusted proxy: its header is ignored
	} {
		if got := g.source(req(c.remote, c.xff)); got != c.want {
			t.Errorf("from %s with X-Forwarded-For %q: source %s; want %s", c.remote, c.xff, got, c.want)
		}
	}
	// Two clients behind one proxy have a bucket each.
	if _, err := g.admit(req("10.0.0.1:1", "203.0.113.20"), Route{}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.admit(req("10.0.0.1:1", "203.0.113.21"), Route{}); err != nil {
		t.Errorf("a second client behind the proxy refused: %v", err)
	}
	if _, err := g.admit(req("10.0.0.1:1", "203.0.113.20"), Route{}); err == nil {
		t.Error("the first client's second handshake admitted past its burst")
	}
}
