// Package gatewaytest provides backends for the gateway's tests: real gRPC
// servers on loopback that speak the realtime and fullcall contracts with
// simple, predictable behaviour (a score per second of audio received, an
// acknowledgement per chunk, a report that counts what arrived), and hooks
// to make them misbehave. They stand in for the real services only in the
// gateway's unit tests; end-to-end tests use the real ones.
package gatewaytest

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
	realtimev1 "github.com/calmline/calmline/proto/calmline/realtime/v1"
)

// Model is the model label the fake realtime puts on its scores.
var Model = &callv1.ModelInfo{Name: "gatewaytest", Version: "0"}

// Backend is one fake gRPC server.
type Backend struct {
	Addr string
	srv  *grpc.Server
	wg   sync.WaitGroup
	once sync.Once
}

func serve(t testing.TB, register func(*grpc.Server)) *Backend {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &Backend{Addr: lis.Addr().String(), srv: grpc.NewServer()}
	healthpb.RegisterHealthServer(b.srv, health.NewServer()) // SERVING
	register(b.srv)
	b.wg.Add(1)
	go func() { defer b.wg.Done(); b.srv.Serve(lis) }()
	t.Cleanup(b.Kill)
	return b
}

// Kill stops the server at once, breaking its streams, as a crash would.
func (b *Backend) Kill() {
	b.once.Do(func() {
		b.srv.Stop()
		b.wg.Wait()
	})
}

// Realtime is a fake realtime service.
type Realtime struct {
	realtimev1.UnimplementedRealtimeServiceServer
	*Backend

	mu    sync.Mutex
	Opens []*realtimev1.OpenCall
	// Chunks counts chunks received per call id.
	Chunks map[string]int
	// OnChunk, when set, runs for every chunk; an error ends the stream.
	OnChunk func(callID string, c *callv1.AudioChunk) error
	// Alert, when set, is sent after the score of the given second.
	Alert func(callID string, second uint32) *callv1.AlertEvent
	// AgentStress, when set, is the agent_stress of every score (else
	// agent_stress abstains).
	AgentStress *float64
	// CloseAlert, when set, is sent after the last scores in answer to
	// the call's close (an alert that clears as the call ends).
	CloseAlert func(callID string) *callv1.AlertEvent
}

// StartRealtime starts a fake realtime service.
func StartRealtime(t testing.TB) *Realtime {
	r := &Realtime{Chunks: map[string]int{}}
	r.Backend = serve(t, func(s *grpc.Server) { realtimev1.RegisterRealtimeServiceServer(s, r) })
	return r
}

