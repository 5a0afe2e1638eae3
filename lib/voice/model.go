package voice

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
)

// The scoring model: which features each score uses, their weights and
// normalisation, the baseline and abstention rules. It lives in a versioned
// JSON file shipped inside the binary; every score carries the model's name
// and version. docs/voice-analysis.md explains each field and how v1 was
// calibrated.

//go:embed model/v1.json
var modelV1 []byte

//go:embed model/v2.json
var modelV2 []byte

// Feature names a per-window measure a score term can use.
type Feature string

// The features a model may use. Each is measured on the voiced frames of
// the scoring window (except overlap) and, unless it is relative by nature,
// compared with a reference (the speaker's baseline or the population).
const (
	F0Level         Feature = "f0_level"          // mean F0, semitones re 100 Hz
	F0Variability   Feature = "f0_variability"    // SD of F0, semitones
	Loudness        Feature = "loudness"          // mean intensity, dB
	LoudnessVsOther Feature = "loudness_vs_other" // intensity minus the other party's mean, dB
	VocalEffort     Feature = "vocal_effort"      // spectral balance above/below 1 kHz, dB
	SpeechRate      Feature = "speech_rate"       // syllable nuclei per second of speech
	HNRFeature      Feature = "hnr"               // harmonics-to-noise ratio, dB
	Jitter          Feature = "jitter"            // jitter (local), %
	Shimmer         Feature = "shimmer"           // shimmer (local), %
	Overlap         Feature = "overlap"           // fraction of speech over the other party's
)

// noiseBiased reports whether noise moves the feature's value (more nuclei
// or fewer, spurious F0 movement, lower periodicity).
func (f Feature) noiseBiased() bool {
	switch f {
	case SpeechRate, F0Variability, HNRFeature, Jitter, Shimmer:
		return true
	}
	return false
}

// relative reports whether a feature is compared with a reference.
func (f Feature) relative() bool { return f != LoudnessVsOther && f != Overlap }

func (f Feature) valid() bool {
	switch f {
	case F0Level, F0Variability, Loudness, LoudnessVsOther, VocalEffort, SpeechRate, HNRFeature, Jitter, Shimmer, Overlap:
		return true
	}
	return false
}

// Term is one weighted feature of a score: it adds
// weight · clamp((value − reference) / scale, ±clip).
type Term struct {
	Feature Feature `json:"feature"`
	Weight  float64 `json:"weight"`
	Scale   float64 `json:"scale"`
	Note    string  `json:"note,omitempty"`
}

// ScoreModel defines one score: 100 · logistic(bias + Σ terms).
type ScoreModel struct {
	// Reference is "baseline" (the speaker's own), "population", or, for
	// caller_pressure, "caller" (the caller's own speech blended with the
	// population; see BaselineRules).
	Reference string  `json:"reference"`
	Bias      float64 `json:"bias"`
	Clip      float64 `json:"clip"`
	Terms     []Term  `json:"terms"`
	// The terms of noise-biased features (speech rate, F0 variability,
	// HNR, jitter, shimmer) are weighted by how far the window's mean
	// frame SNR is from SNRZero dB (weight 0) towards SNRFull dB (full
	// weight). SNRFull 0 keeps them at full weight (model 1).
	SNRZero float64 `json:"snr_zero_db,omitempty"`
	SNRFull float64 `json:"snr_full_db,omitempty"`
}

// Reference values: one number per relative feature.
type Reference struct {
	F0Level       float64 `json:"f0_level"`
	F0Variability float64 `json:"f0_variability"`
	Loudness      float64 `json:"loudness"`
	VocalEffort   float64 `json:"vocal_effort"`
	SpeechRate    float64 `json:"speech_rate"`
	HNR           float64 `json:"hnr"`
	Jitter        float64 `json:"jitter"`
	Shimmer       float64 `json:"shimmer"`
}

// Get returns the reference value of a relative feature (0 for the
// others).
func (r *Reference) Get(f Feature) float64 {
	switch f {
	case F0Level:
		return r.F0Level
	case F0Variability:
		return r.F0Variability
	case Loudness:
		return r.Loudness
	case VocalEffort:
		return r.VocalEffort
	case SpeechRate:
		return r.SpeechRate
	case HNRFeature:
		return r.HNR
	case Jitter:
		return r.Jitter
	case Shimmer:
		return r.Shimmer
	}
	return 0
}

// BaselineRules say how a speaker's baseline is built.
type BaselineRules struct {
	// Seconds with at least MinVoicedFrames voiced frames feed the
	// baseline until it rests on TargetVoicedFrames voiced frames.
	TargetVoicedFrames int `json:"target_voiced_frames"`
	MinVoicedFrames    int `json:"min_voiced_frames"`
	// The in-call estimate is combined with a prior — a stored baseline
	// when one is given, else the population — each weighted by the
	// voiced seconds it stands for (a stored baseline's own weight is
	// capped at StoredWeightCap seconds; the population counts
	// PopulationWeight seconds).
	StoredWeightCap  float64 `json:"stored_weight_cap_s"`
	PopulationWeight float64 `json:"population_weight_s"`
	// AgentPriorWeight, if set, replaces PopulationWeight feature by
	// feature when the prior is the population (model 2): a population's
	// loudness says nothing about a line whose gain is unknown, and its F0
	// level sits between women's and men's.
	AgentPriorWeight *Reference `json:"agent_prior_weight_s,omitempty"`
	// For a caller_pressure whose reference is "caller" (model 2): the
	// caller's reference is the CallerQuantile of their per-second values
	// over their first seconds of speech, combined with the population,
	// which weighs CallerPriorWeight seconds feature by feature.
	CallerQuantile    float64    `json:"caller_quantile,omitempty"`
	CallerPriorWeight *Reference `json:"caller_prior_weight_s,omitempty"`
}

