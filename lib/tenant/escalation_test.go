package tenant

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const escalationFile = `
tenants:
  - id: acme
    exposure_threshold: 65
    escalation:
      endpoints:
        - name: on-call
          url: https://oncall.example.com/hooks/calmline
          events: [escalation.acknowledged, escalation.resolved, agent.care_recommended]
          signing_secrets: [{file: /run/secrets/oncall-new}, {env: ONCALL_OLD}]
        - name: pbx
          url: http://pbx.internal:8088/warn
          params: {prompt: abuse-warning-de}
          bearer_token: {env: PBX_TOKEN}
          timeout: 3s
        - name: intervention
          url: https://intervention.example.com/api/transfers
          events: ["*"]
          retry: {initial: 500ms, max_interval: 10s, give_up_after: 5m}
      ladder:
        - {name: transfer, action: transfer, endpoint: intervention, after: 30s}
        - {name: notify, action: notify, endpoint: on-call}
        - {name: warn, action: warn_caller, endpoint: pbx, after: 10s, skip_if: [acknowledged]}
      retry: {give_up_after: 12h}
      care:
        rules:
          - {id: three-in-an-hour, window: 1h, high_pressure_calls: 3}
          - {id: long-exposure, window: 8h, exposure_minutes: 20, recommend: counsellor}
`

func TestParseEscalation(t *testing.T) {
	ts, err := Parse([]byte(escalationFile))
	if err != nil {
		t.Fatal(err)
	}
	e := ts[0].Escalation
	// The ladder runs in time order whatever the file's order.
	var order []string
	for _, s := range e.Ladder {
		order = append(order, s.Name)
	}
	if strings.Join(order, ",") != "notify,warn,transfer" {
		t.Errorf("ladder order %v; want notify, warn, transfer", order)
	}
	if n := e.Ladder[0]; len(n.SkipIf) != 0 || n.After != 0 {
		t.Errorf("notify step %+v; want no skip conditions, no delay", n)
	}
	if w := e.Ladder[1]; !w.Skips(SkipIfAcknowledged) || w.Skips(SkipIfCleared) {
		t.Errorf("warn step %+v; want skipped only when acknowledged", w)
	}
	if tr := e.Ladder[2]; !tr.Skips(SkipIfAcknowledged) || !tr.Skips(SkipIfCleared) || tr.After != 30*time.Second {
		t.Errorf("transfer step %+v; want both default skip conditions", tr)
	}
	oncall, _ := e.Endpoint("on-call")
	pbx, _ := e.Endpoint("pbx")
	iv, _ := e.Endpoint("intervention")
	if oncall.Timeout != 10*time.Second || pbx.Timeout != 3*time.Second {
		t.Errorf("timeouts %v, %v", oncall.Timeout, pbx.Timeout)
	}
	if r := e.RetryFor(oncall); r.GiveUpAfter != 12*time.Hour || r.Initial != time.Second || r.MaxInterval != time.Hour {
		t.Errorf("on-call retry %+v; want the tenant's 12 h with defaults filled", r)
	}
	if r := e.RetryFor(iv); r.Initial != 500*time.Millisecond || r.GiveUpAfter != 5*time.Minute || r.Multiplier != 2 {
		t.Errorf("intervention retry %+v", r)
	}
	subs := func(ev string) (names []string) {
		for _, ep := range e.Subscribers(ev) {
			names = append(names, ep.Name)
		}
		return names
	}
	if got := subs(EventEscalationResolved); strings.Join(got, ",") != "on-call,intervention" {
		t.Errorf("subscribers of resolved: %v", got)
	}
	if got := subs(EventEscalationTransferFailed); strings.Join(got, ",") != "intervention" {
		t.Errorf("subscribers of transfer_failed: %v", got)
	}
	if e.Care.HighPressurePeak != 65 || e.Care.Rules[0].Recommend != RecommendBreak {
		t.Errorf("care defaults %+v", e.Care)
	}
	// A tenant without the section records escalations and sends nothing.
	ts, err = Parse([]byte("tenants:\n  - id: quiet\n"))
	if err != nil || len(ts[0].Escalation.Ladder) != 0 || ts[0].Escalation.RetryFor(nil) != DefaultRetry {
		t.Errorf("tenant without escalation settings: %+v, %v", ts[0].Escalation, err)
	}
}

