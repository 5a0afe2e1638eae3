package escalation

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/calmline/calmline/lib/identity/identitytest"
	"github.com/calmline/calmline/lib/sqldb/sqldbtest"
	"github.com/calmline/calmline/lib/tenant"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	escalationv1 "github.com/calmline/calmline/proto/calmline/escalation/v1"
)

func TestMain(m *testing.M) {
	code := m.Run()
	sqldbtest.Stop()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// newDatabase makes the store a test's escalation runs on: a SQLite file
// (and its path, for the tests that inspect the file), or, under
// TestOnPostgres, a fresh PostgreSQL database.
var newDatabase = func(t testing.TB) (dsn, path string) {
	path = filepath.Join(t.TempDir(), "escalation.db")
	return "sqlite:" + path, path
}

// TestOnPostgres runs the suites that exercise the store again on a real
// PostgreSQL server: the outbox, the ladder, inhibition, restarts, care
// rules and idempotent intake must behave alike on both stores.
func TestOnPostgres(t *testing.T) {
	saved := newDatabase
	newDatabase = func(t testing.TB) (string, string) { return sqldbtest.Postgres(t), "" }
	defer func() { newDatabase = saved }()
	for _, c := range []struct {
		name string
		f    func(*testing.T)
	}{
		{"idempotent and tenant-scoped", TestAlertsAreIdempotentAndTenantScoped},
		{"acknowledge and resolve", TestRESTAcknowledgeAndResolve},
		{"delivered in order once", TestEveryEscalationDeliveredInOrderOnce},
		{"dead letter and redrive", TestDeadLetterAndRedrive},
		{"ladder, one open, privacy", TestLadderSkipsAtMostOneOpenAndPrivacy},
		{"inhibition", TestInhibitionWhileTransferInProgress},
		{"outbox survives restart", TestOutboxSurvivesRestart},
		{"care rules", TestCareRulesRecommendOncePerWindow},
		{"silences", TestSilencesMuteMatchingEscalations},
		{"trace continues across the outbox", TestOutboxContinuesTheCallsTrace},
	} {
		t.Run(c.name, c.f)
	}
}

type fixture struct {
	cc   *grpc.ClientConn
	base string
	keys map[string]string
}

func start(t *testing.T) *fixture {
	t.Helper()
	keys := map[string]string{"acme": tenant.NewKey(), "globex": tenant.NewKey()}
	var ts []*tenant.Tenant
	for id, k := range keys {
		ts = append(ts, &tenant.Tenant{ID: id, APIKeys: []tenant.APIKey{{ID: id + "-1", SHA256: tenant.HashKey(k)}}})
	}
	reg, err := tenant.NewRegistry(ts)
	if err != nil {
		t.Fatal(err)
	}
	o := DefaultOptions()
	o.Tenants = reg
	o.Database, _ = newDatabase(t)
	o.Now = func() time.Time { return time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC) }
	o.Identity = identitytest.Keyring(t)
	s, err := New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(context.Background(), lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(), append(identitytest.DialOptions(o.Identity), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		if err := s.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &fixture{cc: cc, base: "http://" + lis.Addr().String(), keys: keys}
}

func alert(tenantID, call string, episode int, st callv1.AlertState) *escalationv1.Alert {
	id := tenantID + "/" + call + "/cp/" + string(rune('0'+episode))
	return &escalationv1.Alert{TenantId: tenantID, CallId: call, AgentId: "agent-1", Event: &callv1.AlertEvent{
		AlertId: id, RuleId: "cp", Episode: uint32(episode), State: st, Score: callv1.ScoreKind_SCORE_KIND_CALLER_PRESSURE,
		Value: 82, Threshold: 70, At: timestamppb.New(time.Date(2026, 11, 24, 11, 0, episode, 0, time.UTC)),
	}}
}

func (f *fixture) as(id string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+f.keys[id])
}

func TestAlertsAreIdempotentAndTenantScoped(t *testing.T) {
	f := start(t)
	ac := escalationv1.NewAlertServiceClient(f.cc)
	ctx := context.Background()
	firing := alert("acme", "c1", 1, callv1.AlertState_ALERT_STATE_FIRING)
	r1, err := ac.PostAlerts(ctx, &escalationv1.PostAlertsRequest{Alerts: []*escalationv1.Alert{firing}})
	if err != nil {
		t.Fatal(err)
	}
	// The same alert again, as a retry or another realtime instance sends it.
	r2, err := ac.PostAlerts(ctx, &escalationv1.PostAlertsRequest{Alerts: []*escalationv1.Alert{firing, alert("acme", "c1", 1, callv1.AlertState_ALERT_STATE_CLEARED)}})
	if err != nil {
		t.Fatal(err)
	}
	if r1.EscalationIds[0] != r2.EscalationIds[0] || r2.EscalationIds[0] != r2.EscalationIds[1] {
		t.Errorf("ids %v then %v; want one escalation", r1.EscalationIds, r2.EscalationIds)
	}
	if _, err := ac.PostAlerts(ctx, &escalationv1.PostAlertsRequest{Alerts: []*escalationv1.Alert{{TenantId: "acme"}}}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("alert without ids: %v; want InvalidArgument", err)
	}
	ac.PostAlerts(ctx, &escalationv1.PostAlertsRequest{Alerts: []*escalationv1.Alert{alert("globex", "g1", 1, callv1.AlertState_ALERT_STATE_FIRING)}})

	ec := escalationv1.NewEscalationServiceClient(f.cc)
	list, err := ec.ListEscalations(f.as("acme"), &escalationv1.ListEscalationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Escalations) != 1 || !list.Escalations[0].Cleared || list.Escalations[0].State != escalationv1.EscalationState_ESCALATION_STATE_OPEN {
		t.Fatalf("acme sees %v; want its one open, cleared escalation", list.Escalations)
	}
	id := list.Escalations[0].Id
	if _, err := ec.GetEscalation(f.as("globex"), &escalationv1.GetEscalationRequest{Id: id}); status.Code(err) != codes.NotFound {
		t.Errorf("globex reading acme's escalation: %v; want NotFound", err)
	}
	if _, err := ec.ListEscalations(context.Background(), &escalationv1.ListEscalationsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("listing without a key: %v; want Unauthenticated", err)
	}

	ack, err := ec.AcknowledgeEscalation(f.as("acme"), &escalationv1.AcknowledgeEscalationRequest{Id: id, By: "sup-ana"})
	if err != nil || ack.Escalation.AcknowledgedBy != "sup-ana" || ack.Escalation.State != escalationv1.EscalationState_ESCALATION_STATE_ACKNOWLEDGED {
		t.Fatalf("acknowledge = %v, %v", ack, err)
	}
	if _, err := ec.AcknowledgeEscalation(f.as("acme"), &escalationv1.AcknowledgeEscalationRequest{Id: id, By: "sup-ben"}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("second acknowledge: %v; want FailedPrecondition", err)
	}
	res, err := ec.ResolveEscalation(f.as("acme"), &escalationv1.ResolveEscalationRequest{Id: id, By: "sup-ana", Resolution: "caller transferred"})
	if err != nil || res.Escalation.State != escalationv1.EscalationState_ESCALATION_STATE_RESOLVED || res.Escalation.Resolution != "caller transferred" {
		t.Fatalf("resolve = %v, %v", res, err)
	}
}

func TestRESTAcknowledgeAndResolve(t *testing.T) {
	f := start(t)
	resp, err := escalationv1.NewAlertServiceClient(f.cc).PostAlerts(context.Background(),
		&escalationv1.PostAlertsRequest{Alerts: []*escalationv1.Alert{alert("acme", "c9", 1, callv1.AlertState_ALERT_STATE_FIRING)}})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.EscalationIds[0]
	do := func(method, path, key, body string) (int, map[string]any) {
		req, _ := http.NewRequest(method, f.base+path, bytes.NewBufferString(body))
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	acme, globex := f.keys["acme"], f.keys["globex"]
	for _, c := range []struct {
		method, path, key, body string
		want                    int
	}{
		{"GET", "/api/v1/escalations", "", "", 401},
		{"GET", "/api/v1/escalations?state=open", acme, "", 200},
		{"GET", "/api/v1/escalations?state=maybe", acme, "", 400},
		{"GET", "/api/v1/escalations/" + id, globex, "", 404},
		{"POST", "/api/v1/escalations/" + id + "/acknowledge", acme, `{"by":""}`, 400},
		{"POST", "/api/v1/escalations/" + id + "/acknowledge", acme, `not json`, 400},
		{"POST", "/api/v1/escalations/" + id + "/acknowledge", globex, `{"by":"x"}`, 404},
		{"POST", "/api/v1/escalations/" + id + "/acknowledge", acme, `{"by":"sup-ana"}`, 200},
		{"POST", "/api/v1/escalations/" + id + "/acknowledge", acme, `{"by":"sup-ana"}`, 409},
		{"POST", "/api/v1/escalations/" + id + "/resolve", acme, `{"by":"sup-ana","resolution":"talked to agent"}`, 200},
		{"POST", "/api/v1/escalations/" + id + "/resolve", acme, `{"by":"sup-ana"}`, 409},
	} {
		code, body := do(c.method, c.path, c.key, c.body)
		if code != c.want {
			t.Errorf("%s %s: %d %v; want %d", c.method, c.path, code, body, c.want)
		}
	}
	_, got := do("GET", "/api/v1/escalations/"+id, acme, "")
	if got["state"] != "ESCALATION_STATE_RESOLVED" || got["acknowledged_by"] != "sup-ana" || got["resolution"] != "talked to agent" {
		t.Errorf("escalation after the REST calls: %v", got)
	}
}

func TestRecordCallOnce(t *testing.T) {
	f := start(t)
	cc := escalationv1.NewCareServiceClient(f.cc)
	req := &escalationv1.RecordCallRequest{TenantId: "acme", CallId: "c1", AgentId: "agent-1",
		StartedAt: timestamppb.Now(), EndedAt: timestamppb.Now(), CallerPressurePeak: 90, ExposureSeconds: 40, Escalated: true}
	for range 2 {
		if _, err := cc.RecordCall(context.Background(), req); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cc.RecordCall(context.Background(), &escalationv1.RecordCallRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("empty RecordCall: %v; want InvalidArgument", err)
	}
}
