package voice

import "math"

// f0Hist is a histogram of F0 on a log scale, for quantiles without
// keeping every value: bins of 1/100 semitone from 50 Hz up.
type f0Hist struct {
	bins  [f0Bins]uint32
	n     int
	sum   float64
	sumSq float64
}

const (
	f0HistLow  = 50.0
	f0Bins     = 4800 // 48 semitones: 50 Hz to 800 Hz
	f0BinPerST = 100
)

func f0Bin(f float64) int {
	b := int(12 * f0BinPerST * math.Log2(f/f0HistLow))
	return min(max(b, 0), f0Bins-1)
}

func (h *f0Hist) add(f float64) {
	h.bins[f0Bin(f)]++
	h.n++
	h.sum += f
	h.sumSq += f * f
}

func (h *f0Hist) mean() float64 { return ratio(h.sum, h.n) }

// sd returns the sample standard deviation.
func (h *f0Hist) sd() float64 {
	if h.n < 2 {
		return math.NaN()
	}
	m := h.sum / float64(h.n)
	v := (h.sumSq - float64(h.n)*m*m) / float64(h.n-1)
	return math.Sqrt(max(v, 0))
}

// quantile returns the q-quantile, interpolating within a bin.
func (h *f0Hist) quantile(q float64) float64 {
	if h.n == 0 {
		return math.NaN()
	}
	target := q * float64(h.n)
	var cum float64
	for i, c := range h.bins {
		if c == 0 {
			continue
		}
		if cum+float64(c) >= target {
			frac := (target - cum) / float64(c)
			st := (float64(i) + frac) / f0BinPerST
			return f0HistLow * math.Exp2(st/12)
		}
		cum += float64(c)
	}
	return f0HistLow * math.Exp2(float64(f0Bins)/f0BinPerST/12)
}
