package identity_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/calmline/calmline/lib/identity"
	"github.com/calmline/calmline/lib/rpc"
	"github.com/calmline/calmline/lib/service"
	"github.com/calmline/calmline/lib/tlstest"
)

// The health service stands in for an internal method: the policy under
// test lets only realtime call Check; Watch is left open.
var testPolicy = identity.Policy{"/grpc.health.v1.Health/Check": {identity.Realtime}}

type server struct {
	addr   string
	logs   *bytes.Buffer
	reader *metric.ManualReader
}

func startServer(t *testing.T, k *identity.Keyring, tlsConf *tls.Config) *server {
	t.Helper()
	logs := &bytes.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	reader := metric.NewManualReader()
	v, err := identity.NewVerifier(identity.VerifierOptions{Keyring: k, Policy: testPolicy, Logger: log,
		MeterProvider: metric.NewMeterProvider(metric.WithReader(reader))})
	if err != nil {
		t.Fatal(err)
	}
	h := service.NewHost(service.Options{Name: "test", TLS: tlsConf,
		UnaryInterceptors:  []grpc.UnaryServerInterceptor{v.UnaryServerInterceptor()},
		StreamInterceptors: []grpc.StreamServerInterceptor{v.StreamServerInterceptor()}})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.Serve(ctx, lis) }()
	t.Cleanup(func() { cancel(); <-done })
	return &server{addr: lis.Addr().String(), logs: logs, reader: reader}
}

func (s *server) call(t *testing.T, o rpc.Options, md ...string) error {
	t.Helper()
	cc, err := rpc.Dial(s.addr, o)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if len(md) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, md...)
	}
	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	return err
}

func (s *server) refusals(t *testing.T) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := s.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "calmline.rpc.identity.refused" {
				continue
			}
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				r, _ := dp.Attributes.Value("reason")
				out[r.AsString()] += dp.Value
			}
		}
	}
	return out
}

func code(err error) codes.Code { return status.Code(err) }

func newSecret(t *testing.T) []byte {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTokenIdentity(t *testing.T) {
	secret := newSecret(t)
	k, err := identity.NewKeyring(secret)
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, k, nil)
	realtimeTok := identity.Token(secret, identity.Realtime)
	fullcallTok := identity.Token(secret, identity.Fullcall)
	otherTok := identity.Token(newSecret(t), identity.Realtime)
	for _, c := range []struct {
		name string
		o    rpc.Options
		md   []string
		want codes.Code
	}{
		{"no identity", rpc.Options{}, nil, codes.Unauthenticated},
		{"a tenant key", rpc.Options{}, []string{"authorization", "Bearer clk_tenantkey"}, codes.Unauthenticated},
		{"the wrong service", rpc.Options{Identity: identity.Credentials(k, identity.Fullcall)}, nil, codes.PermissionDenied},
		{"fullcall's token claiming realtime", rpc.Options{}, []string{identity.MDService, identity.Realtime, identity.MDToken, fullcallTok}, codes.Unauthenticated},
		{"another deployment's secret", rpc.Options{}, []string{identity.MDService, identity.Realtime, identity.MDToken, otherTok}, codes.Unauthenticated},
		{"a malformed token", rpc.Options{}, []string{identity.MDService, identity.Realtime, identity.MDToken, "v1.xyz"}, codes.Unauthenticated},
		{"an unknown service", rpc.Options{}, []string{identity.MDService, "admin", identity.MDToken, realtimeTok}, codes.Unauthenticated},
		{"a token without a name", rpc.Options{}, []string{identity.MDToken, realtimeTok}, codes.Unauthenticated},
		{"two claims", rpc.Options{Identity: identity.Credentials(k, identity.Realtime)}, []string{identity.MDService, identity.Fullcall, identity.MDToken, fullcallTok}, codes.Unauthenticated},
		{"realtime", rpc.Options{Identity: identity.Credentials(k, identity.Realtime)}, nil, codes.OK},
	} {
		if got := code(s.call(t, c.o, c.md...)); got != c.want {
			t.Errorf("%s: got %v; want %v", c.name, got, c.want)
		}
	}
	got := s.refusals(t)
	if got[identity.ReasonMissing] != 2 || got[identity.ReasonWrongService] != 1 || got[identity.ReasonInvalid] != 6 {
		t.Errorf("refusals counted: %v; want missing 2, wrong_service 1, invalid 6", got)
	}
	logs := s.logs.String()
	for _, secretLike := range []string{realtimeTok, fullcallTok, otherTok, string(secret), "clk_tenantkey", identity.Token(secret, identity.Fullcall)[3:]} {
		if strings.Contains(logs, secretLike) {
			t.Errorf("a token or key reached the log:\n%s", logs)
		}
	}
	if !strings.Contains(logs, "reason=wrong_service") || !strings.Contains(logs, "method=/grpc.health.v1.Health/Check") {
		t.Errorf("refusals not logged with method and reason:\n%s", logs)
	}
}

