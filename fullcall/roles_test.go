package fullcall

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/calmline/calmline/lib/sqldb/sqldbtest"
	"github.com/calmline/calmline/lib/tenant"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// TestPrivateModeAndOwnAgent: with agent_scoring private, agent_stress
// reaches the care team and the call's own agent only; another agent's key
// does not find the report at all.
func TestPrivateModeAndOwnAgent(t *testing.T) {
	keys := map[string]string{"care": tenant.NewKey(), "supervisor": tenant.NewKey(), "agent-1": tenant.NewKey(), "agent-2": tenant.NewKey()}
	tt := newTenants(t, func(tn *tenant.Tenant) {
		if tn.ID != "acme" {
			return
		}
		tn.AgentScoring = tenant.AgentScoringPrivate
		tn.APIKeys = append(tn.APIKeys,
			tenant.APIKey{ID: "care", SHA256: tenant.HashKey(keys["care"]), Role: tenant.KeyRoleCare},
			tenant.APIKey{ID: "sup", SHA256: tenant.HashKey(keys["supervisor"]), Role: tenant.KeyRoleSupervisor},
			tenant.APIKey{ID: "a1", SHA256: tenant.HashKey(keys["agent-1"]), Role: tenant.KeyRoleAgent, AgentID: "agent-1"},
			tenant.APIKey{ID: "a2", SHA256: tenant.HashKey(keys["agent-2"]), Role: tenant.KeyRoleAgent, AgentID: "agent-2"})
	})
	keys["full"] = tt.keys["acme"]
	f := startWith(t, tt, sqldbtest.SQLite(t))
	rep, _, err := f.record(t, f.call("acme", "c1"), turns(6.02), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.AgentStress.GetScored() {
		t.Skip("the synthetic call scored no agent_stress: nothing to hide")
	}
	for who, want := range map[string]struct {
		status int
		stress bool
	}{
		"full": {200, false}, "supervisor": {200, false}, "care": {200, true}, "agent-1": {200, true}, "agent-2": {404, false},
	} {
		code, body := f.get(t, "/api/v1/reports/c1", keys[who])
		if code != want.status {
			t.Errorf("%s: status %d; want %d", who, code, want.status)
			continue
		}
		if got := strings.Contains(string(body), `"agent_stress":{`) || strings.Contains(string(body), `"agentStress":{`); code == http.StatusOK && got != want.stress {
			t.Errorf("%s sees agent_stress: %v; want %v", who, got, want.stress)
		}
		code, body = f.get(t, "/api/v1/reports", keys[who])
		if who == "agent-2" {
			if code != 200 || strings.Contains(string(body), "c1") {
				t.Errorf("agent-2's list: %d %s; want 200 without c1", code, body)
			}
		}
	}
}

// TestMinPeakDoesNotRevealHiddenAgentScores: a report whose caller was
// calm (peak 0.3) but whose agent was stressed (peak 0.9). Keys that may
// not see agent_stress (privacy mode "private" for the full and
// supervisor keys, "off" for every key) get min_peak applied to
// caller_pressure alone, over REST and gRPC, and never an alert on
// agent_stress; the care team and the call's own agent, who see
// agent_stress in private mode, filter on both peaks.
func TestMinPeakDoesNotRevealHiddenAgentScores(t *testing.T) {
	keys := map[string]string{"care": tenant.NewKey(), "supervisor": tenant.NewKey(), "agent-1": tenant.NewKey(), "off-care": tenant.NewKey()}
	tt := newTenants(t, func(tn *tenant.Tenant) {
		switch tn.ID {
		case "acme":
			tn.AgentScoring = tenant.AgentScoringPrivate
			tn.APIKeys = append(tn.APIKeys,
				tenant.APIKey{ID: "care", SHA256: tenant.HashKey(keys["care"]), Role: tenant.KeyRoleCare},
				tenant.APIKey{ID: "sup", SHA256: tenant.HashKey(keys["supervisor"]), Role: tenant.KeyRoleSupervisor},
				tenant.APIKey{ID: "a1", SHA256: tenant.HashKey(keys["agent-1"]), Role: tenant.KeyRoleAgent, AgentID: "agent-1"})
		case "globex":
			tn.AgentScoring = tenant.AgentScoringOff
			tn.APIKeys = append(tn.APIKeys, tenant.APIKey{ID: "care", SHA256: tenant.HashKey(keys["off-care"]), Role: tenant.KeyRoleCare})
		}
	})
	keys["full"], keys["off-full"] = tt.keys["acme"], tt.keys["globex"]
	f := startWith(t, tt, sqldbtest.SQLite(t))
	for _, tid := range []string{"acme", "globex"} {
		r := &fullcallv1.Report{
			TenantId: tid, CallId: "stressed", AgentId: "agent-1", DurationS: 60,
			StartedAt:      timestamppb.New(time.Now().Add(-time.Hour)),
			EndedAt:        timestamppb.New(time.Now().Add(-time.Hour + time.Minute)),
			CallerPressure: &fullcallv1.ScoreSummary{Scored: true, Peak: 0.3, Threshold: 0.7},
			AgentStress:    &fullcallv1.ScoreSummary{Scored: true, Peak: 0.9, Threshold: 0.7},
			Alerts:         []*callv1.AlertEvent{{AlertId: tid + "/stressed/as/1", Score: callv1.ScoreKind_SCORE_KIND_AGENT_STRESS, Value: 0.9, State: callv1.AlertState_ALERT_STATE_FIRING}},
		}
		if err := f.s.store.PutReport(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	for who, sees := range map[string]bool{"full": false, "supervisor": false, "care": true, "agent-1": true, "off-full": false, "off-care": false} {
		code, body := f.get(t, "/api/v1/reports?min_peak=0.8", keys[who])
		if code != http.StatusOK {
			t.Fatalf("%s: list with min_peak: %d %s", who, code, body)
		}
		if got := strings.Contains(string(body), "stressed"); got != sees {
			t.Errorf("%s: min_peak=0.8 finds the calm caller's call: %v; want %v (%s)", who, got, sees, body)
		}
		ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+keys[who])
		resp, err := fullcallv1.NewReportServiceClient(f.cc).ListReports(ctx, &fullcallv1.ListReportsRequest{MinPeak: 0.8})
		if err != nil {
			t.Fatalf("%s: gRPC ListReports: %v", who, err)
		}
		if got := len(resp.Reports) == 1; got != sees {
			t.Errorf("%s: gRPC min_peak=0.8 finds %d reports; want found=%v", who, len(resp.Reports), sees)
		}
		// The report itself, read in full: no agent-side alert either.
		code, body = f.get(t, "/api/v1/reports/stressed", keys[who])
		if code != http.StatusOK {
			t.Fatalf("%s: get: %d %s", who, code, body)
		}
		if got := strings.Contains(string(body), "AGENT_STRESS"); got != sees {
			t.Errorf("%s: the report shows an agent_stress alert: %v; want %v (%s)", who, got, sees, body)
		}
		// The agent summary rests on caller_pressure alone for every key:
		// the stressed agent's calm call is neither high-pressure nor
		// exposure.
		sum, err := fullcallv1.NewReportServiceClient(f.cc).GetAgentSummary(ctx, &fullcallv1.GetAgentSummaryRequest{AgentId: "agent-1"})
		if err != nil {
			t.Fatalf("%s: GetAgentSummary: %v", who, err)
		}
		if s := sum.Summary; s.Calls != 1 || s.HighPressureCalls != 0 || s.ExposureMinutes != 0 {
			t.Errorf("%s: summary %v; want 1 call, no high-pressure call, no exposure", who, s)
		}
	}
}
