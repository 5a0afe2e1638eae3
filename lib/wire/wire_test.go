package wire

import (
	"testing"

	"github.com/calmline/calmline/lib/tenant"
)

func TestPolicyCarriesEveryRule(t *testing.T) {
	ts, err := tenant.Parse([]byte(`tenants:
  - id: a
    alert_rule: {id: everyone, score: caller_pressure, threshold: 70}
    alert_rules: [{id: vip, match: {queue: vip}, score: caller_pressure, threshold: 50}]
  - id: b
    alert_rules: [{id: vip, match: {queue: vip}, score: caller_pressure, threshold: 50}]
`))
	if err != nil {
		t.Fatal(err)
	}
	p := Policy(ts[0])
	if len(p.AlertRules) != 2 || p.AlertRules[1].MatchLabels["queue"] != "vip" || p.AlertRules[1].Threshold != 50 ||
		p.AlertRule.GetId() != "everyone" || len(p.AlertRule.MatchLabels) != 0 {
		t.Errorf("policy of a: %v", p)
	}
	// Without a rule for every call, the old field stays empty: an older
	// realtime must not apply the VIP rule to every call.
	if p := Policy(ts[1]); p.AlertRule != nil || len(p.AlertRules) != 1 || p.ExposureThreshold != 50 {
		t.Errorf("policy of b: %v", p)
	}
}
