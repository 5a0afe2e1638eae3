package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/grpc"

	"github.com/calmline/calmline/lib/tenant"
)

// otlpSpan is a span the test's OTLP receiver got.
type otlpSpan struct {
	service, name     string
	trace, id, parent string
	attrs             map[string]string
	linkedTraces      []string
}

// otlpReceiver is an OTLP/gRPC trace collector: it keeps every span.
type otlpReceiver struct {
	coltracepb.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []otlpSpan
}

func attrMap(kvs []*commonpb.KeyValue) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		if v, ok := kv.Value.GetValue().(*commonpb.AnyValue_IntValue); ok {
			m[kv.Key] = fmt.Sprint(v.IntValue)
			continue
		}
		m[kv.Key] = kv.Value.GetStringValue()
	}
	return m
}

func (r *otlpReceiver) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		service := attrMap(rs.Resource.GetAttributes())["service.name"]
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				s := otlpSpan{service: service, name: sp.Name, trace: hex.EncodeToString(sp.TraceId), id: hex.EncodeToString(sp.SpanId),
					parent: hex.EncodeToString(sp.ParentSpanId), attrs: attrMap(sp.Attributes)}
				for _, l := range sp.Links {
					s.linkedTraces = append(s.linkedTraces, hex.EncodeToString(l.TraceId))
				}
				r.spans = append(r.spans, s)
			}
		}
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func startOTLP(t *testing.T) (*otlpReceiver, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &otlpReceiver{}
	srv := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(srv, r)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return r, lis.Addr().String()
}

