package audio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// WAV format tags this package reads.
const (
	wavTagPCM        = 1
	wavTagALaw       = 6
	wavTagMuLaw      = 7
	wavTagExtensible = 0xfffe
)

// ksDataFormatTail is bytes 2..15 of every KSDATAFORMAT_SUBTYPE_* GUID
// (00000000-0000-0010-8000-00aa00389b71 with the tag in the first two bytes).
const ksDataFormatTail = "\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"

// Errors a WAV reader returns; wrap-checked with errors.Is. Each returned
// error also says what exactly was wrong.
var (
	ErrNotWAV      = errors.New("not a RIFF/WAVE file")
	ErrTruncated   = errors.New("truncated WAV file")
	ErrUnsupported = errors.New("unsupported WAV format")
	ErrNoAudio     = errors.New("WAV file has no audio data")
	ErrBadHeader   = errors.New("invalid WAV header")
)

// Recording is decoded WAV content: interleaved encoded samples and their
// format. Data is not copied out of the buffer given to ParseWAV.
type Recording struct {
	Format Format
	Data   []byte
}

// Frames returns the number of sample frames (samples per channel).
func (r *Recording) Frames() int { return len(r.Data) / r.Format.FrameBytes() }

// ParseWAV parses a whole WAV file held in memory. It accepts format tags 1
// (16-bit PCM), 6 (A-law), 7 (μ-law) and WAVE_FORMAT_EXTENSIBLE wrapping any
// of them, at 8 or 16 kHz, mono or stereo.
func ParseWAV(b []byte) (*Recording, error) {
	if len(b) < 12 {
		return nil, fmt.Errorf("%w: %d bytes, shorter than a RIFF header", ErrTruncated, len(b))
	}
	if string(b[0:4]) != "RIFF" || string(b[8:12]) != "WAVE" {
		return nil, ErrNotWAV
	}
	var (
		f       Format
		haveFmt bool
	)
	p := 12
	for {
		if p+8 > len(b) {
			if haveFmt {
				return nil, fmt.Errorf("%w: no data chunk", ErrTruncated)
			}
			return nil, fmt.Errorf("%w: no fmt chunk", ErrTruncated)
		}
		id := string(b[p : p+4])
		size := int64(binary.LittleEndian.Uint32(b[p+4 : p+8]))
		body := p + 8
		switch id {
		case "fmt ":
			if size < 16 {
				return nil, fmt.Errorf("%w: fmt chunk of %d bytes", ErrBadHeader, size)
			}
			if int64(body)+size > int64(len(b)) {
				return nil, fmt.Errorf("%w: fmt chunk", ErrTruncated)
			}
			var err error
			f, err = parseFmt(b[body : body+int(size)])
			if err != nil {
				return nil, err
			}
			haveFmt = true
		case "data":
			if !haveFmt {
				return nil, fmt.Errorf("%w: data chunk before fmt chunk", ErrBadHeader)
			}
			avail := int64(len(b) - body)
			if size == 0xffffffff {
				// Streaming writers that never knew the length.
				size = avail
			}
			if size > avail {
				return nil, fmt.Errorf("%w: data chunk declares %d bytes, %d present", ErrTruncated, size, avail)
			}
			fb := int64(f.FrameBytes())
			size -= size % fb
			if size == 0 {
				return nil, ErrNoAudio
			}
			return &Recording{Format: f, Data: b[body : body+int(size)]}, nil
		}
		next := int64(body) + size + size&1
		if next > int64(len(b)) {
			return nil, fmt.Errorf("%w: %q chunk declares %d bytes", ErrTruncated, id, size)
		}
		p = int(next)
	}
}

// ReadWAV reads a whole WAV file of at most limit bytes from r.
func ReadWAV(r io.Reader, limit int64) (*Recording, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read wav: %w", err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: file exceeds %d bytes", ErrUnsupported, limit)
	}
	return ParseWAV(b)
}

