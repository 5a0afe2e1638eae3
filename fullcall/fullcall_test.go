package fullcall

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/identity/identitytest"
	"github.com/calmline/calmline/lib/sqldb/sqldbtest"
	"github.com/calmline/calmline/lib/tenant"
	"github.com/calmline/calmline/lib/voice/voicetest"
	"github.com/calmline/calmline/lib/wire"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

func TestMain(m *testing.M) {
	code := m.Run()
	sqldbtest.Stop()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

type fixture struct {
	s      *Server
	cc     *grpc.ClientConn
	base   string // http://addr
	keys   map[string]string
	tenant map[string]*tenant.Tenant
	served chan error
	once   sync.Once
}

// stop shuts the server down (once) and checks it stopped cleanly.
func (f *fixture) stop(t testing.TB) {
	f.once.Do(func() {
		defer f.cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := f.s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-f.served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
}

// key returns a context carrying a tenant's API key for gRPC.
func (f *fixture) key(tenantID string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+f.keys[tenantID])
}

// testTenants are acme and globex, each with one API key.
type testTenants struct {
	reg  *tenant.Registry
	keys map[string]string
	ts   []*tenant.Tenant
}

func newTenants(t testing.TB, edit func(*tenant.Tenant)) *testTenants {
	t.Helper()
	tt := &testTenants{keys: map[string]string{"acme": tenant.NewKey(), "globex": tenant.NewKey()}}
	for _, id := range []string{"acme", "globex"} {
		tn := &tenant.Tenant{ID: id, APIKeys: []tenant.APIKey{{ID: id + "-1", SHA256: tenant.HashKey(tt.keys[id])}}}
		if edit != nil {
			edit(tn)
		}
		tt.ts = append(tt.ts, tn)
	}
	reg, err := tenant.NewRegistry(tt.ts)
	if err != nil {
		t.Fatal(err)
	}
	tt.reg = reg
	return tt
}

// start runs a fullcall server on a fresh SQLite store; options edit the
// defaults.
func start(t *testing.T, opts ...func(*Options)) *fixture {
	t.Helper()
	return startWith(t, newTenants(t, nil), sqldbtest.SQLite(t), opts...)
}

// startWith runs a fullcall server on the given store and tenants (two
// servers on one store are two instances sharing it).
func startWith(t testing.TB, tt *testTenants, dsn string, opts ...func(*Options)) *fixture {
	t.Helper()
	keys, ts := tt.keys, tt.ts
	o := DefaultOptions()
	o.Tenants = tt.reg
	o.Database = dsn
	o.MaxUploadBytes = 1 << 20
	o.MaxJobBytes = 4 << 20
	o.ShutdownGrace = 5 * time.Second
	o.Identity = identitytest.Keyring(t)
	if os.Getenv("FULLCALL_TEST_LOG") != "" {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	for _, f := range opts {
		f(&o)
	}
	s, err := New(context.Background(), o)
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
	f := &fixture{s: s, cc: cc, base: "http://" + lis.Addr().String(), keys: keys, tenant: map[string]*tenant.Tenant{}, served: served}
	t.Cleanup(func() { f.stop(t) })
	for _, tn := range ts {
		f.tenant[tn.ID] = tn
	}
	return f
}

// turns returns stereo μ-law: the caller talks in [0,2) s, the agent in
// [2.5, 4) s, then silence to the end. The voices are synthetic but
// speech-like (voicetest.Voice): the voice analysis treats steady tones as
// non-speech.
func turns(seconds float64) []byte {
	n := int(seconds * 8000)
	c := make([]int16, n)
	a := make([]int16, n)
	copy(c, voicetest.Voice{F0: 200, Range: 3, Rate: 4.5, Level: -16, Dur: 2, Seed: 1}.Generate())
	if n > 20000 {
		copy(a[20000:], voicetest.Voice{F0: 130, Range: 2, Rate: 4, Level: -20, Dur: 1.5, Seed: 2}.Generate())
	}
	return audio.Encode(nil, audio.Interleave(nil, c, a), audio.CodecPCMU)
}

func (f *fixture) call(tenantID, callID string) *callv1.Call {
	return &callv1.Call{
		TenantId: tenantID, CallId: callID, AgentId: "agent-1",
		StartedAt: timestamppb.New(time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)),
		Format: &callv1.MediaFormat{Codec: callv1.Codec_CODEC_PCMU, SampleRateHz: 8000,
			Channels: []callv1.ChannelRole{callv1.ChannelRole_CHANNEL_ROLE_CALLER, callv1.ChannelRole_CHANNEL_ROLE_AGENT}},
		Protocol: "native",
		Policy:   wire.Policy(f.tenant[tenantID]),
	}
}

// record streams data as 100 ms chunks, then the given extra messages.
func (f *fixture) record(t *testing.T, call *callv1.Call, data []byte, mutate func(seq uint64, m *fullcallv1.RecordRequest) []*fullcallv1.RecordRequest) (*fullcallv1.Report, []uint64, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := fullcallv1.NewIngestServiceClient(f.cc).Record(ctx)
	if err != nil {
		t.Fatal(err)
	}
	send := func(m *fullcallv1.RecordRequest) {
		if err := stream.Send(m); err != nil && err != io.EOF {
			t.Fatal(err)
		}
	}
	send(&fullcallv1.RecordRequest{Msg: &fullcallv1.RecordRequest_Open{Open: &fullcallv1.OpenCall{Call: call}}})
	var seq uint64
	for i := 0; i < len(data); i += 1600 {
		seq++
		m := &fullcallv1.RecordRequest{Msg: &fullcallv1.RecordRequest_Chunk{Chunk: &callv1.AudioChunk{Seq: seq, StartSample: uint64(i / 2), Data: data[i:min(i+1600, len(data))]}}}
		msgs := []*fullcallv1.RecordRequest{m}
		if mutate != nil {
			msgs = mutate(seq, m)
		}
		for _, m := range msgs {
			send(m)
		}
	}
	send(&fullcallv1.RecordRequest{Msg: &fullcallv1.RecordRequest_Close{Close: &fullcallv1.CloseCall{
		LastSeq: seq, EndSample: uint64(len(data) / 2), Reason: fullcallv1.EndReason_END_REASON_HANGUP}}})
	stream.CloseSend()
	var acks []uint64
	for {
		r, err := stream.Recv()
		if err != nil {
			return nil, acks, err
		}
		if a := r.GetAck(); a != nil {
			acks = append(acks, a.Seq)
		}
		if fin := r.GetFinished(); fin != nil {
			return fin.Report, acks, nil
		}
	}
}

func TestRecordWritesTheReport(t *testing.T) {
	f := start(t, func(o *Options) { o.CheckpointEvery = 2 * time.Second })
	rep, acks, err := f.record(t, f.call("acme", "c1"), turns(6.02), nil)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(rep.DurationS-6.02) > 0.001 {
		t.Errorf("duration %.3f s; want 6.02", rep.DurationS)
	}
	// Acknowledged at each durable checkpoint: every 2 s of audio, once
	// the analysis has made the seconds it completes (at most a second
	// later); the finished report covers the rest.
	if len(acks) != 2 || acks[0] < 20 || acks[0] > 30 || acks[1]-acks[0] < 20 || acks[1]-acks[0] > 30 {
		t.Errorf("acks %v; want two, 20 to 30 chunks apart", acks)
	}
	if len(rep.Channels) != 2 || rep.Channels[0].Role != callv1.ChannelRole_CHANNEL_ROLE_CALLER {
		t.Fatalf("channels %v", rep.Channels)
	}
	for i, want := range []float64{2.15, 1.65} { // turns plus the 150 ms hangover
		if got := rep.Channels[i].TalkS; math.Abs(got-want) > 0.15 {
			t.Errorf("channel %d talk %.2f s; want %.2f", i, got, want)
		}
	}
	// The voice report: the caller's synthetic voice moves around 200 Hz.
	if f0 := rep.Channels[0].F0MedianHz; math.Abs(f0-200) > 20 || rep.Channels[0].VoicedFraction <= 0 {
		t.Errorf("caller F0 median %.1f Hz, voiced fraction %.2f; want about 200 Hz", f0, rep.Channels[0].VoicedFraction)
	}
	if len(rep.Timeline) != 7 || rep.Model.GetName() == "" || rep.Chunks != 61 || rep.Incomplete {
		t.Errorf("timeline %d points, model %v, chunks %d, incomplete %v", len(rep.Timeline), rep.Model, rep.Chunks, rep.Incomplete)
	}
	// Scores carry one decimal in the report: the timeline, the peaks and
	// the means (stored as float32, they would read back with fifteen).
	scored := 0
	for _, p := range rep.Timeline {
		for _, v := range []*float64{p.AgentStress, p.CallerPressure} {
			if v != nil {
				scored++
				if !oneDecimal(*v) {
					t.Errorf("second %d: score %v has more than one decimal", p.Second, *v)
				}
			}
		}
	}
	for _, s := range []*fullcallv1.ScoreSummary{rep.AgentStress, rep.CallerPressure} {
		if !oneDecimal(s.Peak) || !oneDecimal(s.Mean) {
			t.Errorf("summary peak %v, mean %v: want one decimal", s.Peak, s.Mean)
		}
	}
	if scored == 0 {
		t.Error("no scored second in the timeline: the rounding check checked nothing")
	}
	// Each second's talk shares add up to the channels' talk and overlap
	// (the last second is 0.02 s long).
	var talk [3]float64
	for i, p := range rep.Timeline {
		if p.CallerTalk == nil || p.AgentTalk == nil || p.Overlap == nil {
			t.Fatalf("second %d has no talk shares: %v", i, p)
		}
		w := min(1, rep.DurationS-float64(i))
		talk[0], talk[1], talk[2] = talk[0]+*p.CallerTalk*w, talk[1]+*p.AgentTalk*w, talk[2]+*p.Overlap*w
	}
	for i, want := range []float64{rep.Channels[0].TalkS, rep.Channels[1].TalkS, rep.Overlap.OverlapS} {
		if math.Abs(talk[i]-want) > 0.06 {
			t.Errorf("talk shares of the timeline add up to %.2f s; the report's total is %.2f s", talk[i], want)
		}
	}
	if rep.TenantId != "acme" || rep.AgentId != "agent-1" || rep.Source != fullcallv1.Source_SOURCE_STREAM {
		t.Errorf("identity %s/%s/%v", rep.TenantId, rep.AgentId, rep.Source)
	}

	// gRPC: the tenant's key reads it; another tenant's does not.
	withKey := func(id string) context.Context {
		return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+f.keys[id])
	}
	rc := fullcallv1.NewReportServiceClient(f.cc)
	got, err := rc.GetReport(withKey("acme"), &fullcallv1.GetReportRequest{CallId: "c1"})
	if err != nil || !proto.Equal(got.Report, rep) {
		t.Fatalf("GetReport = %v; want the stored report", err)
	}
	if _, err := rc.GetReport(withKey("globex"), &fullcallv1.GetReportRequest{CallId: "c1"}); status.Code(err) != codes.NotFound {
		t.Errorf("other tenant's GetReport: %v; want NotFound", err)
	}
	if _, err := rc.GetReport(context.Background(), &fullcallv1.GetReportRequest{CallId: "c1"}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("GetReport without key: %v; want Unauthenticated", err)
	}

	// REST, the same.
	for _, c := range []struct {
		key  string
		want int
	}{{f.keys["acme"], 200}, {f.keys["globex"], 404}, {"", 401}, {"clk_wrong", 401}} {
		req, _ := http.NewRequest("GET", f.base+"/api/v1/reports/c1", nil)
		if c.key != "" {
			req.Header.Set("Authorization", "Bearer "+c.key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("GET report with key %q: %d; want %d", c.key, resp.StatusCode, c.want)
		}
		if c.want == 200 && (body["call_id"] != "c1" || body["duration_s"] == nil) {
			t.Errorf("REST report body %v", body)
		}
		if c.want != 200 && body["error"] == nil {
			t.Errorf("error response without an error object: %v", body)
		}
	}
}

func TestRecordIgnoresDuplicatesAndRejectsHoles(t *testing.T) {
	f := start(t)
	data := turns(3)
	// Every chunk sent twice, as after a replay.
	rep, _, err := f.record(t, f.call("acme", "dup"), data, func(seq uint64, m *fullcallv1.RecordRequest) []*fullcallv1.RecordRequest {
		return []*fullcallv1.RecordRequest{m, m}
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Chunks != 30 || math.Abs(rep.DurationS-3) > 0.001 {
		t.Errorf("with duplicates: %d chunks, %.3f s; want 30 and 3", rep.Chunks, rep.DurationS)
	}
	// A missing chunk is an error, never a silent hole.
	_, _, err = f.record(t, f.call("acme", "hole"), data, func(seq uint64, m *fullcallv1.RecordRequest) []*fullcallv1.RecordRequest {
		if seq == 7 {
			return nil
		}
		return []*fullcallv1.RecordRequest{m}
	})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("missing chunk: %v; want InvalidArgument", err)
	}
}

func TestRecordGapsAndEvents(t *testing.T) {
	f := start(t)
	data := turns(2)
	alert := &callv1.AlertEvent{AlertId: "acme/g/cp/1", State: callv1.AlertState_ALERT_STATE_FIRING}
	rep, _, err := f.record(t, f.call("acme", "g"), data, func(seq uint64, m *fullcallv1.RecordRequest) []*fullcallv1.RecordRequest {
		if seq == 5 {
			ev := &fullcallv1.RecordRequest{Msg: &fullcallv1.RecordRequest_Event{Event: &fullcallv1.CallEvent{Event: &fullcallv1.CallEvent_Alert{Alert: alert}}}}
			return []*fullcallv1.RecordRequest{m, ev, ev}
		}
		return []*fullcallv1.RecordRequest{m}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Alerts) != 1 || rep.Alerts[0].AlertId != alert.AlertId {
		t.Errorf("alerts %v; want the one alert once", rep.Alerts)
	}
}

func TestBrokenStreamKeepsWhatArrived(t *testing.T) {
	// No gateway comes back for the call: after OrphanAfter the sweep
	// stores what arrived as an incomplete report.
	f := start(t, func(o *Options) { o.CheckpointEvery = 500 * time.Millisecond; o.OrphanAfter = time.Second })
	stored := make(chan *fullcallv1.Report, 1)
	f.s.stored = stored
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := fullcallv1.NewIngestServiceClient(f.cc).Record(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&fullcallv1.RecordRequest{Msg: &fullcallv1.RecordRequest_Open{Open: &fullcallv1.OpenCall{Call: f.call("acme", "broken")}}})
	data := turns(1)
	for i := 0; i < len(data); i += 1600 {
		stream.Send(&fullcallv1.RecordRequest{Msg: &fullcallv1.RecordRequest_Chunk{Chunk: &callv1.AudioChunk{Seq: uint64(i/1600 + 1), StartSample: uint64(i / 2), Data: data[i : i+1600]}}})
	}
	// Wait until fullcall acknowledged some of it, then vanish.
	var acked uint64
	for acked < 5 {
		r, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		acked = max(acked, r.GetAck().GetSeq())
	}
	cancel()
	var rep *fullcallv1.Report
	select {
	case rep = <-stored:
	case <-time.After(10 * time.Second):
		t.Fatal("no report stored after the stream broke")
	}
	// Everything acknowledged is in it (and what arrived after, up to the
	// 10 chunks sent).
	if !rep.Incomplete || rep.EndReason != fullcallv1.EndReason_END_REASON_DISCONNECTED || rep.Chunks < acked || rep.Chunks > 10 {
		t.Errorf("report of a broken stream: incomplete=%v reason=%v chunks=%d (acknowledged %d)", rep.Incomplete, rep.EndReason, rep.Chunks, acked)
	}
	// And it is in the store for the tenant to read.
	kctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+f.keys["acme"])
	if _, err := fullcallv1.NewReportServiceClient(f.cc).GetReport(kctx, &fullcallv1.GetReportRequest{CallId: "broken"}); err != nil {
		t.Errorf("GetReport after a broken stream: %v", err)
	}
}

func TestStreamingAndUploadAgree(t *testing.T) {
	f := start(t)
	data := turns(5)
	streamed, _, err := f.record(t, f.call("acme", "s"), data, nil)
	if err != nil {
		t.Fatal(err)
	}
	wav := audio.EncodeWAV(audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 2}, data)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+f.keys["acme"])
	up, err := fullcallv1.NewRecordingServiceClient(f.cc).AnalyzeRecording(ctx, &fullcallv1.AnalyzeRecordingRequest{
		Recording: &fullcallv1.Recording{Wav: wav, CallId: "u", AgentId: "agent-1"}})
	if err != nil {
		t.Fatal(err)
	}
	u := up.Report
	if u.Source != fullcallv1.Source_SOURCE_UPLOAD || u.DurationS != streamed.DurationS || len(u.Timeline) != len(streamed.Timeline) {
		t.Fatalf("upload: source %v, %.3f s, %d points; stream: %.3f s, %d points", u.Source, u.DurationS, len(u.Timeline), streamed.DurationS, len(streamed.Timeline))
	}
	for i := range u.Timeline {
		if !proto.Equal(u.Timeline[i], streamed.Timeline[i]) {
			t.Errorf("second %d: upload %v, stream %v", i, u.Timeline[i], streamed.Timeline[i])
		}
	}
	for i := range u.Channels {
		if !proto.Equal(u.Channels[i], streamed.Channels[i]) {
			t.Errorf("channel %d: upload %v, stream %v", i, u.Channels[i], streamed.Channels[i])
		}
	}
}

func TestUploadErrors(t *testing.T) {
	f := start(t)
	good := audio.EncodeWAV(audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 2}, turns(3))
	silent := audio.EncodeWAV(audio.Format{Codec: audio.CodecL16, SampleRate: 16000, Channels: 1}, make([]byte, 32000))
	// 8-bit linear PCM: format tag 1 with 8 bits per sample.
	pcm8 := audio.EncodeWAV(audio.Format{Codec: audio.CodecL16, SampleRate: 8000, Channels: 1}, make([]byte, 1600))
	pcm8[34] = 8
	for _, c := range []struct {
		name  string
		query string
		body  []byte
		want  int
		code  string
	}{
		{"stereo wav", "?call_id=up1&agent_id=a", good, 200, ""},
		{"not a wav", "", []byte("ID3\x03 this is an mp3"), 415, "unsupported_format"},
		{"truncated", "", good[:len(good)/2], 400, "malformed_wav"},
		{"silence only", "", silent, 422, "no_speech"},
		{"too large even for a job", "", make([]byte, 5<<20), 413, "too_large"},
		{"empty body", "", nil, 400, "malformed_wav"},
		{"no data", "", audio.EncodeWAV(audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 1}, nil), 422, "no_audio"},
		{"8-bit PCM", "", pcm8, 415, "unsupported_format"},
		{"bad async flag", "?async=maybe", good, 400, "bad_request"},
		{"callback without configuration", "?callback_url=https://x.example/cb", good, 400, "bad_callback_url"},
		{"big file queued, not a wav", "?async=true", []byte("ID3\x03 mp3 again"), 415, "unsupported_format"},
		{"queued with bad roles", "?async=true&roles=agent", good, 400, "bad_roles"},
		{"bad roles", "?roles=caller,boss", good, 400, "bad_roles"},
		{"role count", "?roles=agent", good, 400, "bad_roles"},
	} {
		req, _ := http.NewRequest("POST", f.base+"/api/v1/recordings"+c.query, bytes.NewReader(c.body))
		req.Header.Set("X-API-Key", f.keys["acme"])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			CallID string `json:"call_id"`
			Error  struct{ Code, Message string }
		}
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != c.want || body.Error.Code != c.code {
			t.Errorf("%s: %d %q (%s); want %d %q", c.name, resp.StatusCode, body.Error.Code, body.Error.Message, c.want, c.code)
		}
		if c.want == 200 && body.CallID != "up1" {
			t.Errorf("%s: report for call %q", c.name, body.CallID)
		}
	}
}

// oneDecimal reports whether v prints with at most one decimal.
func oneDecimal(v float64) bool {
	s := strconv.FormatFloat(v, 'f', -1, 64)
	i := strings.IndexByte(s, '.')
	return i < 0 || len(s)-i-1 <= 1
}
