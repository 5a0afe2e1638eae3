// Package voice measures, from 8 kHz telephone speech, how a speaker's
// voice departs from their normal: per-frame acoustic features at a 10 ms
// hop, per-second windows of them, per-speaker baselines and the two
// calmline scores, agent_stress and caller_pressure.
//
// The package is pure computation: samples in, numbers out; no I/O beyond
// the model embedded in it, no logging, no goroutines. The streaming types
// allocate nothing per frame.
package voice
