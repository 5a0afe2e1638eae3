package tenant

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestClientSecretsLoadFromFileOrEnvironment(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "secret")
	// The example secret of the AudioHook specification, with the
	// trailing newline an editor leaves.
	if err := os.WriteFile(file, []byte("TXlTdXBlclNlY3JldEtleVRlbGxOby0xITJAMyM0JDU=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ACME_AUDIOHOOK_SECRET", "c2VjcmV0")
	in := fmt.Sprintf(`tenants:
  - id: acme
    api_keys:
      - {id: a, sha256: %s, client_secret_file: %s}
      - {id: b, sha256: %s, client_secret_env: ACME_AUDIOHOOK_SECRET}
      - {id: c, sha256: %s}
    audiohook:
      organization_ids: [D7934305-0972-4844-938E-9060EEF73D05]
`, HashKey("ka"), file, HashKey("kb"), HashKey("kc"))
	ts, err := Parse([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	acme := ts[0]
	for id, want := range map[string]string{"a": "MySuperSecretKeyTellNo-1!2@3#4$5", "b": "secret", "c": ""} {
		k, ok := acme.Key(id)
		if !ok || string(k.ClientSecret) != want {
			t.Errorf("key %s: secret %q, %v; want %q", id, string(k.ClientSecret), ok, want)
		}
	}
	if !acme.AudioHook.AllowsOrganization("d7934305-0972-4844-938e-9060eef73d05") || acme.AudioHook.AllowsOrganization("00000000-0000-0000-0000-000000000001") {
		t.Error("organization_ids not applied case-insensitively")
	}
	if (&AudioHook{}).AllowsOrganization("anything") != true {
		t.Error("no organization_ids must allow any organization")
	}
}

func TestClientSecretErrorsNameTheSourceNotTheContent(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("not base64 at all!"), 0o600)
	big := filepath.Join(dir, "big")
	os.WriteFile(big, []byte(strings.Repeat("A", 5000)), 0o600)
	t.Setenv("EMPTY_SECRET", "  ")
	key := func(extra string) string {
		return "tenants:\n  - id: a\n    api_keys:\n      - {id: k, sha256: " + HashKey("x") + ", " + extra + "}\n"
	}
	for _, c := range []struct{ extra, want string }{
		{"client_secret_file: " + filepath.Join(dir, "missing"), "no such file"},
		{"client_secret_file: " + bad, "not base64"},
		{"client_secret_file: " + big, "larger than 4096 bytes"},
		{"client_secret_env: NO_SUCH_VARIABLE_HERE", "variable not set"},
		{"client_secret_env: EMPTY_SECRET", "empty"},
		{"client_secret_file: " + bad + ", client_secret_env: EMPTY_SECRET", "not both"},
	} {
		_, err := Parse([]byte(key(c.extra)))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want an error containing %q", c.extra, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "not base64 at all") {
			t.Errorf("error %q shows the secret file's content", err)
		}
	}
	if _, err := Parse([]byte("tenants:\n  - id: a\n    audiohook: {organization_ids: [acme]}\n")); err == nil || !strings.Contains(err.Error(), "not a UUID") {
		t.Errorf("bad organization id: %v", err)
	}
	// The secret cannot be written inline in the file.
	if _, err := Parse([]byte(key("client_secret: c2VjcmV0"))); err == nil {
		t.Error("an inline client_secret was accepted")
	}
}

func TestSecretsNeverFormat(t *testing.T) {
	s := Secret("hunter2")
	k := APIKey{ID: "k", ClientSecret: s}
	var logged strings.Builder
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("key", "key", k, "secret", s)
	j, _ := json.Marshal(k)
	y, _ := yaml.Marshal(map[string]any{"key": k, "secret": s})
	for _, out := range []string{
		fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s %q %x %X", s, k, k, s, s, s, s), logged.String(), string(j), string(y),
	} {
		if strings.Contains(out, "hunter2") || strings.Contains(out, "68756e74657232") || strings.Contains(out, "aHVudGVyMg") {
			t.Errorf("secret leaked: %s", out)
		}
		if !strings.Contains(out, "[redacted]") {
			t.Errorf("no redaction marker in %s", out)
		}
	}
}
