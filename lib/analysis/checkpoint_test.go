package analysis

import (
	"bytes"
	"encoding/gob"
	"errors"
	"math"
	"testing"

	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/voice"
	"github.com/calmline/calmline/lib/voice/voicetest"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
)

// dialogue is stereo μ-law: the caller speaks 0–3 s and 5–8 s, the agent
// 2.5–6 s, with synthetic speech-like voices.
func dialogue() []byte {
	n := 8 * 8000
	c, a := make([]int16, n), make([]int16, n)
	copy(c, voicetest.Voice{F0: 210, Range: 3, Rate: 4.5, Level: -16, Dur: 3, Seed: 1}.Generate())
	copy(c[40000:], voicetest.Voice{F0: 230, Range: 5, Rate: 5, Level: -12, Dur: 3, Seed: 3}.Generate())
	copy(a[20000:], voicetest.Voice{F0: 120, Range: 2, Rate: 4, Level: -20, Dur: 3.5, Seed: 2}.Generate())
	return audio.Encode(nil, audio.Interleave(nil, c, a), audio.CodecPCMU)
}

func TestResumeContinuesWithinTolerance(t *testing.T) {
	data := dialogue()
	c := call(callv1.Codec_CODEC_PCMU, 8000, callv1.AgentScoring_AGENT_SCORING_ON)
	whole, _, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	var want []Second
	for i := 0; i < len(data); i += 1600 {
		whole.Write(data[i:min(i+1600, len(data))])
		want = append(want, whole.Seconds()...)
	}
	want = append(want, whole.Flush()...)
	wantStats := whole.Stats()

	// The same call, checkpointed 4.2 s in (after second 3 completed) and
	// taken over by a new analyser.
	first, _, _ := New(c)
	var got []Second
	cut := 4*16000 + 3200
	for i := 0; i < cut; i += 1600 {
		first.Write(data[i:min(i+1600, cut)])
		got = append(got, first.Seconds()...)
	}
	state, err := first.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if len(state) > 16<<10 {
		t.Errorf("a checkpoint of %d bytes", len(state))
	}
	second, _, err := Resume(c, state)
	if err != nil {
		t.Fatal(err)
	}
	if second.Timeline() != first.Timeline() {
		t.Fatalf("resumed at %d; the checkpoint was at %d", second.Timeline(), first.Timeline())
	}
	if len(got) != 4 {
		t.Fatalf("%d seconds completed before the checkpoint; want 4", len(got))
	}
	for i := cut; i < len(data); i += 1600 {
		second.Write(data[i:min(i+1600, len(data))])
		got = append(got, second.Seconds()...)
	}
	got = append(got, second.Flush()...)

	if len(got) != len(want) {
		t.Fatalf("%d seconds; want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].Index != i || got[i].EndSample != want[i].EndSample {
			t.Errorf("second %d: index %d, end %d; want %d, %d", i, got[i].Index, got[i].EndSample, i, want[i].EndSample)
		}
		if i < 4 && got[i] != want[i] {
			t.Errorf("second %d before the checkpoint: %+v; want %+v", i, got[i], want[i])
		}
	}
	gs, ws := second.Stats(), wantStats
	if math.Abs(gs.OverlapSeconds-ws.OverlapSeconds) > 0.25 {
		t.Errorf("overlap %.2f s; want %.2f ± 0.25", gs.OverlapSeconds, ws.OverlapSeconds)
	}
	for i := range ws.Channels {
		g, w := gs.Channels[i], ws.Channels[i]
		for _, m := range []struct {
			name      string
			got, want float64
			tol       float64
		}{
			{"talk", g.TalkSeconds, w.TalkSeconds, 0.25},
			{"silence", g.SilenceSeconds, w.SilenceSeconds, 0.3},
			{"F0 mean", float64(g.Voice.F0MeanHz), float64(w.Voice.F0MeanHz), 5},
			{"F0 median", float64(g.Voice.F0MedianHz), float64(w.Voice.F0MedianHz), 10},
			{"F0 sd", float64(g.Voice.F0SDHz), float64(w.Voice.F0SDHz), 5},
			{"voiced fraction", float64(g.Voice.VoicedFraction), float64(w.Voice.VoicedFraction), 0.05},
			{"intensity", g.IntensityMeanDB, w.IntensityMeanDB, 1.5},
		} {
			if math.Abs(m.got-m.want) > m.tol {
				t.Errorf("channel %d %s %.3f; want %.3f ± %g", i, m.name, m.got, m.want, m.tol)
			}
		}
	}
}

