// Package field holds the one rule for the values that clients choose and
// calmline keeps: identifiers (call, agent, tenant-chosen ids), free text
// (who acknowledged, why) and numbers. Every path that takes such a value —
// each WebSocket protocol, the Web API, gRPC, the spool — checks it here, so
// that one value is accepted or refused alike everywhere.
package field

import (
	"fmt"
	"math"
	"unicode"
	"unicode/utf8"
)

// MaxID is the longest identifier accepted, in bytes.
const MaxID = 128

// ID returns nil when s is a valid identifier: 1 to MaxID bytes of printable
// ASCII without spaces (0x21–0x7e). Identifiers end up in URLs, file names,
// log lines and signed payloads, so anything else is refused rather than
// escaped or trimmed: two different invalid ids must never become one.
// The error names the field and says what is wrong.
func ID(name, s string) error {
	if s == "" {
		return fmt.Errorf("%s is required", name)
	}
	if len(s) > MaxID {
		return fmt.Errorf("%s is %d bytes long, at most %d are allowed", name, len(s), MaxID)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("%s has byte 0x%02x at offset %d: only printable ASCII without spaces is allowed", name, c, i)
		}
	}
	return nil
}

// OptionalID is ID for a field that may be empty.
func OptionalID(name, s string) error {
	if s == "" {
		return nil
	}
	return ID(name, s)
}

// Text returns nil when s is acceptable free text of at most max bytes:
// valid UTF-8 without control characters (tabs and line breaks included:
// free text is written to logs and audit lines one per line). Empty text is
// accepted; callers that need a value check for it.
func Text(name, s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("%s is %d bytes long, at most %d are allowed", name, len(s), max)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s is not valid UTF-8", name)
	}
	for i, r := range s {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return fmt.Errorf("%s has control character %U at offset %d", name, r, i)
		}
	}
	return nil
}

// Finite returns nil when f is a finite number (not NaN, not ±Inf).
func Finite(name string, f float64) error {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Errorf("%s must be a finite number, not %v", name, f)
	}
	return nil
}

// MaxLabels bounds the labels of one call.
const MaxLabels = 32

// Labels returns nil when m is an acceptable set of call labels: at most
// MaxLabels entries, each key and value an identifier (see ID). Labels
// choose a tenant's alert rules and silences and are shown in reports and
// the live feed, so they follow the identifier rule rather than free text.
func Labels(name string, m map[string]string) error {
	if len(m) > MaxLabels {
		return fmt.Errorf("%s: %d labels, at most %d are allowed", name, len(m), MaxLabels)
	}
	for k, v := range m {
		if err := ID(name+" key", k); err != nil {
			return err
		}
		if err := ID(fmt.Sprintf("%s[%q]", name, k), v); err != nil {
			return err
		}
	}
	return nil
}
