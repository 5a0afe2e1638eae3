package session

import (
	"cmp"
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/calmline/calmline/gateway/gatewaytest"
	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/clock/clocktest"
	"github.com/calmline/calmline/lib/rpc"
	"github.com/calmline/calmline/lib/tenant"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// events collects a call's events.
type events struct {
	mu     sync.Mutex
	scores []*callv1.ScoreUpdate
	alerts []*callv1.AlertEvent
	got    chan struct{}
}

func newEvents() *events { return &events{got: make(chan struct{}, 1024)} }

func (e *events) Score(u *callv1.ScoreUpdate) {
	e.mu.Lock()
	e.scores = append(e.scores, u)
	e.mu.Unlock()
	e.got <- struct{}{}
}

func (e *events) Alert(a *callv1.AlertEvent) {
	e.mu.Lock()
	e.alerts = append(e.alerts, a)
	e.mu.Unlock()
	e.got <- struct{}{}
}

func manager(t testing.TB, realtime, fullcall string, o Options) *Manager {
	t.Helper()
	rp, err := rpc.NewPool(realtime, 1, rpc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fp, err := rpc.NewPool(fullcall, 1, rpc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rp.Close(); fp.Close() })
	o.Realtime, o.Fullcall = rp, fp
	if o.Pacing.Policy == "" {
		// Tests feed audio far faster than real time; pacing has its own.
		o.Pacing.Policy = PaceOff
	}
	if o.ChunkPhase == 0 {
		// Chunks on whole multiples of their duration, which the tests
		// count; TestChunksEndWhereTheModelScores has the default phase.
		o.ChunkPhase = cmp.Or(o.ChunkDuration, DefaultChunkDuration)
	}
	m, err := NewManager(o)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

var acme = &tenant.Tenant{ID: "acme", MaxConcurrentCalls: 2, AgentScoring: tenant.AgentScoringOn, AlertRule: tenant.DefaultAlertRule}

func stereo(callID string) Start {
	return Start{Tenant: acme, CallID: callID, Format: audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 2},
		Roles: []callv1.ChannelRole{callv1.ChannelRole_CHANNEL_ROLE_CALLER, callv1.ChannelRole_CHANNEL_ROLE_AGENT}, Protocol: "test"}
}

// feed sends seconds of stereo μ-law in 20 ms frames, calling between after
// each second.
func feed(t *testing.T, c *Call, seconds int, between func(sec int)) {
	t.Helper()
	frame := make([]byte, 320)
	for s := range seconds {
		for range 50 {
			if err := c.Audio(frame); err != nil {
				t.Fatal(err)
			}
		}
		if between != nil {
			between(s)
		}
	}
}

func TestStartValidatesAndCountsQuota(t *testing.T) {
	rt, fc := gatewaytest.StartRealtime(t), gatewaytest.StartFullcall(t)
	m := manager(t, rt.Addr, fc.Addr, Options{})
	ctx := context.Background()
	bad := stereo("bad")
	bad.Roles = bad.Roles[:1]
	if _, err := m.Start(ctx, bad, nil); !errors.Is(err, ErrBadStart) {
		t.Errorf("one role for two channels: %v; want ErrBadStart", err)
	}
	a, err := m.Start(ctx, stereo("a"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Start(ctx, stereo("a"), nil); !errors.Is(err, ErrCallLive) {
		t.Errorf("same call id again: %v; want ErrCallLive", err)
	}
	b, err := m.Start(ctx, stereo("b"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Start(ctx, stereo("c"), nil); !errors.Is(err, ErrOverQuota) {
		t.Errorf("third call of a tenant limited to two: %v; want ErrOverQuota", err)
	}
	a.End(ctx, fullcallv1.EndReason_END_REASON_HANGUP)
	if c, err := m.Start(ctx, stereo("c"), nil); err != nil {
		t.Errorf("a call after one ended: %v", err)
	} else {
		c.End(ctx, fullcallv1.EndReason_END_REASON_HANGUP)
	}
	b.End(ctx, fullcallv1.EndReason_END_REASON_HANGUP)
	if m.Live() != 0 {
		t.Errorf("%d calls live after all ended", m.Live())
	}
}

func TestStartFailsWithoutFullcall(t *testing.T) {
	rt, fc := gatewaytest.StartRealtime(t), gatewaytest.StartFullcall(t)
	fc.Kill()
	m := manager(t, rt.Addr, fc.Addr, Options{OpenTimeout: 500 * time.Millisecond})
	if _, err := m.Start(context.Background(), stereo("x"), nil); !errors.Is(err, ErrUnavailable) {
		t.Errorf("start with fullcall down: %v; want ErrUnavailable", err)
	}
	if m.Live() != 0 {
		t.Error("a refused call counts as live")
	}
}

func TestRealtimeFailoverMovesTheCall(t *testing.T) {
	a, b, fc := gatewaytest.StartRealtime(t), gatewaytest.StartRealtime(t), gatewaytest.StartFullcall(t)
	m := manager(t, a.Addr+","+b.Addr, fc.Addr, Options{})
	ev := newEvents()
	c, err := m.Start(context.Background(), stereo("moving"), ev)
	if err != nil {
		t.Fatal(err)
	}
	// Wait for the first score, then kill whichever instance has the call.
	feed(t, c, 2, nil)
	<-ev.got
	victim, survivor := a, b
	if a.ChunkCount("moving") == 0 {
		victim, survivor = b, a
	}
	victim.Kill()
	feed(t, c, 3, nil)
	deadline := time.After(10 * time.Second)
	for survivor.ChunkCount("moving") == 0 {
		select {
		case <-ev.got:
		case <-deadline:
			t.Fatal("the call never reached the surviving instance")
		case <-time.After(10 * time.Millisecond):
			feed(t, c, 1, nil) // the call goes on meanwhile
		}
	}
	r, err := c.End(context.Background(), fullcallv1.EndReason_END_REASON_HANGUP)
	if err != nil {
		t.Fatal(err)
	}
	if r.Incomplete {
		t.Error("a realtime failure made the fullcall report incomplete")
	}
	open := survivor.OpenCalls()[0]
	if open.ResumeSample == 0 {
		t.Error("the call reopened on the survivor from the start, not where it was")
	}
	var gaps int
	for _, e := range fc.CallEvents("moving") {
		if g := e.GetLiveScoringGap(); g != nil && g.Reason == callv1.GapReason_GAP_REASON_FAILOVER {
			gaps++
		}
	}
	if gaps != 1 {
		t.Errorf("%d live-scoring gaps reported to fullcall; want 1", gaps)
	}
}

func TestFullcallReplayAfterAStreamFailure(t *testing.T) {
	rt, fc := gatewaytest.StartRealtime(t), gatewaytest.StartFullcall(t)
	var mu sync.Mutex
	var failAt uint64 // the chunk the first stream failed on
	tl := newTimelineOf(t)
	fc.Configure(func() {
		fc.OnChunk = func(_ string, ch *callv1.AudioChunk) error {
			tl.add(ch)
			mu.Lock()
			defer mu.Unlock()
			// The stream fails on the first chunk past 1.5 s of audio.
			if failAt == 0 && ch.StartSample+uint64(len(ch.Data)/2) > 12000 {
				failAt = ch.Seq
				return errors.New("instance lost")
			}
			return nil
		}
		// The replacement's checkpoint holds the chunks before it.
		fc.AckedAtOpen = func(string) uint64 {
			mu.Lock()
			defer mu.Unlock()
			return failAt - 1
		}
	})
	m := manager(t, rt.Addr, fc.Addr, Options{})
	c, err := m.Start(context.Background(), stereo("replayed"), nil)
	if err != nil {
		t.Fatal(err)
	}
	feed(t, c, 4, nil)
	r, err := c.End(context.Background(), fullcallv1.EndReason_END_REASON_HANGUP)
	if err != nil {
		t.Fatal(err)
	}
	if r.Incomplete || r.Chunks == 0 {
		t.Errorf("report: incomplete %v, %d chunks; want complete", r.Incomplete, r.Chunks)
	}
	// The chunks cover the call's 4 s, each chunk the same stretch every
	// time it was sent.
	tl.check(r.Chunks, 4*8000)
	// Every chunk from the failed one on was sent again after the reopen;
	// none before.
	seen := map[uint64]int{}
	for _, s := range fc.Seqs("replayed") {
		seen[s]++
	}
	if failAt == 0 {
		t.Fatal("the stream never failed")
	}
	for s := uint64(1); s <= r.Chunks; s++ {
		if seen[s] == 0 {
			t.Errorf("chunk %d never reached fullcall", s)
		}
		if s < failAt && seen[s] != 1 {
			t.Errorf("chunk %d, acknowledged before the failure, was sent %d times", s, seen[s])
		}
	}
	if seen[failAt] != 2 {
		t.Errorf("chunk %d, the failed one, was sent %d times; want 2", failAt, seen[failAt])
	}
}

// timelineOf records the chunks a fake backend receives, by sequence
// number, to check that they tile the call's timeline: contiguous from 0,
// a chunk sent again exactly the stretch it was the first time (merging
// never changes a chunk once it went out).
type timelineOf struct {
	t      *testing.T
	mu     sync.Mutex
	chunks map[uint64][2]uint64 // seq → start, samples
}

func newTimelineOf(t *testing.T) *timelineOf {
	return &timelineOf{t: t, chunks: map[uint64][2]uint64{}}
}

func (tl *timelineOf) add(ch *callv1.AudioChunk) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	got := [2]uint64{ch.StartSample, uint64(len(ch.Data) / 2)}
	if prev, ok := tl.chunks[ch.Seq]; ok && prev != got {
		tl.t.Errorf("chunk %d sent as samples %v, then again as %v", ch.Seq, prev, got)
	}
	tl.chunks[ch.Seq] = got
}

// check asserts that chunks 1..n tile samples [0, end).
func (tl *timelineOf) check(n uint64, end uint64) {
	tl.t.Helper()
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if uint64(len(tl.chunks)) != n {
		tl.t.Errorf("%d distinct chunks received; want %d", len(tl.chunks), n)
	}
	at := uint64(0)
	for s := uint64(1); s <= n; s++ {
		ch, ok := tl.chunks[s]
		if !ok || ch[0] != at {
			tl.t.Errorf("chunk %d covers samples %v; want it to start at %d", s, ch, at)
			return
		}
		at += ch[1]
	}
	if at != end {
		tl.t.Errorf("the chunks end at sample %d; want %d", at, end)
	}
}

// TestFullcallBackpressureHoldsTheClient stops fullcall's
// acknowledgements (a real gRPC server on loopback that holds its first
// chunk) for longer than the replay buffer and gRPC's flow-control window
// hold: the call's writer — the adapter's reader, so the client, through
// TCP — is held instead of any audio being dropped, and once fullcall
// acknowledges again the report holds every byte. The clock is the
// test's: fullcall is slow for 30 s of it, inside the failover window.
func TestFullcallBackpressureHoldsTheClient(t *testing.T) {
	rt, fc := gatewaytest.StartRealtime(t), gatewaytest.StartFullcall(t)
	block := make(chan struct{})
	fc.Configure(func() {
		fc.OnChunk = func(_ string, ch *callv1.AudioChunk) error {
			if ch.Seq == 1 {
				<-block // fullcall stalls: nothing is acknowledged
			}
			return nil
		}
	})
	mt := gatewaytest.NewMetrics(t)
	clk := clocktest.New(time.Unix(1_800_000_000, 0))
	m := manager(t, rt.Addr, fc.Addr, Options{MeterProvider: mt.Provider, Clock: clk, ReplayBuffer: time.Second, FullcallFailover: time.Minute})
	c, err := m.Start(context.Background(), stereo("stalled"), nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	// Eight seconds into a one-second buffer, past the 64 KiB (4 s) that
	// gRPC lets out before fullcall reads.
	go func() { _, err := frames(c, 400); done <- err }()
	// The writer waits for room, until the failover deadline at most.
	if ts := clk.WaitForTimers(t, 1); ts[0] != time.Minute {
		t.Errorf("the writer waits with a deadline of %v; want the failover window, 1m", ts[0])
	}
	select {
	case <-done:
		t.Fatal("all the audio was taken while fullcall acknowledged nothing")
	default:
	}
	if at := c.Timeline(); at > 2*8000 {
		t.Errorf("the call took %d samples with a 1 s replay log and nothing acknowledged; want at most the log and a chunk", at)
	}
	clk.Advance(30 * time.Second) // slow, not gone
	close(block)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second): // a bound, not a synchronisation
		t.Fatal("the writer was not let go once fullcall acknowledged again")
	}
	r, err := c.End(context.Background(), fullcallv1.EndReason_END_REASON_HANGUP)
	if err != nil {
		t.Fatal(err)
	}
	if r.Incomplete || r.AudioBytes != 400*320 {
		t.Errorf("report: incomplete %v, %d bytes; want complete, %d bytes", r.Incomplete, r.AudioBytes, 400*320)
	}
	seqs := fc.Seqs("stalled")
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Fatalf("fullcall received chunks %v; want 1..%d in order", seqs, r.Chunks)
		}
	}
	if uint64(len(seqs)) != r.Chunks {
		t.Errorf("fullcall received %d chunks; the close says %d", len(seqs), r.Chunks)
	}
	if gaps := fc.CallGaps("stalled"); len(gaps) != 0 {
		t.Errorf("gaps reached fullcall: %v; want none", gaps)
	}
	if v := mt.Value("calmline.gateway.audio.dropped", "path", "fullcall", "reason", "fullcall_lost"); v != 0 {
		t.Errorf("%v fullcall bytes dropped; want 0", v)
	}
	if v := mt.Value("calmline.gateway.fullcall.backpressure", "tenant", "acme"); v < 30 {
		t.Errorf("backpressure counted %.1f s; want the 30 s the client was held", v)
	}
	if v := mt.Value("calmline.gateway.calls.incomplete", "tenant", "acme"); v != 0 {
		t.Errorf("%v calls counted incomplete; want 0", v)
	}
}

// TestFullcallGoneGivesUpAfterTheFailoverWindow kills fullcall in the
// middle of a call: the writer is held while the replay log is full, and
// only once fullcall has acknowledged nothing for the failover window is
// the call's fullcall audio given up — counted, and the call ended.
func TestFullcallGoneGivesUpAfterTheFailoverWindow(t *testing.T) {
	rt, fc := gatewaytest.StartRealtime(t), gatewaytest.StartFullcall(t)
	mt := gatewaytest.NewMetrics(t)
	clk := clocktest.New(time.Unix(1_800_000_000, 0))
	m := manager(t, rt.Addr, fc.Addr, Options{MeterProvider: mt.Provider, Clock: clk, ReplayBuffer: time.Second, FullcallFailover: 5 * time.Second})
	c, err := m.Start(context.Background(), stereo("orphan"), nil)
	if err != nil {
		t.Fatal(err)
	}
	fc.Kill()
	done := make(chan error, 1)
	go func() { _, err := frames(c, 200); done <- err }()
	// Held: the failover deadline is among the clock's timers (the link's
	// reopening waits on it too).
	waitHeld(t, clk, 5*time.Second, done, "all the audio was taken with fullcall gone")
	select {
	case <-c.Done():
		t.Fatal("the call was ended before the failover window passed")
	default:
	}
	if v := mt.Value("calmline.gateway.audio.dropped", "path", "fullcall", "reason", "fullcall_lost"); v != 0 {
		t.Fatalf("%v bytes given up inside the failover window; want 0", v)
	}
	clk.Advance(5 * time.Second)
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the call was not ended after the failover window")
	}
	if reason, _ := c.AbortReason(); reason != fullcallv1.EndReason_END_REASON_ERROR {
		t.Errorf("abort reason %v; want ERROR", reason)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := c.End(context.Background(), fullcallv1.EndReason_END_REASON_ERROR); err == nil {
		t.Error("End stored a report with fullcall gone")
	}
	if v := mt.Value("calmline.gateway.audio.dropped", "path", "fullcall", "reason", "fullcall_lost"); v <= 0 {
		t.Error("the audio given up was not counted")
	}
	if v := mt.Value("calmline.gateway.calls.incomplete", "tenant", "acme"); v != 1 {
		t.Errorf("%v calls counted incomplete; want 1", v)
	}
}

// TestMaxCallsIsACeiling refuses the call past the gateway's ceiling with
// ErrNoHeadroom, which adapters answer as over quota (4429), and counts
// it by reason.
func TestMaxCallsIsACeiling(t *testing.T) {
	rt, fc := gatewaytest.StartRealtime(t), gatewaytest.StartFullcall(t)
	mt := gatewaytest.NewMetrics(t)
	m := manager(t, rt.Addr, fc.Addr, Options{MeterProvider: mt.Provider, MaxCalls: 1})
	ctx := context.Background()
	a, err := m.Start(ctx, stereo("a"), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Start(ctx, stereo("b"), nil)
	if !errors.Is(err, ErrNoHeadroom) || !errors.Is(err, ErrOverQuota) {
		t.Errorf("a call past the ceiling: %v; want ErrNoHeadroom, also ErrOverQuota", err)
	}
	if v := mt.Value("calmline.gateway.calls.refused", "tenant", "acme", "reason", ReasonCapacityCalls); v != 1 {
		t.Errorf("capacity refusals counted: %v; want 1", v)
	}
	if l := m.Load(); l.Calls != 1 || l.MaxCalls != 1 {
		t.Errorf("load %+v; want 1 call of a ceiling of 1", l)
	}
	a.End(ctx, fullcallv1.EndReason_END_REASON_HANGUP)
	if b, err := m.Start(ctx, stereo("b"), nil); err != nil {
		t.Errorf("a call once another ended: %v", err)
	} else {
		b.End(ctx, fullcallv1.EndReason_END_REASON_HANGUP)
	}
}

func TestDrainAndEndAll(t *testing.T) {
	rt, fc := gatewaytest.StartRealtime(t), gatewaytest.StartFullcall(t)
	m := manager(t, rt.Addr, fc.Addr, Options{})
	c, err := m.Start(context.Background(), stereo("draining"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if live := m.Drain(ctx); live != 1 {
		t.Errorf("Drain with a live call returned %d; want 1", live)
	}
	if _, err := m.Start(context.Background(), stereo("late"), nil); !errors.Is(err, ErrDraining) {
		t.Errorf("start while draining: %v; want ErrDraining", err)
	}
	go m.EndAll(context.Background(), fullcallv1.EndReason_END_REASON_DRAIN)
	<-c.Done()
	reason, _ := c.AbortReason()
	if reason != fullcallv1.EndReason_END_REASON_DRAIN {
		t.Errorf("abort reason %v", reason)
	}
	r, err := c.End(context.Background(), reason)
	if err != nil || r.EndReason != fullcallv1.EndReason_END_REASON_DRAIN {
		t.Errorf("report after drain: %v, %v", r, err)
	}
}

func TestRealtimeAnalysesGoToFullcallAfterTheirAudio(t *testing.T) {
	// realtime's per-second analyses ride the fullcall stream, each after
	// the audio it covers (fullcall takes a second's analysis only when it
	// holds that second's audio), and the open says they come. With
	// fullcall's audio batched, an analysis waits behind the chunk being
	// gathered rather than cutting it short.
	t.Run("each", func(t *testing.T) { testAnalysesToFullcall(t, 0) })
	t.Run("fullcall-batch", func(t *testing.T) { testAnalysesToFullcall(t, time.Second) })
}

func testAnalysesToFullcall(t *testing.T, batch time.Duration) {
	rt, fc := gatewaytest.StartRealtime(t), gatewaytest.StartFullcall(t)
	m := manager(t, rt.Addr, fc.Addr, Options{FullcallBatch: batch})
	ev := newEvents()
	c, err := m.Start(context.Background(), stereo("analysed"), ev)
	if err != nil {
		t.Fatal(err)
	}
	feed(t, c, 4, func(int) { <-ev.got }) // each second's score before the next second
	if _, err := c.End(context.Background(), fullcallv1.EndReason_END_REASON_HANGUP); err != nil {
		t.Fatal(err)
	}
	fc.Configure(func() {
		if !fc.RealtimeAnalysis["analysed"] {
			t.Error("the fullcall stream's open does not say realtime's analyses come")
		}
	})
	got := fc.CallAnalyses("analysed")
	if len(got) != 4 {
		t.Fatalf("fullcall received analyses %+v; want seconds 0 to 3", got)
	}
	for i, a := range got {
		if a.Second != uint32(i) || a.EndSample != uint64(i+1)*8000 || a.Received < a.EndSample {
			t.Errorf("analysis %d: %+v; want second %d, after its audio", i, a, i)
		}
	}
	if n := len(fc.Seqs("analysed")); batch > 0 && n != 4 {
		t.Errorf("fullcall got %d chunks for 4 s batched a second at a time; want 4", n)
	}
}

// TestSlowFullcallHoldsTheClientInsteadOfGivingUp starves one call on a
// fullcall instance that keeps acknowledging another (overloaded, not
// gone): the starved call's writer is held past the failover window for
// as long as the instance answers any call, and its audio is given up
// only once the whole instance has been silent for the window.
func TestSlowFullcallHoldsTheClientInsteadOfGivingUp(t *testing.T) {
	rt, fc := gatewaytest.StartRealtime(t), gatewaytest.StartFullcall(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	fc.Configure(func() {
		fc.OnChunk = func(callID string, _ *callv1.AudioChunk) error {
			if callID == "starved" {
				<-release // never acknowledged while the test runs
			}
			return nil
		}
	})
	mt := gatewaytest.NewMetrics(t)
	clk := clocktest.New(time.Unix(1_800_000_000, 0))
	m := manager(t, rt.Addr, fc.Addr, Options{MeterProvider: mt.Provider, Clock: clk, ReplayBuffer: time.Second, FullcallFailover: 5 * time.Second, RealtimeStall: -1})
	starved, err := m.Start(context.Background(), stereo("starved"), nil)
	if err != nil {
		t.Fatal(err)
	}
	fed, err := m.Start(context.Background(), stereo("fed"), nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := frames(starved, 200); done <- err }()
	waitHeld(t, clk, 5*time.Second, done, "all the audio was taken with its acknowledgements held")
	// fed's audio is acknowledged as the clock moves: the instance is
	// alive. feedAcked waits for the acknowledgement of its last chunk.
	feedAcked := func() {
		t.Helper()
		feed(t, fed, 1, nil)
		want := fed.fc.lastSeqOf()
		for deadline := time.Now().Add(10 * time.Second); fed.fc.ackedSeq() < want; {
			if time.Now().After(deadline) {
				t.Fatalf("fed's chunk %d never acknowledged", want)
			}
			runtime.Gosched()
		}
	}
	for range 3 { // 9 s: past the 5 s window
		clk.Advance(3 * time.Second)
		feedAcked()
		select {
		case <-starved.Done():
			t.Fatal("the starved call was ended while its fullcall instance answered another call")
		case err := <-done:
			t.Fatalf("the starved call's writer was let go (%v) while fullcall held its audio", err)
		default:
		}
	}
	if v := mt.Value("calmline.gateway.audio.dropped", "path", "fullcall", "reason", "fullcall_lost"); v != 0 {
		t.Fatalf("%v bytes given up while the instance answered; want 0", v)
	}
	// The instance goes silent: after the window, the call is given up.
	clk.Advance(5 * time.Second)
	select {
	case <-starved.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the starved call was not ended once its instance had been silent for the window")
	}
	if v := mt.Value("calmline.gateway.audio.dropped", "path", "fullcall", "reason", "fullcall_lost"); v <= 0 {
		t.Error("the audio given up was not counted")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	starved.End(context.Background(), fullcallv1.EndReason_END_REASON_ERROR)
	if _, err := fed.End(context.Background(), fullcallv1.EndReason_END_REASON_HANGUP); err != nil {
		t.Errorf("the call fullcall kept up with: %v", err)
	}
}

// waitHeld waits until a call's writer is held for room in its replay log:
// a timer of the failover window is among the clock's. done closing first
// (the writer took all its audio) fails the test with taken.
func waitHeld(t *testing.T, clk *clocktest.Clock, window time.Duration, done <-chan error, taken string) {
	t.Helper()
	bound := time.After(10 * time.Second) // a bound, not a synchronisation
	for {
		changed := clk.Changed()
		for _, d := range clk.Timers() {
			if d == window {
				return
			}
		}
		select {
		case <-changed:
		case <-done:
			t.Fatal(taken)
		case <-bound:
			t.Fatal("the writer was never held")
		}
	}
}

// lastSeqOf and ackedSeq read the link's last chunk's sequence number and
// what fullcall has acknowledged.
func (l *fcLink) lastSeqOf() uint64 { l.mu.Lock(); defer l.mu.Unlock(); return l.lastSeq }
func (l *fcLink) ackedSeq() uint64  { l.mu.Lock(); defer l.mu.Unlock(); return l.acked }
