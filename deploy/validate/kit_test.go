package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	metricsDoc = "../../docs/metrics.md"
	rulesFile  = "../prometheus/calmline-rules.yaml"
	dashFile   = "../grafana/calmline-dashboard.json"
)

func documented(t *testing.T) map[string]bool {
	t.Helper()
	known, err := DocumentedMetrics(metricsDoc)
	if err != nil {
		t.Fatal(err)
	}
	return known
}

// TestShippedKitIsValid: the rules and the dashboard in deploy/ pass
// Prometheus's rule parser and Grafana's schema, and read only documented
// series; the rules cover what the operator needs to be told of.
func TestShippedKitIsValid(t *testing.T) {
	known := documented(t)
	for _, p := range CheckRules(rulesFile, known) {
		t.Error(p)
	}
	for _, p := range CheckDashboard(dashFile, known) {
		t.Error(p)
	}
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{`calmline_escalation_deliveries{state="dead"}`, "calmline_gateway_audio_dropped_bytes_total",
		"calmline_gateway_score_delay_seconds_bucket", `reason="backend_unavailable"`, `state=~"pending|in_flight"`} {
		if !strings.Contains(string(b), m) {
			t.Errorf("the rules do not watch %s", m)
		}
	}
}

// edit writes a copy of file with old replaced by new and returns its path.
func edit(t *testing.T, file, old, new string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("%s has no %q", file, old)
	}
	out := filepath.Join(t.TempDir(), filepath.Base(file))
	if err := os.WriteFile(out, []byte(strings.Replace(string(b), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRuleProblemsAreFound(t *testing.T) {
	known := documented(t)
	for _, c := range []struct{ name, old, new, want string }{
		{"bad PromQL", `> 0.5`, `> > 0.5`, "parse error"},
		{"undocumented metric", `calmline_fullcall_store_errors_total[5m]`, `calmline_fullcall_store_failures_total[5m]`, "calmline_fullcall_store_failures_total is not in docs/metrics.md"},
		{"unknown field", "        for: 10m\n", "        for: 10m\n        fro: 10m\n", "fro"},
		{"no severity", "severity: ticket", "severity: someday", `severity "someday"`},
		{"bad template", `{{ $value }} escalation deliveries`, `{{ $value escalation deliveries`, "template"},
	} {
		problems := CheckRules(edit(t, rulesFile, c.old, c.new), known)
		if !strings.Contains(strings.Join(problems, "\n"), c.want) {
			t.Errorf("%s: problems %q; want one mentioning %q", c.name, problems, c.want)
		}
	}
}

func TestDashboardProblemsAreFound(t *testing.T) {
	known := documented(t)
	for _, c := range []struct{ name, old, new, want string }{
		{"bad PromQL", `sum by (tenant) (calmline_gateway_calls_active`, `sum by (tenant) ((calmline_gateway_calls_active`, "parse error"},
		{"undocumented metric", `calmline_realtime_seconds_scored_total`, `calmline_realtime_seconds_total`, "calmline_realtime_seconds_total is not in docs/metrics.md"},
		{"unknown panel field", `"type": "timeseries",`, `"type": "timeseries", "colour": "red",`, "colour"},
		{"unknown plugin", `"type": "timeseries",`, `"type": "timeserie",`, "timeserie"},
		{"wrong field type", `"schemaVersion": 39`, `"schemaVersion": "39"`, "schemaVersion"},
		{"missing templating", `"templating"`, `"templatin"`, "templat"},
	} {
		problems := CheckDashboard(edit(t, dashFile, c.old, c.new), known)
		if !strings.Contains(strings.Join(problems, "\n"), c.want) {
			t.Errorf("%s: problems %q; want one mentioning %q", c.name, problems, c.want)
		}
	}
}
