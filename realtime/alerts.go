package realtime

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/calmline/calmline/lib/backoff"
	"github.com/calmline/calmline/lib/telemetry"
	escalationv1 "github.com/calmline/calmline/proto/calmline/escalation/v1"
)

// alertQueueSize bounds the alerts waiting for escalation. Alerts are rare
// (one per episode), so a full queue means escalation has been down for a
// long time; the overflow is counted and logged as an error, never silent.
const alertQueueSize = 4096

// maxBatch bounds the alerts of one PostAlerts request: escalation writes a
// batch in one transaction, so a burst (many calls crossing at once, or a
// backlog after escalation was down) costs few round trips and commits.
const maxBatch = 64

// Drop reasons of calmline.realtime.alerts.dropped.
const (
	dropQueueFull = "queue_full" // the queue was full when the alert came
	dropShutdown  = "shutdown"   // escalation did not take it before the stop's flush ended
	dropRejected  = "rejected"   // escalation refused it as invalid: retrying cannot help
)

// alertDropReasons are the reason label's values of calmline_realtime_alerts_dropped_total.
var alertDropReasons = []string{dropQueueFull, dropShutdown, dropRejected}

// poster delivers alerts to escalation, in order, retrying with backoff
// until escalation has them durably.
type poster struct {
	// tracer, when set, puts each post in the trace of the alert it
	// carries (the first of a batch; the others are linked), so that the
	// call's trace goes on into escalation.
	tracer trace.Tracer
	// traces holds each queued alert's span context, until it is posted.
	traces  sync.Map // *escalationv1.Alert -> trace.SpanContext
	client  escalationv1.AlertServiceClient
	log     *slog.Logger
	queue   chan *escalationv1.Alert
	posted  metric.Int64Counter
	dropped metric.Int64Counter
	retries metric.Int64Counter
	// maxBackoff caps the delay between attempts (default 10 s).
	maxBackoff time.Duration
}

// enqueue hands an alert to the poster without blocking the call.
func (p *poster) enqueue(ctx context.Context, a *escalationv1.Alert) {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		p.traces.Store(a, sc)
	}
	select {
	case p.queue <- a:
	default:
		p.traces.Delete(a)
		p.drop(ctx, dropQueueFull, 1)
		p.log.Error("alert queue full; alert not delivered to escalation",
			"alert_id", a.GetEvent().GetAlertId(), "tenant", a.TenantId, "call_id", a.CallId)
	}
}

func (p *poster) drop(ctx context.Context, reason string, n int) {
	p.dropped.Add(context.WithoutCancel(ctx), int64(n), metric.WithAttributes(attribute.String("reason", reason)))
}

// run posts alerts until ctx ends, then gives what is left (the batch cut
// short by the stop, and the queue) a last try within flush.
func (p *poster) run(ctx context.Context, flush time.Duration) {
	var left []*escalationv1.Alert
	for left == nil {
		select {
		case a := <-p.queue:
			left = p.post(ctx, p.batch(a))
		case <-ctx.Done():
			left = []*escalationv1.Alert{}
		}
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flush)
	defer cancel()
	for {
		if left = p.post(fctx, left); len(left) > 0 {
			p.drop(ctx, dropShutdown, len(left))
			p.log.Error("alerts not delivered to escalation before shutdown",
				"alerts", len(left), "first_alert_id", left[0].GetEvent().GetAlertId())
		}
		select {
		case a := <-p.queue:
			left = p.batch(a)
		default:
			return
		}
	}
}

// batch takes first and whatever else is queued, up to maxBatch.
func (p *poster) batch(first *escalationv1.Alert) []*escalationv1.Alert {
	b := []*escalationv1.Alert{first}
	for len(b) < maxBatch {
		select {
		case a := <-p.queue:
			b = append(b, a)
		default:
			return b
		}
	}
	return b
}

// retryable says whether escalation's answer is worth another attempt: the
// callee decides. An invalid alert stays invalid; everything else
// (unavailable, deadline, outbox full, ...) may pass later.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.PermissionDenied, codes.Unimplemented:
		return false
	}
	return true
}

// post posts a batch until escalation has it (or rejects it); when ctx
// ends first it returns the alerts still to post.
func (p *poster) post(ctx context.Context, alerts []*escalationv1.Alert) []*escalationv1.Alert {
	if len(alerts) == 0 {
		return nil
	}
	if p.tracer != nil {
		var parent trace.SpanContext
		var links []trace.Link
		for _, a := range alerts {
			v, ok := p.traces.LoadAndDelete(a)
			if !ok {
				continue
			}
			if sc := v.(trace.SpanContext); !parent.IsValid() {
				parent = sc
			} else {
				links = append(links, trace.Link{SpanContext: sc})
			}
		}
		if parent.IsValid() {
			// Asynchronous to the call: a new span in the alert's trace.
			var span trace.Span
			ctx, span = p.tracer.Start(telemetry.WithCallID(trace.ContextWithRemoteSpanContext(ctx, parent), alerts[0].CallId), "post alerts", trace.WithLinks(links...),
				trace.WithAttributes(attribute.Int("calmline.alerts", len(alerts)), attribute.String("calmline.call_id", alerts[0].CallId)))
			defer span.End()
		}
	}
	maxBackoff := p.maxBackoff
	if maxBackoff <= 0 {
		maxBackoff = 10 * time.Second
	}
	// Jitter keeps many realtime instances from retrying in step.
	retry := backoff.New(backoff.Policy{Initial: 100 * time.Millisecond, Max: maxBackoff}, nil)
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := p.client.PostAlerts(actx, &escalationv1.PostAlertsRequest{Alerts: alerts})
		cancel()
		if err == nil {
			p.posted.Add(ctx, int64(len(alerts)))
			return nil
		}
		if !retryable(err) {
			if len(alerts) > 1 {
				// One bad alert must not take the others with it.
				for i, a := range alerts {
					if rest := p.post(ctx, []*escalationv1.Alert{a}); rest != nil {
						return alerts[i:]
					}
				}
				return nil
			}
			p.drop(ctx, dropRejected, 1)
			p.log.Error("escalation rejected an alert; not retrying",
				"alert_id", alerts[0].GetEvent().GetAlertId(), "err", err)
			return nil
		}
		if ctx.Err() != nil {
			return alerts
		}
		p.retries.Add(ctx, 1)
		p.log.Warn("posting alerts to escalation failed; retrying",
			"alerts", len(alerts), "first_alert_id", alerts[0].GetEvent().GetAlertId(), "attempt", attempt, "err", err)
		retry.Wait(ctx) // a cancelled ctx returns the alerts above
	}
}
