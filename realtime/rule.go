package realtime

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
)

// rule evaluates a tenant's alert rule over a call's per-second scores. It
// is pure: scores in, alert events out.
//
// An episode fires when the score is at or above the threshold for
// hold_seconds scored seconds in a row; seconds in which the score abstains
// (the caller is silent while the agent speaks, say) neither count nor
// break the run. It clears at the first scored second below clear_below.
// After a clear, no episode starts for cooldown_seconds.
type rule struct {
	r        *callv1.AlertRule
	tenantID string
	callID   string

	run           uint32 // consecutive scored seconds at or above threshold
	firing        bool
	episode       uint32
	cooldownUntil int // first second a new episode may start
}

func newRule(r *callv1.AlertRule, tenantID, callID string, episodes uint32) *rule {
	return &rule{r: r, tenantID: tenantID, callID: callID, episode: episodes}
}

// policyRule returns the alert rule a call's policy lets realtime apply.
// Agent-side scores set off escalations only with agent scoring on: with
// "off" the score does not exist, with "private" only the agent and the
// care team may see it. A rule on agent_stress under either mode (the
// tenants file refuses one; a policy from elsewhere might carry it) is
// applied to caller_pressure instead, so escalations rest on the caller
// alone.
func policyRule(p *callv1.CallPolicy) *callv1.AlertRule { return safeRule(p, p.GetAlertRule()) }

// callRules returns the alert rules realtime applies to a call: each of the
// policy's alert_rules whose match_labels the call's labels satisfy (every
// label present with the same value), or, from a gateway that sends only
// alert_rule, that one rule. Each is made safe by safeRule.
func callRules(call *callv1.Call) []*callv1.AlertRule {
	p := call.GetPolicy()
	rs := p.GetAlertRules()
	if len(rs) == 0 {
		if r := p.GetAlertRule(); r != nil {
			rs = []*callv1.AlertRule{r}
		}
	}
	var out []*callv1.AlertRule
	for _, r := range rs {
		if matchLabels(r.GetMatchLabels(), call.GetLabels()) {
			out = append(out, safeRule(p, r))
		}
	}
	return out
}

// matchLabels reports whether labels include every entry of match.
func matchLabels(match, labels map[string]string) bool {
	for k, v := range match {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// safeRule returns r as a policy lets realtime apply it (see policyRule).
func safeRule(p *callv1.CallPolicy, r *callv1.AlertRule) *callv1.AlertRule {
	if r == nil || r.Score != callv1.ScoreKind_SCORE_KIND_AGENT_STRESS {
		return r
	}
	switch p.GetAgentScoring() {
	case callv1.AgentScoring_AGENT_SCORING_ON, callv1.AgentScoring_AGENT_SCORING_UNSPECIFIED:
		return r
	}
	safe := proto.Clone(r).(*callv1.AlertRule)
	safe.Score = callv1.ScoreKind_SCORE_KIND_CALLER_PRESSURE
	return safe
}

// score is the score the rule watches.
func (ru *rule) score() callv1.ScoreKind { return ru.r.GetScore() }

// AlertID is the stable id of an alert episode: repeats of the same
// episode, from any realtime instance, carry the same id.
func AlertID(tenantID, callID, ruleID string, episode uint32) string {
	return fmt.Sprintf("%s/%s/%s/%d", tenantID, callID, ruleID, episode)
}

// observe feeds one second's score (ok false: abstained) and returns the
// alert event it causes, if any.
func (ru *rule) observe(second int, value float64, ok bool) *callv1.AlertEvent {
	if ru.r == nil || !ok {
		return nil
	}
	if ru.firing {
		if value < ru.r.ClearBelow {
			ru.firing = false
			ru.run = 0
			ru.cooldownUntil = second + int(ru.r.CooldownSeconds)
			return ru.event(callv1.AlertState_ALERT_STATE_CLEARED, second, value)
		}
		return nil
	}
	if second < ru.cooldownUntil {
		return nil
	}
	if value < ru.r.Threshold {
		ru.run = 0
		return nil
	}
	ru.run++
	if ru.run < max(ru.r.HoldSeconds, 1) {
		return nil
	}
	ru.firing = true
	ru.episode++
	return ru.event(callv1.AlertState_ALERT_STATE_FIRING, second, value)
}

func (ru *rule) event(st callv1.AlertState, second int, value float64) *callv1.AlertEvent {
	return &callv1.AlertEvent{
		AlertId:   AlertID(ru.tenantID, ru.callID, ru.r.Id, ru.episode),
		RuleId:    ru.r.Id,
		Episode:   ru.episode,
		State:     st,
		Score:     ru.r.Score,
		Value:     value,
		Threshold: ru.r.Threshold,
		Second:    uint32(second),
	}
}
