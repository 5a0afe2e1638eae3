package session

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
	realtimev1 "github.com/calmline/calmline/proto/calmline/realtime/v1"
)

var (
	pathRealtime = metric.WithAttributes(attribute.String("backend", "realtime"))
	dropOverflow = metric.WithAttributes(attribute.String("path", "realtime"), attribute.String("reason", "queue_full"))
)

// rtLink carries a call to realtime. Latency comes first: audio waits in a
// bounded queue, and when realtime falls behind the oldest audio is dropped
// (counted; realtime sees the jump in the timeline and treats it as a gap).
// When the stream fails the call moves to another instance (the pool
// balances new streams over healthy ones), resuming at the current
// position; the interruption is reported to fullcall as a live-scoring gap.
// The stream's life (open, send, receive, reopen) is the shared link
// skeleton; what is realtime's own is here.
type rtLink struct {
	link[*realtimev1.AnalyzeRequest, *realtimev1.AnalyzeResponse]
	maxBytes int // of audio in q

	// Guarded by mu.
	q     []*realtimev1.AnalyzeRequest
	bytes int // of audio in q
	// tailOwned is set when q's last request is a chunk whose data this
	// link allocated (it merged chunks into it): more may be appended.
	tailOwned bool
	closing   bool

	// sent remembers when recent chunks were handed over, to measure the
	// delay of the scores that cover them.
	sentMu sync.Mutex
	marks  [32]sentMark
	marksN int

	episodes atomic.Uint32 // highest alert episode seen
	// from is where a resumed call's live scoring starts (its first
	// stream opens there); set before run.
	from    uint64
	lastEnd atomic.Uint64 // end of the last score received
	// unanswered is when (nanoseconds on the call's clock, 0 for none)
	// the first chunk went out on the current stream after the last
	// message came back from it; sentEnd is the end of the last chunk
	// sent. Together they tell a hung realtime from a slow one.
	unanswered atomic.Int64
	sentEnd    atomic.Uint64
	// heard is the current stream's instance's clock (Manager.heard);
	// guarded by mu.
	heard *atomic.Int64
	done  chan struct{} // closed when run returns
}

// sentMark is when (nanoseconds on the call's clock) the chunk ending at
// end was handed to the link.
type sentMark struct {
	end uint64
	at  int64
}

func newRTLink(c *Call) *rtLink {
	n := int(c.m.o.RealtimeQueue / c.m.o.ChunkDuration)
	l := &rtLink{maxBytes: max(n, 1) * c.chunkBytes, done: make(chan struct{})}
	l.c, l.out = c, l
	return l
}

// push queues a chunk, dropping the oldest queued audio when full. A chunk
// that continues the last queued one joins it (see mergeChunk): what
// waits for the sender goes out in one message.
func (l *rtLink) push(ch *callv1.AudioChunk, at time.Time) {
	l.sentMu.Lock()
	l.marks[l.marksN%len(l.marks)] = sentMark{end: ch.StartSample + uint64(len(ch.Data)/l.c.frameBytes), at: int64(at.Sub(l.c.clock))}
	l.marksN++
	l.sentMu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.checkStallLocked(at)
	for l.bytes > 0 && l.bytes+len(ch.Data) > l.maxBytes {
		l.dropOldestLocked()
	}
	l.bytes += len(ch.Data)
	if n := len(l.q); n > 0 {
		if last := l.q[n-1].GetChunk(); last != nil {
			if merged, ok := mergeChunk(last, ch, l.tailOwned, l.c.frameBytes, l.c.maxChunkBytes()); ok {
				l.q[n-1].Msg.(*realtimev1.AnalyzeRequest_Chunk).Chunk = merged
				l.tailOwned = true
				return // a sender is already due: the queue was not empty
			}
		}
	}
	l.q = append(l.q, &realtimev1.AnalyzeRequest{Msg: &realtimev1.AnalyzeRequest_Chunk{Chunk: ch}})
	l.tailOwned = false
	l.kickLocked()
}

// checkStallLocked gives up the current stream when realtime has left the
// audio sent on it unanswered too long: more than RealtimeStall since the
// first unanswered chunk, with at least 1.5 s of audio past the last score
// (a healthy instance scores every second, 160 ms after it ends). Closing
// the stream's context makes run move the call to another instance, as if
// the stream had failed.
func (l *rtLink) checkStallLocked(now time.Time) {
	stall := l.c.m.o.RealtimeStall
	since := l.unanswered.Load()
	if stall < 0 || since == 0 || l.stream == nil {
		return
	}
	waited := now.Sub(l.c.clock) - time.Duration(since)
	behind := l.sentEnd.Load() - min(l.lastEnd.Load(), l.sentEnd.Load())
	if waited < stall || behind < uint64(l.c.format.SampleRate)*3/2 {
		return
	}
	if l.heard != nil && now.UnixNano()-l.heard.Load() < int64(stall) {
		return // the instance answers other calls: slow, not hung
	}
	l.c.m.m.rtStalls.Add(l.c.ctx, 1, l.c.attrs)
	l.c.log.Warn("realtime left the call's audio unanswered; moving the call", "waited", waited.Round(time.Millisecond), "behind_s", float64(behind)/float64(l.c.format.SampleRate))
	l.stream = nil
	l.unanswered.Store(0)
	l.cancel() // run's Recv ends, and run reopens elsewhere
}

