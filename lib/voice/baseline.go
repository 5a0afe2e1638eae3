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
	m *Model
	// The seconds offered so far (up to maxBaselineSeconds): their
	// features, model voiced frames and speech level (dB, the mean level
	// of their model frames). Which of them count is decided again at
	// every update (see admitted).
	secs [maxBaselineSeconds]baselineSecond
	nsec int
	// voiced is the model voiced frames of the seconds that count.
	voiced int
	// frozen: the seconds that count reached the target; they are kept
	// as they are.
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
	// The line's noise as last seen: whether it fluctuates like speech,
	// and its reference level (dB).
	speechLike, noiseKnown bool
	noiseDB                float64
}

// baselineSecond is one second offered to a baseline.
type baselineSecond struct {
	vals   [nRel]float64 // NaN where not measured
	voiced int
	level  float64
	// provisional: offered before the line's noise was measured; decided
	// again at every update.
	provisional bool
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
// voice is — the babble's voiced moments would set the reference. That is
// decided again at every second against the noise as it is known then:
// the first seconds of a line, before the noise's level and spread are
// measured, stand far above a floor that has not risen yet, and babble
// alone would set the baseline there. A steady noise is never periodic,
// so its voiced frames are the speaker's and every second counts
// (selecting seconds by SNR would select the speaker's louder ones).
func (b *baselineBuilder) add(w *Window, other *otherParty, speechLikeNoise bool) {
	if b.frozen {
		return // the admitted seconds stay those of the first stretch
	}
	b.speechLike, b.noiseDB = speechLikeNoise, w.noiseDB
	b.noiseKnown = w.noiseKnown
	if w.mVoiced < b.m.Baseline.MinVoicedFrames || b.nsec == maxBaselineSeconds {
		b.update() // the noise is better known: decide again
		return
	}
	if z := b.m.AgentStress.SNRZero; w.noiseKnown && speechLikeNoise && z > 0 && w.SNR() < z {
		b.update()
		return
	}
	sec := &b.secs[b.nsec]
	b.nsec++
	for i, f := range relFeatures {
		sec.vals[i] = featureValue(f, w, other)
	}
	sec.voiced = w.mVoiced
	sec.level = ratio(w.mraw, w.mVoiced)
	sec.provisional = !w.noiseKnown
	b.update()
}

// admitted reports whether second sec counts for the baseline, against
// the noise as it is known now.
func (b *baselineBuilder) admitted(sec *baselineSecond) bool {
	z := b.m.AgentStress.SNRZero
	return !sec.provisional || !b.speechLike || z <= 0 || sec.level-b.noiseDB >= z
}

// update recomputes the current baseline from the seconds that count, in
// the order they came, until they reach the target.
func (b *baselineBuilder) update() {
	b.voiced = 0
	var vals [nRel][maxBaselineSeconds]float64
	var n [nRel]int
	end := b.nsec
	for j := range b.nsec {
		sec := &b.secs[j]
		if !b.admitted(sec) {
			continue
		}
		if b.target > 0 && b.voiced >= b.target {
			end = j
			break
		}
		for i, v := range sec.vals {
			if !math.IsNaN(v) {
				vals[i][n[i]] = v
				n[i]++
			}
		}
		b.voiced += sec.voiced
	}
	if b.target > 0 && b.voiced >= b.target && b.noiseKnown {
		// The first stretch is complete: it stays as it is.
		b.nsec, b.frozen = end, true
	}
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
	for i, f := range relFeatures {
		p := b.prior.Get(f)
		if n[i] == 0 {
			b.cur.set(f, p)
			continue
		}
		s := vals[i][:n[i]]
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
