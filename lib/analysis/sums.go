package analysis

import (
	"errors"
	"fmt"
	"math"

	"github.com/calmline/calmline/lib/field"
	"github.com/calmline/calmline/lib/voice"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
)

// Analyse once. realtime analyses every live call second by second; fullcall
// needs the same measures for the whole-call report. Rather than analysing
// the audio again, fullcall can add up realtime's per-second results: each
// second's SecondAnalysis carries the increments of everything Stats
// reports (voice.SecondSums in the wire's terms), and Sums adds them up.
//
// How close a report built from Sums is to one from Analyzer.Stats over
// the same audio: frame counts (talk, silence, voiced fraction, speech
// rate, overlap, interruptions) exactly; F0 mean and standard deviation,
// intensity, HNR and jitter up to the order of floating-point additions;
// shimmer within 0.5 % (the call's running total counts each amplitude
// twice, which moves its mean's n−1 denominator by about 1/(2n)); F0 median and
// percentiles from a histogram of tenths of a semitone (0.58 %) instead of
// hundredths, interpolated within the bin. TestSumsAgreeWithStats measures
// it.

// f0Coarse is how many of the voice analysis's F0 bins make one bin of the
// wire's histogram: tenths of a semitone.
const f0Coarse = 10

// f0WireBins is the number of bins of the wire's F0 histogram.
const f0WireBins = voice.F0Bins / f0Coarse

// SecondAnalysis turns an analysed second into the wire form; nil if it has
// no sums, or they are incomplete (see voice.SecondSums.Complete).
func SecondAnalysis(s Second) *callv1.SecondAnalysis {
	if s.Sums.NumChannels == 0 || !s.Sums.Complete() {
		return nil
	}
	out := &callv1.SecondAnalysis{
		Second:       uint32(s.Index),
		EndSample:    s.EndSample,
		AudioSamples: s.AudioSamples,
		Model:        Model(),
		CallerTalk:   s.CallerTalk,
		AgentTalk:    s.AgentTalk,
		Overlap:      s.Overlap,
	}
	if s.AgentStress.OK {
		v := s.AgentStress.Value
		out.AgentStress = &v
	}
	if s.CallerPressure.OK {
		v := s.CallerPressure.Value
		out.CallerPressure = &v
	}
	var hist [f0WireBins]uint32
	for _, c := range s.Sums.Channels[:s.Sums.NumChannels] {
		ca := &callv1.ChannelAnalysis{
			Frames:         uint32(c.Frames),
			SpeechFrames:   uint32(c.Speech),
			VoicedFrames:   uint32(c.Voiced),
			SyllableNuclei: uint32(c.Nuclei),
			PowerSum:       c.Power,
			HnrSumDb:       c.HNR,
			HnrFrames:      uint32(c.HNRFrames),
			OverlapFrames:  uint32(c.Overlap),
			Interruptions:  uint32(c.Interruptions),
			Perturbation:   perturbationWire(&c.Perturbation),
		}
		for _, f := range c.F0[:c.F0N] {
			hz := float64(f)
			ca.F0SumHz += hz
			ca.F0SumSqHz += hz * hz
			hist[voice.F0Bin(hz)/f0Coarse]++
		}
		for b, n := range hist {
			if n > 0 {
				ca.F0Bins = append(ca.F0Bins, uint32(b))
				ca.F0Counts = append(ca.F0Counts, n)
				hist[b] = 0
			}
		}
		out.Channels = append(out.Channels, ca)
	}
	return out
}

func perturbationWire(p *voice.PerturbationSums) *callv1.PerturbationSums {
	return &callv1.PerturbationSums{
		JitterSum: p.JitterSum, JitterN: uint32(p.JitterN),
		RapSum: p.RAPSum, RapN: uint32(p.RAPN),
		PeriodSum: p.PeriodSum, PeriodN: uint32(p.PeriodN),
		ShimmerSum: p.ShimmerSum, ShimmerN: uint32(p.ShimmerN),
		Apq3Sum: p.APQ3Sum, Apq3N: uint32(p.APQ3N),
		AmpSum: p.AmpSum, AmpN: uint32(p.AmpN), LastAmp: p.LastAmp,
		Pulses: uint32(p.Pulses),
	}
}

