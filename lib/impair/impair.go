// Package impair makes deterministic impaired copies of telephone calls:
// the line conditions a call center really has — background noise
// (stationary pink noise, office hum, babble made from other speech) at a
// chosen signal-to-noise ratio, the other party's voice bleeding in through
// an echo path, gain mismatch between the lines, lost packets, A-law or
// μ-law transcoding and band-limiting. The voice analysis is evaluated on
// them (calmline eval), and users can make their own (calmline impair).
//
// Everything is pure computation on 8 kHz int16 channels: the same input,
// Spec and seed give the same output, byte for byte.
package impair

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/calmline/calmline/lib/audio"
)

// SampleRate is the rate the package works at, in Hz.
const SampleRate = 8000

// PacketSamples is the length of one RTP packet of 20 ms at 8 kHz.
const PacketSamples = 160

// Noise kinds.
const (
	NoisePink   = "pink"   // stationary pink (1/f) noise, 200–3600 Hz
	NoiseHum    = "hum"    // office hum: mains harmonics and low rumble
	NoiseBabble = "babble" // several talkers at once, from other speech
)

// Concealment of lost packets.
const (
	ConcealZero   = "zero"   // a lost packet is silence
	ConcealRepeat = "repeat" // a lost packet repeats the last good one, fading
)

// Spec is one set of line impairments, applied in the order of its fields:
// gain, bleed, noise, band-limiting, codec, packet loss. The zero value
// changes nothing.
type Spec struct {
	// GainDB is added to each channel's level (index = channel).
	GainDB [2]float64
	// Bleed mixes each channel into the other through an echo path (a
	// 300–3000 Hz band-pass with a second, weaker reflection 4 ms later),
	// BleedDB below the source channel's active speech level, delayed by
	// BleedDelayMS (0–60 ms). BleedDB 0 means no bleed.
	BleedDB      float64
	BleedDelayMS float64
	// Noise of kind NoiseKind is added to every channel at NoiseSNRDB
	// below the channel's active speech level (as measured by
	// ActiveLevelDB). An empty kind means no noise. Babble needs
	// BabbleSource.
	NoiseKind  string
	NoiseSNRDB float64
	// BabbleSource is the speech babble is built from (8 kHz, several
	// talkers' worth; other calls' speech).
	BabbleSource []int16
	// BandLowHz and BandHighHz band-limit every channel (0: no limit).
	BandLowHz, BandHighHz float64
	// Codec transcodes every channel through G.711 (audio.CodecPCMA or
	// audio.CodecPCMU; zero: none).
	Codec audio.Codec
	// LossRate is the fraction of 20 ms packets lost (0..0.5), Conceal how
	// they are replaced.
	LossRate float64
	Conceal  string
	// Seed makes the random parts (noise, babble offsets, lost packets)
	// reproducible.
	Seed uint64
}

