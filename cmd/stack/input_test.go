package stack_test

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/calmline/calmline/cmd/stack"
	"github.com/calmline/calmline/lib/tenant"
	escalationv1 "github.com/calmline/calmline/proto/calmline/escalation/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// TestStrictInput: the limits REST and gRPC share — ids (lib/field.ID),
// finite numbers, free text without control characters, the agent
// summary's period and page sizes — refused alike on both, with nothing
// stored.
func TestStrictInput(t *testing.T) {
	dir := t.TempDir()
	key := tenant.NewKey()
	path := filepath.Join(dir, "tenants.yaml")
	if err := os.WriteFile(path, []byte("tenants:\n  - id: acme\n    api_keys: [{id: k, sha256: "+tenant.HashKey(key)+"}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	reg, err := tenant.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	st, err := stack.New(ctx, stack.Options{DataDir: dir, Tenants: reg})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- st.Serve(ctx) }()
	defer func() { cancel(); <-served }()

	long := strings.Repeat("x", 5000)
	fc, esc := "http://"+st.Addr(stack.Fullcall).String(), "http://"+st.Addr(stack.Escalation).String()
	for _, c := range []struct{ method, url, body string }{
		{"POST", fc + "/api/v1/recordings?call_id=" + long, string(tone())},
		{"POST", fc + "/api/v1/recordings?call_id=a%00b", string(tone())},
		{"POST", fc + "/api/v1/recordings?agent_id=" + url.QueryEscape("ag ent"), string(tone())},
		{"GET", fc + "/api/v1/reports?min_peak=NaN", ""},
		{"GET", fc + "/api/v1/reports?min_peak=Inf", ""},
		{"GET", fc + "/api/v1/reports?agent_id=" + long, ""},
		{"GET", fc + "/api/v1/reports/" + long, ""},
		{"GET", fc + "/api/v1/agents/agent-1/summary?from=1000-01-01T00:00:00Z&to=9999-01-01T00:00:00Z", ""},
		{"GET", fc + "/api/v1/jobs/" + long, ""},
		{"POST", esc + "/api/v1/escalations/esc-1/acknowledge", `{"by": "ana\u0007"}`},
		{"POST", esc + "/api/v1/escalations/esc-1/resolve", `{"by": "ana", "resolution": "done\nforged audit line"}`},
		{"POST", esc + "/api/v1/deliveries/d-1/redrive", `{"by": "ana\u001b[31m"}`},
		{"GET", esc + "/api/v1/escalations/" + long, ""},
		{"GET", esc + "/api/v1/escalations?agent_id=" + url.QueryEscape("a\tb"), ""},
	} {
		req, _ := http.NewRequest(c.method, c.url, strings.NewReader(c.body))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s %.120s: got %d; want 400", c.method, c.url, resp.StatusCode)
		}
	}

	dialT := func(svc string) *grpc.ClientConn {
		cc, err := grpc.NewClient(st.Addr(svc).String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	gctx, gcancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+key), 30*time.Second)
	defer gcancel()
	reports := fullcallv1.NewReportServiceClient(dialT(stack.Fullcall))
	recordings := fullcallv1.NewRecordingServiceClient(dialT(stack.Fullcall))
	escs := escalationv1.NewEscalationServiceClient(dialT(stack.Escalation))
	nan := func() float64 { var z float64; return z / z }()
	for name, call := range map[string]func() error{
		"ListReports min_peak NaN": func() error {
			_, err := reports.ListReports(gctx, &fullcallv1.ListReportsRequest{MinPeak: nan})
			return err
		},
		"GetReport 5,000-byte call_id": func() error {
			_, err := reports.GetReport(gctx, &fullcallv1.GetReportRequest{CallId: long})
			return err
		},
		"GetAgentSummary 9,999 years": func() error {
			_, err := reports.GetAgentSummary(gctx, &fullcallv1.GetAgentSummaryRequest{AgentId: "agent-1",
				From: timestamppb.New(time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC)), To: timestamppb.New(time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC))})
			return err
		},
		"AnalyzeRecording 5,000-byte call_id": func() error {
			_, err := recordings.AnalyzeRecording(gctx, &fullcallv1.AnalyzeRecordingRequest{Recording: &fullcallv1.Recording{CallId: long, Wav: tone()}})
			return err
		},
		"AnalyzeRecording without a recording": func() error {
			_, err := recordings.AnalyzeRecording(gctx, &fullcallv1.AnalyzeRecordingRequest{})
			return err
		},
		"SubmitRecording without a recording": func() error {
			_, err := recordings.SubmitRecording(gctx, &fullcallv1.SubmitRecordingRequest{})
			return err
		},
		"SubmitRecording control char in agent_id": func() error {
			_, err := recordings.SubmitRecording(gctx, &fullcallv1.SubmitRecordingRequest{Recording: &fullcallv1.Recording{AgentId: "a\x01", Wav: tone()}})
			return err
		},
		"Acknowledge by with a bell": func() error {
			_, err := escs.AcknowledgeEscalation(gctx, &escalationv1.AcknowledgeEscalationRequest{Id: "esc-1", By: "ana\a"})
			return err
		},
	} {
		if err := call(); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: got %v; want InvalidArgument", name, err)
		}
	}
	rs, err := reports.ListReports(gctx, &fullcallv1.ListReportsRequest{})
	if err != nil || len(rs.Reports) != 0 {
		t.Errorf("reports after refused uploads: %v, %v; want none", rs, err)
	}
}
