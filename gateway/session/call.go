package session

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/field"
	"github.com/calmline/calmline/lib/telemetry"
	"github.com/calmline/calmline/lib/tenant"
	"github.com/calmline/calmline/lib/wire"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// EndReason says how a call ended (the fullcall contract's enum).
type EndReason = fullcallv1.EndReason

// MaxReconnectGap bounds the stretch a resumed call may skip (the audio
// lost between the call's durable end and where the client resumes). A
// call nobody resumes is stored as incomplete after fullcall's orphan
// timeout (2 min), so a longer gap has nothing to resume anyway.
const MaxReconnectGap = 5 * time.Minute

// ErrEnded is returned when audio arrives for a call that has ended.
var ErrEnded = errors.New("call has ended")

// LabelParamPrefix starts the parameters that carry call labels where a
// protocol passes key-value parameters (Asterisk query parameters,
// Twilio-style custom parameters): label.queue=vip. Only parameters named so
// become labels, so that an integration's other parameters (a customer's
// name, say) never refuse a call for not being an identifier.
const LabelParamPrefix = "label."

// Start describes a call an adapter wants to start.
type Start struct {
	Tenant  *tenant.Tenant
	CallID  string
	AgentID string
	Format  audio.Format
	// Roles gives each channel's role in interleaving order.
	Roles    []callv1.ChannelRole
	Protocol string
	// Labels are the call's labels: the client's (queue, skill, agent
	// group ... from the native start or the protocol's metadata) and the
	// adapter's own. At most field.MaxLabels, keys and values identifiers.
	Labels map[string]string
	// StartedAt defaults to now.
	StartedAt time.Time
	// AudioAge, for a protocol that starts the call on audio it already
	// received (a Twilio-style stream waiting for its tracks), is how
	// long ago that audio began: pacing and read pauses count from then,
	// not from the start, which would take a client at real-time pace
	// for one running ahead.
	AudioAge time.Duration
	// Resume continues a call whose stream ended without a hang-up —
	// typically the gateway carrying it died and the client reconnected,
	// here or through a load balancer to another gateway. fullcall resumes
	// the call from its durable checkpoint (the same call id, one report),
	// and the call's timeline goes on from where that checkpoint ends.
	Resume bool
	// ResumeAt is, with Resume, the client's timeline position (samples
	// per channel) of the audio that follows. The stretch between the
	// checkpoint and ResumeAt never reached calmline (it was in flight to
	// the dead gateway, or sent while the client reconnected) and becomes
	// a gap with reason reconnect. 0 continues right at the checkpoint.
	ResumeAt uint64
}

// Events receives a call's live events. Its methods are called from the
// call's backend goroutines and must not block: adapters queue the events
// for their connection's writer, in a bounded queue with a counted
// overflow policy.
type Events interface {
	Score(*callv1.ScoreUpdate)
	Alert(*callv1.AlertEvent)
}

