package voice

import (
	"math"

	"github.com/calmline/calmline/lib/audio"
)

// Analysis constants. The analysis runs at 8 kHz with a 10 ms hop; every
// setting that has a Praat counterpart uses Praat's value (see
// shared/tools/praat/features.praat), so that the figures compare.
const (
	// SampleRate is the rate the analysis works at, in Hz.
	SampleRate = 8000
	// FrameRate is the number of frames per second (a 10 ms hop).
	FrameRate = 100

	hop = SampleRate / FrameRate // 80 samples
	sub = hop / 2                // 5 ms sub-blocks for energy bookkeeping

	// FloorHz and CeilingHz bound the F0 search.
	FloorHz   = 75.0
	CeilingHz = 500.0

	// lookahead is the number of hops a frame waits for the samples its
	// analysis windows reach into (the 85 ms intensity window is the
	// longest: ±42.7 ms).
	lookahead = 4
	// pathLag is the number of frames the path finder looks ahead before
	// it decides a frame; the decision is then nearly always that of the
	// whole-file optimum.
	pathLag = 12
	// Latency is how far the frame output trails the input, in frames.
	Latency = lookahead + pathLag

	// intensityBlocks is the number of 5 ms sub-blocks under the 80 ms
	// intensity window.
	intensityBlocks = 16
	sbRing          = 64 // sub-block statistics kept (a power of two)
	pathRing        = 32 // path-finder frames kept (a power of two > pathLag)

	// Buffer sizes (samples). The 8 kHz buffer must hold the oldest
	// undecided frame's windows and the newest hop.
	pre8, cap8 = 512, 4096
	pre4, cap4 = 64, 1024
	pre2, cap2 = 128, 1024
)

// intensityWeights are the weights of the sub-blocks under Praat's
// intensity window for a 75 Hz minimum pitch (a Kaiser-20 window 6.4/75 s
// long).
var intensityWeights = [intensityBlocks]float32(kaiserBlocks(intensityBlocks, 3.2/FloorHz*SampleRate))

// kaiserBlocks returns the weights of n sub-blocks centred on a sub-block
// boundary under Praat's intensity window (Kaiser, β = 2π²+0.5) of the
// given half-width in samples: each weight is the window summed over its
// sub-block's samples, and the weights sum to 1.
func kaiserBlocks(n int, half float64) []float32 {
	const beta = 2*math.Pi*math.Pi + 0.5
	w := make([]float64, n)
	var total float64
	for b := range w {
		for i := range sub {
			t := float64((b-n/2)*sub+i) + 0.5
			w[b] += audio.Kaiser(t/half, beta)
		}
		total += w[b]
	}
	out := make([]float32, n)
	for b := range w {
		out[b] = float32(w[b] / total)
	}
	return out
}

// Analyzer extracts the per-frame features of one channel from a stream of
// 8 kHz samples. Push may be given chunks of any size; frames come out, in
// order, through the callback given to NewAnalyzer, Latency frames after
// their samples went in. Flush ends the stream. An Analyzer does not
// allocate once constructed, whatever the chunk sizes.
type Analyzer struct {
	onFrame  func(*Frame)
	onSecond func(*Window)

	x  signal // 8 kHz input, scaled to ±1
	y1 signal // 4 kHz
	y  signal // 2 kHz
	n  int64  // samples pushed
	c1 int64  // next stage-1 centre (8 kHz index, even)
	m2 int64  // next 2 kHz sample

	hops    int64 // hops processed
	sbE     [sbRing]float32
	sbS     [sbRing]float32
	sbP     [sbRing]float32
	gPeak   float32 // running peak: held peakHold sub-blocks, then decays
	gAge    int32   // sub-blocks since gPeak was set
	gMax    float32 // the loudest sub-block peak so far (Praat's global peak, for the pulses)
	frames  int64   // frames analysed (entered the path finder)
	decided int64   // frames finalised
	path    [pathRing]pathFrame
	limit   int64 // frames to analyse; set by Flush
	flushed bool

	feat featureState
}

// NewAnalyzer returns an Analyzer that calls onFrame (if not nil) for every
// finished frame and onSecond (if not nil) for every finished second (100
// frames; the last one may be shorter). The arguments are only valid
// during the call.
func NewAnalyzer(onFrame func(*Frame), onSecond func(*Window)) *Analyzer {
	a := &Analyzer{
		onFrame:  onFrame,
		onSecond: onSecond,
		x:        newSignal(pre8, cap8, true),
		y1:       newSignal(pre4, cap4, false),
		y:        newSignal(pre2, cap2, true),
	}
	a.Reset()
	return a
}

