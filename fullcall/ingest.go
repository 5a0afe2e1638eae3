package fullcall

import (
	"context"
	"errors"
	"io"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

var sourceAttr = attribute.Key("source")

// Record implements IngestService.Record for one call.
//
// Until durable checkpoints exist, an acknowledgement means the chunk is in
// this instance's running aggregates, and a resume (open with resume set)
// is refused with FAILED_PRECONDITION: the gateway then ends the call as
// incomplete rather than pretend the audio is safe.
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
	if open.Resume {
		return status.Errorf(codes.FailedPrecondition, "call %s: no checkpoint to resume from", call.CallId)
	}
	agg, err := newAggregate(call)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "open: %v", err)
	}
	if n := s.calls.Add(1); n > int64(s.o.MaxCalls) {
		s.calls.Add(-1)
		return status.Errorf(codes.ResourceExhausted, "fullcall instance at its limit of %d calls", s.o.MaxCalls)
	}
	defer s.calls.Add(-1)
	s.m.calls.Add(ctx, 1)
	log := s.log.With("tenant", call.TenantId, "call_id", call.CallId)
	if err := stream.Send(&fullcallv1.RecordResponse{Msg: &fullcallv1.RecordResponse_Opened{Opened: &fullcallv1.OpenedCall{}}}); err != nil {
		return err
	}

	var lastSeq, acked uint64
	ack := func() error {
		if lastSeq == acked {
			return nil
		}
		acked = lastSeq
		return stream.Send(&fullcallv1.RecordResponse{Msg: &fullcallv1.RecordResponse_Ack{Ack: &fullcallv1.Ack{Seq: lastSeq}}})
	}
	for {
		req, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = status.Error(codes.InvalidArgument, "stream ended without close")
			}
			// The gateway is gone without closing the call: keep what
			// arrived, marked incomplete, so that nothing acknowledged is
			// lost.
			s.finish(context.WithoutCancel(ctx), agg, agg.an.Timeline(), fullcallv1.EndReason_END_REASON_DISCONNECTED, true)
			log.Warn("call stream broke before close; stored what arrived", "err", err, "last_seq", lastSeq)
			return err
		}
		switch m := req.Msg.(type) {
		case *fullcallv1.RecordRequest_Chunk:
			c := m.Chunk
			if c.Seq <= lastSeq {
				s.m.duplicates.Add(ctx, 1)
				continue
			}
			if c.Seq != lastSeq+1 {
				return status.Errorf(codes.InvalidArgument, "chunk %d after %d: chunks %d..%d are missing", c.Seq, lastSeq, lastSeq+1, c.Seq-1)
			}
			if err := agg.audio(c.StartSample, c.Data); err != nil {
				return status.Errorf(codes.InvalidArgument, "chunk %d: %v", c.Seq, err)
			}
			s.m.chunks.Add(ctx, 1)
			s.m.audioBytes.Add(ctx, int64(len(c.Data)))
			lastSeq = c.Seq
			if lastSeq-acked >= uint64(s.o.AckEvery) {
				if err := ack(); err != nil {
					return err
				}
			}
		case *fullcallv1.RecordRequest_Gap:
			agg.gap(m.Gap)
			if err := ack(); err != nil {
				return err
			}
		case *fullcallv1.RecordRequest_Event:
			agg.event(m.Event)
		case *fullcallv1.RecordRequest_Close:
			cl := m.Close
			if cl.LastSeq != lastSeq {
				return status.Errorf(codes.InvalidArgument, "close says the last chunk is %d, but %d arrived", cl.LastSeq, lastSeq)
			}
			if err := ack(); err != nil {
				return err
			}
			start := time.Now()
			r, err := s.finish(ctx, agg, cl.EndSample, cl.Reason, cl.Incomplete)
			if err != nil {
				return status.Errorf(codes.Unavailable, "storing the report: %v", err)
			}
			s.m.finalise.Record(ctx, time.Since(start).Seconds())
			log.Debug("call finished", "duration_s", r.DurationS, "chunks", r.Chunks)
			return stream.Send(&fullcallv1.RecordResponse{Msg: &fullcallv1.RecordResponse_Finished{Finished: &fullcallv1.FinishedCall{Report: r}}})
		case *fullcallv1.RecordRequest_Open:
			return status.Error(codes.FailedPrecondition, "open sent twice")
		default:
			return status.Error(codes.InvalidArgument, "empty request")
		}
	}
}

// finish builds and stores a live call's report.
func (s *Server) finish(ctx context.Context, agg *aggregate, end uint64, reason fullcallv1.EndReason, incomplete bool) (*fullcallv1.Report, error) {
	r := agg.report(end, reason, incomplete, fullcallv1.Source_SOURCE_STREAM)
	if err := s.store.PutReport(ctx, r); err != nil {
		s.m.storeErrors.Add(ctx, 1)
		s.log.Error("storing report failed", "tenant", r.TenantId, "call_id", r.CallId, "err", err)
		return nil, err
	}
	s.m.reports.Add(ctx, 1, metric.WithAttributes(sourceAttr.String("stream")))
	if s.stored != nil {
		s.stored <- r
	}
	return r, nil
}