// Call is one live call. Audio, Gap and End must be called from one
// goroutine (the adapter's reader); the other methods from any.
type Call struct {
	m      *Manager
	tenant *tenant.Tenant
	info   *callv1.Call
	format audio.Format
	// events is the adapter's (nil while the call is parked).
	events atomic.Pointer[eventsRef]
	log    *slog.Logger
	attrs  metric.MeasurementOption
	span   trace.Span // from Start to End

	frameBytes int
	chunkBytes int
	// phase is where chunks end: at timeline positions (samples) phase
	// past a multiple of the chunk's samples.
	phase uint64
	// replayBytes is what the call's replay log holds at most
	// (Options.ReplayBuffer of its audio).
	replayBytes int

	// Owned by the adapter goroutine.
	pending      []byte
	pendingStart uint64
	ended        bool
	startedAt    time.Time
	bytesIn      int64
	// counted holds what the traffic counters were last given (in, out,
	// to realtime, to fullcall, chunks to realtime, chunks to fullcall),
	// and countedAt when (on the call's clock): they are updated once a
	// second, not per frame or chunk, since each update costs.
	counted   [6]int64
	countedAt time.Duration
	// clock is when the call started on this gateway (monotonic), the
	// reference for pacing and traffic rates; paceFrom is the timeline
	// position at that moment (not 0 for a resumed call).
	clock    time.Time
	paceFrom uint64
	// paceClock is the clock pacing and read pauses count from: clock,
	// or when a parked call was resumed (owned by the adapter goroutine).
	paceClock time.Time
	// resumedAt is, for a resumed call, where fullcall's checkpoint ended.
	resumedAt uint64
	// skip is how many bytes of the client's next audio the call already
	// has (a client resuming a parked call resends from before its end).
	skip uint64
	// parked and unpark are guarded by m.mu: the connection dropped and
	// the call waits for a resume (Park); closing unpark hands it over.
	parked bool
	unpark chan struct{}
	// takeover (guarded by m.mu) drops the call's connection for a
	// resume; parkedSig is signalled when the call parks.
	takeover  func()
	parkedSig chan struct{}
	// readPause is what ReadPause returns next, and minLag the lower
	// envelope of how late the client's chunks complete against the
	// call's clock (see ReadPause), known once lagKnown.
	readPause time.Duration
	minLag    time.Duration
	lagKnown  bool

	// bytesOut counts what the adapter wrote to the client, rtOut and
	// fcOut what went to each backend (audio payload, replays included),
	// for the traffic metrics.
	bytesOut atomic.Int64
	rtOut    atomic.Int64
	fcOut    atomic.Int64
	// rtChunks and fcChunks count the chunks (messages) sent to each.
	rtChunks atomic.Int64
	fcChunks atomic.Int64

	// timeline is the position (samples per channel) after the last audio
	// or gap, and seq the last chunk's sequence number; written by the
	// adapter goroutine, read by the links.
	timeline atomic.Uint64
	seq      atomic.Uint64

	rt *rtLink
	fc *fcLink

	ctx    context.Context // lives until End returns
	cancel context.CancelFunc
	wg     sync.WaitGroup

	abortOnce   sync.Once
	aborted     chan struct{}
	abortReason EndReason
	abortErr    error
}

// Start starts a call: it checks the tenant's quota, opens the fullcall
// stream (the call is refused when fullcall is unreachable: nothing would
// keep its audio) and starts scoring on realtime, which may come later.
func (m *Manager) Start(ctx context.Context, st Start, ev Events) (*Call, error) {
	if err := st.check(); err != nil {
		return nil, err
	}
	c := m.newCall(st, ev)
	if st.Resume {
		// A call whose connection dropped a moment ago may still be
		// parked here: it goes on as it was.
		pc, err := m.unpark(st)
		if err != nil {
			return nil, m.refuse(ctx, st, refusalReason(err, "not_resumable"), err)
		}
		if pc != nil {
			pc.resumeParked(ctx, st, ev)
			return pc, nil
		}
	}
	if err := m.register(c); err != nil {
		return nil, m.refuse(ctx, st, refusalReason(err, "quota"), err)
	}
	// The call's span, the root of its trace (a new trace, whatever
	// context the adapter passes): everything the call does — its
	// backend streams, realtime's analysis and alerts, their post into
	// escalation — descends from it, each span naming the call id.
	ctx, c.span = m.tracer.Start(telemetry.WithCallID(ctx, st.CallID), "call", trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("calmline.call_id", st.CallID), attribute.String("calmline.tenant", st.Tenant.ID),
			attribute.String("calmline.protocol", st.Protocol), attribute.String("calmline.session_id", c.info.SessionId)))
	c.ctx, c.cancel = context.WithCancel(context.WithoutCancel(ctx))
	c.rt = newRTLink(c)
	c.fc = newFCLink(c)
	stream, streamCancel, err := c.openFullcall(ctx, st)
	if err != nil {
		// The one way back: the call is registered and traced, its
		// fullcall stream (if any) already closed by openFullcall.
		c.cancel()
		c.span.End()
		m.unregister(c)
		var r *refusal
		errors.As(err, &r)
		if r.warn {
			c.log.Warn("call refused", "reason", r.reason, "err", r.err)
		}
		return nil, m.refuse(ctx, st, r.reason, r.err)
	}
	c.wg.Add(2)
	go func() { defer c.wg.Done(); c.fc.run(stream, streamCancel) }()
	go func() { defer c.wg.Done(); c.rt.run() }()
	if st.Resume {
		// Pacing counts from where the client's audio resumes: the
		// reconnect gap is time that passed, not audio sent ahead.
		c.paceFrom = max(st.ResumeAt, c.resumedAt)
		if st.ResumeAt > c.resumedAt {
			c.Gap(st.ResumeAt-c.resumedAt, callv1.GapReason_GAP_REASON_RECONNECT, "the client reconnected; this audio never reached a gateway that kept it")
		} else if st.ResumeAt > 0 {
			// The client resends from before the checkpoint: fullcall
			// skips what it holds.
			c.timeline.Store(st.ResumeAt)
		}
		m.m.resumed.Add(ctx, 1, c.attrs)
		c.log.Info("call resumed", "checkpoint_sample", c.resumedAt, "resume_at", st.ResumeAt, "acked_seq", c.seq.Load())
	}
	m.m.calls.Add(ctx, 1, metric.WithAttributes(attribute.String("tenant", st.Tenant.ID), attribute.String("protocol", st.Protocol)))
	c.log.Info("call started", "protocol", st.Protocol, "codec", st.Format.Codec.String(),
		"sample_rate", st.Format.SampleRate, "channels", st.Format.Channels)
	if m.o.Observer != nil {
		m.o.Observer.CallStarted(c)
	}
	return c, nil
}

