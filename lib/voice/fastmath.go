package voice

import "math"

// Logarithms are the one transcendental function the analysis needs per
// frame (path costs, semitones, decibels); fastLog2 replaces math.Log2 in
// those places with a table of log2(1+i/1024) and linear interpolation:
// the interpolation is good to 2·10⁻⁷, the float32 result to 4·10⁻⁶ for
// values up to 40 (0.00005 semitone, 0.00001 dB).
const logTableBits = 10

var logTable = func() [1<<logTableBits + 1]float32 {
	var t [1<<logTableBits + 1]float32
	for i := range t {
		t[i] = float32(math.Log2(1 + float64(i)/(1<<logTableBits)))
	}
	return t
}()

// fastLog2 returns log2(x) for finite x > 0 (and garbage otherwise).
func fastLog2(x float32) float32 {
	b := math.Float32bits(x)
	e := int32(b>>23&0xff) - 127
	m := b & 0x7fffff // mantissa bits: x = 2^e · (1 + m/2^23)
	i := m >> (23 - logTableBits)
	f := float32(m&(1<<(23-logTableBits)-1)) * (1.0 / (1 << (23 - logTableBits)))
	lo, hi := logTable[i], logTable[i+1]
	return float32(e) + lo + f*(hi-lo)
}

// fastDB returns 10·log10(x) for x > 0.
func fastDB(x float32) float32 { return fastLog2(x) * (10 * math.Ln2 / math.Ln10) }
