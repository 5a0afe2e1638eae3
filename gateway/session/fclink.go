package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
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
	dropNoFullcall = metric.WithAttributes(attribute.String("path", "fullcall"), attribute.String("reason", "fullcall_lost"))
)

// fcLink carries a call to fullcall losslessly. Every message waits in the
// replay log until fullcall acknowledges it; when the stream fails, the
// call is reopened (on any instance) and everything after the last
// acknowledged chunk is sent again. The stream's life (open, send, receive,
// reopen) is the shared link skeleton; what is fullcall's own is here.
//
// The log is bounded, and no audio is dropped to keep it so: when it is
// full, the call's writer (the adapter's reader) waits for fullcall's
// acknowledgements, so the client is paced as one sending faster than real
// time is, through TCP. Only when fullcall has acknowledged nothing for
// Options.FullcallFailover while audio waits — gone, not slow — is the
// call's fullcall audio given up: counted (fullcall_lost), the call ended,
// and its report left to fullcall's orphan sweep, which stores it as
// incomplete. Gone means the instance: one that answers any of this
// gateway's calls is slow (overloaded), and its calls are held, not given
// up — whole-call audio is never dropped for want of CPU.
type fcLink struct {
	link[*fullcallv1.RecordRequest, *fullcallv1.RecordResponse]
	holdBytes int // Options.FullcallBatch's worth of audio; 0: no hold

	// Guarded by mu.
	log      []fcEntry // unacknowledged, in order
	next     int       // index in log of the next entry to send
	bytes    int
	acked    uint64
	lastSeq  uint64 // of the last chunk in the log
	closeReq *fullcallv1.CloseCall
	// sentAt remembers when recent chunks went out, to time their
	// acknowledgements (the backend's round trip).
	sentAt [16]sentSeq
	// progress is when (on the manager's clock) fullcall last
	// acknowledged audio or a stream to it opened, heard when its
	// instance last answered any call (Manager.peerHeard; nil before
	// a stream opened): the failover window counts from the later.
	progress time.Time
	heard    *atomic.Int64
	// room, made by a writer about to wait, is closed (and forgotten)
	// when an acknowledgement frees room in the log.
	room chan struct{}
	// gone is set once the link has let the call go: its audio given up,
	// or the call resumed elsewhere. Nothing is sent after it.
	gone bool

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
	// out is set once the entry was handed to a stream: it no longer
	// takes more audio (fullcall may hold it under its seq). owned is set
	// when the chunk's data was allocated by a merge (mergeChunk).
	out   bool
	owned bool
	// analysis marks realtime's analysis of a second: it covers audio
	// already in the log, so it waits behind a held chunk instead of
	// sending it (holdLocked), and audio may still join that chunk.
	analysis bool
}

func newFCLink(c *Call) *fcLink {
	l := &fcLink{
		holdBytes: int(min(c.m.o.FullcallBatch, time.Second).Seconds() * float64(c.format.BytesPerSecond())),
		progress:  c.m.now(),
		report:    make(chan *fullcallv1.Report, 1),
		lost:      make(chan error, 1),
	}
	l.c, l.out = c, l
	return l
}

// pushChunk appends a chunk to the replay log under the link's next
// sequence number, once there is room for it (waitRoom). Chunks carry the
// link's own sequence numbers, contiguous as fullcall requires.
func (l *fcLink) pushChunk(ch *callv1.AudioChunk) {
	n := len(ch.Data)
	l.waitRoom(n)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.gone {
		// Given up (the call is ending) or moved: fullcall will not have
		// this audio.
		l.c.m.m.dropped.Add(l.c.ctx, int64(n), dropNoFullcall)
		return
	}
	l.bytes += n
	l.c.m.unacked.Add(int64(n))
	if k := l.lastAudioLocked(); k >= 0 && l.next <= k {
		// The sender has not taken the last entry yet (but for analyses
		// waiting behind it): a chunk that continues it joins it, under
		// its seq.
		if e := &l.log[k]; e.chunk && !e.out {
			last := e.req.Msg.(*fullcallv1.RecordRequest_Chunk)
			if merged, ok := mergeChunk(last.Chunk, ch, e.owned, l.c.frameBytes, l.c.maxChunkBytes()); ok {
				last.Chunk, e.owned, e.bytes = merged, true, e.bytes+n
				l.kickLocked() // it may have grown past the hold
				return
			}
		}
	}
	l.lastSeq++
	fc := &callv1.AudioChunk{Seq: l.lastSeq, StartSample: ch.StartSample, Data: ch.Data}
	l.log = append(l.log, fcEntry{req: &fullcallv1.RecordRequest{Msg: &fullcallv1.RecordRequest_Chunk{Chunk: fc}}, seq: l.lastSeq, chunk: true, bytes: n})
	l.kickLocked()
}

