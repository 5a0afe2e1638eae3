package daemon

import (
	"crypto/tls"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/calmline/calmline/lib/tlstest"
)

func TestTLSFlagsFromEnvironment(t *testing.T) {
	t.Setenv("CALMLINE_TLS_CERT", "/etc/calmline/tls.crt")
	t.Setenv("CALMLINE_BACKEND_SERVER_NAME", "realtime.internal")
	var f TLSFlags
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	f.Register(fs)
	if err := fs.Parse([]string{"--tls-key", "/etc/calmline/tls.key"}); err != nil {
		t.Fatal(err)
	}
	if f.Cert != "/etc/calmline/tls.crt" || f.Key != "/etc/calmline/tls.key" || f.BackendServerName != "realtime.internal" {
		t.Errorf("flags = %+v; want the environment's values where no flag was given", f)
	}
}

func TestTLSLoad(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "CA")
	leaf := ca.Issue(t, "svc")
	files := leaf.WriteFiles(t, dir, "svc", ca)
	other := ca.Issue(t, "other").WriteFiles(t, dir, "other", ca)
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	t.Run("nothing", func(t *testing.T) {
		got, err := TLSFlags{}.Load()
		if err != nil || got.Server != nil || got.Client != nil {
			t.Errorf("Load() = %+v, %v; want no TLS", got, err)
		}
	})
	t.Run("everything", func(t *testing.T) {
		got, err := TLSFlags{Cert: files.Cert, Key: files.Key, ClientCA: files.CA,
			BackendCA: files.CA, BackendCert: files.Cert, BackendKey: files.Key, BackendServerName: "x"}.Load()
		if err != nil {
			t.Fatal(err)
		}
		if got.Server.ClientCAs == nil || got.Server.ClientAuth != tls.VerifyClientCertIfGiven {
			t.Errorf("server config does not verify client certificates: %+v", got.Server)
		}
		if got.Client.RootCAs == nil || got.Client.ServerName != "x" || got.Client.GetClientCertificate == nil {
			t.Errorf("client config incomplete: %+v", got.Client)
		}
	})
	for _, tc := range []struct {
		name string
		f    TLSFlags
		want string
	}{
		{"cert without key", TLSFlags{Cert: files.Cert}, "--tls-cert and --tls-key go together"},
		{"backend key without cert", TLSFlags{BackendKey: files.Key}, "--backend-cert and --backend-key go together"},
		{"client CA without a certificate", TLSFlags{ClientCA: files.CA}, "--tls-client-ca needs --tls-cert"},
		{"server name alone", TLSFlags{BackendServerName: "x"}, "--backend-server-name needs"},
		{"missing file", TLSFlags{Cert: filepath.Join(dir, "nope.crt"), Key: files.Key}, "nope.crt"},
		{"key of another certificate", TLSFlags{Cert: files.Cert, Key: other.Key}, "does not match"},
		{"key given as certificate", TLSFlags{Cert: files.Key, Key: files.Key}, "svc.key"},
		{"CA file without certificates", TLSFlags{BackendCA: garbage}, "holds no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.f.Load()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load() error = %v; want one saying %q", err, tc.want)
			}
			// Errors name files and problems, never key material.
			for _, line := range strings.Split(string(leaf.KeyPEM), "\n") {
				if len(line) > 16 && strings.Contains(err.Error(), line) {
					t.Fatalf("the error quotes the private key: %v", err)
				}
			}
		})
	}
}

func TestTLSReload(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "CA")
	files := ca.Issue(t, "first").WriteFiles(t, dir, "svc", ca)
	got, err := TLSFlags{Cert: files.Cert, Key: files.Key}.Load()
	if err != nil {
		t.Fatal(err)
	}
	served := func() string {
		c, err := got.Server.GetCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf.Subject.CommonName
	}
	if n := served(); n != "first" {
		t.Fatalf("serving %q; want first", n)
	}
	second := ca.Issue(t, "second")
	os.WriteFile(files.Cert, second.CertPEM, 0o644)
	os.WriteFile(files.Key, second.KeyPEM, 0o600)
	if err := got.Reload(); err != nil {
		t.Fatal(err)
	}
	if n := served(); n != "second" {
		t.Fatalf("serving %q after reload; want second", n)
	}
	// A half-written rotation (new certificate, old key) is refused and
	// the pair in use stays.
	os.WriteFile(files.Cert, ca.Issue(t, "third").CertPEM, 0o644)
	if err := got.Reload(); err == nil {
		t.Fatal("Reload accepted a certificate with another's key")
	}
	if n := served(); n != "second" {
		t.Fatalf("serving %q after a failed reload; want second", n)
	}
}

func TestRequireIdentity(t *testing.T) {
	none := &Env{}
	mtls := Flags{TLS: TLSFlags{ClientCA: "ca.pem", BackendCert: "c.pem"}}
	for _, c := range []struct {
		name             string
		f                Flags
		verifies, proves bool
		wantErr          bool
	}{
		{"no secret, no mTLS, a server", Flags{}, true, false, true},
		{"no secret, no mTLS, a client", Flags{}, false, true, true},
		{"mTLS both ways", mtls, true, true, false},
		{"client CAs only, a server", Flags{TLS: TLSFlags{ClientCA: "ca.pem"}}, true, false, false},
		{"client CAs only, a server that calls", Flags{TLS: TLSFlags{ClientCA: "ca.pem"}}, true, true, true},
		{"a client certificate, the gateway", Flags{TLS: TLSFlags{BackendCert: "c.pem"}}, false, true, false},
	} {
		if err := none.RequireIdentity(c.f, c.verifies, c.proves); (err != nil) != c.wantErr {
			t.Errorf("%s: got %v; want error %v", c.name, err, c.wantErr)
		}
	}
}
