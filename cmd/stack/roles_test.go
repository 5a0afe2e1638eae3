package stack_test

import (
	"context"
	"fmt"
	"net/http"
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
	"google.golang.org/protobuf/proto"

	"github.com/calmline/calmline/cmd/stack"
	"github.com/calmline/calmline/lib/tenant"
	escalationv1 "github.com/calmline/calmline/proto/calmline/escalation/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// restEndpoint is one REST endpoint of the stack and the action it needs.
type restEndpoint struct {
	service, method, path string
	action                tenant.Action
}

// The tenant-facing REST endpoints of every service (docs/api.md).
var restEndpoints = []restEndpoint{
	{stack.Fullcall, "GET", "/api/v1/reports/nope", tenant.ActionReadReports},
	{stack.Fullcall, "GET", "/api/v1/reports/nope/audio", tenant.ActionReadReportAudio},
	{stack.Fullcall, "GET", "/api/v1/reports", tenant.ActionReadReports},
	{stack.Fullcall, "GET", "/api/v1/agents/agent-1/summary", tenant.ActionReadAgentSummary},
	{stack.Fullcall, "POST", "/api/v1/recordings?call_id=walk", tenant.ActionSubmitRecordings},
	{stack.Fullcall, "GET", "/api/v1/jobs/nope", tenant.ActionReadJobs},
	{stack.Escalation, "GET", "/api/v1/escalations", tenant.ActionReadEscalations},
	{stack.Escalation, "GET", "/api/v1/escalations/nope", tenant.ActionReadEscalations},
	{stack.Escalation, "POST", "/api/v1/escalations/nope/acknowledge", tenant.ActionAckEscalations},
	{stack.Escalation, "POST", "/api/v1/escalations/nope/resolve", tenant.ActionResolveEscalations},
	{stack.Escalation, "GET", "/api/v1/deliveries", tenant.ActionReadDeliveries},
	{stack.Escalation, "GET", "/api/v1/deliveries/nope", tenant.ActionReadDeliveries},
	{stack.Escalation, "POST", "/api/v1/deliveries/nope/redrive", tenant.ActionRedriveDeliveries},
	{stack.Escalation, "GET", "/api/v1/audit", tenant.ActionReadAudit},
	{stack.Escalation, "GET", "/api/v1/audit/verify", tenant.ActionReadAudit},
	{stack.Escalation, "POST", "/api/v1/silences", tenant.ActionManageSilences},
	{stack.Escalation, "GET", "/api/v1/silences", tenant.ActionReadSilences},
	{stack.Escalation, "POST", "/api/v1/silences/nope/expire", tenant.ActionManageSilences},
	{stack.Gateway, "GET", "/api/v1/live", tenant.ActionReadLiveFeed},
	{stack.Gateway, "GET", "/ws/native", tenant.ActionStreamCalls},
	{stack.Gateway, "GET", "/ws/twilio", tenant.ActionStreamCalls},
	{stack.Gateway, "GET", "/ws/asterisk?call_id=walk&role=caller", tenant.ActionStreamCalls},
}

// grpcEndpoint is one tenant-facing gRPC method, a request and the action.
type grpcEndpoint struct {
	service, method string
	req, resp       proto.Message
	action          tenant.Action
}

var grpcEndpoints = []grpcEndpoint{
	{stack.Fullcall, fullcallv1.ReportService_GetReport_FullMethodName, &fullcallv1.GetReportRequest{CallId: "nope"}, &fullcallv1.GetReportResponse{}, tenant.ActionReadReports},
	{stack.Fullcall, fullcallv1.ReportService_ListReports_FullMethodName, &fullcallv1.ListReportsRequest{}, &fullcallv1.ListReportsResponse{}, tenant.ActionReadReports},
	{stack.Fullcall, fullcallv1.ReportService_GetAgentSummary_FullMethodName, &fullcallv1.GetAgentSummaryRequest{AgentId: "agent-1"}, &fullcallv1.GetAgentSummaryResponse{}, tenant.ActionReadAgentSummary},
	{stack.Fullcall, fullcallv1.RecordingService_AnalyzeRecording_FullMethodName, &fullcallv1.AnalyzeRecordingRequest{}, &fullcallv1.AnalyzeRecordingResponse{}, tenant.ActionSubmitRecordings},
	{stack.Fullcall, fullcallv1.RecordingService_SubmitRecording_FullMethodName, &fullcallv1.SubmitRecordingRequest{}, &fullcallv1.SubmitRecordingResponse{}, tenant.ActionSubmitRecordings},
	{stack.Fullcall, fullcallv1.RecordingService_GetJob_FullMethodName, &fullcallv1.GetJobRequest{JobId: "nope"}, &fullcallv1.GetJobResponse{}, tenant.ActionReadJobs},
	{stack.Escalation, escalationv1.EscalationService_ListEscalations_FullMethodName, &escalationv1.ListEscalationsRequest{}, &escalationv1.ListEscalationsResponse{}, tenant.ActionReadEscalations},
	{stack.Escalation, escalationv1.EscalationService_GetEscalation_FullMethodName, &escalationv1.GetEscalationRequest{Id: "nope"}, &escalationv1.GetEscalationResponse{}, tenant.ActionReadEscalations},
	{stack.Escalation, escalationv1.EscalationService_AcknowledgeEscalation_FullMethodName, &escalationv1.AcknowledgeEscalationRequest{Id: "nope", By: "walk"}, &escalationv1.AcknowledgeEscalationResponse{}, tenant.ActionAckEscalations},
	{stack.Escalation, escalationv1.EscalationService_ResolveEscalation_FullMethodName, &escalationv1.ResolveEscalationRequest{Id: "nope", By: "walk"}, &escalationv1.ResolveEscalationResponse{}, tenant.ActionResolveEscalations},
	{stack.Escalation, escalationv1.DeliveryService_ListDeliveries_FullMethodName, &escalationv1.ListDeliveriesRequest{}, &escalationv1.ListDeliveriesResponse{}, tenant.ActionReadDeliveries},
	{stack.Escalation, escalationv1.DeliveryService_GetDelivery_FullMethodName, &escalationv1.GetDeliveryRequest{Id: "nope"}, &escalationv1.GetDeliveryResponse{}, tenant.ActionReadDeliveries},
	{stack.Escalation, escalationv1.DeliveryService_RedriveDelivery_FullMethodName, &escalationv1.RedriveDeliveryRequest{Id: "nope", By: "walk"}, &escalationv1.RedriveDeliveryResponse{}, tenant.ActionRedriveDeliveries},
	{stack.Escalation, escalationv1.AuditService_ListAuditEntries_FullMethodName, &escalationv1.ListAuditEntriesRequest{}, &escalationv1.ListAuditEntriesResponse{}, tenant.ActionReadAudit},
	{stack.Escalation, escalationv1.AuditService_VerifyAudit_FullMethodName, &escalationv1.VerifyAuditRequest{}, &escalationv1.VerifyAuditResponse{}, tenant.ActionReadAudit},
	{stack.Escalation, escalationv1.SilenceService_CreateSilence_FullMethodName, &escalationv1.CreateSilenceRequest{}, &escalationv1.CreateSilenceResponse{}, tenant.ActionManageSilences},
	{stack.Escalation, escalationv1.SilenceService_ListSilences_FullMethodName, &escalationv1.ListSilencesRequest{}, &escalationv1.ListSilencesResponse{}, tenant.ActionReadSilences},
	{stack.Escalation, escalationv1.SilenceService_ExpireSilence_FullMethodName, &escalationv1.ExpireSilenceRequest{Id: "nope", By: "walk"}, &escalationv1.ExpireSilenceResponse{}, tenant.ActionManageSilences},
}

// TestRoleWalkCoversEverything keeps the walk complete: every method of
// every tenant-facing gRPC service is walked, and every action (but the
// score-visibility one, tested on reports) has an endpoint.
func TestRoleWalkCoversEverything(t *testing.T) {
	walked := map[string]bool{}
	actions := map[tenant.Action]bool{}
	for _, e := range grpcEndpoints {
		walked[e.method] = true
		actions[e.action] = true
	}
	for _, e := range restEndpoints {
		actions[e.action] = true
	}
	for _, sd := range []grpc.ServiceDesc{fullcallv1.ReportService_ServiceDesc, fullcallv1.RecordingService_ServiceDesc,
		escalationv1.EscalationService_ServiceDesc, escalationv1.DeliveryService_ServiceDesc, escalationv1.AuditService_ServiceDesc,
		escalationv1.SilenceService_ServiceDesc} {
		for _, m := range sd.Methods {
			if name := "/" + sd.ServiceName + "/" + m.MethodName; !walked[name] {
				t.Errorf("%s is not walked", name)
			}
		}
		if len(sd.Streams) > 0 {
			t.Errorf("%s has streaming methods the walk does not cover", sd.ServiceName)
		}
	}
	for _, a := range tenant.Actions {
		if !actions[a] && a != tenant.ActionReadPrivateAgentScores {
			t.Errorf("action %s has no endpoint in the walk", a)
		}
	}
}

// TestRoleTableWalk calls every tenant-facing endpoint, REST and gRPC,
// with a key of every role against a real stack, and fails on any answer
// that disagrees with the table: a refused role must get 403 /
// PERMISSION_DENIED, an allowed one anything but 401/403 (404 for the
// ids that do not exist, 400 for the empty uploads, 200 otherwise).
func TestRoleTableWalk(t *testing.T) {
	dir := t.TempDir()
	keys := map[string]string{}
	var yaml strings.Builder
	yaml.WriteString("tenants:\n  - id: acme\n    agent_scoring: private\n    api_keys:\n")
	for i, role := range tenant.Roles {
		keys[role] = tenant.NewKey()
		fmt.Fprintf(&yaml, "      - {id: k%d, sha256: %s, role: '%s'", i, tenant.HashKey(keys[role]), role)
		if role == tenant.KeyRoleAgent {
			yaml.WriteString(", agent_id: agent-1")
		}
		yaml.WriteString("}\n")
	}
	path := filepath.Join(dir, "tenants.yaml")
	if err := os.WriteFile(path, []byte(yaml.String()), 0o644); err != nil {
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
	t.Cleanup(func() { cancel(); <-served })

	client := &http.Client{Timeout: 10 * time.Second}
	rest := func(method, url, key string) int {
		t.Helper()
		rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer rcancel()
		req, _ := http.NewRequestWithContext(rctx, method, url, strings.NewReader("not a wav"))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		resp.Body.Close() // the live feed streams: its status is enough
		return resp.StatusCode
	}
	conns := map[string]*grpc.ClientConn{}
	for _, svc := range []string{stack.Fullcall, stack.Escalation} {
		cc, err := grpc.NewClient(st.Addr(svc).String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		conns[svc] = cc
	}
	for _, role := range tenant.Roles {
		key := keys[role]
		for _, e := range restEndpoints {
			allowed := tenant.Allows(role, e.action)
			got := rest(e.method, "http://"+st.Addr(e.service).String()+e.path, key)
			if allowed && (got == http.StatusForbidden || got == http.StatusUnauthorized) || !allowed && got != http.StatusForbidden {
				t.Errorf("role %q %s %s (%s, table: %v): got %d", role, e.method, e.path, e.action, tenant.Access(role, e.action), got)
			}
		}
		for _, e := range grpcEndpoints {
			allowed := tenant.Allows(role, e.action)
			gctx, gcancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+key), 10*time.Second)
			err := conns[e.service].Invoke(gctx, e.method, e.req, proto.Clone(e.resp))
			gcancel()
			got := status.Code(err)
			if allowed && (got == codes.PermissionDenied || got == codes.Unauthenticated) || !allowed && got != codes.PermissionDenied {
				t.Errorf("role %q %s (%s, table: %v): got %v", role, e.method, e.action, tenant.Access(role, e.action), err)
			}
		}
	}

	// Own agent: an agent key asking about another agent is refused on
	// both transports; a supervisor's is not.
	fc := "http://" + st.Addr(stack.Fullcall).String()
	for _, c := range []struct {
		role, path string
		want       int
	}{
		{tenant.KeyRoleAgent, "/api/v1/reports?agent_id=agent-2", http.StatusForbidden},
		{tenant.KeyRoleAgent, "/api/v1/agents/agent-2/summary", http.StatusForbidden},
		{tenant.KeyRoleAgent, "/api/v1/reports?agent_id=agent-1", http.StatusOK},
		{tenant.KeyRoleSupervisor, "/api/v1/agents/agent-2/summary", http.StatusOK},
	} {
		if got := rest("GET", fc+c.path, keys[c.role]); got != c.want {
			t.Errorf("role %q GET %s: got %d; want %d", c.role, c.path, got, c.want)
		}
	}
	gctx, gcancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+keys[tenant.KeyRoleAgent]), 10*time.Second)
	defer gcancel()
	if _, err := fullcallv1.NewReportServiceClient(conns[stack.Fullcall]).ListReports(gctx, &fullcallv1.ListReportsRequest{AgentId: "agent-2"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("agent key listing agent-2's reports over gRPC: got %v; want PermissionDenied", err)
	}
	if _, err := fullcallv1.NewReportServiceClient(conns[stack.Fullcall]).GetAgentSummary(gctx, &fullcallv1.GetAgentSummaryRequest{AgentId: "agent-2"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("agent key reading agent-2's summary over gRPC: got %v; want PermissionDenied", err)
	}
}
