package realtime

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/calmline/calmline/lib/analysis"
	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/identity/identitytest"
	"github.com/calmline/calmline/lib/voice/voicetest"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	escalationv1 "github.com/calmline/calmline/proto/calmline/escalation/v1"
	realtimev1 "github.com/calmline/calmline/proto/calmline/realtime/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeEscalation is a real gRPC AlertService that records what it gets.
type fakeEscalation struct {
	escalationv1.UnimplementedAlertServiceServer
	mu     sync.Mutex
	alerts []*escalationv1.Alert
	got    chan struct{}
}

func (f *fakeEscalation) PostAlerts(_ context.Context, r *escalationv1.PostAlertsRequest) (*escalationv1.PostAlertsResponse, error) {
	f.mu.Lock()
	f.alerts = append(f.alerts, r.Alerts...)
	f.mu.Unlock()
	f.got <- struct{}{}
	return &escalationv1.PostAlertsResponse{EscalationIds: []string{"e1"}}, nil
}

func startEscalation(t *testing.T) (*fakeEscalation, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeEscalation{got: make(chan struct{}, 16)}
	srv := grpc.NewServer()
	escalationv1.RegisterAlertServiceServer(srv, f)
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return f, lis.Addr().String()
}

func startRealtime(t *testing.T, o Options) (*Server, realtimev1.RealtimeServiceClient) {
	t.Helper()
	if o.Identity == nil {
		o.Identity = identitytest.Keyring(t)
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(context.Background(), lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(), append(identitytest.DialOptions(o.Identity), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, realtimev1.NewRealtimeServiceClient(cc)
}

func testCall(id string) *callv1.Call {
	return &callv1.Call{
		TenantId: "acme", CallId: id, AgentId: "agent-7",
		Format: &callv1.MediaFormat{Codec: callv1.Codec_CODEC_PCMU, SampleRateHz: 8000,
			Channels: []callv1.ChannelRole{callv1.ChannelRole_CHANNEL_ROLE_CALLER, callv1.ChannelRole_CHANNEL_ROLE_AGENT}},
		Policy: &callv1.CallPolicy{
			AgentScoring: callv1.AgentScoring_AGENT_SCORING_ON,
			AlertRule:    &callv1.AlertRule{Id: "cp", Score: callv1.ScoreKind_SCORE_KIND_CALLER_PRESSURE, Threshold: 70, HoldSeconds: 2, ClearBelow: 50},
		},
	}
}

// shouting returns stereo μ-law in which the caller speaks calmly, then
// shouts (higher, more variable, faster, louder, more effort) from
// calmUntil seconds on, while the agent listens. The voices are synthetic
// but speech-like (voicetest.Voice): the voice analysis withholds scores
// from steady tones.
func shouting(seconds, calmUntil float64) []byte {
	calm := voicetest.Voice{F0: 140, Range: 2, Rate: 4, Level: -22, Dur: min(seconds, calmUntil), Seed: 1}.Generate()
	caller := calm
	if seconds > calmUntil {
		loud := voicetest.Voice{F0: 240, Range: 6, Rate: 6, Level: -8, Effort: 1, Dur: seconds - calmUntil, Seed: 2}.Generate()
		caller = voicetest.Concat(calm, loud)
	}
	agent := make([]int16, len(caller))
	return audio.Encode(nil, audio.Interleave(nil, caller, agent), audio.CodecPCMU)
}

func TestAnalyzeScoresEverySecondAndRaisesOneAlert(t *testing.T) {
	esc, escAddr := startEscalation(t)
	o := DefaultOptions()
	o.EscalationAddr = escAddr
	_, client := startRealtime(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := client.Analyze(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&realtimev1.AnalyzeRequest{Msg: &realtimev1.AnalyzeRequest_Open{Open: &realtimev1.OpenCall{Call: testCall("c1")}}}); err != nil {
		t.Fatal(err)
	}
	data := shouting(8, 4)
	const chunk = 1600 // 100 ms of stereo μ-law
	var seq uint64
	for i := 0; i < len(data); i += chunk {
		seq++
		err := stream.Send(&realtimev1.AnalyzeRequest{Msg: &realtimev1.AnalyzeRequest_Chunk{Chunk: &callv1.AudioChunk{
			Seq: seq, StartSample: uint64(i / 2), Data: data[i:min(i+chunk, len(data))]}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	stream.Send(&realtimev1.AnalyzeRequest{Msg: &realtimev1.AnalyzeRequest_Close{Close: &realtimev1.CloseCall{}}})
	stream.CloseSend()

	var scores []*callv1.ScoreUpdate
	var alerts []*callv1.AlertEvent
	var analyses []*callv1.SecondAnalysis
	for {
		r, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if s := r.GetScore(); s != nil {
			scores = append(scores, s)
			analyses = append(analyses, r.Analysis)
		} else if r.Analysis != nil {
			t.Errorf("an analysis without a score: %v", r)
		}
		if a := r.GetAlert(); a != nil {
			alerts = append(alerts, a)
		}
	}
	if len(scores) != 8 {
		t.Fatalf("got %d score updates for 8 s of audio; want 8", len(scores))
	}
	for i, s := range scores {
		if s.Second != uint32(i) || s.EndSample != uint64(i+1)*8000 || s.Model.GetName() != analysis.Model().Name || s.Model.GetVersion() == "" {
			t.Errorf("score %d = %v", i, s)
		}
		if s.CallerPressure == nil {
			t.Errorf("score %d: caller_pressure abstained while the caller spoke: %v", i, s)
		}
		if s.AgentStress != nil || s.AgentStressAbstain == "" {
			t.Errorf("score %d: agent_stress scored, or abstained without a reason, while the agent was silent: %v", i, s)
		}
		// Beside each score, the second's analysis for fullcall's report:
		// the same second, the same scores, every sample audio.
		a := analyses[i]
		if err := analysis.CheckSecond(a, 2, 8000); err != nil || a.Second != s.Second || a.EndSample != s.EndSample || a.AudioSamples != 8000 ||
			a.GetCallerPressure() != s.GetCallerPressure() || (a.AgentStress == nil) != (s.AgentStress == nil) || a.Channels[0].VoicedFrames == 0 {
			t.Errorf("second %d's analysis %v (%v); want one matching its score %v", i, a, err, s)
		}
	}
	if calm, loud := scores[2].GetCallerPressure(), scores[6].GetCallerPressure(); loud < 70 || calm >= 70 {
		t.Errorf("caller pressure calm %.1f, shouting %.1f; want below and above 70", calm, loud)
	}
	if len(alerts) != 1 || alerts[0].State != callv1.AlertState_ALERT_STATE_FIRING || alerts[0].AlertId != "acme/c1/cp/1" {
		t.Fatalf("alerts %v; want one firing episode", alerts)
	}
	select {
	case <-esc.got:
	case <-ctx.Done():
		t.Fatal("escalation never received the alert")
	}
	esc.mu.Lock()
	defer esc.mu.Unlock()
	if a := esc.alerts[0]; a.TenantId != "acme" || a.CallId != "c1" || a.AgentId != "agent-7" || a.Event.AlertId != "acme/c1/cp/1" {
		t.Errorf("escalation got %v", a)
	}
}

func TestAnalyzeResumeSkipsSecondsBeforeTheResumePoint(t *testing.T) {
	_, client := startRealtime(t, DefaultOptions())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := client.Analyze(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&realtimev1.AnalyzeRequest{Msg: &realtimev1.AnalyzeRequest_Open{Open: &realtimev1.OpenCall{Call: testCall("c2"), ResumeSample: 3 * 8000}}})
	data := shouting(2, 10)
	stream.Send(&realtimev1.AnalyzeRequest{Msg: &realtimev1.AnalyzeRequest_Chunk{Chunk: &callv1.AudioChunk{Seq: 31, StartSample: 3 * 8000, Data: data}}})
	stream.Send(&realtimev1.AnalyzeRequest{Msg: &realtimev1.AnalyzeRequest_Close{Close: &realtimev1.CloseCall{}}})
	stream.CloseSend()
	var seconds []uint32
	for {
		r, err := stream.Recv()
		if err != nil {
			break
		}
		if s := r.GetScore(); s != nil {
			seconds = append(seconds, s.Second)
			if a := r.Analysis; a.GetSecond() != s.Second || a.AudioSamples != 8000 {
				t.Errorf("second %d's analysis: %v; want that second, all audio", s.Second, a)
			}
		}
	}
	if len(seconds) != 2 || seconds[0] != 3 || seconds[1] != 4 {
		t.Errorf("seconds after resuming at 3 s: %v; want [3 4]", seconds)
	}
}

func TestAnalyzeRefusals(t *testing.T) {
	o := DefaultOptions()
	o.MaxCalls = 1
	s, client := startRealtime(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	open := func(c *callv1.Call) *realtimev1.AnalyzeRequest {
		return &realtimev1.AnalyzeRequest{Msg: &realtimev1.AnalyzeRequest_Open{Open: &realtimev1.OpenCall{Call: c}}}
	}
	recvErr := func(msgs ...*realtimev1.AnalyzeRequest) error {
		stream, err := client.Analyze(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			stream.Send(m)
		}
		for {
			if _, err := stream.Recv(); err != nil {
				return err
			}
		}
	}
	bad := testCall("bad")
	bad.Format.SampleRateHz = 44100
	oddChunk := &realtimev1.AnalyzeRequest{Msg: &realtimev1.AnalyzeRequest_Chunk{Chunk: &callv1.AudioChunk{Seq: 1, Data: []byte{1, 2, 3}}}}
	for _, c := range []struct {
		name string
		msgs []*realtimev1.AnalyzeRequest
		want codes.Code
	}{
		{"chunk before open", []*realtimev1.AnalyzeRequest{oddChunk}, codes.FailedPrecondition},
		{"unsupported rate", []*realtimev1.AnalyzeRequest{open(bad)}, codes.InvalidArgument},
		{"no call id", []*realtimev1.AnalyzeRequest{open(&callv1.Call{TenantId: "acme"})}, codes.InvalidArgument},
		{"partial sample frame", []*realtimev1.AnalyzeRequest{open(testCall("odd")), oddChunk}, codes.InvalidArgument},
		{"open twice", []*realtimev1.AnalyzeRequest{open(testCall("twice")), open(testCall("twice"))}, codes.FailedPrecondition},
	} {
		if err := recvErr(c.msgs...); status.Code(err) != c.want {
			t.Errorf("%s: %v; want %v", c.name, err, c.want)
		}
	}

	// One live call fills the instance; the next is refused.
	live, err := client.Analyze(ctx)
	if err != nil {
		t.Fatal(err)
	}
	live.Send(open(testCall("live")))
	// A second is scored once the analysis has looked 160 ms past it.
	live.Send(&realtimev1.AnalyzeRequest{Msg: &realtimev1.AnalyzeRequest_Chunk{Chunk: &callv1.AudioChunk{Seq: 1, Data: shouting(1.2, 5)}}})
	if _, err := live.Recv(); err != nil { // a score: the call is live
		t.Fatal(err)
	}
	if err := recvErr(open(testCall("extra"))); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("call over MaxCalls: %v; want ResourceExhausted", err)
	}

	// Draining ends live streams with UNAVAILABLE at their next chunk so
	// that the gateway moves them.
	shutdown := make(chan error, 1)
	go func() { shutdown <- s.Shutdown(ctx) }()
	for {
		live.Send(&realtimev1.AnalyzeRequest{Msg: &realtimev1.AnalyzeRequest_Chunk{Chunk: &callv1.AudioChunk{Seq: 2, StartSample: 9600, Data: shouting(0.1, 5)}}})
		if _, err := live.Recv(); err != nil {
			if status.Code(err) != codes.Unavailable {
				t.Errorf("live call during drain: %v; want Unavailable", err)
			}
			break
		}
	}
	if err := <-shutdown; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}
