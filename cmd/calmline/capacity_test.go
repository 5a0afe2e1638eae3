package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCapacityCommand(t *testing.T) {
	run := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := dispatch(append([]string{"capacity"}, args...), &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}
	code, out, errs := run()
	if code != 0 {
		t.Fatalf("capacity = %d, stderr %q", code, errs)
	}
	for _, want := range []string{"PG write tx/s", "\n      150 ", "\n  100,000 ", "100,000 calls: next bottleneck: "} {
		if !strings.Contains(out, want) {
			t.Errorf("default table lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = run("--calls", "100000")
	if code != 0 || !strings.Contains(out, "100,000 concurrent calls") || !strings.Contains(out, "audio payload     12.8 Gbit/s") || !strings.Contains(out, "<- next") {
		t.Errorf("--calls 100000 = %d:\n%s", code, out)
	}
	if !strings.Contains(out, "realtime down everywhere: fullcall analyses the calls itself") || !strings.Contains(out, "capacity_realtime_lag") {
		t.Errorf("--calls 100000 does not say what a realtime outage costs fullcall:\n%s", out)
	}
	code, out, _ = run("--calls", "150,1000", "--json", "--checkpoint-every", "10s")
	var plans []struct {
		Calls     int     `json:"calls"`
		DBWriteTx float64 `json:"db_write_tx_per_second"`
		DownShare float64 `json:"realtime_down_share"`
	}
	if err := json.Unmarshal([]byte(out), &plans); code != 0 || err != nil || len(plans) != 2 || plans[1].Calls != 1000 {
		t.Fatalf("--json = %d, %v: %s", code, err, out)
	}
	if plans[0].DownShare != 1 {
		t.Errorf("150 calls on 2 fullcall instances: realtime_down_share %v; want 1 (fullcall can analyse them all)", plans[0].DownShare)
	}
	if plans[1].DBWriteTx < 100 || plans[1].DBWriteTx > 200 {
		t.Errorf("1000 calls checkpointing every 10 s: %v write tx/s; want 100 checkpoints/s plus starts, reports and alerts", plans[1].DBWriteTx)
	}
	code, out, _ = run("--show-inputs")
	if code != 0 || !strings.Contains(out, "gateway_cpu_core_per_call") || !strings.Contains(out, "measured") {
		t.Errorf("--show-inputs = %d:\n%s", code, out)
	}
	for _, bad := range [][]string{{"--calls", "0"}, {"--calls", "ten"}, {"--target", "2"}, {"--checkpoint-every", "1m"}, {"extra"}} {
		if code, _, errs := run(bad...); code != 2 || errs == "" {
			t.Errorf("capacity %q = %d, stderr %q; want 2 with a message", bad, code, errs)
		}
	}
	path := filepath.Join(t.TempDir(), "inputs.json")
	os.WriteFile(path, []byte(`{"gateway_cpu_core_per_call": {"value": 0.001}}`), 0o644)
	if code, _, errs := run("--inputs", path); code != 1 || !strings.Contains(errs, "missing") {
		t.Errorf("capacity --inputs with an incomplete file = %d, %q; want 1 naming what is missing", code, errs)
	}
}

// TestCapacityDocTable keeps docs/capacity.md's table the command's output.
func TestCapacityDocTable(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "capacity.md"))
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := dispatch([]string{"capacity"}, &stdout, &stderr); code != 0 {
		t.Fatalf("capacity = %d: %s", code, stderr.String())
	}
	if !strings.Contains(string(doc), stdout.String()) {
		t.Errorf("docs/capacity.md does not hold the output of calmline capacity; update its table to:\n%s", stdout.String())
	}
}