// Validate checks a Spec.
func (s *Spec) Validate() error {
	for i, g := range s.GainDB {
		if math.IsNaN(g) || g < -60 || g > 40 {
			return fmt.Errorf("impair: gain of channel %d %v dB out of -60..40", i, g)
		}
	}
	if math.IsNaN(s.BleedDB) || s.BleedDB > 0 || s.BleedDB < -80 {
		return fmt.Errorf("impair: bleed %v dB out of -80..0", s.BleedDB)
	}
	if math.IsNaN(s.BleedDelayMS) || s.BleedDelayMS < 0 || s.BleedDelayMS > 60 {
		return fmt.Errorf("impair: bleed delay %v ms out of 0..60", s.BleedDelayMS)
	}
	switch s.NoiseKind {
	case "":
	case NoisePink, NoiseHum:
	case NoiseBabble:
		if len(s.BabbleSource) < SampleRate {
			return errors.New("impair: babble needs at least 1 s of source speech")
		}
	default:
		return fmt.Errorf("impair: unknown noise %q (want pink, hum or babble)", s.NoiseKind)
	}
	if s.NoiseKind != "" && (math.IsNaN(s.NoiseSNRDB) || s.NoiseSNRDB < -10 || s.NoiseSNRDB > 80) {
		return fmt.Errorf("impair: SNR %v dB out of -10..80", s.NoiseSNRDB)
	}
	if s.BandLowHz < 0 || s.BandHighHz < 0 || (s.BandHighHz > 0 && (s.BandHighHz <= s.BandLowHz || s.BandHighHz >= SampleRate/2)) {
		return fmt.Errorf("impair: band %v–%v Hz invalid", s.BandLowHz, s.BandHighHz)
	}
	switch s.Codec {
	case 0, audio.CodecPCMA, audio.CodecPCMU:
	default:
		return fmt.Errorf("impair: codec %v (want alaw or ulaw)", s.Codec)
	}
	if math.IsNaN(s.LossRate) || s.LossRate < 0 || s.LossRate > 0.5 {
		return fmt.Errorf("impair: loss rate %v out of 0..0.5", s.LossRate)
	}
	switch s.Conceal {
	case "", ConcealZero, ConcealRepeat:
	default:
		return fmt.Errorf("impair: concealment %q (want zero or repeat)", s.Conceal)
	}
	return nil
}

// Apply returns impaired copies of the channels (one or two, 8 kHz). The
// input is not modified.
func Apply(chans [][]int16, s Spec) ([][]int16, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if len(chans) < 1 || len(chans) > 2 {
		return nil, fmt.Errorf("impair: %d channels (want 1 or 2)", len(chans))
	}
	if s.BleedDB != 0 && len(chans) != 2 {
		return nil, errors.New("impair: bleed needs two channels")
	}
	x := make([][]float64, len(chans))
	for i, c := range chans {
		x[i] = make([]float64, len(c))
		g := math.Pow(10, s.GainDB[i]/20)
		for j, v := range c {
			x[i][j] = float64(v) * g
		}
	}
	if s.BleedDB != 0 {
		x = bleed(x, s.BleedDB, s.BleedDelayMS)
	}
	if s.NoiseKind != "" {
		for i := range x {
			// Each channel gets its own noise; the seed differs per channel.
			rng := rand.New(rand.NewPCG(s.Seed, uint64(i)+1))
			level := ActiveLevelDB(x[i])
			if math.IsInf(level, -1) {
				continue // no speech: nothing to measure the SNR against
			}
			n := noise(s.NoiseKind, len(x[i]), s.BabbleSource, rng)
			scaleTo(n, level-s.NoiseSNRDB)
			for j := range x[i] {
				x[i][j] += n[j]
			}
		}
	}
	if s.BandHighHz > 0 || s.BandLowHz > 0 {
		for i := range x {
			bandLimit(x[i], s.BandLowHz, s.BandHighHz)
		}
	}
	out := make([][]int16, len(x))
	for i := range x {
		out[i] = toInt16(x[i])
		if s.Codec != 0 {
			transcode(out[i], s.Codec)
		}
	}
	if s.LossRate > 0 {
		for i := range out {
			rng := rand.New(rand.NewPCG(s.Seed, 0x1055+uint64(i)))
			loss(out[i], s.LossRate, s.Conceal, rng)
		}
	}
	return out, nil
}

// ActiveLevelDB returns the active speech level of x in dB re full scale
// (int16 units: a full-scale square wave reads 0): the mean power of the 10
// ms frames within 35 dB of the loudest frame and above -100 dBFS, a
// simplified ITU-T P.56. It is -Inf when no frame qualifies.
func ActiveLevelDB(x []float64) float64 {
	const fr = SampleRate / 100
	n := len(x) / fr
	if n == 0 {
		return math.Inf(-1)
	}
	pw := make([]float64, n)
	top := 0.0
	for k := range n {
		var e float64
		for _, v := range x[k*fr : (k+1)*fr] {
			e += v * v
		}
		pw[k] = e / fr
		top = max(top, pw[k])
	}
	thr := max(top*math.Pow(10, -35.0/10), fullScale2*math.Pow(10, -100.0/10))
	var sum float64
	var m int
	for _, p := range pw {
		if p >= thr {
			sum += p
			m++
		}
	}
	if m == 0 {
		return math.Inf(-1)
	}
	return 10 * math.Log10(sum/float64(m)/fullScale2)
}

