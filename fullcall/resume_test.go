package fullcall

import (
	"context"
	"errors"
	"io"
	"math"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/sqldb/sqldbtest"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// recClient drives one Record stream the way a gateway does.
type recClient struct {
	t      testing.TB
	stream fullcallv1.IngestService_RecordClient
	cancel context.CancelFunc
	resp   chan *fullcallv1.RecordResponse
	err    chan error // the stream's end
	acked  uint64
}

func openRecord(t *testing.T, cc *grpc.ClientConn, call *callv1.Call, resume bool) (*recClient, *fullcallv1.OpenedCall, error) {
	t.Helper()
	return openStream(t, cc, &fullcallv1.OpenCall{Call: call, Resume: resume})
}

// openStream opens a Record stream with open.
func openStream(t testing.TB, cc *grpc.ClientConn, open *fullcallv1.OpenCall) (*recClient, *fullcallv1.OpenedCall, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	stream, err := fullcallv1.NewIngestServiceClient(cc).Record(ctx)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	c := &recClient{t: t, stream: stream, cancel: cancel, resp: make(chan *fullcallv1.RecordResponse, 256), err: make(chan error, 1)}
	t.Cleanup(cancel)
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				c.err <- err
				close(c.resp)
				return
			}
			c.resp <- r
		}
	}()
	c.send(&fullcallv1.RecordRequest{Msg: &fullcallv1.RecordRequest_Open{Open: open}})
	r, ok := <-c.resp
	if !ok {
		return nil, nil, <-c.err
	}
	op := r.GetOpened()
	if op == nil {
		t.Fatalf("first answer %v; want opened", r)
	}
	c.acked = op.AckedSeq
	return c, op, nil
}

func (c *recClient) send(m *fullcallv1.RecordRequest) {
	if err := c.stream.Send(m); err != nil && !errors.Is(err, io.EOF) {
		c.t.Fatal(err)
	}
}

func (c *recClient) chunk(seq, start uint64, data []byte) {
	c.send(&fullcallv1.RecordRequest{Msg: &fullcallv1.RecordRequest_Chunk{Chunk: &callv1.AudioChunk{Seq: seq, StartSample: start, Data: data}}})
}

func (c *recClient) gap(g *callv1.Gap) {
	c.send(&fullcallv1.RecordRequest{Msg: &fullcallv1.RecordRequest_Gap{Gap: g}})
}

func (c *recClient) event(e *fullcallv1.CallEvent) {
	c.send(&fullcallv1.RecordRequest{Msg: &fullcallv1.RecordRequest_Event{Event: e}})
}

// waitAck waits for an acknowledgement of at least seq.
func (c *recClient) waitAck(seq uint64) {
	c.t.Helper()
	for c.acked < seq {
		r, ok := <-c.resp
		if !ok {
			c.t.Fatalf("stream ended waiting for ack %d: %v", seq, <-c.err)
		}
		if a := r.GetAck(); a != nil {
			c.acked = a.Seq
		}
	}
}

// finish closes the call and returns the report, or the stream's error.
func (c *recClient) finish(lastSeq, end uint64) (*fullcallv1.Report, error) {
	c.send(&fullcallv1.RecordRequest{Msg: &fullcallv1.RecordRequest_Close{Close: &fullcallv1.CloseCall{LastSeq: lastSeq, EndSample: end, Reason: fullcallv1.EndReason_END_REASON_HANGUP}}})
	c.stream.CloseSend()
	for r := range c.resp {
		if fin := r.GetFinished(); fin != nil {
			return fin.Report, nil
		}
	}
	return nil, <-c.err
}

// ended waits for the stream to end and returns its status.
func (c *recClient) ended() error {
	for range c.resp {
	}
	return <-c.err
}

// script is a call as a gateway sends it: 100 ms stereo μ-law chunks, a
// pause (gap) after chunk 20, an alert and a live-scoring gap after chunk
// 22. msgs(from, to) returns the messages after chunk from-1 up to chunk
// to, as the gateway's replay log holds them.
type script struct {
	data   []byte
	chunks int
}

const (
	chunkBytes   = 1600 // 100 ms of stereo μ-law
	chunkSamples = 800
	pauseAfter   = 20
	pauseSamples = 4000
)

func (sc script) start(seq int) uint64 {
	st := uint64(seq-1) * chunkSamples
	if seq > pauseAfter {
		st += pauseSamples
	}
	return st
}

