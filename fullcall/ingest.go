package fullcall

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/calmline/calmline/fullcall/store"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

var (
	sourceAttr  = attribute.Key("source")
	outcomeAttr = attribute.Key("outcome")
	eventAttr   = attribute.Key("event")
)

// Record implements IngestService.Record for one call.
//
// An acknowledgement means durable: a chunk is acknowledged once it is in
// the call's checkpoint in the store, written every CheckpointEvery of
// audio. When the stream breaks, the gateway reopens the call with resume
// set, on this instance or any other sharing the store; the call goes on
// from its checkpoint (OpenedCall.acked_seq) and the gateway replays the
// rest. Every write is fenced on the call's epoch, so an instance that lost
// the call to a resume elsewhere stores nothing more for it.
func (s *Server) Record(stream fullcallv1.IngestService_RecordServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	open := first.GetOpen()
	if open == nil {
		return status.Error(codes.FailedPrecondition, "the first message must be open")
	}
	call := open.GetCall()
	if call.GetTenantId() == "" || call.GetCallId() == "" {
		return status.Error(codes.InvalidArgument, "open: tenant_id and call_id are required")
	}
	trace.SpanFromContext(ctx).SetAttributes(attribute.String("calmline.call_id", call.CallId))
	select {
	case <-s.draining:
		return status.Error(codes.Unavailable, "fullcall instance is draining")
	default:
	}
	if n := s.calls.Add(1); n > int64(s.o.MaxCalls) {
		s.calls.Add(-1)
		return status.Errorf(codes.ResourceExhausted, "fullcall instance at its limit of %d calls", s.o.MaxCalls)
	}
	defer s.calls.Add(-1)
	log := s.log.With("tenant", call.TenantId, "call_id", call.CallId)

	lc := &liveCall{s: s, stream: stream, log: log}
	if open.Resume {
		err = lc.resume(ctx, call)
	} else {
		err = lc.start(ctx, call, open.RealtimeAnalysis)
	}
	if err != nil {
		return err
	}
	opened := &fullcallv1.OpenedCall{AckedSeq: lc.acked, Finished: lc.finished}
	if lc.agg != nil {
		opened.TimelineSample = lc.agg.position()
		for _, a := range lc.agg.alerts {
			opened.AlertEpisodes = max(opened.AlertEpisodes, a.Episode)
		}
	}
	if err := stream.Send(&fullcallv1.RecordResponse{Msg: &fullcallv1.RecordResponse_Opened{Opened: opened}}); err != nil {
		return err
	}
	return lc.run(ctx)
}

// liveCall is one Record stream's call.
type liveCall struct {
	s      *Server
	stream fullcallv1.IngestService_RecordServer
	log    *slog.Logger
	agg    *aggregate
	cp     *store.Checkpoint
	// finished is set when the call's report was already stored (a late
	// resume): only a close is expected.
	finished bool
	lastSeq  uint64
	acked    uint64
	// cpAt is the timeline position of the last checkpoint.
	cpAt uint64
	// chunks and bytes are received audio not yet added to the metrics:
	// they are counted at each checkpoint and when the stream ends, not
	// per chunk, since each update costs.
	chunks, bytes int64
	// seconds are the timeline seconds already counted by source.
	seconds uint64
}

// count adds the audio received and the seconds analysed since the last
// count to the metrics.
func (lc *liveCall) count(ctx context.Context) {
	if lc.chunks > 0 {
		lc.s.m.chunks.Add(ctx, lc.chunks)
		lc.s.m.audioBytes.Add(ctx, lc.bytes)
		lc.chunks, lc.bytes = 0, 0
	}
	if a := lc.agg; a != nil {
		if c := a.cov; c != nil {
			if c.fromRealtime > 0 {
				lc.s.m.secondsAnalysed.Add(ctx, c.fromRealtime, fromRealtime)
			}
			if c.fromSelf > 0 {
				lc.s.m.secondsAnalysed.Add(ctx, c.fromSelf, fromFullcall)
			}
			c.fromRealtime, c.fromSelf = 0, 0
			for i, n := range c.notTaken {
				if n > 0 {
					lc.s.m.analysesNotTaken.Add(ctx, n, metric.WithAttributes(reasonAttr.String(notTakenReasons[i])))
					c.notTaken[i] = 0
				}
			}
		} else if n := a.seconds(); n > lc.seconds {
			lc.s.m.secondsAnalysed.Add(ctx, int64(n-lc.seconds), fromFullcall)
			lc.seconds = n
		}
	}
}

