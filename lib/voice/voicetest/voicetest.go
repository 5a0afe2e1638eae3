// Package voicetest generates test signals with known properties for the
// voice analysis: tones, band-limited sawtooths (optionally through the
// telephone band, which removes the fundamental of low voices), glides,
// pulse trains with known jitter and shimmer, and noise at a known SNR. All
// signals are 8 kHz, 16-bit, deterministic for a given seed.
package voicetest

import (
	"math"
	"math/rand/v2"
)

// Rate is the sample rate of every signal, Hz.
const Rate = 8000

// Tone returns a sine of freq Hz and peak amplitude amp (full scale 1)
// lasting dur seconds.
func Tone(freq, amp, dur float64) []int16 {
	n := int(dur * Rate)
	out := make([]int16, n)
	for i := range out {
		out[i] = clip(amp * math.Sin(2*math.Pi*freq*float64(i)/Rate))
	}
	return out
}

// Sum adds signals sample by sample; the result is as long as the
// longest.
func Sum(sigs ...[]int16) []int16 {
	n := 0
	for _, s := range sigs {
		n = max(n, len(s))
	}
	acc := make([]float64, n)
	for _, s := range sigs {
		for i, v := range s {
			acc[i] += float64(v)
		}
	}
	out := make([]int16, n)
	for i, v := range acc {
		out[i] = clip(v / 32768)
	}
	return out
}

// Concat joins signals.
func Concat(sigs ...[]int16) []int16 {
	var out []int16
	for _, s := range sigs {
		out = append(out, s...)
	}
	return out
}

// Silence returns dur seconds of digital silence.
func Silence(dur float64) []int16 { return make([]int16, int(dur*Rate)) }

// Sawtooth returns a band-limited sawtooth (all harmonics below 3.9 kHz,
// amplitudes 1/k) whose F0 follows f0(t) Hz, with peak amplitude about amp.
func Sawtooth(f0 func(t float64) float64, amp, dur float64) []int16 {
	n := int(dur * Rate)
	out := make([]int16, n)
	phase := 0.0
	for i := range out {
		f := f0(float64(i) / Rate)
		var v float64
		for k := 1; float64(k)*f < 3900; k++ {
			v += math.Sin(float64(k)*phase) / float64(k)
		}
		out[i] = clip(amp * 0.55 * v)
		phase += 2 * math.Pi * f / Rate
		if phase > 2*math.Pi*1e6 {
			phase = math.Mod(phase, 2*math.Pi)
		}
	}
	return out
}

// Constant returns an F0 function for Sawtooth.
func Constant(f float64) func(float64) float64 { return func(float64) float64 { return f } }

// Telephone filters s through a 300–3400 Hz band-pass (a 4th-order
// Butterworth high-pass and low-pass), as a telephone channel does: the
// fundamental of voices below 300 Hz is removed.
func Telephone(s []int16) []int16 {
	x := make([]float64, len(s))
	for i, v := range s {
		x[i] = float64(v)
	}
	for range 2 {
		x = biquad(x, highPass(300, 0.7071))
		x = biquad(x, lowPass(3400, 0.7071))
	}
	out := make([]int16, len(s))
	for i, v := range x {
		out[i] = clip(v / 32768)
	}
	return out
}

type coeffs struct{ b0, b1, b2, a1, a2 float64 }

func highPass(fc, q float64) coeffs {
	w := 2 * math.Pi * fc / Rate
	al := math.Sin(w) / (2 * q)
	c := math.Cos(w)
	a0 := 1 + al
	return coeffs{(1 + c) / 2 / a0, -(1 + c) / a0, (1 + c) / 2 / a0, -2 * c / a0, (1 - al) / a0}
}

func lowPass(fc, q float64) coeffs {
	w := 2 * math.Pi * fc / Rate
	al := math.Sin(w) / (2 * q)
	c := math.Cos(w)
	a0 := 1 + al
	return coeffs{(1 - c) / 2 / a0, (1 - c) / a0, (1 - c) / 2 / a0, -2 * c / a0, (1 - al) / a0}
}

func biquad(x []float64, k coeffs) []float64 {
	y := make([]float64, len(x))
	var x1, x2, y1, y2 float64
	for i, v := range x {
		o := k.b0*v + k.b1*x1 + k.b2*x2 - k.a1*y1 - k.a2*y2
		x2, x1 = x1, v
		y2, y1 = y1, o
		y[i] = o
	}
	return y
}

// Pulses describes a glottal-like pulse train: periods of 1/F0 perturbed by
// a uniform factor within ±Jitter, amplitudes by a uniform factor within
// ±Shimmer.
type Pulses struct {
	F0, Jitter, Shimmer, Amp, Dur float64
	Seed                          uint64
}

// Generate returns the signal and the realised jitter (local) and shimmer
// (local), in percent, computed from the periods and amplitudes it drew
// with Praat's definitions (mean absolute difference of consecutive values
// over the mean value).
func (p Pulses) Generate() (sig []int16, jitterPct, shimmerPct float64) {
	r := rand.New(rand.NewPCG(p.Seed, p.Seed^0x5eed))
	n := int(p.Dur * Rate)
	acc := make([]float64, n)
	var periods, amps []float64
	t := 0.01
	for t < p.Dur-0.01 {
		T := (1 + p.Jitter*(2*r.Float64()-1)) / p.F0
		a := p.Amp * (1 + p.Shimmer*(2*r.Float64()-1))
		periods = append(periods, T)
		amps = append(amps, a)
		// One period of a band-limited sawtooth-like pulse (harmonic sum
		// windowed to the period), starting at time t.
		addPulse(acc, t, T, a)
		t += T
	}
	sig = make([]int16, n)
	for i, v := range acc {
		sig[i] = clip(v)
	}
	return sig, 100 * meanAbsDiff(periods) / mean(periods), 100 * meanAbsDiff(amps) / mean(amps)
}

