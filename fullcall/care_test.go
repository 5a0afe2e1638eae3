package fullcall

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/calmline/calmline/fullcall/store"
	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/tenant"
	escalationv1 "github.com/calmline/calmline/proto/calmline/escalation/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// careServer is escalation's CareService as a fake: RecordCall does what
// the function field says.
type careServer struct {
	escalationv1.UnimplementedCareServiceServer
	recordCall func(*escalationv1.RecordCallRequest) error
}

func (c *careServer) RecordCall(_ context.Context, r *escalationv1.RecordCallRequest) (*escalationv1.RecordCallResponse, error) {
	if err := c.recordCall(r); err != nil {
		return nil, err
	}
	return &escalationv1.RecordCallResponse{}, nil
}

func TestLiveCallReachesTheCareRecord(t *testing.T) {
	var mu sync.Mutex
	attempts := 0
	got := make(chan *escalationv1.RecordCallRequest, 4)
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, health.NewServer())
	escalationv1.RegisterCareServiceServer(gs, &careServer{recordCall: func(r *escalationv1.RecordCallRequest) error {
		mu.Lock()
		defer mu.Unlock()
		attempts++
		if attempts == 1 {
			return status.Error(codes.Unavailable, "escalation is restarting")
		}
		got <- r
		return nil
	}})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)

	f := start(t, func(o *Options) { o.EscalationAddr = lis.Addr().String() })
	rep, _, err := f.record(t, f.call("acme", "care-1"), turns(3), nil)
	if err != nil {
		t.Fatal(err)
	}
	var r *escalationv1.RecordCallRequest
	select {
	case r = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("escalation's care service never got the call")
	}
	if r.TenantId != "acme" || r.CallId != "care-1" || r.AgentId != "agent-1" || r.CallerPressurePeak != rep.CallerPressure.Peak ||
		r.ExposureSeconds != rep.CallerPressure.SecondsAboveThreshold || !r.EndedAt.AsTime().Equal(rep.EndedAt.AsTime()) {
		t.Errorf("RecordCall %v for report peak %v above %d", r, rep.CallerPressure.Peak, rep.CallerPressure.SecondsAboveThreshold)
	}
	// Once escalation has it, the report is no longer pending.
	deadline := time.Now().Add(5 * time.Second)
	for {
		pending, err := f.s.store.CarePending(context.Background(), time.Now().Add(time.Hour), 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(pending) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d reports still pending for the care record", len(pending))
		}
		time.Sleep(10 * time.Millisecond) // polling the store
	}
}

func TestAgentSummaryAPI(t *testing.T) {
	f := start(t)
	for _, id := range []string{"s1", "s2"} {
		if _, _, err := f.record(t, f.call("acme", id), turns(6), nil); err != nil {
			t.Fatal(err)
		}
	}
	day := "from=2026-11-24T00:00:00Z&to=2026-11-25T00:00:00Z"
	code, body := f.get(t, "/api/v1/agents/agent-1/summary?"+day, f.keys["acme"])
	var sum struct {
		AgentID string  `json:"agent_id"`
		Calls   int     `json:"calls"`
		Minutes float64 `json:"minutes"`
	}
	if code != 200 || json.Unmarshal(body, &sum) != nil || sum.AgentID != "agent-1" || sum.Calls != 2 || sum.Minutes != 0.2 {
		t.Errorf("summary = %d %s; want 2 calls, 0.2 minutes", code, body)
	}
	if code, body := f.get(t, "/api/v1/agents/agent-1/summary?"+day, f.keys["globex"]); code != 200 || !bytes.Contains(body, []byte(`"calls":0`)) {
		t.Errorf("another tenant's summary of the agent: %d %s; want no calls", code, body)
	}
	for _, q := range []string{"from=yesterday", "from=2026-11-25T00:00:00Z&to=2026-11-24T00:00:00Z", "from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z"} {
		if code, body := f.get(t, "/api/v1/agents/agent-1/summary?"+q, f.keys["acme"]); code != 400 || !bytes.Contains(body, []byte("bad_request")) {
			t.Errorf("%s: %d %s; want 400", q, code, body)
		}
	}
	rc := fullcallv1.NewReportServiceClient(f.cc)
	from, to := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC), time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	g, err := rc.GetAgentSummary(f.key("acme"), &fullcallv1.GetAgentSummaryRequest{AgentId: "agent-1", From: timestamppb.New(from), To: timestamppb.New(to)})
	if err != nil || g.Summary.Calls != 2 {
		t.Errorf("GetAgentSummary = %v, %v", g, err)
	}
	if _, err := rc.GetAgentSummary(f.key("acme"), &fullcallv1.GetAgentSummaryRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("summary without an agent: %v", err)
	}
}

