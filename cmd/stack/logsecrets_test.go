package stack_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/calmline/calmline/cmd/stack"
	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/identity"
	"github.com/calmline/calmline/lib/telemetry"
	"github.com/calmline/calmline/lib/tenant"
	escalationv1 "github.com/calmline/calmline/proto/calmline/escalation/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// capture is a slog handler that keeps every record, attributes and
// groups included, as text.
type capture struct {
	mu    *sync.Mutex
	lines *[]string
	attrs string
}

func (c capture) Enabled(context.Context, slog.Level) bool { return true }
func (c capture) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message + c.attrs)
	r.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
	c.mu.Lock()
	*c.lines = append(*c.lines, b.String())
	c.mu.Unlock()
	return nil
}
func (c capture) WithAttrs(as []slog.Attr) slog.Handler {
	for _, a := range as {
		c.attrs += " " + a.String()
	}
	return c
}
func (c capture) WithGroup(name string) slog.Handler { c.attrs += " [" + name + "]"; return c }

func secretValue(t *testing.T, prefix string) string {
	b := make([]byte, 24)
	rand.Read(b)
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// TestNoSecretInAnyLogLine runs a whole stack with a handler that keeps
// every log record, drives its logging paths — failing webhooks whose URL
// carries ?token=, a job callback whose connection breaks, refused keys,
// forged internal calls with tokens, a genuine alert and upload, API keys
// in the query string of /ws/twilio and /ws/asterisk (refused, accepted,
// closed on bad input), Basic authentication from a browser's Origin, the
// admin token (right and wrong, header and query) on every service's
// /debug/pprof and the gateway's /admin/drain — and fails if any secret
// value appears in any record.
func TestNoSecretInAnyLogLine(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	var lines []string
	tel := telemetry.Discard()
	tel.Logger = slog.New(capture{mu: &mu, lines: &lines})

	apiKey := tenant.NewKey()
	wrongKey := tenant.NewKey()
	hookToken := secretValue(t, "tok_")
	cbToken := secretValue(t, "cbt_")
	bearer := secretValue(t, "bearer_")
	adminTok := secretValue(t, "adm_")
	wrongAdmin := secretValue(t, "adm_")
	whsec := make([]byte, 32)
	rand.Read(whsec)
	signing := "whsec_" + base64.StdEncoding.EncodeToString(whsec)
	clientSecret := base64.StdEncoding.EncodeToString([]byte(secretValue(t, "cs_")))
	write := func(name, v string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	// The on-call endpoint fails (500), the callback receiver drops the
	// connection: both are failure paths that log.
	hookHit := make(chan struct{}, 100)
	hooks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hookHit <- struct{}{}
		http.Error(w, "down for maintenance", http.StatusInternalServerError)
	}))
	defer hooks.Close()
	cbHit := make(chan struct{}, 100)
	callbacks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cbHit <- struct{}{}
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	defer callbacks.Close()

	tenants := fmt.Sprintf(`tenants:
  - id: acme
    api_keys: [{id: acme-1, sha256: %s, client_secret_file: %s}]
    escalation:
      retry: {initial: 50ms, max_interval: 100ms, max_attempts: 2}
      endpoints: [{name: on-call, url: '%s/hook?token=%s', signing_secrets: [{file: %s}], bearer_token: {file: %s}, timeout: 5s}]
      ladder: [{name: notify, action: notify, endpoint: on-call}]
    job_callbacks:
      urls: ['%s/cb']
      signing_secrets: [{file: %s}]
`, tenant.HashKey(apiKey), write("client.secret", clientSecret), hooks.URL, hookToken, write("oncall.secret", signing), write("bearer", bearer),
		callbacks.URL, write("cb.secret", signing))
	tp := write("tenants.yaml", tenants)
	reg, err := tenant.Load(tp)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	st, err := stack.New(ctx, stack.Options{DataDir: dir, Tenants: reg, Telemetry: tel, AdminToken: adminTok})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- st.Serve(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			<-served
		}
	}
	defer stop()
	secret, err := identity.LoadFile(filepath.Join(dir, identity.SecretFileName))
	if err != nil {
		t.Fatal(err)
	}
	serviceSecret, _ := os.ReadFile(filepath.Join(dir, identity.SecretFileName))
	realtimeTok, _ := secret.Token(identity.Realtime)
	gatewayTok, _ := secret.Token(identity.Gateway)

	// Refused keys on every HTTP port and on gRPC.
	for _, svc := range []string{stack.Gateway, stack.Fullcall, stack.Escalation} {
		for _, path := range []string{"/api/v1/reports", "/api/v1/escalations", "/api/v1/live", "/ws/native"} {
			req, _ := http.NewRequest("GET", "http://"+st.Addr(svc).String()+path+"?token="+hookToken, nil)
			req.Header.Set("Authorization", "Bearer "+wrongKey)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}
	}
	// AudioHook with the right key and a signature that does not verify
	// (the client secret is what it is checked with).
	ah, _ := http.NewRequest("GET", "http://"+st.Addr(stack.Gateway).String()+"/ws/audiohook", nil)
	for k, v := range map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
		"X-API-KEY": apiKey, "Audiohook-Organization-Id": "o", "Audiohook-Correlation-Id": "c", "Audiohook-Session-Id": "s",
		"Signature-Input": `sig1=("@request-target");keyid="` + apiKey + `";nonce="n";alg="hmac-sha256";created=1`, "Signature": "sig1=:AAAA:"} {
		ah.Header.Set(k, v)
	}
	if resp, err := http.DefaultClient.Do(ah); err == nil {
		resp.Body.Close()
	}
	// Keys in the query string of the paths that accept them (Twilio and
	// Asterisk cannot set headers): refused, accepted then dropped without
	// a start; and in Basic authentication from a browser's Origin
	// (refused: a browser sends Basic credentials by itself).
	upgrade := func(method, url, origin, bearer string) int {
		req, _ := http.NewRequest(method, url, nil)
		for k, v := range map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="} {
			req.Header.Set(k, v)
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		switch {
		case strings.HasPrefix(bearer, "basic:"):
			req.SetBasicAuth("pbx", strings.TrimPrefix(bearer, "basic:"))
		case bearer != "":
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, strings.SplitN(url, "?", 2)[0], err)
		}
		resp.Body.Close() // a 101's body is the connection: this drops it
		return resp.StatusCode
	}
	gw := "http://" + st.Addr(stack.Gateway).String()
	for _, path := range []string{"/ws/twilio?api_key=", "/ws/asterisk?call_id=q1&role=caller&api_key="} {
		if code := upgrade("GET", gw+path+wrongKey, "", ""); code != http.StatusUnauthorized {
			t.Errorf("%s with a wrong key: %d; want 401", path, code)
		}
		if code := upgrade("GET", gw+path+apiKey, "", ""); code != http.StatusSwitchingProtocols {
			t.Errorf("%s with the key: %d; want 101", path, code)
		}
		if code := upgrade("GET", gw+strings.TrimSuffix(path, "api_key="), "https://evil.example", "basic:"+apiKey); code != http.StatusForbidden {
			t.Errorf("%s with the key in Basic authentication from a browser's Origin: %d; want 403", path, code)
		}
	}
	// A key in the query, then bad input after the upgrade: the gateway
	// logs the connection it closes.
	for _, path := range []string{"/ws/twilio?api_key=", "/ws/asterisk?call_id=q2&role=caller&api_key="} {
		ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(gw, "http")+path+apiKey, nil)
		if err != nil {
			t.Fatalf("%s with the key: %v", path, err)
		}
		ws.WriteMessage(websocket.TextMessage, []byte(`{"event":"no-such-event"}`))
		ws.SetReadDeadline(time.Now().Add(30 * time.Second))
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				if !websocket.IsCloseError(err, websocket.CloseNormalClosure) && strings.Contains(err.Error(), "timeout") {
					t.Errorf("%s: the gateway did not close on bad input: %v", path, err)
				}
				break
			}
		}
		ws.Close()
	}
	// The admin token: wrong and right, in the header and in the query.
	for _, svc := range []string{stack.Gateway, stack.Fullcall, stack.Realtime, stack.Escalation} {
		base := "http://" + st.Addr(svc).String()
		if code := upgrade("GET", base+"/debug/pprof/?token="+wrongAdmin, "", wrongAdmin); code != http.StatusUnauthorized {
			t.Errorf("%s /debug/pprof/ with a wrong admin token: %d; want 401", svc, code)
		}
		if code := upgrade("GET", base+"/debug/pprof/cmdline?token="+adminTok, "", adminTok); code != http.StatusOK {
			t.Errorf("%s /debug/pprof/cmdline with the admin token: %d; want 200", svc, code)
		}
	}
	if code := upgrade("POST", gw+"/admin/drain?token="+wrongAdmin, "", wrongAdmin); code != http.StatusUnauthorized {
		t.Errorf("/admin/drain with a wrong admin token: %d; want 401", code)
	}
	cc, err := grpc.NewClient(st.Addr(stack.Escalation).String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	gctx, gcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer gcancel()
	// Forged: gateway's real token on a realtime-only method, a tenant key,
	// a wrong key on a tenant-facing method.
	escalationv1.NewAlertServiceClient(cc).PostAlerts(metadata.AppendToOutgoingContext(gctx, identity.MDService, identity.Gateway, identity.MDToken, gatewayTok), alert("forged"))
	escalationv1.NewAlertServiceClient(cc).PostAlerts(metadata.AppendToOutgoingContext(gctx, "authorization", "Bearer "+apiKey), alert("forged"))
	escalationv1.NewEscalationServiceClient(cc).ListEscalations(metadata.AppendToOutgoingContext(gctx, "authorization", "Bearer "+wrongKey), &escalationv1.ListEscalationsRequest{})
	// Genuine: an alert whose webhook fails.
	if _, err := escalationv1.NewAlertServiceClient(cc).PostAlerts(metadata.AppendToOutgoingContext(gctx, identity.MDService, identity.Realtime, identity.MDToken, realtimeTok), alert("real")); err != nil {
		t.Fatalf("genuine alert: %v", err)
	}
	// A job with a callback whose connection breaks.
	fcc, err := grpc.NewClient(st.Addr(stack.Fullcall).String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer fcc.Close()
	if _, err := fullcallv1.NewRecordingServiceClient(fcc).SubmitRecording(metadata.AppendToOutgoingContext(gctx, "authorization", "Bearer "+apiKey),
		&fullcallv1.SubmitRecordingRequest{Recording: &fullcallv1.Recording{CallId: "log-1", AgentId: "agent-1", Wav: tone()}, CallbackUrl: callbacks.URL + "/cb/job?token=" + cbToken}); err != nil {
		t.Fatalf("submit: %v", err)
	}
	for _, c := range []struct {
		name string
		ch   chan struct{}
	}{{"on-call webhook", hookHit}, {"on-call webhook retry", hookHit}, {"job callback", cbHit}} {
		select {
		case <-c.ch:
		case <-gctx.Done():
			t.Fatalf("the %s was not attempted within 30 s", c.name)
		}
	}
	// A drain with the right admin token (it logs), then stopping logs
	// too; then every record is in.
	if code := upgrade("POST", gw+"/admin/drain?token="+adminTok, "", adminTok); code != http.StatusAccepted {
		t.Errorf("/admin/drain with the admin token: %d; want 202", code)
	}
	stop()
	mu.Lock()
	defer mu.Unlock()
	if len(lines) < 5 {
		t.Fatalf("only %d log records: the capture is not wired", len(lines))
	}
	secrets := map[string]string{
		"API key": apiKey, "refused API key": wrongKey, "webhook ?token=": hookToken, "callback ?token=": cbToken,
		"bearer token": bearer, "signing secret": signing[len("whsec_"):], "client secret": clientSecret,
		"service secret": strings.TrimSpace(strings.Split(string(serviceSecret), "\n")[1]),
		"realtime token": realtimeTok[3:], "gateway token": gatewayTok[3:],
		"admin token": adminTok, "wrong admin token": wrongAdmin,
	}
	leaks := 0
	for _, l := range lines {
		for what, v := range secrets {
			if strings.Contains(l, v) {
				leaks++
				t.Errorf("the %s reached the log: %s", what, l)
			}
		}
	}
	// Not vacuous: the failure paths did log.
	joined := strings.Join(lines, "\n")
	for _, want := range []string{"internal call refused", "callback", "drain requested", "protocol=twilio", "protocol=asterisk"} {
		if !strings.Contains(joined, want) {
			t.Errorf("no log record mentions %q; the paths under test did not log:\n%s", want, joined)
		}
	}
}

// tone is a 2 s stereo μ-law WAV: a 200 Hz tone with a slow wobble.
func tone() []byte {
	f := audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 2}
	pcm := make([]int16, 2*16000)
	for i := range 16000 {
		v := int16(8000 * math.Sin(2*math.Pi*(200+20*math.Sin(float64(i)/800))*float64(i)/8000))
		pcm[2*i], pcm[2*i+1] = v, v/2
	}
	return audio.EncodeWAV(f, audio.Encode(nil, pcm, audio.CodecPCMU))
}
