package voice

import "math"

// F0 tracking. The method follows Praat's To Pitch (cc) (Boersma 1993):
// candidates are maxima of the normalised cross-correlation over lags from
// the ceiling to the floor, each with a strength; a Viterbi path through
// the candidates with Praat's octave, octave-jump and voiced/unvoiced costs
// picks the track. To be fast it finds candidates on a 2 kHz copy of the
// signal (26 lags of a 27-sample window instead of 104 lags of 104
// samples) and measures only the three most promising ones at 8 kHz, on
// three lags each, with Praat's window. The strengths the path finder sees
// are therefore Praat's, which keeps the voicing and octave decisions close
// to Praat's, and the period comes from the 8 kHz measurement.

const (
	// 2 kHz search: the window is one period of the floor (13.5 ms); lags
	// cover the ceiling to the floor, plus margins for peak picking and
	// interpolation.
	win2    = 27
	lagLo2  = 3
	lagHi2  = 30 // computed lags lagLo2..lagHi2 (a multiple of four of them)
	lagMin2 = 4  // 500 Hz
	lagMax2 = 27 // 74 Hz

	// 8 kHz measurement: Praat's window of 104 samples (13 ms) starting
	// 13.3 ms before the frame centre.
	win8   = 104
	start8 = 107
	lagLo8 = 13  // 615 Hz
	lagHi8 = 115 // 70 Hz

	// maxCand is the number of candidates measured at 8 kHz per frame.
	maxCand = 3
	// maxPeaks bounds the correlation maxima considered at 2 kHz.
	maxPeaks = 12
)

// pitchParams are the path-finder settings: Praat's defaults for To Pitch
// (cc) except where noted.
var pitchParams = struct {
	silence, voicing, octave, octaveJump, voicedUnvoiced float32
	// preselectOctave is the octave cost used to rank the 2 kHz maxima
	// when choosing which to measure at 8 kHz.
	preselectOctave float32
}{
	silence:         0.03,
	voicing:         0.45,
	octave:          0.03, // Praat: 0.01; see the package documentation
	octaveJump:      0.35,
	voicedUnvoiced:  0.14,
	preselectOctave: 0.02,
}

// voicingNoiseRatio is the power ratio (6 dB) a frame must stand above
// the steady noise's mean before its voicing strengths are corrected for
// the noise's share: the correction is then at most 4/3, so a frame of
// noise alone, whose correlation peaks stay far under the threshold, is
// not lifted into voicing. (3 dB, a correction up to 2, was tried: more
// voicing in steady noise, but a periodic hum's weak frames were lifted
// too, and hum 20 dB put a calm second more at the alert level.)
const voicingNoiseRatio = 4

// pathFrame is one frame in the path finder: the raw measurements and the
// candidates with their Viterbi scores.
type pathFrame struct {
	intensity float32 // dB
	power     float32 // mean square behind intensity
	balance   float32 // dB, high band minus low band
	energy    float32 // mean square over 20 ms
	low       float32 // mean square over 20 ms below 1 kHz (the 2 kHz copy)
	rel       float32 // local peak relative to the running global peak
	gain      float32 // the strengths' correction for steady noise (1: none)
	n         int     // candidates; index 0 is "unvoiced"
	freq      [maxCand + 1]float32
	lf        [maxCand + 1]float32 // log2 of freq
	strength  [maxCand + 1]float32
	delta     [maxCand + 1]float32 // best path score ending here
	psi       [maxCand + 1]int8    // best predecessor
}

// lagLog2 returns log2(ceiling/f) for a 2 kHz lag, by linear
// interpolation in a table of the integer lags (the preselection's octave
// term needs no more than 0.001).
func lagLog2(lag float32) float32 {
	i := int(lag)
	if i < 0 || i+1 >= len(lagLog2Table) {
		return fastLog2(CeilingHz * lag / 2000)
	}
	return lagLog2Table[i] + (lag-float32(i))*(lagLog2Table[i+1]-lagLog2Table[i])
}

