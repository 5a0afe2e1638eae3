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
// acknowledged chunk is sent again. The log is bounded: past the bound the
// oldest audio is dropped and the call is marked incomplete, never silently
// truncated.
type fcLink struct {
	c        *Call
	maxBytes int

	mu         sync.Mutex
	log        []fcEntry // unacknowledged, in order
	next       int       // index in log of the next entry to send
	bytes      int
	acked      uint64
	incomplete bool
	closeReq   *fullcallv1.CloseCall
	wake       chan struct{}
	// sent remembers when recent chunks went out, to time their
	// acknowledgements (the backend's round trip).
	sent [64]sentSeq

	report chan *fullcallv1.Report // the stored report, once
	lost   chan error              // fullcall could not be reached for good
}

type sentSeq struct {
	seq uint64
	at  time.Time
}

type fcEntry struct {
	req *fullcallv1.RecordRequest
	// seq is the chunk's sequence number, or for other messages the
	// sequence number of the chunk before them.
	seq   uint64
	chunk bool
	bytes int
}

func newFCLink(c *Call) *fcLink {
	b := int(c.m.o.ReplayBuffer.Seconds() * float64(c.format.BytesPerSecond()))
	return &fcLink{
		c:        c,
		maxBytes: max(b, c.chunkBytes),
		wake:     make(chan struct{}, 1),
		report:   make(chan *fullcallv1.Report, 1),
		lost:     make(chan error, 1),
	}
}

func (l *fcLink) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *fcLink) pushChunk(ch *callv1.AudioChunk) {
	l.push(&fullcallv1.RecordRequest{Msg: &fullcallv1.RecordRequest_Chunk{Chunk: ch}}, true, ch.Seq)
}

// push appends a message to the replay log. For messages other than chunks
// seq is ignored: they follow the last chunk pushed.
func (l *fcLink) push(r *fullcallv1.RecordRequest, chunk bool, seq uint64) {
	n := 0
	if ch := r.GetChunk(); ch != nil {
		n = len(ch.Data)
	}
	l.mu.Lock()
	if !chunk {
		seq = l.c.seq.Load()
	}
	l.log = append(l.log, fcEntry{req: r, seq: seq, chunk: chunk, bytes: n})
	l.bytes += n
	for l.bytes > l.maxBytes {
		// Drop the oldest chunk; the report will say the call is
		// incomplete.
		for i, e := range l.log {
			if e.chunk {
				l.log = append(l.log[:i], l.log[i+1:]...)
				if i < l.next {
					l.next--
				}
				l.bytes -= e.bytes
				l.c.m.m.dropped.Add(l.c.ctx, int64(e.bytes), dropReplayFull)
				if !l.incomplete {
					l.incomplete = true
					l.c.m.m.incomplete.Add(l.c.ctx, 1, l.c.attrs)
					l.c.log.Error("fullcall replay buffer full; dropping audio, the report will be incomplete", "buffer_bytes", l.maxBytes)
				}
				break
			}
		}
	}
	l.mu.Unlock()
	l.signal()
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
		l.c.m.m.rtt.Record(l.c.ctx, time.Since(m.at).Seconds(), pathFullcall)
	}
	i := 0
	for ; i < len(l.log); i++ {
		e := l.log[i]
		if e.chunk && e.seq > seq || !e.chunk && e.seq >= seq {
			break
		}
		l.bytes -= e.bytes
	}
	l.log = l.log[i:]
	l.next = max(l.next-i, 0)
}

