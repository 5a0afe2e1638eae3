package tenant

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"
)

// Secret is key material, such as an AudioHook client secret. It formats
// as "[redacted]" whatever the verb, in logs, JSON and YAML, so that a
// stray %v or a logged Tenant cannot leak it.
type Secret []byte

const redacted = "[redacted]"

// String implements fmt.Stringer.
func (Secret) String() string { return redacted }

// GoString implements fmt.GoStringer.
func (Secret) GoString() string { return redacted }

// Format implements fmt.Formatter, so that %x and %q redact too.
func (Secret) Format(f fmt.State, _ rune) { f.Write([]byte(redacted)) }

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON implements json.Marshaler.
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalYAML implements yaml.Marshaler.
func (Secret) MarshalYAML() (any, error) { return redacted, nil }

// maxSecretFile bounds a client secret file: a secret is a few dozen bytes.
const maxSecretFile = 4096

// loadClientSecret reads the key's client secret from its file or
// environment variable, when one is named. Errors name the file or
// variable, never the content.
func (k *APIKey) loadClientSecret() error {
	if k.ClientSecretFile != "" && k.ClientSecretEnv != "" {
		return errors.New("set client_secret_file or client_secret_env, not both")
	}
	var raw, where string
	switch {
	case k.ClientSecretFile != "":
		where = "client_secret_file " + k.ClientSecretFile
		f, err := os.Open(k.ClientSecretFile)
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if len(b) > maxSecretFile {
			return fmt.Errorf("%s: larger than %d bytes", where, maxSecretFile)
		}
		raw = string(b)
	case k.ClientSecretEnv != "":
		where = "client_secret_env " + k.ClientSecretEnv
		v, ok := os.LookupEnv(k.ClientSecretEnv)
		if !ok {
			return fmt.Errorf("%s: variable not set", where)
		}
		raw = v
	default:
		return nil
	}
	s, err := DecodeClientSecret(raw)
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	k.ClientSecret = s
	return nil
}

// DecodeClientSecret decodes a client secret as Genesys Cloud shows it:
// base64 (padded or not), surrounding white space ignored.
func DecodeClientSecret(s string) (Secret, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("client secret is empty")
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		b, err = base64.RawStdEncoding.DecodeString(s)
	}
	if err != nil {
		return nil, errors.New("client secret is not base64")
	}
	if len(b) == 0 {
		return nil, errors.New("client secret is empty")
	}
	return Secret(b), nil
}

// Key returns the tenant's API key with the given id.
func (t *Tenant) Key(id string) (APIKey, bool) {
	for _, k := range t.APIKeys {
		if k.ID == id {
			return k, true
		}
	}
	return APIKey{}, false
}

// AudioHook is a tenant's Genesys Cloud AudioHook configuration. The
// client connects with one of the tenant's API keys (X-API-KEY) and signs
// its request with that key's client secret.
type AudioHook struct {
	// OrganizationIDs lists the Genesys Cloud organizations allowed to
	// stream for this tenant; empty allows any organization holding a
	// valid key.
	OrganizationIDs []string `yaml:"organization_ids"`
	// AllowUnsigned accepts unsigned connections from keys that have no
	// client secret. Off by default: a key without a secret is then
	// refused, since the protocol's signature is what proves the request
	// fresh and unreplayed.
	AllowUnsigned bool `yaml:"allow_unsigned"`
}

var uuidPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

func (a *AudioHook) check() error {
	for i, id := range a.OrganizationIDs {
		if !uuidPattern.MatchString(id) {
			return fmt.Errorf("organization_ids[%d] %q is not a UUID", i, id)
		}
		a.OrganizationIDs[i] = strings.ToLower(id)
	}
	return nil
}

// AllowsOrganization reports whether the AudioHook organization id may
// stream for the tenant.
func (a *AudioHook) AllowsOrganization(id string) bool {
	if len(a.OrganizationIDs) == 0 {
		return true
	}
	id = strings.ToLower(id)
	for _, o := range a.OrganizationIDs {
		if o == id {
			return true
		}
	}
	return false
}
