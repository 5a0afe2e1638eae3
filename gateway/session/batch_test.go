package session

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/calmline/calmline/gateway/gatewaytest"
	"github.com/calmline/calmline/lib/clock/clocktest"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

func TestMergeChunk(t *testing.T) {
	a := &callv1.AudioChunk{Seq: 3, StartSample: 100, Data: []byte{1, 2, 3, 4}}
	b := &callv1.AudioChunk{Seq: 4, StartSample: 102, Data: []byte{5, 6}}
	// Two-byte frames: a covers samples 100..101, b 102.
	m, ok := mergeChunk(a, b, false, 2, 6)
	if !ok {
		t.Fatal("contiguous chunks within the limit were not merged")
	}
	if m == a || m.Seq != 3 || m.StartSample != 100 || !bytes.Equal(m.Data, []byte{1, 2, 3, 4, 5, 6}) {
		t.Errorf("merged %v; want a new chunk 3 at 100 holding both", m)
	}
	// Data not owned (shared by both links) is never written.
	m.Data[0] = 9
	if !bytes.Equal(a.Data, []byte{1, 2, 3, 4}) || !bytes.Equal(b.Data, []byte{5, 6}) {
		t.Errorf("the merged chunks changed: %v %v", a, b)
	}
	m.Data[0] = 1
	c := &callv1.AudioChunk{Seq: 5, StartSample: 103, Data: []byte{7, 8}}
	if _, ok := mergeChunk(m, c, true, 2, 6); ok {
		t.Error("merged past the limit")
	}
	gap := &callv1.AudioChunk{Seq: 5, StartSample: 104, Data: []byte{7, 8}}
	if _, ok := mergeChunk(a, gap, false, 2, 100); ok {
		t.Error("merged chunks that are not contiguous")
	}
	// Owned data grows in place.
	m2, ok := mergeChunk(m, c, true, 2, 100)
	if !ok || m2 != m || m2.StartSample != 100 || !bytes.Equal(m2.Data, []byte{1, 2, 3, 4, 5, 6, 7, 8}) {
		t.Errorf("merged %v, %v; want chunk 3 holding all four frames", m2, ok)
	}
}

// TestIdleLinksSendEachChunkAtOnce feeds a call one chunk at a time, each
// once the previous one reached both backends, on a clock that never
// moves: every chunk goes out as it completes, alone — batching waits for
// nothing (no timer: this clock would never fire it).
func TestIdleLinksSendEachChunkAtOnce(t *testing.T) {
	rt, fc := gatewaytest.StartRealtime(t), gatewaytest.StartFullcall(t)
	rtGot, fcGot := make(chan *callv1.AudioChunk, 16), make(chan *callv1.AudioChunk, 16)
	rt.Configure(func() {
		rt.OnChunk = func(_ string, ch *callv1.AudioChunk) error { rtGot <- ch; return nil }
	})
	fc.Configure(func() {
		fc.OnChunk = func(_ string, ch *callv1.AudioChunk) error { fcGot <- ch; return nil }
	})
	mt := gatewaytest.NewMetrics(t)
	clk := clocktest.New(time.Unix(1_800_000_000, 0))
	m := manager(t, rt.Addr, fc.Addr, Options{MeterProvider: mt.Provider, Clock: clk})
	c, err := m.Start(context.Background(), stereo("idle"), nil)
	if err != nil {
		t.Fatal(err)
	}
	frame := make([]byte, 320)
	for i := range 10 {
		for range 5 { // 100 ms: one chunk
			if err := c.Audio(frame); err != nil {
				t.Fatal(err)
			}
		}
		for name, got := range map[string]chan *callv1.AudioChunk{"realtime": rtGot, "fullcall": fcGot} {
			select {
			case ch := <-got:
				if ch.StartSample != uint64(i*800) || len(ch.Data) != 1600 {
					t.Errorf("%s got samples %d+%d; want chunk %d alone, %d+800", name, ch.StartSample, len(ch.Data)/2, i+1, i*800)
				}
			case <-time.After(10 * time.Second): // a bound, not a synchronisation
				t.Fatalf("chunk %d never reached %s", i+1, name)
			}
		}
	}
	if _, err := c.End(context.Background(), fullcallv1.EndReason_END_REASON_HANGUP); err != nil {
		t.Fatal(err)
	}
	if seqs := fc.Seqs("idle"); len(seqs) != 10 {
		t.Errorf("fullcall got chunks %v; want 1..10", seqs)
	}
	for _, b := range []string{"realtime", "fullcall"} {
		if v := mt.Value("calmline.gateway.backend.chunks", "backend", b); v != 10 {
			t.Errorf("chunks to %s counted: %v; want 10", b, v)
		}
	}
}

// TestBusyLinkMergesWhatQueued stalls fullcall on the call's first chunk
// while 8 s of audio come in: past gRPC's flow-control window (64 KiB, 4 s)
// the link's sender is held in Send, and the audio queued meanwhile goes
// out merged, at most a second per chunk, once fullcall reads again. The
// chunks still tile the timeline and the report holds every byte.
func TestBusyLinkMergesWhatQueued(t *testing.T) {
	rt, fc := gatewaytest.StartRealtime(t), gatewaytest.StartFullcall(t)
	block := make(chan struct{})
	tl := newTimelineOf(t)
	fc.Configure(func() {
		fc.OnChunk = func(_ string, ch *callv1.AudioChunk) error {
			tl.add(ch)
			if ch.Seq == 1 {
				<-block
			}
			return nil
		}
	})
	mt := gatewaytest.NewMetrics(t)
	m := manager(t, rt.Addr, fc.Addr, Options{MeterProvider: mt.Provider, RealtimeStall: -1})
	c, err := m.Start(context.Background(), stereo("busy"), nil)
	if err != nil {
		t.Fatal(err)
	}
	feed(t, c, 8, nil)
	close(block)
	r, err := c.End(context.Background(), fullcallv1.EndReason_END_REASON_HANGUP)
	if err != nil {
		t.Fatal(err)
	}
	if r.Incomplete || r.AudioBytes != 8*16000 {
		t.Errorf("report: incomplete %v, %d bytes; want complete, %d", r.Incomplete, r.AudioBytes, 8*16000)
	}
	tl.check(r.Chunks, 8*8000)
	t.Logf("8 s of 100 ms chunks went out in %d chunks", r.Chunks)
	// The 4 s past the window went out in at most 4 + 1 chunks (a second
	// each, the first of them possibly partial), not 40.
	if r.Chunks > 40+5 {
		t.Errorf("8 s went out in %d chunks; want what queued behind the window merged", r.Chunks)
	}
	if v := mt.Value("calmline.gateway.backend.chunks", "backend", "fullcall"); v != float64(r.Chunks) {
		t.Errorf("chunks to fullcall counted: %v; want %d", v, r.Chunks)
	}
}