var lagLog2Table = func() [lagHi2 + 2]float32 {
	var t [lagHi2 + 2]float32
	for i := 1; i < len(t); i++ {
		t[i] = float32(math.Log2(CeilingHz * float64(i) / 2000))
	}
	t[0] = t[1]
	return t
}()

// peak2 is a correlation maximum of the 2 kHz signal.
type peak2 struct{ lag, strength, score float32 }

// candidates finds the F0 candidates of frame k.
func (a *Analyzer) candidates(k int64, pf *pathFrame) {
	p := &pitchParams
	pf.n = 1
	pf.freq[0], pf.strength[0] = 0, 0
	pf.gain = 1
	// Frames much quieter than the loudest so far are unvoiced whatever
	// their correlation: the unvoiced candidate would score above 1.
	if pf.rel < p.silence/(1+p.voicing) {
		return
	}

	// Normalised cross-correlation at 2 kHz, lags lagLo2..lagHi2.
	var r [lagHi2 + 2]float32
	m0 := 20*k - 17
	x := a.y.span(m0, win2)
	ex := a.y.energy(m0, win2)
	if ex <= 1e-12 {
		return
	}
	seg := a.y.span(m0+lagLo2, win2+lagHi2-lagLo2+1)
	for L := lagLo2; L <= lagHi2; L += 4 {
		p0, p1, p2, p3 := dot4(x, seg[L-lagLo2:])
		for j, pj := range [4]float32{p0, p1, p2, p3} {
			ey := a.y.energy(m0+int64(L+j), win2)
			if d := ex * ey; d > 0 {
				r[L+j] = pj / sqrt32(d)
			}
		}
	}

	// In steady noise a periodic signal's correlation peak is scaled by
	// its share of the frame's power, S/(S+N): a fixed voicing threshold
	// drops real speech. Where the noise is measured and steady, and the
	// frame stands at least voicingNoiseRatio above its mean power, the
	// path finder sees the strengths divided by that share (at most 1),
	// and the search floor is lowered by it; nearer the noise nothing
	// changes, so noise alone stays unvoiced.
	pf.gain = 1
	if np, ok := a.feat.voicingNoise(); ok && pf.power >= voicingNoiseRatio*np {
		pf.gain = 1 / (1 - np/pf.power)
	}

	// Maxima above half the voicing threshold, interpolated.
	floor := 0.5 * p.voicing / pf.gain
	var peaks [maxPeaks]peak2
	np := 0
	for L := lagMin2; L <= lagMax2 && np < maxPeaks; L++ {
		if !(r[L] > floor && r[L] > r[L-1] && r[L] >= r[L+1]) {
			continue
		}
		pos, str := peakSinc(r[lagLo2:lagHi2+1], L-lagLo2, 1)
		lag := pos + lagLo2
		if lag < lagMin2 {
			continue // above the ceiling
		}
		if str > 1 {
			str = 1 / str
		}
		peaks[np] = peak2{lag, str, str - p.preselectOctave*lagLog2(lag)}
		np++
	}

	// Measure the best few at 8 kHz.
	for range min(np, maxCand) {
		bi := 0
		for i := 1; i < np; i++ {
			if peaks[i].score > peaks[bi].score {
				bi = i
			}
		}
		lag8, str := a.measure8(k, 4*peaks[bi].lag)
		peaks[bi].score = -10
		if lag8 > 0 {
			pf.freq[pf.n] = SampleRate / lag8
			pf.lf[pf.n] = fastLog2(pf.freq[pf.n])
			pf.strength[pf.n] = str
			pf.n++
		}
	}
}

