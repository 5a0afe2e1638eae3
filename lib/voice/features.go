package voice

import "math"

// featureState turns decided frames into Frames, and keeps the running
// measures of the channel: voice activity, syllable nuclei, glottal pulses,
// the per-second windows and the whole-stream totals.
type featureState struct {
	out Frame

	pulses  pulseTracker
	total   Window
	f0      f0Hist
	cur     Window // the second being filled
	prevST  float64
	prevVcd bool

	// Voice activity.
	floorDB, peakDB float32
	hang            int
	started         bool
	heard           int // non-silent frames so far, up to vadFastFrames
	// spread is the mean level (dB) of the channel's unvoiced frames
	// above the floor, at most spreadMax: about noiseBias for a steady
	// noise, several dB more for a noise whose level fluctuates
	// (babble), whose minimum lies far below its typical level.
	spread float32
	// spreadN counts the unvoiced frames behind spread, up to spreadKnown.
	spreadN int
	// spreadW is the weight the spread's exponential mean has given its
	// frames so far (1 − (1 − spreadSmooth)^n): spread/spreadW is the
	// mean without the start's pull towards zero, for the voicing
	// correction, which must not take a babble line whose spread is still
	// rising for a steady one.
	spreadW float32
	// touched says the floor has reached the line's noise (its fast
	// start from vadStartBelow under the first frame is over); spreadE,
	// spreadEW and spreadEN are the spread measured only from then on, for
	// the baseline's early judgement of the line (spreadEarly).
	touched           bool
	spreadE, spreadEW float32
	spreadEN          int

	// The noise's mean power — over the intensity window, and of the 20
	// ms energies above and below 1 kHz — averaged over the frames near
	// the noise floor (noiseFrameSNR), for the noise corrections.
	noiseP, noiseHi, noiseLo float32
	noiseInit                bool
	// mc is the current frame's contribution to the model sums (valid
	// during the frame callback; the Call reads it for bleed rejection).
	mc modelFrame
	// The last voiced frame's F0 (semitones) and the index after it, for
	// the continuity check.
	lastST  float32
	lastIdx int64
	// kept says the previous frame was a model frame: a voiced run that
	// cleared the SNR gate (see modelKeepSNR).
	kept bool

	// Syllable nuclei (de Jong & Wempe): peaks of a smooth intensity.
	sylMax    float32 // running maximum of the smooth intensity
	sylPrev   float32 // smooth intensity of the previous frame
	sylPrev2  float32
	sylPrevV  bool // previous frame voiced
	pend      bool // a peak awaits the dip after it
	pendV     float32
	pendVcd   bool
	pendMin   float32 // lowest smooth intensity since the pending peak
	sylFrames int
}

func (s *featureState) reset() { *s = featureState{} }

// Voice-activity settings: a frame is active when it is voiced, or when it
// is well above the noise floor and not far below the recent loudest
// frame; activity is held for a short hangover so that pauses between
// words inside a phrase do not cut it.
const (
	vadAboveFloor = 12   // dB
	vadBelowPeak  = 40   // dB
	vadFloorRise  = 0.02 // dB per frame that the floor estimate creeps up
	vadPeakDecay  = 0.05 // dB per frame that the peak estimate decays
	vadHangover   = 15   // frames
	// At the start of a stream the floor starts vadStartBelow dB below
	// the first frame and rises vadFloorRiseFast dB per frame for
	// vadFastFrames frames.
	vadStartBelow    = 20
	vadFloorRiseFast = 0.1
	vadFastFrames    = 200
	vadVoicedSNR     = 6 // dB (SNR as Frame.SNR)
)

// Syllable-nucleus settings, as de Jong & Wempe's script: the intensity
// (minimum pitch 50 Hz, a 128 ms window) must peak above the loudest level
// minus 25 dB and fall by more than 2 dB before the next peak, on a voiced
// frame.
const (
	sylBelowMax = 25
	sylMinDip   = 2
)

// sylWeights weigh the sub-blocks of the 128 ms window around a frame
// centre (Praat's intensity window for a 50 Hz minimum pitch).
var sylWeights = [26]float32(kaiserBlocks(26, 3.2/50*SampleRate))