// Sums adds up a call's per-second analyses (SecondAnalysis) into the
// call's measures. Its fields are exported for checkpoints (gob); use
// NewSums, Add and Stats.
type Sums struct {
	Channels []ChannelSums
	// GapSamples counts the samples per channel of the added seconds that
	// were gaps, not audio.
	GapSamples uint64
	// Seconds counts the seconds added.
	Seconds uint64
}

// ChannelSums are one channel's totals.
type ChannelSums struct {
	Frames, Speech, Voiced, Nuclei uint64
	Power, HNR                     float64
	HNRFrames                      uint64
	F0N                            uint64
	F0Sum, F0SumSq                 float64
	// F0Hist is the F0 histogram in the wire's bins (nil until a voiced
	// frame).
	F0Hist                 []uint32
	Perturbation           voice.PerturbationSums
	Overlap, Interruptions uint64
}

// NewSums returns empty sums for a call with that many channels.
func NewSums(channels int) *Sums { return &Sums{Channels: make([]ChannelSums, channels)} }

// maxPulsesPerSecond bounds the glottal pulses one channel can have in a
// second (Praat's shortest period, 0.1 ms).
const maxPulsesPerSecond = 10000

// CheckSecond returns an error naming the first thing wrong with a
// per-second analysis for a call with that many channels at that sample
// rate, so that one malformed message cannot corrupt a report.
func CheckSecond(sa *callv1.SecondAnalysis, channels, rate int) error {
	if sa == nil {
		return errors.New("second analysis: empty")
	}
	start := uint64(sa.Second) * uint64(rate)
	if sa.EndSample <= start || sa.EndSample > start+uint64(rate) {
		return fmt.Errorf("second analysis %d: end_sample %d is outside the second [%d, %d]", sa.Second, sa.EndSample, start+1, start+uint64(rate))
	}
	if sa.AudioSamples > sa.EndSample-start {
		return fmt.Errorf("second analysis %d: %d audio samples in a second of %d", sa.Second, sa.AudioSamples, sa.EndSample-start)
	}
	if m := sa.GetModel(); m.GetName() != Model().Name || m.GetVersion() != Model().Version {
		return fmt.Errorf("second analysis %d: made by model %q %q, this is %s", sa.Second, m.GetName(), m.GetVersion(), modelID())
	}
	if len(sa.Channels) != channels {
		return fmt.Errorf("second analysis %d: %d channels for a call of %d", sa.Second, len(sa.Channels), channels)
	}
	for _, v := range []struct {
		name string
		v    *float64
	}{{"agent_stress", sa.AgentStress}, {"caller_pressure", sa.CallerPressure}} {
		if v.v != nil && !(*v.v >= 0 && *v.v <= 100) {
			return fmt.Errorf("second analysis %d: %s %v is not a score from 0 to 100", sa.Second, v.name, *v.v)
		}
	}
	for _, v := range []struct {
		name string
		v    float64
	}{{"caller_talk", sa.CallerTalk}, {"agent_talk", sa.AgentTalk}, {"overlap", sa.Overlap}} {
		if !(v.v >= 0 && v.v <= 1) {
			return fmt.Errorf("second analysis %d: %s %v is not a share from 0 to 1", sa.Second, v.name, v.v)
		}
	}
	for i, c := range sa.Channels {
		if err := checkChannel(c); err != nil {
			return fmt.Errorf("second analysis %d, channel %d: %w", sa.Second, i, err)
		}
	}
	return nil
}

