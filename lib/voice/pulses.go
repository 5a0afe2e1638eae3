package voice

import "math"

// Glottal pulses and the perturbation measures built on them. The pulses
// are placed as by Praat's To PointProcess (cc): the first pulse of a
// voiced stretch at the absolute extremum of the waveform within one
// period of the frame centre, each next one where one period of waveform
// around the last pulse correlates best with the waveform ahead, searched
// near the period the F0 track gives (Praat searches 0.8–1.25 periods; the
// track is accurate enough to start at one period and climb to the
// maximum). Jitter and shimmer then follow Praat's voice-report
// definitions with its settings: periods from 0.1 ms to 20 ms, adjacent
// periods within a factor 1.3, adjacent amplitudes within a factor 1.6,
// amplitudes as the Hann-windowed RMS over ±0.2 periods around each pulse.

const (
	pulseMinPeriod = 0.0001 * SampleRate // samples
	pulseMaxPeriod = 0.02 * SampleRate
	periodFactor   = 1.3
	ampFactor      = 1.6
)

// Perturbation accumulates jitter and shimmer over a stretch of pulses.
// The zero value is empty. Values derived from it follow Praat's
// definitions; see the methods.
type Perturbation struct {
	jSum, rapSum, perSum float64
	jN, rapN, perN       int
	sSum, apqSum, ampSum float64 // ampSum excludes the last amplitude, as Praat's mean does
	sN, apqN, ampN       int
	lastAmp              float64
	// Pulses is the number of glottal pulses placed.
	Pulses int
}

// Add merges o into p (the pulses of o come after those of p).
func (p *Perturbation) Add(o *Perturbation) {
	p.jSum += o.jSum
	p.rapSum += o.rapSum
	p.perSum += o.perSum
	p.jN += o.jN
	p.rapN += o.rapN
	p.perN += o.perN
	p.sSum += o.sSum
	p.apqSum += o.apqSum
	p.sN += o.sN
	p.apqN += o.apqN
	if o.ampN > 0 {
		// p's last amplitude is no longer the last one.
		if p.ampN > 0 {
			p.ampSum += p.lastAmp
		}
		p.ampSum += o.ampSum
		p.ampN += o.ampN
		p.lastAmp = o.lastAmp
	}
	p.Pulses += o.Pulses
}

// meanPeriod returns the mean period in samples (NaN if none).
func (p *Perturbation) meanPeriod() float64 { return ratio(p.perSum, p.perN) }

// JitterLocal returns Praat's jitter (local) in percent: the mean absolute
// difference of consecutive periods over the mean period; NaN if there are
// too few periods.
func (p *Perturbation) JitterLocal() float64 {
	return 100 * ratio(p.jSum, p.jN) / p.meanPeriod()
}

// JitterRAP returns Praat's jitter (rap) in percent: the mean absolute
// difference of a period and the average of it and its neighbours, over
// the mean period.
func (p *Perturbation) JitterRAP() float64 {
	return 100 * ratio(p.rapSum, p.rapN) / p.meanPeriod()
}

// meanAmp is the mean amplitude over all points but the last, Praat's
// shimmer denominator.
func (p *Perturbation) meanAmp() float64 {
	if p.ampN < 2 {
		return math.NaN()
	}
	return p.ampSum / float64(p.ampN-1)
}

// Reset empties p.
func (p *Perturbation) Reset() { *p = Perturbation{} }

// ShimmerLocal returns Praat's shimmer (local) in percent: the mean
// absolute difference of consecutive amplitudes over the mean amplitude.
func (p *Perturbation) ShimmerLocal() float64 {
	return 100 * ratio(p.sSum, p.sN) / p.meanAmp()
}

// ShimmerAPQ3 returns Praat's shimmer (apq3) in percent.
func (p *Perturbation) ShimmerAPQ3() float64 {
	return 100 * ratio(p.apqSum, p.apqN) / p.meanAmp()
}

func ratio(s float64, n int) float64 {
	if n == 0 {
		return math.NaN()
	}
	return s / float64(n)
}

// pulseTracker places pulses on the voiced frames of one channel and feeds
// Perturbation accumulators. Its history runs across voiced stretches, as
// Praat's point process does: an interval that spans a pause is simply
// longer than the longest period and drops out.
type pulseTracker struct {
	active bool       // a chain of pulses is being followed
	t      [4]float64 // last four pulse times (samples), newest last
	n      int        // pulses in t
	at     [3]float64 // last three amplitude points: times
	av     [3]float64 // and values
	an     int
}