func (s *featureState) frame(a *Analyzer, d int64, pf *pathFrame, cand int) {
	f := &s.out
	*f = Frame{Index: d, Time: (float64(d) + 0.5) / FrameRate, Intensity: pf.intensity, Balance: pf.balance}
	if cand > 0 {
		period, str := a.precise8(d, SampleRate/pf.freq[cand])
		if str <= 0 {
			period, str = SampleRate/pf.freq[cand], pf.strength[cand]
		}
		f.Voiced = true
		f.F0 = SampleRate / period
		f.Periodicity = str
		f.HNR = hnr(str)
		s.pulses.frame(a, d, SampleRate/float64(f.F0), &s.total.Perturbation, &s.cur.Perturbation)
	}
	s.activity(f)
	s.noise(pf, f)
	s.syllable(a, d, f)

	// Window sums.
	w := &s.cur
	if w.Frames == 0 {
		w.Start = d
	}
	w.Frames++
	if f.Speech {
		w.Speech++
	}
	w.pow += float64(pf.power)
	if f.Voiced {
		st := float64(12 * fastLog2(f.F0*0.01))
		w.Voiced++
		w.st += st
		w.st2 += st * st
		if s.prevVcd {
			w.trans++
			if math.Abs(st-s.prevST) < steadyST {
				w.steady++
			}
		}
		s.prevST = st
		in := float64(f.Intensity)
		w.vdB += in
		w.vdB2 += in * in
		w.bal += float64(f.Balance)
		w.hnr += float64(f.HNR)
		w.nhnr++
		s.f0.add(float64(f.F0))
	}
	s.mc.add(w)
	if !f.Voiced && pf.rel > hnrSilence {
		// Praat's harmonicity has no voicing decision: a frame that is
		// not quiet counts with its strongest candidate. Frames without
		// any candidate measured at 8 kHz are left out.
		var hs float32
		for i := 1; i < pf.n; i++ {
			hs = max(hs, pf.strength[i])
		}
		if hs > 0 {
			w.hnr += float64(hnr(hs))
			w.nhnr++
		}
	}
	s.prevVcd = f.Voiced
	if f.Nucleus {
		w.Nuclei++
	}

	if a.onFrame != nil {
		a.onFrame(f)
	}
	if (d+1)%FrameRate == 0 {
		s.endSecond(a)
	}
}

// endSecond passes the current window on and starts the next.
func (s *featureState) endSecond(a *Analyzer) {
	if s.cur.Frames == 0 {
		return
	}
	s.cur.noiseDB = float64(s.floorDB + max(noiseBias, s.spreadEarly()))
	s.cur.noiseKnown = s.spreadN >= spreadKnown
	s.total.Add(&s.cur)
	if a.onSecond != nil {
		a.onSecond(&s.cur)
	}
	s.cur.Reset()
}

func (s *featureState) flush(a *Analyzer) {
	s.endSecond(a)
}

// activity decides voice activity for f.
func (s *featureState) activity(f *Frame) {
	in := f.Intensity
	if in <= SilenceDB {
		// Digital silence says nothing about the noise floor.
		s.hang = 0
		return
	}
	if !s.started {
		// The stream may start in speech (a call taken over from a
		// checkpoint): start the floor below the first frame and let it
		// rise faster for the first seconds.
		s.floorDB, s.peakDB, s.started = in-vadStartBelow, in, true
	}
	rise := float32(vadFloorRise)
	if s.heard < vadFastFrames {
		s.heard++
		rise = vadFloorRiseFast
	}
	if in <= s.floorDB+rise {
		s.touched = true // the floor has reached the line's noise
	}
	s.floorDB = min(s.floorDB+rise, in)
	s.peakDB = max(s.peakDB-vadPeakDecay, in)
	if !f.Voiced {
		s.spread += spreadSmooth * (min(in-s.floorDB, spreadMax) - s.spread)
		s.spreadW += spreadSmooth * (1 - s.spreadW)
		if s.touched {
			s.spreadE += spreadSmooth * (min(in-s.floorDB, spreadMax) - s.spreadE)
			s.spreadEW += spreadSmooth * (1 - s.spreadEW)
			s.spreadEN++
		}
		if s.spreadN < spreadKnown {
			s.spreadN++
		}
	}
	f.SNR = in - s.floorDB - max(noiseBias, s.spread)
	// Voicing counts as activity only above the noise: noise and babble
	// have periodic moments too.
	active := (f.Voiced && f.SNR >= vadVoicedSNR) || (in > s.floorDB+vadAboveFloor && in > s.peakDB-vadBelowPeak)
	if active {
		s.hang = vadHangover
	} else if s.hang > 0 {
		s.hang--
	}
	f.Speech = active || s.hang > 0
}

