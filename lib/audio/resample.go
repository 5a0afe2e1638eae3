package audio

import "math"

// The 16 kHz → 8 kHz decimator is a linear-phase half-band FIR low-pass:
// every other coefficient except the centre one is zero, so each output
// sample costs halfBandPairs multiplications. Its pass band reaches 3.4 kHz
// (the telephone band) with less than 0.01 dB ripple and its stop band
// starts at 4.6 kHz with more than 70 dB attenuation, so nothing above the
// new Nyquist frequency folds back into the telephone band.
const (
	halfBandPairs = 16                     // non-zero coefficient pairs (a multiple of 4)
	halfBandTaps  = 4*halfBandPairs - 1    // 63 taps, centre at index 31
	halfBandDelay = (halfBandTaps - 1) / 2 // group delay in input samples
)

// halfBand holds the non-zero off-centre coefficients of the decimation
// filter: halfBand[k] multiplies the input samples at ±(2k+1) from the
// centre. The centre coefficient is exactly 0.5. β = 7 gives the stop-band
// attenuation quoted above.
var halfBand = [halfBandPairs]float32(HalfBand(halfBandPairs, 7))

// HalfBand designs a linear-phase half-band low-pass FIR (cut-off at a
// quarter of the sample rate) with 4·pairs−1 taps, as a Kaiser-windowed
// sinc normalised to unit DC gain. It returns the non-zero off-centre
// coefficients: h[k] multiplies the samples at ±(2k+1) from the centre; the
// centre coefficient is 0.5 and the other even-offset ones are 0.
func HalfBand(pairs int, beta float64) []float32 {
	h := make([]float64, pairs)
	sum := 0.5
	for k := range h {
		n := float64(2*k + 1)
		h[k] = math.Sin(math.Pi*n/2) / (math.Pi * n) * Kaiser(n/float64(2*pairs), beta)
		sum += 2 * h[k]
	}
	out := make([]float32, pairs)
	for k := range h {
		out[k] = float32(h[k] / sum)
	}
	return out
}

// Kaiser returns the Kaiser window with parameter beta at x, the position
// from the centre (0) to the edges (±1); 0 outside.
func Kaiser(x, beta float64) float64 {
	if x*x >= 1 {
		return 0
	}
	return bessel0(beta*math.Sqrt(1-x*x)) / bessel0(beta)
}

// bessel0 is the modified Bessel function of the first kind, order 0, by its
// power series (ample precision for window design).
func bessel0(x float64) float64 {
	sum, term := 1.0, 1.0
	for k := 1; k < 60; k++ {
		term *= (x / (2 * float64(k))) * (x / (2 * float64(k)))
		sum += term
		if term < 1e-17*sum {
			break
		}
	}
	return sum
}

// Downsampler converts one channel of 16 kHz audio to 8 kHz through the
// half-band anti-alias filter. It is streaming: Process may be called with
// chunks of any length, including odd ones, and the output is the same as
// for the whole signal at once. The output is delayed by 15 output samples
// (1.9 ms, the filter's group delay); Flush drains it at the end of a
// stream. The zero value is ready to use.
type Downsampler struct {
	// hist holds the last halfBandTaps-1 input samples followed by room
	// for new ones; n is the number of valid samples in it.
	hist [halfBandTaps - 1 + 256]float32
	n    int
	// odd is set when the next input sample has an odd index in the
	// stream. Output samples are produced when an odd-indexed sample
	// arrives, so that the filter centre falls on the even input samples.
	odd bool
	// primed is set once the initial zero history has been laid down.
	primed bool
}

// Reset forgets all history, as for a new stream.
func (d *Downsampler) Reset() { *d = Downsampler{} }

// OutputLen returns how many samples Process will write for n more input
// samples.
func (d *Downsampler) OutputLen(n int) int {
	if d.odd {
		return (n + 1) / 2
	}
	return n / 2
}

// Process filters and decimates src, writing the 8 kHz samples to dst, and
// returns the number written (OutputLen(len(src))). It panics if dst is too
// short. It does not allocate.
func (d *Downsampler) Process(dst []int16, src []int16) int {
	if !d.primed {
		// Start from silence, so the first output sample corresponds to
		// the first input sample delayed by the filter.
		d.n = halfBandTaps - 1
		d.primed = true
	}
	out := 0
	need := d.OutputLen(len(src))
	dst = dst[:need]
	for len(src) > 0 {
		room := len(d.hist) - d.n
		take := min(room, len(src))
		for i, s := range src[:take] {
			d.hist[d.n+i] = float32(s)
		}
		src = src[take:]
		end := d.n + take
		// The sample at hist index i (i ≥ taps-1) is the newest sample of
		// the filter span hist[i-taps+1 .. i].
		i := d.n
		if !d.odd {
			i++
		}
		h := &halfBand
		for ; i < end; i += 2 {
			// The filter span, as an array so that the indexing below
			// needs no bounds checks.
			x := (*[halfBandTaps]float32)(d.hist[i-(halfBandTaps-1):])
			// Four independent sums, so the additions overlap.
			var a0, a1, a2, a3 float32
			for k := 0; k < halfBandPairs; k += 4 {
				a0 += h[k] * (x[halfBandDelay-2*k-1] + x[halfBandDelay+2*k+1])
				a1 += h[k+1] * (x[halfBandDelay-2*k-3] + x[halfBandDelay+2*k+3])
				a2 += h[k+2] * (x[halfBandDelay-2*k-5] + x[halfBandDelay+2*k+5])
				a3 += h[k+3] * (x[halfBandDelay-2*k-7] + x[halfBandDelay+2*k+7])
			}
			dst[out] = clip16(0.5*x[halfBandDelay] + (a0 + a1) + (a2 + a3))
			out++
		}
		d.odd = d.odd != (take%2 == 1)
		// Keep the last taps-1 samples for the next block.
		copy(d.hist[:halfBandTaps-1], d.hist[end-(halfBandTaps-1):end])
		d.n = halfBandTaps - 1
	}
	return out
}

// FlushLen is the most samples Flush writes.
const FlushLen = halfBandDelay/2 + 1

// Flush pushes enough silence through the filter to output the samples still
// held back by its delay, writes them to dst (which must hold FlushLen
// samples) and returns how many it wrote; the Downsampler is then reset.
func (d *Downsampler) Flush(dst []int16) int {
	var zeros [2 * FlushLen]int16
	n := d.Process(dst, zeros[:])
	d.Reset()
	return n
}

func clip16(x float32) int16 {
	switch {
	case x >= 32767:
		return 32767
	case x <= -32768:
		return -32768
	case x >= 0:
		return int16(x + 0.5)
	}
	return int16(x - 0.5)
}

// Downsample16kTo8k converts a whole 16 kHz channel to 8 kHz and appends the
// result to dst. The output has len(src)/2 samples (rounded up), aligned so
// that output sample i corresponds to input sample 2i: the filter delay is
// compensated.
func Downsample16kTo8k(dst, src []int16) []int16 {
	var d Downsampler
	want := (len(src) + 1) / 2
	// Output j is centred on input sample 2j-(halfBandDelay-1), so the
	// first (halfBandDelay-1)/2 outputs are pure filter delay.
	skip := (halfBandDelay - 1) / 2
	full := make([]int16, d.OutputLen(len(src))+FlushLen)
	n := d.Process(full, src)
	n += d.Flush(full[n:])
	full = full[:n]
	if len(full) < skip+want {
		want = len(full) - skip
	}
	return append(dst, full[skip:skip+want]...)
}
