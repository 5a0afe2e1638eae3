package stack_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/calmline/calmline/cmd/stack"
	"github.com/calmline/calmline/lib/identity"
	"github.com/calmline/calmline/lib/sqldb"
	"github.com/calmline/calmline/lib/tenant"
	"github.com/calmline/calmline/lib/tlstest"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	escalationv1 "github.com/calmline/calmline/proto/calmline/escalation/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
	realtimev1 "github.com/calmline/calmline/proto/calmline/realtime/v1"
)

// forgeStack is a whole stack on loopback (real gRPC, real SQLite files)
// whose tenant acme has an on-call webhook to a loopback receiver that
// counts what reaches it.
type forgeStack struct {
	st      *stack.Stack
	dir     string
	key     string // acme's full API key
	secret  *identity.Keyring
	hooks   atomic.Int64
	hookArr chan struct{}
}

func startForgeStack(t *testing.T, serverTLS, backendTLS *tls.Config) *forgeStack {
	t.Helper()
	f := &forgeStack{dir: t.TempDir(), key: tenant.NewKey(), hookArr: make(chan struct{}, 100)}
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.hooks.Add(1)
		f.hookArr <- struct{}{}
	}))
	t.Cleanup(recv.Close)
	sec := make([]byte, 32)
	rand.Read(sec)
	secPath := filepath.Join(f.dir, "oncall.secret")
	if err := os.WriteFile(secPath, []byte("whsec_"+base64.StdEncoding.EncodeToString(sec)), 0o600); err != nil {
		t.Fatal(err)
	}
	tenantsPath := filepath.Join(f.dir, "tenants.yaml")
	if err := os.WriteFile(tenantsPath, []byte(fmt.Sprintf(`tenants:
  - id: acme
    api_keys: [{id: acme-1, sha256: %s}]
    escalation:
      endpoints: [{name: on-call, url: '%s', signing_secrets: [{file: %s}], timeout: 5s}]
      ladder: [{name: notify, action: notify, endpoint: on-call}]
`, tenant.HashKey(f.key), recv.URL, secPath)), 0o644); err != nil {
		t.Fatal(err)
	}
	reg, err := tenant.Load(tenantsPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.st, err = stack.New(ctx, stack.Options{DataDir: f.dir, Tenants: reg, TLS: serverTLS, BackendTLS: backendTLS})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- f.st.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-served:
		case <-time.After(60 * time.Second):
			t.Error("the stack did not stop within 60 s")
		}
	})
	// The secret the stack created in its data directory on first start.
	if f.secret, err = identity.LoadFile(filepath.Join(f.dir, identity.SecretFileName)); err != nil {
		t.Fatal(err)
	}
	return f
}

// forger is one way of calling without the right identity.
type forger struct {
	name string
	// opts dials; md is added to every call.
	opts []grpc.DialOption
	md   []string
	want codes.Code
}

// forgers returns the attempts against a method only right may call.
func (f *forgeStack) forgers(t *testing.T, right string, creds credentials.TransportCredentials) []forger {
	wrong := identity.Gateway
	if right == identity.Gateway {
		wrong = identity.Realtime
	}
	wrongTok, err := f.secret.Token(wrong)
	if err != nil {
		t.Fatal(err)
	}
	other := make([]byte, 32)
	rand.Read(other)
	return []forger{
		{"no identity", nil, nil, codes.Unauthenticated},
		{"a tenant key", nil, []string{"authorization", "Bearer " + f.key}, codes.Unauthenticated},
		{"the wrong service's identity (" + wrong + ")", nil, []string{identity.MDService, wrong, identity.MDToken, wrongTok}, codes.PermissionDenied},
		{"another deployment's token for " + right, nil, []string{identity.MDService, right, identity.MDToken, identity.Token(other, right)}, codes.Unauthenticated},
	}
}

