package voice

import (
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/calmline/calmline/lib/voice/voicetest"
)

// meanScore runs a mono agent recording against a stored baseline and
// returns the mean agent_stress over the scored seconds and how many
// seconds were scored.
func meanScore(t *testing.T, s []int16, base *Baseline) (float64, int) {
	t.Helper()
	var sum float64
	n := 0
	_, err := AnalyzeCall(CallConfig{Roles: []Role{RoleAgent}, AgentBaseline: base}, [][]int16{s}, func(sec *Second) {
		if sec.AgentStress.OK {
			sum += sec.AgentStress.Value
			n++
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return sum / float64(n), n
}

func TestAgentStressRisesWithEachMarker(t *testing.T) {
	calm := voicetest.Voice{F0: 120, Range: 2, Rate: 4, Level: -20, Dur: 12, Seed: 1}
	base := BaselineFromRecording(nil, calm.Generate())
	if base.Source != "recording" || base.VoicedS < 3 {
		t.Fatalf("baseline from 12 s of voice: %+v", base)
	}
	ref, n := meanScore(t, voicetest.Voice{F0: 120, Range: 2, Rate: 4, Level: -20, Dur: 12, Seed: 2}.Generate(), &base)
	if n < 6 {
		t.Fatalf("calm voice: only %d seconds scored", n)
	}
	if ref > 50 {
		t.Errorf("the same voice as the baseline scores %.1f; want below 50", ref)
	}
	for _, c := range []struct {
		name string
		v    voicetest.Voice
	}{
		{"F0 +4 semitones", voicetest.Voice{F0: 151, Range: 2, Rate: 4, Level: -20, Dur: 12, Seed: 2}},
		{"F0 range ×2.5", voicetest.Voice{F0: 120, Range: 5, Rate: 4, Level: -20, Dur: 12, Seed: 2}},
		{"6 dB louder", voicetest.Voice{F0: 120, Range: 2, Rate: 4, Level: -14, Dur: 12, Seed: 2}},
		{"faster (6 syllables/s)", voicetest.Voice{F0: 120, Range: 2, Rate: 6, Level: -20, Dur: 12, Seed: 2}},
	} {
		got, _ := meanScore(t, c.v.Generate(), &base)
		t.Logf("%s: mean agent_stress %.1f (unchanged voice %.1f)", c.name, got, ref)
		if got < ref+5 {
			t.Errorf("%s: mean agent_stress %.1f; want at least 5 above the unchanged voice's %.1f", c.name, got, ref)
		}
	}
	all, _ := meanScore(t, voicetest.Voice{F0: 151, Range: 5, Rate: 6, Level: -14, Dur: 12, Seed: 2}.Generate(), &base)
	if all < 70 {
		t.Errorf("all markers together: mean agent_stress %.1f; want ≥ 70", all)
	}
}

func TestAgentStressOnRealSpeech(t *testing.T) {
	calm := loadTestdata(t, "en_en1_calm.ulaw.wav")
	stressed := loadTestdata(t, "en_en1_stressed.ulaw.wav")
	base := BaselineFromRecording(nil, calm)
	c, _ := meanScore(t, calm, &base)
	s, _ := meanScore(t, stressed, &base)
	if s <= c+20 {
		t.Errorf("espeak 'stressed' scores %.1f against the calm baseline, calm %.1f; want clearly higher", s, c)
	}
}

func TestAbstention(t *testing.T) {
	for _, c := range []struct {
		name string
		s    []int16
		want Reason
	}{
		{"silence", voicetest.Silence(5), ReasonTooLittleSpeech},
		{"425 Hz tone", voicetest.Tone(425, 0.3, 5), ReasonSteadyTone},
		{"dial tone 350+440", voicetest.Sum(voicetest.Tone(350, 0.25, 5), voicetest.Tone(440, 0.25, 5)), ReasonSteadyTone},
		{"busy 480+620", voicetest.Sum(voicetest.Tone(480, 0.25, 5), voicetest.Tone(620, 0.25, 5)), ReasonSteadyTone},
		{"DTMF", voicetest.DTMF("0123456789*#012345", 0.1, 0.1), ReasonSteadyTone},
		{"steady sawtooth", voicetest.Sawtooth(voicetest.Constant(140), 0.5, 5), ReasonSteadyTone},
	} {
		for _, role := range []Role{RoleAgent, RoleCaller} {
			_, err := AnalyzeCall(CallConfig{Roles: []Role{role}}, [][]int16{c.s}, func(s *Second) {
				sc := s.AgentStress
				if role == RoleCaller {
					sc = s.CallerPressure
				}
				if sc.OK {
					t.Errorf("%s as %v: second %d scored %.1f; want abstention", c.name, role, s.Index, sc.Value)
				} else if sc.Reason != c.want && sc.Reason != ReasonTooLittleSpeech {
					t.Errorf("%s as %v: second %d abstains with %q; want %q", c.name, role, s.Index, sc.Reason, c.want)
				}
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestScoreCarriesModel(t *testing.T) {
	m := DefaultModel()
	_, err := AnalyzeCall(CallConfig{Roles: []Role{RoleAgent}, DisableAgentStress: true},
		[][]int16{voicetest.Voice{F0: 120, Range: 2, Rate: 4, Level: -20, Dur: 3}.Generate()}, func(s *Second) {
			if s.AgentStress.OK || s.AgentStress.Reason != ReasonDisabled {
				t.Errorf("disabled agent_stress: %+v", s.AgentStress)
			}
			if s.CallerPressure.Reason != ReasonNoChannel {
				t.Errorf("mono call caller_pressure: %+v; want %q", s.CallerPressure, ReasonNoChannel)
			}
			if s.AgentStress.Model != m.ID() || !strings.HasPrefix(m.ID(), "calmline-voice/") {
				t.Errorf("score model %q; want %q", s.AgentStress.Model, m.ID())
			}
		})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(Score{Value: 42.123456, OK: true, Model: "m/1"})
	if string(b) != `{"value":42.1235,"model":"m/1"}` {
		t.Errorf("score JSON %s", b)
	}
	b, _ = json.Marshal(Score{Reason: ReasonSteadyTone, Model: "m/1"})
	if string(b) != `{"value":null,"reason":"steady_tone","model":"m/1"}` {
		t.Errorf("abstention JSON %s", b)
	}
}

// stereo returns a two-party call: the caller speaks in the first half,
// the agent in the second, and they overlap in the middle for overlapS
// seconds.
func stereo(overlapS float64) [][]int16 {
	caller := voicetest.Voice{F0: 210, Range: 3, Rate: 5, Level: -18, Dur: 6, Seed: 3}.Generate()
	agent := voicetest.Voice{F0: 110, Range: 2, Rate: 4, Level: -20, Dur: 6, Seed: 4}.Generate()
	n := int((12 - overlapS) * SampleRate)
	c := make([]int16, n)
	a := make([]int16, n)
	copy(c, caller)
	copy(a[n-len(agent):], agent)
	return [][]int16{c, a}
}

func TestCallStreamingMatchesBatch(t *testing.T) {
	chans := stereo(1)
	var want []Second
	wantSum, err := AnalyzeCall(CallConfig{Roles: []Role{RoleCaller, RoleAgent}}, chans, func(s *Second) { want = append(want, *s) })
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewCall(CallConfig{Roles: []Role{RoleCaller, RoleAgent}})
	if err != nil {
		t.Fatal(err)
	}
	var got []Second
	var s Second
	// 100 ms chunks, the agent's arriving one chunk late.
	const chunk = 800
	n := len(chans[0])
	for i := 0; i < n+chunk; i += chunk {
		if i < n {
			c.Push(0, chans[0][i:min(i+chunk, n)])
		}
		if j := i - chunk; j >= 0 && j < n {
			c.Push(1, chans[1][j:min(j+chunk, n)])
		}
		for c.NextSecond(&s) {
			got = append(got, s)
		}
	}
	c.Flush()
	for c.NextSecond(&s) {
		got = append(got, s)
	}
	if !reflect.DeepEqual(scoresOf(got), scoresOf(want)) {
		t.Errorf("streamed seconds differ from the batch ones:\n%v\n%v", scoresOf(got), scoresOf(want))
	}
	gotSum := c.Summary()
	if gotSum.Channels[1].Interruptions != wantSum.Channels[1].Interruptions || gotSum.OverlapS != wantSum.OverlapS {
		t.Errorf("summaries differ: %+v vs %+v", gotSum, wantSum)
	}
	if len(got) != 11 || got[len(got)-1].End != 11 {
		t.Errorf("%d seconds, last ends at %v; want 11 ending at 11", len(got), got[len(got)-1].End)
	}
}

func scoresOf(ss []Second) [][2]float64 {
	var out [][2]float64
	for _, s := range ss {
		v := [2]float64{-1, -1}
		if s.CallerPressure.OK {
			v[0] = math.Round(s.CallerPressure.Value*1e6) / 1e6
		}
		if s.AgentStress.OK {
			v[1] = math.Round(s.AgentStress.Value*1e6) / 1e6
		}
		out = append(out, v)
	}
	return out
}

func TestOverlapAndInterruptions(t *testing.T) {
	sum, err := AnalyzeCall(CallConfig{Roles: []Role{RoleCaller, RoleAgent}}, stereo(2), nil)
	if err != nil {
		t.Fatal(err)
	}
	if o := float64(sum.OverlapS); o < 1 || o > 3 {
		t.Errorf("2 s of overlap measured as %.2f s", o)
	}
	// The agent started speaking while the caller was speaking.
	if sum.Channels[1].Interruptions < 1 {
		t.Errorf("interruptions by the agent: %d; want ≥ 1", sum.Channels[1].Interruptions)
	}
	if tt := float64(sum.Channels[0].TalkTimeS); tt < 4 || tt > 7 {
		t.Errorf("caller talk time %.2f s; want about 6", tt)
	}
	sum, _ = AnalyzeCall(CallConfig{Roles: []Role{RoleCaller, RoleAgent}}, stereo(0), nil)
	if float64(sum.OverlapS) > 0.3 || sum.Channels[0].Interruptions+sum.Channels[1].Interruptions != 0 {
		t.Errorf("turns without overlap: overlap %.2f s, %d+%d interruptions", float64(sum.OverlapS), sum.Channels[0].Interruptions, sum.Channels[1].Interruptions)
	}
}

func TestCallerPressureFollowsTheCaller(t *testing.T) {
	// Turns: the caller speaks 5 s, the agent 5 s, the caller 5 s — the
	// caller is the same from the first second to the last.
	score := func(caller voicetest.Voice) float64 {
		agentVoice := voicetest.Voice{F0: 115, Range: 2, Rate: 4, Level: -20, Dur: 5, Seed: 9}.Generate()
		cv := caller.Generate()
		c := voicetest.Concat(cv[:5*SampleRate], voicetest.Silence(5), cv[5*SampleRate:])
		agent := voicetest.Concat(voicetest.Silence(5), agentVoice, voicetest.Silence(5))
		var sum float64
		n := 0
		AnalyzeCall(CallConfig{Roles: []Role{RoleCaller, RoleAgent}}, [][]int16{c, agent}, func(s *Second) {
			if s.CallerPressure.OK {
				sum += s.CallerPressure.Value
				n++
			}
		})
		return sum / float64(n)
	}
	calm := score(voicetest.Voice{F0: 120, Range: 2, Rate: 4, Level: -20, Dur: 10, Seed: 5})
	angry := score(voicetest.Voice{F0: 190, Range: 6, Rate: 6, Level: -10, Effort: 1, Dur: 10, Seed: 5})
	t.Logf("caller_pressure: calm caller %.1f, raised/variable/loud/fast/effortful caller %.1f", calm, angry)
	if angry < calm+20 {
		t.Errorf("raised, variable, loud, fast caller: caller_pressure %.1f; calm caller %.1f", angry, calm)
	}
}

func TestBaselineExportImport(t *testing.T) {
	speech := voicetest.Voice{F0: 180, Range: 3, Rate: 4.5, Level: -22, Dur: 8, Seed: 6}.Generate()
	c, _ := NewCall(CallConfig{Roles: []Role{RoleAgent}})
	c.Push(0, speech)
	c.Flush()
	b := c.Baseline(0)
	if b.Source != "call" || b.VoicedS < 2 || math.Abs(b.F0Level-semitones(180)) > 1.5 {
		t.Fatalf("baseline after 8 s: %+v (want source call, F0 level near %.1f st)", b, semitones(180))
	}
	js, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	var back Baseline
	if err := json.Unmarshal(js, &back); err != nil || back != b {
		t.Fatalf("baseline JSON round trip: %v, %+v vs %+v", err, back, b)
	}
	// Given back as a stored baseline, it is the prior.
	c2, _ := NewCall(CallConfig{Roles: []Role{RoleAgent}, AgentBaseline: &back})
	if got := c2.Baseline(0); got.Source != "stored" || got.F0Level != b.F0Level {
		t.Errorf("stored baseline before any speech: %+v", got)
	}
}

func TestModelFile(t *testing.T) {
	m := DefaultModel()
	if m.Name == "" || m.Version == "" || len(m.AgentStress.Terms) == 0 || len(m.CallerPressure.Terms) == 0 {
		t.Fatalf("embedded model: %+v", m)
	}
	for _, bad := range []string{
		`{}`,
		strings.Replace(string(modelV1), `"f0_level", "weight": 1.0`, `"microtremor", "weight": 1.0`, 1),
		strings.Replace(string(modelV1), `"scale": 2.4`, `"scale": 0`, 1),
		strings.Replace(string(modelV1), `"reference": "baseline"`, `"reference": "yesterday"`, 1),
		strings.Replace(string(modelV1), `"window_s": 1`, `"window_s": 1, "extra": 1`, 1),
	} {
		if _, err := ParseModel([]byte(bad)); err == nil {
			t.Errorf("ParseModel accepted %.80q…", bad)
		}
	}
}

func TestCallNoAllocs(t *testing.T) {
	c, _ := NewCall(CallConfig{Roles: []Role{RoleCaller, RoleAgent}, OnFrame: func(int, *Frame) {}})
	if n := chunkAllocs(c); n != 0 {
		t.Errorf("a 100 ms chunk per channel allocates %v times", n)
	}
}

// chunkAllocs returns the allocations per 100 ms chunk per channel of a
// stereo call (stereo(0), looped) pushed into c, after 3 s of warm-up,
// with its seconds taken as they complete.
func chunkAllocs(c *Call) float64 {
	chans := stereo(0)
	var s Second
	pos := 0
	step := func() {
		if pos+800 > len(chans[0]) {
			pos = 0
		}
		c.Push(0, chans[0][pos:pos+800])
		c.Push(1, chans[1][pos:pos+800])
		pos += 800
		for c.NextSecond(&s) {
		}
	}
	for range 30 {
		step()
	}
	return testing.AllocsPerRun(300, step)
}

func TestNewCallErrors(t *testing.T) {
	for _, roles := range [][]Role{nil, {RoleAgent, RoleAgent}, {RoleCaller, RoleAgent, RoleCaller}, {Role(9)}} {
		if _, err := NewCall(CallConfig{Roles: roles}); err == nil {
			t.Errorf("roles %v: no error", roles)
		}
	}
	if _, err := AnalyzeCall(CallConfig{Roles: []Role{RoleAgent}}, [][]int16{nil, nil}, nil); err == nil {
		t.Error("two channels for one role: no error")
	}
	for s, want := range map[string]Role{"caller": RoleCaller, "Agent": RoleAgent, "external": RoleCaller, "internal": RoleAgent} {
		if r, err := ParseRole(s); err != nil || r != want {
			t.Errorf("ParseRole(%q) = %v, %v", s, r, err)
		}
	}
	if _, err := ParseRole("supervisor"); err == nil {
		t.Error("ParseRole(supervisor): no error")
	}
}
