package escalation

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/calmline/calmline/lib/telemetry"
	"github.com/calmline/calmline/lib/tenant"
	"github.com/calmline/calmline/lib/webhook"
)

// sender makes one delivery attempt; *webhook.Client is the real one.
type sender interface {
	Send(ctx context.Context, r webhook.Request) (webhook.Response, error)
}

// dispatcher runs the outbox: it starts ladder steps when they are due,
// claims due deliveries (in order per call and endpoint), makes one attempt
// each on a bounded set of workers, and records every outcome. The outbox
// itself is the queue: deliveries wait in the database, never in memory,
// so the only in-memory bound is the number of attempts in flight.
type dispatcher struct {
	st      *store
	send    sender
	log     *slog.Logger
	m       *metrics
	workers int
	poll    time.Duration
	// drain bounds how long attempts in flight may finish once a stop
	// begins; after it they are cut and returned to the queue.
	drain time.Duration

	wake  chan struct{} // capacity 1: a pending wake-up is enough
	slots chan struct{} // one per attempt in flight, freed once its outcome is recorded
	wg    sync.WaitGroup
	// results carries outcomes to the recorder; its capacity is the
	// number of workers, and each attempt sends one, so it never blocks.
	results chan attemptResult

	// rand returns a uniform number in [0, 1) for jitter.
	rand func() float64
}

// notify wakes the dispatcher without blocking.
func (d *dispatcher) notify() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// run works until ctx ends, then lets attempts in flight finish within
// the drain bound and records their outcomes.
func (d *dispatcher) run(ctx context.Context) {
	attemptCtx, cut := context.WithCancel(context.WithoutCancel(ctx))
	recorded := make(chan struct{})
	go func() {
		defer close(recorded)
		d.record(context.WithoutCancel(ctx))
	}()
	defer func() {
		done := make(chan struct{})
		go func() { d.wg.Wait(); close(done) }()
		t := time.NewTimer(d.drain)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			cut()
			<-done
		}
		cut()
		close(d.results)
		<-recorded
	}()
	for {
		if ctx.Err() != nil {
			return
		}
		d.advanceDue(ctx)
		d.claimAndStart(ctx, attemptCtx)
		wait := d.poll
		if next, err := d.st.nextDue(ctx); err == nil && !next.IsZero() {
			wait = min(wait, max(time.Until(next), time.Millisecond))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-d.wake:
			t.Stop()
		case <-t.C:
		}
	}
}

// advanceDue starts (or skips) the ladder steps whose time has come.
func (d *dispatcher) advanceDue(ctx context.Context) {
	rows, err := d.st.query(ctx, `SELECT DISTINCT e.tenant_id, e.id FROM escalation_steps s
JOIN escalations e ON e.id = s.escalation_id WHERE s.state = ? AND s.due_at <= ? LIMIT 500`, stepPending, d.st.now().UnixMilli())
	if err != nil {
		if ctx.Err() == nil {
			d.log.Error("reading due ladder steps failed", "err", err)
		}
		return
	}
	type key struct{ tenant, id string }
	var due []key
	for rows.Next() {
		var k key
		if err := rows.Scan(&k.tenant, &k.id); err == nil {
			due = append(due, k)
		}
	}
	rows.Close()
	for _, k := range due {
		err := d.st.inTx(ctx, func(t *txn) error {
			e, err := t.getEsc(k.tenant, k.id)
			if err != nil {
				return err
			}
			return t.advance(e)
		})
		if err != nil && ctx.Err() == nil {
			d.log.Error("advancing the ladder failed", "escalation_id", k.id, "err", err)
		}
	}
}

// claimAndStart fills the free worker slots with due deliveries.
func (d *dispatcher) claimAndStart(ctx, attemptCtx context.Context) {
	free := d.workers - len(d.slots)
	if free <= 0 {
		return
	}
	ds, err := d.st.claim(ctx, free, maxLease)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Error("claiming deliveries failed", "err", err)
		}
		return
	}
	for _, dl := range ds {
		d.slots <- struct{}{} // never blocks: at most free were claimed
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.results <- attemptResult{dl, d.attempt(attemptCtx, dl)}
		}()
	}
}

// maxLease bounds an attempt (the longest endpoint timeout, 5 min) plus a
// margin: past it another instance may take the delivery over.
const maxLease = 5*time.Minute + 30*time.Second

// maxGroup bounds the outcomes recorded in one transaction.
const maxGroup = 64

// record writes outcomes as they come, each time with whatever else is
// waiting, in one transaction, until results is closed; each outcome's
// worker slot is freed once it is written.
func (d *dispatcher) record(ctx context.Context) {
	for r := range d.results {
		group := []attemptResult{r}
	more:
		for len(group) < maxGroup {
			select {
			case r, ok := <-d.results:
				if !ok {
					break more
				}
				group = append(group, r)
			default:
				break more
			}
		}
		if err := d.st.complete(ctx, group); err != nil && len(group) > 1 {
			// One bad record must not hold the others back: each alone.
			for _, r := range group {
				d.completeOne(ctx, r)
			}
		} else if err != nil {
			d.logRecordError(group[0], err)
		}
		for _, r := range group {
			d.logOutcome(r)
			<-d.slots
		}
		d.notify()
	}
}

func (d *dispatcher) completeOne(ctx context.Context, r attemptResult) {
	if err := d.st.complete(ctx, []attemptResult{r}); err != nil {
		d.logRecordError(r, err)
	}
}

