package identity_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"slices"
	"testing"

	"github.com/calmline/calmline/lib/identity"
)

// FuzzParseToken: no input panics, and only a well-formed v1 token decodes,
// to a 32-byte MAC.
func FuzzParseToken(f *testing.F) {
	f.Add(identity.Token([]byte("0123456789abcdef0123456789abcdef"), identity.Gateway))
	f.Add("v1.")
	f.Add("v1.!!!!")
	f.Add("Bearer clk_x")
	f.Fuzz(func(t *testing.T, s string) {
		b, err := identity.ParseToken(s)
		if err == nil && len(b) != 32 {
			t.Fatalf("%q decoded to %d bytes", s, len(b))
		}
	})
}

// FuzzIdentity: a URI SAN or Common Name yields either an error or one of
// the known services; a URI outside spiffe://calmline never names one.
func FuzzIdentity(f *testing.F) {
	for _, s := range []string{"spiffe://calmline/gateway", "spiffe://calmline/../realtime", "spiffe://calmline/gateway?x", "spiffe://user@calmline/fullcall", "spiffe://evil/gateway", "gateway", "https://calmline/gateway"} {
		f.Add(s, "realtime")
	}
	f.Fuzz(func(t *testing.T, uri, cn string) {
		name, ok, err := identity.ParseSPIFFE(uri)
		if err == nil && ok && !slices.Contains(identity.Services, name) {
			t.Fatalf("%q named %q", uri, name)
		}
		cert := &x509.Certificate{Subject: pkix.Name{CommonName: cn}}
		if u, err := url.Parse(uri); err == nil {
			cert.URIs = []*url.URL{u}
		}
		n, err := identity.FromCertificate(cert)
		if err == nil && !slices.Contains(identity.Services, n) {
			t.Fatalf("uri %q cn %q named %q", uri, cn, n)
		}
		if err == nil && ok && n != name {
			t.Fatalf("a calmline URI SAN %q lost to the CN: got %q, want %q", uri, n, name)
		}
	})
}

// FuzzParseSecrets: no input panics; what parses is one or two secrets of
// at least MinSecretBytes.
func FuzzParseSecrets(f *testing.F) {
	f.Add(identity.NewSecret())
	f.Add("# c\n" + identity.NewSecret() + "," + identity.NewSecret())
	f.Fuzz(func(t *testing.T, s string) {
		ss, err := identity.ParseSecrets(s)
		if err != nil {
			return
		}
		if len(ss) < 1 || len(ss) > 2 {
			t.Fatalf("%d secrets", len(ss))
		}
		for _, b := range ss {
			if len(b) < identity.MinSecretBytes {
				t.Fatalf("secret of %d bytes", len(b))
			}
		}
	})
}
