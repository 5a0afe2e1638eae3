package console

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calmline/calmline/lib/tenant"
	"github.com/calmline/calmline/lib/tlstest"
)

func TestAccessFor(t *testing.T) {
	all := Access{Escalations: true, Act: true, Deliveries: true, Audit: true, Care: true}
	with := func(a Access, f func(*Access)) Access { f(&a); return a }
	cases := []struct {
		scoring, role, agent string
		want                 Access
		ok                   bool
	}{
		{"on", "", "", with(all, func(a *Access) { a.AgentScores = true }), true},
		{"private", "", "", all, true},
		{"off", "", "", all, true},
		{"on", "supervisor", "", with(all, func(a *Access) { a.Role, a.AgentScores = "supervisor", true }), true},
		{"private", "supervisor", "", with(all, func(a *Access) { a.Role = "supervisor" }), true},
		{"private", "care", "", Access{Role: "care", AgentScores: true, Escalations: true, Care: true}, true},
		{"off", "care", "", Access{Role: "care", Escalations: true, Care: true}, true},
		{"private", "agent", "a1", Access{Role: "agent", AgentID: "a1", AgentScores: true, Care: true}, true},
		{"off", "agent", "a1", Access{Role: "agent", AgentID: "a1", Care: true}, true},
		{"on", "agent", "", Access{}, false},
		{"on", "pbx-admin", "", Access{}, false},
	}
	for _, c := range cases {
		tn := &tenant.Tenant{ID: "acme", AgentScoring: c.scoring}
		got, ok := AccessFor(tn, &tenant.APIKey{ID: "k", Role: c.role, AgentID: c.agent})
		if ok {
			c.want.TenantID, c.want.KeyID = "acme", "k"
		}
		if ok != c.ok || got != c.want {
			t.Errorf("AccessFor(%s, role %q) = %+v, %v; want %+v, %v", c.scoring, c.role, got, ok, c.want, c.ok)
		}
	}
}

func TestSessionsExpireAndAreBounded(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := newSessions(time.Hour, 2, func() time.Time { return now })
	tok, se, err := s.create("key-1")
	if err != nil || se.key != "key-1" || se.csrf == "" || tok == "" {
		t.Fatalf("create: %v %+v", err, se)
	}
	if got, ok := s.get(tok); !ok || got != se {
		t.Fatal("a fresh session is not found")
	}
	if _, ok := s.get(tok + "x"); ok {
		t.Fatal("a wrong token finds a session")
	}
	s.create("key-2")
	if _, _, err := s.create("key-3"); err != errTooManySessions {
		t.Fatalf("third session over a bound of 2: %v; want errTooManySessions", err)
	}
	now = now.Add(time.Hour)
	if _, ok := s.get(tok); ok {
		t.Fatal("a session outlives its TTL")
	}
	if _, _, err := s.create("key-3"); err != nil {
		t.Fatalf("expired sessions still count against the bound: %v", err)
	}
	c := s.cookie("tok", true)
	if !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode || c.MaxAge != 3600 {
		t.Errorf("cookie %+v; want HttpOnly, Secure, SameSite=Strict, MaxAge 3600", c)
	}
}

func TestSSEReader(t *testing.T) {
	in := ": calmline live feed v1\n\nevent: started\ndata: {\"a\":1}\n\nevent: score\ndata: x\ndata: y\n\n: ping\n\n"
	r := newSSEReader(strings.NewReader(in))
	var got []string
	for {
		ev, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s|%s|%s", ev.Type, ev.Data, ev.Comment))
	}
	want := []string{"||calmline live feed v1", `started|{"a":1}|`, "score|x\ny|", "||ping"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q; want %q", got, want)
	}
	if _, err := newSSEReader(strings.NewReader("bogus: 1\n\n")).Next(); err == nil || !strings.Contains(err.Error(), "unknown field") {
		t.Errorf("unknown field: %v", err)
	}
	if _, err := newSSEReader(strings.NewReader("data: " + strings.Repeat("x", maxSSELine) + "\n\n")).Next(); err != errSSELine {
		t.Errorf("overlong line: %v; want errSSELine", err)
	}
}

func FuzzSSEReader(f *testing.F) {
	f.Add([]byte("event: score\ndata: {}\n\n"))
	f.Add([]byte(": c\n\ndata\n\nevent:\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := newSSEReader(strings.NewReader(string(b)))
		for range 1000 {
			ev, err := r.Next()
			if err != nil {
				return
			}
			if !ev.IsComment && ev.Type == "" {
				t.Fatalf("an event without a type from %q", b)
			}
		}
	})
}