// logRecordError reports an outcome that could not be written. Its lease
// runs out and the delivery is tried again: the receiver de-duplicates by
// its id.
func (d *dispatcher) logRecordError(r attemptResult, err error) {
	d.log.Error("recording a delivery attempt failed", "delivery_id", r.d.ID, "err", err)
}

func (d *dispatcher) logOutcome(r attemptResult) {
	dl, o := r.d, r.o
	switch {
	case o.dead:
		d.log.Warn("delivery dead-lettered", "delivery_id", dl.ID, "tenant", dl.TenantID, "endpoint", dl.Endpoint,
			"type", dl.EventType, "attempts", dl.Attempts+1, "err", o.errText)
	case !o.ok && !o.release:
		d.log.Info("delivery attempt failed; retrying", "delivery_id", dl.ID, "endpoint", dl.Endpoint, "attempt", dl.Attempts+1,
			"next", o.next.Format(time.RFC3339Nano), "err", o.errText)
	}
}

// attempt makes one attempt of a delivery and decides what follows.
func (d *dispatcher) attempt(ctx context.Context, dl *delivery) outcome {
	ten := d.st.tenant(dl.TenantID)
	ep, ok := ten.Escalation.Endpoint(dl.Endpoint)
	started := d.st.now()
	// The attempt is a span of the call's trace, under its ladder step
	// (or the escalation, for an event), as stored with the delivery:
	// after a restart too.
	ctx, span := d.st.trace.tracer.Start(d.st.trace.extract(ctx, dl.TraceContext), spanAttempt,
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String(telemetry.CallIDKey, dl.CallID), attribute.String(attrEscalationID, dl.EscalationID),
			attribute.String(attrDeliveryID, dl.ID), attribute.String(attrEndpoint, dl.Endpoint), attribute.String(attrEventType, dl.EventType),
			attribute.Int(attrAttempt, dl.Attempts+1)))
	defer span.End()
	if dl.StepName != "" {
		span.SetAttributes(attribute.String(attrStep, dl.StepName))
	}
	if dl.Attempts == 0 {
		d.m.firstAttemptDelay.Record(ctx, started.Sub(time.UnixMilli(dl.CreatedAt)).Seconds(),
			metric.WithAttributes(attribute.String("type", dl.EventType)))
	}
	o := outcome{started: started}
	var retryAfter time.Duration
	var final bool
	if !ok {
		o.errText, final = "endpoint "+dl.Endpoint+" is no longer in the tenants file", true
	} else if req, err := buildRequest(ep, dl); err != nil {
		// A secret that cannot be read is a configuration problem that
		// someone will fix: retry on the schedule.
		o.errText = err.Error()
	} else {
		req.Header = traceHeader(ctx)
		sendCtx := ctx
		if ep.AllowLinkLocal {
			sendCtx = webhook.AllowLinkLocal(ctx)
		}
		resp, err := d.send.Send(sendCtx, req)
		var we *webhook.Error
		switch {
		case err == nil:
			o.ok, o.status = true, resp.Status
		case errors.As(err, &we):
			if we.Reason == webhook.ReasonCanceled {
				o.release = true
			}
			o.status, o.errText, retryAfter, final = we.Status, we.Error(), we.RetryAfter, !we.Retryable()
		default:
			o.errText = err.Error()
		}
	}
	result := "succeeded"
	switch {
	case o.ok, o.release:
		if o.release {
			result = "released"
		}
	case final:
		o.dead, result = true, "dead_final"
	default:
		b := backoffOf(ten.Escalation.RetryFor(ep))
		next, more := b.Next(dl.Attempts+1, time.UnixMilli(dl.WindowStart), d.st.now(), retryAfter, d.rand())
		if more {
			o.next, result = next, "retry"
		} else {
			o.dead, result = true, "dead_exhausted"
		}
	}
	d.m.attempts.Add(ctx, 1, metric.WithAttributes(attribute.String("type", dl.EventType), attribute.String("result", result)))
	span.SetAttributes(attribute.String(attrOutcome, result))
	if o.status != 0 {
		span.SetAttributes(attribute.Int(attrStatus, o.status))
	}
	if !o.ok && !o.release {
		span.SetStatus(codes.Error, o.errText)
	}
	return o
}

func backoffOf(r tenant.Retry) webhook.Backoff {
	return webhook.Backoff{Initial: r.Initial, Multiplier: r.Multiplier, MaxInterval: r.MaxInterval, GiveUpAfter: r.GiveUpAfter, MaxAttempts: r.MaxAttempts}
}

// buildRequest resolves the endpoint's secrets for one attempt. Secrets
// are read at each attempt, so that a rotated secret file takes effect
// without a restart; errors name the reference, never the value.
func buildRequest(ep *tenant.Endpoint, dl *delivery) (webhook.Request, error) {
	req := webhook.Request{URL: ep.URL, ID: dl.ID, Body: []byte(dl.Payload), Timeout: ep.Timeout}
	for _, ref := range ep.SigningSecrets {
		v, err := ref.Resolve()
		if err != nil {
			return req, err
		}
		s, err := webhook.ParseSecret(v)
		if err != nil {
			return req, errors.New("signing secret " + ref.String() + ": " + err.Error())
		}
		req.Secrets = append(req.Secrets, s)
	}
	if ep.BearerToken != nil {
		v, err := ep.BearerToken.Resolve()
		if err != nil {
			return req, err
		}
		req.BearerToken = v
	}
	return req, nil
}

func uniform() float64 { return rand.Float64() }
