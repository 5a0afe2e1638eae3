package service

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/calmline/calmline/lib/tlstest"
)

// syncBuffer collects log output from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// tlsHost is a TLS host whose HTTP side reports how a request came in and
// whose gRPC side records the client certificate's name.
type tlsHost struct {
	h    *Host
	addr string
	logs *syncBuffer

	mu       sync.Mutex
	grpcPeer string // the last gRPC client's certificate name, or "none"
}

func startTLSHost(t *testing.T, conf *tls.Config) *tlsHost {
	t.Helper()
	th := &tlsHost{logs: &syncBuffer{}}
	o := Options{
		Name:   "test",
		TLS:    conf,
		Logger: slog.New(slog.NewTextHandler(th.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		UnaryInterceptors: []grpc.UnaryServerInterceptor{func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			name := "none"
			if p, ok := peer.FromContext(ctx); ok {
				if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
					name = ti.State.PeerCertificates[0].Subject.CommonName
				}
			}
			th.mu.Lock()
			th.grpcPeer = name
			th.mu.Unlock()
			return handler(ctx, req)
		}},
	}
	h, served := startHost(t, o)
	th.h, th.addr = h, h.Addr().String()
	h.Mux.HandleFunc("GET /how", func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			fmt.Fprintf(w, "%s cleartext", r.Proto)
			return
		}
		fmt.Fprintf(w, "%s tls alpn=%q", r.Proto, r.TLS.NegotiatedProtocol)
	})
	// A WebSocket upgrade takes the connection over, as here.
	h.Mux.HandleFunc("GET /upgrade", func(w http.ResponseWriter, r *http.Request) {
		c, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer c.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\nhijacked over tls\n")
		rw.Flush()
	})
	t.Cleanup(func() {
		h.Shutdown(context.Background())
		<-served
	})
	return th
}

func (th *tlsHost) lastGRPCPeer() string {
	th.mu.Lock()
	defer th.mu.Unlock()
	return th.grpcPeer
}

// check makes one gRPC health check with creds.
func check(t *testing.T, addr string, creds credentials.TransportCredentials) error {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err == nil && resp.Status != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("status %v", resp.Status)
	}
	return err
}

// httpsGet fetches path over TLS offering the given ALPN protocols.
func httpsGet(t *testing.T, addr, path string, conf *tls.Config, alpn ...string) (string, error) {
	t.Helper()
	conf = conf.Clone()
	conf.NextProtos = alpn
	tr := &http.Transport{TLSClientConfig: conf}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://" + addr + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return fmt.Sprintf("%d %s", resp.StatusCode, b), err
}

func TestTLSListenerSplitsByALPN(t *testing.T) {
	ca := tlstest.NewCA(t, "test CA")
	server := ca.Issue(t, "server")
	th := startTLSHost(t, tlstest.ServerConfig(server, nil))
	client := tlstest.ClientConfig(ca, nil)

	if err := check(t, th.addr, credentials.NewTLS(client)); err != nil {
		t.Fatalf("gRPC over TLS: %v", err)
	}
	if got := th.lastGRPCPeer(); got != "none" {
		t.Errorf("gRPC peer certificate = %q; want none", got)
	}
	for _, tc := range []struct {
		alpn []string
		want string
	}{
		{[]string{"http/1.1"}, `200 HTTP/1.1 tls alpn="http/1.1"`},
		// curl and browsers offer both: they get HTTP/1.1, not gRPC.
		{[]string{"h2", "http/1.1"}, `200 HTTP/1.1 tls alpn="http/1.1"`},
		{nil, `200 HTTP/1.1 tls alpn=""`},
	} {
		got, err := httpsGet(t, th.addr, "/how", client, tc.alpn...)
		if err != nil || got != tc.want {
			t.Errorf("GET /how offering ALPN %q = %q, %v; want %q", tc.alpn, got, err, tc.want)
		}
	}
	if got, err := httpsGet(t, th.addr, "/healthz", client, "http/1.1"); err != nil || got != "200 ok\n" {
		t.Errorf("GET /healthz over TLS = %q, %v", got, err)
	}

	// A hijacked connection (what a WebSocket upgrade does) carries on
	// over TLS.
	conf := client.Clone()
	conf.NextProtos = []string{"http/1.1"}
	conn, err := tls.Dial("tcp", th.addr, conf)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n")
	b, _ := io.ReadAll(conn)
	if !strings.HasPrefix(string(b), "HTTP/1.1 101") || !strings.HasSuffix(string(b), "hijacked over tls\n") {
		t.Errorf("upgrade over TLS answered %q", b)
	}
}

