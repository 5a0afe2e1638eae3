package loadgen

import (
	"context"
	"testing"
	"time"
)

// TestFramesPerWrite drives the real stack with frames sent five at a
// time in one write: every call completes, every byte sent is in the
// stored report, the seconds' scores are still matched to the frames that
// completed them, and sending a group early is not counted as late.
// (That each encoded frame is its own message: TestAppendFrameDecodes.)
func TestFramesPerWrite(t *testing.T) {
	gw, fc, key := startStack(t, 2)
	s, err := Run(context.Background(), Options{
		URL:            "ws://" + gw + "/ws/native",
		APIKey:         key,
		Calls:          2,
		Ramp:           100,
		Duration:       2100 * time.Millisecond,
		Audio:          Synthetic(2),
		BurstHangup:    true,
		FramesPerWrite: 5,
		Reports:        &HTTPReports{BaseURL: "http://" + fc, APIKey: key},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", s)
	if !s.OK || s.Calls.Completed != 2 {
		t.Fatalf("calls %+v, errors %v; want both completed, ok", s.Calls, s.Errors)
	}
	if s.FramesSent < 2*105 || s.AudioBytesSent != uint64(s.FramesSent)*320 {
		t.Errorf("%d frames, %d bytes sent; want ≥ %d frames of 320 bytes", s.FramesSent, s.AudioBytesSent, 2*105)
	}
	if s.Reports == nil || s.Reports.Checked != 2 || s.Reports.OK != 2 {
		t.Errorf("stored reports: %+v; want 2 checked and ok", s.Reports)
	}
	if s.AudioToScore.Count != 4 {
		t.Errorf("%d scores with a latency; want 4 (two whole seconds per call)", s.AudioToScore.Count)
	}
	if s.LateFrames != 0 {
		t.Errorf("%d frames counted late; sending a group when its first frame is due is not late", s.LateFrames)
	}
}

func TestFramesPerWriteBounds(t *testing.T) {
	for _, n := range []int{-1, 51} {
		o := Options{URL: "ws://x", Calls: 1, Duration: time.Second, Audio: Synthetic(1), FramesPerWrite: n}
		if _, err := Run(context.Background(), o); err == nil {
			t.Errorf("FramesPerWrite %d accepted", n)
		}
	}
}
