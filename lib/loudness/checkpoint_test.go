package loudness

import (
	"errors"
	"math"
	"reflect"
	"testing"

	"github.com/calmline/calmline/lib/audio"
)

// run feeds data to a in pieces of the given sizes (cycling), with a gap of
// gapSamples after the piece that crosses gapAt bytes, and returns every
// second and the final statistics.
func run(a *Analyzer, data []byte, pieces []int, gapAt int, gapSamples uint64, restoreAt int, restore func(*Analyzer) *Analyzer) ([]Second, Stats) {
	var secs []Second
	off, i := 0, 0
	gapped, restored := false, false
	for off < len(data) {
		n := min(pieces[i%len(pieces)], len(data)-off)
		i++
		a.Write(data[off : off+n])
		off += n
		secs = append(secs, a.Seconds()...)
		if !gapped && off >= gapAt {
			gapped = true
			a.Gap(gapSamples)
			secs = append(secs, a.Seconds()...)
		}
		if !restored && restore != nil && off >= restoreAt {
			restored = true
			a = restore(a)
		}
	}
	secs = append(secs, a.Flush()...)
	return secs, a.Stats()
}

func TestRestoredAnalyserContinuesExactly(t *testing.T) {
	data := stereo(9, func(ch int, t float64) float64 {
		switch {
		case ch == 0 && t < 3.3:
			return 5000
		case ch == 0 && t > 6:
			return 14000 // louder than the caller's baseline
		case ch == 1 && t > 2.9 && t < 7.1:
			return 3500
		}
		return 0
	})
	// Odd piece sizes put the checkpoint inside frames, seconds and sample
	// frames (a stereo μ-law sample frame is 2 bytes).
	pieces := []int{1601, 333, 7, 4000}
	want, wantStats := run(newStereo(t), data, pieces, 30000, 1234, -1, nil)
	// 53001 and 113701 fall in the hangover after a turn ends.
	for _, at := range []int{0, 1, 5001, 16000, 31113, 53001, 70001, 113701, len(data) - 1} {
		got, gotStats := run(newStereo(t), data, pieces, 30000, 1234, at, func(old *Analyzer) *Analyzer {
			state, err := old.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			// Scribble on the old one: the state must not share memory.
			old.Write(make([]byte, 999))
			fresh := newStereo(t)
			if err := fresh.UnmarshalBinary(state); err != nil {
				t.Fatalf("restoring at byte %d: %v", at, err)
			}
			return fresh
		})
		if !reflect.DeepEqual(got, want) {
			t.Errorf("restored at byte %d: %d seconds differ from the uninterrupted %d", at, len(got), len(want))
		}
		if !reflect.DeepEqual(gotStats, wantStats) {
			t.Errorf("restored at byte %d: stats %+v; want %+v", at, gotStats, wantStats)
		}
	}
}

func TestStateSizeDoesNotGrowWithTheCall(t *testing.T) {
	a := newStereo(t)
	a.Write(stereo(2, func(int, float64) float64 { return 4000 }))
	a.Seconds()
	short, _ := a.MarshalBinary()
	a.Write(stereo(60, func(int, float64) float64 { return 4000 }))
	a.Seconds()
	long, _ := a.MarshalBinary()
	if len(long) > len(short)+16 { // varints grow by a few bytes
		t.Errorf("state after 62 s is %d bytes, after 2 s %d", len(long), len(short))
	}
}

func TestUnmarshalRefusesOtherShapesAndGarbage(t *testing.T) {
	a := newStereo(t)
	a.Write(stereo(1.5, func(int, float64) float64 { return 4000 }))
	state, _ := a.MarshalBinary()
	mono, _ := New(Options{Format: audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 1}, Roles: []Role{Agent}, AgentScoring: true})
	swapped, _ := New(Options{Format: audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 2}, Roles: []Role{Agent, Caller}, AgentScoring: true})
	private, _ := New(Options{Format: audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 2}, Roles: []Role{Caller, Agent}})
	for name, target := range map[string]*Analyzer{"mono": mono, "swapped roles": swapped, "agent scoring off": private} {
		if err := target.UnmarshalBinary(state); !errors.Is(err, ErrState) {
			t.Errorf("%s: %v; want ErrState", name, err)
		}
	}
	for _, bad := range [][]byte{nil, []byte("LDN"), state[:len(state)-1], append(append([]byte(nil), state...), 0)} {
		b := newStereo(t)
		if err := b.UnmarshalBinary(bad); !errors.Is(err, ErrState) {
			t.Errorf("%d bytes: %v; want ErrState", len(bad), err)
		}
		if b.Timeline() != 0 {
			t.Errorf("a failed restore changed the analyser")
		}
	}
}

func FuzzUnmarshalBinary(f *testing.F) {
	a, _ := New(Options{Format: audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 2}, Roles: []Role{Caller, Agent}, AgentScoring: true})
	f.Add([]byte{})
	for _, secs := range []float64{0.013, 1.02} {
		a.Write(stereo(secs, func(int, float64) float64 { return 4000 }))
		s, _ := a.MarshalBinary()
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b, _ := New(Options{Format: audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 2}, Roles: []Role{Caller, Agent}, AgentScoring: true})
		if err := b.UnmarshalBinary(data); err != nil {
			return
		}
		// Whatever decoded must be usable: more audio and a flush never
		// panic, and scores stay in range.
		b.Write(stereo(1.1, func(int, float64) float64 { return 4000 }))
		for _, s := range b.Flush() {
			for _, sc := range []Score{s.AgentStress, s.CallerPressure} {
				if sc.OK && (sc.Value < 0 || sc.Value > 100 || math.IsNaN(sc.Value)) {
					t.Fatalf("score %v out of range", sc.Value)
				}
			}
		}
		again, err := b.MarshalBinary()
		if err != nil || len(again) == 0 {
			t.Fatalf("re-marshal: %v", err)
		}
	})
}