// Reset prepares the Analyzer for a new stream, keeping its buffers.
func (a *Analyzer) Reset() {
	a.x.reset(pre8)
	a.y1.reset(pre4)
	a.y.reset(pre2)
	a.n, a.c1, a.m2, a.hops = 0, 0, 0, 0
	a.sbE, a.sbS, a.sbP = [sbRing]float32{}, [sbRing]float32{}, [sbRing]float32{}
	a.gPeak, a.gAge, a.gMax = 0, 0, 0
	a.frames, a.decided = 0, 0
	a.limit = math.MaxInt64
	a.flushed = false
	a.feat.reset()
}

// Samples returns the number of samples pushed so far.
func (a *Analyzer) Samples() int64 { return a.n }

// Frames returns the number of frames passed on so far.
func (a *Analyzer) Frames() int64 { return a.decided }

// Total returns the window over all frames passed on so far, excluding the
// second in progress.
func (a *Analyzer) Total() *Window { return &a.feat.total }

// keepFrom returns the oldest 8 kHz sample index still needed: the
// correlation windows of the oldest undecided frame and the glottal-pulse
// search behind it.
func (a *Analyzer) keepFrom() int64 {
	return a.decided*hop - 4*hop
}

// Push analyses more samples.
func (a *Analyzer) Push(samples []int16) {
	if a.flushed {
		return
	}
	for len(samples) > 0 {
		free := a.x.room(hop, a.keepFrom())
		n := min(free, len(samples))
		dst := a.x.extend(n)
		for i, s := range samples[:n] {
			dst[i] = float32(s) * (1.0 / 32768)
		}
		a.x.commit()
		samples = samples[n:]
		a.n += int64(n)
		for a.x.end() >= (a.hops+1)*hop {
			a.processHop()
		}
	}
}

// Flush analyses what remains: it pads the stream with silence for the
// analysis windows and decides the last frames. Frames cover whole hops; a
// trailing part of a hop is not a frame. After Flush the Analyzer accepts
// no more samples until Reset.
func (a *Analyzer) Flush() {
	if a.flushed {
		return
	}
	a.flushed = true
	a.limit = a.n / hop
	for a.frames < a.limit {
		a.x.room(hop, a.keepFrom())
		clear(a.x.extend(hop))
		a.x.commit()
		for a.x.end() >= (a.hops+1)*hop {
			a.processHop()
		}
	}
	for a.decided < a.frames {
		a.finalize(a.decided, a.frames-1)
	}
	a.feat.flush(a)
}

// processHop takes in hop a.hops, whose samples are all present.
func (a *Analyzer) processHop() {
	h := a.hops
	a.hops++
	for b := 2 * h; b < 2*h+2; b++ {
		s := a.x.span(b*sub, sub)
		// Peak magnitude on the bits: |v| is the float with the sign bit
		// cleared, and non-negative floats order like their bit
		// patterns. (Float comparisons with branches mispredict on
		// speech, and the max builtin must order NaNs.)
		var sum float32
		var pk uint32
		for _, v := range s {
			sum += v
			pk = max(pk, math.Float32bits(v)&0x7fffffff)
		}
		i := b & (sbRing - 1)
		a.sbE[i], a.sbS[i], a.sbP[i] = a.x.energy(b*sub, sub), sum, math.Float32frombits(pk)
		// The loudest level heard, held for a while and then let go,
		// so that the silence threshold re-arms after loud speech:
		// quiet speech after shouting is speech.
		a.gMax = max(a.gMax, a.sbP[i])
		if p := a.sbP[i]; p >= a.gPeak {
			a.gPeak, a.gAge = p, 0
		} else if p >= a.gPeak*peakNear {
			a.gAge = 0
		} else if a.gAge++; a.gAge > peakHold {
			a.gPeak = max(a.gPeak*peakDecay, p, peakMin)
		}
	}
	a.decimate()
	if k := h - lookahead; k >= 0 && k < a.limit {
		a.analyze(k)
		if d := k - pathLag; d >= 0 {
			a.finalize(d, k)
		}
	}
}

// The pitch search runs on a 2 kHz copy of the signal made by two half-band
// decimation stages, 8→4 kHz and 4→2 kHz. Aliasing matters little there
// (the search only proposes candidate periods, which are then measured at
// 8 kHz), so the filters are short: stage 1 keeps 3–4 kHz out of 0–1 kHz;
// stage 2 passes 0–800 Hz and rejects 1.3–2 kHz by 50 dB. The 2 kHz sample
// m is centred on 8 kHz sample 4m.
var (
	dec1 = audio.HalfBand(dec1Pairs, 4)
	dec2 = audio.HalfBand(dec2Pairs, 4.5)
)

const (
	dec1Pairs = 2               // 7 taps
	dec2Pairs = 6               // 23 taps (decimate spells out the 6 pairs)
	dec1Delay = 2*dec1Pairs - 1 // 3 samples at 8 kHz
	dec2Delay = 2*dec2Pairs - 1 // 11 samples at 4 kHz
)

