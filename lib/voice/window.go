package voice

import "math"

// Window holds the sums of frame features over a stretch of one channel
// (typically a second), from which its summary measures derive. Windows
// add up: the sum of two adjacent windows is the window over both.
type Window struct {
	// Start is the index of the first frame; Frames the number of frames.
	Start  int64
	Frames int
	// Speech and Voiced count frames with voice activity and voicing.
	Speech, Voiced int
	// Nuclei counts syllable nuclei.
	Nuclei int

	st, st2   float64 // F0 in semitones re 100 Hz over voiced frames
	trans     int     // transitions between consecutive voiced frames
	steady    int     // of which F0 changed by less than steadyST
	pow       float64 // Σ mean square over all frames (for the energy mean)
	vdB, vdB2 float64 // intensity (dB) over voiced frames
	bal       float64 // balance (dB) over voiced frames
	hnr       float64 // HNR (dB) over voiced frames and loud unvoiced ones
	nhnr      int

	// Model sums: the voiced frames well above the noise floor, with
	// their intensity, balance and HNR corrected for the noise (see
	// featureState.noise), and F0 in semitones.
	mVoiced              int
	mst, mst2, mdB, mbal float64
	mhnr, msnr, mraw     float64 // mraw: the frames' intensity before the noise correction
	// noiseDB is the channel's noise reference (dB, the level Frame.SNR
	// is measured from) at the end of the window.
	noiseDB float64
	// noiseKnown says the noise's spread was measured by then.
	noiseKnown bool

	// Perturbation holds the jitter and shimmer sums of the pulses in the
	// window.
	Perturbation Perturbation
}

// Add merges o, which follows w, into w.
func (w *Window) Add(o *Window) {
	if w.Frames == 0 {
		w.Start = o.Start
	}
	w.Frames += o.Frames
	w.Speech += o.Speech
	w.Voiced += o.Voiced
	w.Nuclei += o.Nuclei
	w.st += o.st
	w.st2 += o.st2
	w.trans += o.trans
	w.steady += o.steady
	w.pow += o.pow
	w.vdB += o.vdB
	w.vdB2 += o.vdB2
	w.bal += o.bal
	w.hnr += o.hnr
	w.nhnr += o.nhnr
	w.mVoiced += o.mVoiced
	w.mst += o.mst
	w.mst2 += o.mst2
	w.mdB += o.mdB
	w.mbal += o.mbal
	w.mhnr += o.mhnr
	w.msnr += o.msnr
	w.mraw += o.mraw
	if o.Frames > 0 {
		w.noiseDB, w.noiseKnown = o.noiseDB, o.noiseKnown
	}
	w.Perturbation.Add(&o.Perturbation)
}

// Reset empties w.
func (w *Window) Reset() { *w = Window{} }

// Duration returns the window's length in seconds.
func (w *Window) Duration() float64 { return float64(w.Frames) / FrameRate }

// VoicedFraction returns the fraction of voiced frames.
func (w *Window) VoicedFraction() float64 { return ratio(float64(w.Voiced), w.Frames) }

// SpeechFraction returns the fraction of frames with voice activity.
func (w *Window) SpeechFraction() float64 { return ratio(float64(w.Speech), w.Frames) }

// F0MeanST returns the mean F0 of the voiced frames in semitones re 100 Hz.
func (w *Window) F0MeanST() float64 { return ratio(w.st, w.Voiced) }

// F0SDST returns the standard deviation of F0 in semitones.
func (w *Window) F0SDST() float64 {
	if w.Voiced < 2 {
		return math.NaN()
	}
	m := w.st / float64(w.Voiced)
	return math.Sqrt(max(0, (w.st2-float64(w.Voiced)*m*m)/float64(w.Voiced-1)))
}

// SteadyF0Fraction returns the fraction of consecutive voiced frames
// whose F0 differs by less than 0.02 semitone (0.1 %): near 1 for tones and
// DTMF digits, whose frequency does not move, below 0.45 for speech.
func (w *Window) SteadyF0Fraction() float64 { return ratio(float64(w.steady), w.trans) }

// steadyST is the F0 change between frames below which they count as
// steady.
const steadyST = 0.02

// IntensityDB returns the energy mean of the intensity over all frames, as
// Praat's "Get mean ... energy".
func (w *Window) IntensityDB() float64 {
	if w.Frames == 0 {
		return math.NaN()
	}
	return float64(intensityDB(float32(w.pow / float64(w.Frames))))
}

// VoicedIntensityDB returns the mean intensity (dB) of the voiced frames.
func (w *Window) VoicedIntensityDB() float64 { return ratio(w.vdB, w.Voiced) }

// VoicedIntensitySD returns the standard deviation of the intensity (dB)
// of the voiced frames.
func (w *Window) VoicedIntensitySD() float64 {
	if w.Voiced < 2 {
		return math.NaN()
	}
	m := w.vdB / float64(w.Voiced)
	return math.Sqrt(max(0, (w.vdB2-float64(w.Voiced)*m*m)/float64(w.Voiced-1)))
}

// BalanceDB returns the mean spectral balance of the voiced frames.
func (w *Window) BalanceDB() float64 { return ratio(w.bal, w.Voiced) }

// HNR returns the mean harmonics-to-noise ratio in dB, as Praat's
// Harmonicity mean: over the voiced frames and the unvoiced frames that are
// not quiet (with their strongest periodicity).
func (w *Window) HNR() float64 { return ratio(w.hnr, w.nhnr) }

// SyllableRate returns syllable nuclei per second of the window.
func (w *Window) SyllableRate() float64 { return ratio(float64(w.Nuclei), w.Frames) * FrameRate }

// ArticulationRate returns syllable nuclei per second of speech.
func (w *Window) ArticulationRate() float64 {
	return ratio(float64(w.Nuclei), w.Speech) * FrameRate
}

// ModelVoiced returns the voiced frames the model's features are measured
// on: those well above the channel's noise floor (and, in a Call, not
// explained by the other party's bleed).
func (w *Window) ModelVoiced() int { return w.mVoiced }

// SNR returns the mean SNR (dB above the noise floor) of the model's
// frames.
func (w *Window) SNR() float64 { return ratio(w.msnr, w.mVoiced) }

// modelF0SD is the SD of F0 (semitones) over the model's frames.
func (w *Window) modelF0SD() float64 {
	if w.mVoiced < 2 {
		return math.NaN()
	}
	m := w.mst / float64(w.mVoiced)
	return math.Sqrt(max(0, (w.mst2-float64(w.mVoiced)*m*m)/float64(w.mVoiced-1)))
}

// semitones converts Hz to semitones re 100 Hz.
func semitones(f float64) float64 { return 12 * math.Log2(f/100) }