func (l *fcLink) close(lastSeq, end uint64, reason EndReason) {
	l.mu.Lock()
	l.closeReq = &fullcallv1.CloseCall{LastSeq: lastSeq, EndSample: end, Reason: reason}
	l.mu.Unlock()
	l.signal()
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

// open opens a Record stream and waits for fullcall's answer.
func (l *fcLink) open(ctx context.Context, resume bool) (fullcallRecordClient, error) {
	client := fullcallv1.NewIngestServiceClient(l.c.m.o.Fullcall.Conn())
	s, err := client.Record(l.c.ctx)
	if err != nil {
		return nil, err
	}
	if err := s.Send(&fullcallv1.RecordRequest{Msg: &fullcallv1.RecordRequest_Open{Open: &fullcallv1.OpenCall{Call: l.c.info, Resume: resume}}}); err != nil {
		return nil, err
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
			return nil, res.err
		}
		op := res.r.GetOpened()
		if op == nil {
			return nil, errors.New("fullcall did not answer open with opened")
		}
		l.ack(op.AckedSeq)
		return s, nil
	case <-ctx.Done():
		// The stream lives on the call's context; a stuck open is cut when
		// the call ends. Report the timeout now.
		return nil, ctx.Err()
	}
}

type fullcallRecordClient = fullcallv1.IngestService_RecordClient

// run feeds fullcall until the report is stored or the call is cut.
func (l *fcLink) run(s fullcallRecordClient) {
	ctx := l.c.ctx
	backoff := 50 * time.Millisecond
	for attempt := 0; ; attempt++ {
		if s == nil {
			var err error
			openCtx, cancel := context.WithTimeout(ctx, l.c.m.o.OpenTimeout)
			s, err = l.open(openCtx, true)
			cancel()
			if status.Code(err) == codes.FailedPrecondition {
				l.giveUp(fmt.Errorf("fullcall cannot resume the call: %w", err))
				return
			}
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				l.c.log.Warn("reopening the fullcall stream failed", "err", err, "attempt", attempt)
				select {
				case <-time.After(backoff):
				case <-ctx.Done():
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
		done, err := l.stream(ctx, s)
		if done {
			return
		}
		s = nil
		if ctx.Err() != nil {
			return
		}
		l.c.log.Warn("fullcall stream failed; reopening", "err", err)
	}
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

// stream sends the log on one stream until fullcall has the report (true)
// or the stream fails.
func (l *fcLink) stream(ctx context.Context, s fullcallRecordClient) (bool, error) {
	recvErr := make(chan error, 1)
	go func() { recvErr <- l.recv(s) }()
	sentClose := false
	for {
		l.mu.Lock()
		var batch []*fullcallv1.RecordRequest
		now := time.Now()
		for ; l.next < len(l.log); l.next++ {
			e := &l.log[l.next]
			batch = append(batch, e.req)
			if e.chunk {
				l.sent[e.seq%uint64(len(l.sent))] = sentSeq{e.seq, now}
			}
		}
		var closeReq *fullcallv1.CloseCall
		if l.closeReq != nil && !sentClose && len(batch) == 0 {
			closeReq = l.closeReq
			closeReq.Incomplete = l.incomplete
		}
		l.mu.Unlock()
		for _, r := range batch {
			if err := s.Send(r); err != nil {
				return false, l.failed(s, recvErr, err)
			}
			if ch := r.GetChunk(); ch != nil {
				l.c.bytesBackend.Add(int64(len(ch.Data)))
				l.c.m.m.backendOut.Add(ctx, int64(len(ch.Data)), pathFullcall)
			}
		}
		if closeReq != nil {
			if err := s.Send(&fullcallv1.RecordRequest{Msg: &fullcallv1.RecordRequest_Close{Close: closeReq}}); err != nil {
				return false, l.failed(s, recvErr, err)
			}
			s.CloseSend()
			sentClose = true
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-l.wake:
		case err := <-recvErr:
			if err == nil {
				return true, nil // the report arrived
			}
			return false, err
		case <-ctx.Done():
			return true, ctx.Err()
		}
	}
}

func (l *fcLink) failed(s fullcallRecordClient, recvErr chan error, err error) error {
	// Send fails with io.EOF when the stream broke; the real status comes
	// from Recv.
	if rerr := <-recvErr; rerr != nil {
		err = rerr
	}
	return err
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