func TestTLSListenerRefusesCleartext(t *testing.T) {
	ca := tlstest.NewCA(t, "test CA")
	th := startTLSHost(t, tlstest.ServerConfig(ca.Issue(t, "server"), nil))

	err := check(t, th.addr, insecure.NewCredentials())
	if status.Code(err) != codes.Unavailable {
		t.Errorf("cleartext gRPC to a TLS port: %v; want Unavailable", err)
	}
	c, err := net.Dial("tcp", th.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("cleartext HTTP to a TLS port: %v; want a 400", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(b), "TLS port") {
		t.Errorf("cleartext HTTP to a TLS port = %d %q; want 400 saying so", resp.StatusCode, b)
	}
}

func TestMutualTLS(t *testing.T) {
	ca, otherCA := tlstest.NewCA(t, "calmline CA"), tlstest.NewCA(t, "another CA")
	serverLeaf := ca.Issue(t, "realtime")
	gatewayLeaf := ca.Issue(t, "gateway")
	strangerLeaf := otherCA.Issue(t, "stranger")
	th := startTLSHost(t, tlstest.ServerConfig(serverLeaf, ca))

	for _, tc := range []struct {
		name   string
		client *tls.Config
		ok     bool
	}{
		{"certificate from the CA", tlstest.ClientConfig(ca, gatewayLeaf), true},
		{"no certificate", tlstest.ClientConfig(ca, nil), false},
		{"certificate from another CA", tlstest.ClientConfig(ca, strangerLeaf), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := check(t, th.addr, credentials.NewTLS(tc.client))
			if tc.ok {
				if err != nil {
					t.Fatalf("gRPC: %v; want success", err)
				}
				if got := th.lastGRPCPeer(); got != "gateway" {
					t.Errorf("server saw client certificate %q; want gateway", got)
				}
				return
			}
			if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "certificate") {
				t.Errorf("gRPC: %v; want Unavailable naming the certificate", err)
			}
		})
	}
	// The server's own certificate is verified by the client as ever.
	if err := check(t, th.addr, credentials.NewTLS(tlstest.ClientConfig(otherCA, gatewayLeaf))); status.Code(err) != codes.Unavailable {
		t.Errorf("gRPC trusting another CA: %v; want Unavailable", err)
	}

	// HTTP (PBX WebSockets, REST with API keys) needs no client
	// certificate, but one that is presented must verify.
	if got, err := httpsGet(t, th.addr, "/how", tlstest.ClientConfig(ca, nil), "http/1.1"); err != nil || !strings.HasPrefix(got, "200") {
		t.Errorf("HTTPS without a client certificate = %q, %v; want 200", got, err)
	}
	if _, err := httpsGet(t, th.addr, "/how", tlstest.ClientConfig(ca, strangerLeaf), "http/1.1"); err == nil {
		t.Error("HTTPS with a certificate from another CA succeeded")
	}

	// Refusals are logged, and no private key is.
	logs := th.logs.String()
	if !strings.Contains(logs, "tls handshake failed") {
		t.Errorf("refused handshakes were not logged:\n%s", logs)
	}
	for _, leaf := range []*tlstest.Leaf{serverLeaf, gatewayLeaf, strangerLeaf} {
		if leaked(logs, leaf.KeyPEM) {
			t.Fatal("a private key appears in the logs")
		}
	}
}

// leaked reports whether any line of a PEM key's body appears in logs.
func leaked(logs string, keyPEM []byte) bool {
	if strings.Contains(logs, "PRIVATE KEY") {
		return true
	}
	for _, line := range strings.Split(string(keyPEM), "\n") {
		if len(line) > 16 && !strings.HasPrefix(line, "-----") && strings.Contains(logs, line) {
			return true
		}
	}
	return false
}

// BenchmarkTLSHandshake is what TLS at the gateway costs once per call:
// one full ECDSA P-256 handshake (TLS 1.3), client and server sides both
// counted, over an in-memory pipe.
func BenchmarkTLSHandshake(b *testing.B) {
	ca := tlstest.NewCA(b, "bench CA")
	server := serverTLS(tlstest.ServerConfig(ca.Issue(b, "gateway"), nil))
	client := tlstest.ClientConfig(ca, nil)
	client.ServerName = "localhost"
	client.NextProtos = []string{"http/1.1"}
	// CPU time (user + system, all threads), which a shared machine's
	// load does not inflate as it does wall-clock time.
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	start := cpu()
	n := 0
	for b.Loop() {
		n++
		c1, c2 := net.Pipe()
		done := make(chan error, 1)
		go func() { done <- tls.Server(c1, server).Handshake() }()
		if err := tls.Client(c2, client).Handshake(); err != nil {
			b.Fatal(err)
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		c1.Close()
		c2.Close()
	}
	b.ReportMetric(float64(cpu()-start)/float64(n), "cpu-ns/op")
}
