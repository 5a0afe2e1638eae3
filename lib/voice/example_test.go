package voice_test

import (
	"fmt"

	"github.com/calmline/calmline/lib/voice"
	"github.com/calmline/calmline/lib/voice/voicetest"
)

// The realtime path: push 100 ms of each channel as it arrives and read
// the scored seconds.
func ExampleCall() {
	caller := voicetest.Voice{F0: 210, Range: 4, Rate: 5, Level: -14, Effort: 1, Dur: 4, Seed: 1}.Generate()
	agent := voicetest.Voice{F0: 115, Range: 2, Rate: 4, Level: -16, Dur: 4, Seed: 2}.Generate()

	call, err := voice.NewCall(voice.CallConfig{Roles: []voice.Role{voice.RoleCaller, voice.RoleAgent}})
	if err != nil {
		panic(err)
	}
	var s voice.Second
	show := func() {
		for call.NextSecond(&s) {
			fmt.Printf("second %d (%.1f–%.1f s): caller_pressure scored %v, agent_stress scored %v, model %s\n",
				s.Index, s.Start, s.End, s.CallerPressure.OK, s.AgentStress.OK, s.CallerPressure.Model)
		}
	}
	const chunk = 800 // 100 ms at 8 kHz
	for i := 0; i < len(caller); i += chunk {
		call.Push(0, caller[i:i+chunk])
		call.Push(1, agent[i:i+chunk])
		show()
	}
	call.Flush()
	show()
	// Output:
	// second 0 (0.0–1.0 s): caller_pressure scored true, agent_stress scored true, model calmline-voice/2.0.0
	// second 1 (1.0–2.0 s): caller_pressure scored true, agent_stress scored true, model calmline-voice/2.0.0
	// second 2 (2.0–3.0 s): caller_pressure scored true, agent_stress scored true, model calmline-voice/2.0.0
	// second 3 (3.0–4.0 s): caller_pressure scored true, agent_stress scored true, model calmline-voice/2.0.0
}

// Silence and call-progress tones are not scored: the score says why.
func ExampleScore_abstention() {
	tone := voicetest.Tone(425, 0.3, 2)
	voice.AnalyzeCall(voice.CallConfig{Roles: []voice.Role{voice.RoleAgent}}, [][]int16{tone}, func(s *voice.Second) {
		fmt.Println(s.Index, s.AgentStress.OK, s.AgentStress.Reason, s.CallerPressure.Reason)
	})
	// Output:
	// 0 false steady_tone no_channel_for_role
	// 1 false steady_tone no_channel_for_role
}

// A baseline measured in one call (or over a recording) is stored per
// agent and given back to the next call, where it is the prior the agent's
// first stretch of speech is blended with.
func ExampleCall_Baseline() {
	speech := voicetest.Voice{F0: 120, Range: 2, Rate: 4, Level: -20, Dur: 8, Seed: 3}.Generate()
	first, _ := voice.NewCall(voice.CallConfig{Roles: []voice.Role{voice.RoleAgent}})
	first.Push(0, speech)
	first.Flush()
	stored := first.Baseline(0)
	fmt.Printf("source %s, F0 level %.0f semitones re 100 Hz\n", stored.Source, stored.F0Level)

	next, _ := voice.NewCall(voice.CallConfig{Roles: []voice.Role{voice.RoleAgent}, AgentBaseline: &stored})
	fmt.Println("next call starts from:", next.Baseline(0).Source)
	// Output:
	// source call, F0 level 3 semitones re 100 Hz
	// next call starts from: stored
}

// The batch path over a whole recording, with the per-channel report.
func ExampleAnalyzeCall() {
	speech := voicetest.Voice{F0: 120, Range: 2, Rate: 4, Level: -20, Dur: 5, Seed: 4}.Generate()
	sum, err := voice.AnalyzeCall(voice.CallConfig{Roles: []voice.Role{voice.RoleAgent}}, [][]int16{speech}, nil)
	if err != nil {
		panic(err)
	}
	ch := sum.Channels[0]
	fmt.Printf("%s: %.0f s, F0 median %.0f Hz, voiced %.0f%%\n", ch.Role, float64(ch.DurationS), float64(ch.F0MedianHz), 100*float64(ch.VoicedFraction))
	// Output:
	// agent: 5 s, F0 median 123 Hz, voiced 79%
}
