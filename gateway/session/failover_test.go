package session

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/calmline/calmline/gateway/gatewaytest"
	"github.com/calmline/calmline/lib/clock/clocktest"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// TestFullcallReplayAfterKillingAnInstance kills the fullcall instance that
// holds a call while chunks are in flight: the call moves to the other
// instance, which resumes from the shared checkpoint, and the gateway
// replays what was not acknowledged. The stored report covers every chunk
// the client sent, exactly once.
func TestFullcallReplayAfterKillingAnInstance(t *testing.T) {
	rt := gatewaytest.StartRealtime(t)
	durable := gatewaytest.NewCheckpoints()
	a, b := gatewaytest.StartFullcall(t), gatewaytest.StartFullcall(t)
	// The instance that has the call stops acknowledging from the chunk
	// past 1.5 s of audio on (it hangs, as a dying process does) until it
	// is killed.
	var stall atomic.Bool
	var stallAt atomic.Uint64
	stall.Store(true)
	stalled := make(chan *gatewaytest.Fullcall, 2)
	release := make(chan struct{})
	for _, f := range []*gatewaytest.Fullcall{a, b} {
		f.Configure(func() {
			f.Durable = durable
			f.OnChunk = func(_ string, ch *callv1.AudioChunk) error {
				if !stall.Load() || stallAt.Load() == 0 && ch.StartSample+uint64(len(ch.Data)/2) <= 12000 {
					return nil
				}
				if stallAt.CompareAndSwap(0, ch.Seq) {
					stalled <- f
				}
				<-release
				return errors.New("killed")
			}
		})
	}
	mt := gatewaytest.NewMetrics(t)
	m := manager(t, rt.Addr, a.Addr+","+b.Addr, Options{MeterProvider: mt.Provider})
	c, err := m.Start(context.Background(), stereo("moved"), nil)
	if err != nil {
		t.Fatal(err)
	}
	feed(t, c, 3, nil) // the audio from 1.5 s on stays unacknowledged
	var victim *gatewaytest.Fullcall
	select {
	case victim = <-stalled:
	case <-time.After(10 * time.Second):
		t.Fatal("the audio past 1.5 s never reached fullcall")
	}
	stall.Store(false)
	victim.Kill()
	close(release)
	feed(t, c, 2, nil) // the call goes on
	r, err := c.End(context.Background(), fullcallv1.EndReason_END_REASON_HANGUP)
	if err != nil {
		t.Fatal(err)
	}
	chunks, bytes, dups := durable.Held("moved")
	if r.Incomplete || chunks == 0 || bytes != 5*16000 || dups != 0 {
		t.Errorf("stored: incomplete %v, %d chunks (%d twice), %d bytes; want complete, every chunk once, %d bytes", r.Incomplete, chunks, dups, bytes, 5*16000)
	}
	if r.Chunks != uint64(chunks) || r.AudioBytes != 5*16000 {
		t.Errorf("report covers %d chunks, %d bytes; want %d, %d", r.Chunks, r.AudioBytes, chunks, 5*16000)
	}
	survivor := a
	if victim == a {
		survivor = b
	}
	// The survivor got the unacknowledged chunks again, from the stalled
	// one on, and nothing before.
	seqs := survivor.Seqs("moved")
	if at := stallAt.Load(); len(seqs) == 0 || seqs[0] != at {
		t.Errorf("the survivor's first chunk is %v; want %d", seqs[:min(len(seqs), 1)], at)
	}
	if v := mt.Value("calmline.gateway.fullcall.replayed"); v < 1 {
		t.Errorf("replayed chunks counted: %v; want ≥ 1", v)
	}
	if v := mt.Value("calmline.gateway.backend.reconnects", "backend", "fullcall"); v != 1 {
		t.Errorf("fullcall reconnects counted: %v; want 1", v)
	}
}

