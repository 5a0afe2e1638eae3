package loadgen

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/calmline/calmline/cmd/stack"
	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/tenant"
)

// protoStack is the real stack with one tenant limited to max concurrent
// calls, whose general key has an AudioHook client secret, and a
// feed-only (care team) key.
type protoStack struct {
	gw, fc       string
	key, feedKey string
	secret       []byte
}

func startProtoStack(t *testing.T, max int) *protoStack {
	t.Helper()
	p := &protoStack{key: tenant.NewKey(), feedKey: tenant.NewKey(), secret: make([]byte, 32)}
	rand.Read(p.secret)
	reg, err := tenant.NewRegistry([]*tenant.Tenant{{ID: "acme", MaxConcurrentCalls: max,
		APIKeys: []tenant.APIKey{
			{ID: "k", SHA256: tenant.HashKey(p.key), ClientSecret: p.secret},
			{ID: "care", SHA256: tenant.HashKey(p.feedKey), Role: tenant.KeyRoleCare},
		}}})
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
	p.gw, p.fc = st.Addr(stack.Gateway).String(), st.Addr(stack.Fullcall).String()
	return p
}

// TestProtocolsAgainstTheRealStack runs loadgen over AudioHook, Twilio and
// Asterisk against the whole stack: the calls within the tenant's limit
// complete with every byte in their stored reports, the one over it is
// counted as refused, scores come back where the protocol carries them
// (and the latency is "not applicable" where it does not), and feed-only,
// unknown and (for AudioHook) unsigned keys are refused.
func TestProtocolsAgainstTheRealStack(t *testing.T) {
	p := startProtoStack(t, 3)
	for _, tc := range []struct {
		proto  string
		scores bool
		// refusal kinds for a feed-only key and an unknown key
		forbidden, unknown string
	}{
		{"audiohook", true, "refused_http_403", "refused_http_401"},
		{"twilio", false, "refused_close_4403", "refused_close_4401"},
		{"asterisk", false, "refused_http_403", "refused_http_401"},
	} {
		t.Run(tc.proto, func(t *testing.T) {
			url := "ws://" + p.gw + "/ws/" + tc.proto
			s, err := Run(context.Background(), Options{
				URL:          url,
				Protocol:     tc.proto,
				APIKey:       p.key,
				ClientSecret: p.secret,
				Calls:        4, // one over the tenant's limit
				Ramp:         100,
				Duration:     2100 * time.Millisecond,
				Audio:        Synthetic(2),
				BurstHangup:  true,
				SourceAddrs:  []string{"127.0.0.1", "127.0.0.2"},
				Reports:      &HTTPReports{BaseURL: "http://" + p.fc, APIKey: p.key},
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%+v", s)
			refusedQuota := s.Errors["refused_http_429"] + s.Errors["refused_close_4429"] + s.Errors["refused_disconnect_error"]
			if s.Calls.Started != 3 || s.Calls.Completed != 3 || s.Calls.Refused != 1 || refusedQuota != 1 || len(s.Errors) != 1 {
				t.Errorf("calls %+v, errors %v; want 3 completed and 1 refused over quota, no other error", s.Calls, s.Errors)
			}
			if s.Calls.Started+s.Calls.Refused != 4 {
				t.Errorf("calls %+v: started and refused do not add up to 4", s.Calls)
			}
			// Every frame of the 3 calls is counted; every byte is in the
			// stored reports.
			if s.FramesSent < 3*105 || s.AudioBytesSent != uint64(s.FramesSent)*320 {
				t.Errorf("%d frames, %d bytes sent; want ≥ %d frames of 320 bytes", s.FramesSent, s.AudioBytesSent, 3*105)
			}
			if s.Reports == nil || s.Reports.Checked != 3 || s.Reports.OK != 3 {
				t.Errorf("stored reports: %+v; want 3 checked and ok", s.Reports)
			}
			if s.StopToStopped.Count != 3 {
				t.Errorf("stop→stopped %+v; want 3 answers to the hang-ups", s.StopToStopped)
			}
			switch {
			case tc.scores && (s.AudioToScore == nil || s.AudioToScore.Count != 6 || s.ScoresReceived != 9):
				t.Errorf("%d scores, latency %+v; want 9 scores, 6 timed", s.ScoresReceived, s.AudioToScore)
			case !tc.scores && (s.AudioToScore != nil || s.ScoresReceived != 0):
				t.Errorf("%d scores, latency %+v; want none, and the latency not applicable", s.ScoresReceived, s.AudioToScore)
			}

			for _, k := range []struct{ key, kind string }{{p.feedKey, tc.forbidden}, {"clk_unknown", tc.unknown}} {
				s, err := Run(context.Background(), Options{URL: url, Protocol: tc.proto, APIKey: k.key, ClientSecret: p.secret,
					Calls: 1, Duration: time.Second, Audio: Synthetic(1)})
				if err != nil {
					t.Fatal(err)
				}
				if s.Calls.Refused != 1 || s.Errors[k.kind] != 1 || s.OK {
					t.Errorf("a call with key %.8s…: %+v %v; want refused as %s", k.key, s.Calls, s.Errors, k.kind)
				}
			}
		})
	}
}

// TestAudioHookUnsignedAndFormats checks that an AudioHook call without
// the client secret is refused, and that formats a protocol cannot carry
// are refused before any call opens.
func TestAudioHookUnsignedAndFormats(t *testing.T) {
	p := startProtoStack(t, 1)
	s, err := Run(context.Background(), Options{URL: "ws://" + p.gw + "/ws/audiohook", Protocol: "audiohook", APIKey: p.key,
		Calls: 1, Duration: time.Second, Audio: Synthetic(1)})
	if err != nil {
		t.Fatal(err)
	}
	if s.Calls.Refused != 1 || s.Errors["refused_http_401"] != 1 {
		t.Errorf("an unsigned AudioHook call: %+v %v; want refused with 401", s.Calls, s.Errors)
	}
	l16 := &audio.Recording{Format: audio.Format{Codec: audio.CodecL16, SampleRate: 16000, Channels: 2}, Data: make([]byte, 64000)}
	for _, o := range []Options{
		{Protocol: "audiohook", Audio: l16},
		{Protocol: "twilio", Audio: l16},
		{Protocol: "asterisk", Audio: Synthetic(1), Roles: []string{"agent", "agent"}},
		{Protocol: "twilio", Audio: Synthetic(1), Roles: []string{"caller", "supervisor"}},
	} {
		o.URL, o.Calls, o.Duration = "ws://x", 1, time.Second
		if _, err := Run(context.Background(), o); err == nil {
			t.Errorf("Run(%s) accepted", fmt.Sprintf("%s %v %v", o.Protocol, o.Audio.Format, o.Roles))
		}
	}
}