func TestResumeRefusesOtherModelsAndShapes(t *testing.T) {
	c := call(callv1.Codec_CODEC_PCMU, 8000, callv1.AgentScoring_AGENT_SCORING_ON)
	an, _, _ := New(c)
	an.Write(dialogue()[:32000])
	state, _ := an.Snapshot()
	st, err := DecodeState(state)
	if err != nil {
		t.Fatal(err)
	}
	st.Model = "some-model 9.9.9"
	var other bytes.Buffer
	gob.NewEncoder(&other).Encode(st)
	if _, _, err := Resume(c, other.Bytes()); !errors.Is(err, ErrModelChanged) {
		t.Errorf("another model's state: %v; want ErrModelChanged", err)
	}
	if _, _, err := Resume(c, []byte("garbage")); err == nil {
		t.Error("garbage resumed")
	}
	mono := call(callv1.Codec_CODEC_PCMU, 8000, callv1.AgentScoring_AGENT_SCORING_ON)
	mono.Format.Channels = mono.Format.Channels[1:]
	if _, _, err := Resume(mono, state); err == nil {
		t.Error("a stereo state resumed into a mono call")
	}
	swapped := call(callv1.Codec_CODEC_PCMU, 8000, callv1.AgentScoring_AGENT_SCORING_ON)
	swapped.Format.Channels = []callv1.ChannelRole{callv1.ChannelRole_CHANNEL_ROLE_AGENT, callv1.ChannelRole_CHANNEL_ROLE_CALLER}
	if _, _, err := Resume(swapped, state); err == nil {
		t.Error("a state resumed into a call with the roles swapped")
	}
}

func FuzzResume(f *testing.F) {
	c := call(callv1.Codec_CODEC_PCMU, 8000, callv1.AgentScoring_AGENT_SCORING_ON)
	an, _, _ := New(c)
	an.Write(dialogue()[:24000])
	state, _ := an.Snapshot()
	f.Add(state)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		// A damaged checkpoint is refused or gives a usable analyser;
		// it never panics.
		a, _, err := Resume(c, b)
		if err != nil {
			return
		}
		a.Write(dialogue()[:3200])
		a.Flush()
		a.Stats()
	})
}

// A checkpoint from before line states were kept (a State without Lines)
// still resumes: the new analysis learns the lines again.
func TestResumeStateWithoutLineStates(t *testing.T) {
	data := dialogue()
	c := call(callv1.Codec_CODEC_PCMU, 8000, callv1.AgentScoring_AGENT_SCORING_ON)
	first, _, _ := New(c)
	cut := 4*16000 + 3200
	first.Write(data[:cut])
	first.Seconds()
	state, err := first.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	st, err := DecodeState(state)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Lines) != 2 || st.Lines[0].Heard == 0 || st.Lines[1].Heard == 0 {
		t.Fatalf("the checkpoint's line states: %+v; want both channels' lines heard", st.Lines)
	}
	t.Logf("a checkpoint of %d bytes", len(state))
	// The state as it was encoded before it had Lines.
	type oldState struct {
		Model     string
		Timeline  uint64
		Stats     Stats
		Baselines []voice.Baseline
	}
	var old bytes.Buffer
	if err := gob.NewEncoder(&old).Encode(&oldState{st.Model, st.Timeline, st.Stats, st.Baselines}); err != nil {
		t.Fatal(err)
	}
	t.Logf("the same without line states: %d bytes", old.Len())
	dec, err := DecodeState(old.Bytes())
	if err != nil || len(dec.Lines) != 0 {
		t.Fatalf("an old state decodes as %v, %d line states", err, len(dec.Lines))
	}
	second, _, err := Resume(c, old.Bytes())
	if err != nil {
		t.Fatalf("an old state: %v", err)
	}
	second.Write(data[cut:])
	got := append([]Second(nil), second.Seconds()...)
	got = append(got, second.Flush()...)
	if len(got) != 4 || got[0].Index != 4 || got[3].Index != 7 {
		t.Errorf("an old state resumed with %d seconds; want seconds 4 to 7", len(got))
	}
	if s := second.Stats(); s.Channels[0].TalkSeconds < st.Stats.Channels[0].TalkSeconds {
		t.Errorf("the caller's talk went down from %.2f s to %.2f s", st.Stats.Channels[0].TalkSeconds, s.Channels[0].TalkSeconds)
	}
}

// A state whose line states are damaged or for another number of
// channels is refused with the reason.
func TestResumeRefusesBadLineStates(t *testing.T) {
	c := call(callv1.Codec_CODEC_PCMU, 8000, callv1.AgentScoring_AGENT_SCORING_ON)
	an, _, _ := New(c)
	an.Write(dialogue()[:32000])
	state, _ := an.Snapshot()
	for name, mod := range map[string]func(st *State){
		"one line for two channels": func(st *State) { st.Lines = st.Lines[:1] },
		"NaN coupling":              func(st *State) { st.Lines[1].CouplingDB = float32(math.NaN()) },
		"negative noise power":      func(st *State) { st.Lines[0].NoisePower = -1 },
	} {
		st, err := DecodeState(state)
		if err != nil {
			t.Fatal(err)
		}
		mod(st)
		var b bytes.Buffer
		gob.NewEncoder(&b).Encode(st)
		if _, _, err := Resume(c, b.Bytes()); err == nil {
			t.Errorf("%s: resumed", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}
