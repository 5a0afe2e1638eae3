package loadgen

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/calmline/calmline/cmd/stack"
	"github.com/calmline/calmline/lib/tenant"
)

// startStack runs every service in this process on free ports, with one
// tenant limited to max concurrent calls, and returns the gateway's and
// fullcall's addresses and the tenant's key.
func startStack(t *testing.T, max int) (gateway, fullcall, key string) {
	t.Helper()
	key = tenant.NewKey()
	reg, err := tenant.NewRegistry([]*tenant.Tenant{{ID: "acme", MaxConcurrentCalls: max,
		APIKeys: []tenant.APIKey{{ID: "k", SHA256: tenant.HashKey(key)}}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	st, err := stack.New(ctx, stack.Options{DataDir: t.TempDir(), Tenants: reg})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- st.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("stack: %v", err)
		}
	})
	return st.Addr(stack.Gateway).String(), st.Addr(stack.Fullcall).String(), key
}

func TestLoadAgainstTheRealStack(t *testing.T) {
	gw, fc, key := startStack(t, 3)
	s, err := Run(context.Background(), Options{
		URL:         "ws://" + gw + "/ws/native",
		APIKey:      key,
		Calls:       4, // one over the tenant's limit
		Ramp:        100,
		Duration:    2100 * time.Millisecond,
		Audio:       Synthetic(2),
		BurstHangup: true,
		SourceAddrs: []string{"127.0.0.1", "127.0.0.2"},
		Reports:     &HTTPReports{BaseURL: "http://" + fc, APIKey: key},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", s)
	// The fourth call is refused before the upgrade (429), or at start
	// (4429) when it raced past the check as the third started.
	if s.Calls.Started != 3 || s.Calls.Completed != 3 || s.Calls.Refused != 1 || s.Errors["refused_http_429"]+s.Errors["refused_close_4429"] != 1 {
		t.Errorf("calls %+v, errors %v; want 3 completed and 1 refused over quota", s.Calls, s.Errors)
	}
	if s.OK {
		t.Error("a run with a refused call is reported ok")
	}
	// 2.1 s or a little more of 20 ms frames per call, looped over 2 s of
	// audio, every byte of it in the stored reports.
	if s.FramesSent < 3*105 || s.AudioBytesSent != uint64(s.FramesSent)*320 {
		t.Errorf("%d frames, %d bytes sent; want ≥ %d frames of 320 bytes", s.FramesSent, s.AudioBytesSent, 3*105)
	}
	if s.Reports == nil || s.Reports.Checked != 3 || s.Reports.OK != 3 {
		t.Errorf("stored reports: %+v; want 3 checked and ok", s.Reports)
	}
	// A score for each whole second, matched to the frame that completed
	// it; then the partial last second.
	if s.AudioToScore.Count != 6 || s.ScoresReceived != 9 {
		t.Errorf("%d scores, %d with a latency; want 9 and 6", s.ScoresReceived, s.AudioToScore.Count)
	}
	if l := s.AudioToScore; l.P50 <= 0 || l.P50 > l.P99 || l.P99 > l.Max {
		t.Errorf("audio→score latency %+v is not a distribution", l)
	}
	if s.StopToStopped.Count != 3 || s.Hangup.SpreadMS > 1000 {
		t.Errorf("hang-ups: %+v, %+v; want 3 reports, all stops within a second", s.StopToStopped, s.Hangup)
	}
	if s.Client.CPUUserS+s.Client.CPUSystemS <= 0 {
		t.Errorf("client CPU %+v not measured", s.Client)
	}
}

func TestRefusedKeyAndBadOptions(t *testing.T) {
	gw, _, _ := startStack(t, 1)
	s, err := Run(context.Background(), Options{URL: "ws://" + gw + "/ws/native", APIKey: "clk_wrong", Calls: 2, Duration: time.Second, Audio: Synthetic(1)})
	if err != nil {
		t.Fatal(err)
	}
	if s.Calls.Refused != 2 || s.Errors["refused_http_401"] != 2 || s.OK {
		t.Errorf("calls with a wrong key: %+v %v; want both refused with 401", s.Calls, s.Errors)
	}
	for _, o := range []Options{
		{URL: "ws://x", Calls: 1, Duration: time.Second, Audio: Synthetic(1), Protocol: "sip"},
		{URL: "ws://x", Calls: 0, Duration: time.Second, Audio: Synthetic(1)},
		{URL: "ws://x", Calls: 1, Duration: time.Millisecond, Audio: Synthetic(1)},
		{URL: "ws://x", Calls: 1, Duration: time.Second},
		{URL: "ws://x", Calls: 1, Duration: time.Second, Audio: Synthetic(1), Roles: []string{"agent"}},
	} {
		if _, err := Run(context.Background(), o); err == nil {
			t.Errorf("Run(%s) accepted", fmt.Sprintf("%+v", o)[:80])
		}
	}
}

// TestLateScoresAreMatched checks that a score arriving seconds after its
// audio is still timed, not dropped from the latency figures.
func TestLateScoresAreMatched(t *testing.T) {
	c := &call{rate: 8000}
	at := time.Now().Add(-5 * time.Second)
	for sec := uint64(1); sec <= 10; sec++ {
		c.marks[c.slot(sec*8000)] = mark{end: sec * 8000, at: at.Add(time.Duration(sec) * time.Second)}
	}
	c.score(2 * 8000) // second 2's score, 8 s late
	if len(c.latencies) != 1 || c.unmatched != 0 {
		t.Fatalf("latencies %v, %d unmatched; want one latency", c.latencies, c.unmatched)
	}
	c.score(8000 + 4000) // a partial second: no mark
	if c.unmatched != 1 {
		t.Errorf("a score at a partial second: %d unmatched; want 1", c.unmatched)
	}
}
