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
func (h *f0Hist) quantile(q float64) float64 { return F0Quantile(h.bins[:], uint64(h.n), q, 1) }

// F0Quantile returns the q-quantile of an F0 histogram holding n values,
// interpolating within a bin; NaN when it is empty. Bin i spans binWidth
// of the voice analysis's own bins (F0BinsPerSemitone a semitone from
// F0HistLowHz): 1 for the analysis's histogram, more for a coarser copy
// of it (lib/analysis's per-second sums).
func F0Quantile(bins []uint32, n uint64, q, binWidth float64) float64 {
	if n == 0 {
		return math.NaN()
	}
	target := q * float64(n)
	var cum float64
	for i, c := range bins {
		if c == 0 {
			continue
		}
		if cum+float64(c) >= target {
			frac := (target - cum) / float64(c)
			return F0BinHz((float64(i)+frac)*binWidth, f0BinPerST)
		}
		cum += float64(c)
	}
	return F0BinHz(float64(len(bins))*binWidth, f0BinPerST)
}