// check validates a Start before anything is allocated for it.
func (st *Start) check() error {
	if st.Tenant == nil || st.CallID == "" {
		return fmt.Errorf("%w: tenant and call id are required", ErrBadStart)
	}
	// One rule for ids on every protocol (lib/field): an id that is not
	// printable ASCII is refused, never trimmed or replaced, so that two
	// different ids cannot become the same call.
	if err := field.ID("call_id", st.CallID); err != nil {
		return fmt.Errorf("%w: %v", ErrBadStart, err)
	}
	if err := field.OptionalID("agent_id", st.AgentID); err != nil {
		return fmt.Errorf("%w: %v", ErrBadStart, err)
	}
	// Labels choose the tenant's alert rules and silences: the same rule
	// for every protocol's metadata.
	if err := field.Labels("labels", st.Labels); err != nil {
		return fmt.Errorf("%w: %v", ErrBadStart, err)
	}
	if err := st.Format.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrBadStart, err)
	}
	if len(st.Roles) != st.Format.Channels {
		return fmt.Errorf("%w: %d channel roles for %d channels", ErrBadStart, len(st.Roles), st.Format.Channels)
	}
	seen := map[callv1.ChannelRole]bool{}
	for _, r := range st.Roles {
		if r == callv1.ChannelRole_CHANNEL_ROLE_UNSPECIFIED || seen[r] {
			return fmt.Errorf("%w: channel roles must be distinct caller/agent", ErrBadStart)
		}
		seen[r] = true
	}
	return nil
}

// newCall makes the Call a Start describes, not yet registered.
func (m *Manager) newCall(st Start, ev Events) *Call {
	if st.StartedAt.IsZero() {
		st.StartedAt = m.now()
	}
	info := &callv1.Call{
		TenantId:  st.Tenant.ID,
		CallId:    st.CallID,
		AgentId:   st.AgentID,
		StartedAt: timestamppb.New(st.StartedAt),
		Format: &callv1.MediaFormat{
			Codec:        wire.CodecOf(st.Format.Codec),
			SampleRateHz: uint32(st.Format.SampleRate),
			Channels:     st.Roles,
		},
		Protocol:  st.Protocol,
		Labels:    st.Labels,
		Policy:    wire.Policy(st.Tenant),
		SessionId: newSessionID(),
	}
	fb := st.Format.FrameBytes()
	perChunk := int(int64(st.Format.SampleRate) * int64(m.o.ChunkDuration) / int64(time.Second))
	c := &Call{
		m:          m,
		tenant:     st.Tenant,
		info:       info,
		format:     st.Format,
		log:        m.log.With("tenant", st.Tenant.ID, "call_id", st.CallID, "session_id", info.SessionId),
		attrs:      metric.WithAttributes(attribute.String("tenant", st.Tenant.ID)),
		frameBytes: fb,
		chunkBytes: perChunk * fb,
		phase:      uint64(int64(st.Format.SampleRate)*int64(m.o.ChunkPhase%m.o.ChunkDuration)/int64(time.Second)) % uint64(max(perChunk, 1)),
		startedAt:  st.StartedAt,
		clock:      m.now(),
		aborted:    make(chan struct{}),
		parkedSig:  make(chan struct{}, 1),
	}
	c.paceClock = c.clock.Add(-max(st.AudioAge, 0))
	c.replayBytes = max(int(m.o.ReplayBuffer.Seconds()*float64(st.Format.BytesPerSecond())), c.chunkBytes)
	c.pending = make([]byte, 0, c.chunkBytes)
	c.setEvents(ev)
	return c
}

