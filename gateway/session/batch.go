package session

import callv1 "github.com/calmline/calmline/proto/calmline/call/v1"

// mergeChunk joins chunk next to last, queued before it and not yet handed
// to a stream, when next continues last on the timeline and the two fit in
// limit bytes. It is how both links batch naturally: a link's sender takes
// everything queued for the call, and what queued while it was busy (or
// not yet scheduled) goes out in one message instead of one per chunk,
// while an idle link sends each chunk as it comes (no timer, no added
// latency). Chunks are runs of whole sample frames, so realtime and
// fullcall take a merged chunk as they take any other.
//
// The merged chunk keeps last's sequence number (fullcall's are the
// link's own, one per message). owned says last's data was allocated by
// an earlier merge, and so may grow in place; otherwise both chunks'
// data are copied into a new one (a chunk's data is shared by the two
// links).
func mergeChunk(last, next *callv1.AudioChunk, owned bool, frameBytes, limit int) (*callv1.AudioChunk, bool) {
	if last.StartSample+uint64(len(last.Data)/frameBytes) != next.StartSample || len(last.Data)+len(next.Data) > limit {
		return nil, false
	}
	need := len(last.Data) + len(next.Data)
	if owned && need <= cap(last.Data) {
		last.Data = append(last.Data, next.Data...)
		return last, true
	}
	// Room for twice as much, never past limit: append's own growth
	// would go past it.
	data := make([]byte, len(last.Data), min(limit, 2*need))
	copy(data, last.Data)
	data = append(data, next.Data...)
	if owned {
		last.Data = data
		return last, true
	}
	return &callv1.AudioChunk{Seq: last.Seq, StartSample: last.StartSample, Data: data}, true
}
