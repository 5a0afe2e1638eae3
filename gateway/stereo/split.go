package stereo

import (
	"fmt"

	"github.com/calmline/calmline/lib/audio"
)

// Split separates a recording's interleaved channels and encodes each in
// codec, at the recording's sample rate: the mono streams a PBX sends per
// track or per leg. Protocol clients use it to play a stereo file.
func Split(rec *audio.Recording, codec audio.Codec) ([][]byte, error) {
	f := rec.Format
	if err := f.Validate(); err != nil {
		return nil, fmt.Errorf("split: %w", err)
	}
	if codec.BytesPerSample() == 0 {
		return nil, fmt.Errorf("split: unsupported codec %v", codec)
	}
	frames := rec.Frames()
	if codec == f.Codec {
		// Same codec: de-interleave the bytes as they are.
		sb := codec.BytesPerSample()
		out := make([][]byte, f.Channels)
		for c := range out {
			out[c] = make([]byte, 0, frames*sb)
			for i := range frames {
				off := i*f.FrameBytes() + c*sb
				out[c] = append(out[c], rec.Data[off:off+sb]...)
			}
		}
		return out, nil
	}
	pcm := make([]int16, frames*f.Channels)
	audio.Decode(pcm, rec.Data[:frames*f.FrameBytes()], f.Codec)
	out := make([][]byte, f.Channels)
	ch := make([]int16, frames)
	for c := range out {
		for i := range frames {
			ch[i] = pcm[i*f.Channels+c]
		}
		out[c] = audio.Encode(make([]byte, 0, frames*codec.BytesPerSample()), ch, codec)
	}
	return out, nil
}

// Interleave builds interleaved frames from equally long channels, each
// sampleBytes wide: the inverse of Split for one codec.
func Interleave(channels [][]byte, sampleBytes int) []byte {
	if len(channels) == 1 {
		return append([]byte(nil), channels[0]...)
	}
	n := len(channels[0]) / sampleBytes
	out := make([]byte, 0, n*sampleBytes*len(channels))
	for i := range n {
		for _, ch := range channels {
			out = append(out, ch[i*sampleBytes:(i+1)*sampleBytes]...)
		}
	}
	return out
}
