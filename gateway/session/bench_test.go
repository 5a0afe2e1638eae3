package session

import (
	"context"
	"testing"
	"time"

	"github.com/calmline/calmline/gateway/gatewaytest"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// BenchmarkFrameToChunk measures the gateway's hot path: one 20 ms frame
// of stereo μ-law into a live call, batched into 100 ms chunks sent over
// gRPC to realtime and fullcall (fake backends on loopback, in this
// process: their receiving side is in the figures too). One op is one
// frame. The frames come far faster than real time, so the replay buffer
// is made to hold them all (the fake fullcall acknowledges as fast as it
// can) and realtime's queue drops the oldest, as it would.
func BenchmarkFrameToChunk(b *testing.B) {
	rt, fc := gatewaytest.StartRealtime(b), gatewaytest.StartFullcall(b)
	m := manager(b, rt.Addr, fc.Addr, Options{ReplayBuffer: time.Duration(b.N)*20*time.Millisecond + time.Minute})
	c, err := m.Start(context.Background(), stereo("bench"), nil)
	if err != nil {
		b.Fatal(err)
	}
	frame := make([]byte, 320)
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	b.ResetTimer()
	for range b.N {
		if err := c.Audio(frame); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	r, err := c.End(context.Background(), fullcallv1.EndReason_END_REASON_HANGUP)
	if err != nil {
		b.Fatal(err)
	}
	if r.Incomplete {
		b.Fatal("fullcall did not get every chunk")
	}
}
