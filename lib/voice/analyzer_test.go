package voice

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/calmline/calmline/lib/voice/voicetest"
)

// run analyses s in one push and returns its frames and totals.
func run(s []int16) ([]Frame, *Window) {
	var frames []Frame
	a := NewAnalyzer(func(f *Frame) { frames = append(frames, *f) }, nil)
	a.Push(s)
	a.Flush()
	return frames, a.Total()
}

// voicedF0 returns the F0 of the voiced frames between t0 and t1 seconds.
func voicedF0(frames []Frame, t0, t1 float64) []float64 {
	var f []float64
	for _, fr := range frames {
		if fr.Voiced && fr.Time >= t0 && fr.Time <= t1 {
			f = append(f, float64(fr.F0))
		}
	}
	return f
}

func median(x []float64) float64 {
	if len(x) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), x...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func TestF0Sawtooth(t *testing.T) {
	for _, c := range []struct {
		f0        float64
		telephone bool
	}{
		{100, false}, {150, false}, {220, false}, {320, false}, {450, false},
		// Through the telephone band the fundamental (and for 100 Hz the
		// second harmonic) is gone; the F0 must still be the true one.
		{85, true}, {100, true}, {150, true}, {220, true},
	} {
		s := voicetest.Sawtooth(voicetest.Constant(c.f0), 0.5, 3)
		if c.telephone {
			s = voicetest.Telephone(s)
		}
		frames, w := run(s)
		f := voicedF0(frames, 0.2, 2.8)
		if len(f) < 250 {
			t.Errorf("%v Hz (telephone %v): %d voiced frames of 260; want nearly all", c.f0, c.telephone, len(f))
			continue
		}
		if m := median(f); math.Abs(m-c.f0)/c.f0 > 0.005 {
			t.Errorf("%v Hz (telephone %v): median F0 %.2f Hz; want within 0.5%%", c.f0, c.telephone, m)
		}
		for _, v := range f {
			if math.Abs(v-c.f0)/c.f0 > 0.05 {
				t.Errorf("%v Hz (telephone %v): a frame reads %.1f Hz (octave or gross error)", c.f0, c.telephone, v)
				break
			}
		}
		if vf := w.VoicedFraction(); vf < 0.95 {
			t.Errorf("%v Hz: voiced fraction %.2f; want ≥ 0.95", c.f0, vf)
		}
	}
}

func TestF0Glide(t *testing.T) {
	for _, telephone := range []bool{false, true} {
		s := voicetest.Sawtooth(func(t float64) float64 { return 100 + 40*t }, 0.5, 5)
		if telephone {
			s = voicetest.Telephone(s)
		}
		frames, _ := run(s)
		var se float64
		n := 0
		for _, fr := range frames {
			if fr.Time < 0.1 || fr.Time > 4.9 {
				continue
			}
			want := 100 + 40*fr.Time
			if !fr.Voiced {
				t.Fatalf("telephone %v: unvoiced at %.2f s", telephone, fr.Time)
			}
			d := float64(fr.F0) - want
			if math.Abs(d)/want > 0.05 {
				t.Fatalf("telephone %v: %.1f Hz at %.2f s; want %.1f (octave jump?)", telephone, fr.F0, fr.Time, want)
			}
			se += d * d
			n++
		}
		if rms := math.Sqrt(se / float64(n)); rms > 1 {
			t.Errorf("telephone %v: glide tracked with %.2f Hz RMS error; want ≤ 1 Hz", telephone, rms)
		}
	}
}

func TestSilenceAndNoise(t *testing.T) {
	frames, w := run(voicetest.Silence(2))
	if w.Voiced != 0 || w.Speech != 0 {
		t.Errorf("silence: %d voiced, %d speech frames; want none", w.Voiced, w.Speech)
	}
	if len(frames) != 200 || frames[100].Intensity != SilenceDB {
		t.Errorf("silence: %d frames, intensity %v; want 200 frames at %v dB", len(frames), frames[100].Intensity, SilenceDB)
	}
	// White noise is not voiced.
	_, w = run(voicetest.WithNoise(voicetest.Tone(1000, 0.0001, 2), -40, 7))
	if vf := w.VoicedFraction(); vf > 0.05 {
		t.Errorf("white noise: voiced fraction %.2f; want ≤ 0.05", vf)
	}
}

func TestIntensityScale(t *testing.T) {
	// Praat's convention: a full-scale sine reads 10·log10(0.5/4e-10) =
	// 90.97 dB; -20 dB of gain reads 20 dB less.
	for _, c := range []struct{ amp, want float64 }{{1, 90.97}, {0.1, 70.97}} {
		frames, w := run(voicetest.Tone(440, c.amp*0.99997, 1))
		if got := float64(frames[50].Intensity); math.Abs(got-c.want) > 0.2 {
			t.Errorf("sine of amplitude %v: %.2f dB; want %.2f", c.amp, got, c.want)
		}
		if got := w.IntensityDB(); math.Abs(got-c.want) > 0.5 {
			t.Errorf("sine of amplitude %v: mean %.2f dB; want %.2f", c.amp, got, c.want)
		}
	}
}

func TestBalance(t *testing.T) {
	low := voicetest.Sawtooth(voicetest.Constant(150), 0.5, 2)
	_, w1 := run(low)
	_, w2 := run(voicetest.Gain(low, -20))
	if d := w1.BalanceDB() - w2.BalanceDB(); math.Abs(d) > 0.5 {
		t.Errorf("balance moved %.2f dB with 20 dB less gain; want < 0.5", d)
	}
	// More energy above 1 kHz (a brighter voice, as with vocal effort)
	// raises it.
	bright := voicetest.Sum(voicetest.Gain(low, -3), voicetest.Tone(1800, 0.3, 2))
	_, w3 := run(bright)
	if w3.BalanceDB() < w1.BalanceDB()+3 {
		t.Errorf("balance of a brighter signal %.1f dB; want ≥ %.1f", w3.BalanceDB(), w1.BalanceDB()+3)
	}
}

