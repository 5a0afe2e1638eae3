package impair

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/voice/voicetest"
)

// call returns a two-channel test call: a caller voice then silence, and
// an agent voice in the other half.
func call() [][]int16 {
	a := voicetest.Voice{F0: 210, Range: 3, Rate: 4, Level: -20, Effort: 0.4, Dur: 4, Seed: 1}.Generate()
	b := voicetest.Voice{F0: 110, Range: 2, Rate: 4.5, Level: -26, Effort: 0.3, Dur: 4, Seed: 2}.Generate()
	return [][]int16{
		voicetest.Concat(a, voicetest.Silence(4)),
		voicetest.Concat(voicetest.Silence(4), b),
	}
}

func sub(a []int16, b []int16) []float64 {
	out := make([]float64, len(a))
	for i := range a {
		out[i] = float64(a[i]) - float64(b[i])
	}
	return out
}

func TestNoiseSNRAsAsked(t *testing.T) {
	in := call()
	src := voicetest.Voice{F0: 150, Range: 4, Rate: 5, Level: -20, Effort: 0.5, Dur: 6, Seed: 3}.Generate()
	for _, kind := range []string{NoisePink, NoiseHum, NoiseBabble} {
		for _, snr := range []float64{20, 15, 10, 5} {
			out, err := Apply(in, Spec{NoiseKind: kind, NoiseSNRDB: snr, BabbleSource: src, Seed: 4})
			if err != nil {
				t.Fatal(err)
			}
			for ch := range in {
				speech := ActiveLevelDB(Float(in[ch]))
				noise := PowerDB(sub(out[ch], in[ch]))
				if got := speech - noise; math.Abs(got-snr) > 0.2 {
					t.Errorf("%s %v dB, channel %d: measured SNR %.2f dB", kind, snr, ch, got)
				}
				// The noise covers the whole channel, silence included.
				if d := sub(out[ch], in[ch]); PowerDB(d[:SampleRate]) < noise-6 || PowerDB(d[len(d)-SampleRate:]) < noise-6 {
					t.Errorf("%s: noise not spread over the channel", kind)
				}
			}
		}
	}
}

func TestSameSeedSameBytes(t *testing.T) {
	in := call()
	src := voicetest.Voice{F0: 150, Range: 4, Rate: 5, Level: -20, Effort: 0.5, Dur: 6, Seed: 3}.Generate()
	for _, text := range []string{"noise=pink:15,seed=3", "noise=babble:10,seed=3", "noise=hum:12,seed=3", "loss=5%:repeat,seed=3",
		"bleed=-20:20,gain=-6:0,noise=pink:20,band=300:3400,codec=alaw,loss=2%,seed=3"} {
		s, err := Parse(text)
		if err != nil {
			t.Fatal(err)
		}
		s.BabbleSource = src
		a, _ := Apply(in, s)
		b, _ := Apply(in, s)
		if !slices.Equal(a[0], b[0]) || !slices.Equal(a[1], b[1]) {
			t.Errorf("%s: two runs differ", text)
		}
		s.Seed = 4
		c, _ := Apply(in, s)
		if text != "bleed=-20:20,gain=-6:0,noise=pink:20,band=300:3400,codec=alaw,loss=2%,seed=3" && slices.Equal(a[0], c[0]) && slices.Equal(a[1], c[1]) {
			t.Errorf("%s: another seed gives the same output", text)
		}
		if slices.Equal(a[0], in[0]) {
			t.Errorf("%s: nothing changed", text)
		}
	}
}

func TestBleedLevelAndDelay(t *testing.T) {
	in := call()
	for _, c := range []struct{ db, ms float64 }{{-20, 20}, {-12, 40}, {-30, 0}, {-20, 60}} {
		out, err := Apply(in, Spec{BleedDB: c.db, BleedDelayMS: c.ms})
		if err != nil {
			t.Fatal(err)
		}
		for dst := range 2 {
			src := 1 - dst
			leak := sub(out[dst], in[dst])
			got := ActiveLevelDB(leak) - ActiveLevelDB(Float(in[src]))
			if math.Abs(got-c.db) > 0.5 {
				t.Errorf("bleed %v dB into channel %d: measured %.2f dB", c.db, dst, got)
			}
		}
		// The delay, measured on noise bursts (speech is too periodic for
		// a clean cross-correlation peak).
		rng := rand.New(rand.NewPCG(1, 2))
		burst := make([]int16, 2*SampleRate)
		for i := range burst[:SampleRate] {
			burst[i] = int16(rng.NormFloat64() * 3000)
		}
		nb, _ := Apply([][]int16{burst, make([]int16, len(burst))}, Spec{BleedDB: c.db, BleedDelayMS: c.ms})
		// The echo path's band-pass and reflection add a few samples of
		// group delay.
		if d := bestLag(Float(burst), Float(nb[1]), 600); math.Abs(float64(d)-c.ms*8) > 4 {
			t.Errorf("bleed delay %v ms: measured %v samples", c.ms, d)
		}
		if d := int(c.ms * 8); !slices.Equal(nb[1][:d], make([]int16, d)) {
			t.Error("bleed arrived before its delay")
		}
	}
}