func dial(t *testing.T, addr string, creds credentials.TransportCredentials, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	cc, err := grpc.NewClient(addr, append(opts, grpc.WithTransportCredentials(creds))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func alert(callID string) *escalationv1.PostAlertsRequest {
	return &escalationv1.PostAlertsRequest{Alerts: []*escalationv1.Alert{{TenantId: "acme", CallId: callID, AgentId: "agent-1", Event: &callv1.AlertEvent{
		AlertId: "acme/" + callID + "/cp/1", RuleId: "caller-pressure", Episode: 1, State: callv1.AlertState_ALERT_STATE_FIRING,
		Score: callv1.ScoreKind_SCORE_KIND_CALLER_PRESSURE, Value: 90, Threshold: 70, At: timestamppb.Now()}}}}
}

func forgedCall() *callv1.Call {
	return &callv1.Call{TenantId: "acme", CallId: "forged", AgentId: "agent-1", StartedAt: timestamppb.Now(),
		Format: &callv1.MediaFormat{Codec: callv1.Codec_CODEC_PCMU, SampleRateHz: 8000,
			Channels: []callv1.ChannelRole{callv1.ChannelRole_CHANNEL_ROLE_CALLER, callv1.ChannelRole_CHANNEL_ROLE_AGENT}},
		Protocol: "native"}
}

// attempt makes each internal call once with the forger's credentials and
// returns each method's status code.
func (f *forgeStack) attempt(t *testing.T, method string, fo forger, creds credentials.TransportCredentials) codes.Code {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if len(fo.md) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, fo.md...)
	}
	switch method {
	case "PostAlerts":
		_, err := escalationv1.NewAlertServiceClient(dial(t, f.st.Addr(stack.Escalation).String(), creds, fo.opts...)).PostAlerts(ctx, alert("forged"))
		return status.Code(err)
	case "RecordCall":
		_, err := escalationv1.NewCareServiceClient(dial(t, f.st.Addr(stack.Escalation).String(), creds, fo.opts...)).RecordCall(ctx, &escalationv1.RecordCallRequest{
			TenantId: "acme", CallId: "forged", AgentId: "agent-1", StartedAt: timestamppb.Now(), EndedAt: timestamppb.Now(), CallerPressurePeak: 99, ExposureSeconds: 600, Escalated: true})
		return status.Code(err)
	case "Record":
		s, err := fullcallv1.NewIngestServiceClient(dial(t, f.st.Addr(stack.Fullcall).String(), creds, fo.opts...)).Record(ctx)
		if err != nil {
			return status.Code(err)
		}
		s.Send(&fullcallv1.RecordRequest{Msg: &fullcallv1.RecordRequest_Open{Open: &fullcallv1.OpenCall{Call: forgedCall()}}})
		s.Send(&fullcallv1.RecordRequest{Msg: &fullcallv1.RecordRequest_Close{Close: &fullcallv1.CloseCall{}}})
		s.CloseSend()
		for {
			if _, err := s.Recv(); err != nil {
				return status.Code(err)
			}
		}
	case "Analyze":
		s, err := realtimev1.NewRealtimeServiceClient(dial(t, f.st.Addr(stack.Realtime).String(), creds, fo.opts...)).Analyze(ctx)
		if err != nil {
			return status.Code(err)
		}
		s.Send(&realtimev1.AnalyzeRequest{Msg: &realtimev1.AnalyzeRequest_Open{Open: &realtimev1.OpenCall{Call: forgedCall()}}})
		s.CloseSend()
		for {
			if _, err := s.Recv(); err != nil {
				return status.Code(err)
			}
		}
	}
	t.Fatalf("unknown method %s", method)
	return 0
}

var internal = []struct{ method, right string }{
	{"PostAlerts", identity.Realtime},
	{"RecordCall", identity.Fullcall},
	{"Record", identity.Gateway},
	{"Analyze", identity.Gateway},
}

