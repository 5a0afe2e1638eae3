package rpc

import (
	"context"
	"net"
	"os"
	"strings"
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

func TestMain(m *testing.M) {
	if role := os.Getenv(helperEnv); role != "" {
		os.Exit(runHelper(role))
	}
	goleak.VerifyTestMain(m)
}

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
	b.srv.RegisterService(holdServiceDesc(nil), nil)
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
	// Both backends take calls once both connections are up (the second
	// may still be connecting for the first few).
	for got := seen(10); len(got) != 2; got = seen(10) {
		if ctx.Err() != nil {
			t.Fatalf("calls reach only %v; want both backends", got)
		}
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

func TestDrainingBackendKeepsItsStreamsAndGetsNoNewOnes(t *testing.T) {
	backends := []*backend{startBackend(t), startBackend(t), startBackend(t)}
	var addrs []string
	for _, b := range backends {
		addrs = append(addrs, b.lis.Addr().String())
	}
	p, err := NewPool(strings.Join(addrs, ","), 2, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	open := func(n int) (map[string]int, []*holdStream) {
		t.Helper()
		got := map[string]int{}
		var streams []*holdStream
		for range n {
			s, err := openHold(ctx, p.Conn())
			if err != nil {
				t.Fatal(err)
			}
			got[s.backend]++
			streams = append(streams, s)
		}
		return got, streams
	}
	// Wait until every backend's connections are up, so that the spread
	// below is the balancer's, not the dialling's.
	for {
		got, _ := open(30)
		if len(got) == 3 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("streams reach only %v", got)
		}
	}
	got, before := open(90)
	for _, a := range addrs {
		// Each of the 2 connections turns round-robin on its own, from
		// its own start: 30 each, give or take one per connection.
		if got[a] < 28 || got[a] > 32 {
			t.Errorf("90 streams over 3 backends: %v; want 30 ± 2 each", got)
			break
		}
	}

	// The first backend starts draining: health says NOT_SERVING.
	draining := addrs[0]
	backends[0].health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	for {
		got, _ := open(10)
		if got[draining] == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("new streams still reach the draining backend: %v", got)
		}
	}
	got, _ = open(100)
	if got[draining] != 0 || got[addrs[1]] < 48 || got[addrs[2]] < 48 {
		t.Errorf("100 new streams while %s drains: %v; want none there, 50 ± 2 on each other", draining, got)
	}
	// Its streams go on.
	kept := 0
	for _, s := range before {
		if s.backend != draining {
			continue
		}
		if err := s.echo("still here"); err != nil {
			t.Fatalf("a stream on the draining backend broke: %v", err)
		}
		kept++
	}
	if kept == 0 {
		t.Fatal("no stream was on the draining backend")
	}
}

// TestBalancingPolicies: a backend that comes back (here: from
// NOT_SERVING) while another carries every call gets half of the new
// streams under round-robin, and nearly all of them under least-loaded
// until the two are even.
func TestBalancingPolicies(t *testing.T) {
	for _, tc := range []struct {
		policy         string
		minNew, maxNew int // of 10 new streams, how many reach the returning backend
	}{
		{RoundRobin, 4, 6},
		// 10 random samples of 2 addresses miss the emptier one with
		// probability 1/1024 per stream: allow one miss.
		{LeastLoaded, 9, 10},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			a, b := startBackend(t), startBackend(t)
			b.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
			p, err := NewPool(a.lis.Addr().String()+","+b.lis.Addr().String(), 1, Options{Balancing: tc.policy})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			open := func() *holdStream {
				t.Helper()
				s, err := openHold(ctx, p.Conn())
				if err != nil {
					t.Fatal(err)
				}
				return s
			}
			for range 10 {
				if s := open(); s.backend != a.lis.Addr().String() {
					t.Fatalf("a stream reached the NOT_SERVING backend")
				}
			}
			b.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
			// Streams go to a until the balancer sees b serving; the
			// first on b starts the count.
			for open().backend != b.lis.Addr().String() {
			}
			onB := 1
			for range 9 {
				if open().backend == b.lis.Addr().String() {
					onB++
				}
			}
			if onB < tc.minNew || onB > tc.maxNew {
				t.Errorf("%s: %d of 10 new streams reached the returning backend; want %d to %d", tc.policy, onB, tc.minNew, tc.maxNew)
			}
		})
	}
}

func TestDialRejectsUnknownPolicy(t *testing.T) {
	if _, err := Dial("127.0.0.1:1", Options{Balancing: "random"}); err == nil || !strings.Contains(err.Error(), "random") {
		t.Errorf("Dial with an unknown policy: %v; want an error naming it", err)
	}
}
