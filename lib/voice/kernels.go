package voice

// The inner products below are the hot loops of the analysis. Go does not
// vectorise, so they are unrolled by hand: several independent sums let
// the multiplications overlap, and the multi-lag forms load each sample of
// the fixed window once for several lags.

// dot returns the inner product of a and b[:len(a)].
func dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// dot3 returns the inner products of a with b, b[1:] and b[2:]; b must hold
// len(a)+2 samples.
func dot3(a, b []float32) (r0, r1, r2 float32) {
	b = b[:len(a)+2]
	y0, y1 := b[0], b[1]
	for i, x := range a {
		y2 := b[i+2]
		r0 += x * y0
		r1 += x * y1
		r2 += x * y2
		y0, y1 = y1, y2
	}
	return r0, r1, r2
}

// dot4 returns the inner products of a with b, b[1:], b[2:] and b[3:]; b
// must hold len(a)+3 samples.
func dot4(a, b []float32) (r0, r1, r2, r3 float32) {
	b = b[:len(a)+3]
	y0, y1, y2 := b[0], b[1], b[2]
	for i, x := range a {
		y3 := b[i+3]
		r0 += x * y0
		r1 += x * y1
		r2 += x * y2
		r3 += x * y3
		y0, y1, y2 = y1, y2, y3
	}
	return r0, r1, r2, r3
}
