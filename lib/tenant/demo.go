package tenant

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// DemoTenantID is the tenant `calmline serve` creates when it starts without
// a tenants file.
const DemoTenantID = "demo"

// DemoWebhookURL is where the demo tenant's escalations are sent unless
// EnsureDemo is told otherwise: the address "make run" starts the demo
// webhook receiver on ("calmline serve --demo-webhook-receiver").
const DemoWebhookURL = "http://127.0.0.1:8099/hooks/calmline"

// DemoWebhook is where the demo tenant sends its escalations: the URL and
// the file holding the endpoint's signing secret (whsec_...).
type DemoWebhook struct {
	URL        string
	SecretFile string
}

// EnsureDemo makes sure a tenants file exists at path. When it does not, it
// writes one with a demo tenant and a fresh key, and keeps the key beside it
// in keyPath (mode 0600) so that the demo can show it again on the next
// start. The demo tenant has a second alert rule, agent-anger, that the
// shipped angry-agent sample call sets off, and with hook.URL set its ladder
// notifies that endpoint, signing with the secret in hook.SecretFile. It
// returns the demo key when it knows it (created now, or read from
// keyPath), and whether it created the file.
func EnsureDemo(path, keyPath string, hook DemoWebhook) (key string, created bool, err error) {
	if _, err := os.Stat(path); err == nil {
		b, err := os.ReadFile(keyPath)
		if err != nil {
			return "", false, nil // a real tenants file: no demo key to show
		}
		return string(b), false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", false, fmt.Errorf("tenants file: %w", err)
	}
	key = NewKey()
	content := fmt.Sprintf(`# calmline tenants file, created for the demo by "calmline serve".
# Add tenants here. Keys are stored as SHA-256 hashes: make one with
# "calmline keys new --tenant demo" (also: keys list, revoke, rotate; see
# "calmline keys -h"). The file is re-read when it changes or on SIGHUP.
tenants:
  - id: %s
    name: Demo contact center
    api_keys:
      - id: demo-1
        sha256: %s
    max_concurrent_calls: 1000
    # The rule for every call.
    alert_rule:
      id: caller-pressure
      score: caller_pressure
      threshold: 70
      hold_seconds: 3
      clear_below: 55
      cooldown_seconds: 30
    # Rules chosen by the call's labels (queue, skill, agent group ... as
    # the PBX sets them; docs/escalation.md); every matching rule is
    # evaluated. agent-anger has no match, so it applies to every call: the
    # shipped sample cmd/calmline/testdata/call_agent_turns_angry.wav sets
    # it off. For example, a stricter rule for one queue:
    #   - {id: vip, match: {queue: vip}, score: caller_pressure, threshold: 55, hold_seconds: 2}
    alert_rules:
      - {id: agent-anger, score: agent_stress, threshold: 70, hold_seconds: 2, clear_below: 10, cooldown_seconds: 600}
    agent_scoring: "on"
    audio:
      store: false
%s`, DemoTenantID, HashKey(key), demoEscalation(hook))
	if _, err := Parse([]byte(content)); err != nil {
		return "", false, fmt.Errorf("demo tenants file: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", false, err
	}
	if err := os.WriteFile(keyPath, []byte(key), 0o600); err != nil {
		return "", false, fmt.Errorf("write demo key: %w", err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		return "", false, fmt.Errorf("write tenants file: %w", err)
	}
	return key, true, nil
}

// demoEscalation returns the demo tenant's escalation settings: a ladder
// that notifies the demo webhook receiver, or, without one, a commented
// example.
func demoEscalation(hook DemoWebhook) string {
	if hook.URL == "" {
		return `    # What happens when a rule fires (docs/escalation.md): with no
    # ladder, escalations are recorded and nothing is sent. For example:
    # escalation:
    #   endpoints:
    #     - name: on-call
    #       url: https://oncall.example.com/hooks/calmline
    #       signing_secrets: [{file: /run/secrets/oncall-webhook}]
    #       events: [escalation.acknowledged, escalation.resolved, agent.care_recommended]
    #     - name: intervention
    #       url: https://intervention.example.com/api/v1/transfers
    #       signing_secrets: [{file: /run/secrets/intervention-webhook}]
    #   ladder:
    #     - {name: notify, action: notify, endpoint: on-call}
    #     - {name: transfer, action: transfer, endpoint: intervention, after: 30s}
`
	}
	return fmt.Sprintf(`    # What happens when a rule fires (docs/escalation.md): the demo
    # webhook receiver of "make run" gets escalation.triggered, signed
    # with the secret in the file named here.
    escalation:
      endpoints:
        - name: demo-receiver
          url: %s
          signing_secrets: [{file: %q}]
          events: ["*"]
      ladder:
        - {name: notify, action: notify, endpoint: demo-receiver}
`, hook.URL, hook.SecretFile)
}
