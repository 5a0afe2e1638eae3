package session

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/calmline/calmline/gateway/gatewaytest"
	"github.com/calmline/calmline/lib/clock/clocktest"
	"github.com/calmline/calmline/lib/voice"
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
// once the previous one reached realtime, on a clock that never moves:
// every chunk goes out as it completes, alone — batching waits for nothing
// (no timer: this clock would never fire it). With FullcallBatch, fullcall
// gets the call's audio a second at a time instead, and the rest with the
// close.
func TestIdleLinksSendEachChunkAtOnce(t *testing.T) {
	t.Run("each", func(t *testing.T) { testIdleLinks(t, 0) })
	t.Run("fullcall-batch", func(t *testing.T) { testIdleLinks(t, time.Second) })
}

func testIdleLinks(t *testing.T, batch time.Duration) {
	rt, fc, rtGot, fcGot := chunkTaps(t)
	mt := gatewaytest.NewMetrics(t)
	clk := clocktest.New(time.Unix(1_800_000_000, 0))
	m := manager(t, rt.Addr, fc.Addr, Options{MeterProvider: mt.Provider, Clock: clk, FullcallBatch: batch, ChunkDuration: 100 * time.Millisecond})
	c, err := m.Start(context.Background(), stereo("idle"), nil)
	if err != nil {
		t.Fatal(err)
	}
	frame := make([]byte, 320)
	for i := range 15 {
		for range 5 { // 100 ms: one chunk
			if err := c.Audio(frame); err != nil {
				t.Fatal(err)
			}
		}
		receiveChunk(t, "realtime", rtGot, uint64(i+1), uint64(i*800), 800)
		if batch == 0 {
			receiveChunk(t, "fullcall", fcGot, uint64(i+1), uint64(i*800), 800)
		}
	}
	fcChunks := 15.0
	if batch > 0 {
		// The first second went to fullcall as one chunk once it was
		// whole; the rest goes with the close.
		receiveChunk(t, "fullcall", fcGot, 1, 0, 8000)
		fcChunks = 2
	}
	if _, err := c.End(context.Background(), fullcallv1.EndReason_END_REASON_HANGUP); err != nil {
		t.Fatal(err)
	}
	if batch > 0 {
		receiveChunk(t, "fullcall", fcGot, 2, 8000, 4000)
	}
	if seqs := fc.Seqs("idle"); float64(len(seqs)) != fcChunks {
		t.Errorf("fullcall got chunks %v; want %v", seqs, fcChunks)
	}
	for b, want := range map[string]float64{"realtime": 15, "fullcall": fcChunks} {
		if v := mt.Value("calmline.gateway.backend.chunks", "backend", b); v != want {
			t.Errorf("chunks to %s counted: %v; want %v", b, v, want)
		}
	}
}

// TestBusyLinksMergeWhatQueued stalls realtime and fullcall on the call's
// first chunk while 8 s of audio come in: past gRPC's flow-control window
// (64 KiB, 4 s) each link's sender is held in Send, and the audio queued
// meanwhile goes out merged, at most a second per chunk, once the backends
// read again. The chunks still tile the timeline, nothing is dropped
// (realtime's queue holds 10 s here) and the report holds every byte.
func TestBusyLinksMergeWhatQueued(t *testing.T) {
	rt, fc := gatewaytest.StartRealtime(t), gatewaytest.StartFullcall(t)
	rtBlock, fcBlock := make(chan struct{}), make(chan struct{})
	tl := newTimelineOf(t)
	var mu sync.Mutex
	var rtEnd uint64 // where the audio realtime received so far ends
	var rtChunks int
	rt.Configure(func() {
		rt.OnChunk = func(_ string, ch *callv1.AudioChunk) error {
			mu.Lock()
			if ch.StartSample != rtEnd || len(ch.Data) > 16000 {
				t.Errorf("realtime got samples %d+%d after %d; want contiguous chunks of at most a second", ch.StartSample, len(ch.Data)/2, rtEnd)
			}
			rtEnd = ch.StartSample + uint64(len(ch.Data)/2)
			rtChunks++
			first := rtChunks == 1
			mu.Unlock()
			if first {
				<-rtBlock
			}
			return nil
		}
	})
	fc.Configure(func() {
		fc.OnChunk = func(_ string, ch *callv1.AudioChunk) error {
			tl.add(ch)
			if ch.Seq == 1 {
				<-fcBlock
			}
			return nil
		}
	})
	mt := gatewaytest.NewMetrics(t)
	m := manager(t, rt.Addr, fc.Addr, Options{MeterProvider: mt.Provider, RealtimeStall: -1, RealtimeQueue: 10 * time.Second})
	c, err := m.Start(context.Background(), stereo("busy"), nil)
	if err != nil {
		t.Fatal(err)
	}
	feed(t, c, 8, nil)
	close(rtBlock)
	close(fcBlock)
	r, err := c.End(context.Background(), fullcallv1.EndReason_END_REASON_HANGUP)
	if err != nil {
		t.Fatal(err)
	}
	if r.Incomplete || r.AudioBytes != 8*16000 {
		t.Errorf("report: incomplete %v, %d bytes; want complete, %d", r.Incomplete, r.AudioBytes, 8*16000)
	}
	tl.check(r.Chunks, 8*8000)
	mu.Lock()
	defer mu.Unlock()
	t.Logf("8 s of 100 ms chunks went to realtime in %d chunks, to fullcall in %d", rtChunks, r.Chunks)
	if rtEnd != 8*8000 {
		t.Errorf("realtime's audio ends at sample %d; want all 8 s", rtEnd)
	}
	// The 4 s past the window went out in at most 4 + 1 chunks (a second
	// each, the first of them possibly partial), not 40.
	if rtChunks > 40+5 {
		t.Errorf("8 s went to realtime in %d chunks; want what queued behind the window merged", rtChunks)
	}
	if r.Chunks > 40+5 {
		t.Errorf("8 s went to fullcall in %d chunks; want what queued behind the window merged", r.Chunks)
	}
	if v := mt.Value("calmline.gateway.backend.chunks", "backend", "fullcall"); v != float64(r.Chunks) {
		t.Errorf("chunks to fullcall counted: %v; want %d", v, r.Chunks)
	}
	if v := mt.Value("calmline.gateway.backend.chunks", "backend", "realtime"); v != float64(rtChunks) {
		t.Errorf("chunks to realtime counted: %v; want %d", v, rtChunks)
	}
	if v := mt.Value("calmline.gateway.audio.dropped", "path", "realtime", "reason", "queue_full"); v != 0 {
		t.Errorf("%v bytes dropped on the realtime path; want none", v)
	}
}

