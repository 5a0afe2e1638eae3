package audio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"testing"
)

// encodeWAVExtensible writes a WAVE_FORMAT_EXTENSIBLE file whose sub-format
// GUID carries tag, with a LIST chunk before the data as many tools write.
func encodeWAVExtensible(f Format, tag uint16, data []byte) []byte {
	le := binary.LittleEndian
	var fmtc []byte
	fmtc = le.AppendUint16(fmtc, wavTagExtensible)
	fmtc = le.AppendUint16(fmtc, uint16(f.Channels))
	fmtc = le.AppendUint32(fmtc, uint32(f.SampleRate))
	fmtc = le.AppendUint32(fmtc, uint32(f.BytesPerSecond()))
	fmtc = le.AppendUint16(fmtc, uint16(f.FrameBytes()))
	bits := uint16(8 * f.Codec.BytesPerSample())
	fmtc = le.AppendUint16(fmtc, bits)
	fmtc = le.AppendUint16(fmtc, 22) // cbSize
	fmtc = le.AppendUint16(fmtc, bits)
	fmtc = le.AppendUint32(fmtc, 3) // channel mask: front left, front right
	fmtc = le.AppendUint16(fmtc, tag)
	fmtc = append(fmtc, ksDataFormatTail...)

	list := []byte("INFOISFT\x05\x00\x00\x00calm\x00")
	var b []byte
	b = append(b, "RIFF"...)
	b = le.AppendUint32(b, 0) // patched below
	b = append(b, "WAVEfmt "...)
	b = le.AppendUint32(b, uint32(len(fmtc)))
	b = append(b, fmtc...)
	b = append(b, "LIST"...)
	b = le.AppendUint32(b, uint32(len(list)))
	b = append(b, list...)
	if len(list)%2 == 1 {
		b = append(b, 0) // chunks are padded to even sizes
	}
	b = append(b, "data"...)
	b = le.AppendUint32(b, uint32(len(data)))
	b = append(b, data...)
	le.PutUint32(b[4:], uint32(len(b)-8))
	return b
}

func TestWAVExtensible(t *testing.T) {
	data := bytes.Repeat([]byte{0x10, 0x20, 0x30, 0x40}, 50)
	for _, c := range []struct {
		tag uint16
		f   Format
	}{
		{wavTagPCM, Format{CodecL16, 8000, 1}},
		{wavTagPCM, Format{CodecL16, 16000, 2}},
		{wavTagMuLaw, Format{CodecPCMU, 8000, 2}},
		{wavTagALaw, Format{CodecPCMA, 8000, 1}},
	} {
		r, err := ParseWAV(encodeWAVExtensible(c.f, c.tag, data))
		if err != nil {
			t.Errorf("extensible tag %d %+v: %v", c.tag, c.f, err)
			continue
		}
		if r.Format != c.f || !bytes.Equal(r.Data, data) {
			t.Errorf("extensible tag %d: got %+v, %d bytes; want %+v, %d bytes", c.tag, r.Format, len(r.Data), c.f, len(data))
		}
	}
	// IEEE float (tag 3) inside the extensible wrapper is refused by name.
	_, err := ParseWAV(encodeWAVExtensible(Format{CodecL16, 8000, 1}, 3, data))
	if !errors.Is(err, ErrUnsupported) {
		t.Errorf("extensible float: err = %v; want ErrUnsupported", err)
	}
	// A sub-format GUID that is not one of the KSDATAFORMAT family.
	b := encodeWAVExtensible(Format{CodecL16, 8000, 1}, wavTagPCM, data)
	b[12+8+39] ^= 0xff
	if _, err := ParseWAV(b); !errors.Is(err, ErrUnsupported) {
		t.Errorf("foreign GUID: err = %v; want ErrUnsupported", err)
	}
}

