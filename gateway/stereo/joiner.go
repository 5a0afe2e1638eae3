// Package stereo turns the mono streams some PBXs send into the one
// interleaved stream a call carries, and back: a Joiner aligns channels
// that arrive separately (Twilio-style inbound and outbound tracks, two
// Asterisk legs) by their position on the call's timeline, fills what one
// channel lacks with silence while the other has audio, and reports
// stretches that neither has as gaps, not audio. Split does the reverse
// for the protocol clients. The package is pure: no I/O, no goroutines.
package stereo

import (
	"errors"
	"fmt"

	"github.com/calmline/calmline/lib/audio"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
)

// Sink receives the joined stream. *session.Call implements it.
type Sink interface {
	Audio(data []byte) error
	Gap(samples uint64, reason callv1.GapReason, detail string) error
}

// Options configures a Joiner.
type Options struct {
	// Channels is 1 or 2; output frames interleave them in this order.
	Channels int
	// Silence is one sample of silence in the codec: 0xFF for μ-law,
	// 0xD5 for A-law, two zero bytes for 16-bit PCM. Its length is the
	// sample width.
	Silence []byte
	// MaxLag is how far (samples) a channel may fall behind the one that
	// leads before its missing audio counts as silence: the wait that
	// lets a late packet take its place, and the bound on what is
	// buffered.
	MaxLag uint64
	// MaxHole bounds one jump of a channel's position (samples); a longer
	// one is refused as bad input.
	MaxHole uint64
	// Delay holds emission this far (samples) behind the furthest
	// position written, so that audio arriving out of order still finds
	// its place: a jitter buffer for senders that do not keep order.
	Delay uint64
	// GapDetail describes gaps both channels leave (for reports).
	GapDetail string
}

// Silence returns one sample of silence in codec c, as Options.Silence
// wants it.
func Silence(c audio.Codec) []byte {
	switch c {
	case audio.CodecPCMA:
		return []byte{0xd5}
	case audio.CodecL16:
		return []byte{0, 0}
	}
	return []byte{0xff}
}

// ErrHole is returned for a position jump longer than MaxHole.
var ErrHole = errors.New("stereo: position jumps too far ahead")

// Joiner aligns channels written separately and emits them interleaved.
// It is not safe for concurrent use.
type Joiner struct {
	o     Options
	width int // bytes per sample
	lanes []lane
	out   uint64 // position up to which everything was emitted
	buf   []byte // interleaving scratch
	// Late counts samples that arrived for positions already emitted
	// (too late, or repeated) and were dropped.
	Late uint64
	// Filled counts samples of one channel emitted as silence while
	// another channel had audio.
	Filled uint64
}

// lane is one channel: what is known of it from out on, as pieces of
// audio and holes, in order.
type lane struct {
	pieces []piece
	known  uint64 // out + the pieces' length
	ended  bool
	spare  []byte // the buffer of the last piece emitted, reused
}

type piece struct {
	hole bool
	n    uint64 // samples
	data []byte // audio, n samples (nil for holes)
}

// New returns a Joiner starting at position 0.
func New(o Options) (*Joiner, error) {
	if o.Channels < 1 || o.Channels > 2 || len(o.Silence) < 1 || len(o.Silence) > 2 {
		return nil, fmt.Errorf("stereo: %d channels of %d-byte samples (want 1 or 2 channels, 1 or 2 bytes)", o.Channels, len(o.Silence))
	}
	if o.MaxHole == 0 {
		o.MaxHole = ^uint64(0)
	}
	return &Joiner{o: o, width: len(o.Silence), lanes: make([]lane, o.Channels)}, nil
}

// Position returns how far the joined stream has been emitted.
func (j *Joiner) Position() uint64 { return j.out }

// Known returns how far a channel's content is known.
func (j *Joiner) Known(ch int) uint64 { return j.lanes[ch].known }

// Buffered returns the samples held back, waiting for another channel.
func (j *Joiner) Buffered() uint64 {
	var n uint64
	for _, l := range j.lanes {
		n = max(n, l.known-j.out)
	}
	return n
}

// Write adds audio of channel ch that starts at sample position pos, then
// emits to sink what all channels now cover. Audio that arrives out of
// order takes its place while its position is still held back; audio for
// positions already emitted, or already written, is dropped (counted in
// Late). A jump ahead leaves a hole in the channel. The data must be whole
// samples; Write keeps no reference to it.
func (j *Joiner) Write(sink Sink, ch int, pos uint64, data []byte) error {
	if ch < 0 || ch >= len(j.lanes) {
		return fmt.Errorf("stereo: channel %d of %d", ch, len(j.lanes))
	}
	if len(data)%j.width != 0 {
		return fmt.Errorf("stereo: %d bytes are not whole %d-byte samples", len(data), j.width)
	}
	l := &j.lanes[ch]
	if l.ended {
		return fmt.Errorf("stereo: channel %d has ended", ch)
	}
	w := uint64(j.width)
	n := uint64(len(data)) / w
	if pos < j.out {
		skip := min(j.out-pos, n)
		j.Late += skip
		pos, n, data = pos+skip, n-skip, data[skip*w:]
	}
	if n > 0 && pos < l.known {
		// Into what is held back: fill holes, drop repeats.
		in := min(l.known-pos, n)
		j.fillHoles(l, pos, data[:in*w])
		pos, n, data = pos+in, n-in, data[in*w:]
	}
	if n == 0 {
		return j.emit(sink, false)
	}
	if pos > l.known {
		if pos-l.known > j.o.MaxHole {
			return fmt.Errorf("%w: channel %d from %d to %d (limit %d samples)", ErrHole, ch, l.known, pos, j.o.MaxHole)
		}
		l.add(piece{hole: true, n: pos - l.known})
	}
	if last := len(l.pieces) - 1; last >= 0 && !l.pieces[last].hole {
		l.pieces[last].data = append(l.pieces[last].data, data...)
		l.pieces[last].n += n
		l.known += n
	} else {
		l.add(piece{n: n, data: append(l.spare[:0], data...)})
		l.spare = nil
	}
	return j.emit(sink, false)
}

