package session

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/calmline/calmline/gateway/gatewaytest"
	"github.com/calmline/calmline/lib/clock/clocktest"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// TestReadPause checks when an adapter may leave its socket unread: after
// a chunk completed at real-time pace, until shortly before the next one
// is due; never after a partial chunk or audio ahead of real time.
func TestReadPause(t *testing.T) {
	rt, fc := gatewaytest.StartRealtime(t), gatewaytest.StartFullcall(t)
	ctx := context.Background()
	const chunk = 50 * time.Millisecond
	clk := clocktest.New(time.Unix(1_800_000_000, 0))
	m := manager(t, rt.Addr, fc.Addr, Options{ChunkDuration: chunk, Clock: clk})
	c, err := m.Start(ctx, stereo("pause"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.End(ctx, fullcallv1.EndReason_END_REASON_HANGUP)
	full := make([]byte, c.ChunkBytes())
	audio := func(b []byte) {
		t.Helper()
		if err := c.Audio(b); err != nil {
			t.Fatal(err)
		}
	}

	// A client at real-time pace delivers a chunk's audio a chunk's
	// duration after the call started (or later: the pause is reckoned
	// from how late it is).
	clk.Advance(chunk)
	audio(full[:len(full)/2])
	if d := c.ReadPause(); d != 0 {
		t.Errorf("after half a chunk: pause %v; want none", d)
	}
	audio(full[len(full)/2:])
	if d, want := c.ReadPause(), chunk-readPauseMargin; d != want {
		t.Errorf("after a chunk at real-time pace: pause %v; want %v", d, want)
	}
	if d := c.ReadPause(); d != 0 {
		t.Errorf("the pause is returned once; the second time %v", d)
	}
	// A chunk 4 ms later than real time: the pause is reckoned from the
	// earliest the client delivered, which rises by at most
	// readPauseRelax a chunk, so the pause ends in time for the next
	// chunk whether it comes early again or late.
	clk.Advance(chunk + 4*time.Millisecond)
	audio(full)
	if d, want := c.ReadPause(), chunk-readPauseMargin-4*time.Millisecond+readPauseRelax; d != want {
		t.Errorf("after a chunk 4 ms late: pause %v; want %v", d, want)
	}
	audio(full) // at once: ahead of real time
	if d := c.ReadPause(); d != 0 {
		t.Errorf("after a chunk ahead of real time: pause %v; want none", d)
	}
}

// A call started on audio the adapter already held (a Twilio-style stream
// waiting for its tracks) counts its clock from when that audio began
// (Start.AudioAge): the held chunk, delivered at once, is at real-time
// pace, not ahead of it, so read pauses begin with the first chunk.
func TestReadPauseCountsFromTheAudiosAge(t *testing.T) {
	rt, fc := gatewaytest.StartRealtime(t), gatewaytest.StartFullcall(t)
	ctx := context.Background()
	const chunk = 50 * time.Millisecond
	clk := clocktest.New(time.Unix(1_800_000_000, 0))
	m := manager(t, rt.Addr, fc.Addr, Options{ChunkDuration: chunk, Clock: clk})
	for _, tc := range []struct {
		age  time.Duration
		want time.Duration
	}{
		{0, 0}, // a chunk at once after the start: ahead of real time
		{chunk, chunk - readPauseMargin},
	} {
		st := stereo(fmt.Sprintf("age-%v", tc.age))
		st.AudioAge = tc.age
		c, err := m.Start(ctx, st, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Audio(make([]byte, c.ChunkBytes())); err != nil {
			t.Fatal(err)
		}
		if d := c.ReadPause(); d != tc.want {
			t.Errorf("audio age %v: pause %v after the held chunk; want %v", tc.age, d, tc.want)
		}
		c.End(ctx, fullcallv1.EndReason_END_REASON_HANGUP)
	}
}