// fullScale2 is the power of a full-scale square wave in int16 units.
const fullScale2 = 32768.0 * 32768.0

// PowerDB returns the mean power of x in dB re full scale.
func PowerDB(x []float64) float64 {
	var e float64
	for _, v := range x {
		e += v * v
	}
	return 10 * math.Log10(e/float64(max(len(x), 1))/fullScale2)
}

// Float converts int16 samples to float64.
func Float(x []int16) []float64 {
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v)
	}
	return out
}

// scaleTo scales n so that its mean power is dB re full scale.
func scaleTo(n []float64, dB float64) {
	p := PowerDB(n)
	if math.IsInf(p, -1) || math.IsNaN(p) {
		return
	}
	g := math.Pow(10, (dB-p)/20)
	for i := range n {
		n[i] *= g
	}
}

func toInt16(x []float64) []int16 {
	out := make([]int16, len(x))
	for i, v := range x {
		out[i] = int16(max(-32768, min(32767, math.Round(v))))
	}
	return out
}

func transcode(x []int16, c audio.Codec) {
	b := audio.Encode(nil, x, c)
	audio.Decode(x, b, c)
}

// noise returns n samples of the kind, unscaled.
func noise(kind string, n int, babbleSrc []int16, rng *rand.Rand) []float64 {
	out := make([]float64, n)
	switch kind {
	case NoisePink:
		// Paul Kellet's refined pink filter on white Gaussian noise.
		var b0, b1, b2, b3, b4, b5, b6 float64
		for i := range out {
			w := rng.NormFloat64()
			b0 = 0.99886*b0 + w*0.0555179
			b1 = 0.99332*b1 + w*0.0750759
			b2 = 0.96900*b2 + w*0.1538520
			b3 = 0.86650*b3 + w*0.3104856
			b4 = 0.55000*b4 + w*0.5329522
			b5 = -0.7616*b5 - w*0.0168980
			out[i] = b0 + b1 + b2 + b3 + b4 + b5 + b6 + w*0.5362
			b6 = w * 0.115926
		}
		// Room noise reaches the line through the handset and the
		// telephone band: without this, most of the power of 1/f noise
		// would lie below 100 Hz, where no line carries it.
		bandLimit(out, 200, 3600)
	case NoiseHum:
		// Mains at 50 Hz with its harmonics (falling 3 dB each, odd ones
		// stronger, as transformers and fans make them), a slow wobble of
		// their level, and a low rumble of brown noise.
		phase := rng.Float64() * 2 * math.Pi
		var brown float64
		for i := range out {
			t := float64(i) / SampleRate
			var h float64
			for k := 1; k <= 8; k++ {
				a := math.Pow(10, -3*float64(k-1)/20)
				if k%2 == 0 {
					a *= 0.5
				}
				h += a * math.Sin(2*math.Pi*50*float64(k)*t+phase*float64(k))
			}
			brown = 0.995*brown + 0.05*rng.NormFloat64()
			out[i] = h*(1+0.1*math.Sin(2*math.Pi*0.3*t)) + brown
		}
	case NoiseBabble:
		// Six talkers, each the source from its own random offset, at
		// slightly different levels.
		const talkers = 6
		for range talkers {
			off := rng.IntN(len(babbleSrc))
			g := math.Pow(10, (rng.Float64()*6-3)/20)
			for i := range out {
				out[i] += g * float64(babbleSrc[(off+i)%len(babbleSrc)])
			}
		}
	}
	return out
}

