package main

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/calmline/calmline/escalation"
	"github.com/calmline/calmline/lib/identity"
	"github.com/calmline/calmline/lib/tenant"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	escalationv1 "github.com/calmline/calmline/proto/calmline/escalation/v1"
)

// checkSignature is the end-to-end tests' own Standard Webhooks check,
// written from the specification and sharing no code with lib/webhook:
// HMAC-SHA256 of "id.timestamp.body" under the decoded secret, compared in
// constant time with each "v1," signature, timestamp within 5 minutes.
func checkSignature(h http.Header, body, key []byte) error {
	id, ts := h.Get("webhook-id"), h.Get("webhook-timestamp")
	n, err := strconv.ParseInt(ts, 10, 64)
	if id == "" || err != nil {
		return errors.New("missing webhook-id or webhook-timestamp")
	}
	if d := time.Since(time.Unix(n, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return errors.New("timestamp out of tolerance")
	}
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%s.%s", id, ts, body)
	want := []byte("v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	for _, sig := range strings.Fields(h.Get("webhook-signature")) {
		if hmac.Equal([]byte(sig), want) {
			return nil
		}
	}
	return errors.New("no signature matches")
}

// hook is one request an endpoint took in.
type hook struct {
	ID, Type string
	Data     map[string]any
	Body     []byte
	Err      error // the signature or token check
}

// endpoint is a receiver on loopback: it checks the signature (and the
// bearer token when one is set), de-duplicates by webhook-id and passes on
// each id once.
type endpoint struct {
	srv      *httptest.Server
	key      []byte
	token    string
	delay    time.Duration
	got      chan hook
	mu       sync.Mutex
	attempts map[string]int
}

func newEndpoint(t *testing.T, key []byte, token string, delay time.Duration) *endpoint {
	e := &endpoint{key: key, token: token, delay: delay, got: make(chan hook, 1000), attempts: map[string]int{}}
	stop := make(chan struct{})
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h := hook{ID: r.Header.Get("webhook-id"), Body: body}
		var env struct {
			Type string         `json:"type"`
			Data map[string]any `json:"data"`
		}
		json.Unmarshal(body, &env)
		h.Type, h.Data = env.Type, env.Data
		if e.key != nil {
			h.Err = checkSignature(r.Header, body, e.key)
		}
		if e.token != "" && r.Header.Get("Authorization") != "Bearer "+e.token {
			h.Err = errors.Join(h.Err, errors.New("wrong bearer token"))
		}
		e.mu.Lock()
		e.attempts[h.ID]++
		first := e.attempts[h.ID] == 1
		e.mu.Unlock()
		if first {
			e.got <- h
		}
		if e.delay > 0 {
			select {
			case <-time.After(e.delay):
			case <-stop:
			}
		}
	}))
	t.Cleanup(func() { close(stop); e.srv.Close() })
	return e
}

func (e *endpoint) collect(t *testing.T, n int, within time.Duration) []hook {
	t.Helper()
	var out []hook
	deadline := time.After(within)
	for len(out) < n {
		select {
		case h := <-e.got:
			if h.Err != nil {
				t.Errorf("%s %s failed the receiver's check: %v", h.Type, h.ID, h.Err)
			}
			out = append(out, h)
		case <-deadline:
			t.Fatalf("endpoint got %d requests within %v; want %d", len(out), within, n)
		}
	}
	return out
}

func (e *endpoint) none(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case h := <-e.got:
		t.Errorf("unexpected request %s %s", h.Type, h.Body)
	case <-time.After(within):
	}
}

func secretFile(t *testing.T, dir, name string) ([]byte, string) {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte("whsec_"+base64.StdEncoding.EncodeToString(key)), 0o600); err != nil {
		t.Fatal(err)
	}
	return key, path
}