func TestWAVAbsurdHeaders(t *testing.T) {
	good := EncodeWAV(Format{CodecL16, 8000, 1}, make([]byte, 800))
	patch := func(off int, v uint32, size int) []byte {
		b := bytes.Clone(good)
		switch size {
		case 2:
			binary.LittleEndian.PutUint16(b[off:], uint16(v))
		case 4:
			binary.LittleEndian.PutUint32(b[off:], v)
		}
		return b
	}
	for _, c := range []struct {
		name string
		in   []byte
		want error
	}{
		{"zero channels", patch(22, 0, 2), ErrBadHeader},
		{"65535 channels", patch(22, 65535, 2), ErrBadHeader},
		{"three channels", patch(32, 6, 2), ErrBadHeader}, // block align only
		{"zero rate", patch(24, 0, 4), ErrBadHeader},
		{"4 GHz rate", patch(24, 0xffffffff, 4), ErrBadHeader},
		{"block align lies", patch(32, 4, 2), ErrBadHeader},
		{"fmt chunk of 4 GB", patch(16, 0xfffffff0, 4), ErrTruncated},
		{"fmt chunk of 8 bytes", patch(16, 8, 4), ErrBadHeader},
		{"data of 4 GB", patch(40, 0xfffffff0, 4), ErrTruncated},
		{"one odd byte of data", EncodeWAV(Format{CodecL16, 8000, 1}, []byte{1}), ErrNoAudio},
	} {
		if _, err := ParseWAV(c.in); !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v; want %v", c.name, err, c.want)
		}
	}
	// Streaming writers put 0xffffffff in the data size: read to the end.
	b := patch(40, 0xffffffff, 4)
	if r, err := ParseWAV(b); err != nil || len(r.Data) != 800 {
		t.Errorf("unknown data size: %v", err)
	}
}

func TestReadWAVLimit(t *testing.T) {
	b := EncodeWAV(Format{CodecPCMU, 8000, 1}, make([]byte, 1000))
	if _, err := ReadWAV(bytes.NewReader(b), 100); !errors.Is(err, ErrUnsupported) {
		t.Errorf("over limit: err = %v; want ErrUnsupported", err)
	}
	if _, err := ReadWAV(bytes.NewReader(b), int64(len(b))); err != nil {
		t.Errorf("at limit: %v", err)
	}
}

func TestRecordingChannels(t *testing.T) {
	// Stereo μ-law at 8 kHz: left ramps up, right is constant.
	var lin []int16
	for i := range 100 {
		lin = append(lin, int16(i*100), -2000)
	}
	r, err := ParseWAV(EncodeWAV(Format{CodecPCMU, 8000, 2}, Encode(nil, lin, CodecPCMU)))
	if err != nil {
		t.Fatal(err)
	}
	ch := r.Channels()
	if len(ch) != 2 || len(ch[0]) != 100 || len(ch[1]) != 100 {
		t.Fatalf("got %d channels of %d/%d samples", len(ch), len(ch[0]), len(ch[1]))
	}
	for i := range 100 {
		// G.711 keeps samples within 1/32 of their magnitude (plus the
		// smallest step).
		if d := math.Abs(float64(ch[0][i]) - float64(i*100)); d > float64(i*100)/32+8 || ch[1][i] > -1900 || ch[1][i] < -2100 {
			t.Fatalf("frame %d: %d, %d", i, ch[0][i], ch[1][i])
		}
	}
	// 16 kHz PCM is resampled to 8 kHz.
	wide := sine16k(440, 8000, 3200)
	r, err = ParseWAV(EncodeWAV(Format{CodecL16, 16000, 1}, Encode(nil, wide, CodecL16)))
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Channels(); len(got[0]) != 1600 {
		t.Errorf("16 kHz, 3200 samples: got %d samples at 8 kHz; want 1600", len(got[0]))
	}
}

func TestDeinterleave(t *testing.T) {
	in := []int16{1, -1, 2, -2, 3, -3, 9}
	out := Deinterleave(make([][]int16, 2), in)
	if len(out[0]) != 3 || out[0][2] != 3 || out[1][2] != -3 {
		t.Fatalf("got %v", out)
	}
	if back := Interleave(nil, out...); !bytes.Equal(int16Bytes(back), int16Bytes(in[:6])) {
		t.Fatalf("interleave: got %v", back)
	}
}

func int16Bytes(s []int16) []byte { return Encode(nil, s, CodecL16) }

