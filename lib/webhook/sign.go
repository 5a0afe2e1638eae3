// Package webhook sends calmline's outbound HTTP requests: Standard
// Webhooks signing and verification (webhook-id, webhook-timestamp,
// webhook-signature with HMAC-SHA256 and the "v1," prefix, several
// signatures during a secret rotation), an HTTP client that never follows a
// redirect and classifies every outcome as done, retryable or final (the
// callee decides what is retryable, as in Alertmanager's notify package),
// and the exponential backoff with jitter that schedules retries, honouring
// Retry-After.
//
// The package is pure transport: it knows nothing of escalations. The
// escalation service's outbox and fullcall's job callbacks build on it.
package webhook

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The Standard Webhooks headers, and the idempotency header calmline adds
// with the same value as webhook-id for receivers that know only that one.
const (
	HeaderID             = "webhook-id"
	HeaderTimestamp      = "webhook-timestamp"
	HeaderSignature      = "webhook-signature"
	HeaderIdempotencyKey = "Idempotency-Key"
)

// SecretPrefix starts a serialised Standard Webhooks symmetric secret.
const SecretPrefix = "whsec_"

// Secret is a Standard Webhooks signing key. Its String, GoString and
// LogValue never show the key, so a Secret that reaches a log line or an
// error message by mistake stays secret.
type Secret struct{ key []byte }

// ParseSecret reads a secret serialised as "whsec_" followed by the base64
// of 24 to 64 random bytes. The prefix may be omitted.
func ParseSecret(s string) (Secret, error) {
	s = strings.TrimSpace(s)
	b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, SecretPrefix))
	if err != nil {
		// Deliberately no detail: the error text could otherwise echo part
		// of the secret.
		return Secret{}, errors.New("webhook secret: not base64 after the whsec_ prefix")
	}
	if len(b) < 24 || len(b) > 64 {
		return Secret{}, fmt.Errorf("webhook secret: %d bytes; want 24 to 64", len(b))
	}
	return Secret{key: b}, nil
}

// NewSecret returns a fresh random secret in its serialised form.
func NewSecret() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails on supported platforms
	return SecretPrefix + base64.StdEncoding.EncodeToString(b)
}

// IsZero reports whether s holds no key.
func (s Secret) IsZero() bool { return len(s.key) == 0 }

func (s Secret) String() string   { return SecretPrefix + "[redacted]" }
func (s Secret) GoString() string { return s.String() }

// LogValue keeps the key out of structured logs.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// signature returns the base64 HMAC-SHA256 of "id.timestamp.body".
func (s Secret) signature(id string, ts int64, body []byte) string {
	h := hmac.New(sha256.New, s.key)
	h.Write([]byte(id))
	h.Write([]byte{'.'})
	h.Write(strconv.AppendInt(nil, ts, 10))
	h.Write([]byte{'.'})
	h.Write(body)
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// Sign returns the webhook-signature header value for a message: one
// "v1,<base64 HMAC-SHA256>" per secret, space separated. During a secret
// rotation pass the new and the old secret: receivers accept the message if
// any signature matches a secret they hold.
func Sign(id string, ts time.Time, body []byte, secrets ...Secret) string {
	var b strings.Builder
	for _, s := range secrets {
		if s.IsZero() {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString("v1,")
		b.WriteString(s.signature(id, ts.Unix(), body))
	}
	return b.String()
}

// SetHeaders sets the three Standard Webhooks headers (and Idempotency-Key)
// on h for a message signed with secrets; without secrets only the id,
// timestamp and idempotency key are set.
func SetHeaders(h http.Header, id string, ts time.Time, body []byte, secrets ...Secret) {
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(HeaderIdempotencyKey, id)
	if sig := Sign(id, ts, body, secrets...); sig != "" {
		h.Set(HeaderSignature, sig)
	}
}

// Verification errors.
var (
	ErrMissingHeaders = errors.New("webhook: missing webhook-id, webhook-timestamp or webhook-signature")
	ErrBadTimestamp   = errors.New("webhook: webhook-timestamp is not a unix time in seconds")
	ErrTooOld         = errors.New("webhook: timestamp too old")
	ErrTooNew         = errors.New("webhook: timestamp too far in the future")
	ErrNoMatch        = errors.New("webhook: no signature matches")
)

// DefaultTolerance is how far a message's timestamp may be from the
// receiver's clock, against replays.
const DefaultTolerance = 5 * time.Minute

// Verify checks a received message as a Standard Webhooks receiver does:
// the headers are present, the timestamp is within tolerance of now, and a
// v1 signature matches one of secrets (compared in constant time). Other
// signature versions are skipped.
func Verify(h http.Header, body []byte, now time.Time, tolerance time.Duration, secrets ...Secret) error {
	id, tsText, sigs := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	if id == "" || tsText == "" || sigs == "" {
		return ErrMissingHeaders
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return ErrBadTimestamp
	}
	if tolerance > 0 {
		switch at := time.Unix(ts, 0); {
		case now.Sub(at) > tolerance:
			return ErrTooOld
		case at.Sub(now) > tolerance:
			return ErrTooNew
		}
	}
	for _, s := range secrets {
		if s.IsZero() {
			continue
		}
		want := []byte(s.signature(id, ts, body))
		for _, vs := range strings.Fields(sigs) {
			version, sig, ok := strings.Cut(vs, ",")
			if !ok || version != "v1" {
				continue
			}
			if hmac.Equal([]byte(sig), want) {
				return nil
			}
		}
	}
	return ErrNoMatch
}

// ValidID reports whether id may be a webhook-id: non-empty, at most 128
// printable ASCII characters, no '.' (the signed content is delimited by
// full stops) and no space.
func ValidID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	return bytes.IndexFunc([]byte(id), func(r rune) bool { return r <= ' ' || r > '~' || r == '.' }) < 0
}
