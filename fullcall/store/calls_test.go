package store

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// clock is a settable clock for the store.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }
func withClock(s *Store, t0 time.Time) *clock {
	c := &clock{t: t0}
	s.Now = c.now
	return c
}

func checkpoint(tenant, call, owner string) *Checkpoint {
	return &Checkpoint{
		TenantID: tenant, CallID: call, Owner: owner,
		Call:     &callv1.Call{TenantId: tenant, CallId: call, AgentId: "a1"},
		Partial:  &fullcallv1.Report{Chunks: 0},
		Analyzer: []byte("state-0"),
	}
}

func TestCheckpointResumeAndFencing(t *testing.T) { both(t, testCheckpointResumeAndFencing) }

func testCheckpointResumeAndFencing(t *testing.T, s *Store) {
	ctx := context.Background()
	withClock(s, t0)
	a := checkpoint("acme", "c1", "inst-a")
	if err := s.StartCall(ctx, a); err != nil {
		t.Fatal(err)
	}
	if a.Epoch != 1 {
		t.Errorf("new call at epoch %d; want 1", a.Epoch)
	}
	// Two checkpoints, each with its timeline segment.
	for i, seg := range []Segment{{First: 0, Data: []byte("p0p1")}, {First: 2, Data: []byte("p2")}} {
		a.Seq = uint64(10 * (i + 1))
		a.Partial.Chunks = a.Seq
		a.Analyzer = []byte{byte(i)}
		a.TimelineLen = seg.First + uint64(len(seg.Data)/2)
		if err := s.SaveCheckpoint(ctx, a, []Segment{seg}, nil); err != nil {
			t.Fatal(err)
		}
	}
	// Another tenant cannot resume it: the call is simply not there.
	if _, err := s.ResumeCall(ctx, "globex", "c1", "inst-b", time.Time{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("other tenant's resume: %v; want ErrNotFound", err)
	}
	b, err := s.ResumeCall(ctx, "acme", "c1", "inst-b", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if b.Epoch != 2 || b.Owner != "inst-b" || b.Seq != 20 || b.Partial.Chunks != 20 || !bytes.Equal(b.Analyzer, []byte{1}) ||
		b.TimelineLen != 3 || b.Call.AgentId != "a1" || b.Finished {
		t.Errorf("resumed checkpoint %+v", b)
	}
	segs, err := s.Timeline(ctx, "acme", "c1")
	if err != nil || len(segs) != 2 || string(segs[0].Data)+string(segs[1].Data) != "p0p1p2" {
		t.Errorf("timeline %v, %v", segs, err)
	}
	// The old holder is fenced out: its checkpoint and its finish change
	// nothing.
	a.Seq = 30
	if err := s.SaveCheckpoint(ctx, a, []Segment{{First: 3, Data: []byte("zz")}}, nil); !errors.Is(err, ErrFenced) {
		t.Errorf("stale checkpoint: %v; want ErrFenced", err)
	}
	if err := s.FinishCall(ctx, a, nil, report("acme", "c1", "a1", 0, 50, false), true); !errors.Is(err, ErrFenced) {
		t.Errorf("stale finish: %v; want ErrFenced", err)
	}
	if _, err := s.GetReport(ctx, "acme", "c1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a fenced finish stored a report: %v", err)
	}
	if segs, _ := s.Timeline(ctx, "acme", "c1"); len(segs) != 2 {
		t.Errorf("a fenced checkpoint wrote a timeline segment: %d segments", len(segs))
	}
	// The new holder finishes the call: the report is stored, the timeline
	// segments go, the row remembers the last seq.
	b.Seq = 25
	rep := report("acme", "c1", "a1", 0, 50, false)
	if err := s.FinishCall(ctx, b, nil, rep, true); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetReport(ctx, "acme", "c1"); err != nil || !proto.Equal(got, rep) {
		t.Errorf("report after finish: %v", err)
	}
	if segs, _ := s.Timeline(ctx, "acme", "c1"); len(segs) != 0 {
		t.Errorf("%d timeline segments left after finish", len(segs))
	}
	late, err := s.ResumeCall(ctx, "acme", "c1", "inst-c", time.Time{})
	if err != nil || !late.Finished || late.Seq != 25 || late.Epoch != 2 {
		t.Errorf("resuming a finished call: %+v, %v; want it finished at seq 25, untaken", late, err)
	}
	// Starting the same call id again starts it over at a later epoch.
	again := checkpoint("acme", "c1", "inst-c")
	if err := s.StartCall(ctx, again); err != nil || again.Epoch != 3 {
		t.Errorf("restart: epoch %d, %v; want 3", again.Epoch, err)
	}
}

func TestStaleCallsAndHeartbeat(t *testing.T) { both(t, testStaleCallsAndHeartbeat) }

func testStaleCallsAndHeartbeat(t *testing.T, s *Store) {
	ctx := context.Background()
	c := withClock(s, t0)
	for _, k := range []struct{ call, owner string }{{"alive", "inst-a"}, {"dead", "inst-b"}} {
		if err := s.StartCall(ctx, checkpoint("acme", k.call, k.owner)); err != nil {
			t.Fatal(err)
		}
	}
	c.advance(time.Minute)
	if n, err := s.Heartbeat(ctx, "inst-a"); err != nil || n != 1 {
		t.Errorf("heartbeat touched %d, %v; want 1", n, err)
	}
	c.advance(10 * time.Second)
	stale, err := s.StaleCalls(ctx, c.t.Add(-30*time.Second), 10)
	if err != nil || len(stale) != 1 || stale[0].CallID != "dead" {
		t.Fatalf("stale calls %v, %v; want only the one without a heartbeat", stale, err)
	}
	// The sweep takes only what is still stale when it gets there.
	if _, err := s.ResumeCall(ctx, "acme", "alive", "sweeper", c.t.Add(-30*time.Second)); !errors.Is(err, ErrFenced) {
		t.Errorf("sweeping a live call: %v; want ErrFenced", err)
	}
	cp, err := s.ResumeCall(ctx, "acme", "dead", "sweeper", c.t.Add(-30*time.Second))
	if err != nil || cp.Owner != "sweeper" || cp.Epoch != 2 {
		t.Errorf("sweeping the orphan: %+v, %v", cp, err)
	}
}

func TestAudioSegmentsFillGaps(t *testing.T) { both(t, testAudioSegmentsFillGaps) }

func testAudioSegmentsFillGaps(t *testing.T, s *Store) {
	ctx := context.Background()
	withClock(s, t0)
	cp := checkpoint("acme", "c1", "i")
	if err := s.StartCall(ctx, cp); err != nil {
		t.Fatal(err)
	}
	// Mono 8-bit: samples 0-3, a gap of 2, samples 6-7, replayed 6-9.
	cp.Seq = 1
	s.SaveCheckpoint(ctx, cp, nil, []Segment{{First: 0, Data: []byte("abcd")}})
	cp.Seq = 2
	s.SaveCheckpoint(ctx, cp, nil, []Segment{{First: 6, Data: []byte("gh")}})
	cp.Seq = 3
	if err := s.FinishCall(ctx, cp, []Segment{{First: 6, Data: []byte("ghij")}}, report("acme", "c1", "a1", 0, 10, false), false); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := s.WriteAudio(ctx, &buf, "acme", "c1", 1, []byte{'.'}, 12); err != nil {
		t.Fatal(err)
	}
	if buf.String() != "abcd..ghij.." {
		t.Errorf("audio %q; want abcd..ghij..", buf.String())
	}
	if err := s.WriteAudio(ctx, &buf, "globex", "c1", 1, []byte{'.'}, 12); !errors.Is(err, ErrNotFound) {
		t.Errorf("other tenant's audio: %v; want ErrNotFound", err)
	}
}