// count returns the rows of table in a service's SQLite file.
func (f *forgeStack) count(t *testing.T, file, table string) int {
	t.Helper()
	db, err := sqldb.OpenSQLite(context.Background(), filepath.Join(f.dir, file))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM " + table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// leftBehind fails when anything a forged call could have made exists.
func (f *forgeStack) checkNothingLeft(t *testing.T) {
	t.Helper()
	for _, c := range []struct{ file, table string }{
		{"escalation.db", "escalations"}, {"escalation.db", "escalation_alerts"}, {"escalation.db", "deliveries"},
		{"escalation.db", "care_calls"}, {"escalation.db", "care_recommendations"},
		{"fullcall.db", "reports"}, {"fullcall.db", "calls"},
	} {
		if n := f.count(t, c.file, c.table); n != 0 {
			t.Errorf("%s has %d rows in %s after forged calls", c.file, n, c.table)
		}
	}
	if n := f.hooks.Load(); n != 0 {
		t.Errorf("the on-call receiver got %d requests from forged calls", n)
	}
}

// TestForgedInternalCallsAreRefused is the issue's hostile test: forged
// PostAlerts, RecordCall, Record and Analyze, without identity, with a
// tenant key, with the wrong service's identity and with another
// deployment's token, are refused and leave nothing behind; then the right
// identity is accepted, so the checks above can see a forgery.
func TestForgedInternalCallsAreRefused(t *testing.T) {
	f := startForgeStack(t, nil, nil)
	for _, m := range internal {
		for _, fo := range f.forgers(t, m.right, nil) {
			if got := f.attempt(t, m.method, fo, nil); got != fo.want {
				t.Errorf("%s with %s: got %v; want %v", m.method, fo.name, got, fo.want)
			}
		}
	}
	f.checkNothingLeft(t)

	// The control: realtime's identity opens an escalation and the on-call
	// team hears of it.
	ok := forger{opts: []grpc.DialOption{grpc.WithPerRPCCredentials(identity.Credentials(f.secret, identity.Realtime))}}
	if got := f.attempt(t, "PostAlerts", ok, nil); got != codes.OK {
		t.Fatalf("PostAlerts as realtime: %v", got)
	}
	if n := f.count(t, "escalation.db", "escalations"); n != 1 {
		t.Errorf("escalations after a genuine alert: %d; want 1", n)
	}
	select {
	case <-f.hookArr:
	case <-time.After(30 * time.Second):
		t.Error("the genuine alert's webhook did not arrive within 30 s")
	}
}

// TestForgedInternalCallsOverMTLS: the same with client certificates as
// the identity — a certificate naming the wrong service is refused, one
// naming no service without a token is refused, and the right one is
// accepted.
func TestForgedInternalCallsOverMTLS(t *testing.T) {
	ca := tlstest.NewCA(t, "calmline test CA")
	srv := ca.Issue(t, "calmline-server")
	// The stack's own services present a certificate naming no service
	// and prove themselves with the data directory's secret.
	backend := tlstest.ClientConfig(ca, ca.Issue(t, "calmline-backend"))
	f := startForgeStack(t, tlstest.ServerConfig(srv, ca), backend)
	certAs := func(name string) credentials.TransportCredentials {
		c := tlstest.ClientConfig(ca, ca.Issue(t, "x", "spiffe://calmline/"+name))
		c.ServerName = "localhost"
		return credentials.NewTLS(c)
	}
	anon := tlstest.ClientConfig(ca, ca.Issue(t, "calmline-console"))
	anon.ServerName = "localhost"
	for _, m := range internal {
		wrong := identity.Gateway
		if m.right == identity.Gateway {
			wrong = identity.Escalation
		}
		for _, c := range []struct {
			name  string
			creds credentials.TransportCredentials
			md    []string
			want  codes.Code
		}{
			{"a certificate naming " + wrong, certAs(wrong), nil, codes.PermissionDenied},
			{"a certificate naming no service", credentials.NewTLS(anon), nil, codes.Unauthenticated},
			{"a certificate naming no service, with a tenant key", credentials.NewTLS(anon), []string{"authorization", "Bearer " + f.key}, codes.Unauthenticated},
		} {
			if got := f.attempt(t, m.method, forger{md: c.md}, c.creds); got != c.want {
				t.Errorf("%s with %s: got %v; want %v", m.method, c.name, got, c.want)
			}
		}
	}
	f.checkNothingLeft(t)
	if got := f.attempt(t, "PostAlerts", forger{}, certAs(identity.Realtime)); got != codes.OK {
		t.Errorf("PostAlerts with realtime's certificate: %v", got)
	}
	if n := f.count(t, "escalation.db", "escalations"); n != 1 {
		t.Errorf("escalations after a genuine alert: %d; want 1", n)
	}
}
