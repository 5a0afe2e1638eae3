package audio

import (
	"bytes"
	"errors"
	"math"
	"testing"
)

func TestMulawRoundTrip(t *testing.T) {
	for i := range 256 {
		b := byte(i)
		s := MulawToLinear(b)
		if got := MulawToLinear(LinearToMulaw(s)); got != s {
			t.Errorf("μ-law %#02x: decode %d, re-encode decodes to %d", b, s, got)
		}
	}
	// Known anchors from G.711: 0xff and 0x7f are the two zeros, 0x00 and
	// 0x80 the extremes.
	for _, c := range []struct {
		b    byte
		want int16
	}{{0xff, 0}, {0x7f, 0}, {0x00, -32124}, {0x80, 32124}} {
		if got := MulawToLinear(c.b); got != c.want {
			t.Errorf("MulawToLinear(%#02x) = %d; want %d", c.b, got, c.want)
		}
	}
}

func TestAlawRoundTrip(t *testing.T) {
	for i := range 256 {
		b := byte(i)
		s := AlawToLinear(b)
		if got := AlawToLinear(LinearToAlaw(s)); got != s {
			t.Errorf("A-law %#02x: decode %d, re-encode decodes to %d", b, s, got)
		}
	}
	for _, c := range []struct {
		b    byte
		want int16
	}{{0xd5, 8}, {0x55, -8}, {0xaa, 32256}, {0x2a, -32256}} {
		if got := AlawToLinear(c.b); got != c.want {
			t.Errorf("AlawToLinear(%#02x) = %d; want %d", c.b, got, c.want)
		}
	}
}

func TestEncodeQuantisationError(t *testing.T) {
	// G.711 keeps the relative error of a loud sample within a few percent.
	for _, c := range []Codec{CodecPCMU, CodecPCMA} {
		for _, s := range []int16{1000, -1000, 5000, -12345, 30000} {
			enc := Encode(nil, []int16{s}, c)
			dec := make([]int16, 1)
			Decode(dec, enc, c)
			if rel := math.Abs(float64(dec[0]-s)) / math.Abs(float64(s)); rel > 0.07 {
				t.Errorf("%v: %d decodes to %d (%.1f%% off)", c, s, dec[0], 100*rel)
			}
		}
	}
}

func TestWAVRoundTrip(t *testing.T) {
	for _, f := range []Format{
		{CodecPCMU, 8000, 1}, {CodecPCMA, 8000, 2}, {CodecL16, 16000, 1}, {CodecL16, 8000, 2},
	} {
		data := bytes.Repeat([]byte{1, 2, 3, 4}, 100)
		r, err := ParseWAV(EncodeWAV(f, data))
		if err != nil {
			t.Fatalf("%+v: %v", f, err)
		}
		if r.Format != f || !bytes.Equal(r.Data, data) {
			t.Errorf("%+v: got format %+v and %d bytes", f, r.Format, len(r.Data))
		}
	}
}

func TestWAVErrors(t *testing.T) {
	good := EncodeWAV(Format{CodecPCMU, 8000, 1}, make([]byte, 800))
	withTag := func(tag uint16, bits uint16) []byte {
		b := bytes.Clone(good)
		b[20], b[21] = byte(tag), byte(tag>>8)
		b[34], b[35] = byte(bits), byte(bits>>8)
		return b
	}
	for _, c := range []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"not riff", []byte("RIFX0000WAVEfmt "), ErrNotWAV},
		{"truncated data", good[:len(good)-10], ErrTruncated},
		{"no data chunk", good[:12+8+18], ErrTruncated},
		{"zero data", EncodeWAV(Format{CodecPCMU, 8000, 1}, nil), ErrNoAudio},
		{"mp3 tag", withTag(0x55, 8), ErrUnsupported},
		{"8-bit pcm", withTag(1, 8), ErrUnsupported},
		{"44.1 kHz", EncodeWAV(Format{CodecL16, 44100, 1}, make([]byte, 100)), ErrUnsupported},
	} {
		_, err := ParseWAV(c.in)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v; want %v", c.name, err, c.want)
		}
	}
}

func FuzzParseWAV(f *testing.F) {
	f.Add(EncodeWAV(Format{CodecPCMU, 8000, 1}, make([]byte, 160)))
	f.Add(EncodeWAV(Format{CodecL16, 16000, 2}, make([]byte, 640)))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseWAV(b)
		if err != nil {
			return
		}
		if err := r.Format.Validate(); err != nil {
			t.Fatalf("accepted invalid format: %v", err)
		}
		if len(r.Data) == 0 || len(r.Data)%r.Format.FrameBytes() != 0 {
			t.Fatalf("data of %d bytes for frame size %d", len(r.Data), r.Format.FrameBytes())
		}
	})
}