// waitRoom holds the call's writer while the replay log has no room for n
// more bytes, until fullcall acknowledges enough, the call is aborted (its
// last chunks then go in over the bound), or fullcall has acknowledged
// nothing for the failover window, when the call's fullcall audio is given
// up. The time held is counted as backpressure.
func (l *fcLink) waitRoom(n int) {
	m := l.c.m
	var start time.Time
	for {
		l.mu.Lock()
		if l.gone || l.bytes == 0 || l.bytes+n <= l.c.replayBytes {
			l.mu.Unlock()
			break
		}
		if l.room == nil {
			l.room = make(chan struct{})
		}
		from := l.progress
		if l.heard != nil {
			from = latest(from, time.Unix(0, l.heard.Load()))
		}
		room, deadline := l.room, from.Add(m.o.FullcallFailover)
		l.mu.Unlock()
		now := m.now()
		if start.IsZero() {
			start = now
			l.c.log.Debug("fullcall replay log full; holding the client", "buffer_bytes", l.c.replayBytes)
		}
		if !now.Before(deadline) {
			l.giveUp(fmt.Errorf("fullcall acknowledged nothing for %v while the call's replay log was full", m.o.FullcallFailover))
			break
		}
		t := m.clock.NewTimer(deadline.Sub(now))
		aborted := false
		select {
		case <-room:
		case <-t.C():
		case <-l.c.aborted:
			aborted = true
		case <-l.c.ctx.Done():
			aborted = true
		}
		t.Stop()
		if aborted {
			break
		}
	}
	if !start.IsZero() {
		m.m.backpressure.Add(l.c.ctx, m.now().Sub(start).Seconds(), l.c.attrs)
	}
}

// push appends a message other than a chunk to the replay log; it follows
// the last chunk. Such messages are small and never wait for room.
func (l *fcLink) push(r *fullcallv1.RecordRequest) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closeSent || l.gone {
		// The call's close is out: fullcall is finishing the report and
		// the stream takes nothing more. A message this late (realtime
		// answering after its bounded wait) is left out of the report.
		l.c.log.Debug("event after the call's close not recorded", "msg", fmt.Sprintf("%T", r.Msg))
		return
	}
	l.log = append(l.log, fcEntry{req: r, seq: l.lastSeq, analysis: r.GetAnalysis() != nil})
	l.kickLocked()
}

// lastAudioLocked returns the index of the log's last entry that is not
// an analysis waiting to go out, or -1.
func (l *fcLink) lastAudioLocked() int {
	k := len(l.log) - 1
	for k >= 0 && l.log[k].analysis && !l.log[k].out {
		k--
	}
	return k
}

// ack forgets what fullcall has made durable.
func (l *fcLink) ack(seq uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.progress = l.c.m.now()
	if seq <= l.acked {
		return
	}
	l.acked = seq
	if m := l.sentAt[seq%uint64(len(l.sentAt))]; m.seq == seq {
		l.c.m.m.rtt.Record(l.c.ctx, (l.c.since(l.c.clock) - time.Duration(m.at)).Seconds(), pathFullcall)
	}
	i, freed := 0, 0
	for ; i < len(l.log); i++ {
		e := l.log[i]
		if e.chunk && e.seq > seq || !e.chunk && e.seq >= seq {
			break
		}
		freed += e.bytes
	}
	// Clear the acknowledged entries: the backing array would otherwise
	// keep their audio reachable until append next reallocates it.
	clear(l.log[:i])
	l.log = l.log[i:]
	l.next = max(l.next-i, 0)
	l.forgetLocked(freed)
}