// refusal is why a call could not start once registered: the reason
// counted, the error Start returns, and whether it deserves a warning.
type refusal struct {
	reason string
	err    error
	warn   bool
}

func (r *refusal) Error() string { return r.err.Error() }
func (r *refusal) Unwrap() error { return r.err }

// refuse counts a refused start and returns its error.
func (m *Manager) refuse(ctx context.Context, st Start, reason string, err error) error {
	m.Refused(ctx, st.Tenant.ID, st.Protocol, reason)
	return err
}

// refusalReason names the counted reason of a refusal by the call core's
// own checks.
func refusalReason(err error, otherwise string) string {
	switch {
	case errors.Is(err, ErrDraining):
		return "draining"
	case errors.Is(err, ErrCallLive):
		return "duplicate_call"
	case errors.Is(err, ErrNoHeadroom):
		return ReasonCapacityCalls
	}
	return otherwise
}

// openFullcall opens the call's fullcall stream and, for a resume, takes
// up the call where fullcall's checkpoint ends. On error the stream is
// closed and the error is a *refusal.
func (c *Call) openFullcall(ctx context.Context, st Start) (_ fcStream, _ context.CancelFunc, err error) {
	openCtx, cancel := context.WithTimeout(ctx, c.m.o.OpenTimeout)
	defer cancel()
	stream, streamCancel, err := c.fc.dial(openCtx, st.Resume)
	if err != nil {
		if st.Resume && status.Code(err) == codes.FailedPrecondition {
			return nil, nil, &refusal{"not_resumable", fmt.Errorf("%w: %s", ErrNotResumable, status.Convert(err).Message()), true}
		}
		return nil, nil, &refusal{"backend_unavailable", fmt.Errorf("%w: fullcall: %v", ErrUnavailable, err), true}
	}
	if !st.Resume {
		return stream, streamCancel, nil
	}
	defer func() {
		if err != nil {
			streamCancel()
		}
	}()
	op := c.fc.opened
	if op.GetFinished() {
		return nil, nil, &refusal{"not_resumable", fmt.Errorf("%w: call %q has ended and its report is stored", ErrNotResumable, st.CallID), false}
	}
	// Go on from the checkpoint: the next chunk follows the last one
	// fullcall holds, on the timeline where it ends.
	c.resumedAt = op.GetTimelineSample()
	if limit := c.resumedAt + uint64(MaxReconnectGap.Seconds()*float64(st.Format.SampleRate)); st.ResumeAt > limit {
		// The backends walk a gap frame by frame: a client may not
		// declare an arbitrary stretch lost.
		return nil, nil, &refusal{"not_resumable", fmt.Errorf("%w: resume_at_sample %d is more than %v past the call's durable end (%d)", ErrBadStart, st.ResumeAt, MaxReconnectGap, c.resumedAt), false}
	}
	c.seq.Store(op.GetAckedSeq())
	c.fc.lastSeq = op.GetAckedSeq()
	c.timeline.Store(c.resumedAt)
	// Live scoring starts where the client's audio resumes, its alert
	// episodes numbered after those the call already had.
	c.rt.from = max(st.ResumeAt, c.resumedAt)
	c.rt.episodes.Store(op.GetAlertEpisodes())
	c.rt.lastEnd.Store(c.rt.from)
	return stream, streamCancel, nil
}

func newSessionID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Info returns the call as the backends see it.
func (c *Call) Info() *callv1.Call { return c.info }

// Tenant returns the call's tenant.
func (c *Call) Tenant() *tenant.Tenant { return c.tenant }

// Format returns the call's audio format.
func (c *Call) Format() audio.Format { return c.format }

// ChunkBytes returns the size of a full chunk.
func (c *Call) ChunkBytes() int { return c.chunkBytes }

// Timeline returns the call's position in samples per channel.
func (c *Call) Timeline() uint64 { return c.timeline.Load() }

