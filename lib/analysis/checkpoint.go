package analysis

import (
	"bytes"
	"encoding/gob"
	"errors"
	"fmt"
	"math"

	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/voice"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
)

// Checkpoints. fullcall must be able to lose the instance analysing a live
// call and go on elsewhere without re-analysing the audio it acknowledged
// (it does not keep raw audio), so the analysis's state is saved with each
// of the call's durable checkpoints (Snapshot) and the instance that takes
// the call over continues from it (Resume).
//
// Today a checkpoint is a warm restart. It keeps where the analysis is
// (the timeline position), what it has measured so far (Stats: talk,
// silence, overlap, interruptions and the voice report of each channel),
// the speakers' baselines, and what each channel learned about its line
// (voice.LineState: noise floor and spread, noise power, bleed coupling,
// running levels). Resume starts a new analysis at that position, with
// the agent's baseline and the line states given back (voice.CallConfig's
// AgentBaseline and LineStates) and the earlier measures merged into its
// Stats. A state from before line states were kept still resumes; its
// channels learn their lines again, and for some seconds judge speech,
// overlap and bleed differently from an uninterrupted analysis. The
// tolerance this costs, against an analysis that never stopped:
//
//   - Everything before the checkpoint is kept as it was: the scores of the
//     seconds it completed, and its measures.
//   - The second the checkpoint falls in is scored from the audio after the
//     checkpoint only (the part before is treated as a gap), and seconds the
//     old analysis had not yet completed before it are lost (fullcall
//     records them as abstained). Checkpoints are taken right after a
//     second completes, so this is normally the one second that holds the
//     checkpoint.
//   - The first second after the checkpoint may differ by a few frames of
//     speech (the new analyser's first frames lack the audio before it,
//     and the voice-activity hangover starts over); with the line states
//     restored the seconds after it are judged as an uninterrupted
//     analysis would (voice's TestResumeWithLineStateContinues).
//   - The caller's baseline is measured again from the caller's next
//     voiced speech (voice.Call takes only a stored agent baseline), so
//     caller_pressure after a takeover may differ from an uninterrupted
//     run until that baseline settles; agent_stress starts from the agent's
//     baseline as it was.
//   - The voice report's measures are combined from the two parts: counts
//     and durations add up exactly; means (F0, HNR, jitter, shimmer,
//     intensity, speech rate) are weighted by voiced time; the F0 standard
//     deviation is pooled; the F0 median and percentiles are weighted
//     averages of the two parts' (an approximation).
//
// For an exact continuation, the voice analysis must provide its whole
// state: voice.Call (and audio.Converter, which carries resampler state at
// 16 kHz) implementing encoding.BinaryMarshaler and BinaryUnmarshaler, in a
// versioned encoding whose size does not grow with the call, such that
// unmarshalling into a Call built with the same CallConfig continues
// bit-identically, and a state of another model version is refused. A
// State then carries that encoding and Resume restores it instead of
// restarting.

// State is an analysis checkpoint.
type State struct {
	// Model names the model (name and version) that made the state.
	Model string
	// Timeline is the position analysed, in samples per channel at the
	// input rate, gaps included.
	Timeline uint64
	// Stats are the measures over [0, Timeline).
	Stats Stats
	// Baselines are the speakers' baselines, in channel order.
	Baselines []voice.Baseline
	// Lines are what each channel learned about its line (noise floor,
	// noise spread and power, bleed coupling, running levels), in channel
	// order; empty in a state from before they were kept, which resumes
	// learning the line again.
	Lines []voice.LineState
}

// ErrModelChanged is returned by Resume for a state another model (or
// model version) made: its measures and baselines do not carry over.
var ErrModelChanged = errors.New("the checkpoint was made by another analysis model")

func modelID() string {
	m := Model()
	return m.Name + " " + m.Version
}

// Snapshot returns the analyser's checkpoint state at its current
// position. It allocates; it does not change the analyser.
func (a *Analyzer) Snapshot() ([]byte, error) {
	st := State{Model: modelID(), Timeline: a.Timeline(), Stats: a.Stats()}
	for ch := range a.roles {
		st.Baselines = append(st.Baselines, a.call.Baseline(ch))
		st.Lines = append(st.Lines, a.call.LineState(ch))
	}
	var b bytes.Buffer
	if err := gob.NewEncoder(&b).Encode(&st); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	return b.Bytes(), nil
}