func parseFmt(c []byte) (Format, error) {
	tag := binary.LittleEndian.Uint16(c[0:2])
	channels := int(binary.LittleEndian.Uint16(c[2:4]))
	rate := int(binary.LittleEndian.Uint32(c[4:8]))
	blockAlign := int(binary.LittleEndian.Uint16(c[12:14]))
	bits := int(binary.LittleEndian.Uint16(c[14:16]))
	if tag == wavTagExtensible {
		if len(c) < 40 {
			return Format{}, fmt.Errorf("%w: WAVE_FORMAT_EXTENSIBLE fmt chunk of %d bytes", ErrBadHeader, len(c))
		}
		// The sub-format GUID is the real format tag followed by the fixed
		// tail of the KSDATAFORMAT_SUBTYPE GUIDs.
		if string(c[26:40]) != ksDataFormatTail {
			return Format{}, fmt.Errorf("%w: WAVE_FORMAT_EXTENSIBLE sub-format %x is not a plain format tag", ErrUnsupported, c[24:40])
		}
		tag = binary.LittleEndian.Uint16(c[24:26])
	}
	var f Format
	switch {
	case tag == wavTagPCM && bits == 16:
		f.Codec = CodecL16
	case tag == wavTagMuLaw && bits == 8:
		f.Codec = CodecPCMU
	case tag == wavTagALaw && bits == 8:
		f.Codec = CodecPCMA
	case tag == wavTagPCM || tag == wavTagMuLaw || tag == wavTagALaw:
		return Format{}, fmt.Errorf("%w: %d-bit samples for format tag %d", ErrUnsupported, bits, tag)
	default:
		return Format{}, fmt.Errorf("%w: format tag %#x (want 1 PCM, 6 A-law, 7 μ-law or 0xfffe extensible)", ErrUnsupported, tag)
	}
	f.Channels = channels
	f.SampleRate = rate
	if channels == 0 || channels > 32 || rate == 0 || rate > 384000 {
		return Format{}, fmt.Errorf("%w: %d channels at %d Hz", ErrBadHeader, channels, rate)
	}
	if blockAlign != f.FrameBytes() {
		return Format{}, fmt.Errorf("%w: block align %d for %d channels of %d bits", ErrBadHeader, blockAlign, channels, bits)
	}
	if err := f.Validate(); err != nil {
		return Format{}, fmt.Errorf("%w: %v", ErrUnsupported, err)
	}
	return f, nil
}

// EncodeWAV returns a canonical WAV file holding data in format f. PCM uses
// format tag 1; G.711 uses tags 7 and 6 with the 18-byte fmt chunk.
func EncodeWAV(f Format, data []byte) []byte {
	tag, fmtSize := uint16(wavTagPCM), uint32(16)
	switch f.Codec {
	case CodecPCMU:
		tag, fmtSize = wavTagMuLaw, 18
	case CodecPCMA:
		tag, fmtSize = wavTagALaw, 18
	}
	out := make([]byte, 0, 12+8+int(fmtSize)+8+len(data)+1)
	le := binary.LittleEndian
	out = append(out, "RIFF"...)
	out = le.AppendUint32(out, uint32(4+8+fmtSize+8+uint32(len(data))+uint32(len(data)&1)))
	out = append(out, "WAVEfmt "...)
	out = le.AppendUint32(out, fmtSize)
	out = le.AppendUint16(out, tag)
	out = le.AppendUint16(out, uint16(f.Channels))
	out = le.AppendUint32(out, uint32(f.SampleRate))
	out = le.AppendUint32(out, uint32(f.BytesPerSecond()))
	out = le.AppendUint16(out, uint16(f.FrameBytes()))
	out = le.AppendUint16(out, uint16(8*f.Codec.BytesPerSample()))
	if fmtSize == 18 {
		out = le.AppendUint16(out, 0)
	}
	out = append(out, "data"...)
	out = le.AppendUint32(out, uint32(len(data)))
	out = append(out, data...)
	if len(data)&1 == 1 {
		out = append(out, 0)
	}
	return out
}