// Analyze scores every full second of audio it receives with 50.
func (r *Realtime) Analyze(s realtimev1.RealtimeService_AnalyzeServer) error {
	first, err := s.Recv()
	if err != nil {
		return err
	}
	open := first.GetOpen()
	if open == nil {
		return errors.New("first message is not open")
	}
	r.mu.Lock()
	r.Opens = append(r.Opens, open)
	r.mu.Unlock()
	call := open.Call
	rate := uint64(call.Format.SampleRateHz)
	frame := uint64(len(call.Format.Channels))
	if call.Format.Codec == callv1.Codec_CODEC_L16 {
		frame *= 2
	}
	pos := open.ResumeSample
	next := (pos/rate + 1) * rate // end of the second in progress
	score := func(end uint64) error {
		v := 50.0
		sec := uint32(end/rate) - 1
		r.mu.Lock()
		alert, agent := r.Alert, r.AgentStress
		r.mu.Unlock()
		u := &callv1.ScoreUpdate{CallId: call.CallId, Second: sec, EndSample: end, CallerPressure: &v, AgentStressAbstain: "fake", Model: Model}
		if agent != nil {
			u.AgentStress, u.AgentStressAbstain = agent, ""
		}
		// Beside the score, the second's analysis (its sums left empty).
		a := &callv1.SecondAnalysis{Second: sec, EndSample: end, AudioSamples: rate, CallerPressure: &v, Model: Model}
		if err := s.Send(&realtimev1.AnalyzeResponse{Msg: &realtimev1.AnalyzeResponse_Score{Score: u}, Analysis: a}); err != nil {
			return err
		}
		if alert != nil {
			if a := alert(call.CallId, sec); a != nil {
				return s.Send(&realtimev1.AnalyzeResponse{Msg: &realtimev1.AnalyzeResponse_Alert{Alert: a}})
			}
		}
		return nil
	}
	for {
		req, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch m := req.Msg.(type) {
		case *realtimev1.AnalyzeRequest_Chunk:
			r.mu.Lock()
			r.Chunks[call.CallId]++
			hook := r.OnChunk
			r.mu.Unlock()
			if hook != nil {
				if err := hook(call.CallId, m.Chunk); err != nil {
					return err
				}
			}
			pos = m.Chunk.StartSample + uint64(len(m.Chunk.Data))/frame
		case *realtimev1.AnalyzeRequest_Gap:
			pos = max(pos, m.Gap.StartSample+m.Gap.Samples)
		case *realtimev1.AnalyzeRequest_Close:
			for ; next <= pos; next += rate {
				if err := score(next); err != nil {
					return err
				}
			}
			if pos%rate != 0 && pos > next-rate {
				v := 50.0
				s.Send(&realtimev1.AnalyzeResponse{Msg: &realtimev1.AnalyzeResponse_Score{Score: &callv1.ScoreUpdate{
					CallId: call.CallId, Second: uint32(pos / rate), EndSample: pos, CallerPressure: &v, Model: Model}}})
			}
			r.mu.Lock()
			closeAlert := r.CloseAlert
			r.mu.Unlock()
			if closeAlert != nil {
				if a := closeAlert(call.CallId); a != nil {
					return s.Send(&realtimev1.AnalyzeResponse{Msg: &realtimev1.AnalyzeResponse_Alert{Alert: a}})
				}
			}
			return nil
		}
		for ; next <= pos; next += rate {
			if err := score(next); err != nil {
				return err
			}
		}
	}
}

// ChunkCount returns the chunks received for a call.
func (r *Realtime) ChunkCount(callID string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.Chunks[callID]
}

// Fullcall is a fake fullcall service.
type Fullcall struct {
	fullcallv1.UnimplementedIngestServiceServer
	*Backend

	mu sync.Mutex
	// Received records every chunk sequence number received per call, in
	// order, duplicates included.
	Received map[string][]uint64
	// Events records the events received per call.
	Events map[string][]*fullcallv1.CallEvent
	// Gaps records the gaps received per call.
	Gaps map[string][]*callv1.Gap
	// Analyses records, per call, the seconds of the per-second analyses
	// received, each with the timeline position the chunks received had
	// reached when it came.
	Analyses map[string][]AnalysisAt
	// RealtimeAnalysis records, per call, what the last open said of
	// realtime's analyses.
	RealtimeAnalysis map[string]bool
	// Reports holds the last report per call.
	Reports map[string]*fullcallv1.Report
	// OnChunk, when set, runs for every chunk before it is acknowledged;
	// an error ends the stream.
	OnChunk func(callID string, c *callv1.AudioChunk) error
	// AckedAtOpen, when set, says what a resumed call's checkpoint holds.
	AckedAtOpen func(callID string) uint64
	// OnClose, when set, runs when a call's close arrives, before its
	// report is made.
	OnClose func(callID string)
	// Refuse, when set, refuses the open with this error.
	Refuse func(open *fullcallv1.OpenCall) error
	// Durable, when set, is the checkpoint store this instance shares with
	// others: chunks are recorded there before they are acknowledged, a
	// resumed call continues from it, and reports count what it holds.
	Durable *Checkpoints

	bytes map[string]uint64
	pos   map[string]uint64
}

// AnalysisAt is a per-second analysis fullcall received, and how far the
// call's chunks had come then.
type AnalysisAt struct {
	Second    uint32
	EndSample uint64
	Received  uint64
}

// CallAnalyses returns the per-second analyses received for a call.
func (f *Fullcall) CallAnalyses(callID string) []AnalysisAt {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]AnalysisAt(nil), f.Analyses[callID]...)
}

