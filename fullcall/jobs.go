package fullcall

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/calmline/calmline/fullcall/store"
	"github.com/calmline/calmline/lib/redact"
	"github.com/calmline/calmline/lib/service"
	"github.com/calmline/calmline/lib/webhook"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// jobPoll is how often an idle worker looks for jobs other instances
// queued (its own instance wakes it at once).
const jobPoll = time.Second

// worker analyses queued recordings — uploads, and files from the spool if
// this instance has one — until ctx ends.
func (s *Server) worker(ctx context.Context) {
	sources := []string{store.SourceUpload}
	for name := range s.sources {
		sources = append(sources, name)
	}
	poll := time.NewTicker(jobPoll)
	defer poll.Stop()
	for {
		j, err := s.store.ClaimJob(ctx, sources, s.id, s.o.JobLease, s.o.MaxJobAttempts)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("claiming a job failed", "err", err)
		}
		if j != nil {
			s.runJob(ctx, j)
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-poll.C:
		}
	}
}

func (s *Server) hook(point string, j *store.Job) {
	if s.jobHook != nil {
		s.jobHook(point, j)
	}
}

// runJob analyses one claimed job and stores its report (or its failure)
// in one transaction fenced on the claim: if the lease is lost meanwhile
// (this worker was too slow, or taken for dead), the job is someone
// else's and nothing is stored here.
func (s *Server) runJob(ctx context.Context, j *store.Job) {
	log := s.log.With("job_id", j.ID, "tenant", j.TenantID, "source", j.Source, "attempt", j.Attempts)
	s.hook("claimed", j)
	// The job's work continues the trace of its upload or spool file.
	jctx, span := s.tr.tracer.Start(s.tr.extract(ctx, j.TraceContext), spanJob, trace.WithAttributes(
		attribute.String("calmline.job_id", j.ID), attribute.String("calmline.job.source", j.Source), attribute.Int("calmline.job.attempt", j.Attempts)))
	defer span.End()
	jctx, cancel := context.WithCancel(jctx)
	defer cancel()
	var renewer sync.WaitGroup
	renewDone := make(chan struct{})
	renewer.Add(1)
	go func() {
		defer renewer.Done()
		t := time.NewTicker(s.o.JobLease / 3)
		defer t.Stop()
		for {
			select {
			case <-renewDone:
				return
			case <-jctx.Done():
				return
			case <-t.C:
				if err := s.store.RenewJob(jctx, j, s.o.JobLease); errors.Is(err, store.ErrFenced) {
					log.Warn("lost the job's lease; another worker has it")
					cancel()
					return
				}
			}
		}
	}()
	r, keep, err := s.analyseJob(jctx, j)
	close(renewDone)
	renewer.Wait()
	if ctx.Err() != nil {
		// Stopping: the job goes back to the queue for another worker.
		if rerr := s.store.ReleaseJob(context.WithoutCancel(ctx), j); rerr != nil {
			log.Warn("releasing the job failed; it is taken over when its lease ends", "err", rerr)
		}
		return
	}
	if jctx.Err() != nil {
		return // the lease was lost
	}
	s.hook("analysed", j)
	wctx, wcancel := context.WithTimeout(context.WithoutCancel(jctx), 30*time.Second)
	defer wcancel()
	if err != nil {
		code := errorCode(err)
		log.Info("job failed", "code", code, "err", err)
		err = s.store.FailJob(wctx, j, code, err.Error())
		s.m.jobs.Add(ctx, 1, metric.WithAttributes(sourceAttr.String(j.Source), outcomeAttr.String(code)))
	} else {
		cctx, end := s.tr.child(wctx, spanWrite)
		err = s.store.CompleteJob(cctx, j, r, keep)
		end(err)
		if err == nil {
			s.m.reports.Add(ctx, 1, metric.WithAttributes(sourceAttr.String(r.Source.String())))
			s.m.jobs.Add(ctx, 1, metric.WithAttributes(sourceAttr.String(j.Source), outcomeAttr.String("done")))
			log.Debug("job done", "call_id", r.CallId, "duration_s", r.DurationS)
		}
	}
	switch {
	case errors.Is(err, store.ErrFenced):
		s.m.fenced.Add(ctx, 1)
		log.Warn("the job was taken over by another worker; its result was not stored")
		return
	case err != nil:
		s.m.storeErrors.Add(ctx, 1)
		log.Error("storing the job's outcome failed; it is retried when its lease ends", "err", err)
		return
	}
	s.hook("committed", j)
	if j.CallbackURL != "" {
		select {
		case s.cbWake <- struct{}{}:
		default:
		}
	}
	if src, ok := s.sources[j.Source]; ok {
		src.settle(ctx, j)
	}
}

