package voicecli

import (
	"fmt"
	"io"
	"math"
	"path/filepath"
	"sort"

	"github.com/calmline/calmline/lib/voice"
)

// Calibration holds the statistics of the dev data that model v1's numbers
// were set from (docs/voice-analysis.md): the population reference of each
// relative feature (the median of per-second values over the EmoDB neutral
// utterances of all five dev speakers) and its normalisation scale (the
// spread of the per-second values around each speaker's own median, pooled
// over speakers: a robust within-speaker SD).
type Calibration struct {
	Utterances int                     `json:"utterances"`
	Seconds    int                     `json:"seconds"`
	Speakers   int                     `json:"speakers"`
	Features   map[string]CalibFeature `json:"features"`
	// CallerBias is the caller_pressure bias that puts the median
	// neutral second at a score of 20, with the model's terms.
	CallerBias voice.Num `json:"caller_pressure_bias_for_neutral_20"`
}

// CalibFeature is one feature's statistics.
type CalibFeature struct {
	Population  voice.Num `json:"population_median"`
	WithinSD    voice.Num `json:"within_speaker_sd"`
	TotalSD     voice.Num `json:"total_sd"`
	ModelRef    voice.Num `json:"model_population"`
	ModelScale  voice.Num `json:"model_scale_agent"`
	ModelScaleC voice.Num `json:"model_scale_caller"`
}

// Calibrate computes the calibration statistics from the corpus.
func Calibrate(dir string, m *voice.Model) (*Calibration, error) {
	rows, err := readCSV(filepath.Join(dir, "emodb", "labels.csv"))
	if err != nil {
		return nil, err
	}
	feats := []voice.Feature{voice.F0Level, voice.F0Variability, voice.Loudness, voice.VocalEffort, voice.SpeechRate, voice.HNRFeature, voice.Jitter, voice.Shimmer}
	perSpeaker := map[string]map[voice.Feature][]float64{}
	var windows []voice.Window
	c := &Calibration{Features: map[string]CalibFeature{}}
	for _, row := range rows {
		if row["emotion"] != "neutral" || row["variant"] != "orig16k" {
			continue
		}
		rec, err := readRecording(filepath.Join(dir, "emodb", row["file"]))
		if err != nil {
			return nil, err
		}
		c.Utterances++
		a := voice.NewAnalyzer(nil, func(w *voice.Window) {
			if w.Voiced < m.Baseline.MinVoicedFrames {
				return
			}
			c.Seconds++
			windows = append(windows, *w)
			sp := perSpeaker[row["speaker"]]
			if sp == nil {
				sp = map[voice.Feature][]float64{}
				perSpeaker[row["speaker"]] = sp
			}
			for _, f := range feats {
				if v := w.Value(f); !math.IsNaN(v) {
					sp[f] = append(sp[f], v)
				}
			}
		})
		a.Push(rec.Channels()[0])
		a.Flush()
	}
	c.Speakers = len(perSpeaker)
	scale := func(sm *voice.ScoreModel, f voice.Feature) voice.Num {
		for _, t := range sm.Terms {
			if t.Feature == f {
				return voice.Num(t.Scale)
			}
		}
		return voice.Num(math.NaN())
	}
	ref := m.Population
	for _, f := range feats {
		var all, dev, tdev []float64
		for _, sp := range perSpeaker {
			v := sp[f]
			md := median(v)
			for _, x := range v {
				all = append(all, x)
				dev = append(dev, math.Abs(x-md))
			}
		}
		pm := median(all)
		for _, x := range all {
			tdev = append(tdev, math.Abs(x-pm))
		}
		c.Features[string(f)] = CalibFeature{
			Population:  voice.Num(pm),
			WithinSD:    voice.Num(1.4826 * median(dev)),
			TotalSD:     voice.Num(1.4826 * median(tdev)),
			ModelRef:    voice.Num(ref.Get(f)),
			ModelScale:  scale(&m.AgentStress, f),
			ModelScaleC: scale(&m.CallerPressure, f),
		}
	}
	// The caller bias: the median logit, without bias, of the neutral
	// seconds scored against the population.
	var logits []float64
	for i := range windows {
		logits = append(logits, m.CallerPressure.Sum(&windows[i], &ref))
	}
	c.CallerBias = voice.Num(math.Log(0.2/0.8) - median(logits))
	return c, nil
}

func (c *Calibration) write(w io.Writer) {
	fmt.Fprintf(w, "\nCalibration statistics (EmoDB neutral utterances, %d files, %d seconds, %d speakers, dev split):\n", c.Utterances, c.Seconds, c.Speakers)
	keys := make([]string, 0, len(c.Features))
	for k := range c.Features {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f := c.Features[k]
		fmt.Fprintf(w, "  %-16s population median %8s (model %8s)   within-speaker SD %7s (model agent scale %6s)   all-speaker SD %7s (model caller scale %6s)\n",
			k, fmtNum(f.Population), fmtNum(f.ModelRef), fmtNum(f.WithinSD), fmtNum(f.ModelScale), fmtNum(f.TotalSD), fmtNum(f.ModelScaleC))
	}
	fmt.Fprintf(w, "  caller_pressure bias putting the median neutral second at 20: %s\n", fmtNum(c.CallerBias))
}