// Checkpoints stands in for the durable checkpoint store real fullcall
// instances share, so that a call can move from a killed fake instance to
// another as it would between real ones. It keeps every chunk's size by
// sequence number and counts chunks received twice.
type Checkpoints struct {
	mu    sync.Mutex
	calls map[string]*checkpoint
}

type checkpoint struct {
	acked uint64         // highest contiguous sequence number held
	sizes map[uint64]int // bytes per sequence number
	dups  int
}

// NewCheckpoints returns an empty store.
func NewCheckpoints() *Checkpoints { return &Checkpoints{calls: map[string]*checkpoint{}} }

func (c *Checkpoints) get(callID string) *checkpoint {
	cp := c.calls[callID]
	if cp == nil {
		cp = &checkpoint{sizes: map[uint64]int{}}
		c.calls[callID] = cp
	}
	return cp
}

// add records a chunk; a chunk seen before only counts as a duplicate.
func (c *Checkpoints) add(callID string, seq uint64, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cp := c.get(callID)
	if _, dup := cp.sizes[seq]; dup {
		cp.dups++
		return
	}
	cp.sizes[seq] = n
	for cp.sizes[cp.acked+1] != 0 {
		cp.acked++
	}
}

// Acked returns the highest sequence number up to which every chunk of
// the call is held.
func (c *Checkpoints) Acked(callID string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.get(callID).acked
}

// Held returns the chunks and audio bytes held for a call, and how many
// chunks arrived more than once.
func (c *Checkpoints) Held(callID string) (chunks int, bytes uint64, duplicates int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cp := c.get(callID)
	for _, n := range cp.sizes {
		bytes += uint64(n)
	}
	return len(cp.sizes), bytes, cp.dups
}

// StartFullcall starts a fake fullcall service.
func StartFullcall(t testing.TB) *Fullcall {
	f := &Fullcall{Received: map[string][]uint64{}, Events: map[string][]*fullcallv1.CallEvent{}, Gaps: map[string][]*callv1.Gap{},
		Analyses: map[string][]AnalysisAt{}, RealtimeAnalysis: map[string]bool{}, pos: map[string]uint64{},
		Reports: map[string]*fullcallv1.Report{}, bytes: map[string]uint64{}}
	f.Backend = serve(t, func(s *grpc.Server) { fullcallv1.RegisterIngestServiceServer(s, f) })
	return f
}

