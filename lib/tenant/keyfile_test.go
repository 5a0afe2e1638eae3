package tenant

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const keyFileSrc = `# Our tenants. Keep this comment.
tenants:
  - id: acme # the first customer
    name: Acme
    api_keys:
      - id: acme-1
        sha256: %s
    # Calls above 50 page someone.
    alert_rule: {score: caller_pressure, threshold: 50}
  - id: globex
`

func writeKeyFile(t *testing.T) (path, key string) {
	t.Helper()
	key = NewKey()
	path = filepath.Join(t.TempDir(), "tenants.yaml")
	if err := os.WriteFile(path, []byte(strings.Replace(keyFileSrc, "%s", HashKey(key), 1)), 0o640); err != nil {
		t.Fatal(err)
	}
	return path, key
}

func TestKeyFileCreateRevokeRotate(t *testing.T) {
	path, acme1 := writeKeyFile(t)
	now := time.Date(2025, 12, 7, 14, 0, 0, 0, time.UTC)
	f, err := OpenKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Now = func() time.Time { return now }
	// globex has no api_keys yet: the list is created.
	gid, gkey, err := f.Create("globex", NewKeySpec{})
	if err != nil || !strings.HasPrefix(gid, "globex-") || !strings.HasPrefix(gkey, KeyPrefix) {
		t.Fatalf("Create = %q, %q, %v", gid, gkey, err)
	}
	_, agentKey, err := f.Create("acme", NewKeySpec{ID: "ana-desk", Role: KeyRoleAgent, AgentID: "ana"})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Save(); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	for _, keep := range []string{"# Our tenants. Keep this comment.", "# the first customer", "# Calls above 50 page someone.", "alert_rule: {score: caller_pressure, threshold: 50}", "by calmline keys"} {
		if !strings.Contains(string(data), keep) {
			t.Errorf("saved file lost %q:\n%s", keep, data)
		}
	}
	if strings.Contains(string(data), gkey) || strings.Contains(string(data), agentKey) {
		t.Fatal("the file holds a key in clear")
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v; want the original 0640", st.Mode().Perm())
	}
	reg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if tn, k, ok := reg.AuthenticateKey(agentKey); !ok || tn.ID != "acme" || k.Role != KeyRoleAgent || k.AgentID != "ana" {
		t.Fatalf("agent key: %v %+v", ok, k)
	}
	if tn, _, ok := reg.Authenticate(gkey); !ok || tn.ID != "globex" {
		t.Fatal("globex's new key is refused")
	}

	// Rotate acme-1 keeping it a day; revoke the agent key.
	f, _ = OpenKeyFile(path)
	f.Now = func() time.Time { return now }
	newID, newKey, err := f.Rotate("acme", "acme-1", "", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Revoke("acme", "ana-desk"); err != nil {
		t.Fatal(err)
	}
	if err := f.Save(); err != nil {
		t.Fatal(err)
	}
	if err := reg.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := reg.Authenticate(agentKey); ok {
		t.Error("a revoked key is still accepted")
	}
	if _, id, ok := reg.Authenticate(newKey); !ok || id != newID {
		t.Errorf("rotated-in key: %v %q", ok, id)
	}
	// The old key works until its expiry (a day from the injected now,
	// which is in the past of the real clock: so it is already refused).
	if _, _, ok := reg.Authenticate(acme1); ok {
		t.Error("the old key is accepted after its expires_at")
	}
	list, _ := f.List("acme")
	states := map[string]string{}
	for _, k := range list {
		states[k.ID] = k.State(now)
	}
	if states["acme-1"] != "expires 2025-12-08T14:00:00Z" || states["ana-desk"] != "disabled" || states[newID] != "active" {
		t.Errorf("states %v", states)
	}
}

func TestKeyExpiry(t *testing.T) {
	k := APIKey{ExpiresAt: time.Now().Add(time.Hour)}
	if !k.Active(time.Now()) || k.Active(time.Now().Add(2*time.Hour)) {
		t.Error("expires_at not honoured")
	}
}

func TestKeyFileRefusesBadEdits(t *testing.T) {
	path, _ := writeKeyFile(t)
	before, _ := os.ReadFile(path)
	f, err := OpenKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		do   func() error
		want string
	}{
		{"unknown tenant", func() error { _, _, err := f.Create("nobody", NewKeySpec{}); return err }, `no such tenant "nobody"`},
		{"duplicate id", func() error { _, _, err := f.Create("acme", NewKeySpec{ID: "acme-1"}); return err }, `already has a key "acme-1"`},
		{"bad id", func() error { _, _, err := f.Create("acme", NewKeySpec{ID: "Bad Id"}); return err }, `key id "Bad Id" must match`},
		{"unknown key", func() error { return f.Revoke("acme", "acme-9") }, `no such key "acme-9"`},
		{"negative keep", func() error { _, _, err := f.Rotate("acme", "acme-1", "", -time.Hour); return err }, "must not be negative"},
	} {
		if err := tc.do(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want an error containing %q", tc.name, err, tc.want)
		}
	}
	// Roles are checked by the loader's own rules when saving.
	if _, _, err := f.Create("acme", NewKeySpec{Role: "boss"}); err != nil {
		t.Fatal(err)
	}
	if err := f.Save(); err == nil || !strings.Contains(err.Error(), `role "boss"`) {
		t.Errorf("saving a key with role boss: %v; want refused", err)
	}
	f2, _ := OpenKeyFile(path)
	if _, _, err := f2.Create("acme", NewKeySpec{Role: KeyRoleAgent}); err != nil {
		t.Fatal(err)
	}
	if err := f2.Save(); err == nil || !strings.Contains(err.Error(), "agent_id") {
		t.Errorf("saving an agent key without agent: %v; want refused", err)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Error("a refused edit changed the file")
	}
	// A file changed by someone else since it was opened is not overwritten.
	f3, _ := OpenKeyFile(path)
	f3.Create("acme", NewKeySpec{})
	later := time.Now().Add(time.Minute)
	os.Chtimes(path, later, later)
	if err := f3.Save(); err == nil || !strings.Contains(err.Error(), "changed while") {
		t.Errorf("save over a changed file: %v", err)
	}
	// A broken file is refused when opened, with the loader's reason.
	os.WriteFile(path, []byte("tenants:\n  - id: acme\n    colour: blue\n"), 0o644)
	if _, err := OpenKeyFile(path); err == nil || !strings.Contains(err.Error(), "colour") {
		t.Errorf("open a broken file: %v", err)
	}
}