// frame places the pulses of voiced frame d with period T (samples), up to
// the end of the frame, and adds their measures to the accumulators.
func (p *pulseTracker) frame(a *Analyzer, d int64, T float64, acc1, acc2 *Perturbation) {
	end := float64(d*hop + hop)
	c := float64(d*hop + hop/2)
	if !p.active || p.t[p.n-1] < float64(d*hop)-1.25*T {
		// Start a new chain at the extremum within half a period of the
		// frame centre (a chain continues across a short unvoiced gap).
		t, ok := a.extremum(c-T/2, c+T/2)
		if !ok {
			return
		}
		p.active = true
		p.add(a, t, acc1, acc2)
	}
	for {
		last := p.t[p.n-1]
		if last+T > end {
			return
		}
		lag, r, pk := a.bestPeriod(last, T)
		if lag == 0 {
			p.active = false
			return
		}
		if r > 0.3 && pk > 0.01*a.gMax {
			p.add(a, last+lag, acc1, acc2)
		} else {
			// Follow the waveform without placing a pulse here.
			p.t[p.n-1] = last + lag
		}
	}
}

func inRange(x float64) bool { return x >= pulseMinPeriod && x <= pulseMaxPeriod }

func factor(a, b float64) float64 {
	if a > b {
		return a / b
	}
	return b / a
}

// add records a pulse at time t and updates the measures that it
// completes.
func (p *pulseTracker) add(a *Analyzer, t float64, acc1, acc2 *Perturbation) {
	if p.n == len(p.t) {
		copy(p.t[:], p.t[1:])
		p.n--
	}
	p.t[p.n] = t
	p.n++
	acc1.Pulses++
	acc2.Pulses++
	if p.n < 3 {
		return
	}
	tt := p.t[p.n-3 : p.n]
	P2, P3 := tt[1]-tt[0], tt[2]-tt[1] // P3 ends at the new pulse
	ok23 := inRange(P2) && inRange(P3) && factor(P2, P3) <= periodFactor
	if ok23 {
		d := math.Abs(P2 - P3)
		acc1.jSum += d
		acc2.jSum += d
		acc1.jN++
		acc2.jN++
		if amp := a.hannRMS(tt[1], 0.2*P2, 0.2*P3); amp > 0 {
			p.amplitude(tt[1], amp, acc1, acc2)
		}
	}
	// P2 now has both neighbours: it is a period unless it differs too
	// much from both (the first interval has no predecessor).
	P1 := math.NaN()
	if p.n == 4 {
		P1 = p.t[1] - p.t[0]
	}
	if inRange(P2) && !(factor(P1, P2) > periodFactor && factor(P2, P3) > periodFactor) {
		acc1.perSum += P2
		acc2.perSum += P2
		acc1.perN++
		acc2.perN++
	}
	if p.n == 4 && ok23 && inRange(P1) && factor(P1, P2) <= periodFactor {
		d := math.Abs(P2 - (P1+P2+P3)/3)
		acc1.rapSum += d
		acc2.rapSum += d
		acc1.rapN++
		acc2.rapN++
	}
}

// amplitude records the amplitude of the pulse at t and updates shimmer.
func (p *pulseTracker) amplitude(t, v float64, acc1, acc2 *Perturbation) {
	if p.an == len(p.at) {
		copy(p.at[:], p.at[1:])
		copy(p.av[:], p.av[1:])
		p.an--
	}
	p.at[p.an], p.av[p.an] = t, v
	p.an++
	for _, acc := range [2]*Perturbation{acc1, acc2} {
		if acc.ampN > 0 {
			acc.ampSum += acc.lastAmp
		}
		acc.lastAmp = v
		acc.ampN++
	}
	if p.an < 2 {
		return
	}
	i := p.an - 1
	okB := inRange(p.at[i]-p.at[i-1]) && factor(p.av[i], p.av[i-1]) <= ampFactor
	if okB {
		d := math.Abs(p.av[i] - p.av[i-1])
		acc1.sSum += d
		acc2.sSum += d
		acc1.sN++
		acc2.sN++
	}
	if p.an == 3 && okB && inRange(p.at[1]-p.at[0]) && factor(p.av[1], p.av[0]) <= ampFactor {
		d := math.Abs(p.av[1] - (p.av[0]+p.av[1]+p.av[2])/3)
		acc1.apqSum += d
		acc2.apqSum += d
		acc1.apqN++
		acc2.apqN++
	}
}