// Record acknowledges every chunk and reports what arrived at close. Like
// fullcall, it ignores a chunk it has seen and ends the stream on a hole
// in the sequence.
func (f *Fullcall) Record(s fullcallv1.IngestService_RecordServer) error {
	first, err := s.Recv()
	if err != nil {
		return err
	}
	open := first.GetOpen()
	if open == nil {
		return errors.New("first message is not open")
	}
	call := open.Call
	f.mu.Lock()
	refuse, ackedAt, durable := f.Refuse, f.AckedAtOpen, f.Durable
	f.RealtimeAnalysis[call.CallId] = open.RealtimeAnalysis
	f.mu.Unlock()
	frame := uint64(len(call.GetFormat().GetChannels()))
	if call.GetFormat().GetCodec() == callv1.Codec_CODEC_L16 {
		frame *= 2
	}
	if refuse != nil {
		if err := refuse(open); err != nil {
			return err
		}
	}
	var acked uint64
	switch {
	case open.Resume && durable != nil:
		acked = durable.Acked(call.CallId)
	case open.Resume && ackedAt != nil:
		acked = ackedAt(call.CallId)
	}
	if err := s.Send(&fullcallv1.RecordResponse{Msg: &fullcallv1.RecordResponse_Opened{Opened: &fullcallv1.OpenedCall{AckedSeq: acked}}}); err != nil {
		return err
	}
	last := acked
	for {
		req, err := s.Recv()
		if err != nil {
			return err
		}
		switch m := req.Msg.(type) {
		case *fullcallv1.RecordRequest_Chunk:
			// As fullcall does: a chunk seen before is ignored, a hole in
			// the sequence ends the stream.
			if m.Chunk.Seq <= last {
				continue
			}
			if m.Chunk.Seq != last+1 {
				return status.Errorf(codes.InvalidArgument, "chunk %d after %d: chunks %d..%d are missing", m.Chunk.Seq, last, last+1, m.Chunk.Seq-1)
			}
			last = m.Chunk.Seq
			f.mu.Lock()
			f.Received[call.CallId] = append(f.Received[call.CallId], m.Chunk.Seq)
			f.bytes[call.CallId] += uint64(len(m.Chunk.Data))
			if frame > 0 {
				f.pos[call.CallId] = m.Chunk.StartSample + uint64(len(m.Chunk.Data))/frame
			}
			hook := f.OnChunk
			f.mu.Unlock()
			if hook != nil {
				if err := hook(call.CallId, m.Chunk); err != nil {
					return err
				}
			}
			if durable != nil {
				durable.add(call.CallId, m.Chunk.Seq, len(m.Chunk.Data))
			}
			if err := s.Send(&fullcallv1.RecordResponse{Msg: &fullcallv1.RecordResponse_Ack{Ack: &fullcallv1.Ack{Seq: m.Chunk.Seq}}}); err != nil {
				return err
			}
		case *fullcallv1.RecordRequest_Event:
			f.mu.Lock()
			f.Events[call.CallId] = append(f.Events[call.CallId], m.Event)
			f.mu.Unlock()
		case *fullcallv1.RecordRequest_Gap:
			f.mu.Lock()
			f.Gaps[call.CallId] = append(f.Gaps[call.CallId], m.Gap)
			f.mu.Unlock()
		case *fullcallv1.RecordRequest_Analysis:
			f.mu.Lock()
			f.Analyses[call.CallId] = append(f.Analyses[call.CallId], AnalysisAt{Second: m.Analysis.Second, EndSample: m.Analysis.EndSample, Received: f.pos[call.CallId]})
			f.mu.Unlock()
		case *fullcallv1.RecordRequest_Close:
			f.mu.Lock()
			onClose := f.OnClose
			f.mu.Unlock()
			if onClose != nil {
				onClose(call.CallId)
			}
			r := &fullcallv1.Report{
				TenantId:   call.TenantId,
				CallId:     call.CallId,
				AgentId:    call.AgentId,
				DurationS:  float64(m.Close.EndSample) / float64(call.Format.SampleRateHz),
				Chunks:     m.Close.LastSeq,
				EndReason:  m.Close.Reason,
				Incomplete: m.Close.Incomplete,
				Format:     call.Format,
				Labels:     call.Labels,
			}
			f.mu.Lock()
			r.AudioBytes = f.bytes[call.CallId]
			f.mu.Unlock()
			if durable != nil {
				n, b, _ := durable.Held(call.CallId)
				r.Chunks, r.AudioBytes = uint64(n), b
			}
			f.mu.Lock()
			f.Reports[call.CallId] = r
			f.mu.Unlock()
			return s.Send(&fullcallv1.RecordResponse{Msg: &fullcallv1.RecordResponse_Finished{Finished: &fullcallv1.FinishedCall{Report: r}}})
		}
	}
}

// Report returns the report of a call, if any.
func (f *Fullcall) Report(callID string) *fullcallv1.Report {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.Reports[callID]
}

// Seqs returns the chunk sequence numbers received for a call.
func (f *Fullcall) Seqs(callID string) []uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]uint64(nil), f.Received[callID]...)
}

// Configure runs f with the server's lock held: set hooks through it.
func (r *Realtime) Configure(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f()
}

// OpenCalls returns the open messages received.
func (r *Realtime) OpenCalls() []*realtimev1.OpenCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*realtimev1.OpenCall(nil), r.Opens...)
}

// Configure runs fn with the server's lock held: set hooks through it.
func (f *Fullcall) Configure(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}

// CallGaps returns the gaps received for a call.
func (f *Fullcall) CallGaps(callID string) []*callv1.Gap {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*callv1.Gap(nil), f.Gaps[callID]...)
}

// CallEvents returns the events received for a call.
func (f *Fullcall) CallEvents(callID string) []*fullcallv1.CallEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*fullcallv1.CallEvent(nil), f.Events[callID]...)
}
