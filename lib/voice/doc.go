// Package voice measures, from 8 kHz telephone speech, how a speaker's
// voice departs from their normal: per-frame acoustic features at a 10 ms
// hop, per-second windows of them, per-speaker baselines and calmline's
// two scores, agent_stress and caller_pressure (0–100, or withheld with a
// reason).
//
// # Pipeline
//
// An Analyzer takes one channel's samples and emits a Frame every 10 ms:
// voice activity; F0 with a voicing decision (75–500 Hz, following Praat's
// To Pitch (cc) and finding the true F0 when the telephone band removed the
// fundamental); intensity in Praat's dB; spectral balance (energy above vs
// below 1 kHz, a gain-independent measure of vocal effort); periodicity
// and HNR; syllable nuclei. It also places glottal pulses and accumulates
// jitter (local, rap) and shimmer (local, apq3) with Praat's definitions.
// Each second it hands over a Window: sums from which the second's
// measures derive (F0 level and spread in semitones, loudness, balance,
// speech rate, HNR, jitter, shimmer, steadiness).
//
// A Call runs an Analyzer per channel (caller and agent), keeps each
// speaker's Baseline, and once both channels have finished a second scores
// it with the Model: agent_stress against the agent's baseline,
// caller_pressure against the population and the agent. The model —
// features, weights, scales, baseline and abstention rules — is the
// versioned file model/v1.json embedded in the package; every Score
// carries its ID. A score is withheld, never invented, when the second has
// too little voiced speech of the speaker, when what is voiced is a steady
// tone (hold and call-progress tones, DTMF), when no channel has the role,
// or when agent scoring is switched off.
//
// # Streaming (realtime)
//
// Push each channel's 8 kHz samples as they arrive, in any chunk size
// (audio.Converter turns G.711 or 16 kHz PCM into that), and read the
// finished seconds. Nothing is allocated per chunk; a Second arrives about
// 160 ms after the end of its audio.
//
//	call, err := voice.NewCall(voice.CallConfig{
//		Roles:         []voice.Role{voice.RoleCaller, voice.RoleAgent},
//		AgentBaseline: stored, // the agent's Baseline from earlier calls, or nil
//	})
//	...
//	var s voice.Second
//	for chunk := range chunks { // 100 ms of each channel
//		call.Push(0, chunk.Caller)
//		call.Push(1, chunk.Agent)
//		for call.NextSecond(&s) {
//			publish(s.Index, s.AgentStress, s.CallerPressure) // with s.End, the audio position
//		}
//	}
//	call.Flush() // at hang-up: the last seconds
//	for call.NextSecond(&s) {
//		publish(s.Index, s.AgentStress, s.CallerPressure)
//	}
//
// # Whole-call report (fullcall)
//
// The same Call gives what the report needs: CallConfig.OnFrame receives
// every frame of every channel (voice activity for talk time, overlap and
// interruptions), the Seconds make the timeline, and after Flush, Summary
// returns per-channel measures under Praat's voice-report names plus talk
// time, overlap and interruptions. Baseline(ch) exports the agent's
// baseline to store for the next call. AnalyzeCall runs a whole recording
// through the same code.
//
// The package is pure computation: samples in, numbers out; no I/O beyond
// the embedded model, no logging, no goroutines. A Call or Analyzer is for
// one goroutine at a time.
package voice
