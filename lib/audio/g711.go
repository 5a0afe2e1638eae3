package audio

// G.711 tables are computed once at init; decoding is a table lookup.
var (
	ulawToLinear [256]int16
	alawToLinear [256]int16
)

func init() {
	for i := range 256 {
		ulawToLinear[i] = decodeUlaw(byte(i))
		alawToLinear[i] = decodeAlaw(byte(i))
	}
}

func decodeUlaw(u byte) int16 {
	u = ^u
	t := (int32(u&0x0f) << 3) + 0x84
	t <<= (u & 0x70) >> 4
	if u&0x80 != 0 {
		return int16(0x84 - t)
	}
	return int16(t - 0x84)
}

func decodeAlaw(a byte) int16 {
	a ^= 0x55
	t := int32(a&0x0f) << 4
	seg := (a & 0x70) >> 4
	switch seg {
	case 0:
		t += 8
	case 1:
		t += 0x108
	default:
		t += 0x108
		t <<= seg - 1
	}
	if a&0x80 != 0 {
		return int16(t)
	}
	return int16(-t)
}

// MulawToLinear decodes one G.711 μ-law byte.
func MulawToLinear(u byte) int16 { return ulawToLinear[u] }

// AlawToLinear decodes one G.711 A-law byte.
func AlawToLinear(a byte) int16 { return alawToLinear[a] }

// LinearToMulaw encodes one sample as G.711 μ-law.
func LinearToMulaw(s int16) byte {
	const bias, clip = 0x84, 32635
	x := int32(s)
	sign := byte(0)
	if x < 0 {
		x = -x
		sign = 0x80
	}
	x = min(x, clip) + bias
	// The exponent is the position of the highest set bit, from bit 7 (0)
	// to bit 14 (7).
	exp := byte(7)
	for mask := int32(0x4000); x&mask == 0 && exp > 0; mask >>= 1 {
		exp--
	}
	mant := byte(x>>(exp+3)) & 0x0f
	return ^(sign | exp<<4 | mant)
}

// alawSegEnd holds the upper bound of each A-law segment, on 13-bit input.
var alawSegEnd = [8]int32{0x1f, 0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff}

// LinearToAlaw encodes one sample as G.711 A-law.
func LinearToAlaw(s int16) byte {
	x := int32(s) >> 3
	mask := byte(0xd5)
	if x < 0 {
		mask = 0x55
		x = -x - 1
	}
	seg := 0
	for seg < 8 && x > alawSegEnd[seg] {
		seg++
	}
	if seg >= 8 {
		return 0x7f ^ mask
	}
	a := byte(seg << 4)
	if seg < 2 {
		a |= byte(x>>1) & 0x0f
	} else {
		a |= byte(x>>seg) & 0x0f
	}
	return a ^ mask
}

// Decode converts encoded samples in src to linear PCM in dst and returns
// the number of samples written. dst must hold len(src)/c.BytesPerSample()
// samples; Decode panics otherwise, like copy into a short slice would lose
// data silently.
func Decode(dst []int16, src []byte, c Codec) int {
	switch c {
	case CodecPCMU:
		dst = dst[:len(src)]
		for i, b := range src {
			dst[i] = ulawToLinear[b]
		}
		return len(src)
	case CodecPCMA:
		dst = dst[:len(src)]
		for i, b := range src {
			dst[i] = alawToLinear[b]
		}
		return len(src)
	case CodecL16:
		n := len(src) / 2
		dst = dst[:n]
		for i := range dst {
			dst[i] = int16(uint16(src[2*i]) | uint16(src[2*i+1])<<8)
		}
		return n
	}
	return 0
}

// Encode converts linear samples to the codec, appending to dst.
func Encode(dst []byte, src []int16, c Codec) []byte {
	switch c {
	case CodecPCMU:
		for _, s := range src {
			dst = append(dst, LinearToMulaw(s))
		}
	case CodecPCMA:
		for _, s := range src {
			dst = append(dst, LinearToAlaw(s))
		}
	case CodecL16:
		for _, s := range src {
			dst = append(dst, byte(s), byte(uint16(s)>>8))
		}
	}
	return dst
}