// measure8 measures the correlation of frame k at 8 kHz near lag (in 8 kHz
// samples): it evaluates three integer lags, moves towards the maximum if
// it lies on an edge, and interpolates. It returns the period and the peak
// correlation, or 0, 0 if the period falls outside the search range.
func (a *Analyzer) measure8(k int64, lag float32) (period, strength float32) {
	start := k*hop + hop/2 - start8
	x := a.x.span(start, win8)
	ex := a.x.energy(start, win8)
	L := int(lag+0.5) - 1 // the three lags are L, L+1, L+2
	var r [3]float32
	for range 3 {
		if L < lagLo8 || L+2 > lagHi8 {
			return 0, 0
		}
		p0, p1, p2 := dot3(x, a.x.span(start+int64(L), win8+2))
		for j, pj := range [3]float32{p0, p1, p2} {
			r[j] = 0
			if d := ex * a.x.energy(start+int64(L+j), win8); d > 0 {
				r[j] = pj / sqrt32(d)
			}
		}
		switch {
		case r[0] > r[1] && r[0] >= r[2]:
			L--
			continue
		case r[2] > r[1] && r[2] > r[0]:
			L++
			continue
		}
		break
	}
	period = float32(L + 1)
	strength = r[1]
	dr := 0.5 * (r[2] - r[0])
	if d2r := 2*r[1] - r[0] - r[2]; d2r > 0 {
		period += dr / d2r
		strength += 0.5 * dr * dr / d2r
	}
	if strength > 1 {
		strength = 1 / strength
	}
	return period, strength
}

// Correlation peaks are narrow compared with the lag step: harmonics near
// the Nyquist frequency change phase by almost half a cycle from one lag to
// the next, so a parabola through three lags underestimates the height of
// a peak that falls between them (and with it the strength and the HNR).
// peakSinc therefore interpolates the correlation between lags with a
// windowed sinc (as Praat does, with fewer taps) and closes in on the
// maximum with two parabolic steps on the interpolated function.
const (
	sincTaps   = 4  // each side
	sincPhases = 64 // interpolation positions per lag
)

// sincKernel[p][j] weighs the lag L-sincTaps+1+j for the position L+p/64.
var sincKernel = func() [sincPhases][2 * sincTaps]float32 {
	var k [sincPhases][2 * sincTaps]float32
	for p := range sincPhases {
		u := float64(p) / sincPhases
		var sum float64
		for j := range 2 * sincTaps {
			x := u - float64(j-sincTaps+1) // distance from tap j
			w := math.Cos(math.Pi * x / (2 * (sincTaps + 0.5)))
			v := sinc(x) * w * w
			k[p][j] = float32(v)
			sum += v
		}
		for j := range k[p] {
			k[p][j] /= float32(sum)
		}
	}
	return k
}()

func sinc(x float64) float64 {
	if x == 0 {
		return 1
	}
	return math.Sin(math.Pi*x) / (math.Pi * x)
}

// interp returns r interpolated at fractional index pos (to 1/64); taps
// beyond the ends of r repeat the end values.
func interp(r []float32, pos float32) float32 {
	L := int(pos)
	p := int((pos-float32(L))*sincPhases + 0.5)
	if p == sincPhases {
		L, p = L+1, 0
	}
	if p == 0 {
		return r[min(max(L, 0), len(r)-1)]
	}
	var v float32
	base := L - sincTaps + 1
	if base >= 0 && base+2*sincTaps <= len(r) {
		for j, kj := range sincKernel[p] {
			v += kj * r[base+j]
		}
		return v
	}
	for j, kj := range sincKernel[p] {
		v += kj * r[min(max(base+j, 0), len(r)-1)]
	}
	return v
}

