package identity

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// MinSecretBytes is the shortest secret accepted.
const MinSecretBytes = 32

// SecretFileName is the file `calmline serve` creates in its data
// directory on first start.
const SecretFileName = "service-identity.secret"

// EnvSecret names the environment variable a secret may come from.
const EnvSecret = "CALMLINE_SERVICE_SECRET"

// Keyring holds the deployment secret: the current one, which clients
// sign with, and the previous one during a rotation, which servers still
// accept. A keyring read from a file re-reads it when it changes (checked
// at most every reloadEvery), so a rotation needs no restart.
type Keyring struct {
	path string
	now  func() time.Time

	mu      sync.Mutex
	secrets [][]byte
	mtime   time.Time
	checked time.Time
	// failed identifies the file state whose re-read failed (its mtime,
	// or the error reaching it), so that one bad edit is tried, logged
	// and counted once, not every reloadEvery.
	failed string
	// log and reloadErrors report failed re-reads (ReportReloadErrors).
	log          *slog.Logger
	reloadErrors metric.Int64Counter
}

const reloadEvery = 2 * time.Second

// ParseSecrets reads the secrets of a file or variable: one or two
// base64 (standard or URL alphabet, padded or not) secrets of at least
// MinSecretBytes bytes, separated by lines or commas; '#' starts a
// comment line. The first is current.
func ParseSecrets(text string) ([][]byte, error) {
	var fields []string
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		fields = append(fields, strings.Split(line, ",")...)
	}
	var out [][]byte
	for _, line := range fields {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		b, err := decode(line)
		if err != nil {
			return nil, fmt.Errorf("secret #%d: not base64", len(out)+1)
		}
		if len(b) < MinSecretBytes {
			return nil, fmt.Errorf("secret #%d: %d bytes, at least %d are needed", len(out)+1, len(b), MinSecretBytes)
		}
		out = append(out, b)
	}
	switch {
	case len(out) == 0:
		return nil, errors.New("no secret")
	case len(out) > 2:
		return nil, fmt.Errorf("%d secrets: at most two (the current one and, during a rotation, the previous one)", len(out))
	}
	return out, nil
}

func decode(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if strings.ContainsAny(s, "+/") {
		return base64.RawStdEncoding.DecodeString(s)
	}
	return base64.RawURLEncoding.DecodeString(s)
}

// NewKeyring returns a keyring holding secrets (the current one first).
func NewKeyring(secrets ...[]byte) (*Keyring, error) {
	if len(secrets) == 0 || len(secrets) > 2 {
		return nil, errors.New("service identity: one or two secrets")
	}
	for _, s := range secrets {
		if len(s) < MinSecretBytes {
			return nil, fmt.Errorf("service identity: secret of %d bytes, at least %d are needed", len(s), MinSecretBytes)
		}
	}
	return &Keyring{secrets: secrets, now: time.Now}, nil
}

// FromEnv returns the keyring of the environment variable name, or nil
// when it is unset.
func FromEnv(name string) (*Keyring, error) {
	v, ok := os.LookupEnv(name)
	if !ok {
		return nil, nil
	}
	s, err := ParseSecrets(v)
	if err != nil {
		return nil, fmt.Errorf("service identity: $%s: %w", name, err)
	}
	return NewKeyring(s...)
}

// LoadFile returns the keyring of a secret file, re-read when it changes.
// The file must not be readable by others than its owner and group.
func LoadFile(path string) (*Keyring, error) {
	k := &Keyring{path: path, now: time.Now}
	if err := k.Reload(); err != nil {
		return nil, err
	}
	return k, nil
}

// LoadOrCreate returns the keyring of path, creating the file with a new
// random secret (mode 0600) when it does not exist — what `calmline serve`
// does in its data directory on first start.
func LoadOrCreate(path string) (*Keyring, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("service identity: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			_, err = fmt.Fprintf(f, "# calmline service identity secret (current first; during a rotation, the previous second)\n%s\n", NewSecret())
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil && !errors.Is(err, fs.ErrExist) { // another process created it first: use theirs
			return nil, fmt.Errorf("service identity: create %s: %w", path, err)
		}
	}
	return LoadFile(path)
}

