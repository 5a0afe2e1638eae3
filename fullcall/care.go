package fullcall

import (
	"context"
	"log/slog"
	"time"

	"github.com/calmline/calmline/fullcall/store"
	"github.com/calmline/calmline/lib/backoff"
	escalationv1 "github.com/calmline/calmline/proto/calmline/escalation/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// careQueueSize bounds the finished calls waiting for escalation's care
// record. Overflow policy: drop from the queue and count — the report stays
// marked pending in the store, and the periodic resend picks it up once the
// queue has room, so a full queue delays the care record, never loses it.
const careQueueSize = 1024

// careResendEvery is how often reports still pending (dropped from a full
// queue, or queued by an instance that died) are looked for; careGrace is
// how old they must be, so that a call still in the queue is not sent twice.
const (
	careResendEvery = 30 * time.Second
	careGrace       = time.Minute
)

// carePoster sends each live call's exposure to escalation's CareService,
// retrying with backoff until escalation has it; RecordCall is idempotent,
// so a call sent twice is recorded once.
type carePoster struct {
	client escalationv1.CareServiceClient
	store  *store.Store
	log    *slog.Logger
	m      *metrics
	queue  chan *fullcallv1.Report
}

func newCarePoster(client escalationv1.CareServiceClient, st *store.Store, log *slog.Logger, m *metrics) *carePoster {
	return &carePoster{client: client, store: st, log: log, m: m, queue: make(chan *fullcallv1.Report, careQueueSize)}
}

// enqueue queues a stored report without blocking the call.
func (p *carePoster) enqueue(ctx context.Context, r *fullcallv1.Report) {
	if r.AgentId == "" {
		return
	}
	select {
	case p.queue <- r:
	default:
		p.m.careDropped.Add(ctx, 1)
		p.log.Warn("care queue full; the call stays pending and is sent later", "tenant", r.TenantId, "call_id", r.CallId)
	}
}

func (p *carePoster) run(ctx context.Context) {
	resend := time.NewTicker(careResendEvery)
	defer resend.Stop()
	p.resend(ctx) // what an earlier run left pending
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-p.queue:
			p.post(ctx, r)
		case <-resend.C:
			if len(p.queue) == 0 {
				p.resend(ctx)
			}
		}
	}
}

func (p *carePoster) resend(ctx context.Context) {
	rs, err := p.store.CarePending(ctx, p.store.Now().Add(-careGrace), careQueueSize/2)
	if err != nil {
		if ctx.Err() == nil {
			p.log.Warn("listing calls pending for the care record failed", "err", err)
		}
		return
	}
	for _, r := range rs {
		p.enqueue(ctx, r)
	}
}

func (p *carePoster) post(ctx context.Context, r *fullcallv1.Report) {
	peak, exposure, _ := store.Exposure(r)
	req := &escalationv1.RecordCallRequest{
		TenantId:           r.TenantId,
		CallId:             r.CallId,
		AgentId:            r.AgentId,
		StartedAt:          r.StartedAt,
		EndedAt:            r.EndedAt,
		CallerPressurePeak: peak,
		ExposureSeconds:    uint32(exposure),
		Escalated:          len(r.Alerts) > 0,
	}
	retry := backoff.New(backoff.Policy{Initial: 200 * time.Millisecond, Max: 30 * time.Second}, nil)
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := p.client.RecordCall(actx, req)
		cancel()
		if err == nil {
			p.m.careSent.Add(ctx, 1)
			if err := p.store.CareDone(ctx, r.TenantId, r.CallId); err != nil && ctx.Err() == nil {
				p.log.Warn("marking a call recorded by care failed; it will be sent again", "call_id", r.CallId, "err", err)
			}
			return
		}
		if ctx.Err() != nil {
			return // still pending in the store: the next run sends it
		}
		p.m.careRetries.Add(ctx, 1)
		p.log.Warn("recording the call with escalation's care service failed; retrying",
			"tenant", r.TenantId, "call_id", r.CallId, "attempt", attempt, "err", err)
		if retry.Wait(ctx) != nil {
			return
		}
	}
}