// forgetLocked takes n bytes out of the log's count and wakes a writer
// waiting for room.
func (l *fcLink) forgetLocked(n int) {
	if n == 0 {
		return
	}
	l.bytes -= n
	l.c.m.unacked.Add(-int64(n))
	if l.room != nil {
		close(l.room)
		l.room = nil
	}
}

// release forgets whatever the log still holds, when the call ends.
func (l *fcLink) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.log, l.next = nil, 0
	l.forgetLocked(l.bytes)
}

func (l *fcLink) close(end uint64, reason EndReason) {
	l.mu.Lock()
	l.closeReq = &fullcallv1.CloseCall{LastSeq: l.lastSeq, EndSample: end, Reason: reason}
	l.kickLocked()
	l.mu.Unlock()
}

// readyLocked, nextLocked, sent and unsentLocked are the link skeleton's
// outbox: the log's new entries, then, once all is out, the close. Nothing
// goes out after the close (the stream is closed for sending; a reopened
// stream starts with closeSent false and replays all) or once the link
// has let the call go.
func (l *fcLink) readyLocked() bool {
	return !l.closeSent && !l.gone && (l.next < len(l.log) && !l.holdLocked(l.next) || l.closeReq != nil)
}

// holdLocked reports whether the log's entry i waits for more audio before
// it goes out (Options.FullcallBatch): it is the last entry (realtime's
// analyses, which cover audio before it, wait behind it), a chunk that
// has not gone out, with less than holdBytes of audio, the call is not
// closing, and the log is less than half full. fullcall's report needs
// the audio, not its promptness (it acknowledges only at its checkpoints,
// every 2 s of audio by default, so the log keeps the audio that long
// whatever the chunks), while each message costs a gRPC write here and a
// read, a decode and a write there. Anything that follows the chunk in the
// log (a gap, an event, the close) sends it at once, so the order is kept
// and nothing waits at the call's end; no timer is involved.
func (l *fcLink) holdLocked(i int) bool {
	if l.holdBytes == 0 || i != l.lastAudioLocked() || l.closeReq != nil || 2*l.bytes >= l.c.replayBytes {
		return false
	}
	e := &l.log[i]
	return e.chunk && !e.out && e.bytes < l.holdBytes
}

func (l *fcLink) nextLocked() ([]*fullcallv1.RecordRequest, *fullcallv1.RecordRequest, bool) {
	if l.gone {
		return nil, nil, false
	}
	var batch []*fullcallv1.RecordRequest
	now := int64(l.c.since(l.c.clock))
	for ; l.next < len(l.log) && !l.holdLocked(l.next); l.next++ {
		e := &l.log[l.next]
		e.out = true
		batch = append(batch, e.req)
		if e.chunk {
			l.sentAt[e.seq%uint64(len(l.sentAt))] = sentSeq{e.seq, now}
		}
	}
	if len(batch) == 0 && l.closeReq != nil && !l.closeSent {
		return nil, &fullcallv1.RecordRequest{Msg: &fullcallv1.RecordRequest_Close{Close: l.closeReq}}, true
	}
	return batch, nil, false
}

func (l *fcLink) sent(r *fullcallv1.RecordRequest) {
	if ch := r.GetChunk(); ch != nil {
		l.c.fcOut.Add(int64(len(ch.Data)))
		l.c.fcChunks.Add(1)
	}
}

// unsentLocked has nothing to do: the log keeps every entry until it is
// acknowledged, and a reopened stream replays it.
func (l *fcLink) unsentLocked([]*fullcallv1.RecordRequest) {}

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

type fcStream = backendStream[*fullcallv1.RecordRequest, *fullcallv1.RecordResponse]

