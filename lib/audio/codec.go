package audio

import (
	"fmt"
	"strings"
	"time"
)

// Codec names a sample encoding.
type Codec uint8

// The codecs calmline accepts.
const (
	CodecUnknown Codec = iota
	// CodecPCMU is G.711 μ-law, 8 bits per sample.
	CodecPCMU
	// CodecPCMA is G.711 A-law, 8 bits per sample.
	CodecPCMA
	// CodecL16 is 16-bit signed little-endian linear PCM.
	CodecL16
)

// String returns the codec's canonical lower-case name, as used on the wire
// ("pcmu", "pcma", "l16").
func (c Codec) String() string {
	switch c {
	case CodecPCMU:
		return "pcmu"
	case CodecPCMA:
		return "pcma"
	case CodecL16:
		return "l16"
	}
	return fmt.Sprintf("codec(%d)", uint8(c))
}

// BytesPerSample returns the encoded size of one sample of one channel.
func (c Codec) BytesPerSample() int {
	switch c {
	case CodecPCMU, CodecPCMA:
		return 1
	case CodecL16:
		return 2
	}
	return 0
}

// ParseCodec maps a codec name to a Codec. It accepts the canonical names and
// the common aliases PBXs use ("ulaw", "mulaw", "g711u", "alaw", "g711a",
// "pcm16", "s16le", "linear16"), case-insensitively.
func ParseCodec(s string) (Codec, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "pcmu", "ulaw", "mulaw", "g711u", "g711_ulaw", "audio/x-mulaw":
		return CodecPCMU, nil
	case "pcma", "alaw", "g711a", "g711_alaw", "audio/x-alaw":
		return CodecPCMA, nil
	case "l16", "pcm16", "s16le", "linear16", "slin":
		return CodecL16, nil
	}
	return CodecUnknown, fmt.Errorf("unsupported codec %q (want pcmu, pcma or l16)", s)
}

// Format describes interleaved audio.
type Format struct {
	Codec      Codec
	SampleRate int // samples per second per channel
	Channels   int
}

// SupportedSampleRate reports whether the analysis accepts the rate: 8 kHz
// telephone audio, or 16 kHz wide-band audio that is resampled to 8 kHz.
func SupportedSampleRate(hz int) bool { return hz == 8000 || hz == 16000 }

// Validate reports the first reason the format cannot be analysed.
func (f Format) Validate() error {
	if f.Codec.BytesPerSample() == 0 {
		return fmt.Errorf("unsupported codec %v", f.Codec)
	}
	if !SupportedSampleRate(f.SampleRate) {
		return fmt.Errorf("unsupported sample rate %d Hz (want 8000 or 16000)", f.SampleRate)
	}
	if f.Channels < 1 || f.Channels > 2 {
		return fmt.Errorf("unsupported channel count %d (want 1 or 2)", f.Channels)
	}
	return nil
}

// FrameBytes returns the size of one interleaved sample frame (one sample of
// every channel).
func (f Format) FrameBytes() int { return f.Codec.BytesPerSample() * f.Channels }

// BytesPerSecond returns the encoded data rate.
func (f Format) BytesPerSecond() int { return f.FrameBytes() * f.SampleRate }

// Duration returns how long n bytes of interleaved audio last.
func (f Format) Duration(n int) time.Duration {
	fb := f.FrameBytes()
	if fb == 0 || f.SampleRate == 0 {
		return 0
	}
	frames := int64(n / fb)
	return time.Duration(frames * int64(time.Second) / int64(f.SampleRate))
}
