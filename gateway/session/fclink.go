package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

var (
	pathFullcall   = metric.WithAttributes(attribute.String("backend", "fullcall"))
	dropReplayFull = metric.WithAttributes(attribute.String("path", "fullcall"), attribute.String("reason", "replay_buffer_full"))
	dropNoFullcall = metric.WithAttributes(attribute.String("path", "fullcall"), attribute.String("reason", "fullcall_lost"))
)

// fcLink carries a call to fullcall losslessly. Every message waits in the
// replay log until fullcall acknowledges it; when the stream fails, the
// call is reopened (on any instance) and everything after the last
// acknowledged chunk is sent again. The log is bounded: past the bound new
// audio is not kept, fullcall is told of the gap it leaves, and the call is
// marked incomplete, never silently truncated. Chunks carry the link's own
// sequence numbers, contiguous as fullcall requires even when audio is
// dropped.
//
// As for realtime, one goroutine (run) owns the stream, receiving
// acknowledgements and reopening it after a failure, and a short-lived
// goroutine (drain) sends what is new whenever there is some.
type fcLink struct {
	c        *Call
	maxBytes int

	mu         sync.Mutex
	log        []fcEntry // unacknowledged, in order
	next       int       // index in log of the next entry to send
	bytes      int
	acked      uint64
	lastSeq    uint64 // of the last chunk in the log
	incomplete bool
	closeReq   *fullcallv1.CloseCall
	stream     fullcallRecordClient // nil between streams
	cancel     context.CancelFunc   // ends stream
	sending    bool                 // a drain goroutine runs
	closeSent  bool                 // close went out on stream
	// sent remembers when recent chunks went out, to time their
	// acknowledgements (the backend's round trip).
	sent [16]sentSeq

	// opened is fullcall's answer to the first open.
	opened *fullcallv1.OpenedCall

	report chan *fullcallv1.Report // the stored report, once
	lost   chan error              // fullcall could not be reached for good
}

// sentSeq is when (nanoseconds on the call's clock) chunk seq was sent.
type sentSeq struct {
	seq uint64
	at  int64
}

type fcEntry struct {
	req *fullcallv1.RecordRequest
	// seq is the chunk's sequence number, or for other messages the
	// sequence number of the chunk before them.
	seq   uint64
	chunk bool
	bytes int
	// overflow marks the gap standing for audio dropped because the log
	// was full.
	overflow bool
}

func newFCLink(c *Call) *fcLink {
	b := int(c.m.o.ReplayBuffer.Seconds() * float64(c.format.BytesPerSecond()))
	return &fcLink{
		c:        c,
		maxBytes: max(b, c.chunkBytes),
		report:   make(chan *fullcallv1.Report, 1),
		lost:     make(chan error, 1),
	}
}

// pushChunk appends a chunk to the replay log under the link's next
// sequence number. When the log is full the chunk is not kept: a gap takes
// its place and the report will be marked incomplete. Dropping the newest
// audio, not the oldest, keeps what is already on its way contiguous.
func (l *fcLink) pushChunk(ch *callv1.AudioChunk) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := len(ch.Data); l.bytes+n > l.maxBytes {
		l.dropLocked(ch)
	} else {
		l.lastSeq++
		fc := &callv1.AudioChunk{Seq: l.lastSeq, StartSample: ch.StartSample, Data: ch.Data}
		l.log = append(l.log, fcEntry{req: &fullcallv1.RecordRequest{Msg: &fullcallv1.RecordRequest_Chunk{Chunk: fc}}, seq: l.lastSeq, chunk: true, bytes: n})
		l.bytes += n
	}
	l.kickLocked()
}

// dropLocked leaves a chunk out of a full log, in a gap.
func (l *fcLink) dropLocked(ch *callv1.AudioChunk) {
	samples := uint64(len(ch.Data) / l.c.frameBytes)
	l.c.m.m.dropped.Add(l.c.ctx, int64(len(ch.Data)), dropReplayFull)
	if !l.incomplete {
		l.incomplete = true
		l.c.m.m.incomplete.Add(l.c.ctx, 1, l.c.attrs)
		l.c.log.Error("fullcall replay buffer full; dropping audio, the report will be incomplete", "buffer_bytes", l.maxBytes)
	}
	// Extend the gap this overflow started, unless it has gone out.
	if k := len(l.log) - 1; k >= 0 && k >= l.next && l.log[k].overflow {
		if g := l.log[k].req.GetGap(); g.StartSample+g.Samples == ch.StartSample {
			g.Samples += samples
			return
		}
	}
	g := &callv1.Gap{StartSample: ch.StartSample, Samples: samples, Reason: callv1.GapReason_GAP_REASON_OVERFLOW,
		Detail: "the gateway's fullcall replay buffer was full"}
	l.log = append(l.log, fcEntry{req: &fullcallv1.RecordRequest{Msg: &fullcallv1.RecordRequest_Gap{Gap: g}}, seq: l.lastSeq, overflow: true})
}

