package voice

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/calmline/calmline/lib/voice/voicetest"
)

// noisyBleedingCall is 14 s of stereo (caller, agent): two voices taking
// turns and overlapping now and then, each channel carrying the other's
// voice 20 ms late at -18 dB (echo) over its own steady noise.
func noisyBleedingCall() [2][]int16 {
	const n = 14 * voicetest.Rate
	var own [2][]int16
	own[0], own[1] = make([]int16, n), make([]int16, n)
	copy(own[0][4000:], voicetest.Voice{F0: 210, Range: 3, Rate: 4.5, Level: -16, Dur: 3.5, Seed: 11}.Generate())
	copy(own[0][56000:], voicetest.Voice{F0: 225, Range: 5, Rate: 5, Level: -13, Dur: 3.5, Seed: 12}.Generate())
	copy(own[1][28000:], voicetest.Voice{F0: 120, Range: 2, Rate: 4, Level: -20, Dur: 4.5, Seed: 13}.Generate())
	copy(own[1][76000:], voicetest.Voice{F0: 125, Range: 2.5, Rate: 4.2, Level: -18, Dur: 3.5, Seed: 14}.Generate())
	var out [2][]int16
	g := math.Pow(10, -18.0/20)
	for ch := range 2 {
		r := rand.New(rand.NewPCG(uint64(ch)+21, 5))
		nl := []float64{0.006, 0.01}[ch] // about -44 and -40 dBFS
		out[ch] = make([]int16, n)
		for i := range n {
			v := float64(own[ch][i]) / 32768
			if j := i - 160; j >= 0 {
				v += g * float64(own[1-ch][j]) / 32768
			}
			v += nl * r.NormFloat64()
			out[ch][i] = int16(max(min(math.Round(v*32768), 32767), -32768))
		}
	}
	return out
}

// runCall pushes chans (from sample from on) in 100 ms chunks and returns
// the call's seconds. With cut > 0, it stops at sample cut instead of
// flushing and returns the call.
func runCall(t *testing.T, cfg CallConfig, chans [2][]int16, from, cut int) ([]Second, *Call) {
	t.Helper()
	c, err := NewCall(cfg)
	if err != nil {
		t.Fatal(err)
	}
	end := len(chans[0])
	if cut > 0 {
		end = cut
	}
	var out []Second
	var s Second
	for i := from; i < end; i += 800 {
		for ch := range 2 {
			c.Push(ch, chans[ch][i:min(i+800, end)])
		}
		for c.NextSecond(&s) {
			out = append(out, s)
		}
	}
	if cut == 0 {
		c.Flush()
		for c.NextSecond(&s) {
			out = append(out, s)
		}
	}
	return out, c
}

