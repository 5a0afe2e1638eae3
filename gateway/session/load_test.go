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

// TestLagMeterSmoothsAndForgets checks the realtime lag signal: one slow
// second moves it only part of the way, a sustained lag takes it there,
// it comes back as scores come on time again, and with no score for
// lagStale it reads 0 (no evidence of lag).
func TestLagMeterSmoothsAndForgets(t *testing.T) {
	var g lagMeter
	at := time.Unix(1_800_000_000, 0)
	second := func(d float64) {
		for range 100 { // 100 calls' scores in a second
			g.observe(at, d)
		}
		at = at.Add(time.Second)
	}
	if v := g.value(at); v != 0 {
		t.Fatalf("no scores yet: %v; want 0", v)
	}
	for range 10 {
		second(0.2)
	}
	if v := g.value(at); v < 190*time.Millisecond || v > 210*time.Millisecond {
		t.Fatalf("scores 200 ms late: %v; want 200 ms", v)
	}
	second(3) // one slow second
	v := g.value(at)
	if v < 400*time.Millisecond || v > time.Second {
		t.Errorf("after one second 3 s late: %v; want part of the way (about 0.7 s)", v)
	}
	for range 20 {
		second(3)
	}
	if v := g.value(at); v < 2800*time.Millisecond {
		t.Errorf("after 20 s of scores 3 s late: %v; want near 3 s", v)
	}
	for range 30 {
		second(0.2)
	}
	if v := g.value(at); v > 250*time.Millisecond {
		t.Errorf("30 s after realtime caught up: %v; want back near 200 ms", v)
	}
	if v := g.value(at.Add(lagStale + time.Second)); v != 0 {
		t.Errorf("with no score for longer than %v: %v; want 0", lagStale, v)
	}
}

// TestLoadSignals checks what Manager.Load tells admission while both
// backends stall: fullcall's unacknowledged audio exactly, and realtime's
// lag from the chunks its full queue dropped (each counts as the whole
// queue); both go back to nothing once the call ends.
func TestLoadSignals(t *testing.T) {
	rt, fc := gatewaytest.StartRealtime(t), gatewaytest.StartFullcall(t)
	release := make(chan struct{})
	hold := func(_ string, ch *callv1.AudioChunk) error {
		if ch.Seq == 1 {
			<-release
		}
		return nil
	}
	rt.Configure(func() { rt.OnChunk = hold })
	fc.Configure(func() { fc.OnChunk = hold })
	mt := gatewaytest.NewMetrics(t)
	clk := clocktest.New(time.Unix(1_800_000_000, 0))
	m := manager(t, rt.Addr, fc.Addr, Options{MeterProvider: mt.Provider, Clock: clk, RealtimeQueue: 500 * time.Millisecond, RealtimeStall: -1})
	c, err := m.Start(context.Background(), stereo("loaded"), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Enough audio for realtime's queue to overflow past gRPC's
	// flow-control windows; fullcall's 30 s log holds it all.
	seconds := 0
	for mt.Value("calmline.gateway.audio.dropped", "path", "realtime", "reason", "queue_full") == 0 {
		if seconds >= 25 {
			t.Fatal("no realtime overflow after 25 s of audio")
		}
		feed(t, c, 1, nil)
		seconds++
	}
	clk.Advance(time.Second) // the lag's first bucket closes
	l := m.Load()
	if l.Calls != 1 || l.FullcallUnacked != int64(seconds)*16000 {
		t.Errorf("load %+v; want 1 call and all %d bytes unacknowledged", l, seconds*16000)
	}
	// As a duration per call: the one call's unacknowledged audio.
	if want := time.Duration(seconds) * time.Second; l.FullcallBacklog != want {
		t.Errorf("fullcall backlog %v; want %v (all the call's audio)", l.FullcallBacklog, want)
	}
	// A second call with nothing unacknowledged halves the average.
	idle, err := m.Start(context.Background(), stereo("idle"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if l, want := m.Load(), time.Duration(seconds)*time.Second/2; l.FullcallBacklog != want {
		t.Errorf("fullcall backlog with an idle second call %v; want %v", l.FullcallBacklog, want)
	}
	if _, err := idle.End(context.Background(), fullcallv1.EndReason_END_REASON_HANGUP); err != nil {
		t.Fatal(err)
	}
	if l.RealtimeLag != 500*time.Millisecond {
		t.Errorf("realtime lag %v with only dropped chunks; want the queue's 500 ms", l.RealtimeLag)
	}
	close(release)
	if _, err := c.End(context.Background(), fullcallv1.EndReason_END_REASON_HANGUP); err != nil {
		t.Fatal(err)
	}
	if l := m.Load(); l.Calls != 0 || l.FullcallUnacked != 0 || l.FullcallBacklog != 0 {
		t.Errorf("load after the call ended: %+v; want none", l)
	}
}
