package realtime

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/calmline/calmline/lib/analysis"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	escalationv1 "github.com/calmline/calmline/proto/calmline/escalation/v1"
	realtimev1 "github.com/calmline/calmline/proto/calmline/realtime/v1"
)

var (
	reasonAttr    = attribute.Key("reason")
	stateAttr     = attribute.Key("state")
	errDraining   = status.Error(codes.Unavailable, "realtime instance draining; reopen the call elsewhere")
	errNeedsOpen  = status.Error(codes.FailedPrecondition, "the first message must be open")
	errOpenTwice  = status.Error(codes.FailedPrecondition, "open sent twice")
	errTooManyFmt = "realtime instance at its limit of %d calls"
)

// Analyze implements RealtimeService.Analyze for one call.
func (s *Server) Analyze(stream realtimev1.RealtimeService_AnalyzeServer) error {
	ctx := stream.Context()
	select {
	case <-s.draining:
		s.m.refused.Add(ctx, 1, metric.WithAttributes(reasonAttr.String("draining")))
		return errDraining
	default:
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	open := first.GetOpen()
	if open == nil {
		return errNeedsOpen
	}
	call := open.GetCall()
	if call.GetTenantId() == "" || call.GetCallId() == "" {
		return status.Error(codes.InvalidArgument, "open: tenant_id and call_id are required")
	}
	trace.SpanFromContext(ctx).SetAttributes(attribute.String("calmline.call_id", call.CallId))
	// A call that continues from another instance starts its analysis at
	// the resume point: the timeline before it is a gap for this instance,
	// not audio to analyse as silence.
	an, format, err := analysis.NewAt(call, open.ResumeSample, nil)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "open: %v", err)
	}
	if n := s.calls.Add(1); n > int64(s.o.MaxCalls) {
		s.calls.Add(-1)
		s.m.refused.Add(ctx, 1, metric.WithAttributes(reasonAttr.String("max_calls")))
		return status.Errorf(codes.ResourceExhausted, errTooManyFmt, s.o.MaxCalls)
	}
	defer s.calls.Add(-1)
	s.m.calls.Add(ctx, 1)

	c := &liveCall{
		s:          s,
		stream:     stream,
		call:       call,
		an:         an,
		resume:     open.ResumeSample,
		frameBytes: uint64(format.FrameBytes()),
		log:        s.log.With("tenant", call.TenantId, "call_id", call.CallId),
	}
	for _, r := range callRules(call) {
		// Episode numbers continue from the highest any rule reached on
		// another instance: ids stay unique per rule, perhaps skipping
		// numbers.
		c.rules = append(c.rules, newRule(r, call.TenantId, call.CallId, open.AlertEpisodes))
	}
	c.log.Debug("call opened", "resume_sample", c.resume, "format", format, "alert_rules", len(c.rules))
	return c.loop(ctx)
}

// liveCall is one call's state on this instance, owned by its stream's
// goroutine.
type liveCall struct {
	s      *Server
	stream realtimev1.RealtimeService_AnalyzeServer
	call   *callv1.Call
	an     *analysis.Analyzer
	// rules are the tenant's alert rules that match the call's labels.
	rules  []*rule
	resume uint64
	// frameBytes is the size of one interleaved sample frame.
	frameBytes uint64
	log        *slog.Logger
	// bytes and analysisNs are not yet added to the metrics: they are
	// counted once per scored second and when the stream ends, not per
	// chunk, since each update costs.
	bytes, analysisNs int64
}

// count adds what was received and analysed since the last count to the
// metrics.
func (c *liveCall) count(ctx context.Context) {
	if c.bytes > 0 || c.analysisNs > 0 {
		c.s.m.audioBytes.Add(ctx, c.bytes)
		c.s.m.analysisTime.Add(ctx, time.Duration(c.analysisNs).Seconds())
		c.bytes, c.analysisNs = 0, 0
	}
}

func (c *liveCall) loop(ctx context.Context) error {
	defer c.count(context.WithoutCancel(ctx))
	for {
		req, err := c.stream.Recv()
		if errors.Is(err, io.EOF) {
			// The gateway went away without close: nothing to flush to.
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case <-c.s.draining:
			return errDraining
		default:
		}
		switch m := req.Msg.(type) {
		case *realtimev1.AnalyzeRequest_Chunk:
			if err := c.chunk(ctx, m.Chunk); err != nil {
				return err
			}
		case *realtimev1.AnalyzeRequest_Gap:
			c.gap(m.Gap)
		case *realtimev1.AnalyzeRequest_Close:
			if err := c.emit(ctx, c.an.Flush()); err != nil {
				return err
			}
			c.log.Debug("call closed")
			return nil
		case *realtimev1.AnalyzeRequest_Open:
			return errOpenTwice
		default:
			return status.Error(codes.InvalidArgument, "empty request")
		}
	}
}