func TestRotationWithoutDowntime(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, identity.SecretFileName)
	oldS, newS := identity.NewSecret(), identity.NewSecret()
	write := func(lines ...string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(oldS)
	serverK, err := identity.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, serverK, nil)
	oldClient, _ := identity.NewKeyring(mustDecode(t, oldS))
	newClient, _ := identity.NewKeyring(mustDecode(t, newS))
	as := func(k *identity.Keyring) rpc.Options {
		return rpc.Options{Identity: identity.Credentials(k, identity.Realtime)}
	}
	if err := s.call(t, as(oldClient)); err != nil {
		t.Fatalf("old secret before rotation: %v", err)
	}
	// Step 1: servers learn the new secret, clients still send the old one.
	write(oldS, newS)
	if err := serverK.Reload(); err != nil {
		t.Fatal(err)
	}
	// Step 2: the new secret becomes current; both are accepted.
	write(newS, oldS)
	if err := serverK.Reload(); err != nil {
		t.Fatal(err)
	}
	for name, k := range map[string]*identity.Keyring{"old": oldClient, "new": newClient} {
		if err := s.call(t, as(k)); err != nil {
			t.Errorf("%s secret during rotation: %v", name, err)
		}
	}
	// Step 3: the old secret goes.
	write(newS)
	if err := serverK.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := s.call(t, as(oldClient)); code(err) != codes.Unauthenticated {
		t.Errorf("old secret after rotation: got %v; want Unauthenticated", err)
	}
	if err := s.call(t, as(newClient)); err != nil {
		t.Errorf("new secret after rotation: %v", err)
	}
	// A bad edit keeps the secrets the keyring had.
	write("not base64 !!")
	if err := serverK.Reload(); err == nil {
		t.Error("a bad secret file reloaded without error")
	}
	if err := s.call(t, as(newClient)); err != nil {
		t.Errorf("after a bad edit: %v", err)
	}
}

func mustDecode(t *testing.T, s string) []byte {
	t.Helper()
	b, err := identity.ParseSecrets(s)
	if err != nil {
		t.Fatal(err)
	}
	return b[0]
}

func TestMTLSIdentity(t *testing.T) {
	ca := tlstest.NewCA(t, "calmline-ca")
	other := tlstest.NewCA(t, "other-ca")
	srv := ca.Issue(t, "escalation")
	secret := newSecret(t)
	k, _ := identity.NewKeyring(secret)
	s := startServer(t, k, tlstest.ServerConfig(srv, ca))
	for _, c := range []struct {
		name string
		leaf *tlstest.Leaf
		md   []string
		want codes.Code
	}{
		{"realtime by URI SAN", ca.Issue(t, "whatever", "spiffe://calmline/realtime"), nil, codes.OK},
		{"realtime by CN", ca.Issue(t, "realtime"), nil, codes.OK},
		{"fullcall by URI SAN", ca.Issue(t, "realtime", "spiffe://calmline/fullcall"), nil, codes.PermissionDenied},
		{"gateway by CN", ca.Issue(t, "gateway"), nil, codes.PermissionDenied},
		{"a certificate naming no service", ca.Issue(t, "calmline-console"), nil, codes.Unauthenticated},
		{"another trust domain", ca.Issue(t, "x", "spiffe://evil/realtime"), nil, codes.Unauthenticated},
		{"another CA's realtime", other.Issue(t, "realtime"), nil, codes.Unavailable}, // the handshake fails
		// One process, several services, one certificate: the token proves each.
		{"gateway's certificate with realtime's token", ca.Issue(t, "gateway"), []string{identity.MDService, identity.Realtime, identity.MDToken, identity.Token(secret, identity.Realtime)}, codes.OK},
		{"gateway's certificate with fullcall's token", ca.Issue(t, "gateway"), []string{identity.MDService, identity.Fullcall, identity.MDToken, identity.Token(secret, identity.Fullcall)}, codes.PermissionDenied},
		{"gateway's certificate with a forged realtime token", ca.Issue(t, "gateway"), []string{identity.MDService, identity.Realtime, identity.MDToken, identity.Token(newSecret(t), identity.Realtime)}, codes.PermissionDenied},
	} {
		o := rpc.Options{TLS: tlstest.ClientConfig(ca, c.leaf)}
		o.TLS.ServerName = "localhost"
		cc, err := rpc.Dial(s.addr, o)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if c.md != nil {
			ctx = metadata.AppendToOutgoingContext(ctx, c.md...)
		}
		_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		cc.Close()
		if got := code(err); got != c.want {
			t.Errorf("%s: got %v; want %v", c.name, err, c.want)
		}
	}
}

func TestLoadOrCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", identity.SecretFileName)
	k1, err := identity.LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v; want 0600", st.Mode().Perm())
	}
	k2, err := identity.LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	t1, _ := k1.Token(identity.Gateway)
	t2, _ := k2.Token(identity.Gateway)
	if t1 != t2 {
		t.Error("a second start made a new secret")
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := identity.LoadFile(path); err == nil || !strings.Contains(err.Error(), "readable or writable by others") {
		t.Errorf("world-readable secret: got %v", err)
	}
}

func TestParseSecrets(t *testing.T) {
	good := identity.NewSecret()
	for _, c := range []struct {
		in      string
		n       int
		wantErr string
	}{
		{good, 1, ""},
		{"# comment\n" + good + "\n" + identity.NewSecret() + "\n", 2, ""},
		{good + "," + identity.NewSecret(), 2, ""},
		{"", 0, "no secret"},
		{"c2hvcnQ", 0, "at least 32"},
		{"!!!", 0, "not base64"},
		{good + "\n" + good + "\n" + good, 0, "at most two"},
	} {
		s, err := identity.ParseSecrets(c.in)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%q: got %v; want %q", c.in, err, c.wantErr)
			}
			continue
		}
		if err != nil || len(s) != c.n {
			t.Errorf("%q: got %d secrets, %v; want %d", c.in, len(s), err, c.n)
		}
	}
}