func (sc script) end() uint64 { return sc.start(sc.chunks) + chunkSamples }

var (
	pause     = &callv1.Gap{StartSample: pauseAfter * chunkSamples, Samples: pauseSamples, Reason: callv1.GapReason_GAP_REASON_PAUSED}
	alertEv   = &fullcallv1.CallEvent{Event: &fullcallv1.CallEvent_Alert{Alert: &callv1.AlertEvent{AlertId: "acme/c/cp/1", State: callv1.AlertState_ALERT_STATE_FIRING, Second: 2}}}
	liveGapEv = &fullcallv1.CallEvent{Event: &fullcallv1.CallEvent_LiveScoringGap{LiveScoringGap: &callv1.Gap{StartSample: 8000, Samples: 3200, Reason: callv1.GapReason_GAP_REASON_FAILOVER}}}
)

func (sc script) play(c *recClient, from, to int) {
	for seq := from; seq <= to; seq++ {
		c.chunk(uint64(seq), sc.start(seq), sc.data[(seq-1)*chunkBytes:seq*chunkBytes])
		switch seq {
		case pauseAfter:
			c.gap(pause)
		case pauseAfter + 2:
			c.event(alertEv)
			c.event(liveGapEv)
		}
	}
}

func TestResumeOnAnotherInstanceLosesAndDoublesNothing(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, dsn string) {
		tt := newTenants(t, nil)
		fast := func(o *Options) { o.CheckpointEvery = 500 * time.Millisecond }
		a := startWith(t, tt, dsn, fast)
		b := startWith(t, tt, dsn, fast)
		sc := script{data: turns(6), chunks: 60}

		// The reference: the same call streamed without interruption.
		ref, _, err := openRecord(t, b.cc, a.call("acme", "ref"), false)
		if err != nil {
			t.Fatal(err)
		}
		sc.play(ref, 1, 60)
		want, err := ref.finish(60, sc.end())
		if err != nil {
			t.Fatal(err)
		}

		// Instance A takes the call, acknowledges up to chunk 25 (the pause
		// and the events are behind it), then is cut off from the gateway.
		call := a.call("acme", "c")
		onA, _, err := openRecord(t, a.cc, call, false)
		if err != nil {
			t.Fatal(err)
		}
		sc.play(onA, 1, 27)
		onA.waitAck(25)

		// The gateway resumes on B: B continues from A's last checkpoint.
		onB, opened, err := openRecord(t, b.cc, call, true)
		if err != nil {
			t.Fatal(err)
		}
		if opened.AckedSeq < 25 || opened.AckedSeq > 27 {
			t.Fatalf("resumed at chunk %d; want A's last checkpoint (25 or later)", opened.AckedSeq)
		}
		// A gateway that did not carry the call before (its client
		// reconnected) continues the timeline where the checkpoint ends.
		if want := sc.start(int(opened.AckedSeq) + 1); opened.TimelineSample != want || opened.Finished {
			t.Errorf("resumed at sample %d (finished %v); want %d, not finished", opened.TimelineSample, opened.Finished, want)
		}
		// The gateway replays from its log, which still holds a few chunks
		// before the acknowledgement and the pause and events that followed
		// chunk 20: each must count once.
		sc.play(onB, pauseAfter, 60)
		got, err := onB.finish(60, sc.end())
		if err != nil {
			t.Fatal(err)
		}

		// A is still alive (a partition, not a crash): its next checkpoint
		// is refused and it stops, storing nothing.
		sc.play(onA, 28, 40)
		if err := onA.ended(); status.Code(err) != codes.Aborted {
			t.Errorf("the stale instance's stream ended with %v; want Aborted", err)
		}

		if got.Chunks != 60 || got.Incomplete || len(got.Gaps) != 1 || len(got.Alerts) != 1 || len(got.LiveScoringGaps) != 1 {
			t.Errorf("resumed report: %d chunks, incomplete %v, gaps %v, alerts %d, live gaps %d; want 60 chunks, complete, one of each",
				got.Chunks, got.Incomplete, got.Gaps, len(got.Alerts), len(got.LiveScoringGaps))
		}
		closeAnalysis(t, got, want, int(sc.start(int(opened.AckedSeq)+1)/8000))

		// A late resume (the gateway missed the report) gets the stored
		// report back.
		late, opened, err := openRecord(t, a.cc, call, true)
		if err != nil {
			t.Fatal(err)
		}
		if opened.AckedSeq != 60 || !opened.Finished {
			t.Errorf("resuming a finished call: acked %d, finished %v; want 60, true", opened.AckedSeq, opened.Finished)
		}
		again, err := late.finish(60, sc.end())
		if err != nil || !proto.Equal(again, got) {
			t.Errorf("late close: %v; want the stored report", err)
		}
		stored, err := fullcallv1.NewReportServiceClient(a.cc).GetReport(a.key("acme"), &fullcallv1.GetReportRequest{CallId: "c"})
		if err != nil || !proto.Equal(stored.Report, got) {
			t.Errorf("stored report differs from the one returned: %v", err)
		}
	})
}