// Noise-spread settings: the unvoiced frames' mean level above the floor
// follows them with a 2 s time constant and is taken at most spreadMax
// dB (beyond that the unvoiced frames are the party's consonants, not
// noise).
const (
	spreadSmooth = 0.005
	spreadMax    = 12
	// The spread is known once it rests on spreadKnown unvoiced frames
	// (its time constant).
	spreadKnown = 200
)

// steadyNoise says the channel's noise is known (its spread measured) and
// steady, not speech-like.
func (s *featureState) steadyNoise() bool { return s.spreadN >= spreadKnown && !s.speechLikeNoise() }

// speechLikeNoise says the channel's noise level fluctuates like speech
// (babble): its typical level lies more than speechLikeSpread dB above its
// minimum. Measured on the dev calls (seconds 3 on, unvoiced frames): pink
// and hum noise 10–20 dB, 1.3–2.6 dB median, 95th percentile ≤ 4.8 dB;
// babble 10–20 dB and two seeds, 6.8–7.1 dB median, 5th percentile ≥
// 4.1 dB.
func (s *featureState) speechLikeNoise() bool { return s.spread > speechLikeSpread }

const speechLikeSpread = 4.5

// spreadEarly is the noise's spread for the baseline's judgement of a
// line's first seconds: once spreadEarlyN unvoiced frames were measured
// after the floor reached the noise, their mean without the exponential
// start's bias; the plain spread before. The plain spread rises from zero
// with a 2 s time constant, so on a babble line it reads "steady" and the
// noise reference sits low for the first seconds — exactly when babble
// alone, before the agent speaks, is offered as the agent's baseline and
// the agent's first calm words then score as far louder and higher than
// "their normal" (§7a item 17). Frames of the floor's own fast start are
// left out: in−floor is inflated there on any line.
func (s *featureState) spreadEarly() float32 {
	if s.spreadEN >= spreadEarlyN && s.spreadEW > 0 {
		return s.spreadE / s.spreadEW
	}
	return s.spread
}

// spreadEarlyN is the unvoiced frames (0.5 s) the early spread rests on.
const spreadEarlyN = 50

// speechLikeEarly is speechLikeNoise judged on spreadEarly.
func (s *featureState) speechLikeEarly() bool { return s.spreadEarly() > speechLikeSpread }

// voicingNoise returns the mean power of the channel's noise when the
// path finder may correct voicing strengths for it: the noise is measured
// (spreadKnown unvoiced frames) and steady, judged on the spread's mean
// without the exponential start's bias (a babble line's spread rises
// from zero for several time constants and would read as steady at first).
func (s *featureState) voicingNoise() (float32, bool) {
	if s.spreadN < spreadKnown || s.spread > speechLikeSpread*s.spreadW || !s.noiseInit {
		return 0, false
	}
	return s.noiseP, true
}

// Noise-floor settings: a frame counts for the model's features when it is
// voiced and at least modelMinSNR dB above the channel's noise floor; its
// intensity, spectral balance and HNR are then corrected for the noise
// power (the floor, raised by noiseBias dB because a minimum tracker sits
// in the low tail of the noise's frame powers).
const (
	modelMinSNR    = 5
	modelKeepSNR   = 2
	modelSteadySNR = 4
	noiseBias      = 3
	// Frames within noiseFrameSNR dB of the floor are noise; the noise
	// means follow them with a 200 ms time constant.
	noiseFrameSNR = 4
	noiseSmooth   = 0.05
)

// modelFrame is one frame's contribution to a window's model sums.
type modelFrame struct {
	voiced                     bool
	st, in, bal, hnr, snr, raw float32
}

func (m *modelFrame) add(w *Window) {
	if !m.voiced {
		return
	}
	st := float64(m.st)
	w.mVoiced++
	w.mst += st
	w.mst2 += st * st
	w.mdB += float64(m.in)
	w.mbal += float64(m.bal)
	w.mhnr += float64(m.hnr)
	w.msnr += float64(m.snr)
	w.mraw += float64(m.raw)
}

func (m *modelFrame) sub(w *Window) {
	if !m.voiced {
		return
	}
	st := float64(m.st)
	w.mVoiced--
	w.mst -= st
	w.mst2 -= st * st
	w.mdB -= float64(m.in)
	w.mbal -= float64(m.bal)
	w.mhnr -= float64(m.hnr)
	w.msnr -= float64(m.snr)
	w.mraw -= float64(m.raw)
}