// AbstainRules say when a score is withheld.
type AbstainRules struct {
	// MinVoicedFrames is the least voiced speech in the window to score.
	MinVoicedFrames int `json:"min_voiced_frames"`
	// A window is a steady tone — a hold or call-progress tone, DTMF, a
	// test signal — not speech, when the intensity of its voiced frames
	// varies less than ToneMaxIntensitySD (dB; speech rises and falls
	// with every syllable), or when at least ToneMinSteadyF0 of its
	// consecutive voiced frames keep the same F0 (see
	// Window.SteadyF0Fraction).
	ToneMaxIntensitySD float64 `json:"tone_max_intensity_sd_db"`
	ToneMinSteadyF0    float64 `json:"tone_min_steady_f0_fraction"`
}

// Model is a scoring model.
type Model struct {
	Name           string        `json:"name"`
	Version        string        `json:"version"`
	Description    string        `json:"description"`
	Calibration    string        `json:"calibration"`
	Window         int           `json:"window_s"`
	Baseline       BaselineRules `json:"baseline"`
	Abstain        AbstainRules  `json:"abstain"`
	Population     Reference     `json:"population"`
	AgentStress    ScoreModel    `json:"agent_stress"`
	CallerPressure ScoreModel    `json:"caller_pressure"`

	id string // Name/Version, kept so that scoring does not build it
}

// ID returns "name/version", the label every score carries.
func (m *Model) ID() string {
	if m.id == "" {
		return m.Name + "/" + m.Version
	}
	return m.id
}

// DefaultModel returns the model shipped with this package
// (calmline-voice 2.0.0). It is parsed once and shared: do not modify it.
func DefaultModel() *Model { return defaultModel() }

// ModelV1 returns calmline-voice 1.0.0, the previous model, for
// comparison. It runs on the current feature extraction (noise-floor
// gating, bleed rejection), so its scores are not bit-identical to the
// 1.0.0 release.
func ModelV1() *Model { return modelV1Parsed() }

var defaultModel = sync.OnceValue(func() *Model { return mustParse(modelV2) })

var modelV1Parsed = sync.OnceValue(func() *Model { return mustParse(modelV1) })

func mustParse(b []byte) *Model {
	m, err := ParseModel(b)
	if err != nil {
		panic("voice: embedded model: " + err.Error())
	}
	return m
}

// ParseModel reads and validates a model file.
func ParseModel(b []byte) (*Model, error) {
	var m Model
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("parse model: %w", err)
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("parse model %s: %w", m.ID(), err)
	}
	m.id = m.Name + "/" + m.Version
	return &m, nil
}

func positiveWeights(name string, r *Reference) error {
	for _, f := range relFeatures {
		if w := r.Get(f); !(w > 0) || math.IsInf(w, 0) {
			return fmt.Errorf("baseline.%s.%s must be positive", name, f)
		}
	}
	return nil
}

func (m *Model) validate() error {
	if m.Baseline.AgentPriorWeight != nil {
		if err := positiveWeights("agent_prior_weight_s", m.Baseline.AgentPriorWeight); err != nil {
			return err
		}
	}
	if m.Name == "" || m.Version == "" {
		return errors.New("missing name or version")
	}
	if m.Window < 1 || m.Window > 10 {
		return fmt.Errorf("window_s %d out of 1..10", m.Window)
	}
	if m.Abstain.MinVoicedFrames < 1 {
		return errors.New("abstain.min_voiced_frames must be positive")
	}
	if m.Baseline.TargetVoicedFrames < 1 || m.Baseline.MinVoicedFrames < 1 {
		return errors.New("baseline frame counts must be positive")
	}
	for name, s := range map[string]*ScoreModel{"agent_stress": &m.AgentStress, "caller_pressure": &m.CallerPressure} {
		switch {
		case s.Reference == "baseline" || s.Reference == "population":
		case s.Reference == "caller" && name == "caller_pressure":
			b := &m.Baseline
			if !(b.CallerQuantile > 0 && b.CallerQuantile < 1) || b.CallerPriorWeight == nil {
				return errors.New("caller_pressure: reference caller needs baseline.caller_quantile in (0,1) and baseline.caller_prior_weight_s")
			}
			if err := positiveWeights("caller_prior_weight_s", b.CallerPriorWeight); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: reference %q (want baseline or population; caller for caller_pressure)", name, s.Reference)
		}
		if !(s.Clip > 0) {
			return fmt.Errorf("%s: clip must be positive", name)
		}
		if s.SNRFull != 0 && !(s.SNRFull > s.SNRZero) {
			return fmt.Errorf("%s: snr_full_db must be above snr_zero_db", name)
		}
		if len(s.Terms) == 0 {
			return fmt.Errorf("%s: no terms", name)
		}
		for _, t := range s.Terms {
			if !t.Feature.valid() {
				return fmt.Errorf("%s: unknown feature %q", name, t.Feature)
			}
			if !(t.Scale > 0) || math.IsNaN(t.Weight) || math.IsInf(t.Weight, 0) {
				return fmt.Errorf("%s: term %s needs a positive scale and a finite weight", name, t.Feature)
			}
		}
	}
	return nil
}