// ResumedAt returns, for a call started with Resume, the timeline position
// where fullcall's durable record of it ended: the client's audio before
// it is in the report, what it sent after it (to the gateway that died)
// is not, unless it sends it again.
func (c *Call) ResumedAt() uint64 { return c.resumedAt }

// StartedAt returns when the call started.
func (c *Call) StartedAt() time.Time { return c.startedAt }

// Sent records n bytes the adapter wrote to the client for this call
// (scores, alerts, protocol replies), for the traffic metrics. It is safe
// from any goroutine.
func (c *Call) Sent(n int) {
	c.bytesOut.Add(int64(n))
}

// Audio appends interleaved encoded audio to the call's timeline. Any
// length is accepted; a partial sample frame waits for the next write.
//
// Audio applies the pacing policy first: under PaceThrottle it may block
// until the timeline is back within the allowed lead (or the call is
// aborted); it returns an error wrapping ErrTooFast, without taking the
// data, when the policy refuses the client. Adapters then end the call and
// close the connection with their protocol's "too fast" code.
func (c *Call) Audio(data []byte) error {
	if c.ended {
		return ErrEnded
	}
	if c.skip > 0 {
		n := min(c.skip, uint64(len(data)))
		c.skip -= n
		data = data[n:]
		if len(data) == 0 {
			return nil
		}
	}
	if err := c.pace(uint64(len(data) / c.frameBytes)); err != nil {
		return err
	}
	c.bytesIn += int64(len(data))
	if len(c.pending) == 0 {
		c.pendingStart = c.timeline.Load()
	}
	c.pending = append(c.pending, data...)
	end := c.pendingStart + uint64(len(c.pending)/c.frameBytes)
	c.timeline.Store(end)
	// The chunks this write completes go out together, as one message of
	// whole chunks (at most a second's worth each): a frame longer than a
	// chunk (AudioHook's and many PBXs' 200 ms) would otherwise cost a
	// message per chunk on each link, all sent at the same moment.
	cut := c.chunkEnd(end)
	if cut <= c.pendingStart {
		return nil
	}
	whole := int(cut-c.pendingStart) * c.frameBytes
	c.chunkDone(cut)
	limit := c.maxChunkBytes() / c.chunkBytes * c.chunkBytes
	for whole > 0 {
		n := min(whole, limit)
		c.send(n)
		whole -= n
	}
	if cap(c.pending) > limit+c.chunkBytes {
		// A write of more than a second left a large buffer: let it go.
		c.pending = append(make([]byte, 0, c.chunkBytes), c.pending...)
	}
	return nil
}

// chunkEnd returns the last chunk end at or before timeline position end
// (samples), or 0 if none is.
func (c *Call) chunkEnd(end uint64) uint64 {
	per := uint64(c.chunkBytes / c.frameBytes)
	r := (end + per - c.phase) % per
	if r >= end {
		return 0
	}
	return end - r
}

// ReadPause returns how long the adapter may leave its connection unread
// before its next read without delaying a chunk, and resets it to zero. It
// is set when a chunk completes: audio reaches the backends a chunk at a
// time, so a client sending at real-time pace completes the next chunk a
// chunk's duration later, and the frames arriving meanwhile can be read
// together, a few per system call and goroutine wake-up instead of one
// each. The pause ends readPauseMargin before the next chunk's audio is
// due, reckoned from the earliest the client has delivered audio relative
// to the call's clock (the lower envelope of its lag, which rises by at
// most readPauseRelax per chunk): a client whose frames come later than
// that loses nothing, and one whose frames come earlier than ever before
// waits at most the difference. A client ahead of real time (streaming a
// file, bursting) gets no pause, nor one catching up on a backlog of more
// than a chunk: its audio is read at once.
func (c *Call) ReadPause() time.Duration {
	d := c.readPause
	c.readPause = 0
	return d
}

