package voice

import "math"

// halfBand designs the non-zero off-centre coefficients of a linear-phase
// half-band low-pass FIR with 4*pairs-1 taps (centre coefficient 0.5), as a
// Kaiser-windowed sinc with window parameter beta, normalised to unit DC
// gain. h[k] multiplies the samples at ±(2k+1) from the centre.
func halfBand(pairs int, beta float64) []float32 {
	h := make([]float64, pairs)
	half := float64(2 * pairs)
	sum := 0.5
	for k := range h {
		n := float64(2*k + 1)
		x := n / half
		w := bessel0(beta*math.Sqrt(1-x*x)) / bessel0(beta)
		h[k] = math.Sin(math.Pi*n/2) / (math.Pi * n) * w
		sum += 2 * h[k]
	}
	out := make([]float32, pairs)
	for k := range h {
		out[k] = float32(h[k] / sum)
	}
	return out
}

// bessel0 is the modified Bessel function of the first kind, order 0.
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
