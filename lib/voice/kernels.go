package voice

// The inner products below are the hot loops of the analysis. dot, dot3
// and dot4 (the names the analysis calls) are defined per architecture:
// on amd64 with AVX2 and FMA they run the assembly in kernels_amd64.s,
// elsewhere — other architectures, the purego build tag, a CPU without
// those features, or inputs too short to gain — the pure-Go versions here.
//
// Go does not vectorise, so the pure-Go versions are unrolled by hand:
// several independent sums let the multiplications overlap, and the
// multi-lag forms load each sample of the fixed window once for several
// lags.
//
// The two versions add in different orders (the assembly in eight or
// sixteen lanes, with fused multiply-adds), so their results differ by
// float32 rounding only: each lies within n·2⁻²⁴·Σ|aᵢbᵢ| of the exact
// inner product (n = len(a)), so they are within twice that of each other.
// kernels_test.go checks that bound on random and edge-case inputs.

// dotGo returns the inner product of a and b[:len(a)].
func dotGo(a, b []float32) float32 {
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

// dot3Go returns the inner products of a with b, b[1:] and b[2:]; b must
// hold len(a)+2 samples.
func dot3Go(a, b []float32) (r0, r1, r2 float32) {
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

// dot4Go returns the inner products of a with b, b[1:], b[2:] and b[3:];
// b must hold len(a)+3 samples.
func dot4Go(a, b []float32) (r0, r1, r2, r3 float32) {
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
