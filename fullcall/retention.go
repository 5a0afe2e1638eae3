package fullcall

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/calmline/calmline/fullcall/store"
)

// retentionBatch bounds the rows one retention transaction deletes, so
// that a first run over a large backlog never holds the store for long.
const retentionBatch = 500

// bookkeepingRetention is how long finished calls' checkpoint rows and
// settled jobs are kept (they only answer late resumes and status polls).
const bookkeepingRetention = 7 * 24 * time.Hour

var kindAttr = attribute.Key("kind")

// retention enforces every tenant's retention periodically: reports older
// than report_retention_days go with their audio, stored audio older than
// audio.retention_days goes (its report stays). Each deletion is recorded
// in the store (table deletions), counted and logged per run. Every
// instance may run it: the deletes are idempotent.
func (s *Server) retention(ctx context.Context) {
	t := time.NewTicker(s.o.RetentionEvery)
	defer t.Stop()
	for {
		s.enforceRetention(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// enforceRetention runs one pass over every tenant.
func (s *Server) enforceRetention(ctx context.Context) {
	now := s.store.Now()
	day := 24 * time.Hour
	for _, t := range s.o.Tenants.Tenants() {
		if d := t.ReportRetentionDays; d > 0 {
			s.deleteAll(ctx, t.ID, store.KindReport, now.Add(-time.Duration(d)*day), s.store.DeleteReports)
		}
		audioDays := t.Audio.RetentionDays
		if audioDays == 0 {
			audioDays = t.ReportRetentionDays
		}
		if audioDays > 0 {
			s.deleteAll(ctx, t.ID, store.KindAudio, now.Add(-time.Duration(audioDays)*day), s.store.DeleteAudio)
		}
		if ctx.Err() != nil {
			return
		}
	}
	if n, err := s.store.PurgeFinished(ctx, now.Add(-bookkeepingRetention)); err != nil && ctx.Err() == nil {
		s.log.Warn("purging finished bookkeeping failed", "err", err)
	} else if n > 0 {
		s.log.Debug("purged finished calls and jobs", "rows", n)
	}
}

func (s *Server) deleteAll(ctx context.Context, tenantID, kind string, cutoff time.Time,
	del func(context.Context, string, time.Time, int, string) ([]string, error)) {
	total := 0
	for ctx.Err() == nil {
		gone, err := del(ctx, tenantID, cutoff, retentionBatch, "retention")
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("retention failed", "tenant", tenantID, "kind", kind, "err", err)
			}
			break
		}
		total += len(gone)
		s.m.deletions.Add(ctx, int64(len(gone)), metric.WithAttributes(kindAttr.String(kind)))
		if len(gone) < retentionBatch {
			break
		}
	}
	if total > 0 {
		s.log.Info("retention deleted", "tenant", tenantID, "kind", kind, "count", total, "older_than", cutoff)
	}
}
