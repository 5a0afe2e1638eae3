package tenant

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// JobCallbacks lets a tenant's systems be called back when a recording
// they queued has been analysed (fullcall's Web API jobs). Callbacks are
// signed the Standard Webhooks way with the tenant's secret, as
// escalation's webhooks are, and go only to URLs under one of the listed
// prefixes.
type JobCallbacks struct {
	// URLs lists the prefixes a callback URL must start with, each an
	// absolute http(s) URL ("https://crm.example.com/hooks/").
	URLs []string `yaml:"urls"`
	// SigningSecrets name where the signing secrets are ("whsec_" + base64,
	// as Standard Webhooks secrets are written): the current one first and,
	// during a rotation, the previous one. They are read when a callback
	// is sent and never logged.
	SigningSecrets []SecretRef `yaml:"signing_secrets"`
}

// Enabled reports whether callbacks are configured.
func (c *JobCallbacks) Enabled() bool { return len(c.SigningSecrets) > 0 && len(c.URLs) > 0 }

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

// check validates the configuration (the secrets are read when used).
func (c *JobCallbacks) check() error {
	if len(c.URLs) == 0 && len(c.SigningSecrets) == 0 {
		return nil
	}
	for _, p := range c.URLs {
		u, err := url.Parse(p)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
			return fmt.Errorf("job_callbacks.urls: %q is not an absolute http(s) URL without credentials", p)
		}
	}
	switch n := len(c.SigningSecrets); {
	case n == 0:
		return errors.New("job_callbacks: urls given without signing_secrets")
	case n > 2:
		return errors.New("job_callbacks: at most two signing secrets (the current and, during a rotation, the previous one)")
	}
	for _, r := range c.SigningSecrets {
		if err := r.check(); err != nil {
			return fmt.Errorf("job_callbacks.signing_secrets: %w", err)
		}
	}
	return nil
}