// fillHoles places data, which lies within [out, known) of the lane, over
// the holes it covers; samples where the lane already has audio are
// repeats and are dropped.
func (j *Joiner) fillHoles(l *lane, pos uint64, data []byte) {
	w := uint64(j.width)
	end := pos + uint64(len(data))/w
	out := make([]piece, 0, len(l.pieces)+2)
	cur := j.out
	for _, p := range l.pieces {
		lo, hi := max(cur, pos), min(cur+p.n, end)
		switch {
		case lo >= hi:
			out = append(out, p)
		case !p.hole:
			j.Late += hi - lo
			out = append(out, p)
		default:
			if lo > cur {
				out = append(out, piece{hole: true, n: lo - cur})
			}
			out = append(out, piece{n: hi - lo, data: append([]byte(nil), data[(lo-pos)*w:(hi-pos)*w]...)})
			if cur+p.n > hi {
				out = append(out, piece{hole: true, n: cur + p.n - hi})
			}
		}
		cur += p.n
	}
	l.pieces = out
}

func (l *lane) add(p piece) {
	l.pieces = append(l.pieces, p)
	l.known += p.n
}

// End marks channel ch as finished (its leg hung up): it no longer holds
// the others back, and what it lacks from now on is silence or a gap.
func (j *Joiner) End(sink Sink, ch int) error {
	j.lanes[ch].ended = true
	return j.emit(sink, false)
}

// Flush emits everything buffered, as at the end of the call: channels
// that fell short are filled up to the longest.
func (j *Joiner) Flush(sink Sink) error { return j.emit(sink, true) }

// emit moves the emission point as far as the channels allow and writes
// the interleaved audio and the gaps to sink.
func (j *Joiner) emit(sink Sink, final bool) error {
	var leader uint64
	for _, l := range j.lanes {
		leader = max(leader, l.known)
	}
	ready := leader
	for i := range j.lanes {
		l := &j.lanes[i]
		switch {
		case l.ended || final:
			if l.known < leader {
				l.add(piece{hole: true, n: leader - l.known})
			}
		case l.known+j.o.MaxLag < leader:
			// Too far behind: its missing audio is given up as a hole.
			l.add(piece{hole: true, n: leader - j.o.MaxLag - l.known})
		}
		ready = min(ready, l.known)
	}
	if !final {
		ready = min(ready, leader-min(leader, j.o.Delay))
	}
	if ready <= j.out {
		return nil
	}
	j.buf = j.buf[:0]
	flushAudio := func() error {
		if len(j.buf) == 0 {
			return nil
		}
		err := sink.Audio(j.buf)
		j.buf = j.buf[:0]
		return err
	}
	for j.out < ready {
		// The longest stretch over which every lane stays in one piece.
		step := ready - j.out
		allHoles := true
		for i := range j.lanes {
			p := &j.lanes[i].pieces[0]
			step = min(step, p.n)
			allHoles = allHoles && p.hole
		}
		if allHoles {
			if err := flushAudio(); err != nil {
				return err
			}
			if err := sink.Gap(step, callv1.GapReason_GAP_REASON_CLIENT_LOSS, j.o.GapDetail); err != nil {
				return err
			}
		} else {
			j.interleave(step)
		}
		for i := range j.lanes {
			j.lanes[i].consume(step, j.width)
		}
		j.out += step
	}
	return flushAudio()
}

// interleave appends step samples of every lane's first piece to buf.
func (j *Joiner) interleave(step uint64) {
	w := j.width
	if len(j.lanes) == 1 {
		j.buf = append(j.buf, j.lanes[0].pieces[0].data[:step*uint64(w)]...)
		return
	}
	start := len(j.buf)
	frame := w * len(j.lanes)
	j.buf = append(j.buf, make([]byte, int(step)*frame)...)
	out := j.buf[start:]
	for c := range j.lanes {
		p := &j.lanes[c].pieces[0]
		off := c * w
		switch {
		case p.hole:
			j.Filled += step
			for i := off; i < len(out); i += frame {
				copy(out[i:i+w], j.o.Silence)
			}
		case w == 1:
			// G.711: one byte a sample.
			for i, b := range p.data[:step] {
				out[i*frame+off] = b
			}
		default:
			for i := 0; i < int(step); i++ {
				out[i*frame+off] = p.data[i*w]
				out[i*frame+off+1] = p.data[i*w+1]
			}
		}
	}
}

// consume drops n samples from the front of the lane. The buffer of a
// piece fully emitted serves the lane's next piece, so that a steady
// stream allocates nothing.
func (l *lane) consume(n uint64, w int) {
	p := &l.pieces[0]
	if p.n == n {
		if !p.hole {
			l.spare = p.data[:0]
		}
		copy(l.pieces, l.pieces[1:])
		l.pieces[len(l.pieces)-1] = piece{}
		l.pieces = l.pieces[:len(l.pieces)-1]
		return
	}
	p.n -= n
	if !p.hole {
		p.data = p.data[n*uint64(w):]
	}
}
