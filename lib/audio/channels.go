package audio

import "fmt"

// AnalysisRate is the sample rate the voice analysis works at: telephone
// audio, 8 kHz. Wide-band (16 kHz) input is decimated to it.
const AnalysisRate = 8000

// Deinterleave splits interleaved samples of len(dst) channels into dst,
// appending to each channel's slice, and returns the extended slices. A
// trailing partial frame is ignored.
func Deinterleave(dst [][]int16, src []int16) [][]int16 {
	n := len(dst)
	if n == 0 {
		return dst
	}
	frames := len(src) / n
	for ch := range dst {
		out := dst[ch]
		for i := range frames {
			out = append(out, src[i*n+ch])
		}
		dst[ch] = out
	}
	return dst
}

// Interleave is the inverse of Deinterleave: it appends the frames of the
// given channels, which must have equal lengths, to dst.
func Interleave(dst []int16, chans ...[]int16) []int16 {
	if len(chans) == 0 {
		return dst
	}
	for i := range chans[0] {
		for _, c := range chans {
			dst = append(dst, c[i])
		}
	}
	return dst
}

// Converter turns encoded interleaved audio of one Format into separate
// channels of linear 16-bit samples at AnalysisRate (8 kHz), resampling
// 16 kHz input. It is streaming: chunks may end anywhere, even inside a
// sample frame; the remainder is kept for the next call. After warm-up it
// does not allocate.
type Converter struct {
	f       Format
	pending []byte // an incomplete sample frame from the last chunk
	lin     []int16
	chans   [][]int16
	wide    [][]int16
	ds      []Downsampler
}

// NewConverter returns a Converter for f.
func NewConverter(f Format) (*Converter, error) {
	if err := f.Validate(); err != nil {
		return nil, fmt.Errorf("new converter: %w", err)
	}
	c := &Converter{f: f, chans: make([][]int16, f.Channels)}
	if f.SampleRate != AnalysisRate {
		c.wide = make([][]int16, f.Channels)
		c.ds = make([]Downsampler, f.Channels)
	}
	return c, nil
}

// Format returns the input format.
func (c *Converter) Format() Format { return c.f }

// Convert decodes src and returns one slice per channel at 8 kHz. The
// slices belong to the Converter and stay valid until the next call.
func (c *Converter) Convert(src []byte) [][]int16 {
	fb := c.f.FrameBytes()
	if len(c.pending) > 0 {
		// Complete the partial frame left over from the last chunk.
		need := fb - len(c.pending)
		if len(src) < need {
			c.pending = append(c.pending, src...)
			return c.reset()
		}
		c.pending = append(c.pending, src[:need]...)
		src = src[need:]
	}
	whole := len(src) - len(src)%fb
	nLin := (len(c.pending) + whole) / c.f.Codec.BytesPerSample()
	c.lin = grow(c.lin, nLin)
	k := 0
	if len(c.pending) > 0 {
		k = Decode(c.lin, c.pending, c.f.Codec)
	}
	Decode(c.lin[k:], src[:whole], c.f.Codec)
	c.pending = append(c.pending[:0], src[whole:]...)

	out := c.reset()
	if c.ds == nil {
		return Deinterleave(out, c.lin)
	}
	for ch := range c.wide {
		c.wide[ch] = c.wide[ch][:0]
	}
	Deinterleave(c.wide, c.lin)
	for ch, w := range c.wide {
		o := grow(out[ch], c.ds[ch].OutputLen(len(w)))
		n := c.ds[ch].Process(o, w)
		out[ch] = o[:n]
	}
	return out
}

// Flush returns, per channel, the samples the resampler still holds back
// (none for 8 kHz input), and drops any partial frame.
func (c *Converter) Flush() [][]int16 {
	out := c.reset()
	c.pending = c.pending[:0]
	for ch := range c.ds {
		o := grow(out[ch], FlushLen)
		n := c.ds[ch].Flush(o)
		out[ch] = o[:n]
	}
	return out
}

func (c *Converter) reset() [][]int16 {
	for ch := range c.chans {
		c.chans[ch] = c.chans[ch][:0]
	}
	return c.chans
}

// grow returns s resliced to length n, reallocating only when its capacity
// is too small.
func grow(s []int16, n int) []int16 {
	if cap(s) < n {
		return make([]int16, n, n+n/4)
	}
	return s[:n]
}

// Channels decodes the whole recording into one slice per channel at 8 kHz
// (16 kHz recordings are resampled with the delay of the filter removed, so
// sample i of the output is at time i/8000 s).
func (r *Recording) Channels() [][]int16 {
	f := r.Format
	lin := make([]int16, len(r.Data)/f.Codec.BytesPerSample())
	Decode(lin, r.Data, f.Codec)
	chans := make([][]int16, f.Channels)
	for ch := range chans {
		chans[ch] = make([]int16, 0, len(lin)/f.Channels)
	}
	Deinterleave(chans, lin)
	if f.SampleRate != AnalysisRate {
		for ch, c := range chans {
			chans[ch] = Downsample16kTo8k(nil, c)
		}
	}
	return chans
}