// A write that completes several chunks (a PBX's 200 ms frame, a burst)
// sends them as one message on each link, at most a second's worth each,
// not one message per 100 ms chunk: the chunks would all go at the same
// moment anyway.
func TestLongFramesGoOutAsOneMessage(t *testing.T) {
	rt, fc, rtGot, fcGot := chunkTaps(t)
	clk := clocktest.New(time.Unix(1_800_000_000, 0))
	m := manager(t, rt.Addr, fc.Addr, Options{Clock: clk, ChunkDuration: 100 * time.Millisecond})
	c, err := m.Start(context.Background(), stereo("long"), nil)
	if err != nil {
		t.Fatal(err)
	}
	both := receiveBoth(t, rtGot, fcGot)
	// 200 ms frames (stereo μ-law: 3,200 bytes), two chunks each.
	frame := make([]byte, 3200)
	for i := range 4 {
		if err := c.Audio(frame); err != nil {
			t.Fatal(err)
		}
		both(uint64(i+1), uint64(i*1600), 1600)
	}
	// 150 ms: a chunk, and 50 ms waits; then 1.9 s at once (realtime's
	// queue holds 2 s): 1.9 s of whole chunks in messages of at most a
	// second, and 50 ms waits for the end.
	if err := c.Audio(frame[:2400]); err != nil {
		t.Fatal(err)
	}
	both(5, 6400, 800)
	if err := c.Audio(make([]byte, 30400)); err != nil {
		t.Fatal(err)
	}
	both(6, 7200, 8000)
	both(7, 15200, 7200)
	if _, err := c.End(context.Background(), fullcallv1.EndReason_END_REASON_HANGUP); err != nil {
		t.Fatal(err)
	}
	both(8, 22400, 400)
	if got := fc.Seqs("long"); len(got) != 8 {
		t.Errorf("fullcall got chunks %v; want 8", got)
	}
}

// chunkTaps starts scriptable backends that hand every audio chunk they
// receive to the returned channels.
func chunkTaps(t *testing.T) (rt *gatewaytest.Realtime, fc *gatewaytest.Fullcall, rtGot, fcGot chan *callv1.AudioChunk) {
	rt, fc = gatewaytest.StartRealtime(t), gatewaytest.StartFullcall(t)
	rtGot, fcGot = make(chan *callv1.AudioChunk, 16), make(chan *callv1.AudioChunk, 16)
	rt.Configure(func() {
		rt.OnChunk = func(_ string, ch *callv1.AudioChunk) error { rtGot <- ch; return nil }
	})
	fc.Configure(func() {
		fc.OnChunk = func(_ string, ch *callv1.AudioChunk) error { fcGot <- ch; return nil }
	})
	return rt, fc, rtGot, fcGot
}

