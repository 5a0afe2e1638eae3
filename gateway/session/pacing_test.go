package session

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/calmline/calmline/gateway/gatewaytest"
	"github.com/calmline/calmline/lib/clock/clocktest"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// frames sends n 20 ms frames of stereo μ-law and returns the first error.
func frames(c *Call, n int) (sent int, err error) {
	frame := make([]byte, 320)
	for sent = 0; sent < n; sent++ {
		if err := c.Audio(frame); err != nil {
			return sent, err
		}
	}
	return sent, nil
}

func TestPacing(t *testing.T) {
	rt, fc := gatewaytest.StartRealtime(t), gatewaytest.StartFullcall(t)
	ctx := context.Background()

	t.Run("default lets a burst within the lead through untouched", func(t *testing.T) {
		mt := gatewaytest.NewMetrics(t)
		m := manager(t, rt.Addr, fc.Addr, Options{MeterProvider: mt.Provider, Pacing: Pacing{Policy: PaceThrottle}})
		c, err := m.Start(ctx, stereo("burst"), nil)
		if err != nil {
			t.Fatal(err)
		}
		// 1.5 s at once: a PBX catching up after its network stalled.
		if _, err := frames(c, 75); err != nil {
			t.Errorf("a 1.5 s burst: %v", err)
		}
		c.End(ctx, fullcallv1.EndReason_END_REASON_HANGUP)
		if v := mt.Value("calmline.gateway.audio.throttled"); v != 0 {
			t.Errorf("a burst within the 2 s lead was held back %.3f s", v)
		}
	})

	t.Run("throttle holds a client far ahead back to real time", func(t *testing.T) {
		mt := gatewaytest.NewMetrics(t)
		clk := clocktest.New(time.Unix(1_800_000_000, 0))
		m := manager(t, rt.Addr, fc.Addr, Options{MeterProvider: mt.Provider, Clock: clk,
			Pacing: Pacing{Policy: PaceThrottle, MaxLead: 100 * time.Millisecond}})
		c, err := m.Start(ctx, stereo("fast"), nil)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { _, err := frames(c, 25); done <- err }() // 500 ms of audio as fast as possible
		// The client is held each time it gets more than the lead ahead
		// of the clock, until the clock catches up: the test moves the
		// clock by each hold.
		var held time.Duration
		bound := time.After(10 * time.Second) // a bound, not a synchronisation
	feeding:
		for {
			changed := clk.Changed()
			if ts := clk.Timers(); len(ts) > 0 {
				if ts[0] > 100*time.Millisecond {
					t.Fatalf("held for %v at once; want no more than the lead's overshoot", ts[0])
				}
				held += ts[0]
				clk.Advance(ts[0])
				continue
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
				break feeding
			case <-changed:
			case <-bound:
				t.Fatal("the client neither finished nor was held")
			}
		}
		// Accepted no further ahead than the lead: 500 ms of audio takes
		// 400 ms of the clock since the call started.
		if held != 400*time.Millisecond {
			t.Errorf("500 ms of audio held for %v with a 100 ms lead; want 400 ms", held)
		}
		r, err := c.End(ctx, fullcallv1.EndReason_END_REASON_HANGUP)
		if err != nil || r.AudioBytes != 25*320 {
			t.Errorf("report after throttling: %v, %v; want all %d bytes", r, err, 25*320)
		}
		if v := mt.Value("calmline.gateway.audio.throttled", "tenant", "acme"); v < 0.399 || v > 0.401 {
			t.Errorf("throttled time counted %.3f s; want 0.4", v)
		}
	})

	t.Run("refuse ends a client running past the lead", func(t *testing.T) {
		mt := gatewaytest.NewMetrics(t)
		// The clock stands still: the client sends all at once.
		m := manager(t, rt.Addr, fc.Addr, Options{MeterProvider: mt.Provider, Clock: clocktest.New(time.Unix(1_800_000_000, 0)),
			Pacing: Pacing{Policy: PaceRefuse, MaxLead: 100 * time.Millisecond}})
		c, err := m.Start(ctx, stereo("refused"), nil)
		if err != nil {
			t.Fatal(err)
		}
		sent, err := frames(c, 50)
		if !errors.Is(err, ErrTooFast) {
			t.Fatalf("1 s of audio at once with a 100 ms lead: %v; want ErrTooFast", err)
		}
		// The first 100 ms are within the lead; the next frame is not.
		if sent != 5 {
			t.Errorf("refused after %d frames; want 5", sent)
		}
		c.End(ctx, fullcallv1.EndReason_END_REASON_ERROR)
		if v := mt.Value("calmline.gateway.calls.too_fast", "tenant", "acme"); v != 1 {
			t.Errorf("too-fast refusals counted: %v; want 1", v)
		}
	})

	t.Run("throttle refuses what it would have to hold too long", func(t *testing.T) {
		m := manager(t, rt.Addr, fc.Addr, Options{Pacing: Pacing{Policy: PaceThrottle}})
		c, err := m.Start(ctx, stereo("gap-ahead"), nil)
		if err != nil {
			t.Fatal(err)
		}
		// A minute of pause declared in advance would put the timeline a
		// minute ahead: no wait that long is reasonable, and the gap is
		// refused before the backends analyse a minute of nothing.
		if err := c.Gap(60*8000, callv1.GapReason_GAP_REASON_PAUSED, "test"); !errors.Is(err, ErrTooFast) {
			t.Errorf("a gap a minute ahead of the clock: %v; want ErrTooFast", err)
		}
		// A gap within the lead is taken, like audio.
		if err := c.Gap(8000, callv1.GapReason_GAP_REASON_PAUSED, "test"); err != nil {
			t.Errorf("a 1 s gap within the 2 s lead: %v", err)
		}
		if _, err := frames(c, 1); err != nil {
			t.Errorf("audio after the gap: %v", err)
		}
		c.End(ctx, fullcallv1.EndReason_END_REASON_ERROR)
		gaps := fc.CallGaps("gap-ahead")
		if len(gaps) != 1 || gaps[0].Samples != 8000 {
			t.Errorf("gaps reaching fullcall: %v; want only the 1 s one", gaps)
		}
	})
}

func TestBadPacingPolicy(t *testing.T) {
	rt, fc := gatewaytest.StartRealtime(t), gatewaytest.StartFullcall(t)
	m := manager(t, rt.Addr, fc.Addr, Options{})
	if _, err := NewManager(Options{Realtime: m.o.Realtime, Fullcall: m.o.Fullcall, Pacing: Pacing{Policy: "slow"}}); err == nil {
		t.Error(`pacing policy "slow" accepted`)
	}
}
