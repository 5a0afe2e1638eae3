package analysis

import (
	"math"
	"testing"

	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/voice/voicetest"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
)

func call(codec callv1.Codec, rate uint32, scoring callv1.AgentScoring) *callv1.Call {
	return &callv1.Call{TenantId: "t", CallId: "c",
		Format: &callv1.MediaFormat{Codec: codec, SampleRateHz: rate,
			Channels: []callv1.ChannelRole{callv1.ChannelRole_CHANNEL_ROLE_CALLER, callv1.ChannelRole_CHANNEL_ROLE_AGENT}},
		Policy: &callv1.CallPolicy{AgentScoring: scoring}}
}

// upsample doubles the rate by repeating samples (enough for a test).
func upsample(s []int16) []int16 {
	out := make([]int16, 2*len(s))
	for i, v := range s {
		out[2*i], out[2*i+1] = v, v
	}
	return out
}

func TestWideBandTimelineAndSeconds(t *testing.T) {
	an, f, err := New(call(callv1.Codec_CODEC_L16, 16000, callv1.AgentScoring_AGENT_SCORING_ON))
	if err != nil || f.SampleRate != 16000 {
		t.Fatalf("New: %v, %+v", err, f)
	}
	caller := upsample(voicetest.Voice{F0: 200, Range: 3, Rate: 5, Level: -16, Dur: 3.1, Seed: 1}.Generate())
	agent := make([]int16, len(caller))
	data := audio.Encode(nil, audio.Interleave(nil, caller, agent), audio.CodecL16)
	var secs []Second
	for i := 0; i < len(data); i += 6399 { // chunks that cut sample frames
		an.Write(data[i:min(i+6399, len(data))])
		secs = append(secs, an.Seconds()...)
	}
	secs = append(secs, an.Flush()...)
	if an.Timeline() != 49600 {
		t.Errorf("timeline %d; want 49600 samples at 16 kHz", an.Timeline())
	}
	want := []uint64{16000, 32000, 48000, 49600}
	if len(secs) != len(want) {
		t.Fatalf("%d seconds; want %d", len(secs), len(want))
	}
	for i, s := range secs {
		if s.Index != i || s.EndSample != want[i] {
			t.Errorf("second %d: index %d, end %d; want end %d", i, s.Index, s.EndSample, want[i])
		}
		if i < 3 && (!s.CallerPressure.OK || s.AgentStress.OK || s.AgentStress.Abstain == "") {
			t.Errorf("second %d: %+v; want the caller scored, the silent agent abstaining", i, s)
		}
	}
	u := ScoreUpdate("c", secs[0])
	if u.CallerPressure == nil || u.AgentStressAbstain == "" || u.Model.GetName() != "calmline-voice" {
		t.Errorf("score update %v", u)
	}
}

func TestGapsAndPolicy(t *testing.T) {
	an, _, err := New(call(callv1.Codec_CODEC_PCMU, 8000, callv1.AgentScoring_AGENT_SCORING_OFF))
	if err != nil {
		t.Fatal(err)
	}
	v := voicetest.Voice{F0: 120, Range: 2, Rate: 4, Level: -20, Dur: 1, Seed: 2}.Generate()
	one := audio.Encode(nil, audio.Interleave(nil, v, v), audio.CodecPCMU)
	an.Write(one)
	an.Gap(2 * 8000)
	an.Write(one)
	secs := append(an.Seconds(), an.Flush()...)
	if len(secs) != 4 || an.Timeline() != 4*8000 {
		t.Fatalf("%d seconds, timeline %d; want 4 and 32000", len(secs), an.Timeline())
	}
	for _, i := range []int{1, 2} {
		if secs[i].CallerPressure.OK {
			t.Errorf("second %d is a gap but scored %+v", i, secs[i].CallerPressure)
		}
	}
	for i, s := range secs {
		if s.AgentStress.OK || s.AgentStress.Abstain != "disabled" {
			t.Errorf("second %d: agent scoring off, got %+v", i, s.AgentStress)
		}
	}
	st := an.Stats()
	c := st.Channels[0]
	if c.TalkSeconds+c.SilenceSeconds > 2.2 || c.TalkSeconds < 1 || math.IsNaN(float64(c.Voice.F0MedianHz)) {
		t.Errorf("caller stats %+v; talk + silence must leave out the 2 s gap (talk may run 150 ms into it)", c)
	}
}

// TestSecondsCarryTalkAndOverlap: each second says how much of it each
// party talked and how much both did, and the seconds add up to the
// call's talk and overlap totals (what the report shows).
func TestSecondsCarryTalkAndOverlap(t *testing.T) {
	an, _, err := New(call(callv1.Codec_CODEC_L16, 8000, callv1.AgentScoring_AGENT_SCORING_ON))
	if err != nil {
		t.Fatal(err)
	}
	caller := voicetest.Voice{F0: 200, Range: 3, Rate: 5, Level: -16, Dur: 6, Seed: 1}.Generate()
	agent := make([]int16, len(caller))
	copy(agent[len(agent)/3:], voicetest.Voice{F0: 120, Range: 3, Rate: 5, Level: -16, Dur: 2, Seed: 2}.Generate())
	an.Write(audio.Encode(nil, audio.Interleave(nil, caller, agent), audio.CodecL16))
	secs := append(an.Seconds(), an.Flush()...)
	if len(secs) != 6 {
		t.Fatalf("%d seconds; want 6", len(secs))
	}
	var callerS, agentS, overlapS float64
	for i, s := range secs {
		for name, v := range map[string]float64{"caller": s.CallerTalk, "agent": s.AgentTalk, "overlap": s.Overlap} {
			if v < 0 || v > 1 || math.IsNaN(v) {
				t.Errorf("second %d: %s %v outside [0, 1]", i, name, v)
			}
		}
		if s.Overlap > min(s.AgentTalk, s.CallerTalk)+1e-9 {
			t.Errorf("second %d: overlap %.2f exceeds a party's talk (%.2f, %.2f)", i, s.Overlap, s.CallerTalk, s.AgentTalk)
		}
		callerS, agentS, overlapS = callerS+s.CallerTalk, agentS+s.AgentTalk, overlapS+s.Overlap
	}
	st := an.Stats()
	for _, c := range []struct {
		name       string
		sum, total float64
	}{{"caller", callerS, st.Channels[0].TalkSeconds}, {"agent", agentS, st.Channels[1].TalkSeconds}, {"overlap", overlapS, st.OverlapSeconds}} {
		if math.Abs(c.sum-c.total) > 0.02 {
			t.Errorf("%s: the seconds add up to %.2f s; the call's total is %.2f s", c.name, c.sum, c.total)
		}
	}
	if callerS < 3 || agentS < 1 || agentS > 3 || overlapS < 0.5 {
		t.Errorf("caller %.2f s, agent %.2f s, overlap %.2f s of talk; want the caller throughout, the agent for about 2 s over it", callerS, agentS, overlapS)
	}
}

func TestRoundScore(t *testing.T) {
	for _, tc := range []struct{ in, want float64 }{
		{70.04999, 70}, {70.05, 70.1}, {0.04, 0}, {99.96, 100}, {float64(float32(70.3)), 70.3}, {55.55555555, 55.6},
	} {
		if got := RoundScore(tc.in); got != tc.want {
			t.Errorf("RoundScore(%v) = %v; want %v", tc.in, got, tc.want)
		}
	}
}