// closeAnalysis compares a report of a call taken over by another instance
// (the checkpoint in second takeover) with one that was not, within the
// tolerance analysis.Resume documents: the counts, gaps and events exact,
// the seconds before the takeover exact, the measures close.
func closeAnalysis(t *testing.T, got, want *fullcallv1.Report, takeover int) {
	t.Helper()
	if got.DurationS != want.DurationS || len(got.Timeline) != len(want.Timeline) {
		t.Fatalf("%.3f s with %d points; want %.3f s with %d", got.DurationS, len(got.Timeline), want.DurationS, len(want.Timeline))
	}
	if len(got.Gaps) != len(want.Gaps) || len(got.Alerts) != len(want.Alerts) || len(got.LiveScoringGaps) != len(want.LiveScoringGaps) || got.Chunks != want.Chunks || got.AudioBytes != want.AudioBytes {
		t.Errorf("gaps %d alerts %d live gaps %d chunks %d bytes %d; want %d %d %d %d %d", len(got.Gaps), len(got.Alerts), len(got.LiveScoringGaps), got.Chunks, got.AudioBytes,
			len(want.Gaps), len(want.Alerts), len(want.LiveScoringGaps), want.Chunks, want.AudioBytes)
	}
	if takeover < 1 || takeover >= len(want.Timeline) {
		t.Fatalf("takeover in second %d of %d", takeover, len(want.Timeline))
	}
	for i := range takeover {
		g, w := got.Timeline[i], want.Timeline[i]
		if g.CallerTalk == nil && g.AgentStress == nil && g.CallerPressure == nil && w.AgentStress == nil && w.CallerPressure == nil {
			// A second lost in the takeover (the stream broke inside
			// it; take() records it as abstained) has no talk shares
			// either; the scores agree, which is what is exact.
			w = proto.Clone(w).(*fullcallv1.TimelinePoint)
			w.CallerTalk, w.AgentTalk, w.Overlap = nil, nil, nil
		}
		if !proto.Equal(g, w) {
			t.Errorf("second %d, before the takeover: %v; want %v", i, g, w)
		}
	}
	for i, w := range want.Channels {
		g := got.Channels[i]
		for _, m := range []struct {
			name      string
			got, want float64
			tol       float64
		}{
			{"talk", g.TalkS, w.TalkS, 0.35},
			{"silence", g.SilenceS, w.SilenceS, 0.35},
			{"F0 mean", g.F0MeanHz, w.F0MeanHz, 5},
			{"voiced fraction", g.VoicedFraction, w.VoicedFraction, 0.05},
			{"intensity", g.IntensityMeanDb, w.IntensityMeanDb, 1.5},
		} {
			if math.Abs(m.got-m.want) > m.tol {
				t.Errorf("channel %d %s %.3f; want %.3f ± %g", i, m.name, m.got, m.want, m.tol)
			}
		}
	}
	if d := math.Abs(got.Overlap.OverlapS - want.Overlap.OverlapS); d > 0.35 {
		t.Errorf("overlap %.2f s; want %.2f ± 0.35", got.Overlap.OverlapS, want.Overlap.OverlapS)
	}
}

