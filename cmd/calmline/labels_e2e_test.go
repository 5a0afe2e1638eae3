package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/calmline/calmline/lib/tenant"
)

// TestEndToEndAlertRulesByLabelsAndSilences runs `calmline serve` for a
// tenant whose only rule is for the VIP queue, with a silence on the night
// shift: the angry-agent sample escalates (and reaches the on-call
// receiver) on a VIP call, is recorded but silenced (nothing sent) on a
// VIP call of the night shift, and raises nothing on another queue.
func TestEndToEndAlertRulesByLabelsAndSilences(t *testing.T) {
	dir := t.TempDir()
	onKey, onPath := secretFile(t, dir, "oncall.secret")
	oncall := newEndpoint(t, onKey, "", 0)
	key := tenant.NewKey()
	tenants := fmt.Sprintf(`tenants:
  - id: acme
    api_keys: [{id: acme-1, sha256: %s}]
    agent_scoring: "on"
    alert_rules:
      - {id: vip-anger, match: {queue: vip}, score: agent_stress, threshold: 70, hold_seconds: 2, clear_below: 10, cooldown_seconds: 600}
    escalation:
      endpoints:
        - {name: on-call, url: '%s/hooks/calmline', signing_secrets: [{file: '%s'}]}
      ladder:
        - {name: notify, action: notify, endpoint: on-call}
`, tenant.HashKey(key), oncall.srv.URL, onPath)
	os.WriteFile(filepath.Join(dir, "tenants.yaml"), []byte(tenants), 0o644)
	srv := startServe(t, "--data-dir", dir, "--tenants", filepath.Join(dir, "tenants.yaml"))
	esc := "http://" + srv.addrs["escalation"]
	do := func(method, path, body string, out any) int {
		t.Helper()
		req, _ := http.NewRequest(method, esc+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if out != nil {
			json.NewDecoder(resp.Body).Decode(out)
		}
		return resp.StatusCode
	}
	var sil struct {
		ID string `json:"id"`
	}
	if code := do("POST", "/api/v1/silences", fmt.Sprintf(`{"match_labels":{"shift":"night"},"ends_at":%q,"created_by":"sup-ana","comment":"night shift drill"}`,
		time.Now().Add(time.Hour).UTC().Format(time.RFC3339)), &sil); code != http.StatusCreated || sil.ID == "" {
		t.Fatalf("create silence: %d %+v", code, sil)
	}

	type escJSON struct {
		ID        string `json:"id"`
		RuleID    string `json:"rule_id"`
		State     string `json:"state"`
		SilenceID string `json:"silence_id"`
	}
	// escalations polls until the call's escalations are as many as want
	// (realtime posts alerts on its own schedule), under a deadline.
	escalations := func(callID string, want int) []escJSON {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			var l struct{ Escalations []escJSON }
			if code := do("GET", "/api/v1/escalations?call_id="+callID, "", &l); code != 200 {
				t.Fatalf("list escalations: %d", code)
			}
			if len(l.Escalations) >= want || time.Now().After(deadline) {
				return l.Escalations
			}
			<-tick.C // polling a state the service reaches on its own, under the deadline
		}
	}
	for _, c := range []struct {
		call   string
		labels map[string]string
	}{
		{"vip-1", map[string]string{"queue": "vip"}},
		{"vip-night-1", map[string]string{"queue": "vip", "shift": "night"}},
		{"sales-1", map[string]string{"queue": "sales"}},
	} {
		msgs, _, ce := streamLabelled(t, srv.addrs["gateway"], key, c.call, "testdata/call_agent_turns_angry.wav", c.labels)
		if ce == nil || ce.Code != 1000 {
			t.Fatalf("call %s did not end cleanly: %v", c.call, ce)
		}
		// The native socket carries the call's alerts: a rule fired on
		// the VIP calls (silences mute escalations, not the rule), none
		// on the sales call.
		alerts := 0
		for _, m := range msgs {
			if m.Type == "alert" {
				alerts++
			}
		}
		if want := c.labels["queue"] == "vip"; (alerts > 0) != want {
			t.Errorf("call %s (%v): %d alert messages; want some: %v", c.call, c.labels, alerts, want)
		}
	}
	if es := escalations("vip-1", 1); len(es) != 1 || es[0].RuleID != "vip-anger" || es[0].SilenceID != "" || es[0].State != "ESCALATION_STATE_OPEN" {
		t.Errorf("escalations of the VIP call: %+v; want one open, from rule vip-anger", es)
	}
	silenced := escalations("vip-night-1", 1)
	if len(silenced) != 1 || silenced[0].SilenceID != sil.ID || silenced[0].State != "ESCALATION_STATE_RESOLVED" {
		t.Fatalf("escalations of the silenced call: %+v; want one, resolved by silence %s", silenced, sil.ID)
	}
	var ds struct{ Deliveries []json.RawMessage }
	if code := do("GET", "/api/v1/deliveries?escalation_id="+silenced[0].ID, "", &ds); code != 200 || len(ds.Deliveries) != 0 {
		t.Errorf("deliveries of the silenced escalation: %d %v; want none", code, ds.Deliveries)
	}
	if es := escalations("sales-1", 0); len(es) != 0 {
		t.Errorf("a call no rule selects escalated: %+v", es)
	}
	got := oncall.collect(t, 1, 10*time.Second)[0]
	if got.Type != "escalation.triggered" || got.Data["call_id"] != "vip-1" || got.Err != nil {
		t.Errorf("on-call received %s for %v (%v); want the VIP call's trigger, signed", got.Type, got.Data["call_id"], got.Err)
	}
	srv.stop(t)
}
