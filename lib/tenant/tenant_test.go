package tenant

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func fileWith(keys map[string]string) string {
	var b strings.Builder
	b.WriteString("tenants:\n")
	for _, id := range []string{"acme", "globex"} {
		b.WriteString("  - id: " + id + "\n    max_concurrent_calls: 5\n    api_keys:\n")
		for kid, key := range keys {
			if strings.HasPrefix(kid, id) {
				b.WriteString("      - id: " + kid + "\n        sha256: " + HashKey(key) + "\n")
			}
		}
	}
	return b.String()
}

func TestParseDefaults(t *testing.T) {
	ts, err := Parse([]byte(fileWith(map[string]string{"acme-1": "k1"})))
	if err != nil {
		t.Fatal(err)
	}
	a := ts[0]
	if a.AlertRule != DefaultAlertRule {
		t.Errorf("alert rule = %+v; want the default %+v", a.AlertRule, DefaultAlertRule)
	}
	if a.AgentScoring != AgentScoringOn || a.ExposureThreshold != DefaultAlertRule.Threshold || a.Name != "acme" {
		t.Errorf("defaults not filled: %+v", a)
	}
	if a.Audio.Store {
		t.Error("raw audio must not be stored by default")
	}
}

func TestParseErrors(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"tenants:\n  - id: Bad Id\n", "must match"},
		{"tenants:\n  - id: a\n  - id: a\n", "listed twice"},
		{"tenants:\n  - id: a\n    api_keys: [{id: k, sha256: abc}]\n", "64 hex digits"},
		{"tenants:\n  - id: a\n    max_concurent_calls: 3\n", "not found"},
		{"tenants:\n  - id: a\n    alert_rule: {score: anger, threshold: 50}\n", "alert_rule.score"},
		{"tenants:\n  - id: a\n    alert_rule: {score: caller_pressure, threshold: 50, clear_below: 60}\n", "clear_below"},
		{"tenants:\n  - id: a\n    agent_scoring: maybe\n", "agent_scoring"},
		{"tenants:\n  - id: a\n    api_keys: [{id: k, role: boss, sha256: " + HashKey("r") + "}]\n", `role "boss"`},
		{"tenants:\n  - id: a\n    api_keys: [{id: k, role: agent, sha256: " + HashKey("r") + "}]\n", "needs an agent_id"},
		{"tenants:\n  - id: a\n    api_keys: [{id: k, agent_id: a1, sha256: " + HashKey("r") + "}]\n", "only for role agent"},
		{"tenants:\n  - id: a\n    agent_scoring: \"off\"\n    alert_rule: {score: agent_stress, threshold: 50}\n", "agent_scoring is off"},
		{"tenants:\n  - id: a\n    api_keys: [{id: k, sha256: " + HashKey("x") + "}]\n  - id: b\n    api_keys: [{id: j, sha256: " + HashKey("x") + "}]\n", "same hash"},
	} {
		_, err := Parse([]byte(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) = %v; want an error containing %q", c.in, err, c.want)
		}
	}
}

func TestAuthenticateRotationAndIsolation(t *testing.T) {
	keys := map[string]string{"acme-old": NewKey(), "acme-new": NewKey(), "globex-1": NewKey()}
	ts, err := Parse([]byte(fileWith(keys)))
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewRegistry(ts)
	if err != nil {
		t.Fatal(err)
	}
	for kid, key := range keys {
		tn, gotKID, ok := r.Authenticate(key)
		if !ok || gotKID != kid || !strings.HasPrefix(kid, tn.ID) {
			t.Errorf("Authenticate(key of %s) = %v, %q, %v", kid, tn, gotKID, ok)
		}
	}
	for _, bad := range []string{"", "clk_nope", HashKey(keys["acme-old"])} {
		if _, _, ok := r.Authenticate(bad); ok {
			t.Errorf("Authenticate(%q) accepted", bad)
		}
	}
}

func TestReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tenants.yaml")
	old, next := NewKey(), NewKey()
	write := func(s string, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now().Add(-time.Hour)
	write(fileWith(map[string]string{"acme-1": old}), t0)
	r, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	reloads := 0
	r.OnReload(func() { reloads++ })

	if changed, err := r.ReloadIfChanged(); changed || err != nil {
		t.Fatalf("ReloadIfChanged on an unchanged file = %v, %v", changed, err)
	}
	// Rotate: the new key is added and the old one disabled.
	write(fileWith(map[string]string{"acme-1": old, "acme-2": next})+"", t0.Add(time.Minute))
	data, _ := os.ReadFile(path)
	data = []byte(strings.Replace(string(data), "      - id: acme-1\n", "      - id: acme-1\n        disabled: true\n", 1))
	write(string(data), t0.Add(time.Minute))
	if changed, err := r.ReloadIfChanged(); !changed || err != nil {
		t.Fatalf("ReloadIfChanged after an edit = %v, %v", changed, err)
	}
	if _, _, ok := r.Authenticate(old); ok {
		t.Error("disabled key still accepted after reload")
	}
	if _, _, ok := r.Authenticate(next); !ok {
		t.Error("new key not accepted after reload")
	}
	// A broken edit keeps the tenants we had.
	write("tenants: [", t0.Add(2*time.Minute))
	if _, err := r.ReloadIfChanged(); err == nil {
		t.Error("broken file reloaded without error")
	}
	if _, _, ok := r.Authenticate(next); !ok {
		t.Error("a broken reload dropped the tenants")
	}
	if reloads != 1 {
		t.Errorf("OnReload ran %d times; want 1", reloads)
	}
}

func TestEnsureDemo(t *testing.T) {
	dir := t.TempDir()
	path, keyPath := filepath.Join(dir, "tenants.yaml"), filepath.Join(dir, "demo.key")
	key, created, err := EnsureDemo(path, keyPath, DemoWebhook{})
	if err != nil || !created || !strings.HasPrefix(key, KeyPrefix) {
		t.Fatalf("EnsureDemo = %q, %v, %v", key, created, err)
	}
	raw, _ := os.ReadFile(path)
	if strings.Contains(string(raw), key) {
		t.Error("tenants file holds the plain key")
	}
	r, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if tn, _, ok := r.Authenticate(key); !ok || tn.ID != DemoTenantID {
		t.Fatalf("demo key does not authenticate the demo tenant")
	}
	again, created, err := EnsureDemo(path, keyPath, DemoWebhook{})
	if err != nil || created || again != key {
		t.Errorf("second EnsureDemo = %q, %v, %v; want the same key, not created", again, created, err)
	}
	if st, _ := os.Stat(keyPath); st.Mode().Perm() != 0o600 {
		t.Errorf("demo key file mode %v; want 0600", st.Mode().Perm())
	}
	// Two rules: caller pressure for every call, and agent-anger, which
	// the shipped angry-agent sample sets off.
	tn, _ := r.Tenant(DemoTenantID)
	if rs := tn.Rules(); len(rs) != 2 || rs[1].ID != "agent-anger" || rs[1].Score != ScoreAgentStress || rs[1].Threshold != 70 || len(rs[1].Match) != 0 {
		t.Errorf("demo rules %+v", rs)
	}
	if len(tn.Escalation.Ladder) != 0 {
		t.Errorf("a demo without a receiver has a ladder: %+v", tn.Escalation.Ladder)
	}
	// With a receiver, the ladder notifies it.
	dir2 := t.TempDir()
	p2 := filepath.Join(dir2, "tenants.yaml")
	if _, _, err := EnsureDemo(p2, filepath.Join(dir2, "demo.key"), DemoWebhook{URL: "http://127.0.0.1:1/hooks/calmline", SecretFile: filepath.Join(dir2, "hook secret")}); err != nil {
		t.Fatal(err)
	}
	r2, err := Load(p2)
	if err != nil {
		t.Fatal(err)
	}
	tn, _ = r2.Tenant(DemoTenantID)
	ep, ok := tn.Escalation.Endpoint("demo-receiver")
	if !ok || ep.URL != "http://127.0.0.1:1/hooks/calmline" || ep.SigningSecrets[0].File != filepath.Join(dir2, "hook secret") ||
		len(tn.Escalation.Ladder) != 1 || tn.Escalation.Ladder[0].Endpoint != "demo-receiver" {
		t.Errorf("demo escalation %+v", tn.Escalation)
	}
}

