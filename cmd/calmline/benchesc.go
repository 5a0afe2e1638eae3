package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/calmline/calmline/cmd/stack"
	"github.com/calmline/calmline/escalation"
	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/identity"
	"github.com/calmline/calmline/lib/tenant"
	"github.com/calmline/calmline/lib/wire"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	escalationv1 "github.com/calmline/calmline/proto/calmline/escalation/v1"
	realtimev1 "github.com/calmline/calmline/proto/calmline/realtime/v1"
)

func init() {
	commands["bench-escalation"] = command{
		summary: "measure escalation: threshold crossing to webhook and transfer, alert throughput",
		run:     benchEscalation,
	}
}

// benchReceiver is an HTTP endpoint that answers 200 at once and notes,
// for each webhook-id the first time it comes, how long after the alert
// fired it arrived.
type benchReceiver struct {
	srv   *httptest.Server
	mu    sync.Mutex
	seen  map[string]bool
	lat   []time.Duration
	count atomic.Int64
	last  atomic.Int64 // unix ns of the last new message
}

func newBenchReceiver() *benchReceiver {
	r := &benchReceiver{seen: map[string]bool{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		now := time.Now()
		var env struct {
			Data struct {
				Alert struct {
					FiredAt time.Time `json:"fired_at"`
				} `json:"alert"`
			} `json:"data"`
		}
		body, _ := io.ReadAll(req.Body)
		json.Unmarshal(body, &env)
		id := req.Header.Get("webhook-id")
		r.mu.Lock()
		if !r.seen[id] {
			r.seen[id] = true
			r.lat = append(r.lat, now.Sub(env.Data.Alert.FiredAt))
			r.count.Add(1)
			r.last.Store(now.UnixNano())
		}
		r.mu.Unlock()
	}))
	return r
}

// dist summarises latencies in milliseconds.
type dist struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func distOf(ds []time.Duration) dist {
	if len(ds) == 0 {
		return dist{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	q := func(p float64) float64 {
		i := min(int(p*float64(len(s))), len(s)-1)
		return float64(s[i].Microseconds()) / 1000
	}
	return dist{N: len(s), P50: q(0.50), P95: q(0.95), P99: q(0.99), Max: float64(s[len(s)-1].Microseconds()) / 1000}
}

func (r *benchReceiver) latencies() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.lat)
}