func TestGatewayTargets(t *testing.T) {
	if _, err := parseGateways([]string{"http://u:p@h:1"}, nil); err == nil || strings.Contains(err.Error(), "p@") {
		t.Errorf("a URL with credentials: %v; want an error without them", err)
	}
	for _, bad := range [][]string{{}, {"nohost"}, {"dns:///x"}, {"dns:///a:1", "b:2"}, {"ftp://h:1"}} {
		if _, err := parseGateways(bad, nil); err == nil {
			t.Errorf("parseGateways(%q) accepted", bad)
		}
	}
	tg, err := parseGateways([]string{"dns:///gw.local:8080"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	answer := []string{"10.0.0.2", "10.0.0.1"}
	tg.lookup = func(context.Context, string) ([]string, error) { return answer, nil }
	names := func() (out []string) {
		for _, x := range tg.current() {
			out = append(out, x.base)
		}
		return out
	}
	if got := names(); !slices.Equal(got, []string{"http://10.0.0.1:8080", "http://10.0.0.2:8080"}) {
		t.Errorf("resolved %q", got)
	}
	tg.lookup = func(context.Context, string) ([]string, error) { return nil, fmt.Errorf("dns down") }
	if got := names(); len(got) != 2 {
		t.Errorf("a failed lookup forgot the gateways: %q", got)
	}
}

// fakeGateway serves a scripted live feed: it checks the bearer key and
// sends what the test writes to its channel.
type fakeGateway struct {
	srv    *httptest.Server
	events chan string
	keys   chan string
}

func newFakeGateway(t *testing.T) *fakeGateway {
	g := &fakeGateway{events: make(chan string, 100), keys: make(chan string, 10)}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/live" {
			http.NotFound(w, r)
			return
		}
		g.keys <- r.Header.Get("Authorization")
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, ": calmline live feed v1\n\n")
		w.(http.Flusher).Flush()
		for {
			select {
			case ev := <-g.events:
				io.WriteString(w, ev)
				w.(http.Flusher).Flush()
			case <-r.Context().Done():
				return
			}
		}
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *fakeGateway) send(typ string, v any) {
	b, _ := json.Marshal(v)
	g.events <- "event: " + typ + "\ndata: " + string(b) + "\n\n"
}

// fakeReports answers fullcall's report of call "c-1" with agent_stress in
// it, as fullcall does for a private-mode tenant.
func fakeReports(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/v1/reports/c-1":
			io.WriteString(w, `{"call_id":"c-1","agent_id":"a1","started_at":"2026-12-07T10:00:00Z","duration_s":3,"format":{"sample_rate_hz":8000},
"timeline":[{"second":0,"caller_pressure":10,"agent_stress":55},{"second":1,"agent_stress":66},{"second":2,"caller_pressure":80,"agent_stress":77}],
"agent_stress":{"scored":true,"peak":77},"caller_pressure":{"scored":true,"peak":80,"threshold":70},
"alerts":[{"alert_id":"x","state":"ALERT_STATE_FIRING","score":"SCORE_KIND_AGENT_STRESS","value":77,"second":2}],
"gaps":[{"start_sample":"8000","samples":"4000","reason":"GAP_REASON_CLIENT_LOSS"}],"end_reason":"END_REASON_HANGUP"}`)
		case "/api/v1/escalations":
			io.WriteString(w, `{"escalations":[]}`)
		default:
			w.WriteHeader(404)
			io.WriteString(w, `{"error":{"code":"not_found","message":"no"}}`)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

type consoleUnderTest struct {
	s    *Server
	url  string
	keys map[string]string
}

func startConsole(t *testing.T, scoring string, gw *fakeGateway, backend *httptest.Server, opts ...func(*Options)) *consoleUnderTest {
	t.Helper()
	keys := map[string]string{"sup": tenant.NewKey(), "care": tenant.NewKey(), "a1": tenant.NewKey()}
	ts, err := tenant.Parse([]byte(fmt.Sprintf(`tenants:
  - id: acme
    agent_scoring: %q
    api_keys:
      - {id: sup, sha256: %s}
      - {id: care, sha256: %s, role: care}
      - {id: a1, sha256: %s, role: agent, agent_id: a1}
`, scoring, tenant.HashKey(keys["sup"]), tenant.HashKey(keys["care"]), tenant.HashKey(keys["a1"]))))
	if err != nil {
		t.Fatal(err)
	}
	reg, err := tenant.NewRegistry(ts)
	if err != nil {
		t.Fatal(err)
	}
	o := DefaultOptions()
	o.Tenants, o.Gateways, o.Fullcall, o.Escalation = reg, []string{gw.srv.URL}, backend.URL, backend.URL
	o.FlushEvery = 20 * time.Millisecond
	o.RecheckEvery = 50 * time.Millisecond
	for _, f := range opts {
		f(&o)
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background(), lis) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		<-done
	})
	scheme := "http://"
	if o.TLS != nil {
		scheme = "https://"
	}
	return &consoleUnderTest{s: s, url: scheme + lis.Addr().String(), keys: keys}
}