// bleed mixes each channel into the other through the echo path.
func bleed(x [][]float64, dB, delayMS float64) [][]float64 {
	d := int(math.Round(delayMS * SampleRate / 1000))
	out := [][]float64{append([]float64(nil), x[0]...), append([]float64(nil), x[1]...)}
	for src := range 2 {
		level := ActiveLevelDB(x[src])
		if math.IsInf(level, -1) {
			continue
		}
		e := echoPath(x[src])
		el := ActiveLevelDB(e)
		if math.IsInf(el, -1) {
			continue
		}
		g := math.Pow(10, (level+dB-el)/20)
		dst := out[1-src]
		for i := range dst {
			if j := i - d; j >= 0 && j < len(e) {
				dst[i] += g * e[j]
			}
		}
	}
	return out
}

// echoPath filters x as a simple acoustic/hybrid echo path: a 300–3000 Hz
// band-pass plus a reflection 4 ms later at -6 dB.
func echoPath(x []float64) []float64 {
	y := append([]float64(nil), x...)
	bandLimit(y, 300, 3000)
	const refl = 32 // 4 ms
	out := make([]float64, len(y))
	for i := range y {
		out[i] = y[i]
		if i >= refl {
			out[i] += 0.5 * y[i-refl]
		}
	}
	return out
}

// bandLimit filters x in place with 4th-order Butterworth high-pass (lo)
// and low-pass (hi) sections (0 leaves that side open).
func bandLimit(x []float64, lo, hi float64) {
	q := [2]float64{0.5412, 1.3066} // 4th-order Butterworth as two biquads
	for _, qq := range q {
		if lo > 0 {
			newBiquad(lo, qq, true).run(x)
		}
		if hi > 0 {
			newBiquad(hi, qq, false).run(x)
		}
	}
}

type biquad struct{ b0, b1, b2, a1, a2 float64 }

// newBiquad returns an RBJ high- or low-pass section.
func newBiquad(f, q float64, high bool) biquad {
	w := 2 * math.Pi * f / SampleRate
	c, s := math.Cos(w), math.Sin(w)
	al := s / (2 * q)
	a0 := 1 + al
	var b biquad
	if high {
		b = biquad{(1 + c) / 2, -(1 + c), (1 + c) / 2, -2 * c, 1 - al}
	} else {
		b = biquad{(1 - c) / 2, 1 - c, (1 - c) / 2, -2 * c, 1 - al}
	}
	b.b0, b.b1, b.b2, b.a1, b.a2 = b.b0/a0, b.b1/a0, b.b2/a0, b.a1/a0, b.a2/a0
	return b
}

func (b biquad) run(x []float64) {
	var x1, x2, y1, y2 float64
	for i, v := range x {
		y := b.b0*v + b.b1*x1 + b.b2*x2 - b.a1*y1 - b.a2*y2
		x2, x1 = x1, v
		y2, y1 = y1, y
		x[i] = y
	}
}

// loss drops 20 ms packets at random (independently, at rate p) and
// conceals them.
func loss(x []int16, p float64, conceal string, rng *rand.Rand) {
	var last [PacketSamples]int16
	run := 0 // consecutive losses
	for at := 0; at < len(x); at += PacketSamples {
		pk := x[at:min(at+PacketSamples, len(x))]
		if rng.Float64() >= p {
			copy(last[:], pk)
			run = 0
			continue
		}
		run++
		if conceal == ConcealRepeat && run <= 3 {
			// Repeat the last good packet, halving it each time (a
			// simple packet-loss concealment, as G.711 Appendix I fades).
			g := math.Pow(0.5, float64(run-1))
			for i := range pk {
				pk[i] = int16(float64(last[i]) * g)
			}
			continue
		}
		clear(pk)
	}
}