// bestLag returns the lag (0..max samples) at which y correlates best with x.
func bestLag(x, y []float64, maxLag int) int {
	best, at := math.Inf(-1), 0
	for l := 0; l <= maxLag; l++ {
		var s float64
		for i := l; i < len(y); i++ {
			s += x[i-l] * y[i]
		}
		if s > best {
			best, at = s, l
		}
	}
	return at
}

func TestGainAndBand(t *testing.T) {
	in := call()
	out, err := Apply(in, Spec{GainDB: [2]float64{-12, 6}})
	if err != nil {
		t.Fatal(err)
	}
	for ch, want := range []float64{-12, 6} {
		if got := ActiveLevelDB(Float(out[ch])) - ActiveLevelDB(Float(in[ch])); math.Abs(got-want) > 0.1 {
			t.Errorf("gain channel %d: %.2f dB, want %v", ch, got, want)
		}
	}
	tone := [][]int16{voicetest.Tone(150, 0.3, 1), voicetest.Tone(1000, 0.3, 1)}
	out, _ = Apply(tone, Spec{BandLowHz: 400, BandHighHz: 3000})
	if d := ActiveLevelDB(Float(out[0])) - ActiveLevelDB(Float(tone[0])); d > -15 {
		t.Errorf("150 Hz through a 400 Hz high-pass: %.1f dB", d)
	}
	if d := ActiveLevelDB(Float(out[1])) - ActiveLevelDB(Float(tone[1])); math.Abs(d) > 0.5 {
		t.Errorf("1 kHz in the pass band: %.1f dB", d)
	}
}

func TestLossAndCodec(t *testing.T) {
	x := voicetest.Tone(440, 0.3, 20)
	out, err := Apply([][]int16{x}, Spec{LossRate: 0.1, Conceal: ConcealZero, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	lost := 0
	n := len(x) / PacketSamples
	for p := range n {
		pk := out[0][p*PacketSamples : (p+1)*PacketSamples]
		if slices.Equal(pk, make([]int16, PacketSamples)) {
			lost++
		} else if !slices.Equal(pk, x[p*PacketSamples:(p+1)*PacketSamples]) {
			t.Fatalf("packet %d changed but not lost", p)
		}
	}
	if r := float64(lost) / float64(n); r < 0.07 || r > 0.13 {
		t.Errorf("loss 10%%: %d of %d packets lost", lost, n)
	}
	// Concealment fills the same packets with the last good one.
	rep, _ := Apply([][]int16{x}, Spec{LossRate: 0.1, Conceal: ConcealRepeat, Seed: 1})
	for p := 1; p < n; p++ {
		at := p * PacketSamples
		pk := out[0][at : at+PacketSamples]
		if slices.Equal(pk, make([]int16, PacketSamples)) && !slices.Equal(out[0][at-PacketSamples:at], make([]int16, PacketSamples)) {
			if !slices.Equal(rep[0][at:at+PacketSamples], x[at-PacketSamples:at]) {
				t.Fatalf("packet %d: lost after a good one, not repeated", p)
			}
		}
	}
	for _, c := range []audio.Codec{audio.CodecPCMA, audio.CodecPCMU} {
		y, _ := Apply([][]int16{x}, Spec{Codec: c})
		if snr := ActiveLevelDB(Float(x)) - ActiveLevelDB(sub(y[0], x)); snr < 30 || snr > 45 {
			t.Errorf("%v: quantisation SNR %.1f dB", c, snr)
		}
	}
}

func TestBadSpecs(t *testing.T) {
	for _, text := range []string{"noise=pink", "noise=white:10", "bleed=5:10", "bleed=-20:70", "gain=1", "loss=0.9",
		"loss=3%:magic", "codec=g729", "band=3400:300", "seed=-1", "frobnicate=1", "noise=pink:NaN", "noise=pink:1,noise=pink:2", "x"} {
		if _, err := Parse(text); err == nil {
			t.Errorf("Parse(%q) accepted", text)
		}
	}
	if _, err := Apply([][]int16{{1, 2}}, Spec{NoiseKind: NoiseBabble, NoiseSNRDB: 10}); err == nil {
		t.Error("babble without a source accepted")
	}
	if _, err := Apply([][]int16{{1, 2}}, Spec{BleedDB: -20}); err == nil {
		t.Error("bleed on one channel accepted")
	}
	for _, c := range Conditions() {
		if _, err := Parse(c.Spec); err != nil {
			t.Errorf("condition %s: %v", c.Name, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, c := range Conditions() {
		f.Add(c.Spec)
	}
	f.Add("loss=3%:repeat,codec=ulaw")
	f.Fuzz(func(t *testing.T, text string) {
		s, err := Parse(text)
		if err != nil {
			return
		}
		if s.NoiseKind == NoiseBabble {
			s.BabbleSource = voicetest.Tone(300, 0.1, 1)
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("Parse(%q) gave an invalid spec: %v", text, err)
		}
		x := [][]int16{voicetest.Tone(200, 0.2, 0.1), voicetest.Tone(300, 0.2, 0.1)}
		if _, err := Apply(x, s); err != nil {
			t.Fatalf("Apply(%q): %v", text, err)
		}
	})
}
