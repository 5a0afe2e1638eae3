package realtime

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	escalationv1 "github.com/calmline/calmline/proto/calmline/escalation/v1"
)

// scriptedEscalation is a real gRPC AlertService whose answers a test
// scripts.
type scriptedEscalation struct {
	escalationv1.UnimplementedAlertServiceServer
	answer func(call int, r *escalationv1.PostAlertsRequest) error

	mu       sync.Mutex
	calls    int
	sizes    []int
	accepted []string
	got      chan struct{}
}

func (f *scriptedEscalation) PostAlerts(_ context.Context, r *escalationv1.PostAlertsRequest) (*escalationv1.PostAlertsResponse, error) {
	f.mu.Lock()
	f.calls++
	n := f.calls
	f.sizes = append(f.sizes, len(r.Alerts))
	f.mu.Unlock()
	if err := f.answer(n, r); err != nil {
		return nil, err
	}
	f.mu.Lock()
	for _, a := range r.Alerts {
		f.accepted = append(f.accepted, a.Event.AlertId)
	}
	f.mu.Unlock()
	f.got <- struct{}{}
	return &escalationv1.PostAlertsResponse{}, nil
}

func startPoster(t *testing.T, f *scriptedEscalation) (*poster, func()) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.got = make(chan struct{}, 1000)
	srv := grpc.NewServer()
	escalationv1.RegisterAlertServiceServer(srv, f)
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	m := noop.NewMeterProvider().Meter("")
	c, _ := m.Int64Counter("x")
	p := &poster{client: escalationv1.NewAlertServiceClient(cc), log: slog.New(slog.DiscardHandler),
		queue: make(chan *escalationv1.Alert, alertQueueSize), posted: c, dropped: c, retries: c, maxBackoff: 200 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	started := false
	start := func() {
		started = true
		go func() { defer close(ran); p.run(ctx, time.Second) }()
	}
	t.Cleanup(func() {
		cancel()
		if started {
			<-ran
		}
		cc.Close()
		srv.Stop()
		<-served
	})
	return p, start
}

func alertN(i int) *escalationv1.Alert {
	return &escalationv1.Alert{TenantId: "acme", CallId: fmt.Sprint("c", i), Event: &callv1.AlertEvent{AlertId: fmt.Sprintf("acme/c%d/cp/1", i)}}
}

func TestPosterBatchesInOrderAndRetries(t *testing.T) {
	f := &scriptedEscalation{answer: func(call int, _ *escalationv1.PostAlertsRequest) error {
		if call <= 2 {
			return status.Error(codes.Unavailable, "escalation restarting")
		}
		if call == 3 {
			return status.Error(codes.ResourceExhausted, "the outbox is full")
		}
		return nil
	}}
	p, start := startPoster(t, f)
	for i := range 100 {
		p.enqueue(context.Background(), alertN(i))
	}
	start()
	for range 2 { // 100 alerts: a batch of 64, then 36
		select {
		case <-f.got:
		case <-time.After(10 * time.Second):
			t.Fatal("alerts not delivered after retries")
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.accepted) != 100 {
		t.Fatalf("escalation accepted %d alerts; want 100", len(f.accepted))
	}
	for i, id := range f.accepted {
		if id != fmt.Sprintf("acme/c%d/cp/1", i) {
			t.Fatalf("alert %d is %s: out of order", i, id)
		}
	}
	if f.sizes[0] != maxBatch || f.calls != 5 {
		t.Errorf("requests %v (%d calls); want batches of at most %d, three refused then two accepted", f.sizes, f.calls, maxBatch)
	}
}

func TestPosterDropsOnlyTheRejectedAlert(t *testing.T) {
	f := &scriptedEscalation{answer: func(_ int, r *escalationv1.PostAlertsRequest) error {
		for _, a := range r.Alerts {
			if a.CallId == "c2" {
				return status.Error(codes.InvalidArgument, "alert: bad")
			}
		}
		return nil
	}}
	p, start := startPoster(t, f)
	for i := range 5 {
		p.enqueue(context.Background(), alertN(i))
	}
	start()
	for range 4 {
		select {
		case <-f.got:
		case <-time.After(10 * time.Second):
			t.Fatal("the valid alerts were not delivered")
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	want := []string{"acme/c0/cp/1", "acme/c1/cp/1", "acme/c3/cp/1", "acme/c4/cp/1"}
	if fmt.Sprint(f.accepted) != fmt.Sprint(want) {
		t.Errorf("accepted %v; want %v (c2 dropped, not retried)", f.accepted, want)
	}
	if f.calls != 6 { // the batch, then each alone
		t.Errorf("%d calls; want 6 (the batch, then one per alert)", f.calls)
	}
}
