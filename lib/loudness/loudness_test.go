package loudness

import (
	"math"
	"testing"

	"github.com/calmline/calmline/lib/audio"
)

// stereo builds interleaved μ-law audio of a caller and an agent channel;
// level(ch, t) gives each channel's sine amplitude (0 = silence) at time t.
func stereo(seconds float64, level func(ch int, t float64) float64) []byte {
	n := int(seconds * 8000)
	pcm := make([]int16, 0, 2*n)
	for i := range n {
		t := float64(i) / 8000
		for ch := range 2 {
			pcm = append(pcm, int16(level(ch, t)*math.Sin(2*math.Pi*float64(180+60*ch)*t)))
		}
	}
	return audio.Encode(nil, pcm, audio.CodecPCMU)
}

func newStereo(t *testing.T) *Analyzer {
	t.Helper()
	a, err := New(Options{Format: audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 2}, Roles: []Role{Caller, Agent}, AgentScoring: true})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestTalkTimeOverlapAndInterruptions(t *testing.T) {
	// Caller talks 0–4 s; agent talks 3–6 s (interrupting the caller at 3 s);
	// 6–8 s both silent.
	data := stereo(8, func(ch int, t float64) float64 {
		if ch == 0 && t < 4 || ch == 1 && t >= 3 && t < 6 {
			return 6000
		}
		return 0
	})
	a := newStereo(t)
	a.Write(data)
	secs := append([]Second(nil), a.Flush()...)
	if len(secs) != 8 {
		t.Fatalf("got %d seconds; want 8", len(secs))
	}
	st := a.Stats()
	// Talk includes the 200 ms hangover after each turn.
	for i, want := range []float64{4.2, 3.2} {
		if got := st.Channels[i].TalkSeconds; math.Abs(got-want) > 0.05 {
			t.Errorf("channel %d talk = %.2f s; want %.2f", i, got, want)
		}
	}
	if math.Abs(st.OverlapSeconds-1.2) > 0.05 {
		t.Errorf("overlap = %.2f s; want 1.2", st.OverlapSeconds)
	}
	if st.AgentInterruptions != 1 || st.CallerInterruptions != 0 {
		t.Errorf("interruptions caller=%d agent=%d; want 0 and 1", st.CallerInterruptions, st.AgentInterruptions)
	}
	// Silent seconds abstain; the model never invents a score.
	last := secs[7]
	if last.CallerPressure.OK || last.AgentStress.OK || last.CallerPressure.Abstain != AbstainNoSpeech {
		t.Errorf("silent second scored: %+v", last)
	}
	if !secs[0].CallerPressure.OK || secs[0].AgentStress.OK {
		t.Errorf("second 0 = %+v; want caller scored, agent abstaining", secs[0])
	}
	if secs[7].EndSample != 8*8000 {
		t.Errorf("last second ends at %d; want %d", secs[7].EndSample, 8*8000)
	}
}

func TestLouderThanBaselineScoresHigher(t *testing.T) {
	// The caller speaks calmly for 4 s, then 12 dB louder.
	data := stereo(8, func(ch int, t float64) float64 {
		if ch == 1 {
			return 3000
		}
		if t < 4 {
			return 2000
		}
		return 8000
	})
	a := newStereo(t)
	a.Write(data)
	secs := a.Flush()
	calm, loud := secs[1].CallerPressure, secs[6].CallerPressure
	if !calm.OK || !loud.OK || loud.Value <= calm.Value+20 {
		t.Errorf("caller pressure calm %+v, loud %+v; want loud far above calm", calm, loud)
	}
}

func TestAgentScoringOffAbstains(t *testing.T) {
	a, err := New(Options{Format: audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 1}, Roles: []Role{Agent}})
	if err != nil {
		t.Fatal(err)
	}
	a.Write(stereo(2, func(int, float64) float64 { return 5000 })[:16000])
	for _, s := range a.Flush() {
		if s.AgentStress.OK || s.AgentStress.Abstain != AbstainOff || s.CallerPressure.Abstain != AbstainNoRole {
			t.Errorf("second %d = %+v; want both abstaining with reasons", s.Index, s)
		}
	}
}

func TestChunkingDoesNotChangeResults(t *testing.T) {
	data := stereo(3.37, func(ch int, t float64) float64 { return 1000 + 3000*math.Abs(math.Sin(t*float64(ch+1))) })
	whole := newStereo(t)
	whole.Write(data)
	want := append([]Second(nil), whole.Flush()...)
	pieces := newStereo(t)
	var got []Second
	for i := 0; i < len(data); i += 333 { // odd sizes split sample frames
		pieces.Write(data[i:min(i+333, len(data))])
		got = append(got, pieces.Seconds()...)
	}
	got = append(got, pieces.Flush()...)
	if len(got) != len(want) {
		t.Fatalf("chunked: %d seconds; whole: %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("second %d: chunked %+v; whole %+v", i, got[i], want[i])
		}
	}
	if whole.Timeline() != uint64(len(data)/2) || pieces.Timeline() != whole.Timeline() {
		t.Errorf("timelines %d and %d; want %d", whole.Timeline(), pieces.Timeline(), len(data)/2)
	}
}

func TestGapAdvancesTimelineWithoutTalk(t *testing.T) {
	a := newStereo(t)
	a.Write(stereo(1.01, func(int, float64) float64 { return 5000 }))
	a.Gap(2 * 8000)
	a.Write(stereo(1, func(int, float64) float64 { return 5000 }))
	secs := a.Flush()
	if len(secs) != 5 || a.Timeline() != uint64(4.01*8000) {
		t.Fatalf("%d seconds, timeline %d; want 5 and %d", len(secs), a.Timeline(), uint64(4.01*8000))
	}
	if secs[2].CallerPressure.OK {
		t.Errorf("a second inside the gap was scored: %+v", secs[2])
	}
	if talk := a.Stats().Channels[0].TalkSeconds; talk > 2.3 {
		t.Errorf("talk %.2f s; the gap must not count as talk", talk)
	}
}

func TestWideBandIsHalved(t *testing.T) {
	a, err := New(Options{Format: audio.Format{Codec: audio.CodecL16, SampleRate: 16000, Channels: 1}, Roles: []Role{Caller}})
	if err != nil {
		t.Fatal(err)
	}
	pcm := make([]int16, 32000)
	for i := range pcm {
		pcm[i] = int16(5000 * math.Sin(2*math.Pi*200*float64(i)/16000))
	}
	a.Write(audio.Encode(nil, pcm, audio.CodecL16))
	secs := a.Flush()
	if len(secs) != 2 || secs[1].EndSample != 32000 || !secs[1].CallerPressure.OK {
		t.Errorf("16 kHz: %+v", secs)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	f := audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 2}
	for _, o := range []Options{
		{Format: f, Roles: []Role{Caller}},
		{Format: f, Roles: []Role{Caller, Caller}},
		{Format: audio.Format{Codec: audio.CodecPCMU, SampleRate: 44100, Channels: 1}, Roles: []Role{Agent}},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

func BenchmarkWrite(b *testing.B) {
	data := stereo(1, func(ch int, t float64) float64 { return 4000 })
	a, _ := New(Options{Format: audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 2}, Roles: []Role{Caller, Agent}, AgentScoring: true})
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		for i := 0; i < len(data); i += 1600 {
			a.Write(data[i : i+1600])
		}
		a.Seconds()
	}
}
