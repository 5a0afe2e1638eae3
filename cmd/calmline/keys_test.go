package main

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/calmline/calmline/lib/tenant"
)

// runKeys runs "calmline keys ARGS..." in this process.
func runKeys(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = dispatch(append([]string{"keys"}, args...), &o, &e)
	return code, o.String(), e.String()
}

func TestKeysCommand(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := tenant.EnsureDemo(filepath.Join(dir, "tenants.yaml"), filepath.Join(dir, "demo.key"), tenant.DemoWebhook{}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "tenants.yaml")
	// The demo file's comment names this command; it works as written.
	demo, _ := os.ReadFile(path)
	if !strings.Contains(string(demo), `"calmline keys new --tenant demo"`) {
		t.Fatalf("the demo tenants file does not point to calmline keys:\n%s", demo)
	}
	code, key, stderr := runKeys(t, "new", "--data-dir", dir, "--tenant", "demo", "--id", "wallboard")
	key = strings.TrimSpace(key)
	if code != 0 || !strings.HasPrefix(key, tenant.KeyPrefix) || !strings.Contains(stderr, `"wallboard"`) {
		t.Fatalf("keys new = %d, %q, %s", code, key, stderr)
	}
	if code, _, stderr := runKeys(t, "new", "--tenants", path, "--tenant", "demo", "--id", "ana-desk", "--role", "agent", "--agent", "ana"); code != 0 {
		t.Fatalf("keys new --role agent = %d %s", code, stderr)
	}
	saved, _ := os.ReadFile(path)
	if strings.Contains(string(saved), key) || !strings.Contains(string(saved), tenant.HashKey(key)) {
		t.Fatal("the file must hold the key's hash, never the key")
	}
	if !strings.Contains(string(saved), "# What happens when a rule fires") {
		t.Error("the file's comments were lost")
	}
	code, list, _ := runKeys(t, "list", "--tenants", path)
	if code != 0 || !strings.Contains(list, "wallboard") || !strings.Contains(list, "agent") || !strings.Contains(list, "ana") {
		t.Errorf("keys list = %d\n%s", code, list)
	}
	if strings.Contains(list, tenant.HashKey(key)[:16]) || strings.Contains(list, tenant.KeyPrefix) {
		t.Errorf("keys list shows a hash or a key:\n%s", list)
	}
	code, newKey, stderr := runKeys(t, "rotate", "--tenants", path, "--tenant", "demo", "--id", "wallboard", "--keep", "1h", "--new-id", "wallboard-2")
	if code != 0 || !strings.Contains(stderr, "keeps working until") {
		t.Fatalf("keys rotate = %d %s", code, stderr)
	}
	if code, _, stderr := runKeys(t, "revoke", "--tenants", path, "--tenant", "demo", "--id", "ana-desk"); code != 0 {
		t.Fatalf("keys revoke = %d %s", code, stderr)
	}
	reg, err := tenant.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, id, ok := reg.Authenticate(strings.TrimSpace(newKey)); !ok || id != "wallboard-2" {
		t.Errorf("rotated key: %v %q", ok, id)
	}
	if _, _, ok := reg.Authenticate(key); !ok {
		t.Error("the old key stopped working before its --keep ran out")
	}
	_, list, _ = runKeys(t, "list", "--tenants", path, "--tenant", "demo")
	for _, want := range []string{"ana-desk", "disabled", "wallboard ", "expires 20", "wallboard-2"} {
		if !strings.Contains(list, want) {
			t.Errorf("keys list lacks %q:\n%s", want, list)
		}
	}

	// Bad input: a specific error and an unchanged file.
	before, _ := os.ReadFile(path)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "usage: calmline keys new"},
		{[]string{"delete"}, 2, `unknown subcommand "delete"`},
		{[]string{"new", "--tenants", path}, 2, "--tenant is required"},
		{[]string{"revoke", "--tenants", path, "--tenant", "demo"}, 2, "--id is required"},
		{[]string{"new", "--tenants", path, "--tenant", "nobody"}, 1, `no such tenant "nobody"`},
		{[]string{"new", "--tenants", path, "--tenant", "demo", "--role", "boss"}, 1, `role "boss"`},
		{[]string{"new", "--tenants", path, "--tenant", "demo", "--role", "agent"}, 1, "needs an agent_id"},
		{[]string{"new", "--tenants", path, "--tenant", "demo", "--agent", "ana"}, 1, "agent_id is only for role agent"},
		{[]string{"new", "--tenants", path, "--tenant", "demo", "--id", "wallboard"}, 1, `already has a key "wallboard"`},
		{[]string{"revoke", "--tenants", path, "--tenant", "demo", "--id", "nope"}, 1, `no such key "nope"`},
		{[]string{"rotate", "--tenants", path, "--tenant", "demo", "--id", "ana-desk"}, 1, "is disabled"},
		{[]string{"list", "--tenants", filepath.Join(dir, "missing.yaml")}, 1, "no such file"},
	} {
		code, out, stderr := runKeys(t, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) || out != "" {
			t.Errorf("keys %v = %d, stdout %q, stderr %q; want %d and %q", tc.args, code, out, stderr, tc.code, tc.want)
		}
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("a refused command changed the file")
	}
}

// A key made with "calmline keys new" works against a running stack once it
// reloads, and a revoked one is refused.
func TestKeysAgainstRunningServe(t *testing.T) {
	dir := t.TempDir()
	srv := startServe(t, "--data-dir", dir)
	path := filepath.Join(dir, "tenants.yaml")
	status := func(key string) int {
		req, _ := http.NewRequest("GET", "http://"+srv.addrs["fullcall"]+"/api/v1/reports", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// waitStatus sends SIGHUP (the file watcher would also notice, within
	// 2 s) and polls until the key gets want, under a deadline.
	waitStatus := func(key string, want int) {
		t.Helper()
		srv.cmd.Process.Signal(syscall.SIGHUP)
		deadline := time.Now().Add(15 * time.Second)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for status(key) != want {
			if time.Now().After(deadline) {
				t.Fatalf("key still gets %d after 15 s; want %d", status(key), want)
			}
			<-tick.C
		}
	}
	code, key, stderr := runKeys(t, "new", "--tenants", path, "--tenant", "demo", "--id", "ops")
	key = strings.TrimSpace(key)
	if code != 0 {
		t.Fatalf("keys new = %d %s", code, stderr)
	}
	waitStatus(key, http.StatusOK)
	if code, _, stderr := runKeys(t, "revoke", "--tenants", path, "--tenant", "demo", "--id", "ops"); code != 0 {
		t.Fatalf("keys revoke = %d %s", code, stderr)
	}
	waitStatus(key, http.StatusUnauthorized)
	srv.stop(t)
}