// TestRealtimeOverflowIsCounted stalls realtime: the realtime queue fills,
// the oldest audio is dropped and counted, and fullcall still gets it all.
func TestRealtimeOverflowIsCounted(t *testing.T) {
	rt, fc := gatewaytest.StartRealtime(t), gatewaytest.StartFullcall(t)
	release := make(chan struct{})
	rt.Configure(func() {
		rt.OnChunk = func(_ string, ch *callv1.AudioChunk) error {
			if ch.Seq == 1 {
				<-release // realtime falls behind
			}
			return nil
		}
	})
	mt := gatewaytest.NewMetrics(t)
	m := manager(t, rt.Addr, fc.Addr, Options{MeterProvider: mt.Provider, RealtimeQueue: 500 * time.Millisecond, RealtimeStall: -1})
	c, err := m.Start(context.Background(), stereo("overflow"), nil)
	if err != nil {
		t.Fatal(err)
	}
	// 10 s of audio: more than gRPC's flow-control windows (64 KiB, 40
	// chunks) and the 5-chunk queue can hold while realtime stalls.
	feed(t, c, 10, nil)
	deadline := time.Now().Add(10 * time.Second)
	for mt.Value("calmline.gateway.audio.dropped", "path", "realtime", "reason", "queue_full") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no realtime overflow counted")
		}
		feed(t, c, 1, nil)
	}
	close(release)
	r, err := c.End(context.Background(), fullcallv1.EndReason_END_REASON_HANGUP)
	if err != nil {
		t.Fatal(err)
	}
	dropped := mt.Value("calmline.gateway.audio.dropped", "path", "realtime", "reason", "queue_full")
	if int(dropped)%1600 != 0 {
		t.Errorf("dropped %v bytes; want whole 100 ms chunks", dropped)
	}
	if r.Incomplete || r.AudioBytes != uint64(c.Timeline())*2 {
		t.Errorf("fullcall report: incomplete %v, %d bytes; want all %d", r.Incomplete, r.AudioBytes, c.Timeline()*2)
	}
	if got := uint64(rt.ChunkCount("overflow"))*1600 + uint64(dropped); got > r.AudioBytes {
		t.Errorf("realtime received and dropped %d bytes, more than the %d sent", got, r.AudioBytes)
	}
}

func TestTrafficMetrics(t *testing.T) {
	rt, fc := gatewaytest.StartRealtime(t), gatewaytest.StartFullcall(t)
	mt := gatewaytest.NewMetrics(t)
	m := manager(t, rt.Addr, fc.Addr, Options{MeterProvider: mt.Provider})
	ev := newEvents()
	c, err := m.Start(context.Background(), stereo("traffic"), ev)
	if err != nil {
		t.Fatal(err)
	}
	feed(t, c, 2, nil)
	c.Sent(100)
	if _, err := c.End(context.Background(), fullcallv1.EndReason_END_REASON_HANGUP); err != nil {
		t.Fatal(err)
	}
	if v := mt.Value("calmline.gateway.audio.in", "tenant", "acme"); v != 32000 {
		t.Errorf("audio in %v bytes; want 32000", v)
	}
	if v := mt.Value("calmline.gateway.events.out", "tenant", "acme"); v != 100 {
		t.Errorf("events out %v bytes; want 100", v)
	}
	if v := mt.Value("calmline.gateway.backend.out", "backend", "fullcall"); v != 32000 {
		t.Errorf("to fullcall %v bytes; want 32000", v)
	}
	for _, dir := range []string{"client_in", "client_out", "backend_out"} {
		if n, sum := mt.Histogram("calmline.gateway.call.traffic", "direction", dir); n != 1 || sum <= 0 {
			t.Errorf("per-call traffic %s: %v calls, %v B/s; want one call with a rate", dir, n, sum)
		}
	}
	if n, _ := mt.Histogram("calmline.gateway.backend.rtt", "backend", "fullcall"); n == 0 {
		t.Error("no fullcall round trip measured")
	}
	if n, _ := mt.Histogram("calmline.gateway.backend.rtt", "backend", "realtime"); n == 0 {
		t.Error("no realtime round trip measured")
	}
}

