package tenant

import (
	"strings"
	"testing"
)

func TestAlertRulesByLabels(t *testing.T) {
	ts, err := Parse([]byte(`tenants:
  - id: a
    alert_rule: {id: everyone, score: caller_pressure, threshold: 70}
    alert_rules:
      - {id: vip, match: {queue: vip}, score: caller_pressure, threshold: 50, hold_seconds: 2}
      - {id: night-billing, match: {queue: billing, shift: night}, score: caller_pressure, threshold: 60, clear_below: 40}
  - id: b
    alert_rules:
      - {id: vip, match: {queue: vip}, score: caller_pressure, threshold: 50}
      - {id: care, match: {group: trainees}, score: caller_pressure, threshold: 40}
  - id: c
`))
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := ts[0], ts[1], ts[2]
	ids := func(tn *Tenant, labels map[string]string) string {
		var out []string
		for _, r := range tn.Rules() {
			if r.Matches(labels) {
				out = append(out, r.ID)
			}
		}
		return strings.Join(out, ",")
	}
	for _, tc := range []struct {
		tn     *Tenant
		labels map[string]string
		want   string
	}{
		{a, nil, "everyone"},
		{a, map[string]string{"queue": "vip"}, "everyone,vip"},
		{a, map[string]string{"queue": "billing"}, "everyone"},
		{a, map[string]string{"queue": "billing", "shift": "night", "skill": "de"}, "everyone,night-billing"},
		{b, map[string]string{"queue": "sales"}, ""}, // only label rules: no rule for every call
		{b, map[string]string{"queue": "vip", "group": "trainees"}, "vip,care"},
		{c, nil, "caller-pressure"}, // neither: the default rule
	} {
		if got := ids(tc.tn, tc.labels); got != tc.want {
			t.Errorf("tenant %s, labels %v: rules %q; want %q", tc.tn.ID, tc.labels, got, tc.want)
		}
	}
	if a.ExposureThreshold != 70 || b.ExposureThreshold != 40 {
		t.Errorf("exposure thresholds %v, %v; want the catch-all's 70 and the lowest label rule's 40", a.ExposureThreshold, b.ExposureThreshold)
	}
	if r := a.Rules()[2]; r.ClearBelow != 40 || r.HoldSeconds != 0 || a.Rules()[1].ClearBelow != 50 {
		t.Errorf("defaults not filled: %+v", a.Rules())
	}
}

func TestAlertRulesErrors(t *testing.T) {
	many := "    alert_rules:\n"
	for range MaxAlertRules + 1 {
		many += "      - {id: r, score: caller_pressure, threshold: 50}\n"
	}
	for _, tc := range []struct{ rules, want string }{
		{"    alert_rules: [{score: caller_pressure, threshold: 50}]\n", "alert_rules[0]: id is required"},
		{"    alert_rules: [{id: Vip, score: caller_pressure, threshold: 50}]\n", `alert_rules[0].id "Vip" must match`},
		{"    alert_rules: [{id: v, score: anger, threshold: 50}]\n", `alert_rules[0].score "anger"`},
		{"    alert_rules: [{id: v, score: caller_pressure, threshold: 150}]\n", "alert_rules[0].threshold 150"},
		{"    alert_rules: [{id: v, match: {queue: VIP Support}, score: caller_pressure, threshold: 50}]\n", `alert_rules[0].match["queue"] has byte 0x20`},
		{"    alert_rule: {id: v, score: caller_pressure, threshold: 50}\n    alert_rules: [{id: v, score: caller_pressure, threshold: 60}]\n", `alert rule id "v" used twice`},
		{"    agent_scoring: private\n    alert_rules: [{id: v, score: agent_stress, threshold: 50}]\n", "alert_rules[0] scores agent_stress but agent_scoring is private"},
		{"    alert_rules: [{id: v, selector: {queue: vip}, score: caller_pressure, threshold: 50}]\n", "field selector not found"},
		{many, "65 rules, at most 64"},
	} {
		_, err := Parse([]byte("tenants:\n  - id: a\n" + tc.rules))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want %q", tc.rules, err, tc.want)
		}
	}
}
