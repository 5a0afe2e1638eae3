package session

import (
	"context"
	"testing"
	"time"

	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"

	"github.com/calmline/calmline/gateway/gatewaytest"
)

// TestReadPause checks when an adapter may leave its socket unread: after
// a chunk completed at real-time pace, until shortly before the next one
// is due; never after a partial chunk or audio ahead of real time.
func TestReadPause(t *testing.T) {
	rt, fc := gatewaytest.StartRealtime(t), gatewaytest.StartFullcall(t)
	ctx := context.Background()
	const chunk = 50 * time.Millisecond
	m := manager(t, rt.Addr, fc.Addr, Options{ChunkDuration: chunk})
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
	time.Sleep(chunk)
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
	audio(full) // at once: ahead of real time
	if d := c.ReadPause(); d != 0 {
		t.Errorf("after a chunk ahead of real time: pause %v; want none", d)
	}
}
