package escalation

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	escalationv1 "github.com/calmline/calmline/proto/calmline/escalation/v1"
)

func TestCareRulesRecommendOncePerWindow(t *testing.T) {
	rcv := newReceiver(t, nil)
	st := startStack(t, fmt.Sprintf(`    exposure_threshold: 70
    escalation:
      endpoints:
        - {name: care-team, url: '%s', events: [agent.care_recommended]}
        - {name: intervention, url: '%s'}
      ladder:
        - {name: transfer, action: transfer, endpoint: intervention, after: 1h}
      care:
        rules:
          - {id: three-in-an-hour, window: 1h, high_pressure_calls: 3, recommend: break}
          - {id: long-exposure, window: 8h, exposure_minutes: 20, recommend: counsellor}
`, rcv.srv.URL, rcv.srv.URL), nil)
	cc := escalationv1.NewCareServiceClient(st.cc)
	t0 := time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)
	record := func(call, agent string, endedAfter time.Duration, peak float64, exposure uint32, escalated bool) {
		t.Helper()
		end := t0.Add(endedAfter)
		if _, err := cc.RecordCall(context.Background(), &escalationv1.RecordCallRequest{TenantId: "acme", CallId: call, AgentId: agent,
			StartedAt: timestamppb.New(end.Add(-5 * time.Minute)), EndedAt: timestamppb.New(end), CallerPressurePeak: peak,
			ExposureSeconds: exposure, Escalated: escalated}); err != nil {
			t.Fatal(err)
		}
	}
	// c1 escalates: its transfer (due in an hour) must not outlive the call.
	esc := st.post(t, firing("c1", 1))[0]
	record("c1", "agent-7", 0, 80, 300, false)
	record("c1", "agent-7", 0, 80, 300, false) // recorded twice: counted once
	record("c2", "agent-7", 10*time.Minute, 50, 300, true)
	record("x1", "agent-9", 15*time.Minute, 95, 900, true) // another agent
	record("c3", "agent-7", 20*time.Minute, 90, 300, false)
	got := rcv.collect(t, 1, 5*time.Second)
	care := got[0].Data["care"].(map[string]any)
	if got[0].Type != "agent.care_recommended" || got[0].Data["agent_id"] != "agent-7" || care["rule_id"] != "three-in-an-hour" ||
		care["recommendation"] != "break" || care["high_pressure_calls"] != 3.0 {
		t.Fatalf("first recommendation %s", got[0].Body)
	}
	record("c4", "agent-7", 30*time.Minute, 85, 400, false) // 1300 s of exposure in the shift
	got = rcv.collect(t, 1, 5*time.Second)
	if care := got[0].Data["care"].(map[string]any); care["rule_id"] != "long-exposure" || care["recommendation"] != "counsellor" || care["exposure_minutes"].(float64) < 20 {
		t.Fatalf("second recommendation %s", got[0].Body)
	}
	record("c5", "agent-7", 50*time.Minute, 90, 10, false)
	record("c6", "agent-7", 55*time.Minute, 90, 10, false)
	record("c7", "agent-7", 60*time.Minute, 90, 10, false) // three more, but within the hour of the first recommendation
	rcv.quiet(t, 300*time.Millisecond)
	// An hour and more since the first: the calls of the last hour that
	// came after it (c4..c8) count, not c1..c3 again.
	record("c8", "agent-7", 85*time.Minute, 90, 10, false)
	got = rcv.collect(t, 1, 5*time.Second)
	if care := got[0].Data["care"].(map[string]any); care["rule_id"] != "three-in-an-hour" || care["calls"] != 5.0 {
		t.Errorf("third recommendation %s; want three-in-an-hour over c4..c8", got[0].Body)
	}
	rcv.quiet(t, 100*time.Millisecond)
	if e := st.get(t, esc); !e.CallEnded || e.Steps[0].State != escalationv1.StepState_STEP_STATE_SKIPPED || e.Steps[0].Detail != "call ended" {
		t.Errorf("escalation of the ended call: %v", e)
	}
	if k := auditKinds(t, st); k["care.recommended"] != 3 {
		t.Errorf("audit kinds %v; want 3 care.recommended", k)
	}
}