// analyseJob reads a job's recording from where it is and analyses it.
func (s *Server) analyseJob(ctx context.Context, j *store.Job) (*fullcallv1.Report, []byte, error) {
	t, ok := s.o.Tenants.Tenant(j.TenantID)
	if !ok {
		return nil, nil, fmt.Errorf("tenant %q is no longer configured", j.TenantID)
	}
	rec := j.Recording
	kind := fullcallv1.Source_SOURCE_UPLOAD
	if j.Source == store.SourceUpload {
		rec.Wav = j.Payload
	} else {
		src, ok := s.sources[j.Source]
		if !ok {
			return nil, nil, fmt.Errorf("job source %q is not served here", j.Source)
		}
		if msg, bad := rec.Labels[badSidecarLabel]; bad {
			return nil, nil, fmt.Errorf("%w: %s", errBadSidecar, msg)
		}
		b, err := src.read(j.Ref)
		if err != nil {
			return nil, nil, err
		}
		rec.Wav, kind = b, src.kind()
	}
	if int64(len(rec.Wav)) > s.o.MaxJobBytes {
		return nil, nil, fmt.Errorf("%w: %d bytes, over the %d-byte limit", errTooLarge, len(rec.Wav), s.o.MaxJobBytes)
	}
	return s.analyse(ctx, t, rec, kind)
}

// Callback delivery: attempts are spaced by callbackBackoff (CallbackRetry,
// then three times longer each time up to an hour, with jitter), or by
// Retry-After when the receiver asks for longer (within the same cap).
const (
	callbackMaxRetry = time.Hour
	callbackLease    = 30 * time.Second
)

func callbackBackoff(first time.Duration, attempt int) time.Duration {
	d := first
	for range attempt - 1 {
		d *= 3
		if d >= callbackMaxRetry {
			d = callbackMaxRetry
			break
		}
	}
	if j := int64(d * 2 / 5); j > 0 {
		return d*4/5 + time.Duration(rand.Int64N(j))
	}
	return d
}

// callbacks delivers due job callbacks until ctx ends.
func (s *Server) callbacks(ctx context.Context) {
	poll := time.NewTicker(jobPoll)
	defer poll.Stop()
	for {
		j, err := s.store.ClaimCallback(ctx, callbackLease)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("claiming a callback failed", "err", err)
		}
		if j != nil {
			s.deliver(ctx, j)
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-s.cbWake:
		case <-poll.C:
		}
	}
}

// The event types of job callbacks.
const (
	eventJobDone   = "fullcall.job.done"
	eventJobFailed = "fullcall.job.failed"
)

