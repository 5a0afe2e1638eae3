package session

import (
	"context"
	"testing"

	"github.com/calmline/calmline/gateway/gatewaytest"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// BenchmarkFrameToChunk measures the gateway's hot path: one 20 ms frame
// of stereo μ-law into a live call, batched into 100 ms chunks sent over
// gRPC to realtime and fullcall (fake backends on loopback, in this
// process: their receiving side is in the figures too). One op is one
// frame.
func BenchmarkFrameToChunk(b *testing.B) {
	rt, fc := gatewaytest.StartRealtime(b), gatewaytest.StartFullcall(b)
	m := manager(b, rt.Addr, fc.Addr, Options{})
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
	if _, err := c.End(context.Background(), fullcallv1.EndReason_END_REASON_HANGUP); err != nil {
		b.Fatal(err)
	}
}