func checkChannel(c *callv1.ChannelAnalysis) error {
	if c.Frames > voice.FrameRate {
		return fmt.Errorf("%d frames in a second", c.Frames)
	}
	for _, n := range []struct {
		name string
		v    uint32
	}{{"speech_frames", c.SpeechFrames}, {"voiced_frames", c.VoicedFrames}, {"syllable_nuclei", c.SyllableNuclei}, {"hnr_frames", c.HnrFrames}, {"overlap_frames", c.OverlapFrames}, {"interruptions", c.Interruptions}} {
		if n.v > c.Frames {
			return fmt.Errorf("%s %d of %d frames", n.name, n.v, c.Frames)
		}
	}
	p := c.GetPerturbation()
	for _, f := range []struct {
		name string
		v    float64
	}{{"power_sum", c.PowerSum}, {"f0_sum_hz", c.F0SumHz}, {"f0_sum_sq_hz", c.F0SumSqHz}, {"jitter_sum", p.GetJitterSum()}, {"rap_sum", p.GetRapSum()},
		{"period_sum", p.GetPeriodSum()}, {"shimmer_sum", p.GetShimmerSum()}, {"apq3_sum", p.GetApq3Sum()}, {"amp_sum", p.GetAmpSum()}, {"last_amp", p.GetLastAmp()}} {
		if err := field.Finite(f.name, f.v); err != nil {
			return err
		}
		if f.v < 0 {
			return fmt.Errorf("%s %v is negative", f.name, f.v)
		}
	}
	if err := field.Finite("hnr_sum_db", c.HnrSumDb); err != nil {
		return err
	}
	for _, n := range []uint32{p.GetJitterN(), p.GetRapN(), p.GetPeriodN(), p.GetShimmerN(), p.GetApq3N(), p.GetAmpN(), p.GetPulses()} {
		if n > maxPulsesPerSecond {
			return fmt.Errorf("%d pulse measures in a second", n)
		}
	}
	if len(c.F0Bins) != len(c.F0Counts) {
		return fmt.Errorf("%d F0 bins with %d counts", len(c.F0Bins), len(c.F0Counts))
	}
	var n uint64
	for i, b := range c.F0Bins {
		if b >= f0WireBins {
			return fmt.Errorf("F0 bin %d of %d", b, f0WireBins)
		}
		n += uint64(c.F0Counts[i])
	}
	if n != uint64(c.VoicedFrames) {
		return fmt.Errorf("an F0 histogram of %d frames for %d voiced frames", n, c.VoicedFrames)
	}
	return nil
}

// Add adds one second's analysis, which CheckSecond must have accepted.
func (s *Sums) Add(sa *callv1.SecondAnalysis, rate int) {
	span := sa.EndSample - uint64(sa.Second)*uint64(rate)
	s.GapSamples += span - min(sa.AudioSamples, span)
	s.Seconds++
	for i, c := range sa.Channels {
		if i >= len(s.Channels) {
			break
		}
		t := &s.Channels[i]
		t.Frames += uint64(c.Frames)
		t.Speech += uint64(c.SpeechFrames)
		t.Voiced += uint64(c.VoicedFrames)
		t.Nuclei += uint64(c.SyllableNuclei)
		t.Power += c.PowerSum
		t.HNR += c.HnrSumDb
		t.HNRFrames += uint64(c.HnrFrames)
		t.F0Sum += c.F0SumHz
		t.F0SumSq += c.F0SumSqHz
		t.Overlap += uint64(c.OverlapFrames)
		t.Interruptions += uint64(c.Interruptions)
		if len(c.F0Bins) > 0 && t.F0Hist == nil {
			t.F0Hist = make([]uint32, f0WireBins)
		}
		for j, b := range c.F0Bins {
			if int(b) < len(t.F0Hist) {
				t.F0Hist[b] += c.F0Counts[j]
				t.F0N += uint64(c.F0Counts[j])
			}
		}
		if w := c.GetPerturbation(); w != nil {
			acc := t.Perturbation.Perturbation()
			add := (&voice.PerturbationSums{
				JitterSum: w.JitterSum, JitterN: int(w.JitterN), RAPSum: w.RapSum, RAPN: int(w.RapN),
				PeriodSum: w.PeriodSum, PeriodN: int(w.PeriodN), ShimmerSum: w.ShimmerSum, ShimmerN: int(w.ShimmerN),
				APQ3Sum: w.Apq3Sum, APQ3N: int(w.Apq3N), AmpSum: w.AmpSum, AmpN: int(w.AmpN), LastAmp: w.LastAmp,
				Pulses: int(w.Pulses),
			}).Perturbation()
			acc.Add(&add)
			t.Perturbation = acc.Sums()
		}
	}
}

