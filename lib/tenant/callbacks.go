package tenant

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"os"
	"strings"
)

// JobCallbacks lets a tenant's systems be called back when a recording
// they queued has been analysed (fullcall's Web API jobs). Callbacks are
// signed the Standard Webhooks way with the tenant's secret and go only to
// URLs under one of the listed prefixes.
type JobCallbacks struct {
	// URLs lists the prefixes a callback URL must start with, each an
	// absolute http(s) URL ("https://crm.example.com/hooks/").
	URLs []string `yaml:"urls"`
	// SecretFile or SecretEnv names where the signing secret is read from
	// when the tenants file is loaded: "whsec_" followed by base64, as
	// Standard Webhooks secrets are written. The secret is never logged.
	SecretFile string `yaml:"secret_file"`
	SecretEnv  string `yaml:"secret_env"`

	// Key is the decoded secret.
	Key SecretKey `yaml:"-"`
}

// SecretKey is key material; it prints as [redacted].
type SecretKey []byte

// String implements fmt.Stringer without revealing the key.
func (SecretKey) String() string { return "[redacted]" }

// GoString implements fmt.GoStringer without revealing the key.
func (SecretKey) GoString() string { return "[redacted]" }

// Enabled reports whether callbacks are configured.
func (c *JobCallbacks) Enabled() bool { return len(c.Key) > 0 && len(c.URLs) > 0 }

// Allows reports whether a callback URL is under one of the prefixes: the
// same scheme and host (with port), and a path that starts with the
// prefix's path.
func (c *JobCallbacks) Allows(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.Fragment != "" {
		return false
	}
	for _, p := range c.URLs {
		pu, err := url.Parse(p)
		if err == nil && pu.Scheme == u.Scheme && strings.EqualFold(pu.Host, u.Host) && strings.HasPrefix(u.EscapedPath(), pu.EscapedPath()) {
			return true
		}
	}
	return false
}

// load checks the configuration and reads the secret.
func (c *JobCallbacks) load() error {
	if len(c.URLs) == 0 && c.SecretFile == "" && c.SecretEnv == "" {
		return nil
	}
	for _, p := range c.URLs {
		u, err := url.Parse(p)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("job_callbacks.urls: %q is not an absolute http(s) URL", p)
		}
	}
	var raw string
	switch {
	case c.SecretFile != "" && c.SecretEnv != "":
		return fmt.Errorf("job_callbacks: give secret_file or secret_env, not both")
	case c.SecretFile != "":
		b, err := os.ReadFile(c.SecretFile)
		if err != nil {
			return fmt.Errorf("job_callbacks.secret_file: %w", err)
		}
		raw = strings.TrimSpace(string(b))
	case c.SecretEnv != "":
		raw = strings.TrimSpace(os.Getenv(c.SecretEnv))
		if raw == "" {
			return fmt.Errorf("job_callbacks.secret_env: $%s is empty", c.SecretEnv)
		}
	default:
		return fmt.Errorf("job_callbacks: urls given without a secret_file or secret_env")
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(raw, "whsec_"))
	if err != nil || len(key) < 24 {
		// The secret's text is deliberately not in the message.
		return fmt.Errorf("job_callbacks: the secret must be whsec_ followed by base64 of at least 24 bytes")
	}
	c.Key = key
	return nil
}
