package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

func job(tenant, source, ref string) *Job {
	return &Job{ID: NewJobID(), TenantID: tenant, Source: source, Ref: ref,
		Recording: &fullcallv1.Recording{CallId: "call-" + ref, AgentId: "a1", Wav: []byte("not stored in request")},
		Payload:   []byte("RIFF...")}
}

func TestJobQueue(t *testing.T) { both(t, testJobQueue) }

func testJobQueue(t *testing.T, s *Store) {
	ctx := context.Background()
	c := withClock(s, t0)
	j := job("acme", "spool", "acme/x.wav|10|1")
	if ok, err := s.EnqueueJob(ctx, j); !ok || err != nil {
		t.Fatalf("enqueue: %v, %v", ok, err)
	}
	// The same file found again is the same job.
	if ok, err := s.EnqueueJob(ctx, job("acme", "spool", "acme/x.wav|10|1")); ok || err != nil {
		t.Errorf("second enqueue of the same ref: %v, %v; want false", ok, err)
	}
	// A worker that does not read this source claims nothing.
	if got, err := s.ClaimJob(ctx, []string{"other"}, "w1", time.Minute, 3); got != nil || err != nil {
		t.Errorf("claim from another source: %v, %v", got, err)
	}
	got, err := s.ClaimJob(ctx, []string{"upload", "spool"}, "w1", time.Minute, 3)
	if err != nil || got == nil || got.ID != j.ID || got.Attempts != 1 || got.State != fullcallv1.JobState_JOB_STATE_RUNNING {
		t.Fatalf("claim: %+v, %v", got, err)
	}
	// The job's call id is known from the moment it is queued.
	if j.CallID != "call-acme/x.wav|10|1" || got.CallID != j.CallID || JobProto(got, nil).CallId != j.CallID {
		t.Errorf("call id: queued %q, claimed %q; want the recording's from the start", j.CallID, got.CallID)
	}
	if got.Recording.CallId != "call-acme/x.wav|10|1" || got.Recording.Wav != nil || string(got.Payload) != "RIFF..." {
		t.Errorf("claimed job carries %+v, payload %q", got.Recording, got.Payload)
	}
	if again, _ := s.ClaimJob(ctx, []string{"spool"}, "w2", time.Minute, 3); again != nil {
		t.Errorf("a leased job was claimed twice")
	}
	// The worker dies; its lease runs out and another worker takes over.
	c.advance(2 * time.Minute)
	taken, err := s.ClaimJob(ctx, []string{"spool"}, "w2", time.Minute, 3)
	if err != nil || taken == nil || taken.Attempts != 2 {
		t.Fatalf("reclaim after the lease: %+v, %v", taken, err)
	}
	// The first worker comes back from the dead: it stores nothing.
	if err := s.RenewJob(ctx, got, time.Minute); !errors.Is(err, ErrFenced) {
		t.Errorf("stale renew: %v; want ErrFenced", err)
	}
	if err := s.CompleteJob(ctx, got, report("acme", "zombie", "a1", 0, 1, false), nil); !errors.Is(err, ErrFenced) {
		t.Errorf("stale complete: %v; want ErrFenced", err)
	}
	if _, err := s.GetReport(ctx, "acme", "zombie"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a fenced completion stored its report")
	}
	rep := report("acme", "call-x", "a1", 0, 60, false)
	if err := s.CompleteJob(ctx, taken, rep, []byte("audio")); err != nil {
		t.Fatal(err)
	}
	done, err := s.GetJob(ctx, "acme", j.ID)
	if err != nil || done.State != fullcallv1.JobState_JOB_STATE_DONE || done.CallID != "call-x" || done.Payload != nil {
		t.Errorf("done job %+v, %v", done, err)
	}
	if _, err := s.GetJob(ctx, "globex", j.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("another tenant's job: %v; want ErrNotFound", err)
	}
	if ok, _ := s.HasAudio(ctx, "acme", "call-x"); !ok {
		t.Error("the job's audio was not stored")
	}
	// The source settles what finished.
	un, err := s.Unsettled(ctx, "spool")
	if err != nil || len(un) != 1 || un[j.Ref].State != fullcallv1.JobState_JOB_STATE_DONE {
		t.Fatalf("unsettled %v, %v", un, err)
	}
	s.Settle(ctx, j.ID)
	if un, _ := s.Unsettled(ctx, "spool"); len(un) != 0 {
		t.Errorf("still unsettled after Settle: %v", un)
	}
}

func TestJobGivesUpAfterMaxAttempts(t *testing.T) { both(t, testJobGivesUp) }

