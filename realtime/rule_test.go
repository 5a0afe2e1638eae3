package realtime

import (
	"testing"

	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
)

func TestRule(t *testing.T) {
	r := &callv1.AlertRule{Id: "cp", Score: callv1.ScoreKind_SCORE_KIND_CALLER_PRESSURE, Threshold: 70, HoldSeconds: 3, ClearBelow: 50, CooldownSeconds: 5}
	const x = -1 // abstained second
	for _, c := range []struct {
		name   string
		scores []float64
		want   map[int]callv1.AlertState // second -> event
	}{
		{"below threshold", []float64{60, 65, 69, 69}, nil},
		{"fires after hold", []float64{75, 80, 90, 95}, map[int]callv1.AlertState{2: callv1.AlertState_ALERT_STATE_FIRING}},
		{"a dip breaks the run", []float64{75, 80, 60, 75, 80, 90}, map[int]callv1.AlertState{5: callv1.AlertState_ALERT_STATE_FIRING}},
		{"abstentions neither count nor break", []float64{75, x, 80, x, x, 90}, map[int]callv1.AlertState{5: callv1.AlertState_ALERT_STATE_FIRING}},
		{"hysteresis then clear", []float64{75, 80, 90, 60, 55, 49}, map[int]callv1.AlertState{2: callv1.AlertState_ALERT_STATE_FIRING, 5: callv1.AlertState_ALERT_STATE_CLEARED}},
		{"cooldown holds off the next episode", []float64{75, 80, 90, 40, 90, 90, 90, 90, 90, 90, 90, 90},
			map[int]callv1.AlertState{2: callv1.AlertState_ALERT_STATE_FIRING, 3: callv1.AlertState_ALERT_STATE_CLEARED, 10: callv1.AlertState_ALERT_STATE_FIRING}},
	} {
		ru := newRule(r, "acme", "c1", 0)
		got := map[int]callv1.AlertState{}
		episodes := map[string]bool{}
		for sec, v := range c.scores {
			if ev := ru.observe(sec, v, v != x); ev != nil {
				got[sec] = ev.State
				episodes[ev.AlertId] = true
				if ev.RuleId != "cp" || ev.Threshold != 70 || ev.Second != uint32(sec) {
					t.Errorf("%s: event %+v", c.name, ev)
				}
			}
		}
		if len(got) != len(c.want) {
			t.Errorf("%s: events %v; want %v", c.name, got, c.want)
			continue
		}
		for sec, st := range c.want {
			if got[sec] != st {
				t.Errorf("%s: second %d: %v; want %v", c.name, sec, got[sec], st)
			}
		}
	}
}

func TestRuleEpisodeIDsContinueAcrossInstances(t *testing.T) {
	r := &callv1.AlertRule{Id: "cp", Threshold: 70, HoldSeconds: 1, ClearBelow: 50}
	// Another instance already raised two episodes for this call.
	ru := newRule(r, "acme", "c1", 2)
	ev := ru.observe(0, 90, true)
	if ev == nil || ev.Episode != 3 || ev.AlertId != "acme/c1/cp/3" {
		t.Fatalf("event %+v; want episode 3 with id acme/c1/cp/3", ev)
	}
	if again := ru.observe(1, 95, true); again != nil {
		t.Errorf("a firing episode fired again: %+v", again)
	}
}

func TestPolicyRuleKeepsAgentScoresOutUnlessOn(t *testing.T) {
	stress := &callv1.AlertRule{Id: "as", Score: callv1.ScoreKind_SCORE_KIND_AGENT_STRESS, Threshold: 70}
	for _, c := range []struct {
		mode callv1.AgentScoring
		want callv1.ScoreKind
	}{
		{callv1.AgentScoring_AGENT_SCORING_ON, callv1.ScoreKind_SCORE_KIND_AGENT_STRESS},
		{callv1.AgentScoring_AGENT_SCORING_UNSPECIFIED, callv1.ScoreKind_SCORE_KIND_AGENT_STRESS},
		{callv1.AgentScoring_AGENT_SCORING_PRIVATE, callv1.ScoreKind_SCORE_KIND_CALLER_PRESSURE},
		{callv1.AgentScoring_AGENT_SCORING_OFF, callv1.ScoreKind_SCORE_KIND_CALLER_PRESSURE},
	} {
		p := &callv1.CallPolicy{AgentScoring: c.mode, AlertRule: stress}
		r := policyRule(p)
		if r.Score != c.want || r.Threshold != 70 || r.Id != "as" {
			t.Errorf("%v: rule %v; want score %v", c.mode, r, c.want)
		}
		ru := newRule(r, "acme", "c1", 0)
		if ev := ru.observe(0, 90, true); ev == nil || ev.Score != c.want {
			t.Errorf("%v: event %v; want it to name %v", c.mode, ev, c.want)
		}
	}
	if stress.Score != callv1.ScoreKind_SCORE_KIND_AGENT_STRESS {
		t.Error("policyRule changed the policy it was given")
	}
	if policyRule(&callv1.CallPolicy{}) != nil {
		t.Error("a policy without a rule got one")
	}
}
