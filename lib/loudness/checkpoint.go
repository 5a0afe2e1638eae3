package loudness

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// The analyser's state is checkpointable: MarshalBinary captures all of it
// (baselines, the frame and second being accumulated, talk state, call
// statistics, seconds not yet taken, a partial sample frame), and
// UnmarshalBinary on an Analyzer built with the same Options continues
// exactly where the first left off — the seconds and statistics that follow
// are bit-identical to an uninterrupted run. The encoding is versioned and
// its size does not grow with the call.

// stateMagic starts every encoded state; the last byte is the version.
var stateMagic = []byte{'L', 'D', 'N', 1}

// maxPending bounds the seconds a state may hold that were not taken: an
// hour of them is far beyond what any user of Seconds leaves behind.
const maxPending = 3600

// ErrState is wrapped by UnmarshalBinary's errors.
var ErrState = errors.New("loudness: bad analyser state")

// MarshalBinary implements encoding.BinaryMarshaler.
func (a *Analyzer) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, 128+64*len(a.chans)+48*len(a.out)+len(a.carry))
	b = append(b, stateMagic...)
	b = a.appendOptions(b)
	b = binary.AppendUvarint(b, uint64(a.frames))
	b = binary.AppendUvarint(b, uint64(a.seconds))
	b = binary.AppendUvarint(b, a.timeline)
	b = binary.AppendUvarint(b, uint64(a.overlapFr))
	b = binary.AppendUvarint(b, uint64(a.callerInt))
	b = binary.AppendUvarint(b, uint64(a.agentInt))
	for i := range a.chans {
		ch := &a.chans[i]
		b = appendFloat(b, ch.energy)
		b = binary.AppendUvarint(b, uint64(ch.n))
		b = appendFloat(b, ch.secDBSum)
		b = binary.AppendUvarint(b, uint64(ch.secActive))
		b = binary.AppendUvarint(b, uint64(ch.hang))
		b = appendBool(b, ch.talking)
		b = appendFloat(b, ch.baseSum)
		b = binary.AppendUvarint(b, uint64(ch.baseN))
		b = appendFloat(b, ch.stats.TalkSeconds)
		b = appendFloat(b, ch.stats.SilenceSeconds)
		b = binary.AppendUvarint(b, uint64(ch.stats.speechFrames))
		b = appendFloat(b, ch.stats.speechDBSum)
	}
	b = binary.AppendUvarint(b, uint64(len(a.out)))
	for _, s := range a.out {
		b = binary.AppendUvarint(b, uint64(s.Index))
		b = binary.AppendUvarint(b, s.EndSample)
		b = appendScore(b, s.AgentStress)
		b = appendScore(b, s.CallerPressure)
	}
	b = binary.AppendUvarint(b, uint64(len(a.carry)))
	b = append(b, a.carry...)
	return b, nil
}

// appendOptions records what the state was made for, so that it is never
// restored into an analyser of another shape.
func (a *Analyzer) appendOptions(b []byte) []byte {
	b = append(b, byte(a.o.Format.Codec))
	b = binary.AppendUvarint(b, uint64(a.o.Format.SampleRate))
	b = binary.AppendUvarint(b, uint64(a.o.Format.Channels))
	for _, r := range a.o.Roles {
		b = append(b, byte(r))
	}
	return appendBool(b, a.o.AgentScoring)
}