// receiveBoth returns a check that both backends received the next chunk
// as receiveChunk describes it.
func receiveBoth(t *testing.T, rtGot, fcGot chan *callv1.AudioChunk) func(seq, start, samples uint64) {
	return func(seq, start, samples uint64) {
		t.Helper()
		receiveChunk(t, "realtime", rtGot, seq, start, samples)
		receiveChunk(t, "fullcall", fcGot, seq, start, samples)
	}
}

// receiveChunk waits for the next chunk name's backend received and checks
// its sequence number, start and length (stereo 8-bit samples).
func receiveChunk(t *testing.T, name string, got chan *callv1.AudioChunk, seq, start, samples uint64) {
	t.Helper()
	select {
	case ch := <-got:
		if ch.Seq != seq || ch.StartSample != start || len(ch.Data) != int(samples)*2 {
			t.Errorf("%s got chunk %d, samples %d+%d; want chunk %d, %d+%d", name, ch.Seq, ch.StartSample, len(ch.Data)/2, seq, start, samples)
		}
	case <-time.After(10 * time.Second): // a bound, not a synchronisation
		t.Fatalf("chunk %d never reached %s", seq, name)
	}
}

// By default chunks end where the voice model can score a second: 160 ms
// past it (voice.Latency frames), so the audio that completes a second's
// score leaves with the frame that brings it, not with the next chunk
// 40 ms later. The first chunk is 160 ms, every later one 200 ms.
func TestChunksEndWhereTheModelScores(t *testing.T) {
	if want := time.Duration(voice.Latency) * time.Second / voice.FrameRate; DefaultChunkPhase != want {
		t.Fatalf("DefaultChunkPhase %v; the voice model's latency is %v", DefaultChunkPhase, want)
	}
	rt, fc, rtGot, fcGot := chunkTaps(t)
	clk := clocktest.New(time.Unix(1_800_000_000, 0))
	m := manager(t, rt.Addr, fc.Addr, Options{Clock: clk, ChunkPhase: DefaultChunkPhase})
	c, err := m.Start(context.Background(), stereo("phase"), nil)
	if err != nil {
		t.Fatal(err)
	}
	both := receiveBoth(t, rtGot, fcGot)
	// 20 ms frames (stereo μ-law: 320 bytes) up to 1.16 s, each chunk
	// received before the next frame: it leaves with its last frame.
	frame := make([]byte, 320)
	feed := func(frames int) {
		t.Helper()
		for range frames {
			if err := c.Audio(frame); err != nil {
				t.Fatal(err)
			}
		}
	}
	feed(8)
	both(1, 0, 1280)
	for i := range 5 {
		feed(10)
		both(uint64(i+2), uint64(1280+i*1600), 1600)
	}
	// 190 ms more completes nothing; 10 ms more completes 1.36 s.
	for range 19 {
		if err := c.Audio(frame[:160]); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case ch := <-rtGot:
		t.Fatalf("chunk %d (%d+%d) sent before its end", ch.Seq, ch.StartSample, len(ch.Data)/2)
	default:
	}
	if err := c.Audio(frame[:160]); err != nil {
		t.Fatal(err)
	}
	both(7, 9280, 1600)
	if _, err := c.End(context.Background(), fullcallv1.EndReason_END_REASON_HANGUP); err != nil {
		t.Fatal(err)
	}
	if got := fc.Seqs("phase"); len(got) != 7 {
		t.Errorf("fullcall got chunks %v; want 7", got)
	}

	// The phase is taken modulo the chunk's duration; the default applies
	// when none is given, and a negative one is refused.
	for _, tc := range []struct {
		chunk, phase time.Duration
		first        uint64 // samples in the first chunk
	}{
		{100 * time.Millisecond, 0, 480},
		{200 * time.Millisecond, 200 * time.Millisecond, 1600},
		{time.Second, 0, 1280},
	} {
		m, err := NewManager(Options{Realtime: m.o.Realtime, Fullcall: m.o.Fullcall, ChunkDuration: tc.chunk, ChunkPhase: tc.phase})
		if err != nil {
			t.Fatal(err)
		}
		c := m.newCall(stereo("p"), nil)
		if got := c.chunkEnd(100_000); got == 0 || c.chunkEnd(tc.first-1) != 0 || c.chunkEnd(tc.first) != tc.first {
			t.Errorf("chunks of %v, phase %v: first chunk not %d samples (chunkEnd(%d) = %d)", tc.chunk, tc.phase, tc.first, tc.first, c.chunkEnd(tc.first))
		}
	}
	if _, err := NewManager(Options{Realtime: m.o.Realtime, Fullcall: m.o.Fullcall, ChunkPhase: -time.Millisecond}); err == nil {
		t.Error("a negative ChunkPhase was accepted")
	}
}