func TestWatchReloadsOnSignal(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tenants.yaml")
	k1, k2 := NewKey(), NewKey()
	os.WriteFile(path, []byte(fileWith(map[string]string{"acme-1": k1})), 0o644)
	r, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	reloaded := make(chan struct{}, 1)
	r.OnReload(func() { reloaded <- struct{}{} })
	ctx, cancel := context.WithCancel(context.Background())
	hup := make(chan struct{})
	done := make(chan struct{})
	go func() { defer close(done); r.Watch(ctx, time.Hour, hup, slog.New(slog.DiscardHandler)) }()
	os.WriteFile(path, []byte(fileWith(map[string]string{"acme-2": k2})), 0o644)
	hup <- struct{}{}
	<-reloaded
	if _, _, ok := r.Authenticate(k2); !ok {
		t.Error("key added before the signal not accepted after it")
	}
	cancel()
	<-done
}

func TestJobCallbacks(t *testing.T) {
	for _, c := range []struct {
		name, yaml, err string
	}{
		{"file", "urls: [\"https://crm.example.com/hooks/\"]\n      signing_secrets: [{file: /run/secrets/cb}]", ""},
		{"rotation", "urls: [\"https://crm.example.com/hooks/\"]\n      signing_secrets: [{env: NEW}, {env: OLD}]", ""},
		{"no secret", "urls: [\"https://crm.example.com/hooks/\"]", "without signing_secrets"},
		{"three secrets", "urls: [\"https://x.example/\"]\n      signing_secrets: [{env: A}, {env: B}, {env: C}]", "at most two"},
		{"both file and env", "urls: [\"https://x.example/\"]\n      signing_secrets: [{env: A, file: /x}]", "exactly one"},
		{"relative url", "urls: [\"/hooks\"]\n      signing_secrets: [{env: A}]", "only http and https"},
		{"credentials in url", "urls: [\"https://u:p@x.example/\"]\n      signing_secrets: [{env: A}]", "carries userinfo"},
	} {
		ts, err := Parse([]byte("tenants:\n  - id: acme\n    job_callbacks:\n      " + c.yaml + "\n"))
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: %v; want an error about %q", c.name, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		cb := &ts[0].JobCallbacks
		if !cb.Enabled() {
			t.Errorf("%s: not enabled", c.name)
		}
		for url, want := range map[string]bool{
			"https://crm.example.com/hooks/job-done": true,
			"https://crm.example.com/other":          false,
			"https://crm.example.com.evil/hooks/":    false,
			"https://crm.example.com:8443/hooks/":    false,
			"http://crm.example.com/hooks/":          false,
			"https://u:p@crm.example.com/hooks/":     false,
			"ftp://crm.example.com/hooks/":           false,
		} {
			if cb.Allows(url) != want {
				t.Errorf("%s: Allows(%s) = %v", c.name, url, !want)
			}
		}
	}
}

func TestKeyRoles(t *testing.T) {
	care, agent := NewKey(), NewKey()
	ts, err := Parse([]byte("tenants:\n  - id: acme\n    api_keys:\n" +
		"      - {id: care, role: care, sha256: " + HashKey(care) + "}\n" +
		"      - {id: desk-42, role: agent, agent_id: agent-42, sha256: " + HashKey(agent) + "}\n"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewRegistry(ts)
	if err != nil {
		t.Fatal(err)
	}
	if _, k, ok := r.AuthenticateKey(care); !ok || k.Role != KeyRoleCare {
		t.Errorf("care key: %+v, %v", k, ok)
	}
	if tn, k, ok := r.AuthenticateKey(agent); !ok || tn.ID != "acme" || k.Role != KeyRoleAgent || k.AgentID != "agent-42" {
		t.Errorf("agent key: %v %+v, %v", tn, k, ok)
	}
	if _, _, ok := r.AuthenticateKey(""); ok {
		t.Error("empty key accepted")
	}
}