// DecodeState reads a Snapshot.
func DecodeState(b []byte) (*State, error) {
	var st State
	if err := gob.NewDecoder(bytes.NewReader(b)).Decode(&st); err != nil {
		return nil, fmt.Errorf("analysis state: %w", err)
	}
	return &st, nil
}

// Resume returns an analyser that continues a call from a Snapshot (see
// the tolerance above). Its Timeline starts at the state's; its seconds
// are numbered on from the second that holds it.
func Resume(call *callv1.Call, state []byte) (*Analyzer, audio.Format, error) {
	st, err := DecodeState(state)
	if err != nil {
		return nil, audio.Format{}, err
	}
	if st.Model != modelID() {
		return nil, audio.Format{}, fmt.Errorf("resume: %w (%s; this is %s)", ErrModelChanged, st.Model, modelID())
	}
	if len(st.Baselines) != len(call.GetFormat().GetChannels()) || len(st.Stats.Channels) != len(st.Baselines) {
		return nil, audio.Format{}, fmt.Errorf("resume: the state is for %d channels, the call has %d", len(st.Baselines), len(call.GetFormat().GetChannels()))
	}
	var agent *voice.Baseline
	for i, r := range call.Format.Channels {
		if r == callv1.ChannelRole_CHANNEL_ROLE_AGENT && st.Stats.Channels[i].Role == voice.RoleAgent {
			b := st.Baselines[i]
			agent = &b
		}
	}
	if len(st.Lines) != 0 && len(st.Lines) != len(st.Baselines) {
		return nil, audio.Format{}, fmt.Errorf("resume: the state has %d line states for %d channels", len(st.Lines), len(st.Baselines))
	}
	a, f, err := newAnalyzer(call, agent)
	if err != nil {
		return nil, audio.Format{}, err
	}
	if len(st.Lines) != 0 {
		// The same call, starting from the line as the analysis left it.
		cfg := a.call.Config()
		cfg.LineStates = st.Lines
		if a.call, err = voice.NewCall(cfg); err != nil {
			return nil, audio.Format{}, fmt.Errorf("resume: %w", err)
		}
	}
	for i, r := range a.roles {
		if st.Stats.Channels[i].Role != r {
			return nil, audio.Format{}, fmt.Errorf("resume: channel %d was %v, the call says %v", i, st.Stats.Channels[i].Role, r)
		}
	}
	// The new analysis starts at the beginning of the second that holds
	// the checkpoint; the part of it before the checkpoint is a gap.
	rate := uint64(f.SampleRate)
	sec := st.Timeline / rate
	a.resumed = &resumed{samples: sec * rate, second: int(sec), prior: st.Stats}
	a.Gap(st.Timeline - sec*rate)
	return a, f, nil
}

// resumed is what an analyser continuing from a checkpoint adds to its own
// analysis. Its methods work on a nil receiver (an analyser that started
// with the call).
type resumed struct {
	samples uint64 // the timeline position the analysis starts at
	second  int    // the index of its first second
	prior   Stats  // the measures before it
}

func (r *resumed) baseSamples() uint64 {
	if r == nil {
		return 0
	}
	return r.samples
}

func (r *resumed) baseSecond() int {
	if r == nil {
		return 0
	}
	return r.second
}

// merge combines the measures before the checkpoint with those after it.
func (r *resumed) merge(now Stats) Stats {
	if r == nil {
		return now
	}
	p := r.prior
	out := Stats{
		OverlapSeconds:      p.OverlapSeconds + now.OverlapSeconds,
		CallerInterruptions: p.CallerInterruptions + now.CallerInterruptions,
		AgentInterruptions:  p.AgentInterruptions + now.AgentInterruptions,
	}
	for i, c := range now.Channels {
		if i >= len(p.Channels) {
			out.Channels = append(out.Channels, c)
			continue
		}
		b := p.Channels[i]
		out.Channels = append(out.Channels, ChannelStats{
			Role:            c.Role,
			TalkSeconds:     b.TalkSeconds + c.TalkSeconds,
			SilenceSeconds:  b.SilenceSeconds + c.SilenceSeconds,
			IntensityMeanDB: energyMean(b.IntensityMeanDB, float64(b.Voice.DurationS), c.IntensityMeanDB, float64(c.Voice.DurationS)),
			Voice:           mergeVoice(b.Voice, c.Voice),
		})
	}
	return out
}

