package main

import (
	"strings"
	"testing"

	"github.com/calmline/calmline/lib/tenant"
)

// TestEndToEndDemoEscalation is "make run" plus the README's loadgen line:
// the demo tenant's agent-anger rule fires on the shipped angry-agent
// sample, and the demo webhook receiver gets the signed
// escalation.triggered and prints it.
func TestEndToEndDemoEscalation(t *testing.T) {
	dir := t.TempDir()
	srv := startServe(t, "--data-dir", dir, "--demo-webhook-receiver", "127.0.0.1:0")
	srv.waitLine(t, "demo webhook receiver at http://127.0.0.1:")
	_, rest, _ := strings.Cut(srv.waitLine(t, "API key "), "API key ")
	key, _, _ := strings.Cut(rest, " ")
	if !strings.HasPrefix(key, tenant.KeyPrefix) {
		t.Fatalf("no demo key printed:\n%s", strings.Join(srv.output(), "\n"))
	}
	msgs, _, closeErr := streamWAV(t, srv.addrs["gateway"], key, "demo-angry-1", "testdata/call_agent_turns_angry.wav")
	if closeErr == nil || closeErr.Code != 1000 || len(msgs) == 0 {
		t.Fatalf("the call did not end cleanly: %v", closeErr)
	}
	line := srv.waitLine(t, "verified escalation.triggered")
	for _, want := range []string{"call_id=demo-angry-1", "rule_id=agent-anger", "agent_stress="} {
		if !strings.Contains(line, want) {
			t.Errorf("receiver printed %q; want it to contain %q", line, want)
		}
	}
	for _, l := range srv.output() {
		if strings.Contains(l, "refused a delivery") {
			t.Errorf("the demo receiver refused a delivery: %s", l)
		}
	}
	srv.stop(t)
}