// Stats returns the measures over the seconds added, as Analyzer.Stats
// does over the audio (see the tolerance above), for a call whose channels
// have these roles and whose audio has this sample rate.
func (s *Sums) Stats(roles []voice.Role, rate int) Stats {
	gapS := float64(s.GapSamples) / float64(rate)
	var st Stats
	for i, c := range s.Channels {
		if i >= len(roles) {
			break
		}
		v := c.voice()
		talk := float64(v.TalkTimeS)
		st.Channels = append(st.Channels, ChannelStats{
			Role:            roles[i],
			TalkSeconds:     talk,
			SilenceSeconds:  max(float64(v.DurationS)-talk-gapS, 0),
			IntensityMeanDB: float64(v.IntensityMeanDB),
			Voice:           v,
		})
		switch roles[i] {
		case voice.RoleCaller:
			st.CallerInterruptions = int(c.Interruptions)
		case voice.RoleAgent:
			st.AgentInterruptions = int(c.Interruptions)
		}
	}
	if len(s.Channels) == 2 {
		st.OverlapSeconds = float64(s.Channels[0].Overlap) / voice.FrameRate
	}
	return st
}

// voice returns the channel's voice report.
func (c *ChannelSums) voice() voice.ChannelStats {
	nan := math.NaN()
	ratio := func(x float64, n uint64) float64 {
		if n == 0 {
			return nan
		}
		return x / float64(n)
	}
	p := c.Perturbation.Perturbation()
	out := voice.ChannelStats{
		DurationS:       voice.Num(float64(c.Frames) / voice.FrameRate),
		VoicedFraction:  voice.Num(ratio(float64(c.Voiced), c.Frames)),
		F0MeanHz:        voice.Num(ratio(c.F0Sum, c.F0N)),
		F0MedianHz:      voice.Num(c.quantile(0.5)),
		F0SDHz:          voice.Num(nan),
		F0P05Hz:         voice.Num(c.quantile(0.05)),
		F0P95Hz:         voice.Num(c.quantile(0.95)),
		JitterLocalPct:  voice.Num(p.JitterLocal()),
		JitterRAPPct:    voice.Num(p.JitterRAP()),
		ShimmerLocalPct: voice.Num(p.ShimmerLocal()),
		ShimmerAPQ3Pct:  voice.Num(p.ShimmerAPQ3()),
		HNRMeanDB:       voice.Num(ratio(c.HNR, c.HNRFrames)),
		IntensityMeanDB: voice.Num(nan),
		SpeechRate:      voice.Num(ratio(float64(c.Nuclei), c.Frames) * voice.FrameRate),
		TalkTimeS:       voice.Num(float64(c.Speech) / voice.FrameRate),
	}
	if c.Frames > 0 {
		out.IntensityMeanDB = voice.Num(voice.IntensityFromPower(c.Power / float64(c.Frames)))
	}
	if c.F0N >= 2 {
		n := float64(c.F0N)
		m := c.F0Sum / n
		out.F0SDHz = voice.Num(math.Sqrt(max((c.F0SumSq-n*m*m)/(n-1), 0)))
	}
	return out
}

// quantile returns the q-quantile of the F0 histogram, interpolating
// within a bin as the voice analysis does.
func (c *ChannelSums) quantile(q float64) float64 {
	return voice.F0Quantile(c.F0Hist, c.F0N, q, f0Coarse)
}

// Roles returns the roles of the call's channels, in channel order.
func (a *Analyzer) Roles() []voice.Role { return a.roles }