// TestFullcallStreamFailingOverAndOver breaks the fullcall stream every
// third chunk: each time the call reopens and replays while chunks keep
// coming, which is when a send can race a reopen (and audio queued
// meanwhile merges into unsent chunks). The report still holds every
// chunk once.
func TestFullcallStreamFailingOverAndOver(t *testing.T) {
	rt, fc := gatewaytest.StartRealtime(t), gatewaytest.StartFullcall(t)
	durable := gatewaytest.NewCheckpoints()
	var mu sync.Mutex
	failed := map[uint64]bool{}
	tl := newTimelineOf(t)
	fc.Configure(func() {
		fc.Durable = durable
		fc.OnChunk = func(_ string, ch *callv1.AudioChunk) error {
			mu.Lock()
			defer mu.Unlock()
			tl.add(ch)
			if ch.Seq%3 == 0 && !failed[ch.Seq] {
				failed[ch.Seq] = true
				return errors.New("instance lost")
			}
			return nil
		}
	})
	m := manager(t, rt.Addr, fc.Addr, Options{})
	c, err := m.Start(context.Background(), stereo("flaky"), nil)
	if err != nil {
		t.Fatal(err)
	}
	feed(t, c, 10, nil)
	r, err := c.End(context.Background(), fullcallv1.EndReason_END_REASON_HANGUP)
	if err != nil {
		t.Fatal(err)
	}
	// A chunk carries at most a second: at least 10 chunks, so at least 3
	// failures.
	chunks, bytes, dups := durable.Held("flaky")
	if r.Incomplete || chunks < 10 || bytes != 10*16000 || dups != 0 {
		t.Errorf("stored: incomplete %v, %d chunks (%d twice), %d bytes; want complete, ≥ 10 chunks each once, %d bytes", r.Incomplete, chunks, dups, bytes, 10*16000)
	}
	tl.check(uint64(chunks), 10*8000)
	mu.Lock()
	defer mu.Unlock()
	if len(failed) != chunks/3 {
		t.Errorf("the stream failed %d times; want %d (every third of %d chunks)", len(failed), chunks/3, chunks)
	}
}

// TestAHungRealtimeLosesTheCall hangs the realtime instance scoring a call
// without closing its connection (a stopped process: no FIN, no RST, and
// keepalive would take 13 s): once audio has gone unanswered for the stall
// bound, the call moves to the other instance, the move is reported to
// fullcall as a live-scoring gap, and scoring resumes there.
func TestAHungRealtimeLosesTheCall(t *testing.T) {
	a, b, fc := gatewaytest.StartRealtime(t), gatewaytest.StartRealtime(t), gatewaytest.StartFullcall(t)
	release := make(chan struct{})
	var victim atomic.Pointer[gatewaytest.Realtime]
	for _, r := range []*gatewaytest.Realtime{a, b} {
		r.Configure(func() {
			r.OnChunk = func(_ string, ch *callv1.AudioChunk) error {
				// From the third second on, the instance that has the
				// call stops answering.
				if ch.Seq > 20 && (victim.CompareAndSwap(nil, r) || victim.Load() == r) {
					<-release
					return errors.New("hung")
				}
				return nil
			}
		})
	}
	defer close(release)
	mt := gatewaytest.NewMetrics(t)
	m := manager(t, a.Addr+","+b.Addr, fc.Addr, Options{MeterProvider: mt.Provider, RealtimeStall: 300 * time.Millisecond})
	ev := newEvents()
	c, err := m.Start(context.Background(), stereo("hung"), ev)
	if err != nil {
		t.Fatal(err)
	}
	feed(t, c, 3, nil)
	deadline := time.After(10 * time.Second)
	for len(a.OpenCalls())+len(b.OpenCalls()) < 2 {
		select {
		case <-deadline:
			t.Fatal("the call never left the hung instance")
		case <-time.After(20 * time.Millisecond):
			feed(t, c, 1, nil) // the call goes on meanwhile
		}
	}
	// Scoring resumes on the other instance.
	v := victim.Load()
	survivor := a
	if v == a {
		survivor = b
	}
	for survivor.ChunkCount("hung") == 0 {
		select {
		case <-deadline:
			t.Fatal("no audio reached the surviving instance")
		case <-time.After(20 * time.Millisecond):
			feed(t, c, 1, nil)
		}
	}
	got := len(ev.got)
	feed(t, c, 2, nil)
	r, err := c.End(context.Background(), fullcallv1.EndReason_END_REASON_HANGUP)
	if err != nil {
		t.Fatal(err)
	}
	if r.Incomplete {
		t.Error("a hung realtime made the fullcall report incomplete")
	}
	if len(ev.got) <= got {
		t.Error("no scores after the call moved")
	}
	var gaps int
	for _, e := range fc.CallEvents("hung") {
		if g := e.GetLiveScoringGap(); g != nil && g.Reason == callv1.GapReason_GAP_REASON_FAILOVER {
			gaps++
		}
	}
	// The hung instance still answers health checks here (a stopped
	// process would not), so round-robin may hand it the call again, and
	// the call moves again: every move is counted and reported.
	stalls := mt.Value("calmline.gateway.realtime.stalls", "tenant", "acme")
	if stalls < 1 || float64(gaps) != stalls {
		t.Errorf("%v stalls counted, %d live-scoring gaps reported to fullcall; want as many, at least one", stalls, gaps)
	}
}

