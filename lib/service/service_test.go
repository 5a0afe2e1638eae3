package service

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func startHost(t *testing.T, o Options) (*Host, chan error) {
	t.Helper()
	h := NewHost(o)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- h.Serve(context.Background(), lis) }()
	// Serve sets the address before it serves; wait for readiness through
	// the public interface.
	deadline := time.Now().Add(5 * time.Second)
	for h.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatal("host never became ready")
		}
		select {
		case err := <-served:
			t.Fatalf("Serve returned early: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	return h, served
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestOnePortCarriesGRPCAndHTTP(t *testing.T) {
	h, served := startHost(t, Options{Name: "test", Metrics: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "metric 1\n")
	})})
	addr := h.Addr().String()

	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, svc := range []string{"", "test"} {
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health(%q) = %v, %v; want SERVING", svc, resp, err)
		}
	}
	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "ready", "/metrics": "metric 1"} {
		if code, body := get(t, "http://"+addr+path); code != 200 || !strings.Contains(body, want) {
			t.Errorf("GET %s = %d %q; want 200 with %q", path, code, body, want)
		}
	}

	// A failing check makes the host unready on both protocols' views.
	failing := errors.New("store unreachable")
	var fail = true
	h.AddReadyCheck(func() error {
		if fail {
			return failing
		}
		return nil
	})
	if code, body := get(t, "http://"+addr+"/readyz"); code != 503 || !strings.Contains(body, "store unreachable") {
		t.Errorf("GET /readyz with a failing check = %d %q; want 503 naming it", code, body)
	}
	fail = false

	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watch, err := hc.Watch(watchCtx, &healthpb.HealthCheckRequest{Service: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := watch.Recv(); err != nil || m.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first watch status = %v, %v", m, err)
	}
	shutdownDone := make(chan error, 1)
	go func() { shutdownDone <- h.Shutdown(context.Background()) }()
	// Health turns NOT_SERVING before the stream is drained, so balancers
	// stop sending new work first.
	if m, err := watch.Recv(); err != nil || m.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("watch status during shutdown = %v, %v; want NOT_SERVING", m, err)
	}
	stopWatch() // graceful stop waits for open streams to end
	if err := <-shutdownDone; err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve = %v; want nil after Shutdown", err)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("listener still accepts after Shutdown")
	}
}

func TestShutdownCutsSilentConnectionsAndStreams(t *testing.T) {
	h, served := startHost(t, Options{Name: "test"})
	// A connection that never says anything is waiting for classification.
	silent, err := net.Dial("tcp", h.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	// A long-lived stream that never ends by itself.
	cc, err := grpc.NewClient(h.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	watch, err := healthpb.NewHealthClient(cc).Watch(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := h.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a stream that never ends = %v; want the deadline error", err)
	}
	// The stream may still deliver the NOT_SERVING update; then it ends.
	var recvErr error
	for range 3 {
		if _, recvErr = watch.Recv(); recvErr != nil {
			break
		}
	}
	if recvErr == nil {
		t.Error("stream still open after a forced stop")
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve = %v", err)
	}
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("silent connection read = %v; want it closed by the server", err)
	}
}

func TestServeStopsWhenContextEnds(t *testing.T) {
	h := NewHost(Options{Name: "test", ShutdownGrace: time.Second})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- h.Serve(ctx, lis) }()
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	if err := h.Serve(context.Background(), lis); err == nil {
		t.Error("second Serve succeeded")
	}
}

// TestOldConnectionsAreRetired gives connections a short maximum age: the
// client is told to open a new connection for its next calls (so a client
// that found the server through DNS re-resolves), while a stream under
// way on the old one goes on.
func TestOldConnectionsAreRetired(t *testing.T) {
	h, served := startHost(t, Options{Name: "test", MaxConnectionAge: 200 * time.Millisecond})
	var dials atomic.Int32
	cc, err := grpc.NewClient(h.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			dials.Add(1)
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watch, err := hc.Watch(watchCtx, &healthpb.HealthCheckRequest{Service: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := watch.Recv(); err != nil || m.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first watch status = %v, %v", m, err)
	}
	for dials.Load() < 2 {
		if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("check while the connection is retired: %v", err)
		}
		select {
		case <-ctx.Done():
			t.Fatal("the client never opened a new connection")
		case <-time.After(20 * time.Millisecond):
		}
	}
	// The stream opened on the first connection still delivers.
	shutdownDone := make(chan error, 1)
	go func() { shutdownDone <- h.Shutdown(context.Background()) }()
	if m, err := watch.Recv(); err != nil || m.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("watch on the retired connection = %v, %v; want NOT_SERVING", m, err)
	}
	stopWatch()
	if err := <-shutdownDone; err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve = %v", err)
	}
}