func TestConverter(t *testing.T) {
	// 16 kHz stereo PCM in awkward chunks gives the same 8 kHz channels as
	// the batch path.
	left, right := sine16k(300, 9000, 4000), sine16k(700, 5000, 4000)
	raw := Encode(nil, Interleave(nil, left, right), CodecL16)
	c, err := NewConverter(Format{CodecL16, 16000, 2})
	if err != nil {
		t.Fatal(err)
	}
	var got [2][]int16
	for i := 0; i < len(raw); {
		n := min(len(raw)-i, 1+(i*7)%333) // chunks cut inside sample frames
		for ch, s := range c.Convert(raw[i : i+n]) {
			got[ch] = append(got[ch], s...)
		}
		i += n
	}
	for ch, s := range c.Flush() {
		got[ch] = append(got[ch], s...)
	}
	for ch, in := range [][]int16{left, right} {
		want := Downsample16kTo8k(nil, in)
		// The streaming output carries the filter delay of 15 samples.
		if len(got[ch]) < len(want)+15 {
			t.Fatalf("channel %d: %d samples; want at least %d", ch, len(got[ch]), len(want)+15)
		}
		for i := range want {
			if got[ch][i+15] != want[i] {
				t.Fatalf("channel %d sample %d: %d; want %d", ch, i, got[ch][i+15], want[i])
			}
		}
	}

	// 8 kHz μ-law: no resampling, a byte-at-a-time stream decodes exactly.
	mono, _ := NewConverter(Format{CodecPCMU, 8000, 1})
	for b := range 256 {
		out := mono.Convert([]byte{byte(b)})
		if len(out) != 1 || len(out[0]) != 1 || out[0][0] != MulawToLinear(byte(b)) {
			t.Fatalf("byte %#x: got %v", b, out)
		}
	}
	if _, err := NewConverter(Format{CodecL16, 44100, 1}); err == nil {
		t.Error("44.1 kHz converter: no error")
	}
	if n := testing.AllocsPerRun(50, func() { c.Convert(raw[:3200]) }); n != 0 {
		t.Errorf("Convert allocates %v times per call after warm-up", n)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte{0, 0x7f, 0x80, 0xff, 0x55, 0xd5})
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, c := range []Codec{CodecPCMU, CodecPCMA, CodecL16} {
			dst := make([]int16, len(b)/c.BytesPerSample())
			if n := Decode(dst, b, c); n != len(dst) {
				t.Fatalf("%v: decoded %d samples from %d bytes; want %d", c, n, len(b), len(dst))
			}
			// Re-encoding G.711 reproduces a byte that decodes identically.
			if c != CodecL16 {
				re := Encode(nil, dst, c)
				back := make([]int16, len(re))
				Decode(back, re, c)
				for i := range back {
					if back[i] != dst[i] {
						t.Fatalf("%v: byte %#x decodes to %d, re-encodes to %#x decoding to %d", c, b[i], dst[i], re[i], back[i])
					}
				}
			} else if !bytes.Equal(Encode(nil, dst, c), b[:2*len(dst)]) {
				t.Fatalf("l16 round trip differs")
			}
		}
	})
}

func FuzzConverter(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7}, uint8(1), uint8(2), uint8(3))
	f.Fuzz(func(t *testing.T, b []byte, codec, stereo, chunk uint8) {
		fm := Format{Codec: Codec(1 + codec%3), SampleRate: 8000, Channels: 1 + int(stereo%2)}
		if stereo&2 != 0 {
			fm.SampleRate = 16000
		}
		c, err := NewConverter(fm)
		if err != nil {
			t.Fatal(err)
		}
		total := make([]int, fm.Channels)
		step := int(chunk) + 1
		for i := 0; i < len(b); i += step {
			for ch, s := range c.Convert(b[i:min(i+step, len(b))]) {
				total[ch] += len(s)
			}
		}
		frames := len(b) / fm.FrameBytes()
		want := frames
		if fm.SampleRate == 16000 {
			want = frames / 2
		}
		for ch, n := range total {
			if n != want {
				t.Fatalf("%+v, %d bytes: channel %d got %d samples; want %d", fm, len(b), ch, n, want)
			}
		}
	})
}