func (c *liveCall) chunk(ctx context.Context, ch *callv1.AudioChunk) error {
	data := ch.GetData()
	fb := c.frameBytes
	if uint64(len(data))%fb != 0 {
		return status.Errorf(codes.InvalidArgument, "chunk %d: %d bytes is not a whole number of %d-byte sample frames", ch.Seq, len(data), fb)
	}
	c.bytes += int64(len(data))
	pos := c.an.Timeline()
	switch {
	case ch.StartSample > pos:
		// Audio dropped upstream (the gateway's drop-oldest queue) or a
		// client gap: advance the timeline so scores stay on time.
		c.an.Gap(ch.StartSample - pos)
	case ch.StartSample < pos:
		// Overlaps audio already analysed (a replay after failover):
		// analyse only the new part.
		skip := (pos - ch.StartSample) * fb
		c.s.m.timelineSkips.Add(ctx, int64(min(skip, uint64(len(data)))))
		if skip >= uint64(len(data)) {
			return nil
		}
		data = data[skip:]
	}
	start := time.Now()
	c.an.Write(data)
	c.analysisNs += int64(time.Since(start))
	secs := c.an.Seconds()
	if len(secs) > 0 {
		c.count(ctx)
	}
	return c.emit(ctx, secs)
}

// gap advances the timeline to the gap's end; a gap that ends before the
// current position changes nothing.
func (c *liveCall) gap(g *callv1.Gap) {
	if end, pos := g.StartSample+g.Samples, c.an.Timeline(); end > pos {
		c.an.Gap(end - pos)
	}
}

// emit sends the completed seconds and any alert events they cause.
func (c *liveCall) emit(ctx context.Context, secs []analysis.Second) error {
	for _, sec := range secs {
		if sec.EndSample <= c.resume {
			continue
		}
		c.s.m.seconds.Add(ctx, 1)
		u := analysis.ScoreUpdate(c.call.CallId, sec)
		// The second's analysis goes beside its score, for fullcall's
		// report (through the gateway): the audio is analysed once.
		if err := c.stream.Send(&realtimev1.AnalyzeResponse{Msg: &realtimev1.AnalyzeResponse_Score{Score: u}, Analysis: analysis.SecondAnalysis(sec)}); err != nil {
			return err
		}
		for _, ru := range c.rules {
			if err := c.observe(ctx, ru, sec); err != nil {
				return err
			}
		}
	}
	return nil
}

// observe feeds one second to one rule and sends the alert event it
// causes, if any, to escalation and the gateway.
func (c *liveCall) observe(ctx context.Context, ru *rule, sec analysis.Second) error {
	var value float64
	var ok bool
	switch ru.score() {
	case callv1.ScoreKind_SCORE_KIND_AGENT_STRESS:
		value, ok = sec.AgentStress.Value, sec.AgentStress.OK
	default:
		value, ok = sec.CallerPressure.Value, sec.CallerPressure.OK
	}
	ev := ru.observe(sec.Index, value, ok)
	if ev == nil {
		return nil
	}
	ev.At = timestamppb.Now()
	// The alert is a span of the call's trace; its post to escalation
	// (asynchronous) continues from it.
	actx, span := c.s.tracer.Start(ctx, "alert", trace.WithAttributes(attribute.String("calmline.call_id", c.call.CallId),
		attribute.String("calmline.alert_id", ev.AlertId), attribute.String("calmline.alert_state", ev.State.String()),
		attribute.Float64("calmline.value", ev.Value)))
	span.End()
	c.s.m.alerts.Add(ctx, 1, metric.WithAttributes(stateAttr.String(ev.State.String())))
	// An alert is the service doing its job, not a fault of the service:
	// INFO, so that a WARN in the log always means one.
	c.log.Info("alert", "alert_id", ev.AlertId, "state", ev.State.String(), "value", ev.Value)
	if c.s.poster != nil {
		c.s.poster.enqueue(actx, &escalationv1.Alert{
			TenantId: c.call.TenantId,
			CallId:   c.call.CallId,
			AgentId:  c.call.AgentId,
			Event:    ev,
			Labels:   c.call.Labels,
		})
	}
	if err := c.stream.Send(&realtimev1.AnalyzeResponse{Msg: &realtimev1.AnalyzeResponse_Alert{Alert: ev}}); err != nil {
		return err
	}
	return nil
}