// extremum returns the time of the absolute extremum of the signal between
// sample times lo and hi, refined by a parabola, as Praat's
// Sound_findExtremum.
func (a *Analyzer) extremum(lo, hi float64) (float64, bool) {
	i0, i1 := int64(math.Ceil(lo)), int64(math.Floor(hi))
	if i1-i0 < 2 {
		return 0, false
	}
	x := a.x.span(i0, int(i1-i0+1))
	bi, bv := 0, uint32(0)
	for i, v := range x {
		// |v| compared on its bits (see processHop).
		if m := math.Float32bits(v) & 0x7fffffff; m > bv {
			bi, bv = i, m
		}
	}
	if bv == 0 {
		return 0, false
	}
	t := float64(i0) + float64(bi)
	if bi > 0 && bi < len(x)-1 {
		l, m, r := x[bi-1], x[bi], x[bi+1]
		if d := 2*m - l - r; d != 0 {
			t += float64(0.5 * (r - l) / d)
		}
	}
	return t, true
}

// bestPeriod finds the lag near T (samples) at which one period of signal
// centred on time t correlates best with the signal ahead. It returns the
// interpolated lag, the correlation there and the peak magnitude in the
// matched window; lag 0 if it climbs out of 0.8–1.25 T.
func (a *Analyzer) bestPeriod(t, T float64) (lag float64, r, peak float32) {
	w := int(T + 0.5)
	s := int64(math.Round(t - T/2))
	x := a.x.span(s, w)
	ex := a.x.energy(s, w)
	lo, hi := int(math.Ceil(0.8*T)), int(math.Floor(1.25*T))
	L := int(T+0.5) - 1
	var c [3]float32
	for {
		if L < lo || L+2 > hi {
			return 0, 0, 0
		}
		p0, p1, p2 := dot3(x, a.x.span(s+int64(L), w+2))
		for j, pj := range [3]float32{p0, p1, p2} {
			c[j] = 0
			if d := ex * a.x.energy(s+int64(L+j), w); d > 0 {
				c[j] = pj / sqrt32(d)
			}
		}
		if c[0] > c[1] && c[0] >= c[2] {
			L--
			continue
		}
		if c[2] > c[1] && c[2] > c[0] {
			L++
			continue
		}
		break
	}
	lag = float64(L + 1)
	r = c[1]
	if d2 := 2*c[1] - c[0] - c[2]; d2 > 0 {
		dr := 0.5 * (c[2] - c[0])
		lag += float64(dr / d2)
		r += 0.5 * dr * dr / d2
	}
	var pk uint32
	for _, v := range a.x.span(s+int64(L+1), w) {
		pk = max(pk, math.Float32bits(v)&0x7fffffff)
	}
	peak = math.Float32frombits(pk)
	return lag, r, peak
}

// hannRMS is Praat's Hann-windowed RMS around time t with the given
// half-widths to the left and right (samples).
func (a *Analyzer) hannRMS(t, left, right float64) float64 {
	i0, i1 := int64(math.Ceil(t-left)), int64(math.Floor(t+right))
	if i1-i0 < 2 {
		return 0
	}
	var sx, sw float64
	il, ir := hannSteps/left, hannSteps/right
	for i, v := range a.x.span(i0, int(i1-i0+1)) {
		u := float64(i0+int64(i)) - t
		if u < 0 {
			u *= -il
		} else {
			u *= ir
		}
		j := int(u)
		if j >= hannSteps {
			continue // the window is zero there
		}
		w := hannTable[j] + (u-float64(j))*(hannTable[j+1]-hannTable[j])
		sx += float64(v) * float64(v) * w * w
		sw += w * w
	}
	return math.Sqrt(sx / sw)
}

// hannTable holds the half Hann window 0.5+0.5cos(πx) for x from 0 to 1
// in hannSteps steps (linear interpolation between them is good to 2e-5).
const hannSteps = 256

var hannTable = func() [hannSteps + 1]float64 {
	var t [hannSteps + 1]float64
	for i := range t {
		t[i] = 0.5 + 0.5*math.Cos(math.Pi*float64(i)/hannSteps)
	}
	return t
}()
