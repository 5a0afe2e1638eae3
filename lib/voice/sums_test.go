package voice

import (
	"math"
	"testing"

	"github.com/calmline/calmline/lib/voice/voicetest"
)

// rebuild adds up a call's SecondSums the way a consumer of them would and
// returns each channel's measures, overlap and interruptions.
type rebuilt struct {
	w      Window
	f0     f0Hist
	p      Perturbation
	over   int
	interr int
}

func (r *rebuilt) add(c *ChannelSums) {
	r.w.Frames += c.Frames
	r.w.Speech += c.Speech
	r.w.Voiced += c.Voiced
	r.w.Nuclei += c.Nuclei
	r.w.pow += c.Power
	r.w.hnr += c.HNR
	r.w.nhnr += c.HNRFrames
	p := c.Perturbation.Perturbation()
	r.p.Add(&p)
	for _, f := range c.F0[:c.F0N] {
		r.f0.add(float64(f))
	}
	r.over += c.Overlap
	r.interr += c.Interruptions
}

func TestSecondSumsRebuildTheSummary(t *testing.T) {
	// Two parties talking over each other for 2 s, on noisy lines, the
	// agent's line carrying the caller's echo: overlap and bleed rejection
	// happen.
	chans := stereo(2)
	chans[0] = voicetest.WithNoise(chans[0], 25, 1)
	echo := voicetest.Gain(chans[0], -25)
	chans[1] = voicetest.WithNoise(voicetest.Sum(chans[1], echo), 20, 2)

	var got [2]rebuilt
	seconds, incomplete := 0, 0
	last := int64(-1)
	sum, err := AnalyzeCall(CallConfig{Roles: []Role{RoleCaller, RoleAgent}, OnSums: func(s *SecondSums) {
		if s.Index != last+1 || s.NumChannels != 2 {
			t.Errorf("sums of second %d (%d channels) after second %d", s.Index, s.NumChannels, last)
		}
		last = s.Index
		seconds++
		if !s.Complete() {
			incomplete++
		}
		for i := range s.NumChannels {
			got[i].add(&s.Channels[i])
		}
	}}, chans, nil)
	if err != nil {
		t.Fatal(err)
	}
	if seconds != 10 || incomplete != 0 {
		t.Fatalf("%d seconds of sums, %d incomplete; want 10, all complete", seconds, incomplete)
	}
	for i, want := range sum.Channels {
		g := &got[i]
		g.w.Perturbation = g.p
		p := &g.w.Perturbation
		for _, m := range []struct {
			name      string
			got, want float64
			tol       float64 // relative
		}{
			{"duration", g.w.Duration(), float64(want.DurationS), 0},
			{"talk", float64(g.w.Speech) / FrameRate, float64(want.TalkTimeS), 0},
			{"voiced fraction", g.w.VoicedFraction(), float64(want.VoicedFraction), 0},
			{"speech rate", g.w.SyllableRate(), float64(want.SpeechRate), 0},
			{"overlap", float64(g.over) / FrameRate, float64(want.OverlapS), 0},
			{"interruptions", float64(g.interr), float64(want.Interruptions), 0},
			{"F0 median", g.f0.quantile(0.5), float64(want.F0MedianHz), 0},
			{"F0 p05", g.f0.quantile(0.05), float64(want.F0P05Hz), 0},
			{"F0 p95", g.f0.quantile(0.95), float64(want.F0P95Hz), 0},
			{"F0 mean", g.f0.mean(), float64(want.F0MeanHz), 1e-12},
			{"F0 sd", g.f0.sd(), float64(want.F0SDHz), 1e-9},
			{"intensity", g.w.IntensityDB(), float64(want.IntensityMeanDB), 1e-6},
			{"HNR", g.w.HNR(), float64(want.HNRMeanDB), 1e-12},
			{"jitter local", p.JitterLocal(), float64(want.JitterLocalPct), 1e-9},
			{"jitter rap", p.JitterRAP(), float64(want.JitterRAPPct), 1e-9},
			// The call's running total counts each pulse's amplitude
			// twice (once directly, once with its second's window), which
			// moves the mean amplitude's n−1 denominator: 1/(2n) apart.
			{"shimmer local", p.ShimmerLocal(), float64(want.ShimmerLocalPct), 1e-3},
			{"shimmer apq3", p.ShimmerAPQ3(), float64(want.ShimmerAPQ3Pct), 1e-3},
		} {
			if math.IsNaN(m.want) || math.Abs(m.got-m.want) > m.tol*math.Abs(m.want) {
				t.Errorf("channel %d %s: %v from the sums; the summary says %v", i, m.name, m.got, m.want)
			}
		}
		if g.over == 0 {
			t.Errorf("channel %d: no overlap frames: the call should have some", i)
		}
	}
}

func TestCallWithSumsNoAllocs(t *testing.T) {
	n := 0
	c, _ := NewCall(CallConfig{Roles: []Role{RoleCaller, RoleAgent}, OnSums: func(s *SecondSums) { n += s.Channels[0].F0N }})
	if a := chunkAllocs(c); a != 0 {
		t.Errorf("a 100 ms chunk per channel with OnSums allocates %v times", a)
	}
	if n == 0 {
		t.Error("OnSums saw no voiced frame")
	}
}