// signIn returns a cookie-keeping HTTP client signed in with a key.
func (c *consoleUnderTest) signIn(t *testing.T, who string) (*http.Client, string) {
	t.Helper()
	return c.signInWith(t, who, &http.Client{})
}

func (c *consoleUnderTest) signInWith(t *testing.T, who string, hc *http.Client) (*http.Client, string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	hc.Jar = jar
	resp, err := hc.Post(c.url+"/api/login", "application/json", strings.NewReader(`{"key":"`+c.keys[who]+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s sessionJSON
	json.NewDecoder(resp.Body).Decode(&s)
	if resp.StatusCode != 200 || s.CSRF == "" {
		t.Fatalf("sign-in as %s: %s", who, resp.Status)
	}
	sc := resp.Header.Get("Set-Cookie")
	wants := []string{"HttpOnly", "SameSite=Strict", "Max-Age="}
	if strings.HasPrefix(c.url, "https://") {
		wants = append(wants, "Secure")
	} else if strings.Contains(resp.Header.Get("Set-Cookie"), "Secure") {
		t.Error("a Secure cookie over plain HTTP")
	}
	for _, want := range wants {
		if !strings.Contains(sc, want) {
			t.Errorf("Set-Cookie %q lacks %s", sc, want)
		}
	}
	if strings.Contains(sc, c.keys[who]) {
		t.Error("the API key is in the cookie")
	}
	return hc, s.CSRF
}

// readLive reads the console's wall stream until a message contains want.
func readLive(t *testing.T, hc *http.Client, url string, msgs chan<- string) {
	resp, err := hc.Get(url + "/api/live")
	if err != nil {
		t.Error(err)
		return
	}
	defer resp.Body.Close()
	r := newSSEReader(resp.Body)
	for {
		ev, err := r.Next()
		if err != nil {
			return
		}
		if !ev.IsComment {
			msgs <- string(ev.Data)
		}
	}
}

func waitMsg(t *testing.T, msgs <-chan string, match func(string) bool) []string {
	t.Helper()
	var seen []string
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-msgs:
			seen = append(seen, m)
			if match(m) {
				return seen
			}
		case <-deadline:
			t.Fatalf("no matching message in 10 s; got %q", seen)
		}
	}
}