// TestResumeWithLineStateContinues checks that a call taken over at a
// second's boundary, given the line states of the analysis it takes over
// from, reads the rest of a noisy call with echo as the analysis that
// never stopped: speech, voiced and overlap frames, per second and
// channel. Without them the new analysis learns the line again and does
// not.
func TestResumeWithLineStateContinues(t *testing.T) {
	chans := noisyBleedingCall()
	roles := []Role{RoleCaller, RoleAgent}
	whole, _ := runCall(t, CallConfig{Roles: roles}, chans, 0, 0)
	const cutS = 6
	_, first := runCall(t, CallConfig{Roles: roles}, chans, 0, cutS*voicetest.Rate)
	lines := []LineState{first.LineState(0), first.LineState(1)}
	agent := first.Baseline(1)
	with, _ := runCall(t, CallConfig{Roles: roles, AgentBaseline: &agent, LineStates: lines}, chans, cutS*voicetest.Rate, 0)
	without, _ := runCall(t, CallConfig{Roles: roles, AgentBaseline: &agent}, chans, cutS*voicetest.Rate, 0)
	if len(with) != len(whole)-cutS || len(without) != len(with) {
		t.Fatalf("%d and %d seconds resumed; want %d", len(with), len(without), len(whole)-cutS)
	}
	// diff returns the frames (speech, voiced, overlap) that differ from
	// the uninterrupted analysis in the first second after the takeover
	// and in the later ones, and whether any per-second F0 or intensity
	// differs.
	diff := func(got []Second) (firstD, laterD int, measures bool) {
		for i := range got {
			w := whole[cutS+i]
			for ch := range 2 {
				g, x := got[i].Channels[ch], w.Channels[ch]
				d := abs(g.Speech-x.Speech) + abs(g.Voiced-x.Voiced) + abs(g.Overlap-x.Overlap)
				if i == 0 {
					firstD += d
				} else {
					laterD += d
				}
				if !same(g.F0, x.F0) || !same(g.Intensity, x.Intensity) {
					measures = true
					t.Logf("second %d channel %d: F0 %v, intensity %v; uninterrupted %v, %v", cutS+i, ch, g.F0, g.Intensity, x.F0, x.Intensity)
				}
			}
		}
		return firstD, laterD, measures
	}
	// The first second after the takeover may differ by a few frames:
	// the new analyser's first frames lack the audio before the cut
	// (their windows and the bleed window start there) and the
	// voice-activity hangover starts over. From the next second on, the
	// resumed analysis is exact.
	first1, later, measures := diff(with)
	if first1 > 10 || later != 0 || measures {
		t.Errorf("with the line states: %d frames differ in the first second (want ≤ 10), %d after it (want 0), F0 or intensity differs: %v", first1, later, measures)
	}
	// Without them the new analysis learns the line again: the echo of
	// the agent on the caller's channel is speech over the agent's.
	nFirst, nLater, _ := diff(without)
	if nFirst+nLater < 100 {
		t.Errorf("without the line states only %d frames differ; the test no longer sees the line being learnt again", nFirst+nLater)
	}
	var overlapWith, overlapWithout, overlapWhole int
	for i := range with {
		overlapWith += with[i].Channels[0].Overlap
		overlapWithout += without[i].Channels[0].Overlap
		overlapWhole += whole[cutS+i].Channels[0].Overlap
	}
	if overlapWith != overlapWhole {
		t.Errorf("overlap after the takeover: %d frames; uninterrupted %d", overlapWith, overlapWhole)
	}
	t.Logf("overlap frames after the takeover: uninterrupted %d, with line states %d, without %d", overlapWhole, overlapWith, overlapWithout)
}

func same(a, b float64) bool { return a == b || math.IsNaN(a) && math.IsNaN(b) }

func TestNewCallRefusesBadLineStates(t *testing.T) {
	chans := noisyBleedingCall()
	roles := []Role{RoleCaller, RoleAgent}
	_, c := runCall(t, CallConfig{Roles: roles}, chans, 0, 3*voicetest.Rate)
	good := []LineState{c.LineState(0), c.LineState(1)}
	if _, err := NewCall(CallConfig{Roles: roles, LineStates: good}); err != nil {
		t.Fatalf("a call's own line states refused: %v", err)
	}
	for name, mod := range map[string]func(ls []LineState) []LineState{
		"one for two channels":  func(ls []LineState) []LineState { return ls[:1] },
		"NaN floor":             func(ls []LineState) []LineState { ls[0].FloorDB = float32(math.NaN()); return ls },
		"infinite noise":        func(ls []LineState) []LineState { ls[1].NoisePower = float32(math.Inf(1)); return ls },
		"coupling above max":    func(ls []LineState) []LineState { ls[0].CouplingDB = 0; return ls },
		"negative count":        func(ls []LineState) []LineState { ls[1].SpreadN = -1; return ls },
		"spread weight above 1": func(ls []LineState) []LineState { ls[0].SpreadW = 2; return ls },
		"huge voiced frames":    func(ls []LineState) []LineState { ls[0].VoicedFrames = 1 << 40; return ls },
	} {
		ls := mod(append([]LineState(nil), good...))
		if _, err := NewCall(CallConfig{Roles: roles, LineStates: ls}); err == nil {
			t.Errorf("%s: no error", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
