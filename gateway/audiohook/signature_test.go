package audiohook

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The example of the AudioHook specification ("Establishing Connection"):
// the request, its API key and client secret, and the signature Genesys
// Cloud computes for it.
const (
	specAPIKey = "SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh"
	specSecret = "MySuperSecretKeyTellNo-1!2@3#4$5" // TXlTdXBlclNlY3JldEtleVRlbGxOby0xITJAMyM0JDU= decoded
)

func specRequest() *http.Request {
	r := httptest.NewRequest("GET", "/api/v1/voicebiometrics/ws", nil)
	r.Host = "audiohook.example.com"
	r.Header.Set("Audiohook-Organization-Id", "d7934305-0972-4844-938e-9060eef73d05")
	r.Header.Set("Audiohook-Correlation-Id", "e160e428-53e2-487c-977d-96989bf5c99d")
	r.Header.Set("Audiohook-Session-Id", "30b0e395-84d3-4570-ac13-9a62d8f514c0")
	r.Header.Set("X-API-KEY", specAPIKey)
	r.Header.Set("Signature", "sig1=:NZBwyBHRRyRoeLqy1IzOa9VYBuI8TgMFt2GRDkDuJh4=:")
	r.Header.Set("Signature-Input", `sig1=("@request-target" "@authority" "audiohook-organization-id" "audiohook-session-id" "audiohook-correlation-id" "x-api-key");keyid="SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh";nonce="VGhpc0lzQVVuaXF1ZU5vbmNl";alg="hmac-sha256";created=1641013200;expires=3282026430`)
	return r
}

var specCreated = time.Unix(1641013200, 0)

func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

func TestTheSpecificationsExampleVerifiesOnceOnly(t *testing.T) {
	v := &Verifier{Now: fixedClock(specCreated.Add(2 * time.Second))}
	if err := v.Verify(specRequest(), specAPIKey, []byte(specSecret)); err != nil {
		t.Fatalf("the specification's example: %v", err)
	}
	// The same request again is a replay.
	err := v.Verify(specRequest(), specAPIKey, []byte(specSecret))
	var se *SignatureError
	if !errors.As(err, &se) || se.Code != "nonce_reused" {
		t.Errorf("replayed request: %v; want nonce_reused", err)
	}
}

func TestSignProducesWhatTheSpecificationSigns(t *testing.T) {
	r := specRequest()
	h := r.Header.Clone()
	h.Del("Signature")
	h.Del("Signature-Input")
	Sign(h, "/api/v1/voicebiometrics/ws", "audiohook.example.com", specAPIKey, []byte(specSecret), "VGhpc0lzQVVuaXF1ZU5vbmNl", specCreated, time.Unix(3282026430, 0).Sub(specCreated))
	if got, want := h.Get("Signature"), r.Header.Get("Signature"); got != want {
		t.Errorf("Signature = %s; want %s", got, want)
	}
	if got, want := h.Get("Signature-Input"), r.Header.Get("Signature-Input"); got != want {
		t.Errorf("Signature-Input = %s; want %s", got, want)
	}
}

func TestBadSignaturesAreRefusedWithTheirReason(t *testing.T) {
	now := specCreated.Add(2 * time.Second)
	signed := func(mod func(h http.Header), created time.Time, nonce string) *http.Request {
		r := specRequest()
		r.Header.Del("Signature")
		r.Header.Del("Signature-Input")
		Sign(r.Header, r.RequestURI, r.Host, specAPIKey, []byte(specSecret), nonce, created, 30*time.Second)
		if mod != nil {
			mod(r.Header)
		}
		return r
	}
	const nonce = "bm9uY2Utbm9uY2Utbm9uY2U="
	for _, c := range []struct {
		name string
		req  *http.Request
		key  string
		sec  string
		code string
	}{
		{"unsigned", signed(func(h http.Header) { h.Del("Signature"); h.Del("Signature-Input") }, now, nonce), specAPIKey, specSecret, "unsigned"},
		{"signature without input", signed(func(h http.Header) { h.Del("Signature-Input") }, now, nonce), specAPIKey, specSecret, "signature_malformed"},
		{"wrong client secret", signed(nil, now, nonce), specAPIKey, "another secret", "signature_mismatch"},
		{"header altered after signing", signed(func(h http.Header) { h.Set("Audiohook-Session-Id", "30b0e395-84d3-4570-ac13-9a62d8f514c1") }, now, nonce), specAPIKey, specSecret, "signature_mismatch"},
		{"created long ago", signed(nil, now.Add(-time.Minute), nonce), specAPIKey, specSecret, "signature_expired"},
		{"created in the future", signed(nil, now.Add(time.Minute), nonce), specAPIKey, specSecret, "signature_future"},
		{"keyid is another key", signed(nil, now, nonce), "another-key", specSecret, "keyid_mismatch"},
		{"nonce too short", signed(nil, now, "abc"), specAPIKey, specSecret, "signature_malformed"},
		{"unknown algorithm", signed(func(h http.Header) {
			h.Set("Signature-Input", strings.Replace(h.Get("Signature-Input"), `alg="hmac-sha256"`, `alg="rsa-pss-sha512"`, 1))
		}, now, nonce), specAPIKey, specSecret, "signature_unsupported"},
		{"does not cover the API key", signed(func(h http.Header) {
			h.Set("Signature-Input", strings.Replace(h.Get("Signature-Input"), ` "x-api-key"`, "", 1))
		}, now, nonce), specAPIKey, specSecret, "signature_incomplete"},
		{"no created time", signed(func(h http.Header) {
			in := h.Get("Signature-Input")
			h.Set("Signature-Input", in[:strings.Index(in, ";created=")])
		}, now, nonce), specAPIKey, specSecret, "signature_malformed"},
		{"garbage input", signed(func(h http.Header) { h.Set("Signature-Input", `sig1=("@request-target" ;;`) }, now, nonce), specAPIKey, specSecret, "signature_malformed"},
		{"signature not bytes", signed(func(h http.Header) { h.Set("Signature", `sig1="abc"`) }, now, nonce), specAPIKey, specSecret, "signature_malformed"},
		{"expired", signed(func(h http.Header) {
			in := h.Get("Signature-Input")
			h.Set("Signature-Input", in[:strings.Index(in, ";expires=")]+";expires=1")
		}, now, nonce), specAPIKey, specSecret, "signature_expired"},
	} {
		v := &Verifier{Now: fixedClock(now)}
		err := v.Verify(c.req, c.key, []byte(c.sec))
		var se *SignatureError
		if !errors.As(err, &se) || se.Code != c.code {
			t.Errorf("%s: %v; want %s", c.name, err, c.code)
		}
	}
}

