package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/identity"
	"github.com/calmline/calmline/lib/sqldb/sqldbtest"
	"github.com/calmline/calmline/lib/tenant"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// binary is the calmline binary built once for the end-to-end tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "calmline-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "calmline")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building calmline: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	sqldbtest.Stop()
	os.Exit(code)
}

// deploymentSecret is the service-identity secret of the processes a test
// starts as one deployment (several `calmline serve --services=…`): they
// get it through the environment, as a deployment's processes would.
// startServe's all-in-one process makes its own in its data directory.
var deploymentSecret = identity.NewSecret()

// inDeployment gives cmd the deployment's secret.
func inDeployment(cmd *exec.Cmd) *exec.Cmd {
	cmd.Env = append(os.Environ(), identity.EnvSecret+"="+deploymentSecret)
	return cmd
}

// running is a `calmline serve` process.
type running struct {
	cmd   *exec.Cmd
	logs  *testLog // its standard error
	addrs map[string]string
	exit  chan error

	mu    sync.Mutex
	lines []string
	more  chan struct{} // closed and replaced when a line arrives
}

// output returns the lines printed so far.
func (r *running) output() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.lines...)
}

// waitLine waits until a printed line contains s and returns it.
func (r *running) waitLine(t *testing.T, s string) string {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		r.mu.Lock()
		more := r.more
		for _, l := range r.lines {
			if strings.Contains(l, s) {
				r.mu.Unlock()
				return l
			}
		}
		r.mu.Unlock()
		select {
		case <-more:
		case <-deadline:
			t.Fatalf("no line containing %q in 30 s:\n%s", s, strings.Join(r.output(), "\n"))
		}
	}
}

// startServe starts `calmline serve` on free ports and waits until every
// service announced its listener.
func startServe(t *testing.T, args ...string) *running {
	t.Helper()
	args = append([]string{"serve", "--gateway-addr", "127.0.0.1:0", "--realtime-addr", "127.0.0.1:0",
		"--fullcall-addr", "127.0.0.1:0", "--escalation-addr", "127.0.0.1:0", "--drain-timeout", "2s"}, args...)
	cmd := exec.Command(binary, args...)
	logs := &testLog{t: t}
	cmd.Stderr = logs
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &running{cmd: cmd, logs: logs, addrs: map[string]string{}, exit: make(chan error, 1), more: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		addrs := map[string]string{}
		for sc.Scan() {
			line := sc.Text()
			r.mu.Lock()
			r.lines = append(r.lines, line)
			close(r.more)
			r.more = make(chan struct{})
			r.mu.Unlock()
			if rest, ok := strings.CutPrefix(line, "calmline: ready service="); ok {
				name, addr, _ := strings.Cut(rest, " addr=")
				addrs[name] = addr
				if len(addrs) == 4 {
					r.addrs = maps.Clone(addrs) // read only after ready is closed; a console's line may follow
					close(ready)
				}
			}
		}
		r.exit <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
	})
	select {
	case <-ready:
	case err := <-r.exit:
		t.Fatalf("calmline serve exited before it was ready: %v\n%s", err, strings.Join(r.output(), "\n"))
	case <-time.After(60 * time.Second):
		t.Fatalf("calmline serve not ready after 60 s:\n%s", strings.Join(r.output(), "\n"))
	}
	return r
}

// testLog forwards the process's logs to the test log and keeps them.
type testLog struct {
	t   *testing.T
	mu  sync.Mutex
	all strings.Builder
}

func (l *testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	l.mu.Lock()
	l.all.Write(p)
	l.mu.Unlock()
	return len(p), nil
}

// String returns everything logged so far.
func (l *testLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.all.String()
}

// stop sends SIGTERM and waits for a clean exit.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-r.exit:
		if err != nil {
			t.Errorf("calmline serve exited with %v after SIGTERM", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("calmline serve still running 30 s after SIGTERM")
	}
}