// dropOldestLocked drops the oldest queued chunk's worth of audio, counting
// it: the front of a merged chunk, or a whole chunk.
func (l *rtLink) dropOldestLocked() {
	for i, r := range l.q {
		if old := r.GetChunk(); old != nil {
			n := len(old.Data)
			if n > l.c.chunkBytes {
				// The front of merged audio (a new chunk: the one in the
				// request may be on its way out of a failed stream).
				n = l.c.chunkBytes
				l.q[i] = &realtimev1.AnalyzeRequest{Msg: &realtimev1.AnalyzeRequest_Chunk{Chunk: &callv1.AudioChunk{
					Seq: old.Seq, StartSample: old.StartSample + uint64(n/l.c.frameBytes), Data: old.Data[n:]}}}
			} else {
				copy(l.q[i:], l.q[i+1:])
				l.q[len(l.q)-1] = nil
				l.q = l.q[:len(l.q)-1]
				if i == len(l.q) {
					l.tailOwned = false
				}
			}
			l.bytes -= n
			l.c.m.m.dropped.Add(l.c.ctx, int64(n), dropOverflow)
			// This audio waited the whole queue and will never be scored:
			// for admission, realtime is that far behind.
			l.c.m.lag.observe(l.c.m.now(), l.c.m.o.RealtimeQueue.Seconds())
			return
		}
	}
}

func (l *rtLink) pushGap(g *callv1.Gap) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.q = append(l.q, &realtimev1.AnalyzeRequest{Msg: &realtimev1.AnalyzeRequest_Gap{Gap: g}})
	l.kickLocked()
}

func (l *rtLink) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closing = true
	l.kickLocked()
}

// readyLocked, nextLocked, sent and unsentLocked are the link
// skeleton's outbox: the queue goes out whole, then the close.
func (l *rtLink) readyLocked() bool { return len(l.q) > 0 || l.closing && !l.closeSent }

func (l *rtLink) nextLocked() ([]*realtimev1.AnalyzeRequest, *realtimev1.AnalyzeRequest, bool) {
	batch := l.q
	l.q, l.bytes, l.tailOwned = nil, 0, false
	if len(batch) == 0 && l.closing && !l.closeSent {
		return nil, &realtimev1.AnalyzeRequest{Msg: &realtimev1.AnalyzeRequest_Close{Close: &realtimev1.CloseCall{}}}, true
	}
	return batch, nil, false
}

func (l *rtLink) sent(r *realtimev1.AnalyzeRequest) {
	if ch := r.GetChunk(); ch != nil {
		l.c.rtOut.Add(int64(len(ch.Data)))
		l.c.rtChunks.Add(1)
		l.sentEnd.Store(ch.StartSample + uint64(len(ch.Data)/l.c.frameBytes))
		l.unanswered.CompareAndSwap(0, int64(l.c.since(l.c.clock)))
	}
}

// unsentLocked puts unsent requests back at the front of the queue,
// dropping the oldest audio past the bound.
func (l *rtLink) unsentLocked(rs []*realtimev1.AnalyzeRequest) {
	n := 0
	for _, r := range rs {
		if ch := r.GetChunk(); ch != nil {
			n += len(ch.Data)
		}
	}
	if len(l.q) == 0 {
		l.tailOwned = false
	}
	l.q = append(rs[:len(rs):len(rs)], l.q...)
	l.bytes += n
	for l.bytes > l.maxBytes {
		l.dropOldestLocked()
	}
}

// run keeps a stream to realtime open for the call's life.
func (l *rtLink) run() {
	defer close(l.done)
	l.keep(l, nil, nil)
}