// TestPrivateModeWithholdsAgentStress: in private mode a supervisor's
// browser never receives agent_stress — not on the wall (even if a gateway
// sent it), not in the call view, not as an alert — and the care team's does.
func TestPrivateModeWithholdsAgentStress(t *testing.T) {
	gw := newFakeGateway(t)
	c := startConsole(t, "private", gw, fakeReports(t))
	hc, _ := c.signIn(t, "sup")
	msgs := make(chan string, 100)
	go readLive(t, hc, c.url, msgs)
	waitMsg(t, msgs, func(m string) bool { return strings.Contains(m, `"t":"snap"`) })
	if k := <-gw.keys; k != "Bearer "+c.keys["sup"] {
		t.Fatalf("the gateway feed was read with %q; want the session's key", k)
	}
	gw.send("started", map[string]any{"type": "started", "call_id": "c-1", "agent_id": "a1", "protocol": "native", "started_at": "2026-12-07T10:00:00Z"})
	gw.send("score", map[string]any{"type": "score", "call_id": "c-1", "agent_id": "a1", "second": 0, "caller_pressure": 12.5, "agent_stress": 88.25})
	gw.send("alert", map[string]any{"type": "alert", "call_id": "c-1", "agent_id": "a1", "state": "firing", "score": "agent_stress", "value": 88.25})
	gw.send("score", map[string]any{"type": "score", "call_id": "c-1", "agent_id": "a1", "second": 1, "caller_pressure": 13.5, "agent_stress": 89.25})
	seen := waitMsg(t, msgs, func(m string) bool { return strings.Contains(m, "13.5") })
	all := strings.Join(seen, "\n")
	if strings.Contains(all, "88.25") || strings.Contains(all, "89.25") || strings.Contains(all, `"k":"a"`) {
		t.Errorf("agent_stress reached a supervisor's browser in private mode:\n%s", all)
	}
	if !strings.Contains(all, `[0,12.5,null]`) {
		t.Errorf("the wall lacks the caller_pressure point:\n%s", all)
	}
	resp, err := hc.Get(c.url + "/api/calls/c-1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || regexp.MustCompile(`5[5]|66|77|agent_stress"\s*:\s*\{`).Match(b) {
		t.Errorf("call view for a supervisor in private mode: %d %s", resp.StatusCode, b)
	}
	var v callViewJSON
	json.Unmarshal(b, &v)
	if len(v.Timeline) != 3 || v.Timeline[2].CP == nil || *v.Timeline[2].CP != 80 || len(v.Alerts) != 0 || len(v.Gaps) != 1 || v.Gaps[0]["from"] != 1.0 || v.Gaps[0]["to"] != 1.5 {
		t.Errorf("call view: %s", b)
	}

	// The care team sees it.
	hc2, _ := c.signIn(t, "care")
	resp, err = hc2.Get(c.url + "/api/calls/c-1")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&v)
	resp.Body.Close()
	if v.Timeline[2].AS == nil || *v.Timeline[2].AS != 77 || len(v.Alerts) != 1 {
		t.Errorf("the care team's call view lacks agent_stress: %+v", v)
	}
}

// TestAgentKeyWall: an agent's wall holds only its own calls even when a
// gateway sends others, and another agent's call view is not found.
func TestAgentKeyWall(t *testing.T) {
	gw := newFakeGateway(t)
	c := startConsole(t, "on", gw, fakeReports(t))
	hc, csrf := c.signIn(t, "a1")
	msgs := make(chan string, 100)
	go readLive(t, hc, c.url, msgs)
	waitMsg(t, msgs, func(m string) bool { return strings.Contains(m, `"t":"snap"`) })
	gw.send("started", map[string]any{"type": "started", "call_id": "other", "agent_id": "a2", "protocol": "native"})
	gw.send("started", map[string]any{"type": "started", "call_id": "mine", "agent_id": "a1", "protocol": "native"})
	seen := waitMsg(t, msgs, func(m string) bool { return strings.Contains(m, `"mine"`) })
	if all := strings.Join(seen, "\n"); strings.Contains(all, "other") || strings.Contains(all, "a2") {
		t.Errorf("another agent's call reached the agent's wall:\n%s", all)
	}
	req, _ := http.NewRequest("POST", c.url+"/api/escalations/e1/acknowledge", strings.NewReader(`{}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-CSRF-Token", csrf)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Errorf("an agent acknowledging: %s; want 403", resp.Status)
	}
}

func TestStateChangesNeedCSRFAndSameOrigin(t *testing.T) {
	gw := newFakeGateway(t)
	c := startConsole(t, "on", gw, fakeReports(t))
	hc, csrf := c.signIn(t, "sup")
	post := func(token, origin, ctype string) int {
		req, _ := http.NewRequest("POST", c.url+"/api/logout", strings.NewReader(`{}`))
		req.Header.Set("Content-Type", ctype)
		if token != "" {
			req.Header.Set("X-CSRF-Token", token)
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post("", "", "application/json"); code != 403 {
		t.Errorf("no token: %d; want 403", code)
	}
	if code := post(csrf+"x", "", "application/json"); code != 403 {
		t.Errorf("wrong token: %d; want 403", code)
	}
	if code := post(csrf, "http://evil.example", "application/json"); code != 403 {
		t.Errorf("other origin: %d; want 403", code)
	}
	// A plain form cannot sign in either.
	resp, err := http.Post(c.url+"/api/login", "application/x-www-form-urlencoded", strings.NewReader("key="+c.keys["sup"]))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 415 {
		t.Errorf("form sign-in: %s; want 415", resp.Status)
	}
	// A live stream open at sign-out ends with the session.
	resp0, err := hc.Get(c.url + "/api/live")
	if err != nil {
		t.Fatal(err)
	}
	ended := make(chan struct{})
	go func() { io.Copy(io.Discard, resp0.Body); resp0.Body.Close(); close(ended) }()
	if code := post(csrf, c.url, "application/json"); code != 200 {
		t.Errorf("sign-out with the token: %d; want 200", code)
	}
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Error("the live stream outlived the sign-out by 5 s")
	}
	resp, err = hc.Get(c.url + "/api/session")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("session after sign-out: %s; want 401", resp.Status)
	}
}

// TestSlowBrowserIsDisconnected: a browser whose queue is full loses its
// stream (counted) instead of holding the view up.
func TestSlowBrowserIsDisconnected(t *testing.T) {
	s := &Server{o: DefaultOptions()}
	s.o.Now = time.Now
	h := newLiveHub(s)
	v := &view{h: h, calls: map[string]*liveCall{}, gws: map[string]*gwState{}, subs: map[*liveSub]struct{}{}}
	h.vs["x"], v.id = v, "x"
	sub := &liveSub{ch: make(chan []byte, 1), kicked: make(chan struct{})}
	v.subs[sub] = struct{}{}
	for i := range 2 {
		v.pending = append(v.pending, i)
		v.flush()
	}
	select {
	case <-sub.kicked:
	default:
		t.Fatal("a browser with a full queue was not disconnected")
	}
	if n := s.metrics.slowBrowsers.Load(); n != 1 {
		t.Errorf("slow browsers counted %d; want 1", n)
	}
}

// TestI18NKeys: every word the page uses exists in English and Japanese.
func TestI18NKeys(t *testing.T) {
	b, err := os.ReadFile("assets/i18n.js")
	if err != nil {
		t.Fatal(err)
	}
	src := string(b)
	ja := strings.Index(src, "\n  ja: {")
	if ja < 0 {
		t.Fatal("no ja block")
	}
	keyRE := regexp.MustCompile(`"([a-zA-Z.]+)":`)
	keys := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, k := range keyRE.FindAllStringSubmatch(s, -1) {
			m[k[1]] = true
		}
		return m
	}
	en, jp := keys(src[:ja]), keys(src[ja:])
	for k := range en {
		if !jp[k] {
			t.Errorf("%s has no Japanese", k)
		}
	}
	for k := range jp {
		if !en[k] {
			t.Errorf("%s has no English", k)
		}
	}
	var used sync.Map
	for _, f := range []string{"assets/index.html", "assets/app.js"} {
		b, _ := os.ReadFile(f)
		for _, m := range regexp.MustCompile(`data-i18n="([a-zA-Z.]+)"|\bt\("([a-zA-Z.]+)"`).FindAllStringSubmatch(string(b), -1) {
			used.Store(m[1]+m[2], f)
		}
	}
	used.Range(func(k, f any) bool {
		if strings.HasSuffix(k.(string), ".") {
			return true // a prefix completed at run time ("esc." + state)
		}
		if !en[k.(string)] {
			t.Errorf("%s uses %s, which has no words", f, k)
		}
		return true
	})
}