func TestStreamTakenOverMidCallMatchesBatch(t *testing.T) {
	// Streaming with a takeover in the middle of a long call (more than
	// one stored timeline segment) and the batch path give the same report
	// within analysis.Resume's tolerance.
	tt := newTenants(t, nil)
	dsn := sqldbtest.SQLite(t)
	big := func(o *Options) { o.MaxUploadBytes = 4 << 20; o.CheckpointEvery = 2 * time.Second }
	a := startWith(t, tt, dsn, big)
	b := startWith(t, tt, dsn, big)
	data := turns(130)
	n := len(data) / chunkBytes
	call := a.call("acme", "long")
	onA, _, err := openRecord(t, a.cc, call, false)
	if err != nil {
		t.Fatal(err)
	}
	for seq := 1; seq <= 700; seq++ {
		onA.chunk(uint64(seq), uint64(seq-1)*chunkSamples, data[(seq-1)*chunkBytes:seq*chunkBytes])
	}
	onA.waitAck(680)
	onA.cancel()
	onB, opened, err := openRecord(t, b.cc, call, true)
	if err != nil {
		t.Fatal(err)
	}
	for seq := int(opened.AckedSeq) + 1; seq <= n; seq++ {
		onB.chunk(uint64(seq), uint64(seq-1)*chunkSamples, data[(seq-1)*chunkBytes:seq*chunkBytes])
	}
	streamed, err := onB.finish(uint64(n), uint64(len(data)/2))
	if err != nil {
		t.Fatal(err)
	}
	wav := audio.EncodeWAV(audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 2}, data)
	up, err := fullcallv1.NewRecordingServiceClient(a.cc).AnalyzeRecording(a.key("acme"), &fullcallv1.AnalyzeRecordingRequest{
		Recording: &fullcallv1.Recording{Wav: wav, CallId: "batch", AgentId: "agent-1"}})
	if err != nil {
		t.Fatal(err)
	}
	batch := up.Report
	batch.Chunks, batch.AudioBytes = streamed.Chunks, streamed.AudioBytes // counted per chunk vs per file
	closeAnalysis(t, streamed, batch, int(opened.AckedSeq)*chunkSamples/8000)
	if streamed.Chunks != uint64(n) || len(streamed.Timeline) != 130 {
		t.Errorf("%d chunks, %d seconds; want %d and 130", streamed.Chunks, len(streamed.Timeline), n)
	}
}

func TestResumeUnknownCallIsRefused(t *testing.T) {
	f := start(t)
	_, _, err := openRecord(t, f.cc, f.call("acme", "never-seen"), true)
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("resuming an unknown call: %v; want FailedPrecondition (the gateway then marks the call incomplete)", err)
	}
}

func TestDrainHandsLiveCallsOver(t *testing.T) {
	tt := newTenants(t, nil)
	dsn := sqldbtest.SQLite(t)
	a := startWith(t, tt, dsn)
	b := startWith(t, tt, dsn)
	data := turns(3)
	call := a.call("acme", "drained")
	onA, _, err := openRecord(t, a.cc, call, false)
	if err != nil {
		t.Fatal(err)
	}
	for seq := 1; seq <= 12; seq++ {
		onA.chunk(uint64(seq), uint64(seq-1)*chunkSamples, data[(seq-1)*chunkBytes:seq*chunkBytes])
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		a.stop(t)
	}()
	// The next chunk meets the drain: A checkpoints everything it has and
	// sends the call away.
	for seq := 13; ; seq++ {
		onA.chunk(uint64(seq), uint64(seq-1)*chunkSamples, data[(seq-1)*chunkBytes:seq*chunkBytes])
		select {
		case <-stopped:
		case <-time.After(50 * time.Millisecond):
			continue
		}
		break
	}
	if err := onA.ended(); status.Code(err) != codes.Unavailable {
		t.Fatalf("stream on a draining instance ended with %v; want Unavailable", err)
	}
	onB, opened, err := openRecord(t, b.cc, call, true)
	if err != nil {
		t.Fatal(err)
	}
	// The drain checkpoint covers what A had received when it saw the
	// drain; the gateway replays the rest (it kept every chunk unacknowledged).
	t.Logf("resumed after chunk %d", opened.AckedSeq)
	n := len(data) / chunkBytes
	for seq := int(opened.AckedSeq) + 1; seq <= n; seq++ {
		onB.chunk(uint64(seq), uint64(seq-1)*chunkSamples, data[(seq-1)*chunkBytes:seq*chunkBytes])
	}
	rep, err := onB.finish(uint64(n), uint64(len(data)/2))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Chunks != uint64(n) || rep.Incomplete || rep.DurationS != 3 {
		t.Errorf("report after a drain: %d chunks, incomplete %v, %.2f s", rep.Chunks, rep.Incomplete, rep.DurationS)
	}
}
