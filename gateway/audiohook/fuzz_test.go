package audiohook

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// FuzzParseClientMessage feeds arbitrary text frames through the parser
// and every parameter decoder: none may panic, and a parsed message keeps
// the invariants the session relies on.
func FuzzParseClientMessage(f *testing.F) {
	for _, m := range spec {
		f.Add([]byte(m))
	}
	f.Add([]byte(`{"version":"2","id":"e160e428-53e2-487c-977d-96989bf5c99d","type":"x","seq":18446744073709551615,"serverseq":0,"position":"PT9999999999.999999999S","parameters":{}}`))
	f.Add([]byte(`{"version":"2","parameters":{"media":[{"channels":[]}]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseClientMessage(data)
		if err != nil {
			if _, ok := err.(*ProtocolError); !ok {
				t.Fatalf("error %T is not a *ProtocolError", err)
			}
			return
		}
		if !IsUUID(m.ID) || m.Position < 0 || len(m.Params) == 0 || m.Params[0] != '{' {
			t.Fatalf("parsed message breaks an invariant: %+v", m)
		}
		if p, err := m.DecodeOpen(); err == nil {
			if !IsUUID(p.OrganizationID) || !IsUUID(p.ConversationID) {
				t.Fatalf("open without UUIDs accepted: %+v", p)
			}
			for _, md := range p.Media {
				if len(md.Channels) < 1 || len(md.Channels) > 2 {
					t.Fatalf("media with %d channels accepted", len(md.Channels))
				}
			}
			if sel, roles, ok := SelectMedia(p.Media); ok && len(roles) != len(sel.Channels) {
				t.Fatalf("selected %v with roles %v", sel.Channels, roles)
			}
		}
		if s, err := m.DecodeSpan(); err == nil && (s.Start < 0 || s.Discarded < 0 || s.End() < s.Start) {
			t.Fatalf("span %+v", s)
		}
		m.DecodeClose()
		m.DecodeError()
		m.DecodePing()
		m.DecodeUpdate()
		m.DecodeEmpty()
	})
}

// FuzzSignatureHeaders feeds arbitrary Signature-Input and Signature
// values through the structured-field parser and the verifier, and checks
// that serializing what was parsed is stable.
func FuzzSignatureHeaders(f *testing.F) {
	r := specRequest()
	f.Add(r.Header.Get("Signature-Input"), r.Header.Get("Signature"))
	f.Add(`sig1=("@method" "@path";req);created=1;nonce="n", sig2=(x "y");alg=tok;z=?0`, `sig1=:AAAA:, sig2=:=:`)
	f.Add(`a=1.5, b=(1 2 -3);p=:YQ==:, c`, `a="x\"y"`)
	f.Fuzz(func(t *testing.T, input, sig string) {
		if ms, err := parseSFDictionary(input); err == nil {
			for _, m := range ms {
				var b1 strings.Builder
				m.item.serialize(&b1)
				again, err := parseSFDictionary("k=" + b1.String())
				if err != nil {
					t.Fatalf("serialized %q does not parse: %v", b1.String(), err)
				}
				var b2 strings.Builder
				again[0].item.serialize(&b2)
				if b1.String() != b2.String() {
					t.Fatalf("serialization not stable: %q then %q", b1.String(), b2.String())
				}
			}
		}
		req := specRequest()
		req.Header = http.Header{}
		for k, v := range specRequest().Header {
			req.Header[k] = v
		}
		req.Header.Set("Signature-Input", input)
		req.Header.Set("Signature", sig)
		v := &Verifier{Now: fixedClock(specCreated)}
		err := v.Verify(req, specAPIKey, []byte(specSecret))
		if err == nil && (input != specRequest().Header.Get("Signature-Input") && !strings.Contains(input, "sig1")) {
			t.Fatalf("a signature verified from fuzzed headers %q %q", input, sig)
		}
	})
}

// FuzzParseDuration checks that durations parse without panics and that
// what parses formats back to the same value at millisecond precision.
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"PT0S", "PT6.3S", "PT.5S", "PT12.345S", "PT1.S", "PT-1S"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err != nil {
			return
		}
		if d < 0 {
			t.Fatalf("%q parsed to a negative %v", s, d)
		}
		back, err := ParseDuration(FormatDuration(d))
		if err != nil || back != d.Round(time.Millisecond) {
			t.Fatalf("%q: %v formats as %q, parses to %v (%v)", s, d, FormatDuration(d), back, err)
		}
	})
}
