package rpc

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// countingListener counts accepted TCP connections.
type countingListener struct {
	net.Listener
	n atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

type backend struct {
	lis    *countingListener
	srv    *grpc.Server
	health *health.Server
	wg     sync.WaitGroup
}

func startBackend(t *testing.T) *backend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{lis: &countingListener{Listener: l}, srv: grpc.NewServer(), health: health.NewServer()}
	healthpb.RegisterHealthServer(b.srv, b.health)
	b.wg.Add(1)
	go func() { defer b.wg.Done(); b.srv.Serve(b.lis) }()
	t.Cleanup(func() { b.srv.Stop(); b.wg.Wait() })
	return b
}

func TestPoolConnectionsDoNotGrowWithStreams(t *testing.T) {
	b := startBackend(t)
	p, err := NewPool(b.lis.Addr().String(), 2, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// 200 concurrent long-lived streams, as 200 calls would open; they
	// stay open until cancel.
	for range 200 {
		s, err := healthpb.NewHealthClient(p.Conn()).Watch(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	if got := b.lis.n.Load(); got != 2 {
		t.Errorf("200 streams over a pool of 2 opened %d TCP connections; want 2", got)
	}
	cancel()
}

func TestListTargetBalancesAndSkipsUnhealthy(t *testing.T) {
	a, b := startBackend(t), startBackend(t)
	cc, err := Dial(a.lis.Addr().String()+","+b.lis.Addr().String(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	seen := func(n int) map[string]int {
		got := map[string]int{}
		for range n {
			var p peer.Peer
			if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p)); err != nil {
				t.Fatal(err)
			}
			got[p.Addr.String()]++
		}
		return got
	}
	if got := seen(10); len(got) != 2 {
		t.Errorf("10 calls reached %v; want both backends", got)
	}
	// A draining backend says NOT_SERVING and gets no new calls.
	a.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := seen(10)
		if got[a.lis.Addr().String()] == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("calls still reach the NOT_SERVING backend: %v", got)
		}
	}
}

func TestDialRejectsBadList(t *testing.T) {
	if _, err := Dial("127.0.0.1:1,nonsense", Options{}); err == nil {
		t.Error("Dial accepted a list with a bad address")
	}
}