// open opens an Analyze stream. The first starts where the call starts
// (or a resumed call's scoring resumes); a later one (the call moving
// after a failure) where the queue starts, or at the current position,
// and the stretch since the last score is reported to fullcall as a
// live-scoring gap.
func (l *rtLink) open(ctx context.Context, attempt int) (backendStream[*realtimev1.AnalyzeRequest, *realtimev1.AnalyzeResponse], context.CancelFunc, error) {
	sctx, cancel := context.WithCancel(ctx)
	client := realtimev1.NewRealtimeServiceClient(l.c.m.o.Realtime.Conn())
	s, err := client.Analyze(sctx)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	open := &realtimev1.OpenCall{Call: l.c.info, AlertEpisodes: l.episodes.Load()}
	if attempt == 1 {
		open.ResumeSample = l.from
	} else {
		l.mu.Lock()
		pos := l.c.timeline.Load()
		for _, r := range l.q {
			if ch := r.GetChunk(); ch != nil {
				pos = ch.StartSample
				break
			}
		}
		l.mu.Unlock()
		open.ResumeSample = pos
		if from := l.lastEnd.Load(); pos > from {
			l.c.fc.push(&fullcallv1.RecordRequest{Msg: &fullcallv1.RecordRequest_Event{Event: &fullcallv1.CallEvent{
				Event: &fullcallv1.CallEvent_LiveScoringGap{LiveScoringGap: &callv1.Gap{
					StartSample: from, Samples: pos - from, Reason: callv1.GapReason_GAP_REASON_FAILOVER,
					Detail: "realtime instance failed; scoring moved to another instance"}}}}})
		}
	}
	if err := s.Send(&realtimev1.AnalyzeRequest{Msg: &realtimev1.AnalyzeRequest_Open{Open: open}}); err != nil {
		cancel()
		return nil, nil, err
	}
	heard := l.c.m.peerHeard(s.Context())
	if heard != nil {
		heard.CompareAndSwap(0, l.c.m.now().UnixNano())
	}
	l.mu.Lock()
	l.heard = heard
	l.unanswered.Store(0)
	l.mu.Unlock()
	return s, cancel, nil
}

func (l *rtLink) openFailed(err error, attempt int) bool { return l.broken(err, false) }

func (l *rtLink) reopened(attempt int) {
	if attempt > 1 {
		l.c.m.m.reconnects.Add(l.c.ctx, 1, pathRealtime)
	}
}

// broken stops when the call is ending (no point moving it); else the
// call moves.
func (l *rtLink) broken(err error, _ bool) bool {
	l.mu.Lock()
	closing := l.closing
	l.mu.Unlock()
	if closing {
		return true
	}
	l.c.log.Warn("realtime stream failed; moving the call", "err", err)
	return false
}

// recv handles scores and alerts until realtime ends the stream after the
// call's close (nil) or the stream fails.
func (l *rtLink) recv(s backendStream[*realtimev1.AnalyzeRequest, *realtimev1.AnalyzeResponse]) error {
	l.mu.Lock()
	heard := l.heard
	l.mu.Unlock()
	for {
		r, err := s.Recv()
		if errors.Is(err, io.EOF) {
			l.mu.Lock()
			closeSent := l.closeSent
			l.mu.Unlock()
			if !closeSent {
				return errors.New("realtime ended the stream before close")
			}
			return nil
		}
		if err != nil {
			return err
		}
		l.unanswered.Store(0)
		if heard != nil {
			heard.Store(l.c.m.now().UnixNano())
		}
		switch m := r.Msg.(type) {
		case *realtimev1.AnalyzeResponse_Score:
			l.lastEnd.Store(m.Score.EndSample)
			l.observeDelay(m.Score.EndSample)
			if a := r.Analysis; a != nil {
				// The second's analysis goes to fullcall, which builds the
				// report from it instead of analysing the audio again.
				l.c.fc.push(&fullcallv1.RecordRequest{Msg: &fullcallv1.RecordRequest_Analysis{Analysis: a}})
			}
			if ev := l.c.eventsNow(); ev != nil {
				ev.Score(m.Score)
			}
			if obs := l.c.m.o.Observer; obs != nil {
				obs.CallScore(l.c, m.Score)
			}
		case *realtimev1.AnalyzeResponse_Alert:
			a := m.Alert
			if a.Episode > l.episodes.Load() {
				l.episodes.Store(a.Episode)
			}
			l.c.fc.push(&fullcallv1.RecordRequest{Msg: &fullcallv1.RecordRequest_Event{Event: &fullcallv1.CallEvent{
				Event: &fullcallv1.CallEvent_Alert{Alert: a}}}})
			if ev := l.c.eventsNow(); ev != nil {
				ev.Alert(a)
			}
			if obs := l.c.m.o.Observer; obs != nil {
				obs.CallAlert(l.c, a)
			}
		}
	}
}

// observeDelay records how long after the gateway had the audio that ends
// a second its score arrived.
func (l *rtLink) observeDelay(end uint64) {
	l.sentMu.Lock()
	at := int64(-1)
	for i := range min(l.marksN, len(l.marks)) {
		m := l.marks[i]
		if m.end >= end && (at < 0 || m.at < at) {
			at = m.at
		}
	}
	l.sentMu.Unlock()
	if at >= 0 {
		d := (l.c.since(l.c.clock) - time.Duration(at)).Seconds()
		l.c.m.m.scoreDelay.Record(l.c.ctx, d)
		l.c.m.lag.observe(l.c.m.now(), d)
		l.c.m.m.rtt.Record(l.c.ctx, d, pathRealtime)
	}
}