// TestEndToEndEscalation streams a call whose agent turns angry through
// `calmline serve`: exactly one escalation, the transfer API called
// exactly once, the on-call team's signed events, the report listing the
// escalation, and an intact audit trail.
//
// The tenant's rule is agent_stress ≥ 70 held 2 s: the test call's angry
// part is both louder (+15 dB) and angry, so it holds with the interim
// loudness model and with the voice model (testdata/README.md).
func TestEndToEndEscalation(t *testing.T) {
	dir := t.TempDir()
	onKey, onPath := secretFile(t, dir, "oncall.secret")
	ivKey, ivPath := secretFile(t, dir, "intervention.secret")
	os.WriteFile(filepath.Join(dir, "intervention.token"), []byte("iv-token-1\n"), 0o600)
	oncall := newEndpoint(t, onKey, "", 0)
	transfer := newEndpoint(t, ivKey, "iv-token-1", 0)
	key, other := tenant.NewKey(), tenant.NewKey()
	tenants := fmt.Sprintf(`tenants:
  - id: acme
    api_keys: [{id: acme-1, sha256: %s}]
    agent_scoring: "on"
    alert_rule: {id: agent-anger, score: agent_stress, threshold: 70, hold_seconds: 2, clear_below: 10, cooldown_seconds: 600}
    escalation:
      endpoints:
        - name: on-call
          url: %s/hooks/calmline
          signing_secrets: [{file: %s}]
          events: [escalation.transfer_succeeded, escalation.transfer_failed, escalation.acknowledged, escalation.resolved]
        - name: intervention
          url: %s/api/v1/transfers
          signing_secrets: [{file: %s}]
          bearer_token: {file: %s}
          params: {queue: intervention-de}
      ladder:
        - {name: notify-on-call, action: notify, endpoint: on-call}
        - {name: transfer, action: transfer, endpoint: intervention, after: 1s}
  - id: globex
    api_keys: [{id: globex-1, sha256: %s}]
`, tenant.HashKey(key), oncall.srv.URL, onPath, transfer.srv.URL, ivPath, filepath.Join(dir, "intervention.token"), tenant.HashKey(other))
	os.WriteFile(filepath.Join(dir, "tenants.yaml"), []byte(tenants), 0o644)
	srv := startServe(t, "--data-dir", dir, "--tenants", filepath.Join(dir, "tenants.yaml"))

	msgs, _, closeErr := streamWAV(t, srv.addrs["gateway"], key, "call-angry-1", "testdata/call_agent_turns_angry.wav")
	if closeErr == nil || closeErr.Code != 1000 || len(msgs) == 0 || msgs[len(msgs)-1].Type != "stopped" {
		t.Fatalf("the call did not end cleanly: %v", closeErr)
	}
	triggered := oncall.collect(t, 1, 10*time.Second)[0]
	tr := transfer.collect(t, 1, 10*time.Second)[0]
	succeeded := oncall.collect(t, 1, 10*time.Second)[0]
	if triggered.Type != "escalation.triggered" || succeeded.Type != "escalation.transfer_succeeded" {
		t.Fatalf("on-call got %s then %s; want escalation.triggered then escalation.transfer_succeeded", triggered.Type, succeeded.Type)
	}
	alert := triggered.Data["alert"].(map[string]any)
	if triggered.Data["call_id"] != "call-angry-1" || triggered.Data["agent_id"] != "agent-42" || alert["score"] != "agent_stress" ||
		alert["value"].(float64) < 70 || alert["rule_id"] != "agent-anger" {
		t.Errorf("escalation.triggered: %s", triggered.Body)
	}
	if tr.Type != "call.transfer_requested" || tr.Data["call_id"] != "call-angry-1" || tr.Data["params"].(map[string]any)["queue"] != "intervention-de" {
		t.Errorf("transfer request: %s", tr.Body)
	}
	escID := triggered.Data["escalation_id"].(string)

	// Exactly one escalation, and the report lists its alert.
	esc := srv.addrs["escalation"]
	get := func(base, path, key string, out any) int {
		req, _ := http.NewRequest("GET", "http://"+base+path, nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		json.NewDecoder(resp.Body).Decode(out)
		return resp.StatusCode
	}
	var list struct {
		Escalations []struct {
			ID      string `json:"id"`
			AlertID string `json:"alert_id"`
			State   string `json:"state"`
			Steps   []struct{ Name, State string }
		} `json:"escalations"`
	}
	if code := get(esc, "/api/v1/escalations?call_id=call-angry-1", key, &list); code != 200 || len(list.Escalations) != 1 || list.Escalations[0].ID != escID {
		t.Fatalf("escalations of the call: %d %+v; want exactly %s", code, list, escID)
	}
	for _, s := range list.Escalations[0].Steps {
		if s.State != "STEP_STATE_SUCCEEDED" {
			t.Errorf("step %s is %s", s.Name, s.State)
		}
	}
	var report struct {
		Alerts []struct {
			AlertID string `json:"alert_id"`
			State   string `json:"state"`
		} `json:"alerts"`
	}
	if code := get(srv.addrs["fullcall"], "/api/v1/reports/call-angry-1", key, &report); code != 200 {
		t.Fatalf("report: %d", code)
	}
	listed := false
	for _, a := range report.Alerts {
		if a.State == "ALERT_STATE_FIRING" && escalation.EscalationID("acme", a.AlertID) == escID {
			listed = true
		}
	}
	if !listed || list.Escalations[0].AlertID != report.Alerts[0].AlertID {
		t.Errorf("the report's alerts %+v do not list the escalation %s", report.Alerts, escID)
	}
	var none struct{ Escalations []any }
	if get(esc, "/api/v1/escalations", other, &none); len(none.Escalations) != 0 {
		t.Errorf("another tenant sees escalations: %v", none)
	}

	// People acknowledge and resolve: each change is a signed event.
	for _, act := range []string{"acknowledge", "resolve"} {
		req, _ := http.NewRequest("POST", "http://"+esc+"/api/v1/escalations/"+escID+"/"+act, strings.NewReader(`{"by":"sup-ana","resolution":"caller transferred"}`))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %v %v", act, resp.Status, err)
		}
		resp.Body.Close()
	}
	later := oncall.collect(t, 2, 10*time.Second)
	if later[0].Type != "escalation.acknowledged" || later[1].Type != "escalation.resolved" || later[1].Data["by"] != "sup-ana" {
		t.Errorf("after acknowledge and resolve the on-call team got %s, %s", later[0].Body, later[1].Body)
	}
	transfer.none(t, 200*time.Millisecond)
	oncall.none(t, 10*time.Millisecond)

	// The audit trail verifies over the API, anchored at an event's entry.
	audit := later[1].Data["audit"].(map[string]any)
	anchor := fmt.Sprintf("%d:%s", int(audit["seq"].(float64)), audit["hash"])
	keyFile := filepath.Join(dir, "acme.key")
	os.WriteFile(keyFile, []byte(key), 0o600)
	out, err := exec.Command(binary, "audit", "verify", "--url", "http://"+esc, "--key-file", keyFile, "--anchor", anchor).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "acme: ok") {
		t.Errorf("audit verify over the API: %v\n%s", err, out)
	}
	srv.stop(t)
	out, err = exec.Command(binary, "audit", "verify", "--data-dir", dir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "acme: ok") {
		t.Errorf("audit verify on the database: %v\n%s", err, out)
	}
}

