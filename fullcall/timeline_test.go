package fullcall

import (
	"testing"
)

// TestTimelineSegmentsOfBothVersions: segments keep the talk shares, and
// segments stored before they were kept (version 1) still decode, without
// them, so calls checkpointed by an older instance resume on a newer one.
func TestTimelineSegmentsOfBothVersions(t *testing.T) {
	pts := []point{
		{agent: 12.5, agentOK: true, caller: 80, callerOK: true, talkOK: true, callerTalk: 100, agentTalk: 35, overlap: 35},
		{talkOK: true},
		{}, // a second the analysis did not make: no scores, no talk
	}
	got, err := decodePoints(encodePoints(pts))
	if err != nil || len(got) != 3 || got[0] != pts[0] || got[1] != pts[1] || got[2] != pts[2] {
		t.Fatalf("round trip: %+v, %v; want %+v", got, err, pts)
	}
	// Version 1: flags, agent float32, caller float32.
	v1 := []byte{3, 0, 0, 0x48, 0x41, 0, 0, 0xa0, 0x42}
	old, err := decodePoints(v1)
	if err != nil || len(old) != 1 || old[0].talkOK || !old[0].agentOK || old[0].agent != 12.5 || old[0].caller != 80 {
		t.Fatalf("version 1 segment: %+v, %v", old, err)
	}
	for _, bad := range [][]byte{v1[:5], append(encodePoints(pts[:1]), 1), func() []byte {
		b := encodePoints(pts[:1])
		b[len(b)-1] = 101
		return b
	}()} {
		if _, err := decodePoints(bad); err == nil {
			t.Errorf("decodePoints(%x) accepted", bad)
		}
	}
}

// FuzzDecodePoints: a stored segment of any bytes decodes or is refused
// with an error, never a panic, and what decodes encodes back to a
// segment that decodes to the same points.
func FuzzDecodePoints(f *testing.F) {
	f.Add(encodePoints([]point{{agent: 1, agentOK: true, talkOK: true, callerTalk: 50}}))
	f.Add([]byte{3, 0, 0, 0x48, 0x41, 0, 0, 0xa0, 0x42})
	f.Add([]byte{segmentV2})
	f.Fuzz(func(t *testing.T, b []byte) {
		pts, err := decodePoints(b)
		if err != nil {
			return
		}
		again, err := decodePoints(encodePoints(pts))
		if err != nil || len(again) != len(pts) {
			t.Fatalf("re-encoded %d points: %d, %v", len(pts), len(again), err)
		}
		for i := range pts {
			p, q := pts[i], again[i]
			same := p.talkOK == q.talkOK && p.agentOK == q.agentOK && p.callerOK == q.callerOK && p.callerTalk == q.callerTalk && p.agentTalk == q.agentTalk && p.overlap == q.overlap &&
				(p.agent == q.agent || p.agent != p.agent) && (p.caller == q.caller || p.caller != p.caller)
			if !same {
				t.Fatalf("point %d: %+v re-decoded as %+v", i, pts[i], again[i])
			}
		}
	})
}
