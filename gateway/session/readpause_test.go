package session

import (
	"context"
	"testing"
	"time"

	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"

	"github.com/calmline/calmline/gateway/gatewaytest"
)

// TestReadPause checks when an adapter may leave its socket unread: after
// a chunk completed at real-time pace, for 60 % of a chunk; never after
// the first chunk, a partial one, or audio sent faster than real time.
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

	audio(full)
	if d := c.ReadPause(); d != 0 {
		t.Errorf("after the first chunk: pause %v; want none (no pace known)", d)
	}
	// The client's real-time pace: the next chunk's audio comes a
	// chunk's duration later.
	time.Sleep(chunk)
	audio(full[:len(full)/2])
	if d := c.ReadPause(); d != 0 {
		t.Errorf("after half a chunk: pause %v; want none", d)
	}
	audio(full[len(full)/2:])
	if d, want := c.ReadPause(), chunk*6/10; d != want {
		t.Errorf("after a chunk at real-time pace: pause %v; want %v", d, want)
	}
	if d := c.ReadPause(); d != 0 {
		t.Errorf("the pause is returned once; the second time %v", d)
	}
	audio(full) // at once: faster than real time
	if d := c.ReadPause(); d != 0 {
		t.Errorf("after a chunk sent at once: pause %v; want none", d)
	}
}