func TestParseEscalationErrors(t *testing.T) {
	base := "tenants:\n  - id: a\n    escalation:\n"
	ep := "      endpoints: [{name: x, url: 'https://x.example/h'}]\n"
	for _, c := range []struct{ in, want string }{
		{"      endpoints: [{name: X, url: 'https://x/'}]\n", "must match"},
		{"      endpoints: [{name: x, url: 'ftp://x/'}]\n", "only http and https"},
		{"      endpoints: [{name: x, url: '/hook'}]\n", "only http and https"},
		{"      endpoints: [{name: x, url: 'https://u:p@x/'}]\n", "carries userinfo"},
		{"      endpoints: [{name: x, url: 'https://x/'}, {name: x, url: 'https://y/'}]\n", "listed twice"},
		{"      endpoints: [{name: x, url: 'https://x/', events: [escalation.triggered]}]\n", "notify steps"},
		{"      endpoints: [{name: x, url: 'https://x/', events: [call.ended]}]\n", "unknown event type"},
		{"      endpoints: [{name: x, url: 'https://x/', signing_secrets: [{file: a, env: B}]}]\n", "exactly one of file or env"},
		{"      endpoints: [{name: x, url: 'https://x/', signing_secrets: [{env: A}, {env: B}, {env: C}]}]\n", "at most two"},
		{"      endpoints: [{name: x, url: 'https://x/', bearer_token: {}}]\n", "exactly one of file or env"},
		{"      endpoints: [{name: x, url: 'https://x/', secret: abc}]\n", "not found"},
		{"      endpoints: [{name: x, url: 'https://x/', timeout: 1h}]\n", "timeout"},
		{"      endpoints: [{name: x, url: 'https://x/', retry: {multiplier: 0.5}}]\n", "multiplier"},
		{"      endpoints: [{name: x, url: 'https://x/', retry: {initial: 1h, max_interval: 1m}}]\n", "max_interval"},
		{ep + "      ladder: [{action: page, endpoint: x}]\n", "action \"page\""},
		{ep + "      ladder: [{action: notify, endpoint: y}]\n", "not among escalation.endpoints"},
		{ep + "      ladder: [{action: notify, endpoint: x}, {action: notify, endpoint: x}]\n", "used twice"},
		{ep + "      ladder: [{action: transfer, endpoint: x, after: -1s}]\n", "negative"},
		{ep + "      ladder: [{action: transfer, endpoint: x, skip_if: [resolved]}]\n", "skip_if"},
		{ep + "      ladder: [{action: notify, endpoint: x, after: soon}]\n", "time.Duration"},
		{"      care: {rules: [{id: r, high_pressure_calls: 3}]}\n", "window must be positive"},
		{"      care: {rules: [{id: r, window: 1h}]}\n", "set high_pressure_calls or exposure_minutes"},
		{"      care: {rules: [{id: r, window: 1h, high_pressure_calls: 3, recommend: holiday}]}\n", "recommend"},
		{"      care: {rules: [{id: r, window: 1h, high_pressure_calls: 3}, {id: r, window: 2h, exposure_minutes: 5}]}\n", "used twice"},
		{"      care: {high_pressure_peak: 120}\n", "high_pressure_peak"},
	} {
		_, err := Parse([]byte(base + c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) = %v; want an error containing %q", c.in, err, c.want)
		}
	}
	// Privacy: only "on" lets agent_stress set off escalations.
	for _, mode := range []string{"off", "private"} {
		_, err := Parse([]byte("tenants:\n  - id: a\n    agent_scoring: \"" + mode + "\"\n    alert_rule: {score: agent_stress, threshold: 50}\n"))
		if err == nil || !strings.Contains(err.Error(), "caller_pressure alone") {
			t.Errorf("agent_stress rule with agent_scoring %s: %v; want an error", mode, err)
		}
	}
}

func TestSecretRef(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "secret")
	os.WriteFile(path, []byte("whsec_c2VjcmV0LXZhbHVl\n"), 0o600)
	t.Setenv("CALMLINE_TEST_SECRET", " tok-123 ")
	for _, c := range []struct {
		ref     SecretRef
		want    string
		wantErr string
	}{
		{SecretRef{File: path}, "whsec_c2VjcmV0LXZhbHVl", ""},
		{SecretRef{Env: "CALMLINE_TEST_SECRET"}, "tok-123", ""},
		{SecretRef{File: filepath.Join(dir, "missing")}, "", "no such file"},
		{SecretRef{Env: "CALMLINE_TEST_UNSET_VARIABLE"}, "", "not set"},
	} {
		got, err := c.ref.Resolve()
		if got != c.want || (err == nil) != (c.wantErr == "") || (err != nil && !strings.Contains(err.Error(), c.wantErr)) {
			t.Errorf("Resolve(%v) = %q, %v; want %q, %q", c.ref, got, err, c.want, c.wantErr)
		}
		if strings.Contains(c.ref.String(), "tok-123") || strings.Contains(c.ref.String(), "c2Vj") {
			t.Errorf("String() shows the secret: %s", c.ref)
		}
	}
}

// FuzzParse feeds arbitrary tenants files: Parse must not panic, and what
// it accepts must hold the invariants the services rely on.
func FuzzParse(f *testing.F) {
	f.Add(escalationFile)
	f.Add("tenants:\n  - id: a\n    escalation: {endpoints: [{name: x, url: 'https://x/'}], ladder: [{action: notify, endpoint: x}]}\n")
	f.Add("tenants:\n  - id: a\n    alert_rule: {score: agent_stress, threshold: 50}\n")
	f.Fuzz(func(t *testing.T, doc string) {
		ts, err := Parse([]byte(doc))
		if err != nil {
			return
		}
		for _, tn := range ts {
			e := tn.Escalation
			for _, st := range e.Ladder {
				if _, ok := e.Endpoint(st.Endpoint); !ok || st.After < 0 {
					t.Fatalf("accepted a ladder step %+v without its endpoint", st)
				}
			}
			for i := 1; i < len(e.Ladder); i++ {
				if e.Ladder[i].After < e.Ladder[i-1].After {
					t.Fatalf("ladder not in time order: %+v", e.Ladder)
				}
			}
			for _, ep := range e.Endpoints {
				if ep.Timeout <= 0 || len(ep.SigningSecrets) > 2 {
					t.Fatalf("accepted endpoint %+v", ep)
				}
			}
			if tn.AgentScoring != AgentScoringOn && tn.AlertRule.Score == ScoreAgentStress {
				t.Fatalf("accepted an agent_stress rule under agent_scoring %s", tn.AgentScoring)
			}
		}
	})
}