// TestOverTLSTheCookieIsSecure: under TLS the session cookie is Secure,
// and a browser offering HTTP/2 and HTTP/1.1 reaches the console (not the
// port's gRPC side).
func TestOverTLSTheCookieIsSecure(t *testing.T) {
	ca := tlstest.NewCA(t, "console test CA")
	leaf := ca.Issue(t, "console", "127.0.0.1")
	c := startConsole(t, "on", newFakeGateway(t), fakeReports(t), func(o *Options) { o.TLS = tlstest.ServerConfig(leaf, nil) })
	tr := &http.Transport{TLSClientConfig: tlstest.ClientConfig(ca, nil), ForceAttemptHTTP2: true}
	tr.TLSClientConfig.NextProtos = []string{"h2", "http/1.1"}
	defer tr.CloseIdleConnections()
	hc, _ := c.signInWith(t, "sup", &http.Client{Transport: tr})
	u, _ := url.Parse(c.url)
	cs := hc.Jar.Cookies(u)
	if len(cs) != 1 {
		t.Fatalf("cookies %v", cs)
	}
	resp, err := hc.Get(c.url + "/api/session")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 1 {
		t.Errorf("GET /api/session over TLS: %s %s", resp.Proto, resp.Status)
	}
}

// TestAssetsAreSelfContained: the page loads nothing from elsewhere (no
// CDN, works offline): no URL in the embedded files but the SVG
// namespace, and every response carries a same-origin-only CSP.
func TestAssetsAreSelfContained(t *testing.T) {
	entries, err := assets.ReadDir("assets")
	if err != nil || len(entries) == 0 {
		t.Fatalf("embedded assets: %v", err)
	}
	urlRE := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	for _, e := range entries {
		b, _ := assets.ReadFile("assets/" + e.Name())
		for _, m := range urlRE.FindAllString(string(b), -1) {
			if m != "http://www.w3.org" {
				t.Errorf("%s refers to %s", e.Name(), m)
			}
		}
	}
	c := startConsole(t, "on", newFakeGateway(t), fakeReports(t))
	for _, path := range []string{"/", "/assets/app.js", "/api/session"} {
		resp, err := http.Get(c.url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: Content-Security-Policy %q", path, csp)
		}
	}
}
