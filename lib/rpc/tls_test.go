package rpc

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/calmline/calmline/lib/service"
	"github.com/calmline/calmline/lib/tlstest"
)

// startTLSBackend serves lib/service's host with the hold service over
// TLS.
func startTLSBackend(t *testing.T, conf *tls.Config) string {
	t.Helper()
	h := service.NewHost(service.Options{Name: "backend", TLS: conf})
	h.GRPC.RegisterService(holdServiceDesc(nil), nil)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- h.Serve(context.Background(), lis) }()
	t.Cleanup(func() {
		h.Shutdown(context.Background())
		<-served
	})
	return lis.Addr().String()
}

func TestPoolOverMutualTLS(t *testing.T) {
	ca, otherCA := tlstest.NewCA(t, "calmline CA"), tlstest.NewCA(t, "another CA")
	// Two backends; the list names one by IP and one by host name, each
	// verified against its own certificate.
	a := startTLSBackend(t, tlstest.ServerConfig(ca.Issue(t, "realtime-a", "127.0.0.1"), ca))
	b := startTLSBackend(t, tlstest.ServerConfig(ca.Issue(t, "realtime-b", "localhost"), ca))
	_, bPort, _ := net.SplitHostPort(b)
	target := a + ",localhost:" + bPort
	gateway := ca.Issue(t, "gateway")

	for _, tc := range []struct {
		name string
		conf *tls.Config
		ok   bool
	}{
		{"client certificate from the CA", tlstest.ClientConfig(ca, gateway), true},
		{"no client certificate", tlstest.ClientConfig(ca, nil), false},
		{"client certificate from another CA", tlstest.ClientConfig(ca, otherCA.Issue(t, "stranger")), false},
		{"server name override that no certificate has", func() *tls.Config {
			c := tlstest.ClientConfig(ca, gateway)
			c.ServerName = "fullcall.internal"
			return c
		}(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewPool(target, 2, Options{TLS: tc.conf})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if !tc.ok {
				_, err := openHold(ctx, p.Conn())
				if status.Code(err) != codes.Unavailable {
					t.Fatalf("stream = %v; want Unavailable", err)
				}
				return
			}
			// Health checks pass over mTLS, so both backends take
			// streams.
			seen := map[string]bool{}
			for len(seen) < 2 {
				s, err := openHold(ctx, p.Conn())
				if err != nil {
					t.Fatal(err)
				}
				seen[strings.Replace(s.backend, "[::1]", "127.0.0.1", 1)] = true
			}
		})
	}

	// A backend whose certificate names a service, not its address, is
	// reached with the override.
	named := startTLSBackend(t, tlstest.ServerConfig(ca.Issue(t, "fullcall", "fullcall.internal"), ca))
	conf := tlstest.ClientConfig(ca, gateway)
	conf.ServerName = "fullcall.internal"
	for _, target := range []string{named, named + "," + named} {
		p, err := NewPool(target, 1, Options{TLS: conf})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if _, err := openHold(ctx, p.Conn()); err != nil {
			t.Errorf("%s with server name fullcall.internal: %v", target, err)
		}
		cancel()
		p.Close()
	}
}