func writeTenants(t *testing.T, dir string, ids ...string) map[string]string {
	t.Helper()
	keys := map[string]string{}
	var b strings.Builder
	b.WriteString("tenants:\n")
	for _, id := range ids {
		keys[id] = tenant.NewKey()
		fmt.Fprintf(&b, "  - id: %s\n    max_concurrent_calls: 10\n    api_keys:\n      - id: %s-1\n        sha256: %s\n", id, id, tenant.HashKey(keys[id]))
	}
	if err := os.WriteFile(filepath.Join(dir, "tenants.yaml"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return keys
}

// scoreMsg is what the native protocol sends each second.
type scoreMsg struct {
	Type           string            `json:"type"`
	CallID         string            `json:"call_id"`
	Second         int               `json:"second"`
	EndSample      uint64            `json:"end_sample"`
	CallerPressure *float64          `json:"caller_pressure"`
	AgentStress    *float64          `json:"agent_stress"`
	Abstain        map[string]string `json:"abstain"`
	Model          struct{ Name, Version string }
	Report         *struct {
		DurationS float64 `json:"duration_s"`
		URL       string  `json:"url"`
	} `json:"report"`
	arrived time.Time
}

// streamWAV plays a WAV file as one call over the native protocol at real
// time, in 20 ms frames, and returns every message the server sent, the
// time each second of audio was fully sent, and the close frame.
func streamWAV(t *testing.T, gateway, key, callID, wavPath string) ([]scoreMsg, []time.Time, *websocket.CloseError) {
	return streamLabelled(t, gateway, key, callID, wavPath, nil)
}

// streamLabelled is streamWAV with call labels in the start message.
func streamLabelled(t *testing.T, gateway, key, callID, wavPath string, labels map[string]string) ([]scoreMsg, []time.Time, *websocket.CloseError) {
	t.Helper()
	b, err := os.ReadFile(wavPath)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := audio.ParseWAV(b)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{"Authorization": {"Bearer " + key}}
	ws, resp, err := websocket.DefaultDialer.Dial("ws://"+gateway+"/ws/native", h)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	defer ws.Close()
	start := map[string]any{"type": "start", "call_id": callID, "agent_id": "agent-42", "codec": rec.Format.Codec.String(),
		"sample_rate": rec.Format.SampleRate, "channels": []string{"caller", "agent"}}
	if labels != nil {
		start["labels"] = labels
	}
	if err := ws.WriteJSON(start); err != nil {
		t.Fatal(err)
	}
	msgs := make(chan scoreMsg, 256)
	closed := make(chan *websocket.CloseError, 1)
	go func() {
		defer close(msgs)
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				ce, _ := err.(*websocket.CloseError)
				closed <- ce
				return
			}
			var m scoreMsg
			if err := json.Unmarshal(data, &m); err != nil {
				t.Errorf("server sent bad JSON %q: %v", data, err)
			}
			m.arrived = time.Now()
			msgs <- m
		}
	}()
	frame := rec.Format.BytesPerSecond() / 50
	perSecond := rec.Format.BytesPerSecond()
	var secondSent []time.Time
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for off := 0; off < len(rec.Data); off += frame {
		<-tick.C // real-time pace, as a PBX sends
		end := min(off+frame, len(rec.Data))
		if end%perSecond == 0 || end == len(rec.Data) {
			// The moment the frame completing a second starts on its way:
			// no score for that second can arrive before it.
			secondSent = append(secondSent, time.Now())
		}
		if err := ws.WriteMessage(websocket.BinaryMessage, rec.Data[off:end]); err != nil {
			t.Fatal(err)
		}
	}
	if err := ws.WriteJSON(map[string]string{"type": "stop"}); err != nil {
		t.Fatal(err)
	}
	var got []scoreMsg
	timeout := time.After(30 * time.Second)
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				return got, secondSent, <-closed
			}
			got = append(got, m)
			if m.Type == "stopped" {
				ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
			}
		case <-timeout:
			t.Fatal("no close from the server 30 s after stop")
		}
	}
}

// talkTruth sums each role's speech segments in the test file.
func talkTruth(t *testing.T, path string) map[string]float64 {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, r := range rows[1:] {
		a, _ := strconv.ParseFloat(r[2], 64)
		b, _ := strconv.ParseFloat(r[3], 64)
		out[r[1]] += b - a
	}
	return out
}

