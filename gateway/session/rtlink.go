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
type rtLink struct {
	c         *Call
	maxChunks int

	mu      sync.Mutex
	q       []*realtimev1.AnalyzeRequest
	chunks  int // chunks in q
	closing bool
	wake    chan struct{}

	// sent remembers when recent chunks were handed over, to measure the
	// delay of the scores that cover them.
	sentMu sync.Mutex
	sent   [32]sentMark
	sentN  int

	episodes atomic.Uint32 // highest alert episode seen
	lastEnd  atomic.Uint64 // end of the last score received
	done     chan struct{} // closed when run returns
}

type sentMark struct {
	end uint64
	at  time.Time
}

func newRTLink(c *Call) *rtLink {
	n := int(c.m.o.RealtimeQueue / c.m.o.ChunkDuration)
	return &rtLink{c: c, maxChunks: max(n, 1), wake: make(chan struct{}, 1), done: make(chan struct{})}
}

func (l *rtLink) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// push queues a chunk, dropping the oldest queued chunk when full.
func (l *rtLink) push(ch *callv1.AudioChunk, at time.Time) {
	l.sentMu.Lock()
	l.sent[l.sentN%len(l.sent)] = sentMark{end: ch.StartSample + uint64(len(ch.Data)/l.c.frameBytes), at: at}
	l.sentN++
	l.sentMu.Unlock()
	l.mu.Lock()
	if l.chunks >= l.maxChunks {
		for i, r := range l.q {
			if old := r.GetChunk(); old != nil {
				l.q = append(l.q[:i], l.q[i+1:]...)
				l.chunks--
				l.c.m.m.dropped.Add(l.c.ctx, int64(len(old.Data)), dropOverflow)
				break
			}
		}
	}
	l.q = append(l.q, &realtimev1.AnalyzeRequest{Msg: &realtimev1.AnalyzeRequest_Chunk{Chunk: ch}})
	l.chunks++
	l.mu.Unlock()
	l.signal()
}

func (l *rtLink) pushGap(g *callv1.Gap) {
	l.mu.Lock()
	l.q = append(l.q, &realtimev1.AnalyzeRequest{Msg: &realtimev1.AnalyzeRequest_Gap{Gap: g}})
	l.mu.Unlock()
	l.signal()
}

func (l *rtLink) close() {
	l.mu.Lock()
	l.closing = true
	l.mu.Unlock()
	l.signal()
}

// run keeps a stream to realtime open for the call's life.
func (l *rtLink) run() {
	defer close(l.done)
	ctx := l.c.ctx
	backoff := 50 * time.Millisecond
	for attempt := 0; ; attempt++ {
		if ctx.Err() != nil {
			return
		}
		if attempt > 0 {
			l.c.m.m.reconnects.Add(ctx, 1, pathRealtime)
		}
		err := l.stream(ctx, attempt > 0)
		if err == nil || ctx.Err() != nil {
			return
		}
		l.mu.Lock()
		closing := l.closing
		l.mu.Unlock()
		if closing {
			return // the call is ending: no point moving it
		}
		l.c.log.Warn("realtime stream failed; moving the call", "err", err, "attempt", attempt+1)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// stream runs one Analyze stream until the call closes (nil) or the stream
// fails.
func (l *rtLink) stream(ctx context.Context, resume bool) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	client := realtimev1.NewRealtimeServiceClient(l.c.m.o.Realtime.Conn())
	s, err := client.Analyze(sctx)
	if err != nil {
		return err
	}
	open := &realtimev1.OpenCall{Call: l.c.info, AlertEpisodes: l.episodes.Load()}
	if resume {
		// Start where the queue starts, or at the current position.
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
					Detail: "realtime instance failed; scoring moved to another instance"}}}}}, false, 0)
		}
	}
	if err := s.Send(&realtimev1.AnalyzeRequest{Msg: &realtimev1.AnalyzeRequest_Open{Open: open}}); err != nil {
		return err
	}
	recvErr := make(chan error, 1)
	go func() { recvErr <- l.recv(s) }()
	for {
		l.mu.Lock()
		batch := l.q
		l.q, l.chunks = nil, 0
		closing := l.closing
		l.mu.Unlock()
		for i, r := range batch {
			if err := s.Send(r); err != nil {
				l.requeue(batch[i:])
				cancel()
				<-recvErr
				return err
			}
			if ch := r.GetChunk(); ch != nil {
				l.c.bytesBackend.Add(int64(len(ch.Data)))
				l.c.m.m.backendOut.Add(ctx, int64(len(ch.Data)), pathRealtime)
			}
		}
		if len(batch) > 0 {
			continue
		}
		if closing {
			s.Send(&realtimev1.AnalyzeRequest{Msg: &realtimev1.AnalyzeRequest_Close{Close: &realtimev1.CloseCall{}}})
			s.CloseSend()
			// Let the last scores arrive, within bounds.
			select {
			case <-recvErr:
			case <-time.After(2 * time.Second):
			case <-ctx.Done():
			}
			return nil
		}
		select {
		case <-l.wake:
		case err := <-recvErr:
			if err == nil {
				err = errors.New("realtime ended the stream before close")
			}
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// requeue puts unsent requests back at the front of the queue.
func (l *rtLink) requeue(rs []*realtimev1.AnalyzeRequest) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range rs {
		if r.GetChunk() != nil {
			n++
		}
	}
	l.q = append(rs[:len(rs):len(rs)], l.q...)
	l.chunks += n
	for l.chunks > l.maxChunks {
		for i, r := range l.q {
			if old := r.GetChunk(); old != nil {
				l.q = append(l.q[:i], l.q[i+1:]...)
				l.chunks--
				l.c.m.m.dropped.Add(l.c.ctx, int64(len(old.Data)), dropOverflow)
				break
			}
		}
	}
}

func (l *rtLink) recv(s realtimev1.RealtimeService_AnalyzeClient) error {
	for {
		r, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch m := r.Msg.(type) {
		case *realtimev1.AnalyzeResponse_Score:
			l.lastEnd.Store(m.Score.EndSample)
			l.observeDelay(m.Score.EndSample)
			if l.c.events != nil {
				l.c.events.Score(m.Score)
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
				Event: &fullcallv1.CallEvent_Alert{Alert: a}}}}, false, 0)
			if l.c.events != nil {
				l.c.events.Alert(a)
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
	var at time.Time
	for i := range min(l.sentN, len(l.sent)) {
		m := l.sent[i]
		if m.end >= end && (at.IsZero() || m.at.Before(at)) {
			at = m.at
		}
	}
	l.sentMu.Unlock()
	if !at.IsZero() {
		d := time.Since(at).Seconds()
		l.c.m.m.scoreDelay.Record(l.c.ctx, d)
		l.c.m.m.rtt.Record(l.c.ctx, d, pathRealtime)
	}
}