// mergeVoice combines two parts' voice reports (see the tolerance above).
func mergeVoice(a, b voice.ChannelStats) voice.ChannelStats {
	da, db := num(a.DurationS), num(b.DurationS)
	va, vb := num(a.VoicedFraction)*da, num(b.VoicedFraction)*db
	out := voice.ChannelStats{
		DurationS:       voice.Num(da + db),
		TalkTimeS:       voice.Num(num(a.TalkTimeS) + num(b.TalkTimeS)),
		F0MeanHz:        wmean(a.F0MeanHz, va, b.F0MeanHz, vb),
		F0MedianHz:      wmean(a.F0MedianHz, va, b.F0MedianHz, vb),
		F0P05Hz:         wmean(a.F0P05Hz, va, b.F0P05Hz, vb),
		F0P95Hz:         wmean(a.F0P95Hz, va, b.F0P95Hz, vb),
		JitterLocalPct:  wmean(a.JitterLocalPct, va, b.JitterLocalPct, vb),
		JitterRAPPct:    wmean(a.JitterRAPPct, va, b.JitterRAPPct, vb),
		ShimmerLocalPct: wmean(a.ShimmerLocalPct, va, b.ShimmerLocalPct, vb),
		ShimmerAPQ3Pct:  wmean(a.ShimmerAPQ3Pct, va, b.ShimmerAPQ3Pct, vb),
		HNRMeanDB:       wmean(a.HNRMeanDB, va, b.HNRMeanDB, vb),
		IntensityMeanDB: voice.Num(energyMean(float64(a.IntensityMeanDB), da, float64(b.IntensityMeanDB), db)),
		SpeechRate:      wmean(a.SpeechRate, da, b.SpeechRate, db),
		VoicedFraction:  voice.Num(math.NaN()),
		F0SDHz:          voice.Num(math.NaN()),
	}
	if da+db > 0 {
		out.VoicedFraction = voice.Num((va + vb) / (da + db))
	}
	// Pooled standard deviation: E[x²] of the whole from each part's.
	if m := out.F0MeanHz; m.Valid() {
		var s2, w float64
		for _, p := range []struct {
			sd, mean voice.Num
			w        float64
		}{{a.F0SDHz, a.F0MeanHz, va}, {b.F0SDHz, b.F0MeanHz, vb}} {
			if p.sd.Valid() && p.mean.Valid() && p.w > 0 {
				s2 += p.w * (float64(p.sd)*float64(p.sd) + float64(p.mean)*float64(p.mean))
				w += p.w
			}
		}
		if w > 0 {
			out.F0SDHz = voice.Num(math.Sqrt(max(s2/w-float64(m)*float64(m), 0)))
		}
	}
	return out
}

// num reads a measure, 0 where undefined.
func num(n voice.Num) float64 {
	if !n.Valid() {
		return 0
	}
	return float64(n)
}

// wmean is the mean of two parts' values weighted by wa and wb, skipping
// an undefined or weightless part.
func wmean(a voice.Num, wa float64, b voice.Num, wb float64) voice.Num {
	if !a.Valid() || wa <= 0 {
		if b.Valid() && wb > 0 {
			return b
		}
		if a.Valid() {
			return a
		}
		return b
	}
	if !b.Valid() || wb <= 0 {
		return a
	}
	return voice.Num((float64(a)*wa + float64(b)*wb) / (wa + wb))
}

// energyMean combines two dB means over durations as the mean of their
// energies.
func energyMean(a, da, b, db float64) float64 {
	va := !math.IsNaN(a) && !math.IsInf(a, 0) && da > 0
	vb := !math.IsNaN(b) && !math.IsInf(b, 0) && db > 0
	switch {
	case va && vb:
		return 10 * math.Log10((da*math.Pow(10, a/10)+db*math.Pow(10, b/10))/(da+db))
	case va:
		return a
	case vb:
		return b
	}
	return a
}