// push appends a message other than a chunk to the replay log; it follows
// the last chunk.
func (l *fcLink) push(r *fullcallv1.RecordRequest) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closeSent {
		// The call's close is out: fullcall is finishing the report and
		// the stream takes nothing more. A message this late (realtime
		// answering after its bounded wait) is left out of the report.
		l.c.log.Debug("event after the call's close not recorded", "msg", fmt.Sprintf("%T", r.Msg))
		return
	}
	l.log = append(l.log, fcEntry{req: r, seq: l.lastSeq})
	l.kickLocked()
}

// pending returns the audio bytes waiting for fullcall's acknowledgement.
func (l *fcLink) pending() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.bytes
}

// ack forgets what fullcall has made durable.
func (l *fcLink) ack(seq uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if seq <= l.acked {
		return
	}
	l.acked = seq
	if m := l.sent[seq%uint64(len(l.sent))]; m.seq == seq {
		l.c.m.m.rtt.Record(l.c.ctx, (time.Since(l.c.clock) - time.Duration(m.at)).Seconds(), pathFullcall)
	}
	i := 0
	for ; i < len(l.log); i++ {
		e := l.log[i]
		if e.chunk && e.seq > seq || !e.chunk && e.seq >= seq {
			break
		}
		l.bytes -= e.bytes
	}
	// Clear the acknowledged entries: the backing array would otherwise
	// keep their audio reachable until append next reallocates it.
	clear(l.log[:i])
	l.log = l.log[i:]
	l.next = max(l.next-i, 0)
}

func (l *fcLink) close(end uint64, reason EndReason) {
	l.mu.Lock()
	l.closeReq = &fullcallv1.CloseCall{LastSeq: l.lastSeq, EndSample: end, Reason: reason}
	l.kickLocked()
	l.mu.Unlock()
}

// kickLocked starts a drain goroutine when there is a stream, something to
// send on it, and no drain running.
func (l *fcLink) kickLocked() {
	// Nothing goes out after the close: the stream is closed for sending
	// (a reopened stream starts with closeSent false and replays all).
	if l.sending || l.stream == nil || l.closeSent || l.next >= len(l.log) && l.closeReq == nil {
		return
	}
	l.sending = true
	l.c.wg.Add(1)
	go l.drain(l.stream, l.cancel)
}

