package twilio

import (
	"testing"
	"time"

	"github.com/calmline/calmline/gateway/stereo"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
)

// countSink counts what a joiner emits.
type countSink struct{ audio, gap uint64 }

func (s *countSink) Audio(b []byte) error { s.audio += uint64(len(b)); return nil }
func (s *countSink) Gap(n uint64, _ callv1.GapReason, _ string) error {
	s.gap += n
	return nil
}

// FuzzMediaPlacement feeds two tracks' media with any timestamps, in
// order as a TCP stream delivers them: whatever the stamps say, no
// received sample is dropped (the joiner counts none late), and the
// joined stream accounts for every sample of the longer track.
func FuzzMediaPlacement(f *testing.F) {
	f.Add([]byte{0, 160, 20, 1, 160, 20, 0, 160, 17, 1, 160, 23, 0, 160, 0, 1, 160, 255})
	f.Add([]byte{0, 1, 0, 0, 2, 200, 1, 3, 100})
	f.Fuzz(func(t *testing.T, data []byte) {
		j, err := stereo.New(stereo.Options{Channels: 2, Silence: []byte{0xff}, MaxLag: 3200, MaxHole: 8000 * 3600})
		if err != nil {
			t.Fatal(err)
		}
		c := &conn{p: &protocol{o: Options{JitterTolerance: 60 * time.Millisecond}}, env: Twilio, rate: 8000, width: 1, joiner: j}
		sink := &countSink{}
		var ts [2]int64
		var written [2]uint64
		for i := 0; i+2 < len(data); i += 3 {
			lane := int(data[i] & 1)
			n := int(data[i+1]) + 1
			ts[lane] = max(ts[lane]+int64(int8(data[i+2])), 0)
			m := &Media{Timestamp: uint64(ts[lane]), HasTimestamp: data[i]&2 == 0, Payload: make([]byte, n)}
			pos := c.place(lane, m)
			if err := j.Write(sink, lane, pos, m.Payload); err != nil {
				t.Fatalf("write: %v", err)
			}
			written[lane] += uint64(n)
		}
		j.Flush(sink)
		if j.Late != 0 {
			t.Fatalf("%d received samples dropped as late", j.Late)
		}
		if got, want := sink.audio/2+sink.gap, j.Position(); got != want {
			t.Fatalf("emitted %d frames and gaps; the position is %d", got, want)
		}
		if j.Position() < max(written[0], written[1]) {
			t.Fatalf("position %d; the tracks wrote %v", j.Position(), written)
		}
	})
}
