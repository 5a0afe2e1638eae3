package tenant

import (
	"errors"
	"fmt"
	"net/url"
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
	// AllowLinkLocal lets callbacks reach link-local and cloud metadata
	// addresses (169.254.0.0/16, fe80::/10), which calmline otherwise
	// refuses when it connects.
	AllowLinkLocal bool `yaml:"allow_link_local"`
}

// Enabled reports whether callbacks are configured.
func (c *JobCallbacks) Enabled() bool { return len(c.SigningSecrets) > 0 && len(c.URLs) > 0 }

// Check parses and normalises a callback URL (ParseCallbackURL) and
// returns it when it is under one of the prefixes (the same scheme and
// host with port, and the prefix's path segment by segment); the URL to
// call is the one returned, never raw. The error says why, without the
// URL's query.
func (c *JobCallbacks) Check(raw string) (*url.URL, error) {
	u, err := ParseCallbackURL(raw)
	if err != nil {
		return nil, err
	}
	for _, p := range c.URLs {
		if pu, err := ParseCallbackURL(p); err == nil && underPrefix(u, pu) {
			return u, nil
		}
	}
	return nil, fmt.Errorf("%w: %s is not under one of the tenant's callback URLs", ErrCallbackURL, u.Scheme+"://"+u.Host+u.EscapedPath())
}

// Allows reports whether Check accepts a callback URL.
func (c *JobCallbacks) Allows(raw string) bool {
	_, err := c.Check(raw)
	return err == nil
}

// check validates the configuration (the secrets are read when used).
func (c *JobCallbacks) check() error {
	if len(c.URLs) == 0 && len(c.SigningSecrets) == 0 {
		return nil
	}
	for _, p := range c.URLs {
		if _, err := ParseCallbackURL(p); err != nil {
			return fmt.Errorf("job_callbacks.urls: %w", err)
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