// peakSinc refines the local maximum of r at index i (0 < i < len(r)-1),
// in one or two steps (the second narrows the first's 1/8 lag to 1/32),
// and returns its fractional index and height.
func peakSinc(r []float32, i, steps int) (pos, height float32) {
	pos, height = float32(i), r[i]
	if d2 := 2*r[i] - r[i-1] - r[i+1]; d2 > 0 {
		pos += min(max(0.5*(r[i+1]-r[i-1])/d2, -0.5), 0.5)
	}
	h := float32(0.125)
	for range steps {
		a, b, c := interp(r, pos-h), interp(r, pos), interp(r, pos+h)
		height = b
		if d2 := 2*b - a - c; d2 > 0 {
			d := min(max(0.5*(c-a)/d2, -1), 1)
			pos += d * h
			height = b + 0.25*(c-a)*d
		}
		h /= 4
	}
	return pos, height
}

// step adds frame k to the Viterbi trellis, with Praat's costs.
func (a *Analyzer) step(k int64, pf *pathFrame) {
	p := &pitchParams
	uv := 2 - pf.rel/(p.silence/(1+p.voicing))
	uv = max(uv, 0) + p.voicing
	var local [maxCand + 1]float32
	local[0] = uv
	log2Ceiling := fastLog2(CeilingHz)
	for i := 1; i < pf.n; i++ {
		local[i] = min(pf.strength[i]*pf.gain, 1) - p.octave*(log2Ceiling-pf.lf[i])
	}
	if k == 0 {
		for i := range pf.n {
			pf.delta[i], pf.psi[i] = local[i], 0
		}
		return
	}
	pp := &a.path[(k-1)&(pathRing-1)]
	top := float32(-1e30)
	for i := range pf.n {
		best, arg := float32(-1e30), 0
		for j := range pp.n {
			var cost float32
			switch {
			case i == 0 && j == 0:
			case i == 0 || j == 0:
				cost = p.voicedUnvoiced
			default:
				d := pf.lf[i] - pp.lf[j]
				cost = p.octaveJump * max(d, -d)
			}
			if v := pp.delta[j] - cost; v > best {
				best, arg = v, j
			}
		}
		pf.delta[i], pf.psi[i] = best+local[i], int8(arg)
		top = max(top, pf.delta[i])
	}
	// Only differences matter; keep the numbers small.
	for i := range pf.n {
		pf.delta[i] -= top
	}
}

// finalize decides frame d by tracing the best path back from frame last
// and passes it on.
func (a *Analyzer) finalize(d, last int64) {
	pl := &a.path[last&(pathRing-1)]
	best := 0
	for i := 1; i < pl.n; i++ {
		if pl.delta[i] > pl.delta[best] {
			best = i
		}
	}
	for f := last; f > d; f-- {
		best = int(a.path[f&(pathRing-1)].psi[best])
	}
	a.decided = d + 1
	a.feat.frame(a, d, &a.path[d&(pathRing-1)], best)
}

// precise8 measures the period and strength of frame d at 8 kHz around a
// period found by measure8, on eight lags with sinc interpolation, for the
// accuracy the F0, HNR and the comparison with Praat need.
func (a *Analyzer) precise8(d int64, period float32) (float32, float32) {
	start := d*hop + hop/2 - start8
	x := a.x.span(start, win8)
	ex := a.x.energy(start, win8)
	L0 := int(period) - 3 // lags L0..L0+7; the peak lies between L0+3 and L0+4
	if L0 < 2 || L0+7 > lagHi8+4 {
		return period, 0
	}
	var r [8]float32
	for g := 0; g < 8; g += 4 {
		p0, p1, p2, p3 := dot4(x, a.x.span(start+int64(L0+g), win8+3))
		for j, pj := range [4]float32{p0, p1, p2, p3} {
			if den := ex * a.x.energy(start+int64(L0+g+j), win8); den > 0 {
				r[g+j] = pj / sqrt32(den)
			}
		}
	}
	i := 3
	if r[4] > r[3] {
		i = 4
	}
	pos, h := peakSinc(r[:], i, 2)
	if h > 1 {
		h = 1 / h
	}
	return float32(L0) + pos, h
}

func sqrt32(x float32) float32 { return float32(math.Sqrt(float64(x))) }
