package stereo

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/calmline/calmline/lib/audio"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
)

// sink records what a Joiner emits: the interleaved stream with gaps
// written as '_' markers of one frame each (tests use small counts).
type sink struct {
	audio []byte
	ops   []string
	gaps  uint64
}

func (s *sink) Audio(d []byte) error {
	s.audio = append(s.audio, d...)
	s.ops = append(s.ops, fmt.Sprintf("audio %d", len(d)))
	return nil
}

func (s *sink) Gap(n uint64, r callv1.GapReason, _ string) error {
	s.gaps += n
	s.ops = append(s.ops, fmt.Sprintf("gap %d", n))
	return nil
}

func fill(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

func newJoiner(t *testing.T, channels int, maxLag uint64) *Joiner {
	t.Helper()
	j, err := New(Options{Channels: channels, Silence: []byte{0xff}, MaxLag: maxLag, MaxHole: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// pattern renders an interleaved stereo stream compactly: the pairs of
// bytes run-length encoded ("ab×3 a.×2" where '.' is silence).
func pattern(d []byte) string {
	name := func(b byte) string {
		if b == 0xff {
			return "."
		}
		return string(rune(b))
	}
	var parts []string
	for i := 0; i+1 < len(d); {
		k := i
		for k+1 < len(d) && d[k] == d[i] && d[k+1] == d[i+1] {
			k += 2
		}
		parts = append(parts, fmt.Sprintf("%s%s×%d", name(d[i]), name(d[i+1]), (k-i)/2))
		i = k
	}
	return strings.Join(parts, " ")
}

func TestJoinerAlignsTwoChannelsByPosition(t *testing.T) {
	for _, c := range []struct {
		name   string
		writes func(j *Joiner, s *sink)
		want   string
		gaps   uint64
		late   uint64
	}{
		{"aligned", func(j *Joiner, s *sink) {
			for i := range 3 {
				j.Write(s, 0, uint64(i*4), fill('a', 4))
				j.Write(s, 1, uint64(i*4), fill('b', 4))
			}
		}, "ab×12", 0, 0},
		{"one channel a packet ahead", func(j *Joiner, s *sink) {
			j.Write(s, 1, 0, fill('b', 4))
			j.Write(s, 1, 4, fill('b', 4))
			j.Write(s, 0, 0, fill('a', 4))
			j.Write(s, 0, 4, fill('a', 4))
		}, "ab×8", 0, 0},
		{"out of order within a channel", func(j *Joiner, s *sink) {
			j.Write(s, 0, 4, fill('A', 4))
			j.Write(s, 0, 0, fill('a', 4))
			j.Write(s, 1, 0, fill('b', 8))
		}, "ab×4 Ab×4", 0, 0},
		{"a channel that is silent is filled after the lag", func(j *Joiner, s *sink) {
			for i := range 4 {
				j.Write(s, 0, uint64(i*4), fill('a', 4))
			}
		}, "a.×8", 0, 0}, // 16 written, 8 held back (MaxLag)
		{"a late packet is dropped", func(j *Joiner, s *sink) {
			for i := range 4 {
				j.Write(s, 0, uint64(i*4), fill('a', 4))
			}
			j.Write(s, 1, 0, fill('b', 4)) // its place was emitted as silence
			j.Write(s, 1, 8, fill('b', 8))
		}, "a.×8 ab×8", 0, 4},
		{"repeated packets are dropped", func(j *Joiner, s *sink) {
			j.Write(s, 0, 0, fill('a', 4))
			j.Write(s, 0, 0, fill('x', 4))
			j.Write(s, 1, 0, fill('b', 4))
			j.Write(s, 1, 2, fill('y', 4))
		}, "ab×4", 0, 4 + 2},
		{"a hole in both channels is a gap", func(j *Joiner, s *sink) {
			j.Write(s, 0, 0, fill('a', 4))
			j.Write(s, 1, 0, fill('b', 4))
			j.Write(s, 0, 10, fill('a', 4))
			j.Write(s, 1, 10, fill('b', 4))
		}, "ab×8", 6, 0},
		{"a hole in one channel is silence", func(j *Joiner, s *sink) {
			j.Write(s, 0, 0, fill('a', 8))
			j.Write(s, 1, 0, fill('b', 2))
			j.Write(s, 1, 6, fill('b', 2))
		}, "ab×2 a.×4 ab×2", 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			j, s := newJoiner(t, 2, 8), &sink{}
			c.writes(j, s)
			if got := pattern(s.audio); got != c.want || s.gaps != c.gaps || j.Late != c.late {
				t.Errorf("emitted %s, gaps %d, late %d; want %s, gaps %d, late %d (ops %v)", got, s.gaps, j.Late, c.want, c.gaps, c.late, s.ops)
			}
		})
	}
}

func TestJoinerEndsAndFlushes(t *testing.T) {
	j, s := newJoiner(t, 2, 100), &sink{}
	j.Write(s, 0, 0, fill('a', 4))
	j.Write(s, 1, 0, fill('b', 8))
	// The caller's leg hangs up: the agent's audio no longer waits.
	j.End(s, 0)
	j.Write(s, 1, 8, fill('b', 4))
	if got := pattern(s.audio); got != "ab×4 .b×8" {
		t.Errorf("after End: %s", got)
	}
	if err := j.Write(s, 0, 12, fill('a', 4)); err == nil {
		t.Error("a write to an ended channel was accepted")
	}
	// Flush emits what a channel holds beyond the other.
	j2, s2 := newJoiner(t, 2, 100), &sink{}
	j2.Write(s2, 0, 0, fill('a', 6))
	j2.Write(s2, 1, 0, fill('b', 2))
	j2.Flush(s2)
	if got := pattern(s2.audio); got != "ab×2 a.×4" || j2.Position() != 6 {
		t.Errorf("after Flush: %s at %d", got, j2.Position())
	}
}

func TestJoinerMonoPassesAudioAndReportsHoles(t *testing.T) {
	j, s := newJoiner(t, 1, 0), &sink{}
	j.Write(s, 0, 0, fill('a', 4))
	j.Write(s, 0, 4, fill('b', 4))
	j.Write(s, 0, 20, fill('c', 4))
	if got := strings.Join(s.ops, ","); got != "audio 4,audio 4,gap 12,audio 4" || string(s.audio) != "aaaabbbbcccc" {
		t.Errorf("mono: %s %q", got, s.audio)
	}
}

func TestJoinerBoundsWhatItHolds(t *testing.T) {
	j, s := newJoiner(t, 2, 160), &sink{}
	for i := range 100 {
		j.Write(s, 0, uint64(i*160), fill('a', 160))
		if b := j.Buffered(); b > 320 {
			t.Fatalf("buffered %d samples with one channel silent; want at most MaxLag plus a packet", b)
		}
	}
	if err := j.Write(s, 0, 100*160+1001, fill('a', 1)); !errors.Is(err, ErrHole) {
		t.Errorf("jump beyond MaxHole: %v", err)
	}
	if _, err := New(Options{Channels: 3, Silence: []byte{0}}); err == nil {
		t.Error("three channels accepted")
	}
	if err := j.Write(s, 0, 0, []byte{1, 2, 3}); err != nil {
		t.Errorf("odd write of 1-byte samples: %v", err)
	}
	j16, _ := New(Options{Channels: 2, Silence: []byte{0, 0}})
	if err := j16.Write(s, 0, 0, []byte{1, 2, 3}); err == nil {
		t.Error("half a 16-bit sample accepted")
	}
}

func TestSplitAndInterleaveRoundTrip(t *testing.T) {
	pcm := make([]int16, 200)
	for i := range pcm {
		pcm[i] = int16(i*97) - 5000
	}
	rec := &audio.Recording{Format: audio.Format{Codec: audio.CodecL16, SampleRate: 8000, Channels: 2}, Data: audio.Encode(nil, pcm, audio.CodecL16)}
	chans, err := Split(rec, audio.CodecL16)
	if err != nil || len(chans) != 2 || len(chans[0]) != 200 {
		t.Fatalf("split: %d channels, %v", len(chans), err)
	}
	if !bytes.Equal(Interleave(chans, 2), rec.Data) {
		t.Error("Interleave(Split(x)) != x")
	}
	mu, err := Split(rec, audio.CodecPCMU)
	if err != nil || len(mu[1]) != 100 || mu[1][0] != audio.LinearToMulaw(pcm[1]) {
		t.Errorf("transcoding split: %v", err)
	}
}

// FuzzJoiner writes arbitrary packets and checks the joiner's invariants:
// the emitted stream is whole frames, its length plus gaps equals the
// position, nothing is emitted twice, and what is held stays bounded.
func FuzzJoiner(f *testing.F) {
	f.Add([]byte{0, 0, 4, 1, 0, 4, 0, 4, 4, 1, 8, 2}, uint8(8))
	f.Add([]byte{1, 200, 4, 0, 0, 40, 1, 0, 2, 0, 250, 1}, uint8(0))
	f.Fuzz(func(t *testing.T, ops []byte, lag uint8) {
		j, err := New(Options{Channels: 2, Silence: []byte{0xff}, MaxLag: uint64(lag), MaxHole: 512})
		if err != nil {
			t.Fatal(err)
		}
		s := &sink{}
		var top uint64
		for i := 0; i+2 < len(ops); i += 3 {
			ch, pos, n := int(ops[i]%3), uint64(ops[i+1])*2, int(ops[i+2]%64)
			if ch == 2 {
				j.End(s, int(ops[i+1]%2))
				continue
			}
			if err := j.Write(s, ch, pos, fill('a'+byte(ch), n)); err != nil {
				continue
			}
			top = max(top, pos+uint64(n))
			if len(s.audio)%2 != 0 {
				t.Fatalf("emitted %d bytes: not whole stereo frames", len(s.audio))
			}
			if uint64(len(s.audio)/2)+s.gaps != j.Position() {
				t.Fatalf("emitted %d frames and %d gap samples; position %d", len(s.audio)/2, s.gaps, j.Position())
			}
			if j.Buffered() > uint64(lag)+64+512 {
				t.Fatalf("holding %d samples", j.Buffered())
			}
		}
		j.Flush(s)
		if uint64(len(s.audio)/2)+s.gaps != j.Position() || j.Position() > top+uint64(lag)+512 {
			t.Fatalf("after flush: %d frames + %d gaps, position %d, top %d", len(s.audio)/2, s.gaps, j.Position(), top)
		}
		for i := 0; i+1 < len(s.audio); i += 2 {
			if (s.audio[i] != 'a' && s.audio[i] != 0xff) || (s.audio[i+1] != 'b' && s.audio[i+1] != 0xff) {
				t.Fatalf("frame %d is %q: channels mixed up", i/2, s.audio[i:i+2])
			}
		}
	})
}

// discard is a Sink that keeps nothing.
type discard struct{}

func (discard) Audio([]byte) error                         { return nil }
func (discard) Gap(uint64, callv1.GapReason, string) error { return nil }

// BenchmarkJoiner joins two tracks of 20 ms μ-law packets, as a
// Twilio-style stream sends them: one op is one second of stereo audio.
func BenchmarkJoiner(b *testing.B) {
	j, _ := New(Options{Channels: 2, Silence: []byte{0xff}, MaxLag: 3200})
	pkt := make([]byte, 160)
	var pos uint64
	b.ReportAllocs()
	b.SetBytes(16000)
	for range b.N {
		for range 50 {
			j.Write(discard{}, 0, pos, pkt)
			j.Write(discard{}, 1, pos, pkt)
			pos += 160
		}
	}
}