// addPulse adds one period of a band-limited sawtooth of period T starting
// at time t (seconds), with fractional-sample timing.
func addPulse(acc []float64, t, T, a float64) {
	i0 := int(math.Ceil(t * Rate))
	i1 := int(math.Ceil((t + T) * Rate))
	for i := i0; i < i1 && i < len(acc); i++ {
		ph := 2 * math.Pi * (float64(i)/Rate - t) / T
		var v float64
		for k := 1; float64(k)/T < 3900; k++ {
			v += math.Sin(float64(k)*ph) / float64(k)
		}
		acc[i] += a * 0.55 * v
	}
}

func mean(x []float64) float64 {
	var s float64
	for _, v := range x {
		s += v
	}
	return s / float64(len(x))
}

func meanAbsDiff(x []float64) float64 {
	var s float64
	for i := 1; i < len(x); i++ {
		s += math.Abs(x[i] - x[i-1])
	}
	return s / float64(len(x)-1)
}

// WithNoise adds white Gaussian noise at the given signal-to-noise ratio
// (dB, power) to s.
func WithNoise(s []int16, snrDB float64, seed uint64) []int16 {
	r := rand.New(rand.NewPCG(seed, ^seed))
	var p float64
	for _, v := range s {
		p += float64(v) * float64(v)
	}
	p /= float64(len(s))
	sd := math.Sqrt(p / math.Pow(10, snrDB/10))
	out := make([]int16, len(s))
	for i, v := range s {
		out[i] = clip((float64(v) + sd*r.NormFloat64()) / 32768)
	}
	return out
}

// Gain scales s by db decibels.
func Gain(s []int16, db float64) []int16 {
	g := math.Pow(10, db/20)
	out := make([]int16, len(s))
	for i, v := range s {
		out[i] = clip(float64(v) * g / 32768)
	}
	return out
}

// Syllables modulates s with a raised-cosine envelope of rate per second
// whose depth is 1 (the signal dips to silence between syllables).
func Syllables(s []int16, rate float64) []int16 {
	out := make([]int16, len(s))
	for i, v := range s {
		e := 0.5 - 0.5*math.Cos(2*math.Pi*rate*float64(i)/Rate)
		out[i] = int16(float64(v) * e)
	}
	return out
}

// DTMF returns the key's dual tone (e.g. '5': 770 + 1336 Hz) for on
// seconds followed by off seconds of silence, repeated for the keys given.
func DTMF(keys string, on, off float64) []int16 {
	low := map[byte]float64{'1': 697, '2': 697, '3': 697, '4': 770, '5': 770, '6': 770, '7': 852, '8': 852, '9': 852, '*': 941, '0': 941, '#': 941}
	high := map[byte]float64{'1': 1209, '2': 1336, '3': 1477, '4': 1209, '5': 1336, '6': 1477, '7': 1209, '8': 1336, '9': 1477, '*': 1209, '0': 1336, '#': 1477}
	var out []int16
	for i := range len(keys) {
		k := keys[i]
		out = append(out, Sum(Tone(low[k], 0.35, on), Tone(high[k], 0.35, on))...)
		out = append(out, Silence(off)...)
	}
	return out
}

func clip(v float64) int16 {
	v *= 32768
	switch {
	case v >= 32767:
		return 32767
	case v <= -32768:
		return -32768
	}
	return int16(math.Round(v))
}

// Voice describes a crude speech-like signal: a harmonic source whose F0
// moves around F0 Hz by about Range semitones (a slow intonation contour
// plus a faster syllable-level movement), with the spectral tilt of a
// glottal source (less steep with more Effort, 0 to 1), chopped into
// syllables at Rate per second with short pauses between phrases, at
// Level dB re full scale (RMS of the voiced parts, roughly), through the
// telephone band. It is enough for the analysis to see voicing,
// intonation, loudness, effort and rhythm move the way a speaker's do.
type Voice struct {
	F0, Range, Rate, Level, Effort, Dur float64
	Seed                                uint64
}

// Generate returns the signal.
func (v Voice) Generate() []int16 {
	r := rand.New(rand.NewPCG(v.Seed, 7))
	// Random phases for the intonation so that two voices differ.
	p1, p2 := 2*math.Pi*r.Float64(), 2*math.Pi*r.Float64()
	f0 := func(t float64) float64 {
		st := v.Range * (0.6*math.Sin(2*math.Pi*0.35*t+p1) + 0.4*math.Sin(2*math.Pi*v.Rate/2*t+p2))
		return v.F0 * math.Exp2(st/12)
	}
	s := Sawtooth(f0, 1, v.Dur)
	n := len(s)
	out := make([]float64, n)
	amp := math.Pow(10, v.Level/20) * math.Sqrt2 / 0.55
	for i := range s {
		t := float64(i) / Rate
		// Syllable envelope, with a 0.4 s pause every 2.5 s.
		e := math.Pow(0.5-0.5*math.Cos(2*math.Pi*v.Rate*t), 0.7)
		if math.Mod(t, 2.5) > 2.1 {
			e = 0
		}
		out[i] = float64(s[i]) / 32768 * e * amp
	}
	// Glottal tilt: a one-pole low-pass on top of the sawtooth's 1/k,
	// its corner rising with effort; gain-compensated at 300 Hz.
	fc := 60 * math.Exp2(5*v.Effort)
	a := math.Exp(-2 * math.Pi * fc / Rate)
	g := math.Hypot(1, 300/fc)
	var y float64
	res := make([]int16, n)
	for i, x := range out {
		y = (1-a)*x + a*y
		res[i] = clip(y * g)
	}
	return Telephone(res)
}