// drain sends the log's new entries on s (and, once the call closes and
// everything is out, the close) until there is nothing more, or s fails.
func (l *fcLink) drain(s fullcallRecordClient, cancel context.CancelFunc) {
	defer l.c.wg.Done()
	for {
		l.mu.Lock()
		if l.stream != s {
			l.sending = false
			l.kickLocked() // for the stream that replaced s
			l.mu.Unlock()
			return
		}
		var batch []*fullcallv1.RecordRequest
		now := int64(time.Since(l.c.clock))
		for ; l.next < len(l.log); l.next++ {
			e := &l.log[l.next]
			batch = append(batch, e.req)
			if e.chunk {
				l.sent[e.seq%uint64(len(l.sent))] = sentSeq{e.seq, now}
			}
		}
		var closeReq *fullcallv1.CloseCall
		if len(batch) == 0 && l.closeReq != nil && !l.closeSent {
			closeReq = l.closeReq
			closeReq.Incomplete = l.incomplete
			l.closeSent = true
		}
		if len(batch) == 0 && closeReq == nil {
			l.sending = false
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
		for _, r := range batch {
			if err := s.Send(r); err != nil {
				l.failed(s, cancel) // run sees why from Recv and reopens
				return
			}
			if ch := r.GetChunk(); ch != nil {
				l.c.fcOut.Add(int64(len(ch.Data)))
			}
		}
		if closeReq != nil {
			if err := s.Send(&fullcallv1.RecordRequest{Msg: &fullcallv1.RecordRequest_Close{Close: closeReq}}); err != nil {
				l.failed(s, cancel)
				return
			}
			s.CloseSend()
			l.mu.Lock()
			l.sending = false
			l.kickLocked() // for a stream that replaced s meanwhile
			l.mu.Unlock()
			return
		}
	}
}

// failed retires a stream a send failed on.
func (l *fcLink) failed(s fullcallRecordClient, cancel context.CancelFunc) {
	l.mu.Lock()
	if l.stream == s {
		l.stream = nil
	}
	l.sending = false
	l.kickLocked() // run may have reopened meanwhile, seeing a drain running
	l.mu.Unlock()
	cancel()
}

// wait returns the stored report, or why there is none.
func (l *fcLink) wait(ctx context.Context) (*fullcallv1.Report, error) {
	select {
	case r := <-l.report:
		return r, nil
	case err := <-l.lost:
		return nil, err
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the report: %w", ctx.Err())
	}
}

// open opens a Record stream and waits for fullcall's answer. The stream
// lives until cancel, or the call's end.
func (l *fcLink) open(ctx context.Context, resume bool) (_ fullcallRecordClient, _ context.CancelFunc, err error) {
	sctx, cancel := context.WithCancel(l.c.ctx)
	defer func() {
		if err != nil {
			cancel()
		}
	}()
	client := fullcallv1.NewIngestServiceClient(l.c.m.o.Fullcall.Conn())
	s, err := client.Record(sctx)
	if err != nil {
		return nil, nil, err
	}
	if err := s.Send(&fullcallv1.RecordRequest{Msg: &fullcallv1.RecordRequest_Open{Open: &fullcallv1.OpenCall{Call: l.c.info, Resume: resume, RealtimeAnalysis: true}}}); err != nil {
		return nil, nil, err
	}
	type result struct {
		r   *fullcallv1.RecordResponse
		err error
	}
	got := make(chan result, 1)
	go func() {
		r, err := s.Recv()
		got <- result{r, err}
	}()
	select {
	case res := <-got:
		if res.err != nil {
			return nil, nil, res.err
		}
		op := res.r.GetOpened()
		if op == nil {
			return nil, nil, errors.New("fullcall did not answer open with opened")
		}
		l.ack(op.AckedSeq)
		if l.opened == nil {
			l.opened = op // read by Start, before the link's goroutines run
		}
		return s, cancel, nil
	case <-ctx.Done():
		return nil, nil, ctx.Err() // cancel ends the stream and the Recv
	}
}

type fullcallRecordClient = fullcallv1.IngestService_RecordClient

// run feeds fullcall until the report is stored or the call is cut.
func (l *fcLink) run(s fullcallRecordClient, cancel context.CancelFunc) {
	ctx := l.c.ctx
	backoff := 50 * time.Millisecond
	for attempt := 0; ; attempt++ {
		if s == nil {
			var err error
			openCtx, openCancel := context.WithTimeout(ctx, l.c.m.o.OpenTimeout)
			s, cancel, err = l.open(openCtx, true)
			openCancel()
			if status.Code(err) == codes.FailedPrecondition {
				l.giveUp(fmt.Errorf("fullcall cannot resume the call: %w", err))
				return
			}
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				l.c.log.Warn("reopening the fullcall stream failed", "err", err, "attempt", attempt)
				t := time.NewTimer(backoff)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return
				}
				backoff = min(2*backoff, 2*time.Second)
				continue
			}
			l.c.m.m.reconnects.Add(ctx, 1, pathFullcall)
			l.mu.Lock()
			replay := 0
			for _, e := range l.log {
				if e.chunk {
					replay++
				}
			}
			l.next = 0
			l.mu.Unlock()
			l.c.m.m.replayed.Add(ctx, int64(replay))
			l.c.log.Info("fullcall stream reopened; replaying", "chunks", replay)
		}
		l.mu.Lock()
		l.stream, l.cancel, l.closeSent = s, cancel, false
		l.kickLocked()
		l.mu.Unlock()
		err := l.recv(s)
		l.mu.Lock()
		if l.stream == s {
			l.stream = nil
		}
		l.mu.Unlock()
		cancel()
		if err == nil || ctx.Err() != nil {
			return // the report arrived, or the call was cut
		}
		if status.Code(err) == codes.Aborted {
			// fullcall fenced this stream out: the client resumed the
			// call elsewhere (another gateway, or a new connection that
			// fullcall saw first). Reopening would take it back from
			// there; this gateway lets it go instead.
			l.movedAway(err)
			return
		}
		s = nil
		l.c.log.Warn("fullcall stream failed; reopening", "err", err)
	}
}

// movedAway ends the call here without a report: it lives on where it
// was resumed.
func (l *fcLink) movedAway(err error) {
	l.mu.Lock()
	l.log, l.next, l.bytes = nil, 0, 0
	l.mu.Unlock()
	l.c.log.Info("the call was resumed elsewhere; this gateway lets it go", "err", err)
	select {
	case l.lost <- fmt.Errorf("the call was resumed elsewhere: %w", err):
	default:
	}
	l.c.Abort(fullcallv1.EndReason_END_REASON_DISCONNECTED, errors.New("the call was resumed elsewhere"))
}

func (l *fcLink) giveUp(err error) {
	l.mu.Lock()
	dropped := l.bytes
	l.log, l.next, l.bytes = nil, 0, 0
	l.mu.Unlock()
	l.c.m.m.dropped.Add(l.c.ctx, int64(dropped), dropNoFullcall)
	l.c.m.m.incomplete.Add(l.c.ctx, 1, l.c.attrs)
	l.c.log.Error("fullcall lost the call; its report will miss audio", "err", err)
	select {
	case l.lost <- err:
	default:
	}
	l.c.Abort(fullcallv1.EndReason_END_REASON_ERROR, err)
}

// recv handles acknowledgements and the report; it returns nil once the
// report is delivered.
func (l *fcLink) recv(s fullcallRecordClient) error {
	for {
		r, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return errors.New("fullcall ended the stream without a report")
		}
		if err != nil {
			return err
		}
		switch m := r.Msg.(type) {
		case *fullcallv1.RecordResponse_Ack:
			l.ack(m.Ack.Seq)
		case *fullcallv1.RecordResponse_Finished:
			l.report <- m.Finished.Report
			return nil
		}
	}
}