// NewSecret returns a new random secret, base64url.
func NewSecret() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Reload re-reads the file; on error the keyring keeps what it had.
func (k *Keyring) Reload() error {
	if k.path == "" {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.reloadLocked()
}

func (k *Keyring) reloadLocked() error {
	st, err := os.Stat(k.path)
	if err != nil {
		return fmt.Errorf("service identity: %w", err)
	}
	if st.Mode().Perm()&0o007 != 0 {
		return fmt.Errorf("service identity: %s is readable or writable by others (mode %v); chmod o-rwx it", k.path, st.Mode().Perm())
	}
	data, err := os.ReadFile(k.path)
	if err != nil {
		return fmt.Errorf("service identity: %w", err)
	}
	s, err := ParseSecrets(string(data))
	if err != nil {
		return fmt.Errorf("service identity: %s: %w", k.path, err)
	}
	k.secrets, k.mtime = s, st.ModTime()
	return nil
}

// ReportReloadErrors makes the keyring log each failed re-read of its file
// once, at ERROR, and count it in calmline.identity.secret_reload_errors;
// the keyring keeps the secrets it had. The message says what is wrong
// with the file (its path, mode, the secret's number and length), never
// its content. The first call wins: the services of one process share a
// keyring. A keyring without a file has nothing to report.
func (k *Keyring) ReportReloadErrors(log *slog.Logger, mp metric.MeterProvider) error {
	if k == nil || k.path == "" {
		return nil
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	c, err := mp.Meter("github.com/calmline/calmline/lib/identity").Int64Counter("calmline.identity.secret_reload_errors",
		metric.WithDescription("Failed re-reads of the service-identity secret file (the previous secrets stay in use)."))
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.log == nil {
		k.log, k.reloadErrors = log, c
	}
	return nil
}

// refreshLocked re-reads the file when it changed, at most every
// reloadEvery. A failed re-read keeps the secrets and is reported once
// per state of the file.
func (k *Keyring) refreshLocked() {
	if k.path == "" {
		return
	}
	now := k.now()
	if now.Sub(k.checked) < reloadEvery {
		return
	}
	k.checked = now
	st, err := os.Stat(k.path)
	var state string
	switch {
	case err != nil:
		state = "stat: " + err.Error()
	case st.ModTime().Equal(k.mtime):
		return
	default:
		state = st.ModTime().String()
	}
	if state == k.failed {
		return
	}
	if err == nil {
		err = k.reloadLocked()
	} else {
		err = fmt.Errorf("service identity: %w", err)
	}
	if err == nil {
		if k.failed != "" && k.log != nil {
			k.log.Info("service identity: secret file reloaded", "path", k.path)
		}
		k.failed = ""
		return
	}
	k.failed = state
	if k.log != nil {
		k.log.Error("service identity: the secret file could not be reloaded; the previous secrets stay in use", "path", k.path, "err", err)
		k.reloadErrors.Add(context.Background(), 1)
	}
}

func (k *Keyring) current() ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.refreshLocked()
	if len(k.secrets) == 0 {
		return nil, errors.New("no secret")
	}
	return k.secrets[0], nil
}

// Verify reports whether mac proves name under the current or the
// previous secret; every secret is compared, in constant time.
func (k *Keyring) Verify(name string, got []byte) bool {
	k.mu.Lock()
	k.refreshLocked()
	secrets := k.secrets
	k.mu.Unlock()
	ok := false
	for _, s := range secrets {
		if hmac.Equal(mac(s, name), got) {
			ok = true
		}
	}
	return ok
}

// Token returns the token proving name under the current secret (for
// tools and tests that dial by hand).
func (k *Keyring) Token(name string) (string, error) {
	s, err := k.current()
	if err != nil {
		return "", err
	}
	return Token(s, name), nil
}

// Path returns the file the keyring reads, "" when it came from memory or
// the environment.
func (k *Keyring) Path() string { return k.path }