// TestOneTracePerCall streams a call whose agent turns angry through the
// real calmline serve, exporting to an in-process OTLP receiver, and checks
// the call's one trace: the call's span (the WebSocket session) is its
// root; its gRPC streams into realtime and fullcall, realtime's alert and
// its asynchronous post into escalation, escalation's ladder step and the
// step's webhook attempt all descend from it; every span of it names the
// call; each service reports its own service.name.
func TestOneTracePerCall(t *testing.T) {
	t.Parallel() // its own calmline serve on free ports: it waits alongside the others
	rcv, otlpAddr := startOTLP(t)
	dir := t.TempDir()
	key := tenant.NewKey()
	oncall := newEndpoint(t, nil, "", 0)
	// The agent in the recording turns angry: this rule fires on it, and
	// the ladder notifies the on-call team.
	tenants := fmt.Sprintf(`tenants:
  - id: acme
    api_keys: [{id: acme-1, sha256: %s}]
    agent_scoring: "on"
    alert_rule: {id: agent-anger, score: agent_stress, threshold: 70, hold_seconds: 2, clear_below: 10, cooldown_seconds: 600}
    escalation:
      endpoints: [{name: on-call, url: '%s/hooks/calmline'}]
      ladder: [{name: notify-on-call, action: notify, endpoint: on-call}]
`, tenant.HashKey(key), oncall.srv.URL)
	if err := os.WriteFile(filepath.Join(dir, "tenants.yaml"), []byte(tenants), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startServe(t, "--data-dir", dir, "--tenants", filepath.Join(dir, "tenants.yaml"),
		"--otlp-endpoint", otlpAddr, "--otlp-insecure")
	const callID = "traced-1"
	streamWAV(t, srv.addrs["gateway"], key, callID, "testdata/call_agent_turns_angry.wav")
	oncall.collect(t, 1, 30*time.Second) // the ladder's notification
	srv.stop(t)                          // flushes the exporters

	rcv.mu.Lock()
	spans := append([]otlpSpan(nil), rcv.spans...)
	rcv.mu.Unlock()
	var call *otlpSpan
	for i, s := range spans {
		if s.service == "calmline-gateway" && s.name == "call" && s.attrs["calmline.call_id"] == callID {
			call = &spans[i]
		}
	}
	if call == nil {
		t.Fatalf("no span \"call\" from calmline-gateway for %s among %d spans", callID, len(spans))
	}
	byID := map[string]otlpSpan{}
	var tree []otlpSpan
	for _, s := range spans {
		if s.trace == call.trace {
			byID[s.id] = s
			tree = append(tree, s)
		}
	}
	// The root: the call's span (the WebSocket session, whatever the
	// protocol).
	var root *otlpSpan
	for i, s := range tree {
		if s.parent == "" {
			if root != nil {
				t.Errorf("two roots in the call's trace: %q and %q", root.name, s.name)
			}
			root = &tree[i]
		}
	}
	if root == nil || root.id != call.id || call.attrs["calmline.protocol"] != "native" {
		t.Fatalf("root %+v; want the gateway's call span, protocol native", root)
	}
	// Every span descends from the root and names the call.
	for _, s := range tree {
		for p, hops := s, 0; p.parent != ""; hops++ {
			next, ok := byID[p.parent]
			if !ok || hops > 20 {
				t.Errorf("%s %q: its parent chain breaks at %q", s.service, s.name, p.name)
				break
			}
			p = next
		}
		if s.attrs["calmline.call_id"] != callID {
			t.Errorf("%s %q has calmline.call_id %q; want %q", s.service, s.name, s.attrs["calmline.call_id"], callID)
		}
	}
	want := []struct{ service, name string }{
		{"calmline-gateway", "calmline.realtime.v1.RealtimeService/Analyze"},
		{"calmline-gateway", "calmline.fullcall.v1.IngestService/Record"},
		{"calmline-realtime", "calmline.realtime.v1.RealtimeService/Analyze"},
		{"calmline-fullcall", "calmline.fullcall.v1.IngestService/Record"},
		{"calmline-realtime", "alert"},
		{"calmline-realtime", "post alerts"},
		{"calmline-escalation", "calmline.escalation.v1.AlertService/PostAlerts"},
		{"calmline-escalation", "escalation step"},
		{"calmline-escalation", "webhook attempt"},
	}
	for _, w := range want {
		found := false
		for _, s := range tree {
			found = found || s.service == w.service && s.name == w.name
		}
		if !found {
			var got []string
			for _, s := range tree {
				got = append(got, s.service+" "+s.name)
			}
			t.Errorf("no %s span %q in the call's trace; it has %q", w.service, w.name, got)
		}
	}
	// The ladder's step is a child of the PostAlerts that opened the
	// escalation, and the webhook attempt a child of the step, naming the
	// endpoint (never its URL), the attempt and the answer.
	var steps, attempts []otlpSpan
	for _, s := range tree {
		switch s.name {
		case "escalation step":
			steps = append(steps, s)
		case "webhook attempt":
			attempts = append(attempts, s)
		}
	}
	if len(steps) != 1 || len(attempts) != 1 {
		t.Fatalf("%d step and %d attempt spans; want one each (one escalation, one notification)", len(steps), len(attempts))
	}
	if p := byID[steps[0].parent]; p.name != "calmline.escalation.v1.AlertService/PostAlerts" || p.service != "calmline-escalation" {
		t.Errorf("the step's parent is %s %q; want escalation's PostAlerts", p.service, p.name)
	}
	if st := steps[0].attrs; st["calmline.escalation.step"] != "notify-on-call" || st["calmline.escalation.endpoint"] != "on-call" {
		t.Errorf("step span attributes %v", st)
	}
	a := attempts[0]
	if a.parent != steps[0].id {
		t.Errorf("the webhook attempt's parent is %q; want the step", byID[a.parent].name)
	}
	if a.attrs["calmline.escalation.endpoint"] != "on-call" || a.attrs["calmline.delivery.attempt"] != "1" ||
		a.attrs["http.response.status_code"] != "200" || a.attrs["calmline.delivery.outcome"] != "succeeded" {
		t.Errorf("webhook attempt span attributes %v", a.attrs)
	}
	for k, v := range a.attrs {
		if strings.Contains(v, "127.0.0.1") {
			t.Errorf("the attempt's %s holds the endpoint's URL: %q", k, v)
		}
	}
}

// TestOneTracePerUpload posts a recording to calmline serve's REST API,
// exporting to an in-process OTLP receiver: the upload is the root of its
// call's trace ("recording", from calmline-fullcall, linked to the HTTP
// request), with the analysis and the report's write as its children,
// every span naming the call.
func TestOneTracePerUpload(t *testing.T) {
	t.Parallel()
	rcv, otlpAddr := startOTLP(t)
	dir := t.TempDir()
	key := tenant.NewKey()
	tenants := fmt.Sprintf("tenants:\n  - id: acme\n    api_keys: [{id: acme-1, sha256: %s}]\n", tenant.HashKey(key))
	if err := os.WriteFile(filepath.Join(dir, "tenants.yaml"), []byte(tenants), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startServe(t, "--data-dir", dir, "--tenants", filepath.Join(dir, "tenants.yaml"),
		"--otlp-endpoint", otlpAddr, "--otlp-insecure")
	wav, err := os.ReadFile("testdata/call_agent_turns_angry.wav")
	if err != nil {
		t.Fatal(err)
	}
	const callID = "uploaded-1"
	req, _ := http.NewRequest("POST", "http://"+srv.addrs["fullcall"]+"/api/v1/recordings?call_id="+callID, bytes.NewReader(wav))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("upload: %d %s", resp.StatusCode, body)
	}
	srv.stop(t) // flushes the exporters

	rcv.mu.Lock()
	spans := append([]otlpSpan(nil), rcv.spans...)
	rcv.mu.Unlock()
	var root *otlpSpan
	for i, s := range spans {
		if s.service == "calmline-fullcall" && s.name == "recording" && s.attrs["calmline.call_id"] == callID {
			root = &spans[i]
		}
	}
	if root == nil {
		t.Fatalf("no span \"recording\" from calmline-fullcall for %s among %d spans", callID, len(spans))
	}
	if root.parent != "" {
		t.Errorf("the upload's span has a parent; want the root of its trace")
	}
	if len(root.linkedTraces) != 1 {
		t.Errorf("the upload's span links %d traces; want the HTTP request's", len(root.linkedTraces))
	}
	children := map[string]int{}
	for _, s := range spans {
		if s.trace != root.trace || s.id == root.id {
			continue
		}
		if s.parent != root.id {
			t.Errorf("%s %q is not a child of the upload's span", s.service, s.name)
		}
		if s.attrs["calmline.call_id"] != callID {
			t.Errorf("%s %q has calmline.call_id %q; want %q", s.service, s.name, s.attrs["calmline.call_id"], callID)
		}
		children[s.name]++
	}
	if children["analysis"] != 1 || children["report write"] != 1 {
		t.Errorf("the upload's children %v; want one analysis and one report write", children)
	}
}