// chunkDone sets the read pause for a chunk completed now, at timeline
// position end (samples).
func (c *Call) chunkDone(end uint64) {
	dur := c.m.o.ChunkDuration
	c.readPause = 0
	if dur < minPausedChunk {
		return
	}
	// A resumed call's clock started at its resume point.
	end -= min(end, c.paceFrom)
	rate := uint64(c.format.SampleRate)
	now := c.since(c.paceClock)
	due := func(pos uint64) time.Duration {
		return time.Duration(pos/rate)*time.Second + time.Duration(pos%rate)*time.Second/time.Duration(rate)
	}
	lag := now - due(end)
	if c.lagKnown {
		c.minLag = min(lag, c.minLag+readPauseRelax)
	} else {
		c.minLag, c.lagKnown = lag, true
	}
	if lag < -readPauseMargin {
		return // the client runs ahead of real time
	}
	next := due(end+uint64(c.chunkBytes/c.frameBytes)) + c.minLag - readPauseMargin
	if d := next - now; d > 0 {
		c.readPause = min(d, dur)
	}
}

const (
	// minPausedChunk is the shortest chunk duration with read pauses:
	// below it a pause saves little.
	minPausedChunk = 50 * time.Millisecond
	// readPauseMargin is how long before the next chunk's audio is due a
	// read pause ends, for the client's jitter.
	readPauseMargin = 10 * time.Millisecond
	// readPauseRelax is how fast the lag's lower envelope forgets an early
	// delivery, per chunk: after a burst the pauses come back within
	// seconds.
	readPauseRelax = 2 * time.Millisecond
)

// pace applies the pacing policy to samples about to join the timeline.
func (c *Call) pace(samples uint64) error {
	p := &c.m.o.Pacing
	if p.Policy == PaceOff {
		return nil
	}
	pos := float64(int64(c.timeline.Load()+samples)-int64(c.paceFrom)) / float64(c.format.SampleRate)
	ahead := time.Duration(pos*float64(time.Second)) - c.since(c.paceClock)
	over := ahead - p.MaxLead
	if over <= 0 {
		return nil
	}
	if p.Policy == PaceRefuse || over > p.MaxWait {
		c.m.m.tooFast.Add(c.ctx, 1, c.attrs)
		return fmt.Errorf("%w: the call's audio runs %.1f s ahead of the clock (limit %v)", ErrTooFast, ahead.Seconds(), p.MaxLead)
	}
	c.m.m.throttled.Add(c.ctx, over.Seconds(), c.attrs)
	t := c.m.clock.NewTimer(over)
	select {
	case <-t.C():
	case <-c.aborted:
		t.Stop()
	}
	return nil
}

// countTraffic adds the traffic since the last count to the counters, at
// most once a second unless final.
func (c *Call) countTraffic(final bool) {
	now := c.since(c.clock)
	if !final && now-c.countedAt < time.Second {
		return
	}
	c.countedAt = now
	cur := [6]int64{c.bytesIn, c.bytesOut.Load(), c.rtOut.Load(), c.fcOut.Load(), c.rtChunks.Load(), c.fcChunks.Load()}
	ctx := context.Background()
	for i, n := range cur {
		d := n - c.counted[i]
		if d <= 0 {
			continue
		}
		switch i {
		case 0:
			c.m.m.bytesIn.Add(ctx, d, c.attrs)
		case 1:
			c.m.m.bytesOut.Add(ctx, d, c.attrs)
		case 2:
			c.m.m.backendOut.Add(ctx, d, pathRealtime)
		case 3:
			c.m.m.backendOut.Add(ctx, d, pathFullcall)
		case 4:
			c.m.m.chunksOut.Add(ctx, d, pathRealtime)
		case 5:
			c.m.m.chunksOut.Add(ctx, d, pathFullcall)
		}
	}
	c.counted = cur
}

// maxChunkBytes is the most audio one message to a backend carries, on
// either link: a second's worth, and at least a chunk.
func (c *Call) maxChunkBytes() int { return max(c.format.BytesPerSecond(), c.chunkBytes) }

// flush sends the pending whole sample frames as a chunk.
func (c *Call) flush() {
	c.send(len(c.pending) - len(c.pending)%c.frameBytes)
}

// send sends the first whole bytes pending (whole sample frames) as a
// chunk.
func (c *Call) send(whole int) {
	c.countTraffic(false)
	if whole == 0 {
		return
	}
	data := make([]byte, whole)
	copy(data, c.pending[:whole])
	rest := copy(c.pending, c.pending[whole:])
	c.pending = c.pending[:rest]
	ch := &callv1.AudioChunk{Seq: c.seq.Add(1), StartSample: c.pendingStart, Data: data}
	c.pendingStart += uint64(whole / c.frameBytes)
	c.rt.push(ch, c.m.now())
	c.fc.pushChunk(ch)
}

