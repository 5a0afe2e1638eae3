package main

import (
	"os/exec"
	"path/filepath"
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
	// The README's line, with the stack's address.
	out, err := exec.Command(binary, "loadgen", "--url", "ws://"+srv.addrs["gateway"]+"/ws/native",
		"--api-key-file", filepath.Join(dir, "demo.key"), "--calls", "1", "--duration", "13s",
		"--wav", "testdata/call_agent_turns_angry.wav", "--call-prefix", "demo-angry-").CombinedOutput()
	if err != nil {
		t.Fatalf("loadgen: %v\n%s", err, out)
	}
	line := srv.waitLine(t, "verified escalation.triggered")
	for _, want := range []string{"call_id=demo-angry-", "rule_id=agent-anger", "agent_stress="} {
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