// UnmarshalBinary implements encoding.BinaryUnmarshaler. The Analyzer must
// have been built by New with the Options of the one that made the state;
// otherwise, or when data is not a state this version wrote, it returns an
// error wrapping ErrState and leaves a unchanged.
func (a *Analyzer) UnmarshalBinary(data []byte) error {
	d := decoder{b: data}
	if !d.prefix(stateMagic) {
		return fmt.Errorf("%w: not a %s state of this version", ErrState, ModelName)
	}
	want := a.appendOptions(nil)
	if !d.prefix(want) {
		return fmt.Errorf("%w: made for another format, channel roles or privacy mode", ErrState)
	}
	n := *a // restore into a copy; commit only when all of it decoded
	n.chans = append([]channel(nil), a.chans...)
	n.frames = d.int()
	n.seconds = d.int()
	n.timeline = d.uvarint()
	n.overlapFr = d.int()
	n.callerInt = d.int()
	n.agentInt = d.int()
	for i := range n.chans {
		ch := &n.chans[i]
		ch.energy = d.float()
		ch.n = d.int()
		ch.secDBSum = d.float()
		ch.secActive = d.int()
		ch.hang = d.int()
		ch.talking = d.bool()
		ch.baseSum = d.float()
		ch.baseN = d.int()
		ch.stats = ChannelStats{Role: ch.role}
		ch.stats.TalkSeconds = d.float()
		ch.stats.SilenceSeconds = d.float()
		ch.stats.speechFrames = d.int()
		ch.stats.speechDBSum = d.float()
		if ch.n >= frameSamples || ch.baseN > baselineFrames || ch.secActive > framesPerSec ||
			ch.energy < 0 || ch.stats.TalkSeconds < 0 || ch.stats.SilenceSeconds < 0 {
			d.fail("channel counters out of range")
		}
	}
	nout := d.int()
	if nout > maxPending {
		d.fail("too many pending seconds")
		nout = 0
	}
	out := make([]Second, 0, max(nout, 8))
	for range nout {
		if d.err != nil {
			break
		}
		s := Second{Index: d.int(), EndSample: d.uvarint()}
		s.AgentStress = d.score()
		s.CallerPressure = d.score()
		out = append(out, s)
	}
	nc := d.int()
	if nc >= n.o.Format.FrameBytes() {
		d.fail("partial sample frame too long")
	}
	carry := d.bytes(nc)
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	if d.err != nil {
		return fmt.Errorf("%w: %v", ErrState, d.err)
	}
	n.out = out
	n.carry = append(make([]byte, 0, n.o.Format.FrameBytes()), carry...)
	*a = n
	return nil
}

// Abstain reasons travel as codes so that a state carries no free text.
var abstainCodes = []string{"", AbstainNoSpeech, AbstainOff, AbstainNoRole}

func appendScore(b []byte, s Score) []byte {
	code := 0
	for i, r := range abstainCodes {
		if r == s.Abstain {
			code = i
		}
	}
	b = appendBool(b, s.OK)
	b = append(b, byte(code))
	return appendFloat(b, s.Value)
}

func appendFloat(b []byte, f float64) []byte {
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(f))
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// decoder reads a state; the first problem sticks in err and later reads
// return zeros.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(msg string) {
	if d.err == nil {
		d.err = errors.New(msg)
	}
}

func (d *decoder) prefix(p []byte) bool {
	if len(d.b) < len(p) || string(d.b[:len(p)]) != string(p) {
		return false
	}
	d.b = d.b[len(p):]
	return true
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("truncated")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// int reads a count; counts in a state fit easily in 2^40.
func (d *decoder) int() int {
	v := d.uvarint()
	if v > 1<<40 {
		d.fail("count out of range")
		return 0
	}
	return int(v)
}

func (d *decoder) float() float64 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 8 {
		d.fail("truncated")
		return 0
	}
	f := math.Float64frombits(binary.LittleEndian.Uint64(d.b))
	d.b = d.b[8:]
	if math.IsNaN(f) || math.IsInf(f, 0) {
		d.fail("not a finite number")
		return 0
	}
	return f
}

func (d *decoder) bool() bool {
	bs := d.bytes(1)
	if len(bs) == 1 && bs[0] > 1 {
		d.fail("bad boolean")
	}
	return len(bs) == 1 && bs[0] == 1
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.fail("truncated")
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) score() Score {
	s := Score{OK: d.bool()}
	code := d.bytes(1)
	if len(code) == 1 {
		if int(code[0]) >= len(abstainCodes) {
			d.fail("unknown abstain reason")
		} else {
			s.Abstain = abstainCodes[code[0]]
		}
	}
	s.Value = d.float()
	if s.OK && (s.Value < 0 || s.Value > 100) || !s.OK && s.Value != 0 {
		d.fail("score out of range")
	}
	return s
}
