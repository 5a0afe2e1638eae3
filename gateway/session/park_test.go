package session

import (
	"context"
	"testing"
	"time"

	"github.com/calmline/calmline/gateway/gatewaytest"
	"github.com/calmline/calmline/lib/clock/clocktest"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// ended is an Observer that reports each call's end.
type ended chan EndReason

func (ended) CallStarted(*Call)                                      {}
func (ended) CallScore(*Call, *callv1.ScoreUpdate)                   {}
func (ended) CallAlert(*Call, *callv1.AlertEvent)                    {}
func (e ended) CallEnded(_ *Call, r EndReason, _ *fullcallv1.Report) { e <- r }

// TestParkedCallWaitsOutItsGrace parks a call whose connection dropped:
// a resume within the grace continues the very call; parked again and
// not resumed, it ends as disconnected once the grace has passed on the
// clock, and not a moment before.
func TestParkedCallWaitsOutItsGrace(t *testing.T) {
	rt, fc := gatewaytest.StartRealtime(t), gatewaytest.StartFullcall(t)
	clk := clocktest.New(time.Unix(1_800_000_000, 0))
	ends := make(ended, 1)
	m := manager(t, rt.Addr, fc.Addr, Options{Clock: clk, ResumeGrace: 30 * time.Second, Observer: ends})
	ctx := context.Background()
	c, err := m.Start(ctx, stereo("parked"), nil)
	if err != nil {
		t.Fatal(err)
	}
	feed(t, c, 1, nil)
	if !c.Park() {
		t.Fatal("the call did not park")
	}
	if ts := clk.WaitForTimers(t, 1); ts[0] != 30*time.Second {
		t.Fatalf("grace timer %v; want 30s", ts[0])
	}
	clk.Advance(29 * time.Second)
	st := stereo("parked")
	st.Resume, st.ResumeAt = true, c.Timeline()
	rc, err := m.Start(ctx, st, nil)
	if err != nil || rc != c {
		t.Fatalf("resume 29 s into the grace: %v, same call %v; want the parked call back", err, rc == c)
	}
	feed(t, c, 1, nil)
	if !c.Park() {
		t.Fatal("the call did not park again")
	}
	clk.Advance(30*time.Second - time.Millisecond)
	select {
	case r := <-ends:
		t.Fatalf("the call ended (%v) before its grace passed", r)
	default:
	}
	if m.Live() != 1 {
		t.Fatalf("%d live calls inside the grace; want the parked one", m.Live())
	}
	clk.Advance(time.Millisecond)
	select {
	case r := <-ends:
		if r != fullcallv1.EndReason_END_REASON_DISCONNECTED {
			t.Errorf("ended with %v; want DISCONNECTED", r)
		}
	case <-time.After(10 * time.Second): // a bound, not a synchronisation
		t.Fatal("the call did not end once its grace passed")
	}
	if r := fc.Report("parked"); r == nil || r.AudioBytes != 2*16000 {
		t.Errorf("report %v; want one holding both seconds", r)
	}
}