func testJobGivesUp(t *testing.T, s *Store) {
	ctx := context.Background()
	c := withClock(s, t0)
	j := job("acme", SourceUpload, "r1")
	j.CallbackURL = "https://example.test/cb"
	s.EnqueueJob(ctx, j)
	for i := range 2 {
		if got, _ := s.ClaimJob(ctx, []string{SourceUpload}, "w", time.Second, 2); got == nil {
			t.Fatalf("claim %d found nothing", i+1)
		}
		c.advance(2 * time.Second) // the worker died each time
	}
	if got, _ := s.ClaimJob(ctx, []string{SourceUpload}, "w", time.Second, 2); got != nil {
		t.Errorf("claimed a third time: %+v", got)
	}
	f, _ := s.GetJob(ctx, "acme", j.ID)
	if f.State != fullcallv1.JobState_JOB_STATE_FAILED || f.ErrorCode != "gave_up" || f.Payload != nil || f.Callback != CallbackPending {
		t.Errorf("job after its attempts: %+v", f)
	}
}

func TestConcurrentClaimsNeverShareAJob(t *testing.T) { both(t, testConcurrentClaims) }

func testConcurrentClaims(t *testing.T, s *Store) {
	ctx := context.Background()
	const jobs, workers = 40, 6
	for i := range jobs {
		if _, err := s.EnqueueJob(ctx, job("acme", SourceUpload, fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	seen := map[string]string{}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			owner := fmt.Sprint("w", w)
			for {
				j, err := s.ClaimJob(ctx, []string{SourceUpload}, owner, time.Minute, 3)
				if err != nil {
					errs <- err
					return
				}
				if j == nil {
					return
				}
				mu.Lock()
				if prev, dup := seen[j.ID]; dup {
					errs <- fmt.Errorf("job %s claimed by %s and %s", j.ID, prev, owner)
				}
				seen[j.ID] = owner
				mu.Unlock()
				if err := s.CompleteJob(ctx, j, report("acme", "c"+j.Ref, "a1", 0, 1, false), nil); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(seen) != jobs {
		t.Errorf("%d jobs done; want %d", len(seen), jobs)
	}
}

func TestCallbacks(t *testing.T) { both(t, testCallbacks) }

func testCallbacks(t *testing.T, s *Store) {
	ctx := context.Background()
	c := withClock(s, t0)
	j := job("acme", SourceUpload, "cb")
	j.CallbackURL = "https://example.test/cb"
	s.EnqueueJob(ctx, j)
	if got, _ := s.ClaimCallback(ctx, time.Minute); got != nil {
		t.Errorf("a callback is due before the job is done")
	}
	claimed, _ := s.ClaimJob(ctx, []string{SourceUpload}, "w", time.Minute, 3)
	s.FailJob(ctx, claimed, "no_speech", "the recording contains no speech")
	cb, err := s.ClaimCallback(ctx, time.Minute)
	if err != nil || cb == nil || cb.CallbackAttempts != 1 || cb.ErrorCode != "no_speech" {
		t.Fatalf("claim callback: %+v, %v", cb, err)
	}
	if again, _ := s.ClaimCallback(ctx, time.Minute); again != nil {
		t.Error("a callback being delivered was claimed again")
	}
	s.CallbackResult(ctx, cb, false, c.t.Add(30*time.Second), "503")
	c.advance(31 * time.Second)
	cb, _ = s.ClaimCallback(ctx, time.Minute)
	if cb == nil || cb.CallbackAttempts != 2 {
		t.Fatalf("retry not due: %+v", cb)
	}
	s.CallbackResult(ctx, cb, true, time.Time{}, "")
	c.advance(time.Hour)
	if again, _ := s.ClaimCallback(ctx, time.Minute); again != nil {
		t.Error("a delivered callback came due again")
	}
	if got, _ := s.GetJob(ctx, "acme", j.ID); got.Callback != CallbackDelivered {
		t.Errorf("callback state %v", got.Callback)
	}
}

func TestAgentSummary(t *testing.T) { both(t, testAgentSummary) }

func testAgentSummary(t *testing.T, s *Store) {
	ctx := context.Background()
	put := func(call, agent string, day, minute int, dur float64, peak float64, above uint32, escalated bool) {
		r := report("acme", call, agent, day*24*60+minute, peak, escalated)
		r.DurationS = dur
		r.CallerPressure.Threshold = 70
		r.CallerPressure.SecondsAboveThreshold = above
		if err := s.PutReport(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	// Previous day: 2 calls, 30 s of exposure in all.
	put("p1", "ana", -1, 0, 120, 75, 30, false)
	put("p2", "ana", -1, 10, 60, 40, 0, false)
	// This day: 3 calls, 180 s of exposure.
	put("c1", "ana", 0, 0, 300, 90, 120, true)
	put("c2", "ana", 0, 30, 240, 72, 60, false)
	put("c3", "ana", 0, 60, 60, 50, 0, false)
	put("other-agent", "ben", 0, 5, 600, 99, 500, true)
	if err := s.PutReport(ctx, report("globex", "g1", "ana", 5, 99, true)); err != nil {
		t.Fatal(err)
	}
	sum, err := s.AgentSummary(ctx, "acme", "ana", t0, t0.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if sum.Calls != 3 || sum.Minutes != 10 || sum.HighPressureCalls != 2 || sum.ExposureMinutes != 3 || sum.EscalatedCalls != 1 {
		t.Errorf("summary %+v; want 3 calls, 10 min, 2 high-pressure, 3 exposure minutes, 1 escalated", sum)
	}
	// 1 min per call now against 0.25 min per call the day before.
	if math.Abs(sum.ExposureTrend-0.75) > 1e-9 {
		t.Errorf("trend %v; want 0.75", sum.ExposureTrend)
	}
	none, _ := s.AgentSummary(ctx, "acme", "nobody", t0, t0.Add(time.Hour))
	if none.Calls != 0 || none.ExposureTrend != 0 {
		t.Errorf("summary of an agent without calls: %+v", none)
	}
}

func TestRetentionDeletesAndRecords(t *testing.T) { both(t, testRetention) }

func testRetention(t *testing.T, s *Store) {
	ctx := context.Background()
	c := withClock(s, t0.Add(100*24*time.Hour))
	for i := range 5 {
		r := report("acme", fmt.Sprint("old", i), "a1", i, 50, false)
		r.AudioStored = i < 2
		j := job("acme", SourceUpload, r.CallId)
		s.EnqueueJob(ctx, j)
		claimed, _ := s.ClaimJob(ctx, []string{SourceUpload}, "w", time.Minute, 3)
		var audio []byte
		if r.AudioStored {
			audio = []byte("pcm")
		}
		if err := s.CompleteJob(ctx, claimed, r, audio); err != nil {
			t.Fatal(err)
		}
	}
	fresh := report("acme", "fresh", "a1", 99*24*60, 50, false)
	s.PutReport(ctx, fresh)
	s.PutReport(ctx, report("globex", "old0", "a1", 0, 50, false))

	// Audio first: kept 30 days, the two old recordings go, their reports stay.
	gone, err := s.DeleteAudio(ctx, "acme", c.t.Add(-30*24*time.Hour), 100, "retention")
	if err != nil || len(gone) != 2 {
		t.Fatalf("deleted audio of %v, %v; want 2 calls", gone, err)
	}
	if ok, _ := s.HasAudio(ctx, "acme", "old0"); ok {
		t.Error("audio survived its retention")
	}
	if _, err := s.GetReport(ctx, "acme", "old0"); err != nil {
		t.Errorf("the report went with its audio: %v", err)
	}
	// Reports kept 30 days, deleted in batches of 2.
	var all []string
	for {
		gone, err := s.DeleteReports(ctx, "acme", c.t.Add(-30*24*time.Hour), 2, "retention")
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, gone...)
		if len(gone) < 2 {
			break
		}
	}
	if len(all) != 5 {
		t.Errorf("deleted %v; want the 5 old reports", all)
	}
	if _, err := s.GetReport(ctx, "acme", "fresh"); err != nil {
		t.Errorf("a fresh report was deleted: %v", err)
	}
	if _, err := s.GetReport(ctx, "globex", "old0"); err != nil {
		t.Errorf("another tenant's report was deleted: %v", err)
	}
	ds, err := s.Deletions(ctx, "acme", t0)
	if err != nil || len(ds) != 7 {
		t.Fatalf("deletions %v, %v; want 2 audio + 5 reports", ds, err)
	}
	kinds := map[string]int{}
	for _, d := range ds {
		kinds[d.Kind]++
	}
	if kinds[KindAudio] != 2 || kinds[KindReport] != 5 {
		t.Errorf("deletions by kind %v", kinds)
	}
	// Settled bookkeeping is purged later.
	c.advance(8 * 24 * time.Hour)
	n, err := s.PurgeFinished(ctx, c.t.Add(-7*24*time.Hour))
	if err != nil || n != 5 {
		t.Errorf("purged %d, %v; want the 5 finished upload jobs", n, err)
	}
}