func TestTheReplayCacheIsBoundedAndForgetsExpiredNonces(t *testing.T) {
	now := specCreated
	v := &Verifier{Now: func() time.Time { return now }, MaxNonces: 2}
	req := func(nonce string) *http.Request {
		r := specRequest()
		Sign(r.Header, r.RequestURI, r.Host, specAPIKey, []byte(specSecret), nonce, now, 30*time.Second)
		return r
	}
	for _, n := range []string{"first-nonce-0000000", "second-nonce-000000"} {
		if err := v.Verify(req(n), specAPIKey, []byte(specSecret)); err != nil {
			t.Fatal(err)
		}
	}
	// Full of live nonces: refused rather than admitted unchecked.
	if err := v.Verify(req("third-nonce-0000000"), specAPIKey, []byte(specSecret)); !errors.Is(err, ErrNonceCacheFull) {
		t.Errorf("third nonce with a full cache: %v; want ErrNonceCacheFull", err)
	}
	// Once the first signatures are too old to be accepted anyway, their
	// nonces are forgotten and room is made.
	now = now.Add(time.Minute)
	if err := v.Verify(req("third-nonce-0000000"), specAPIKey, []byte(specSecret)); err != nil {
		t.Errorf("after expiry: %v", err)
	}
	if len(v.nonces) != 1 {
		t.Errorf("%d nonces remembered; want 1", len(v.nonces))
	}
}

func TestStructuredFieldsRoundTrip(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`sig1=("@method" "x-api-key");keyid="k";created=1`, `sig1=("@method" "x-api-key");keyid="k";created=1`},
		{`a=1, b=?0, c, d=:AQID:;p="q\"\\", e=(1 2.5 tok/en);flag`, `a=1, b=?0, c, d=:AQID:;p="q\"\\", e=(1 2.5 tok/en);flag`},
		{`  a=1 ,	b=2`, `a=1, b=2`},
		{`a=1, a=2`, `a=2`},
	} {
		ms, err := parseSFDictionary(c.in)
		if err != nil {
			t.Errorf("parse %q: %v", c.in, err)
			continue
		}
		var b strings.Builder
		for i, m := range ms {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(m.key)
			if m.item.inner || m.item.value.kind != sfBoolean || !m.item.value.truth {
				b.WriteByte('=')
				m.item.serialize(&b)
			} else {
				(sfItem{params: m.item.params}).serializeParams(&b)
			}
		}
		if b.String() != c.want {
			t.Errorf("round trip of %q = %q; want %q", c.in, b.String(), c.want)
		}
	}
	for _, bad := range []string{`A=1`, `a=`, `a=(1`, `a="unterminated`, `a=:not base64!:`, `a=1,`, `a=1 b=2`, `a=?2`, `a="\x01"`, `a=1234567890123456`, `a=1.2345`} {
		if _, err := parseSFDictionary(bad); err == nil {
			t.Errorf("parse %q succeeded; want an error", bad)
		}
	}
}

// BenchmarkVerify checks the specification's example signature (a new
// nonce cache each time, so that it is not a replay).
func BenchmarkVerify(b *testing.B) {
	r := specRequest()
	now := fixedClock(specCreated.Add(time.Second))
	b.ReportAllocs()
	for range b.N {
		v := &Verifier{Now: now}
		if err := v.Verify(r, specAPIKey, []byte(specSecret)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseClientMessage parses a ping as Genesys Cloud sends it.
func BenchmarkParseClientMessage(b *testing.B) {
	msg := []byte(spec["ping"])
	b.ReportAllocs()
	for range b.N {
		m, err := ParseClientMessage(msg)
		if err != nil {
			b.Fatal(err)
		}
		m.DecodePing()
	}
}