// decimate brings the 4 kHz and 2 kHz signals up to date with the input,
// a block at a time.
func (a *Analyzer) decimate() {
	// Stage 1: outputs centred on the even 8 kHz samples c1, c1+2, …
	// whose filter span (±dec1Delay) is present.
	if n := int((a.x.end()-1-dec1Delay-a.c1)/2) + 1; a.x.end()-1-dec1Delay >= a.c1 && n > 0 {
		a.y1.room(n, 2*a.m2-dec2Delay)
		x := a.x.span(a.c1-dec1Delay, 2*(n-1)+2*dec1Delay+1)
		h0, h1 := dec1[0], dec1[1]
		out := a.y1.extend(n)
		for i := range out {
			c := (*[2*dec1Delay + 1]float32)(x[2*i:])
			out[i] = 0.5*c[3] + h0*(c[2]+c[4]) + h1*(c[0]+c[6])
		}
		a.y1.commit()
		a.c1 += 2 * int64(n)
	}
	// Stage 2: 2 kHz sample m centred on 4 kHz sample 2m.
	if last := (a.y1.end() - 1 - dec2Delay) / 2; last >= a.m2 {
		n := int(last - a.m2 + 1)
		a.y.room(n, 20*a.frames-20)
		y := a.y1.span(2*a.m2-dec2Delay, 2*(n-1)+2*dec2Delay+1)
		out := a.y.extend(n)
		h := (*[6]float32)(dec2) // written out below for the 6 pairs of dec2Pairs
		for i := range out {
			c := (*[2*dec2Delay + 1]float32)(y[2*i:])
			out[i] = 0.5*c[11] + h[0]*(c[10]+c[12]) + h[1]*(c[8]+c[14]) + h[2]*(c[6]+c[16]) +
				h[3]*(c[4]+c[18]) + h[4]*(c[2]+c[20]) + h[5]*(c[0]+c[22])
		}
		a.y.commit()
		a.m2 += int64(n)
	}
}

// The running peak behind the silence threshold of the pitch path (Praat
// takes the loudest sample of the whole file, which a stream cannot know):
// while the signal comes within 15 dB of it (peakNear) it stays; after
// peakHold 5 ms sub-blocks (1.5 s) without that, it decays by 8 dB a second
// towards the current level. Speech 25 dB below a shout is voiced again a
// couple of seconds later; ordinary speech, which reaches near its peak
// every few syllables, keeps Praat's whole-file peak.
const (
	peakHold = 300
	peakMin  = 1e-5
	peakNear = 0.178 // -15 dB
)

var peakDecay = float32(math.Pow(10, -8.0/20/200))

// analyze measures frame k (centred on sample 80k+40) and enters it into
// the path finder.
func (a *Analyzer) analyze(k int64) {
	pf := &a.path[k&(pathRing-1)]
	a.frames = k + 1

	// Intensity: Praat's Kaiser window over 16 sub-blocks, mean removed.
	var e, s, n float32
	b0 := 2*k + 1 - intensityBlocks/2
	for j, w := range intensityWeights {
		b := b0 + int64(j)
		if b < 0 {
			continue
		}
		i := b & (sbRing - 1)
		e += w * a.sbE[i]
		s += a.sbS[i]
		n += sub
	}
	m := s / n
	pf.power = max(e/sub-m*m, 0)
	pf.intensity = intensityDB(pf.power)

	// Local peak (±5 ms) against the running global peak.
	lp := max(a.sbP[(2*k)&(sbRing-1)], a.sbP[(2*k+1)&(sbRing-1)])
	pf.rel = 0
	if a.gPeak > 0 {
		pf.rel = lp / a.gPeak
	}

	// Spectral balance over 20 ms: the 2 kHz copy carries the energy
	// below 1 kHz; the rest is above.
	c := k*hop + hop/2
	ex := a.x.energy(max(c-hop, 0), 2*hop) / (2 * hop)
	el := a.y.energy(20*k-10, 40) / 40
	pf.energy = ex
	pf.low = el
	pf.balance = balanceDB(ex, el)

	a.candidates(k, pf)
	a.step(k, pf)
}

// intensityDB converts a mean square (full scale = 1) to Praat's intensity
// scale, dB re (2·10⁻⁵)², on which a full-scale sine reads 91 dB. Silence
// reads SilenceDB.
func intensityDB(p float32) float32 {
	if p < 1e-20 {
		return SilenceDB
	}
	return fastDB(p) + dBre2e5
}

// dBre2e5 is 10·log10(1/(2·10⁻⁵)²): decibels re full scale to Praat's.
const dBre2e5 = 93.9794

// SilenceDB is the intensity reported for digital silence.
const SilenceDB = -100

// balanceDB returns the energy above the 2 kHz copy's band relative to the
// energy in it, in dB, limited to ±40 dB.
func balanceDB(total, low float32) float32 {
	if low <= 0 || total <= 0 {
		return 0
	}
	r := (total - low) / low
	r = min(max(r, 1e-4), 1e4)
	return fastDB(r)
}
