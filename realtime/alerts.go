package realtime

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"

	"go.opentelemetry.io/otel/metric"

	escalationv1 "github.com/calmline/calmline/proto/calmline/escalation/v1"
)

// alertQueueSize bounds the alerts waiting for escalation. Alerts are rare
// (one per episode), so a full queue means escalation has been down for a
// long time; the overflow is counted and logged as an error, never silent.
const alertQueueSize = 4096

// poster delivers alerts to escalation, retrying with backoff until
// escalation has them durably.
type poster struct {
	client  escalationv1.AlertServiceClient
	log     *slog.Logger
	queue   chan *escalationv1.Alert
	posted  metric.Int64Counter
	dropped metric.Int64Counter
	retries metric.Int64Counter
}

// enqueue hands an alert to the poster without blocking the call.
func (p *poster) enqueue(ctx context.Context, a *escalationv1.Alert) {
	select {
	case p.queue <- a:
	default:
		p.dropped.Add(ctx, 1)
		p.log.Error("alert queue full; alert not delivered to escalation",
			"alert_id", a.GetEvent().GetAlertId(), "tenant", a.TenantId, "call_id", a.CallId)
	}
}

// run posts alerts until ctx ends, then gives the queue a last try within
// flush.
func (p *poster) run(ctx context.Context, flush time.Duration) {
	for {
		select {
		case a := <-p.queue:
			p.post(ctx, a)
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flush)
			defer cancel()
			for {
				select {
				case a := <-p.queue:
					p.post(fctx, a)
				default:
					return
				}
			}
		}
	}
}

func (p *poster) post(ctx context.Context, a *escalationv1.Alert) {
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := p.client.PostAlerts(actx, &escalationv1.PostAlertsRequest{Alerts: []*escalationv1.Alert{a}})
		cancel()
		if err == nil {
			p.posted.Add(ctx, 1)
			return
		}
		if ctx.Err() != nil {
			p.dropped.Add(context.WithoutCancel(ctx), 1)
			p.log.Error("alert not delivered to escalation before shutdown",
				"alert_id", a.GetEvent().GetAlertId(), "attempts", attempt, "err", err)
			return
		}
		p.retries.Add(ctx, 1)
		p.log.Warn("posting alert to escalation failed; retrying",
			"alert_id", a.GetEvent().GetAlertId(), "attempt", attempt, "err", err)
		// Full jitter keeps many realtime instances from retrying in step.
		wait := time.Duration(rand.Int64N(int64(backoff))) + backoff/2
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}
