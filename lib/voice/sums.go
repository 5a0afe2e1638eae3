package voice

import "math"

// Per-second sums. A call's Summary is built from running totals (each
// channel's Window over the call, its F0 histogram, its overlap frames and
// interruptions). SecondSums are those totals' increments over one scored
// second, so that another process can rebuild the Summary from a call's
// seconds without its audio: the counts add up exactly, the sums up to the
// order of floating-point additions, and the F0 distribution is carried
// frame by frame. A Call hands them to CallConfig.OnSums as it scores each
// second; computing them allocates nothing.

// PerturbationSums are the jitter and shimmer accumulators of a
// Perturbation, exported so that they can travel; Perturbation converts
// them back.
type PerturbationSums struct {
	JitterSum, RAPSum, PeriodSum float64
	JitterN, RAPN, PeriodN       int
	ShimmerSum, APQ3Sum, AmpSum  float64
	ShimmerN, APQ3N, AmpN        int
	// LastAmp is the last amplitude, which AmpSum excludes (as Praat's
	// mean does) until a later one follows.
	LastAmp float64
	Pulses  int
}

// Sums returns p's accumulators.
func (p *Perturbation) Sums() PerturbationSums {
	return PerturbationSums{
		JitterSum: p.jSum, RAPSum: p.rapSum, PeriodSum: p.perSum,
		JitterN: p.jN, RAPN: p.rapN, PeriodN: p.perN,
		ShimmerSum: p.sSum, APQ3Sum: p.apqSum, AmpSum: p.ampSum,
		ShimmerN: p.sN, APQ3N: p.apqN, AmpN: p.ampN,
		LastAmp: p.lastAmp, Pulses: p.Pulses,
	}
}

// Perturbation returns the Perturbation the sums describe.
func (s *PerturbationSums) Perturbation() Perturbation {
	return Perturbation{
		jSum: s.JitterSum, rapSum: s.RAPSum, perSum: s.PeriodSum,
		jN: s.JitterN, rapN: s.RAPN, perN: s.PeriodN,
		sSum: s.ShimmerSum, apqSum: s.APQ3Sum, ampSum: s.AmpSum,
		sN: s.ShimmerN, apqN: s.APQ3N, ampN: s.AmpN,
		lastAmp: s.LastAmp, Pulses: s.Pulses,
	}
}

// ChannelSums are one channel's increments of the Summary's totals over
// one second. The frame counts and sums are those ChannelStats derives
// from (before bleed rejection, as ChannelStats counts them).
type ChannelSums struct {
	Frames, Speech, Voiced, Nuclei int
	// Power is Σ mean square (full scale 1) over the frames, for the
	// energy mean of the intensity.
	Power float64
	// HNR is Σ HNR (dB) over HNRFrames frames (the voiced frames and the
	// loud unvoiced ones, as Praat's Harmonicity mean).
	HNR       float64
	HNRFrames int
	// F0 holds the F0 (Hz) of the second's voiced frames, F0N of them.
	// F0N is less than Voiced only when the Call could no longer see the
	// frames (one channel ran more than five seconds ahead of the other);
	// such a second cannot rebuild the F0 distribution.
	F0  [FrameRate]float32
	F0N int
	// Perturbation holds the jitter and shimmer sums of the second's
	// pulses.
	Perturbation PerturbationSums
	// Overlap counts the frames in which this channel talked while the
	// other did too; Interruptions the interruptions that completed in
	// this second (see ChannelSummary).
	Overlap, Interruptions int
}

// SecondSums are the increments of all channels over second Index.
type SecondSums struct {
	Index       int64
	NumChannels int
	Channels    [2]ChannelSums
}

// Complete reports whether the sums rebuild every part of the Summary for
// the second (see ChannelSums.F0N).
func (s *SecondSums) Complete() bool {
	for _, c := range s.Channels[:s.NumChannels] {
		if c.F0N != c.Voiced {
			return false
		}
	}
	return true
}

// Bins of the F0 histogram, as Summary measures F0's median and
// percentiles: F0BinsPerSemitone bins per semitone from F0HistLowHz, F0Bins
// in all (the last bin takes everything above).
const (
	F0HistLowHz       = f0HistLow
	F0BinsPerSemitone = f0BinPerST
	F0Bins            = f0Bins
)

// F0Bin returns the histogram bin of an F0 in Hz.
func F0Bin(hz float64) int { return f0Bin(hz) }

// F0BinHz returns the F0 at a (fractional) bin position of a histogram
// with perSemitone bins per semitone from F0HistLowHz.
func F0BinHz(bin float64, perSemitone int) float64 {
	return f0HistLow * math.Exp2(bin/float64(perSemitone)/12)
}

// IntensityFromPower returns the intensity (dB re 2·10⁻⁵, as Window's
// IntensityDB) of a mean square.
func IntensityFromPower(meanSquare float64) float64 {
	return float64(intensityDB(float32(meanSquare)))
}

// sumsState is what a Call keeps to make SecondSums.
type sumsState struct {
	raw    [2]Window           // each channel's window of the second being scored, before bleed rejection
	f0     [2][recRing]float32 // each channel's recent frames' F0 (0: unvoiced), a ring like channel.recs
	interr [2]int              // interruptions already handed on
	out    SecondSums
}

// sumsFrame records frame f of channel idx.
func (s *sumsState) sumsFrame(idx int, f *Frame) {
	v := f.F0
	if !f.Voiced {
		v = 0
	}
	s.f0[idx][f.Index%recRing] = v
}

// emitSums hands the sums of the second just scored (sec, with its
// overlaps counted) to CallConfig.OnSums.
func (c *Call) emitSums(sec *Second) {
	if c.cfg.OnSums == nil {
		return
	}
	st := &c.sums
	out := &st.out
	out.Index, out.NumChannels = sec.Index, sec.NumChannels
	for i, k := range c.ch {
		w := &st.raw[i]
		o := &out.Channels[i]
		*o = ChannelSums{
			Frames: w.Frames, Speech: w.Speech, Voiced: w.Voiced, Nuclei: w.Nuclei,
			Power: w.pow, HNR: w.hnr, HNRFrames: w.nhnr,
			Perturbation:  w.Perturbation.Sums(),
			Interruptions: k.interr - st.interr[i],
		}
		st.interr[i] = k.interr
		if len(c.ch) == 2 {
			o.Overlap = sec.Channels[i].Overlap
		}
		// The second's frames are still in the ring unless the channel
		// ran more than recRing frames ahead.
		if w.Frames > 0 && k.nrec-recRing <= w.Start && k.nrec >= w.Start+int64(w.Frames) {
			for f := w.Start; f < w.Start+int64(w.Frames); f++ {
				if v := st.f0[i][f%recRing]; v > 0 && o.F0N < len(o.F0) {
					o.F0[o.F0N] = v
					o.F0N++
				}
			}
		}
	}
	c.cfg.OnSums(out)
}