func benchEscalation(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("calmline bench-escalation", flag.ContinueOnError)
	fs.SetOutput(stderr)
	mode := fs.String("mode", "latency", "latency: calls through realtime, threshold crossing to the first webhook and transfer attempts; throughput: alerts posted to escalation as fast as it takes them")
	database := fs.String("database", "", "escalation store: sqlite:PATH or postgres://... (default: a SQLite file in a temporary directory)")
	wavPath := fs.String("wav", "cmd/calmline/testdata/call_agent_turns_angry.wav", "latency: the call each simulated call plays (its agent turns angry)")
	calls := fs.Int("calls", 200, "latency: calls, each crossing the threshold once")
	rate := fs.Float64("rate", 10, "latency: calls started per second")
	duration := fs.Duration("duration", 20*time.Second, "throughput: how long to post alerts")
	clients := fs.Int("clients", 4, "throughput: concurrent PostAlerts clients")
	batch := fs.Int("batch", 1, "throughput: alerts per PostAlerts request")
	workers := fs.Int("delivery-workers", escalation.DefaultOptions().DeliveryWorkers, "escalation's delivery workers")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the run to this file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	dir, err := os.MkdirTemp("", "calmline-bench-escalation")
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	oncall, transfer := newBenchReceiver(), newBenchReceiver()
	defer oncall.srv.Close()
	defer transfer.srv.Close()
	key := tenant.NewKey()
	ts, err := tenant.Parse([]byte(fmt.Sprintf(`tenants:
  - id: bench
    api_keys: [{id: b1, sha256: %s}]
    alert_rule: {id: agent-anger, score: agent_stress, threshold: 70, hold_seconds: 2, clear_below: 10, cooldown_seconds: 600}
    escalation:
      endpoints:
        - {name: on-call, url: '%s'}
        - {name: intervention, url: '%s'}
      ladder:
        - {name: notify, action: notify, endpoint: on-call}
        - {name: transfer, action: transfer, endpoint: intervention}
`, tenant.HashKey(key), oncall.srv.URL, transfer.srv.URL)))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	reg, _ := tenant.NewRegistry(ts)
	eo := escalation.DefaultOptions()
	eo.Database, eo.DeliveryWorkers = *database, *workers
	if eo.Database == "" {
		eo.Database = "sqlite:" + filepath.Join(dir, "escalation.db")
	}
	services := []string{stack.Escalation, stack.Realtime}
	if *mode == "throughput" {
		services = []string{stack.Escalation}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := stack.New(ctx, stack.Options{Services: services, DataDir: dir, Tenants: reg, Escalation: &eo})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	served := make(chan error, 1)
	go func() { served <- st.Serve(ctx) }()
	defer func() { cancel(); <-served }()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		defer f.Close()
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	var res any
	switch *mode {
	case "latency":
		res, err = benchLatency(st, reg, *wavPath, *calls, *rate, oncall, transfer)
	case "throughput":
		res, err = benchThroughput(st, *duration, *clients, *batch, oncall, transfer)
	default:
		err = fmt.Errorf("unknown mode %q", *mode)
	}
	if err != nil {
		fmt.Fprintln(stderr, "calmline bench-escalation:", err)
		return 1
	}
	if m, ok := res.(map[string]any); ok {
		m["database"] = strings.SplitN(eo.Database, ":", 2)[0]
		m["delivery_workers"] = eo.DeliveryWorkers
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	enc.Encode(res)
	return 0
}

// benchLatency plays calls through realtime's gRPC API, faster than real
// time, one started every 1/rate s; each crosses the tenant's threshold
// once. Latencies run from the moment realtime's rule fired (the alert's
// time) to the first attempt's arrival at each receiver.
func benchLatency(st *stack.Stack, reg *tenant.Registry, wavPath string, calls int, rate float64, oncall, transfer *benchReceiver) (any, error) {
	b, err := os.ReadFile(wavPath)
	if err != nil {
		return nil, err
	}
	rec, err := audio.ParseWAV(b)
	if err != nil {
		return nil, err
	}
	cc, err := grpc.NewClient(st.Addr(stack.Realtime).String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(identity.Credentials(st.Identity(), identity.Gateway)))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	rt := realtimev1.NewRealtimeServiceClient(cc)
	ten, _ := reg.Tenant("bench")
	policy := wire.Policy(ten)
	chunk := rec.Format.BytesPerSecond() / 10
	var wg sync.WaitGroup
	var failed atomic.Int64
	start := time.Now()
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	for i := range calls {
		if i > 0 {
			<-tick.C
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := playCall(rt, fmt.Sprint("bench-", i), policy, rec, chunk); err != nil {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for (oncall.count.Load() < int64(calls) || transfer.count.Load() < int64(calls)) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond) // waiting for the last deliveries; a benchmark, not a test
	}
	return map[string]any{
		"mode": "latency", "calls": calls, "rate_per_s": rate, "failed_calls": failed.Load(),
		"wall_s":                  time.Since(start).Seconds(),
		"crossing_to_webhook_ms":  distOf(oncall.latencies()),
		"crossing_to_transfer_ms": distOf(transfer.latencies()),
		"webhooks_received":       oncall.count.Load(),
		"transfer_requests":       transfer.count.Load(),
		"note":                    "from the alert's time (realtime's rule fired) to the first attempt's arrival at the receiver; ladder steps with after: 0",
		"audio_seconds_per_call":  float64(len(rec.Data)) / float64(rec.Format.BytesPerSecond()),
	}, nil
}

// playCall sends a recording to realtime in 100 ms chunks as fast as it
// takes them, and reads its answers to the end.
func playCall(rt realtimev1.RealtimeServiceClient, callID string, policy *callv1.CallPolicy, rec *audio.Recording, chunk int) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := rt.Analyze(ctx)
	if err != nil {
		return err
	}
	call := &callv1.Call{TenantId: "bench", CallId: callID, AgentId: "agent-" + callID, StartedAt: timestamppb.Now(), Policy: policy,
		Format: &callv1.MediaFormat{Codec: wire.CodecOf(rec.Format.Codec), SampleRateHz: uint32(rec.Format.SampleRate),
			Channels: []callv1.ChannelRole{callv1.ChannelRole_CHANNEL_ROLE_CALLER, callv1.ChannelRole_CHANNEL_ROLE_AGENT}}}
	if err := s.Send(&realtimev1.AnalyzeRequest{Msg: &realtimev1.AnalyzeRequest_Open{Open: &realtimev1.OpenCall{Call: call}}}); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() {
		for {
			if _, err := s.Recv(); err != nil {
				if err == io.EOF {
					err = nil
				}
				done <- err
				return
			}
		}
	}()
	frame := rec.Format.FrameBytes()
	for off, seq := 0, uint64(1); off < len(rec.Data); off, seq = off+chunk, seq+1 {
		end := min(off+chunk, len(rec.Data))
		if err := s.Send(&realtimev1.AnalyzeRequest{Msg: &realtimev1.AnalyzeRequest_Chunk{Chunk: &callv1.AudioChunk{
			Seq: seq, StartSample: uint64(off / frame), Data: rec.Data[off:end]}}}); err != nil {
			return err
		}
	}
	s.Send(&realtimev1.AnalyzeRequest{Msg: &realtimev1.AnalyzeRequest_Close{Close: &realtimev1.CloseCall{}}})
	s.CloseSend()
	return <-done
}

// benchThroughput posts firing alerts of distinct calls to escalation from
// several clients for a while, then waits for the outbox to drain: every
// alert opens an escalation whose ladder sends a webhook and a transfer
// request.
func benchThroughput(st *stack.Stack, d time.Duration, clients, batch int, oncall, transfer *benchReceiver) (any, error) {
	cc, err := grpc.NewClient(st.Addr(stack.Escalation).String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(identity.Credentials(st.Identity(), identity.Realtime)))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	ac := escalationv1.NewAlertServiceClient(cc)
	var accepted, failed atomic.Int64
	var lats []time.Duration
	var mu sync.Mutex
	start := time.Now()
	stop := start.Add(d)
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for n := 0; time.Now().Before(stop); n++ {
				req := &escalationv1.PostAlertsRequest{}
				for j := range batch {
					call := fmt.Sprintf("t%d-%d-%d", c, n, j)
					req.Alerts = append(req.Alerts, &escalationv1.Alert{TenantId: "bench", CallId: call, AgentId: "a", Event: &callv1.AlertEvent{
						AlertId: "bench/" + call + "/cp/1", RuleId: "cp", Episode: 1, State: callv1.AlertState_ALERT_STATE_FIRING,
						Score: callv1.ScoreKind_SCORE_KIND_CALLER_PRESSURE, Value: 80, Threshold: 70, At: timestamppb.Now()}})
				}
				t0 := time.Now()
				_, err := ac.PostAlerts(context.Background(), req)
				if err != nil {
					failed.Add(1)
					continue
				}
				mine = append(mine, time.Since(t0))
				accepted.Add(int64(batch))
			}
			mu.Lock()
			lats = append(lats, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	posting := time.Since(start)
	want := accepted.Load()
	deadline := time.Now().Add(5 * time.Minute)
	for (oncall.count.Load() < want || transfer.count.Load() < want) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond) // waiting for the outbox to drain; a benchmark, not a test
	}
	drained := time.Unix(0, max(oncall.last.Load(), transfer.last.Load())).Sub(start)
	return map[string]any{
		"mode": "throughput", "clients": clients, "batch": batch, "posting_s": posting.Seconds(),
		"alerts_accepted":        want,
		"requests_failed":        failed.Load(),
		"alerts_per_s":           float64(want) / posting.Seconds(),
		"post_alerts_latency_ms": distOf(lats),
		"deliveries":             oncall.count.Load() + transfer.count.Load(),
		"deliveries_per_s":       float64(oncall.count.Load()+transfer.count.Load()) / drained.Seconds(),
		"drained_s":              drained.Seconds(),
		"alert_to_webhook_ms":    distOf(oncall.latencies()),
		"note":                   "each alert opens an escalation (audit entries, ladder steps) and two deliveries (webhook, transfer request), all in the outbox",
	}, nil
}