// deliver makes one attempt at a job's callback and records the outcome.
func (s *Server) deliver(ctx context.Context, j *store.Job) {
	log := s.log.With("job_id", j.ID, "tenant", j.TenantID, "attempt", j.CallbackAttempts)
	// The callback is a child of the job's root span (its upload's).
	ctx, span := s.tr.tracer.Start(s.tr.extract(ctx, j.TraceContext), spanCallback, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("calmline.job_id", j.ID), attribute.Int("calmline.callback.attempt", j.CallbackAttempts)))
	defer span.End()
	result := func(outcome string, delivered bool, retryAt time.Time, msg string) {
		span.SetAttributes(attribute.String("calmline.callback.outcome", outcome))
		if !delivered {
			span.SetStatus(otelcodes.Error, msg)
		}
		s.m.callbacks.Add(ctx, 1, metric.WithAttributes(outcomeAttr.String(outcome)))
		if err := s.store.CallbackResult(context.WithoutCancel(ctx), j, delivered, retryAt, msg); err != nil {
			log.Warn("recording the callback's outcome failed; it will be attempted again", "err", err)
		}
	}
	t, ok := s.o.Tenants.Tenant(j.TenantID)
	var target *url.URL
	if ok && t.JobCallbacks.Enabled() {
		target, _ = t.JobCallbacks.Check(j.CallbackURL)
	}
	if target == nil {
		log.Warn("callback no longer allowed by the tenant's configuration; not sent")
		result("failed", false, time.Time{}, "the callback URL is no longer allowed by the tenant's configuration")
		return
	}
	body, err := s.callbackBody(j)
	if err != nil {
		result("failed", false, time.Time{}, err.Error())
		return
	}
	retry := func(after time.Duration, msg string) {
		if j.CallbackAttempts >= s.o.CallbackAttempts {
			log.Warn("callback failed for good", "reason", msg)
			result("failed", false, time.Time{}, fmt.Sprintf("%s (after %d attempts)", msg, j.CallbackAttempts))
			return
		}
		wait := max(after, callbackBackoff(s.o.CallbackRetry, j.CallbackAttempts))
		log.Info("callback failed; retrying", "reason", msg, "in", wait)
		result("retry", false, s.store.Now().Add(min(wait, callbackMaxRetry)), msg)
	}
	var secrets []webhook.Secret
	for _, ref := range t.JobCallbacks.SigningSecrets {
		raw, err := ref.Resolve()
		if err == nil {
			var sec webhook.Secret
			if sec, err = webhook.ParseSecret(raw); err == nil {
				secrets = append(secrets, sec)
				continue
			}
		}
		// The secret may be being rotated into place: try again later.
		log.Warn("callback signing secret unavailable", "secret", ref.String(), "err", err)
		retry(0, "the signing secret is unavailable")
		return
	}
	sendCtx := ctx
	if t.JobCallbacks.AllowLinkLocal {
		sendCtx = webhook.AllowLinkLocal(ctx)
	}
	req, err := http.NewRequestWithContext(sendCtx, http.MethodPost, target.String(), bytes.NewReader(body))
	if err != nil {
		result("failed", false, time.Time{}, err.Error())
		return
	}
	// The id is the same on every attempt, so that the receiver can
	// de-duplicate; the timestamp and signature are the attempt's.
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "calmline-fullcall")
	webhook.SetHeaders(req.Header, j.ID, time.Now(), body, secrets...)
	resp, err := s.o.CallbackClient.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return // stopping: the claim's lease makes it due again
		}
		if errors.Is(err, webhook.ErrForbiddenAddress) {
			log.Warn("callback refused: its host is link-local or a metadata address", "url", redact.URL(j.CallbackURL))
			result("failed", false, time.Time{}, "request refused: "+redact.Error(err))
			return
		}
		// The URL's query may hold a token: it never reaches the log or
		// the job's stored error.
		retry(0, "request failed: "+redact.Error(err))
		return
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	ok, retryable := webhook.Classify(resp.StatusCode)
	switch {
	case ok:
		log.Debug("callback delivered")
		result("delivered", true, time.Time{}, "")
	case retryable || resp.StatusCode == http.StatusTooEarly:
		after, _ := webhook.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		retry(after, fmt.Sprintf("the receiver answered %d", resp.StatusCode))
	default:
		// Other 4xx (and redirects, which are not followed) will not get
		// better by retrying.
		log.Warn("callback refused by the receiver", "status", resp.StatusCode)
		result("failed", false, time.Time{}, fmt.Sprintf("the receiver answered %d", resp.StatusCode))
	}
}

// callbackBody is the JSON a callback carries: the event type, when it
// happened, and the job (without its report: the receiver reads it at
// report_url with its API key).
func (s *Server) callbackBody(j *store.Job) ([]byte, error) {
	jb, err := service.ProtoJSON.Marshal(store.JobProto(j, nil))
	if err != nil {
		return nil, err
	}
	typ := eventJobDone
	if j.State == fullcallv1.JobState_JOB_STATE_FAILED {
		typ = eventJobFailed
	}
	data := map[string]any{"job": json.RawMessage(jb), "status_url": s.o.PublicURL + "/api/v1/jobs/" + j.ID}
	if j.CallID != "" && j.State == fullcallv1.JobState_JOB_STATE_DONE {
		data["report_url"] = s.o.PublicURL + "/api/v1/reports/" + j.CallID
	}
	return json.Marshal(map[string]any{
		"type":      typ,
		"timestamp": j.UpdatedAt.UTC().Format(time.RFC3339Nano),
		"data":      data,
	})
}