// Gap advances the timeline over samples that carry no audio (a pause, a
// discarded stretch), telling both backends why.
//
// A gap is part of the timeline like audio, and the pacing policy applies
// to it the same way: a gap cannot take the timeline further ahead of the
// clock than audio could (the backends analyse a gap frame by frame, so an
// hour declared in advance would cost them CPU, not only time).
func (c *Call) Gap(samples uint64, reason callv1.GapReason, detail string) error {
	if c.ended {
		return ErrEnded
	}
	if samples == 0 {
		return nil
	}
	if err := c.pace(samples); err != nil {
		return err
	}
	c.flush()
	// A partial frame cannot straddle a gap.
	c.pending = c.pending[:0]
	g := &callv1.Gap{StartSample: c.timeline.Load(), Samples: samples, Reason: reason, Detail: detail}
	c.timeline.Add(samples)
	c.rt.pushGap(g)
	c.fc.push(&fullcallv1.RecordRequest{Msg: &fullcallv1.RecordRequest_Gap{Gap: g}})
	return nil
}

// Done is closed when the call must end for a reason other than the
// client's: the gateway drains, or the lossless path failed for good. The
// adapter then calls End with AbortReason and closes its connection.
func (c *Call) Done() <-chan struct{} { return c.aborted }

// AbortReason returns why Done was closed.
func (c *Call) AbortReason() (EndReason, error) {
	select {
	case <-c.aborted:
		return c.abortReason, c.abortErr
	default:
		return fullcallv1.EndReason_END_REASON_UNSPECIFIED, nil
	}
}

// Abort asks the call's adapter to end the call.
func (c *Call) Abort(reason EndReason, err error) {
	c.abortOnce.Do(func() {
		c.abortReason, c.abortErr = reason, err
		close(c.aborted)
	})
}

// End ends the call: the last audio is sent, realtime flushes its last
// scores, and fullcall stores the report, which End returns (nil when
// fullcall could not be reached within the finish timeout; the error says
// why). End is idempotent.
func (c *Call) End(ctx context.Context, reason EndReason) (report *fullcallv1.Report, err error) {
	if c.ended {
		return nil, ErrEnded
	}
	c.ended = true
	defer func() {
		c.cancel()
		c.wg.Wait()
		if err != nil {
			c.span.SetStatus(otelcodes.Error, err.Error())
		}
		c.span.SetAttributes(attribute.String("calmline.end_reason", reason.String()))
		c.span.End()
		c.fc.release()
		c.m.unregister(c)
		c.countTraffic(true)
		c.recordTraffic()
		if c.m.o.Observer != nil {
			c.m.o.Observer.CallEnded(c, reason, report)
		}
	}()
	c.flush()
	c.rt.close()
	// Realtime's last scores and alert events (an alert that clears in
	// the call's last second) follow its close closely: wait for them,
	// under a bound, so that they reach fullcall before its close rather
	// than after it, on a stream already closed for sending.
	rtWait := time.NewTimer(time.Second)
	select {
	case <-c.rt.done:
	case <-rtWait.C:
	}
	rtWait.Stop()
	c.fc.close(c.timeline.Load(), reason)
	wait, cancel := context.WithTimeout(ctx, c.m.o.FinishTimeout)
	defer cancel()
	r, err := c.fc.wait(wait)
	if err != nil {
		c.log.Error("call ended without a stored report", "reason", reason.String(), "err", err)
		return nil, err
	}
	c.log.Info("call ended", "reason", reason.String(), "duration_s", r.DurationS, "incomplete", r.Incomplete)
	return r, nil
}

// recordTraffic records the call's length and its average traffic rates,
// the per-call figures capacity planning starts from.
func (c *Call) recordTraffic() {
	ctx := context.Background()
	secs := c.since(c.clock).Seconds()
	c.m.m.callSeconds.Record(ctx, secs, c.attrs)
	if secs <= 0 {
		return
	}
	c.m.m.callRate.Record(ctx, float64(c.bytesIn)/secs, dirClientIn)
	c.m.m.callRate.Record(ctx, float64(c.bytesOut.Load())/secs, dirClientOut)
	c.m.m.callRate.Record(ctx, float64(c.rtOut.Load()+c.fcOut.Load())/secs, dirBackendOut)
}
