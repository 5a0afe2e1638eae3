package escalation

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

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
	slots chan struct{} // one per attempt in flight
	wg    sync.WaitGroup

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
// the drain bound.
func (d *dispatcher) run(ctx context.Context) {
	attemptCtx, cut := context.WithCancel(context.WithoutCancel(ctx))
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
	rows, err := d.st.db.QueryContext(ctx, d.st.db.Rebind(`SELECT DISTINCT e.tenant_id, e.id FROM escalation_steps s
JOIN escalations e ON e.id = s.escalation_id WHERE s.state = ? AND s.due_at <= ? LIMIT 500`), stepPending, d.st.now().UnixMilli())
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
			defer func() { <-d.slots; d.notify() }()
			d.attempt(attemptCtx, dl)
		}()
	}
}

// maxLease bounds an attempt (the longest endpoint timeout, 5 min) plus a
// margin: past it another instance may take the delivery over.
const maxLease = 5*time.Minute + 30*time.Second

// attempt makes one attempt of a delivery and records the outcome.
func (d *dispatcher) attempt(ctx context.Context, dl *delivery) {
	ten := d.st.tenant(dl.TenantID)
	ep, ok := ten.Escalation.Endpoint(dl.Endpoint)
	started := d.st.now()
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
		resp, err := d.send.Send(ctx, req)
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
	if err := d.st.complete(context.WithoutCancel(ctx), dl, o); err != nil {
		// The lease runs out and the delivery is tried again: the
		// receiver de-duplicates by its id.
		d.log.Error("recording a delivery attempt failed", "delivery_id", dl.ID, "err", err)
		return
	}
	switch result {
	case "dead_final", "dead_exhausted":
		d.log.Warn("delivery dead-lettered", "delivery_id", dl.ID, "tenant", dl.TenantID, "endpoint", dl.Endpoint,
			"type", dl.EventType, "attempts", dl.Attempts, "err", o.errText)
	case "retry":
		d.log.Info("delivery attempt failed; retrying", "delivery_id", dl.ID, "endpoint", dl.Endpoint, "attempt", dl.Attempts,
			"next", o.next.Format(time.RFC3339Nano), "err", o.errText)
	}
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