func (lc *liveCall) start(ctx context.Context, call *callv1.Call, realtimeAnalysis bool) error {
	newAgg := newAggregate
	if realtimeAnalysis {
		newAgg = func(call *callv1.Call) (*aggregate, error) { return newLiveAggregate(call, lc.s.o.RealtimeWait) }
	}
	agg, err := newAgg(call)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "open: %v", err)
	}
	lc.agg = agg
	lc.cp = &store.Checkpoint{TenantID: call.TenantId, CallID: call.CallId, Owner: lc.s.id}
	if _, _, _, err := agg.checkpoint(lc.cp, 0); err != nil {
		return status.Errorf(codes.Internal, "open: %v", err)
	}
	if err := lc.s.store.StartCall(ctx, lc.cp); err != nil {
		lc.s.m.storeErrors.Add(ctx, 1)
		return status.Errorf(codes.Unavailable, "open: recording the call: %v", err)
	}
	lc.s.m.calls.Add(ctx, 1, metric.WithAttributes(outcomeAttr.String("started")))
	return nil
}

func (lc *liveCall) resume(ctx context.Context, call *callv1.Call) error {
	s := lc.s
	cp, err := s.store.ResumeCall(ctx, call.TenantId, call.CallId, s.id, time.Time{})
	switch {
	case errors.Is(err, store.ErrNotFound):
		s.m.calls.Add(ctx, 1, metric.WithAttributes(outcomeAttr.String("resume_unknown")))
		return status.Errorf(codes.FailedPrecondition, "call %s: no checkpoint to resume from", call.CallId)
	case err != nil:
		s.m.storeErrors.Add(ctx, 1)
		return status.Errorf(codes.Unavailable, "resuming call %s: %v", call.CallId, err)
	}
	lc.cp, lc.lastSeq, lc.acked = cp, cp.Seq, cp.Seq
	if cp.Finished {
		lc.finished = true
		s.m.calls.Add(ctx, 1, metric.WithAttributes(outcomeAttr.String("resumed_finished")))
		return nil
	}
	segs, err := s.store.Timeline(ctx, cp.TenantID, cp.CallID)
	if err != nil {
		return status.Errorf(codes.Unavailable, "resuming call %s: %v", call.CallId, err)
	}
	lc.agg, err = restoreAggregate(cp, segs, s.o.RealtimeWait)
	if err != nil {
		// Another model version made the checkpoint (a deploy in
		// progress), or it is damaged: the call cannot go on exactly.
		s.m.calls.Add(ctx, 1, metric.WithAttributes(outcomeAttr.String("resume_failed")))
		lc.log.Error("cannot resume the call from its checkpoint", "err", err)
		return status.Errorf(codes.FailedPrecondition, "call %s: cannot resume from its checkpoint: %v", call.CallId, err)
	}
	lc.cpAt = lc.agg.durable()
	lc.seconds = lc.agg.seconds()
	s.m.calls.Add(ctx, 1, metric.WithAttributes(outcomeAttr.String("resumed")))
	lc.log.Info("call resumed from its checkpoint", "seq", cp.Seq, "epoch", cp.Epoch, "timeline_s", float64(lc.cpAt)/float64(lc.agg.format.SampleRate))
	return nil
}

// run receives the call's messages until close (the report stored), a
// broken stream or a drain.
func (lc *liveCall) run(ctx context.Context) error {
	s := lc.s
	every := uint64(s.o.CheckpointEvery.Seconds() * float64(lc.rate()))
	defer lc.count(context.WithoutCancel(ctx))
	for {
		req, err := lc.stream.Recv()
		if err != nil {
			return lc.broken(ctx, err)
		}
		err = lc.handle(ctx, req, every)
		if errors.Is(err, errClosed) {
			return nil
		}
		if err != nil && ctx.Err() != nil && lc.agg != nil && !lc.finished {
			// The stream ended during a write: release the call as a
			// broken stream does, or it would stay held (heartbeats)
			// and never be swept.
			return lc.broken(ctx, err)
		}
		if err != nil {
			return err
		}
		select {
		case <-s.draining:
			// Hand the call over: checkpoint what arrived and tell the
			// gateway to resume it elsewhere.
			if !lc.finished {
				lc.cp.Owner = "" // released: no heartbeat keeps it from the sweep
				lc.agg.settle()
				if err := lc.checkpoint(context.WithoutCancel(ctx), false); err != nil {
					return err
				}
			}
			return status.Error(codes.Unavailable, "fullcall instance is draining; resume the call elsewhere")
		default:
		}
	}
}

var errClosed = errors.New("call closed")

func (lc *liveCall) rate() int {
	if lc.agg == nil {
		return 8000
	}
	return lc.agg.format.SampleRate
}