// process is a `calmline serve` process with some of the services.
type process struct {
	cmd  *exec.Cmd
	exit chan error
}

func startServices(t *testing.T, services []string, args ...string) (*process, map[string]string) {
	t.Helper()
	cmd := inDeployment(exec.Command(binary, append([]string{"serve", "--services", strings.Join(services, ",")}, args...)...))
	cmd.Stderr = &testLog{t: t}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, exit: make(chan error, 1)}
	addrs := map[string]string{}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "calmline: ready service="); ok {
				name, addr, _ := strings.Cut(rest, " addr=")
				addrs[name] = addr
				if len(addrs) == len(services) {
					close(ready)
				}
			}
		}
		p.exit <- cmd.Wait()
	}()
	t.Cleanup(func() { cmd.Process.Kill(); <-p.exit })
	select {
	case <-ready:
	case err := <-p.exit:
		p.exit <- err
		t.Fatalf("calmline serve exited before it was ready: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("calmline serve not ready after 60 s")
	}
	return p, addrs
}

// TestKill9EscalationLosesNothing kills the escalation process with
// SIGKILL while alerts are being posted and webhooks are in flight,
// restarts it on the same data, and checks that every alert it accepted
// became an escalation whose webhook reached the on-call team, each
// message's effect once. The test posts as realtime does: each alert again
// until escalation has it.
func TestKill9EscalationLosesNothing(t *testing.T) {
	dir := t.TempDir()
	key, path := secretFile(t, dir, "oncall.secret")
	// A slow receiver keeps deliveries in flight when the process dies.
	oncall := newEndpoint(t, key, "", 150*time.Millisecond)
	tkey := tenant.NewKey()
	os.WriteFile(filepath.Join(dir, "tenants.yaml"), []byte(fmt.Sprintf(`tenants:
  - id: acme
    api_keys: [{id: acme-1, sha256: %s}]
    escalation:
      retry: {initial: 100ms, max_interval: 500ms}
      endpoints: [{name: on-call, url: '%s', signing_secrets: [{file: %s}], timeout: 5s}]
      ladder: [{name: notify, action: notify, endpoint: on-call}]
`, tenant.HashKey(tkey), oncall.srv.URL, path)), 0o644)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	args := []string{"--escalation-addr", addr, "--data-dir", dir, "--tenants", filepath.Join(dir, "tenants.yaml")}
	proc, _ := startServices(t, []string{"escalation"}, args...)

	// The test plays realtime: it proves so with the deployment's secret.
	t.Setenv(identity.EnvSecret, deploymentSecret)
	secret, err := identity.FromEnv(identity.EnvSecret)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(identity.Credentials(secret, identity.Realtime)),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.5, MaxDelay: 300 * time.Millisecond}}))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ac := escalationv1.NewAlertServiceClient(cc)
	const n = 60
	accepted := make(chan string, n)
	half := make(chan struct{})
	posted := make(chan struct{})
	go func() {
		defer close(posted)
		for i := range n {
			a := &escalationv1.Alert{TenantId: "acme", CallId: fmt.Sprint("k", i), AgentId: "agent-1", Event: &callv1.AlertEvent{
				AlertId: fmt.Sprintf("acme/k%d/cp/1", i), RuleId: "cp", Episode: 1, State: callv1.AlertState_ALERT_STATE_FIRING,
				Score: callv1.ScoreKind_SCORE_KIND_CALLER_PRESSURE, Value: 80, Threshold: 70, At: timestamppb.Now()}}
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				r, err := ac.PostAlerts(ctx, &escalationv1.PostAlertsRequest{Alerts: []*escalationv1.Alert{a}})
				cancel()
				if err == nil {
					accepted <- r.EscalationIds[0]
					break
				}
				time.Sleep(20 * time.Millisecond) // the client's retry pace, not synchronisation
			}
			if i == n/3 {
				close(half)
			}
		}
	}()
	<-half
	// Deliveries are in flight at the slow receiver; kill without warning.
	if err := proc.cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	<-proc.exit
	proc.exit <- nil
	startServices(t, []string{"escalation"}, args...)
	select {
	case <-posted:
	case <-time.After(60 * time.Second):
		t.Fatal("alerts not all accepted after the restart")
	}
	close(accepted)
	want := map[string]bool{}
	for id := range accepted {
		want[id] = true
	}
	if len(want) != n {
		t.Fatalf("%d distinct escalations for %d calls", len(want), n)
	}
	got := oncall.collect(t, n, 60*time.Second)
	oncall.none(t, 500*time.Millisecond)
	redelivered := 0
	for _, h := range got {
		id, _ := h.Data["escalation_id"].(string)
		if h.Type != "escalation.triggered" || !want[id] {
			t.Errorf("unexpected message %s", h.Body)
		}
		delete(want, id)
		oncall.mu.Lock()
		if oncall.attempts[h.ID] > 1 {
			redelivered++
		}
		oncall.mu.Unlock()
	}
	if len(want) != 0 {
		t.Errorf("escalations never delivered: %v", want)
	}
	t.Logf("%d of %d webhooks were in flight at the kill and sent again with the same webhook-id", redelivered, n)
	out, err := exec.Command(binary, "audit", "verify", "--data-dir", dir).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "acme: ok") {
		t.Errorf("audit trail after the crash: %v\n%s", err, out)
	}
}