// noise tracks the noise floors of the two bands and sets the frame's SNR
// and its noise-corrected contribution to the model sums.
func (s *featureState) noise(pf *pathFrame, f *Frame) {
	s.mc = modelFrame{}
	kept := s.kept
	s.kept = false
	if f.Intensity <= SilenceDB {
		return
	}
	hi, lo := max(pf.energy-pf.low, 1e-12), max(pf.low, 1e-12)
	if !s.noiseInit {
		s.noiseP, s.noiseHi, s.noiseLo, s.noiseInit = pf.power, hi, lo, true
	}
	if f.Intensity < s.floorDB+noiseFrameSNR {
		s.noiseP += noiseSmooth * (pf.power - s.noiseP)
		s.noiseHi += noiseSmooth * (hi - s.noiseHi)
		s.noiseLo += noiseSmooth * (lo - s.noiseLo)
	}
	snr := f.SNR
	// Hysteresis: a voiced run that cleared the gate keeps its frames
	// down to modelKeepSNR once the noise is known to be steady (a steady
	// noise is not periodic: the run's voicing is the speaker's). Over
	// babble, and before the noise is measured, the gate holds frame by
	// frame: babble's voiced moments are other voices.
	gate := float32(modelMinSNR)
	if _, steady := s.voicingNoise(); steady {
		// Voicing is corrected for the steady noise's share (see
		// Analyzer.candidates): a voiced frame is the speaker's a little
		// nearer the noise too.
		gate = modelSteadySNR
	}
	if kept && s.steadyNoise() {
		gate = modelKeepSNR
	}
	if !f.Voiced || snr < gate {
		return
	}
	// The clean share of the frame's power, overall and per band (at
	// least a tenth: below that the measure is noise).
	k := max(1-s.noiseP/max(pf.power, 1e-20), 0.1)
	hiC := max(hi-s.noiseHi, 0.1*hi)
	loC := max(lo-s.noiseLo, 0.1*lo)
	r := min(f.Periodicity/k, 0.999)
	st := 12 * fastLog2(f.F0*0.01)
	// A jump of more than maxJumpST from the frame before is a pitch
	// error (an octave, or noise taking over), not intonation: noise
	// makes them, and they inflate F0 variability. The frame is left out
	// of the model's features.
	jump := f.Index > 0 && s.lastIdx == f.Index && abs32(st-s.lastST) > maxJumpST
	s.lastST, s.lastIdx = st, f.Index+1
	if jump {
		return
	}
	s.kept = true
	s.mc = modelFrame{
		voiced: true,
		st:     st,
		in:     f.Intensity + fastDB(k),
		bal:    min(max(fastDB(hiC/loC), -40), 40),
		hnr:    hnr(r),
		snr:    snr,
		raw:    f.Intensity,
	}
}

// maxJumpST is the largest F0 change between consecutive frames that
// counts as intonation (6 semitones in 10 ms is beyond any voice).
const maxJumpST = 6

func abs32(x float32) float32 { return math.Float32frombits(math.Float32bits(x) &^ (1 << 31)) }

// syllable follows the smooth intensity and marks a nucleus on the frame
// where the dip after a peak is confirmed.
func (s *featureState) syllable(a *Analyzer, d int64, f *Frame) {
	var e float32
	b0 := 2*d + 1 - int64(len(sylWeights)/2)
	for j, w := range sylWeights {
		if b := b0 + int64(j); b >= 0 {
			e += w * a.sbE[b&(sbRing-1)]
		}
	}
	v := intensityDB(e / sub)
	s.sylFrames++
	s.sylMax = max(s.sylMax, v)
	if s.sylFrames >= 3 {
		// Is the previous frame a peak?
		if s.sylPrev > s.sylPrev2 && s.sylPrev >= v && s.sylPrev > s.sylMax-sylBelowMax {
			if s.pend && s.pendV-s.pendMin > sylMinDip && s.pendVcd {
				f.Nucleus = true
			}
			s.pend, s.pendV, s.pendVcd, s.pendMin = true, s.sylPrev, s.sylPrevV, s.sylPrev
		}
	}
	if s.pend {
		s.pendMin = min(s.pendMin, v)
	}
	s.sylPrev2, s.sylPrev, s.sylPrevV = s.sylPrev, v, f.Voiced
}

// hnrSilence is the silence threshold of Praat's To Harmonicity (cc): the
// local peak relative to the global peak below which a frame has no HNR.
const hnrSilence = 0.1

// hnr converts a normalised autocorrelation peak to a harmonics-to-noise
// ratio in dB, as Praat does.
func hnr(r float32) float32 {
	switch {
	case r <= 1e-15:
		return -150
	case r >= 1-1e-15:
		return 150
	}
	return fastDB(r / (1 - r))
}
