package voice

// signal is a sliding window over a sampled signal, addressed by absolute
// sample index, with (optionally) a running sum of squares so that the
// energy of any stretch costs two look-ups. Samples before index 0 read as zeros. Old
// samples are dropped by compaction when the buffer is full, so memory
// stays bounded and appending does not allocate after construction.
type signal struct {
	buf  []float32
	cum  []float64 // cum[i] = Σ buf[:i]², len(buf)+1 entries; nil if not kept
	base int64     // absolute index of buf[0]
}

// newSignal returns a signal holding pre zeros before index 0, with room
// for capacity samples in all, keeping the running sum of squares if
// energy is set.
func newSignal(pre, capacity int, energy bool) signal {
	s := signal{buf: make([]float32, 0, capacity)}
	if energy {
		s.cum = make([]float64, 1, capacity+1)
	}
	s.reset(pre)
	return s
}

// reset empties the signal and lays down pre zeros before index 0.
func (s *signal) reset(pre int) {
	s.buf = s.buf[:pre]
	clear(s.buf)
	if s.cum != nil {
		s.cum = s.cum[:pre+1]
		clear(s.cum)
	}
	s.base = -int64(pre)
}

// end returns the absolute index one past the newest sample.
func (s *signal) end() int64 { return s.base + int64(len(s.buf)) }

// span returns n samples starting at absolute index i.
func (s *signal) span(i int64, n int) []float32 {
	o := i - s.base
	return s.buf[o : o+int64(n)]
}

// energy returns the sum of squares of n samples starting at index i.
func (s *signal) energy(i int64, n int) float32 {
	o := i - s.base
	return float32(s.cum[o+int64(n)] - s.cum[o])
}

// extend lengthens the signal by n samples (room must have been made) and
// returns them for the caller to fill; commit must follow.
func (s *signal) extend(n int) []float32 {
	old := len(s.buf)
	s.buf = s.buf[:old+n]
	return s.buf[old:]
}

// commit brings the running sum of squares up to date after extend.
func (s *signal) commit() {
	if s.cum == nil {
		return
	}
	old := len(s.cum) - 1
	s.cum = s.cum[:len(s.buf)+1]
	c := s.cum[old]
	cum := s.cum[old+1:]
	for i, v := range s.buf[old:] {
		c += float64(v) * float64(v)
		cum[i] = c
	}
}

// room makes space for at least n more samples, keeping everything from
// absolute index keep on, and returns the free capacity.
func (s *signal) room(n int, keep int64) int {
	if free := cap(s.buf) - len(s.buf); free >= n {
		return free
	}
	if drop := keep - s.base; drop > 0 {
		k := copy(s.buf, s.buf[drop:])
		s.buf = s.buf[:k]
		if s.cum != nil {
			c0 := s.cum[drop]
			for i, v := range s.cum[drop:] {
				s.cum[i] = v - c0
			}
			s.cum = s.cum[:k+1]
		}
		s.base += drop
	}
	if cap(s.buf)-len(s.buf) < n {
		// Only when a caller pushes more than the buffer was sized for
		// in one go; then grow once.
		nb := make([]float32, len(s.buf), 2*cap(s.buf)+n)
		copy(nb, s.buf)
		s.buf = nb
		if s.cum != nil {
			nc := make([]float64, len(s.cum), cap(nb)+1)
			copy(nc, s.cum)
			s.cum = nc
		}
	}
	return cap(s.buf) - len(s.buf)
}
