package voicecli

import (
	"fmt"
	"testing"

	"github.com/calmline/calmline/lib/impair"
	"github.com/calmline/calmline/lib/voice"
)

func TestDebugFeatures(t *testing.T) {
	calls, err := loadCalls("../../../../shared/corpus")
	if err != nil {
		t.Fatal(err)
	}
	feats := []voice.Feature{voice.F0Level, voice.F0Variability, voice.Loudness, voice.VocalEffort, voice.SpeechRate, voice.HNRFeature, voice.Jitter, voice.Shimmer}
	for _, cond := range []string{"clean", "noise=pink:15,seed=1", "noise=babble:15,seed=1", "noise=hum:15,seed=1", "band=400:3000", "loss=3%:zero,seed=1"} {
		sum := map[string][]float64{}
		nvo := map[string][]float64{}
		for i := range calls {
			c := &calls[i]
			spec, _ := impair.Parse(cond)
			spec.BabbleSource = c.babble
			x, _ := impair.Apply(c.chans, spec)
			for ch := 0; ch < 2; ch++ {
				a := voice.NewAnalyzer(nil, func(w *voice.Window) {
					s := w.Start / 100
					l := secondLabel(c.segs, ch, s)
					key := l
					if l == "" {
						key = "none"
					} else if l != "neutral" {
						key = "emo"
					}
					key = fmt.Sprint(ch, key)
					nvo[key] = append(nvo[key], float64(w.ModelVoiced()))
					if w.ModelVoiced() < 20 {
						return
					}
					for _, f := range feats {
						sum[key+string(f)] = append(sum[key+string(f)], w.Value(f))
					}
				})
				a.Push(x[ch])
				a.Flush()
			}
		}
		fmt.Printf("%-26s", cond)
		for _, k := range []string{"0neutral", "0emo", "1neutral", "1emo"} {
			fmt.Printf(" | %s", k)
			for _, f := range feats {
				fmt.Printf(" %5.1f", median(sum[k+string(f)]))
			}
		}
		fmt.Printf(" | voiced none %4.1f neu %4.1f\n", mean(nvo["0none"]), mean(nvo["0neutral"]))
	}
}
