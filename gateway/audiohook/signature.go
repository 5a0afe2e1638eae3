package audiohook

import (
	"cmp"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// AudioHook clients sign the HTTP request that opens the WebSocket with an
// HTTP message signature (RFC 9421, as the AudioHook specification profiles
// it): HMAC-SHA256 keyed with the client secret that belongs to the API key
// in X-API-KEY, over the request target, the authority and the AudioHook
// headers, with created/expires times and a nonce.

// Headers of the AudioHook connection request.
const (
	HeaderOrganizationID = "Audiohook-Organization-Id"
	HeaderCorrelationID  = "Audiohook-Correlation-Id"
	HeaderSessionID      = "Audiohook-Session-Id"
	HeaderAPIKey         = "X-API-KEY"
)

// signedComponents are the components a signature must cover, in the
// order AudioHook clients list them.
var signedComponents = []string{
	"@request-target",
	"@authority",
	"audiohook-organization-id",
	"audiohook-session-id",
	"audiohook-correlation-id",
	"x-api-key",
}

// SignatureError says why a request's signature was refused. Code is a
// short stable word for metrics and the JSON error; the message says what
// exactly was wrong, never anything secret.
type SignatureError struct {
	Code string
	Msg  string
}

func (e *SignatureError) Error() string { return e.Msg }

func sigErr(code, format string, args ...any) error {
	return &SignatureError{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// ErrUnsigned is returned by Verify for a request without a signature.
var ErrUnsigned = &SignatureError{Code: "unsigned", Msg: "the request is not signed (no Signature and Signature-Input headers)"}

// ErrNonceCacheFull is returned when the replay cache holds as many live
// nonces as it may; the request is refused (503) rather than admitted
// without a replay check.
var ErrNonceCacheFull = errors.New("too many recent signatures to check for replays; retry shortly")

// Verifier checks request signatures and remembers nonces to refuse
// replays. It is safe for concurrent use.
type Verifier struct {
	// MaxAge bounds how old a signature's created time may be (default
	// 10 s, as the reference server).
	MaxAge time.Duration
	// Skew is the clock difference tolerated between client and server
	// (default 5 s).
	Skew time.Duration
	// MaxNonces bounds the replay cache (default 100,000: 10,000 new
	// connections a second at the default MaxAge).
	MaxNonces int
	// Now returns the current time (tests).
	Now func() time.Time

	once   sync.Once
	mu     sync.Mutex
	nonces map[string]time.Time // key -> when it may be forgotten
	order  []nonceEntry         // insertion order, for expiry
	head   int
}

type nonceEntry struct {
	key     string
	expires time.Time
}

func (v *Verifier) defaults() {
	v.MaxAge = cmp.Or(v.MaxAge, 10*time.Second)
	v.Skew = cmp.Or(v.Skew, 5*time.Second)
	v.MaxNonces = cmp.Or(v.MaxNonces, 100_000)
	if v.Now == nil {
		v.Now = time.Now
	}
}

// signature is one parsed entry of Signature-Input with its value.
type signature struct {
	label      string
	components []string
	input      sfItem // the inner list, re-serialized into the signature base
	keyID      string
	nonce      string
	alg        string
	created    int64
	expires    int64
	hasCreated bool
	hasExpires bool
	value      []byte
}

// parseSignatures reads the Signature-Input and Signature headers.
func parseSignatures(h http.Header) ([]signature, error) {
	inputs, sigs := h.Values("Signature-Input"), h.Values("Signature")
	if len(inputs) == 0 && len(sigs) == 0 {
		return nil, ErrUnsigned
	}
	if len(inputs) == 0 || len(sigs) == 0 {
		return nil, sigErr("signature_malformed", "the request has a Signature or a Signature-Input header but not both")
	}
	in, err := parseSFDictionary(strings.Join(inputs, ", "))
	if err != nil {
		return nil, sigErr("signature_malformed", "Signature-Input: %v", err)
	}
	sv, err := parseSFDictionary(strings.Join(sigs, ", "))
	if err != nil {
		return nil, sigErr("signature_malformed", "Signature: %v", err)
	}
	values := map[string][]byte{}
	for _, m := range sv {
		if m.item.inner || m.item.value.kind != sfBytes {
			return nil, sigErr("signature_malformed", "Signature %q is not a byte sequence", m.key)
		}
		values[m.key] = m.item.value.b
	}
	var out []signature
	for _, m := range in {
		if !m.item.inner {
			return nil, sigErr("signature_malformed", "Signature-Input %q is not an inner list", m.key)
		}
		s := signature{label: m.key, input: m.item}
		var ok bool
		if s.value, ok = values[m.key]; !ok {
			return nil, sigErr("signature_malformed", "Signature-Input %q has no Signature", m.key)
		}
		for _, c := range m.item.list {
			if c.value.kind != sfString {
				return nil, sigErr("signature_malformed", "Signature-Input %q: components must be strings", m.key)
			}
			if len(c.params) > 0 {
				return nil, sigErr("signature_unsupported", "Signature-Input %q: component parameters (on %q) are not supported", m.key, c.value.s)
			}
			s.components = append(s.components, c.value.s)
		}
		for _, p := range m.item.params {
			str := func() (string, error) {
				if p.value.kind != sfString {
					return "", sigErr("signature_malformed", "Signature-Input %q: %s must be a string", m.key, p.key)
				}
				return p.value.s, nil
			}
			num := func() (int64, error) {
				if p.value.kind != sfInteger || p.value.i < 0 {
					return 0, sigErr("signature_malformed", "Signature-Input %q: %s must be a non-negative integer", m.key, p.key)
				}
				return p.value.i, nil
			}
			var err error
			switch p.key {
			case "keyid":
				s.keyID, err = str()
			case "nonce":
				s.nonce, err = str()
			case "alg":
				s.alg, err = str()
			case "tag":
				_, err = str()
			case "created":
				s.created, err = num()
				s.hasCreated = true
			case "expires":
				s.expires, err = num()
				s.hasExpires = true
			default:
				err = sigErr("signature_malformed", "Signature-Input %q: unknown parameter %q", m.key, p.key)
			}
			if err != nil {
				return nil, err
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// componentValue returns a covered component's value in the request.
func componentValue(r *http.Request, name string) (string, bool) {
	switch name {
	case "@request-target":
		return r.RequestURI, r.RequestURI != ""
	case "@authority":
		return strings.ToLower(r.Host), r.Host != ""
	case "@method":
		return r.Method, true
	case "@path":
		return r.URL.EscapedPath(), true
	case "@query":
		return "?" + r.URL.RawQuery, true
	case "@scheme":
		if r.TLS != nil {
			return "https", true
		}
		return "http", true
	}
	if strings.HasPrefix(name, "@") || name != strings.ToLower(name) || name == "signature" || name == "signature-input" {
		return "", false
	}
	vs := r.Header.Values(name)
	if len(vs) == 0 {
		return "", false
	}
	for i, v := range vs {
		vs[i] = strings.TrimSpace(v)
	}
	return strings.Join(vs, ", "), true
}

// base builds the signature base (RFC 9421 §2.5).
func (s *signature) base(r *http.Request) (string, error) {
	var b strings.Builder
	seen := map[string]bool{}
	for _, c := range s.components {
		if seen[c] {
			return "", sigErr("signature_malformed", "component %q listed twice", c)
		}
		seen[c] = true
		v, ok := componentValue(r, c)
		if !ok {
			return "", sigErr("signature_incomplete", "component %q is not in the request or not supported", c)
		}
		b.WriteString(`"` + c + `": ` + v + "\n")
	}
	b.WriteString(`"@signature-params": `)
	s.input.serialize(&b)
	return b.String(), nil
}

// Verify checks r's signature: made with secret by the key apiKey, fresh,
// covering the AudioHook headers, and not seen before. It returns
// ErrUnsigned when r carries no signature at all.
func (v *Verifier) Verify(r *http.Request, apiKey string, secret []byte) error {
	v.once.Do(v.defaults)
	sigs, err := parseSignatures(r.Header)
	if err != nil {
		return err
	}
	var s *signature
	for i := range sigs {
		if sigs[i].keyID == apiKey {
			s = &sigs[i]
			break
		}
	}
	if s == nil {
		return sigErr("keyid_mismatch", "no signature has keyid equal to the X-API-KEY header")
	}
	if s.alg != "" && s.alg != "hmac-sha256" {
		return sigErr("signature_unsupported", "signature algorithm %q is not supported (want hmac-sha256)", s.alg)
	}
	covered := map[string]bool{}
	for _, c := range s.components {
		covered[c] = true
	}
	for _, c := range signedComponents {
		if !covered[c] {
			return sigErr("signature_incomplete", "the signature does not cover %q", c)
		}
	}
	if !s.hasCreated {
		return sigErr("signature_malformed", "the signature has no created time")
	}
	if len(s.nonce) < 16 || len(s.nonce) > 256 {
		return sigErr("signature_malformed", "the signature's nonce must be 16 to 256 characters")
	}
	now := v.Now()
	created := time.Unix(s.created, 0)
	switch {
	case created.After(now.Add(v.Skew)):
		return sigErr("signature_future", "the signature was created %.0f s in the future", created.Sub(now).Seconds())
	case now.Sub(created) > v.MaxAge+v.Skew:
		return sigErr("signature_expired", "the signature was created %.0f s ago (limit %v)", now.Sub(created).Seconds(), v.MaxAge)
	case s.hasExpires && now.After(time.Unix(s.expires, 0).Add(v.Skew)):
		return sigErr("signature_expired", "the signature expired %.0f s ago", now.Sub(time.Unix(s.expires, 0)).Seconds())
	}
	base, err := s.base(r)
	if err != nil {
		return err
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(base))
	if !hmac.Equal(mac.Sum(nil), s.value) {
		return sigErr("signature_mismatch", "the signature does not match (wrong client secret, or the request was altered: check that proxies keep the Host header and path)")
	}
	// Only a verified signature's nonce is remembered, so that nobody
	// can fill the cache without the secret.
	return v.remember(apiKey, s.nonce, created.Add(v.MaxAge+2*v.Skew), now)
}

func (v *Verifier) remember(apiKey, nonce string, until, now time.Time) error {
	sum := sha256.Sum256([]byte(apiKey))
	key := hex.EncodeToString(sum[:16]) + nonce
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.nonces == nil {
		v.nonces = map[string]time.Time{}
	}
	// Forget expired nonces, oldest first.
	for v.head < len(v.order) && now.After(v.order[v.head].expires) {
		e := v.order[v.head]
		if v.nonces[e.key].Equal(e.expires) {
			delete(v.nonces, e.key)
		}
		v.order[v.head] = nonceEntry{}
		v.head++
	}
	if v.head > len(v.order)/2 {
		v.order = append(v.order[:0], v.order[v.head:]...)
		v.head = 0
	}
	if exp, seen := v.nonces[key]; seen && !now.After(exp) {
		return sigErr("nonce_reused", "the signature's nonce was already used: a replayed request")
	}
	if len(v.nonces) >= v.MaxNonces {
		return ErrNonceCacheFull
	}
	v.nonces[key] = until
	v.order = append(v.order, nonceEntry{key, until})
	return nil
}

// Sign adds an AudioHook signature to a connection request's headers:
// Signature-Input and Signature over the request target (path and query
// of target), the authority (host) and the AudioHook headers already set
// in h, keyed with secret, as an AudioHook client does.
func Sign(h http.Header, requestTarget, authority, apiKey string, secret []byte, nonce string, created time.Time, lifetime time.Duration) {
	var in strings.Builder
	in.WriteByte('(')
	for i, c := range signedComponents {
		if i > 0 {
			in.WriteByte(' ')
		}
		in.WriteString(`"` + c + `"`)
	}
	in.WriteString(`);keyid=` + strconv.Quote(apiKey) + `;nonce=` + strconv.Quote(nonce) + `;alg="hmac-sha256";created=` +
		strconv.FormatInt(created.Unix(), 10) + `;expires=` + strconv.FormatInt(created.Add(lifetime).Unix(), 10))
	var b strings.Builder
	for _, c := range signedComponents {
		var v string
		switch c {
		case "@request-target":
			v = requestTarget
		case "@authority":
			v = strings.ToLower(authority)
		default:
			v = strings.TrimSpace(h.Get(c))
		}
		b.WriteString(`"` + c + `": ` + v + "\n")
	}
	b.WriteString(`"@signature-params": ` + in.String())
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(b.String()))
	h.Set("Signature-Input", "sig1="+in.String())
	h.Set("Signature", "sig1=:"+base64.StdEncoding.EncodeToString(mac.Sum(nil))+":")
}
