package voice

import (
	"math"
	"slices"
)

// Baseline is a speaker's normal voice: the reference the agent's scores
// measure departures from. It can be exported at the end of a call, stored
// per agent, and given back to later calls (CallConfig.AgentBaseline).
type Baseline struct {
	// Model is the ID of the model the baseline was measured for.
	Model string `json:"model"`
	// Source says where it comes from: "call" (the first stretch of
	// voiced speech in this call), "stored" (given by the caller of the
	// API, blended with the call's first stretch), "recording" (measured
	// over a whole recording) or "population" (the model's default).
	Source string `json:"source"`
	// VoicedS is the voiced speech, in seconds, the measurement rests on.
	VoicedS float64 `json:"voiced_s"`
	Reference
}

// nRel is the number of relative features a baseline holds.
const nRel = 8

var relFeatures = [nRel]Feature{F0Level, F0Variability, Loudness, VocalEffort, SpeechRate, HNRFeature, Jitter, Shimmer}

func (r *Reference) set(f Feature, v float64) {
	switch f {
	case F0Level:
		r.F0Level = v
	case F0Variability:
		r.F0Variability = v
	case Loudness:
		r.Loudness = v
	case VocalEffort:
		r.VocalEffort = v
	case SpeechRate:
		r.SpeechRate = v
	case HNRFeature:
		r.HNR = v
	case Jitter:
		r.Jitter = v
	case Shimmer:
		r.Shimmer = v
	}
}

// maxBaselineSeconds bounds the seconds a baseline keeps for its medians.
const maxBaselineSeconds = 64

// baselineBuilder collects the per-second features of a speaker's first
// stretch of voiced speech and combines their medians (robust to odd
// seconds) with a prior.
type baselineBuilder struct {
	m      *Model
	vals   [nRel][maxBaselineSeconds]float64
	n      [nRel]int
	voiced int // voiced frames collected
	frozen bool
	// target is the voiced frames at which collection stops (0: never).
	target      int
	prior       Reference
	priorWeight float64 // seconds
	priorSource string
	cur         Baseline
	// caller mode: a low quantile instead of the median, over the first
	// maxBaselineSeconds of speech, and a prior weight per feature.
	caller bool
}

func (b *baselineBuilder) init(m *Model, stored *Baseline, target int) {
	*b = baselineBuilder{m: m, target: target}
	b.prior, b.priorWeight, b.priorSource = m.Population, m.Baseline.PopulationWeight, "population"
	if stored != nil {
		b.prior = stored.Reference
		b.priorWeight = min(stored.VoicedS, m.Baseline.StoredWeightCap)
		b.priorSource = "stored"
	}
	b.update()
}

// initCaller prepares the builder for a caller: the reference is the
// caller's own speech so far — a low quantile of their seconds, so that an
// angry stretch does not become their normal — blended with the
// population, each feature with its own prior weight (features that move
// with the line, such as loudness, lean on the caller's own line; F0 level
// leans on the population so that a caller angry from the first second is
// still caught).
func (b *baselineBuilder) initCaller(m *Model) {
	b.init(m, nil, 0)
	b.caller = true
	b.update()
}

// add offers a second of the speaker's speech.
//
// speechLikeNoise says the channel's noise fluctuates like speech (babble:
// featureState.speechLikeNoise); then a second whose speech is less than
// SNRZero dB above the noise (where the noise-biased terms already count
// for nothing) is too close to the background to say what this speaker's
// voice is — the babble's voiced moments would set the reference. A steady
// noise is never periodic, so its voiced frames are the speaker's and
// every second counts (selecting seconds by SNR would select the
// speaker's louder ones).
func (b *baselineBuilder) add(w *Window, other *otherParty, speechLikeNoise bool) {
	if b.frozen || w.mVoiced < b.m.Baseline.MinVoicedFrames {
		return
	}
	if z := b.m.AgentStress.SNRZero; speechLikeNoise && z > 0 && w.SNR() < z {
		return
	}
	for i, f := range relFeatures {
		v := featureValue(f, w, other)
		if math.IsNaN(v) || b.n[i] == maxBaselineSeconds {
			continue
		}
		b.vals[i][b.n[i]] = v
		b.n[i]++
	}
	b.voiced += w.mVoiced
	if b.target > 0 && b.voiced >= b.target {
		b.frozen = true
	}
	b.update()
}

// update recomputes the current baseline.
func (b *baselineBuilder) update() {
	own := float64(b.voiced) / FrameRate
	b.cur = Baseline{Model: b.m.ID(), VoicedS: own}
	switch {
	case own == 0:
		b.cur.Source = b.priorSource
		b.cur.VoicedS = b.priorWeight
	case b.priorSource == "stored":
		b.cur.Source = "stored"
	default:
		b.cur.Source = "call"
	}
	var tmp [maxBaselineSeconds]float64
	for i, f := range relFeatures {
		p := b.prior.Get(f)
		if b.n[i] == 0 {
			b.cur.set(f, p)
			continue
		}
		s := tmp[:b.n[i]]
		copy(s, b.vals[i][:b.n[i]])
		slices.Sort(s)
		pw := b.priorWeight
		if b.priorSource == "population" && b.m.Baseline.AgentPriorWeight != nil {
			pw = b.m.Baseline.AgentPriorWeight.Get(f)
		}
		var med float64
		if b.caller {
			q := b.m.Baseline.CallerQuantile * float64(len(s)-1)
			j := int(q)
			med = s[j]
			if j+1 < len(s) {
				med += (q - float64(j)) * (s[j+1] - s[j])
			}
			pw = b.m.Baseline.CallerPriorWeight.Get(f)
		} else {
			med = s[len(s)/2]
			if len(s)%2 == 0 {
				med = (s[len(s)/2-1] + s[len(s)/2]) / 2
			}
		}
		b.cur.set(f, (med*own+p*pw)/(own+pw))
	}
}