func TestStoredAudioAndRetention(t *testing.T) {
	tt := newTenants(t, func(tn *tenant.Tenant) {
		if tn.ID == "acme" {
			tn.Audio = tenant.Audio{Store: true, RetentionDays: 7}
			tn.ReportRetentionDays = 30
		}
	})
	f := startWith(t, tt, "sqlite:"+t.TempDir()+"/fc.db", func(o *Options) { o.CheckpointEvery = 500 * time.Millisecond })
	// A live call with a pause: the audio comes back with silence in the
	// pause, aligned with the timeline.
	sc := script{data: turns(4), chunks: 40}
	c, _, err := openRecord(t, f.cc, f.call("acme", "kept"), false)
	if err != nil {
		t.Fatal(err)
	}
	sc.play(c, 1, 40)
	rep, err := c.finish(40, sc.end())
	if err != nil {
		t.Fatal(err)
	}
	if !rep.AudioStored || rep.AudioExpiresAt == nil {
		t.Errorf("report says audio stored %v until %v", rep.AudioStored, rep.AudioExpiresAt)
	}
	code, body := f.get(t, "/api/v1/reports/kept/audio", f.keys["acme"])
	if code != 200 {
		t.Fatalf("GET audio = %d %s", code, body)
	}
	wav, err := audio.ParseWAV(body)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte(nil), sc.data[:pauseAfter*chunkBytes]...)
	want = append(want, bytes.Repeat([]byte{0xff, 0xff}, pauseSamples)...) // μ-law silence
	want = append(want, sc.data[pauseAfter*chunkBytes:]...)
	if wav.Format.Channels != 2 || !bytes.Equal(wav.Data, want) {
		t.Errorf("stored audio: %d bytes; want the call's %d bytes with the pause as silence", len(wav.Data), len(want))
	}
	// globex keeps no audio, and cannot read acme's.
	if code, _ := f.get(t, "/api/v1/reports/kept/audio", f.keys["globex"]); code != 404 {
		t.Errorf("another tenant's audio: %d; want 404", code)
	}
	up := stereoWAV(2)
	if code, _, b := f.post(t, "/api/v1/recordings?call_id=g-up", f.keys["globex"], up); code != 200 {
		t.Fatalf("upload: %d %s", code, b)
	}
	if code, _ := f.get(t, "/api/v1/reports/g-up/audio", f.keys["globex"]); code != 404 {
		t.Errorf("audio of a tenant that keeps none: %d; want 404", code)
	}

	// Retention: after 8 days the audio goes, the report stays; after 31
	// the report goes too. Each deletion is recorded.
	ctx := context.Background()
	t0 := rep.EndedAt.AsTime()
	f.s.store.Now = func() time.Time { return t0.Add(8 * 24 * time.Hour) }
	f.s.enforceRetention(ctx)
	if code, _ := f.get(t, "/api/v1/reports/kept/audio", f.keys["acme"]); code != 404 {
		t.Errorf("audio after its retention: %d; want 404", code)
	}
	if code, _ := f.get(t, "/api/v1/reports/kept", f.keys["acme"]); code != 200 {
		t.Errorf("report before its retention: %d; want 200", code)
	}
	f.s.store.Now = func() time.Time { return t0.Add(31 * 24 * time.Hour) }
	f.s.enforceRetention(ctx)
	if code, _ := f.get(t, "/api/v1/reports/kept", f.keys["acme"]); code != 404 {
		t.Errorf("report after its retention: %d; want 404", code)
	}
	if code, _ := f.get(t, "/api/v1/reports/g-up", f.keys["globex"]); code != 200 {
		t.Errorf("globex keeps reports forever, but its report is gone: %d", code)
	}
	ds, err := f.s.store.Deletions(ctx, "acme", t0)
	if err != nil || len(ds) != 2 || ds[0].Kind != store.KindAudio || ds[1].Kind != store.KindReport || ds[1].CallID != "kept" {
		t.Errorf("deletions %+v, %v; want the audio then the report of call kept", ds, err)
	}
}