// TestASlowRealtimeKeepsItsCalls leaves one call's audio unanswered on an
// instance that goes on answering another call: overloaded for one call,
// not hung. The call stays where it is (moving it would restart its
// analysis on an instance just as busy). The clock is the test's: each
// step is a second of audio for both calls and 100 ms of the clock, ten
// steps, well past the 300 ms stall bound.
func TestASlowRealtimeKeepsItsCalls(t *testing.T) {
	rt, fc := gatewaytest.StartRealtime(t), gatewaytest.StartFullcall(t)
	release := make(chan struct{})
	rt.Configure(func() {
		rt.OnChunk = func(callID string, ch *callv1.AudioChunk) error {
			if callID == "slow" && ch.Seq > 20 {
				<-release
			}
			return nil
		}
	})
	mt := gatewaytest.NewMetrics(t)
	clk := clocktest.New(time.Unix(1_800_000_000, 0))
	m := manager(t, rt.Addr, fc.Addr, Options{MeterProvider: mt.Provider, RealtimeStall: 300 * time.Millisecond, Clock: clk})
	slow, err := m.Start(context.Background(), stereo("slow"), nil)
	if err != nil {
		t.Fatal(err)
	}
	busyEv := newEvents()
	busy, err := m.Start(context.Background(), stereo("busy"), busyEv)
	if err != nil {
		t.Fatal(err)
	}
	bound := time.After(10 * time.Second) // a bound, not a synchronisation
	for range 10 {
		feed(t, slow, 1, nil)
		feed(t, busy, 1, nil)
		// The instance answers the busy call's second before the clock
		// moves on.
		select {
		case <-busyEv.got:
		case <-bound:
			t.Fatal("the busy call's score never came")
		}
		clk.Advance(100 * time.Millisecond)
	}
	// The slow call's audio has gone unanswered for most of the second
	// the clock moved, far past the stall bound.
	if n := mt.Value("calmline.gateway.realtime.stalls", "tenant", "acme"); n != 0 {
		t.Errorf("%v stalls counted on an instance that kept answering; want none", n)
	}
	close(release)
	for _, c := range []*Call{slow, busy} {
		if _, err := c.End(context.Background(), fullcallv1.EndReason_END_REASON_HANGUP); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(rt.OpenCalls()); n != 2 {
		t.Errorf("%d streams opened for two calls; want 2 (none moved)", n)
	}
}