func TestEndToEndNativeCall(t *testing.T) {
	dir := t.TempDir()
	keys := writeTenants(t, dir, "acme", "globex")
	srv := startServe(t, "--data-dir", dir, "--tenants", filepath.Join(dir, "tenants.yaml"))

	msgs, secondSent, closeErr := streamWAV(t, srv.addrs["gateway"], keys["acme"], "call-e2e-1", "testdata/call_emodb_9s.wav")
	if closeErr == nil || closeErr.Code != websocket.CloseNormalClosure {
		t.Errorf("close = %v; want 1000 after stop", closeErr)
	}
	var scores []scoreMsg
	var stopped *scoreMsg
	for i, m := range msgs {
		switch m.Type {
		case "score":
			scores = append(scores, m)
		case "stopped":
			stopped = &msgs[i]
		}
	}
	// A score for every second of the 9 s call, in order, each labelled
	// with the model that made it.
	if len(scores) != 9 {
		t.Fatalf("%d score messages for a 9 s call; want 9: %+v", len(scores), scores)
	}
	var gaps []float64
	for i, s := range scores {
		if s.Second != i || s.CallID != "call-e2e-1" || s.EndSample != uint64(i+1)*8000 {
			t.Errorf("score %d: second %d, call %q, end %d", i, s.Second, s.CallID, s.EndSample)
		}
		if s.Model.Name == "" || s.Model.Version == "" {
			t.Errorf("score %d carries no model label: %+v", i, s.Model)
		}
		if s.CallerPressure == nil && s.Abstain["caller_pressure"] == "" {
			t.Errorf("score %d: caller_pressure neither scored nor abstained with a reason", i)
		}
		// Scores carry one decimal on the wire.
		for _, v := range []*float64{s.CallerPressure, s.AgentStress} {
			if v != nil && math.Round(*v*10)/10 != *v {
				t.Errorf("score %d: %v has more than one decimal", i, *v)
			}
		}
		// Scores follow the audio: none before its second was sent.
		if s.arrived.Before(secondSent[i]) {
			t.Errorf("score for second %d arrived before its audio was sent", i)
		}
		if i > 0 {
			gaps = append(gaps, s.arrived.Sub(scores[i-1].arrived).Seconds())
		}
	}
	sort.Float64s(gaps)
	if med := gaps[len(gaps)/2]; med < 0.7 || med > 1.3 {
		t.Errorf("scores arrived every %.2f s (median); want about every second", med)
	}
	if stopped == nil || stopped.Report == nil || math.Abs(stopped.Report.DurationS-9) > 0.02 {
		t.Fatalf("stopped message %+v; want a report summary of a 9 s call", stopped)
	}

	// The report over REST: right duration and talk time per channel.
	fullcall := srv.addrs["fullcall"]
	get := func(key, path string) (int, []byte) {
		req, _ := http.NewRequest("GET", "http://"+fullcall+path, nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	code, body := get(keys["acme"], stopped.Report.URL)
	if code != 200 {
		t.Fatalf("GET %s = %d %s", stopped.Report.URL, code, body)
	}
	var rep struct {
		TenantID  string  `json:"tenant_id"`
		CallID    string  `json:"call_id"`
		AgentID   string  `json:"agent_id"`
		DurationS float64 `json:"duration_s"`
		Model     struct{ Name, Version string }
		Channels  []struct {
			Role  string  `json:"role"`
			TalkS float64 `json:"talk_s"`
		}
		Timeline []json.RawMessage
	}
	if err := json.Unmarshal(body, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.TenantID != "acme" || rep.CallID != "call-e2e-1" || rep.AgentID != "agent-42" || rep.Model.Name == "" {
		t.Errorf("report identity %+v", rep)
	}
	if math.Abs(rep.DurationS-9.0) > 0.02 {
		t.Errorf("report duration %.3f s; want 9.000 ± 0.020", rep.DurationS)
	}
	if len(rep.Timeline) != 9 {
		t.Errorf("report timeline has %d points; want 9", len(rep.Timeline))
	}
	// The report is built from realtime's per-second analyses: fullcall
	// analyses only what they do not cover (at most the last second, if
	// realtime's answer to the hang-up came after the gateway's bounded
	// wait).
	if fromRT, fromFC := secondsAnalysed(t, fullcall, 9); fromRT+fromFC != 9 || fromRT < 8 {
		t.Errorf("seconds analysed: %d by realtime, %d by fullcall; want 9, at least 8 by realtime", fromRT, fromFC)
	}
	truth := talkTruth(t, "testdata/call_emodb_9s.segments.csv")
	if len(rep.Channels) != 2 {
		t.Fatalf("report channels %+v", rep.Channels)
	}
	for i, role := range []string{"caller", "agent"} {
		ch := rep.Channels[i]
		if !strings.HasSuffix(strings.ToLower(ch.Role), role) {
			t.Errorf("channel %d role %q; want %s", i, ch.Role, role)
		}
		if math.Abs(ch.TalkS-truth[role]) > 0.5 {
			t.Errorf("%s talk time %.2f s; the segments say %.2f s", role, ch.TalkS, truth[role])
		}
	}

	// Another tenant streams its own call, and cannot read acme's report
	// over REST or gRPC.
	other, _, closeErr := streamWAV(t, srv.addrs["gateway"], keys["globex"], "call-e2e-2", "testdata/call_emodb_9s.wav")
	if closeErr == nil || closeErr.Code != websocket.CloseNormalClosure || len(other) == 0 || other[len(other)-1].Type != "stopped" {
		t.Errorf("globex's call: close %v, last message %+v", closeErr, other[len(other)-1])
	}
	if code, body := get(keys["globex"], "/api/v1/reports/call-e2e-1"); code != 404 {
		t.Errorf("globex reading acme's report over REST: %d %s; want 404", code, body)
	}
	if code, _ := get(keys["globex"], "/api/v1/reports/call-e2e-2"); code != 200 {
		t.Errorf("globex reading its own report: %d; want 200", code)
	}
	cc, err := grpc.NewClient(fullcall, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+keys["globex"])
	if _, err := fullcallv1.NewReportServiceClient(cc).GetReport(ctx, &fullcallv1.GetReportRequest{CallId: "call-e2e-1"}); status.Code(err) != codes.NotFound {
		t.Errorf("globex reading acme's report over gRPC: %v; want NotFound", err)
	}
	ctx = metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+keys["acme"])
	if r, err := fullcallv1.NewReportServiceClient(cc).GetReport(ctx, &fullcallv1.GetReportRequest{CallId: "call-e2e-1"}); err != nil || math.Abs(r.Report.DurationS-9) > 0.02 {
		t.Errorf("acme reading its report over gRPC: %v", err)
	}
	srv.stop(t)
}

func TestServeCreatesTheDemoTenant(t *testing.T) {
	dir := t.TempDir()
	srv := startServe(t, "--data-dir", dir)
	_, rest, _ := strings.Cut(srv.waitLine(t, "API key "), "API key ")
	key, _, _ := strings.Cut(rest, " ")
	if !strings.HasPrefix(key, tenant.KeyPrefix) {
		t.Fatalf("no demo key printed:\n%s", strings.Join(srv.output(), "\n"))
	}
	req, _ := http.NewRequest("GET", "http://"+srv.addrs["fullcall"]+"/api/v1/reports", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("listing reports with the demo key: %d; want 200", resp.StatusCode)
	}
	srv.stop(t)
	// Service identity is on by default: serve made the deployment secret,
	// readable by its owner only.
	secretPath := filepath.Join(dir, identity.SecretFileName)
	st, err := os.Stat(secretPath)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("service identity secret: %v, %v; want a 0600 file", st, err)
	}
	first, _ := os.ReadFile(secretPath)
	if strings.Contains(strings.Join(srv.output(), "\n")+srv.logs.String(), strings.TrimSpace(strings.Split(string(first), "\n")[1])) {
		t.Error("the service identity secret was printed or logged")
	}
	// A second start reuses the tenant and shows the same key.
	again := startServe(t, "--data-dir", dir)
	again.waitLine(t, key)
	again.stop(t)
	if b, _ := os.ReadFile(secretPath); string(b) != string(first) {
		t.Error("a second start replaced the service identity secret")
	}
}