// Check does not need the client secrets' files or variables.
func TestCheckSkipsClientSecrets(t *testing.T) {
	src := "tenants:\n  - id: acme\n    api_keys:\n      - id: a\n        sha256: " + HashKey("x") + "\n        client_secret_env: CALMLINE_TEST_UNSET_SECRET\n"
	if _, err := Parse([]byte(src)); err == nil {
		t.Fatal("Parse accepted an unset client secret variable")
	}
	if err := Check([]byte(src)); err != nil {
		t.Errorf("Check: %v", err)
	}
}

// FuzzKeyFile edits arbitrary valid tenants files: an edit either fails
// with an error or saves a file the loader accepts, holding the new key.
func FuzzKeyFile(f *testing.F) {
	f.Add("tenants:\n  - id: acme\n", "acme", "")
	f.Add("tenants:\n  - id: acme\n    api_keys: []\n  - id: b\n    api_keys:\n", "b", "agent")
	f.Add("# c\ntenants: [{id: a, api_keys: [{id: k, sha256: "+HashKey("x")+"}]}] # tail\n", "a", "care")
	f.Add("keys: &k []\ntenants:\n  - id: a\n    api_keys: *k\n", "a", "")
	f.Fuzz(func(t *testing.T, doc, tenantID, role string) {
		if Check([]byte(doc)) != nil {
			return
		}
		path := filepath.Join(t.TempDir(), "tenants.yaml")
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		kf, err := OpenKeyFile(path)
		if err != nil {
			return
		}
		spec := NewKeySpec{Role: role}
		if role == KeyRoleAgent {
			spec.AgentID = "ana"
		}
		_, key, err := kf.Create(tenantID, spec)
		if err != nil {
			return
		}
		if err := kf.Save(); err != nil {
			return
		}
		reg, err := Load(path)
		if err != nil {
			t.Fatalf("saved a file the loader refuses: %v", err)
		}
		if tn, _, ok := reg.Authenticate(key); !ok || tn.ID != tenantID {
			t.Fatalf("the new key does not authenticate tenant %q", tenantID)
		}
	})
}

// A tenants file reached through a symbolic link is edited where it is; the
// link stays a link.
func TestKeyFileFollowsSymlinks(t *testing.T) {
	path, _ := writeKeyFile(t)
	link := filepath.Join(t.TempDir(), "tenants.yaml")
	if err := os.Symlink(path, link); err != nil {
		t.Skip("no symbolic links here:", err)
	}
	f, err := OpenKeyFile(link)
	if err != nil {
		t.Fatal(err)
	}
	_, key, err := f.Create("acme", NewKeySpec{})
	if err != nil || f.Save() != nil {
		t.Fatal(err)
	}
	if st, err := os.Lstat(link); err != nil || st.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the link was replaced by a file: %v %v", st.Mode(), err)
	}
	reg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok := reg.Authenticate(key); !ok {
		t.Error("the target file does not hold the new key")
	}
}

// Rotating without --keep disables the old key at once; the new key has the
// old one's role and agent.
func TestKeyFileRotateDisablesAtOnce(t *testing.T) {
	path, _ := writeKeyFile(t)
	f, _ := OpenKeyFile(path)
	if _, _, err := f.Create("acme", NewKeySpec{ID: "desk", Role: KeyRoleAgent, AgentID: "ana"}); err != nil {
		t.Fatal(err)
	}
	_, newKey, err := f.Rotate("acme", "desk", "desk-2", 0)
	if err != nil || f.Save() != nil {
		t.Fatal(err)
	}
	list, _ := f.List("acme")
	var states []string
	for _, k := range list {
		states = append(states, k.ID+":"+k.State(time.Now()))
	}
	if got := strings.Join(states, " "); got != "acme-1:active desk:disabled desk-2:active" {
		t.Errorf("states %s", got)
	}
	reg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, k, ok := reg.AuthenticateKey(newKey); !ok || k.Role != KeyRoleAgent || k.AgentID != "ana" {
		t.Errorf("rotated key: %v %+v; want role agent for ana", ok, k)
	}
	if _, _, err := f.Rotate("acme", "desk", "", 0); err == nil || !strings.Contains(err.Error(), "is disabled") {
		t.Errorf("rotating a disabled key: %v", err)
	}
}