func TestJitterShimmer(t *testing.T) {
	var lastJ, lastS float64
	for _, j := range []float64{0.005, 0.01, 0.02, 0.04} {
		s, want, _ := voicetest.Pulses{F0: 150, Jitter: j, Amp: 0.5, Dur: 4, Seed: 11}.Generate()
		_, w := run(s)
		got := w.Perturbation.JitterLocal()
		if math.Abs(got-want)/want > 0.15 {
			t.Errorf("jitter ±%v: jitter (local) %.3f%%; realised %.3f%% (want within 15%%)", j, got, want)
		}
		if got <= lastJ {
			t.Errorf("jitter ±%v: %.3f%% not above the previous %.3f%%", j, got, lastJ)
		}
		lastJ = got
	}
	for _, sh := range []float64{0.05, 0.1, 0.2} {
		s, _, want := voicetest.Pulses{F0: 150, Shimmer: sh, Amp: 0.5, Dur: 4, Seed: 13}.Generate()
		_, w := run(s)
		got := w.Perturbation.ShimmerLocal()
		// Praat's shimmer reads about 0.89 of the realised amplitude
		// perturbation (the windowed RMS spreads each pulse's amplitude
		// over its neighbours); so does ours.
		if r := got / want; r < 0.75 || r > 1.05 {
			t.Errorf("shimmer ±%v: shimmer (local) %.2f%%, realised %.2f%% (ratio %.2f; want 0.75–1.05)", sh, got, want, r)
		}
		if got <= lastS {
			t.Errorf("shimmer ±%v: %.2f%% not above the previous %.2f%%", sh, got, lastS)
		}
		lastS = got
		if jl := w.Perturbation.JitterLocal(); jl > 0.2 {
			t.Errorf("shimmer ±%v: jitter %.3f%% on a jitter-free signal", sh, jl)
		}
	}
}

func TestHNRTracksSNR(t *testing.T) {
	clean := voicetest.Sawtooth(voicetest.Constant(150), 0.3, 3)
	prev := math.Inf(1)
	for _, snr := range []float64{20, 10, 5} {
		_, w := run(voicetest.WithNoise(clean, snr, 5))
		h := w.HNR()
		if math.Abs(h-snr) > 2 {
			t.Errorf("SNR %v dB: HNR %.1f dB; want within 2 dB", snr, h)
		}
		if h >= prev {
			t.Errorf("SNR %v dB: HNR %.1f not below the previous %.1f", snr, h, prev)
		}
		prev = h
	}
}

func TestStreamingMatchesOneShot(t *testing.T) {
	s := voicetest.Concat(
		voicetest.Sawtooth(func(t float64) float64 { return 120 + 30*math.Sin(3*t) }, 0.4, 2),
		voicetest.Silence(0.3),
		voicetest.WithNoise(voicetest.Telephone(voicetest.Sawtooth(voicetest.Constant(210), 0.3, 1.5)), 15, 3),
	)
	want, wantTotal := run(s)
	r := rand.New(rand.NewPCG(1, 1))
	var got []Frame
	var seconds []Window
	a := NewAnalyzer(func(f *Frame) { got = append(got, *f) }, func(w *Window) { seconds = append(seconds, *w) })
	for rest := s; len(rest) > 0; {
		n := min(len(rest), r.IntN(1500))
		a.Push(rest[:n])
		rest = rest[n:]
	}
	a.Flush()
	if len(got) != len(want) {
		t.Fatalf("%d frames streamed; %d in one go", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("frame %d differs: %+v vs %+v", i, got[i], want[i])
		}
	}
	if *a.Total() != *wantTotal {
		t.Errorf("totals differ")
	}
	var sum Window
	for i := range seconds {
		sum.Add(&seconds[i])
	}
	if sum.Frames != len(got) || sum.Voiced != wantTotal.Voiced {
		t.Errorf("seconds add up to %d frames, %d voiced; want %d, %d", sum.Frames, sum.Voiced, len(got), wantTotal.Voiced)
	}
}

func TestLatency(t *testing.T) {
	n := 0
	a := NewAnalyzer(func(*Frame) { n++ }, nil)
	a.Push(make([]int16, 100*hop))
	if want := 100 - Latency; n != want {
		t.Errorf("after 100 hops, %d frames out; want %d (latency %d frames)", n, want, Latency)
	}
}

func TestSyllableRate(t *testing.T) {
	// A voiced signal modulated at 4 syllables per second.
	s := voicetest.Syllables(voicetest.Sawtooth(func(t float64) float64 { return 130 + 10*math.Sin(t) }, 0.5, 6), 4)
	_, w := run(s)
	if r := w.SyllableRate(); r < 3.3 || r > 4.2 {
		t.Errorf("4 Hz syllabic modulation: %.2f nuclei/s; want about 4", r)
	}
}

func TestAnalyzerNoAllocs(t *testing.T) {
	speech := loadTestdata(t, "en_en1_calm.ulaw.wav")
	a := NewAnalyzer(func(*Frame) {}, func(*Window) {})
	a.Push(speech[:8000])
	pos := 8000
	allocs := testing.AllocsPerRun(200, func() {
		if pos+800 > len(speech) {
			pos = 0
		}
		a.Push(speech[pos : pos+800])
		pos += 800
	})
	if allocs != 0 {
		t.Errorf("Push allocates %v times per 100 ms", allocs)
	}
}