func (lc *liveCall) handle(ctx context.Context, req *fullcallv1.RecordRequest, every uint64) error {
	s := lc.s
	if lc.finished {
		// The report is stored: only the close (repeated) is expected.
		if cl := req.GetClose(); cl != nil {
			return lc.closeFinished(ctx, cl)
		}
		if c := req.GetChunk(); c != nil && c.Seq <= lc.lastSeq {
			s.m.duplicates.Add(ctx, 1)
			return nil
		}
		if req.GetChunk() != nil {
			return status.Errorf(codes.FailedPrecondition, "call %s is finished; chunk %d came after its last chunk %d", lc.cp.CallID, req.GetChunk().Seq, lc.lastSeq)
		}
		return nil
	}
	switch m := req.Msg.(type) {
	case *fullcallv1.RecordRequest_Chunk:
		c := m.Chunk
		if c.Seq <= lc.lastSeq {
			s.m.duplicates.Add(ctx, 1)
			return nil
		}
		if c.Seq != lc.lastSeq+1 {
			return status.Errorf(codes.InvalidArgument, "chunk %d after %d: chunks %d..%d are missing", c.Seq, lc.lastSeq, lc.lastSeq+1, c.Seq-1)
		}
		if err := lc.agg.addAudio(c.StartSample, c.Data); err != nil {
			return status.Errorf(codes.InvalidArgument, "chunk %d: %v", c.Seq, err)
		}
		lc.chunks++
		lc.bytes += int64(len(c.Data))
		lc.lastSeq = c.Seq
		lc.agg.chunkDone(c.Seq)
		// Checkpoint every CheckpointEvery of audio analysed.
		if lc.agg.checkpointDue(lc.cpAt, every) {
			if err := lc.checkpoint(ctx, true); err != nil {
				return err
			}
		}
	case *fullcallv1.RecordRequest_Analysis:
		lc.agg.analysis(m.Analysis)
		if lc.agg.checkpointDue(lc.cpAt, every) {
			if err := lc.checkpoint(ctx, true); err != nil {
				return err
			}
		}
	case *fullcallv1.RecordRequest_Gap:
		lc.agg.gap(m.Gap)
	case *fullcallv1.RecordRequest_Event:
		lc.agg.event(m.Event)
	case *fullcallv1.RecordRequest_Close:
		return lc.close(ctx, m.Close)
	case *fullcallv1.RecordRequest_Open:
		return status.Error(codes.FailedPrecondition, "open sent twice")
	default:
		return status.Error(codes.InvalidArgument, "empty request")
	}
	return nil
}

// checkpoint makes the call durable up to the last chunk and, with ack,
// acknowledges it.
func (lc *liveCall) checkpoint(ctx context.Context, ack bool) error {
	s := lc.s
	start := time.Now()
	timeline, audio, commit, err := lc.agg.checkpoint(lc.cp, lc.lastSeq)
	if err != nil {
		return status.Errorf(codes.Internal, "checkpoint: %v", err)
	}
	if err := s.store.SaveCheckpoint(ctx, lc.cp, timeline, audio); err != nil {
		return lc.storeFailed(ctx, "checkpoint", err)
	}
	commit()
	lc.cpAt = lc.agg.durable()
	s.m.checkpoints.Add(ctx, 1)
	lc.count(ctx)
	s.m.checkpointTime.Record(ctx, time.Since(start).Seconds())
	// The checkpoint holds the chunks up to lc.cp.Seq: the last one, or
	// (a call built from realtime's analysis) the last one that the seconds
	// taken cover.
	if ack && lc.cp.Seq > lc.acked {
		lc.acked = lc.cp.Seq
		return lc.stream.Send(&fullcallv1.RecordResponse{Msg: &fullcallv1.RecordResponse_Ack{Ack: &fullcallv1.Ack{Seq: lc.acked}}})
	}
	return nil
}

func (lc *liveCall) storeFailed(ctx context.Context, op string, err error) error {
	if errors.Is(err, store.ErrFenced) {
		lc.s.m.fenced.Add(ctx, 1)
		lc.log.Warn("the call was taken over by another stream; this one stops", "op", op)
		return status.Errorf(codes.Aborted, "call %s was resumed elsewhere", lc.cp.CallID)
	}
	if ctx.Err() != nil {
		// The gateway ended the stream (it cancels it to reopen the call,
		// or the call was cut): the write was abandoned, not failed, and
		// a resume continues from the last checkpoint.
		lc.log.Info("stream ended during a store write; the call resumes from its last checkpoint", "op", op)
		return status.FromContextError(ctx.Err()).Err()
	}
	lc.s.m.storeErrors.Add(ctx, 1)
	lc.log.Error("store write failed", "op", op, "err", err)
	return status.Errorf(codes.Unavailable, "%s: the store is unavailable: %v", op, err)
}