// dial opens a Record stream and waits, within ctx, for fullcall's answer.
// The stream lives until cancel, or the call's end.
func (l *fcLink) dial(ctx context.Context, resume bool) (_ fcStream, _ context.CancelFunc, err error) {
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
		if heard := l.c.m.peerHeard(s.Context()); heard != nil {
			heard.Store(l.c.m.now().UnixNano())
			l.mu.Lock()
			l.heard = heard
			l.mu.Unlock()
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

// run feeds fullcall, from the stream Start opened, until the report is
// stored or the call is cut.
func (l *fcLink) run(s fcStream, cancel context.CancelFunc) {
	l.keep(l, s, cancel)
}

// open reopens the call's stream with resume after a failure.
func (l *fcLink) open(ctx context.Context, _ int) (fcStream, context.CancelFunc, error) {
	openCtx, openCancel := context.WithTimeout(ctx, l.c.m.o.OpenTimeout)
	defer openCancel()
	s, cancel, err := l.dial(openCtx, true)
	if err != nil {
		return nil, nil, err
	}
	l.mu.Lock()
	gone := l.gone
	l.mu.Unlock()
	if gone {
		cancel()
		return nil, nil, errGone
	}
	return s, cancel, nil
}

// errGone stops the link's reopening once it has let the call go.
var errGone = errors.New("the link has let the call go")

func (l *fcLink) openFailed(err error, attempt int) bool {
	if errors.Is(err, errGone) {
		return true
	}
	if status.Code(err) == codes.FailedPrecondition {
		l.giveUp(fmt.Errorf("fullcall cannot resume the call: %w", err))
		return true
	}
	l.mu.Lock()
	gone := l.gone
	l.mu.Unlock()
	if gone {
		return true
	}
	l.c.log.Warn("reopening the fullcall stream failed", "err", err, "attempt", attempt)
	return false
}

// reopened replays everything not acknowledged on the new stream.
func (l *fcLink) reopened(int) {
	l.c.m.m.reconnects.Add(l.c.ctx, 1, pathFullcall)
	l.mu.Lock()
	replay := 0
	for _, e := range l.log {
		if e.chunk {
			replay++
		}
	}
	l.next = 0
	l.mu.Unlock()
	l.c.m.m.replayed.Add(l.c.ctx, int64(replay))
	l.c.log.Info("fullcall stream reopened; replaying", "chunks", replay)
}

func (l *fcLink) broken(err error, _ bool) bool {
	if status.Code(err) == codes.Aborted {
		// fullcall fenced this stream out: the client resumed the call
		// elsewhere (another gateway, or a new connection that fullcall
		// saw first). Reopening would take it back from there; this
		// gateway lets it go instead.
		l.movedAway(err)
		return true
	}
	l.mu.Lock()
	gone := l.gone
	l.mu.Unlock()
	if gone {
		return true
	}
	l.c.log.Warn("fullcall stream failed; reopening", "err", err)
	return false
}

// letGo empties the log and stops the link; it reports false when the
// link had already let the call go.
func (l *fcLink) letGo() (dropped int, first bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.gone {
		return 0, false
	}
	l.gone = true
	dropped = l.bytes
	l.log, l.next = nil, 0
	l.forgetLocked(l.bytes)
	if l.stream != nil {
		l.stream = nil
		l.cancel() // keep's Recv ends; broken sees gone and stops
	}
	return dropped, true
}

// movedAway ends the call here without a report: it lives on where it
// was resumed.
func (l *fcLink) movedAway(err error) {
	if _, first := l.letGo(); !first {
		return
	}
	l.c.log.Info("the call was resumed elsewhere; this gateway lets it go", "err", err)
	select {
	case l.lost <- fmt.Errorf("the call was resumed elsewhere: %w", err):
	default:
	}
	l.c.Abort(fullcallv1.EndReason_END_REASON_DISCONNECTED, errors.New("the call was resumed elsewhere"))
}

// giveUp gives up the call's fullcall audio: fullcall is gone for good.
func (l *fcLink) giveUp(err error) {
	dropped, first := l.letGo()
	if !first {
		return
	}
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
func (l *fcLink) recv(s fcStream) error {
	l.mu.Lock()
	heard := l.heard
	l.mu.Unlock()
	for {
		r, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return errors.New("fullcall ended the stream without a report")
		}
		if err != nil {
			return err
		}
		if heard != nil {
			heard.Store(l.c.m.now().UnixNano())
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

// latest returns the later of a and b.
func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