// broken handles a stream that ended without close: the gateway is gone or
// will resume the call (here or elsewhere). What arrived since the last
// checkpoint is checkpointed and the call is released, so that a resume
// finds it all — and if no gateway ever comes back, the orphan sweep
// stores what arrived as an incomplete report.
func (lc *liveCall) broken(ctx context.Context, err error) error {
	if errors.Is(err, io.EOF) {
		err = status.Error(codes.InvalidArgument, "stream ended without close")
	}
	if lc.agg == nil || lc.finished {
		return err
	}
	lc.cp.Owner = ""
	lc.agg.settle()
	if cerr := lc.checkpoint(context.WithoutCancel(ctx), false); cerr != nil {
		lc.log.Warn("call stream broke; the last checkpoint stands", "err", err, "checkpoint_err", cerr, "acked_seq", lc.acked)
		return err
	}
	lc.log.Warn("call stream broke before close; checkpointed for a resume", "err", err, "last_seq", lc.lastSeq)
	return err
}

// close finalises the call: the report from the running aggregates and the
// stored timeline, stored with the call marked finished in one fenced
// transaction.
func (lc *liveCall) close(ctx context.Context, cl *fullcallv1.CloseCall) error {
	s := lc.s
	if cl.LastSeq != lc.lastSeq {
		return status.Errorf(codes.InvalidArgument, "close says the last chunk is %d, but %d arrived", cl.LastSeq, lc.lastSeq)
	}
	start := time.Now()
	r, err := s.finish(ctx, lc.agg, lc.cp, lc.lastSeq, cl.EndSample, cl.Reason, cl.Incomplete)
	if err != nil {
		return lc.storeFailed(ctx, "finish", err)
	}
	s.m.finalise.Record(ctx, time.Since(start).Seconds())
	if c := lc.agg.cov; c != nil {
		lc.log.Debug("call finished", "duration_s", r.DurationS, "chunks", r.Chunks, "realtime_seconds", c.fromRealtime)
	} else {
		lc.log.Debug("call finished", "duration_s", r.DurationS, "chunks", r.Chunks)
	}
	if err := lc.stream.Send(&fullcallv1.RecordResponse{Msg: &fullcallv1.RecordResponse_Finished{Finished: &fullcallv1.FinishedCall{Report: r}}}); err != nil {
		return err
	}
	return errClosed
}

// closeFinished answers the close of a call whose report an earlier stream
// stored (the gateway lost the answer) with that report.
func (lc *liveCall) closeFinished(ctx context.Context, cl *fullcallv1.CloseCall) error {
	if cl.LastSeq != lc.lastSeq {
		return status.Errorf(codes.FailedPrecondition, "call %s finished at chunk %d; close says %d", lc.cp.CallID, lc.lastSeq, cl.LastSeq)
	}
	r, err := lc.s.store.GetReport(ctx, lc.cp.TenantID, lc.cp.CallID)
	if err != nil {
		return status.Errorf(codes.Unavailable, "reading the stored report: %v", err)
	}
	if err := lc.stream.Send(&fullcallv1.RecordResponse{Msg: &fullcallv1.RecordResponse_Finished{Finished: &fullcallv1.FinishedCall{Report: r}}}); err != nil {
		return err
	}
	return errClosed
}

// finish builds a live call's report and stores it, fenced on the call's
// epoch; the report goes to escalation's care record afterwards.
func (s *Server) finish(ctx context.Context, agg *aggregate, cp *store.Checkpoint, lastSeq, end uint64, reason fullcallv1.EndReason, incomplete bool) (*fullcallv1.Report, error) {
	var stored []store.Segment
	if agg.segStart > 0 {
		var err error
		if stored, err = s.store.Timeline(ctx, cp.TenantID, cp.CallID); err != nil {
			return nil, err
		}
	}
	r, err := agg.report(stored, end, reason, incomplete, fullcallv1.Source_SOURCE_STREAM)
	if err != nil {
		return nil, fmt.Errorf("building the report: %w", err)
	}
	cp.Seq = lastSeq
	if err := s.store.FinishCall(ctx, cp, agg.audio, r, s.care != nil); err != nil {
		return nil, err
	}
	agg.audio = nil
	s.m.reports.Add(ctx, 1, metric.WithAttributes(sourceAttr.String("stream")))
	if s.care != nil {
		s.care.enqueue(ctx, r)
	}
	if s.stored != nil {
		s.stored <- r
	}
	return r, nil
}
