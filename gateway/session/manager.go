// Package session is the gateway's protocol-independent core: one live call
// from start to end. A protocol adapter (native, AudioHook, Twilio-style,
// Asterisk) authenticates the tenant, parses its framing and drives a Call:
// Start, Audio and Gap as the stream arrives, End at hang-up. The Call
// batches frames into chunks and fans them out over one gRPC stream to a
// realtime instance (latency first: a bounded queue that drops the oldest
// audio) and one to a fullcall instance (lossless: sequence numbers,
// acknowledgements and a bounded replay buffer), and hands score and alert
// events back to the adapter.
//
// What an adapter needs to know:
//
//   - Manager.Admit checks the tenant's quota (and the drain) before the
//     protocol's upgrade; Manager.Start checks again and returns ErrOverQuota
//     (ErrNoHeadroom, at the gateway's ceiling, matches it too),
//     ErrDraining, ErrCallLive, ErrBadStart or ErrUnavailable, which the
//     adapter maps to its protocol's refusals. Manager.Refused counts the
//     refusals the adapter makes itself. Manager.Load tells admission
//     control how loaded the gateway is.
//   - Call.Audio applies the pacing policy (Options.Pacing): under the
//     default, throttle, it may block the adapter's reader until the call
//     is back within 2 s of real time; it returns an error wrapping
//     ErrTooFast when the policy refuses the client, and the adapter closes
//     with its "too fast" code. It also blocks while the call's fullcall
//     replay log is full (fullcall slow): whole-call audio is never
//     dropped, the client is held back instead.
//   - Events (the adapter's) receives the call's scores and alerts; an
//     Observer on the Manager (the live feed) sees every call's start,
//     scores, alerts and end whatever its protocol. Neither may block.
//   - Call.Sent tells the traffic metrics what the adapter wrote back.
//   - Call.Done closes when the gateway ends the call (drain, lost
//     fullcall); the adapter then calls End with Call.AbortReason and
//     closes its connection.
//
// Per call, one goroutine owns each backend stream (it opens it, receives
// on it and reopens it after a failure) and a short-lived goroutine sends
// whatever is queued: a call is idle between its chunks, so no goroutine
// waits with a grown stack for the next one.
//
// The gateway keeps no analysis state: it never decodes audio.
package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	nooptrace "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc/peer"

	"github.com/calmline/calmline/lib/clock"
	"github.com/calmline/calmline/lib/rpc"
	"github.com/calmline/calmline/lib/tenant"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// Errors Start returns; adapters map them to their protocol's refusals.
var (
	ErrOverQuota   = errors.New("tenant is at its concurrent-call limit")
	ErrDraining    = errors.New("gateway is draining")
	ErrCallLive    = errors.New("a call with this id is already live")
	ErrBadStart    = errors.New("invalid call start")
	ErrUnavailable = errors.New("analysis backends unavailable")
	// ErrNotResumable refuses a resume: fullcall holds no checkpoint of
	// the call, its report is already stored, or another model version
	// made the checkpoint.
	ErrNotResumable = errors.New("the call cannot be resumed")
	// ErrTooFast is returned by Audio when the client sends audio faster
	// than real time beyond what the pacing policy allows.
	ErrTooFast = errors.New("audio arrives faster than real time")
	// ErrNoHeadroom refuses a new call because the gateway is at its
	// ceiling of live calls (Options.MaxCalls). It matches ErrOverQuota
	// too, so that every adapter answers it with its "over quota" refusal
	// (4429), which tells the client to try again later or elsewhere.
	ErrNoHeadroom error = noHeadroom{}
)

type noHeadroom struct{}

func (noHeadroom) Error() string        { return "the gateway is at its ceiling of live calls" }
func (noHeadroom) Is(target error) bool { return target == ErrOverQuota }

// ReasonCapacityCalls is the refusal reason counted for ErrNoHeadroom
// (admission counts its own capacity reasons under the same metric).
const ReasonCapacityCalls = "capacity_calls"

// Pacing policies: what the gateway does with a client whose audio runs
// ahead of the wall clock (a PBX sends in real time; a client far ahead is
// replaying a file, looping, or attacking).
const (
	// PaceThrottle holds the adapter's reader until the call's timeline is
	// back within the allowed lead, so that TCP slows the client down. A
	// client so far ahead that it would be held longer than MaxWait is
	// refused instead. The default.
	PaceThrottle = "throttle"
	// PaceRefuse ends the call (Audio returns ErrTooFast) as soon as the
	// timeline runs more than MaxLead ahead.
	PaceRefuse = "refuse"
	// PaceOff accepts audio at any speed (tests, trusted batch replays).
	PaceOff = "off"
)

// Pacing is the policy for audio that arrives faster than real time. A
// call's timeline (audio and gaps, in samples per channel) is compared
// with the wall-clock time since the call started; it may run ahead by
// MaxLead, which lets a PBX's jitter and small bursts (a stalled network
// catching up) through untouched.
type Pacing struct {
	// Policy is PaceThrottle (default), PaceRefuse or PaceOff.
	Policy string
	// MaxLead is how far the timeline may run ahead of the clock
	// (default 2 s).
	MaxLead time.Duration
	// MaxWait bounds one throttling wait; a client further ahead is
	// refused (default 10 s, well inside the connection's pong wait).
	MaxWait time.Duration
}

// Observer sees every call a Manager runs, whatever its protocol: the live
// feed subscribes through it. Its methods are called from the calls'
// goroutines and must not block.
type Observer interface {
	// CallStarted is called once the call is live.
	CallStarted(c *Call)
	// CallScore and CallAlert are called for every score update and alert
	// event realtime sends for the call.
	CallScore(c *Call, u *callv1.ScoreUpdate)
	CallAlert(c *Call, a *callv1.AlertEvent)
	// CallEnded is called once the call has ended, with its stored report
	// (nil when none could be stored).
	CallEnded(c *Call, reason EndReason, r *fullcallv1.Report)
}

// Options configures a Manager.
type Options struct {
	Logger        *slog.Logger
	MeterProvider metric.MeterProvider
	// TracerProvider traces each call: a span from Start to End (a child
	// of the WebSocket's request span), parent of its backend streams.
	TracerProvider trace.TracerProvider
	// Realtime and Fullcall are the backend connection pools.
	Realtime *rpc.Pool
	Fullcall *rpc.Pool
	// ChunkDuration is how much audio goes into one chunk (default
	// DefaultChunkDuration). It should divide a second.
	ChunkDuration time.Duration
	// ChunkPhase places the chunks on the call's timeline: each ends
	// ChunkPhase past a multiple of ChunkDuration (taken modulo
	// ChunkDuration; the first chunk is that much shorter). Zero means
	// DefaultChunkPhase; ChunkDuration itself puts the ends on whole
	// multiples.
	ChunkPhase time.Duration
	// RealtimeQueue bounds the audio waiting for realtime; past it the
	// oldest is dropped and counted (default 2 s).
	RealtimeQueue time.Duration
	// RealtimeStall is how long realtime may leave audio unanswered
	// before the call moves to another instance (default 4 s; negative
	// disables). A realtime instance that hangs without closing its
	// connection (a stopped process, a dead host) is otherwise noticed
	// only by keepalive, after 13 s. It applies only while audio flows and
	// at least 1.5 s of it is waiting for a score, so a paused or quiet
	// call never trips it, and only when the instance has sent nothing to
	// any of this gateway's calls for as long, so an overloaded instance
	// (slow, not hung) keeps its calls.
	RealtimeStall time.Duration
	// ReplayBuffer bounds the audio kept for fullcall until acknowledged
	// (default 30 s). A call whose log is full waits for fullcall's
	// acknowledgements, holding its client back: fullcall audio is never
	// dropped to make room.
	ReplayBuffer time.Duration
	// FullcallBatch, when positive, is how much audio (at most 1 s) the
	// replay log's last chunk gathers before it goes to fullcall, instead
	// of each chunk going at once: fewer messages (a gRPC write here; a
	// read, a decode and a write there) for audio that fullcall keeps, not
	// scores, and acknowledges only at its checkpoints anyway. A gap, an
	// event or the call's end sends what is gathered at once; no timer.
	// What the gateway holds unsent is lost with it, as what fullcall has
	// not checkpointed is (docs/architecture.md). Default 0: off.
	FullcallBatch time.Duration
	// FullcallFailover is how long fullcall may acknowledge nothing while
	// a call's replay log is full before the call's fullcall audio is
	// given up (fullcall is gone, not slow): the call ends, counted as
	// fullcall_lost, and fullcall's orphan sweep stores its report as
	// incomplete (default 30 s).
	FullcallFailover time.Duration
	// MaxCalls is the ceiling of live calls on this gateway (parked ones
	// included); past it Start refuses with ErrNoHeadroom, and admission
	// refuses new connections before the upgrade. 0: no ceiling.
	MaxCalls int
	// Clock is the clock pacing, read pauses, stall detection, the resume
	// grace, backpressure and the load signals run on (default the system
	// clock; tests pass a fake one).
	Clock clock.Clock
	// FinishTimeout bounds the wait for the report at End (default 10 s).
	FinishTimeout time.Duration
	// OpenTimeout bounds opening the backend streams at Start (default 5 s).
	OpenTimeout time.Duration
	// Pacing is the policy for clients sending faster than real time.
	Pacing Pacing
	// ResumeGrace is how long a call whose connection dropped without a
	// hang-up stays open for its client to resume it (Call.Park); then it
	// ends with END_REASON_DISCONNECTED (default 30 s; negative: calls
	// end at once).
	ResumeGrace time.Duration
	// Observer, when set, sees every call's start, scores, alerts and end.
	Observer Observer
}

func (o *Options) defaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MeterProvider == nil {
		o.MeterProvider = noop.NewMeterProvider()
	}
	if o.ChunkDuration == 0 {
		o.ChunkDuration = DefaultChunkDuration
	}
	if o.ChunkPhase == 0 {
		o.ChunkPhase = DefaultChunkPhase
	}
	if o.RealtimeQueue == 0 {
		o.RealtimeQueue = 2 * time.Second
	}
	if o.RealtimeStall == 0 {
		o.RealtimeStall = 4 * time.Second
	}
	if o.ReplayBuffer == 0 {
		o.ReplayBuffer = DefaultReplayBuffer
	}
	if o.FullcallFailover == 0 {
		o.FullcallFailover = 30 * time.Second
	}
	o.Clock = clock.OrSystem(o.Clock)
	if o.FinishTimeout == 0 {
		o.FinishTimeout = 10 * time.Second
	}
	if o.OpenTimeout == 0 {
		o.OpenTimeout = 5 * time.Second
	}
	if o.ResumeGrace == 0 {
		o.ResumeGrace = 30 * time.Second
	}
	if o.Pacing.Policy == "" {
		o.Pacing.Policy = PaceThrottle
	}
	if o.Pacing.MaxLead == 0 {
		o.Pacing.MaxLead = 2 * time.Second
	}
	if o.Pacing.MaxWait == 0 {
		o.Pacing.MaxWait = 10 * time.Second
	}
}

// peerHeard returns the clock of when the backend instance (realtime or
// fullcall) at the other end of a stream (its context) was last heard
// from, or nil when the stream does not say who that is.
func (m *Manager) peerHeard(ctx context.Context) *atomic.Int64 {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return nil
	}
	addr := p.Addr.String()
	if v, ok := m.heard.Load(addr); ok {
		return v.(*atomic.Int64)
	}
	v, _ := m.heard.LoadOrStore(addr, new(atomic.Int64))
	return v.(*atomic.Int64)
}

// DefaultReplayBuffer is Options.ReplayBuffer's default.
const DefaultReplayBuffer = 30 * time.Second

// DefaultChunkDuration is Options.ChunkDuration's default: 200 ms. With
// DefaultChunkPhase it delays no score, and it sends half the messages
// to each backend, and needs half the reads of a paced connection
// (Call.ReadPause), that 100 ms chunks would.
const DefaultChunkDuration = 200 * time.Millisecond

// DefaultChunkPhase is Options.ChunkPhase's default: the voice model's
// latency (lib/voice.Latency frames of 10 ms). The model scores a second
// once it has 160 ms of audio beyond it; chunks ending 160 ms past each
// second hand realtime that audio the moment the client has sent it,
// where chunks ending on the second would hold it back until the next
// chunk ends (40 ms later with 200 ms chunks).
const DefaultChunkPhase = 160 * time.Millisecond

// Manager starts calls and keeps count of them per tenant.
type Manager struct {
	o      Options
	log    *slog.Logger
	m      *metrics
	tracer trace.Tracer
	clock  clock.Clock

	// unacked is the audio (bytes) in the calls' replay logs that fullcall
	// has not acknowledged, replayCap what the live calls' logs hold
	// together; lag smooths how late realtime's scores come.
	unacked, replayCap atomic.Int64
	lag                lagMeter

	// heard holds, per backend instance address, when (Unix
	// nanoseconds) any call last received anything from it: a call's
	// realtime stream is given up for a stall, and its fullcall audio
	// for the failover window, only when the whole instance is silent,
	// so an overloaded instance, slow for some calls but answering
	// others, keeps its calls.
	heard sync.Map // string -> *atomic.Int64

	mu     sync.Mutex
	perTen map[string]int
	known  map[string]bool // tenants whose series exist at zero
	// parkedPer counts, per tenant, the live calls parked for a resume.
	parkedPer map[string]int
	live      map[string]*Call // tenant/call id -> call
	draining  bool
	idle      chan struct{} // closed and replaced when the last call ends
	total     atomic.Int64
}

// NewManager returns a Manager.
func NewManager(o Options) (*Manager, error) {
	o.defaults()
	if o.Realtime == nil || o.Fullcall == nil {
		return nil, errors.New("session: Realtime and Fullcall pools are required")
	}
	if o.ChunkDuration < 20*time.Millisecond || o.ChunkDuration > 2*time.Second {
		return nil, fmt.Errorf("session: ChunkDuration %v outside [20ms, 2s]", o.ChunkDuration)
	}
	if o.ChunkPhase < 0 {
		return nil, fmt.Errorf("session: negative ChunkPhase %v", o.ChunkPhase)
	}
	switch o.Pacing.Policy {
	case PaceThrottle, PaceRefuse, PaceOff:
	default:
		return nil, fmt.Errorf("session: pacing policy %q: want %s, %s or %s", o.Pacing.Policy, PaceThrottle, PaceRefuse, PaceOff)
	}
	if o.Pacing.MaxLead < 0 || o.Pacing.MaxWait < 0 {
		return nil, errors.New("session: pacing MaxLead and MaxWait must not be negative")
	}
	if o.TracerProvider == nil {
		o.TracerProvider = nooptrace.NewTracerProvider()
	}
	mgr := &Manager{o: o, log: o.Logger, clock: o.Clock, tracer: o.TracerProvider.Tracer("github.com/calmline/calmline/gateway/session"), perTen: map[string]int{}, parkedPer: map[string]int{}, live: map[string]*Call{}, idle: make(chan struct{})}
	m, err := newMetrics(o.MeterProvider, mgr)
	if err != nil {
		return nil, err
	}
	mgr.m = m
	return mgr, nil
}

// Admit reports whether the tenant could start a call now; adapters use it
// to refuse before the WebSocket upgrade. Start checks again.
//
// A call parked for a resume (Call.Park) does not count here: the
// connection may be the one resuming it. Start counts it.
func (m *Manager) Admit(t *tenant.Tenant) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.draining {
		return ErrDraining
	}
	if t.MaxConcurrentCalls > 0 && m.perTen[t.ID]-m.parkedPer[t.ID] >= t.MaxConcurrentCalls {
		return fmt.Errorf("%w (%d)", ErrOverQuota, t.MaxConcurrentCalls)
	}
	return nil
}

func (m *Manager) admitLocked(t *tenant.Tenant) error {
	if m.draining {
		return ErrDraining
	}
	if m.o.MaxCalls > 0 && len(m.live) >= m.o.MaxCalls {
		return fmt.Errorf("%w (%d live calls, ceiling %d)", ErrNoHeadroom, len(m.live), m.o.MaxCalls)
	}
	if t.MaxConcurrentCalls > 0 && m.perTen[t.ID] >= t.MaxConcurrentCalls {
		return fmt.Errorf("%w (%d)", ErrOverQuota, t.MaxConcurrentCalls)
	}
	return nil
}

// Refused counts a refusal an adapter made on its own (bad input before a
// call could start), by the protocol it came on (one of Protocols) and
// reason.
func (m *Manager) Refused(ctx context.Context, tenantID, protocol, reason string) {
	m.m.refused.Add(ctx, 1, metric.WithAttributes(attribute.String("tenant", tenantID),
		attribute.String("protocol", protocol), attribute.String("reason", reason)))
}

// EventDropped counts an event dropped because the tenant's client read too
// slowly.
func (m *Manager) EventDropped(tenantID string) {
	m.m.evDropped.Add(context.Background(), 1, metric.WithAttributes(attribute.String("tenant", tenantID)))
}

// KnowTenants makes the per-tenant series of these tenants exist at zero
// (live calls, calls, refusals, traffic…) before their first call, and
// keeps calmline_gateway_calls_active at zero between their calls. Call it
// again when the tenants change; tenants are never forgotten.
func (m *Manager) KnowTenants(ids []string) {
	m.mu.Lock()
	if m.known == nil {
		m.known = map[string]bool{}
	}
	var added []string
	for _, id := range ids {
		if !m.known[id] {
			m.known[id] = true
			added = append(added, id)
		}
	}
	m.mu.Unlock()
	for _, id := range added {
		m.m.zeroTenant(id)
	}
}

// Live returns the number of live calls.
func (m *Manager) Live() int { return int(m.total.Load()) }

// LiveCalls returns the number of the tenant's live calls.
func (m *Manager) LiveCalls(tenantID string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.perTen[tenantID]
}

// Drain refuses new calls from now on and waits until every live call has
// ended or ctx ends; it returns the number of calls still live.
func (m *Manager) Drain(ctx context.Context) int {
	m.mu.Lock()
	m.draining = true
	// A parked call cannot be resumed on a draining gateway: it ends now.
	for _, c := range m.live {
		if c.parked {
			c.Abort(fullcallv1.EndReason_END_REASON_DISCONNECTED, errors.New("gateway draining"))
		}
	}
	m.mu.Unlock()
	for {
		m.mu.Lock()
		n, idle := len(m.live), m.idle
		m.mu.Unlock()
		if n == 0 {
			return 0
		}
		select {
		case <-idle:
		case <-ctx.Done():
			return n
		}
	}
}

// Draining reports whether Drain was called.
func (m *Manager) Draining() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.draining
}

// EndAll ends every live call with the given reason (their adapters close
// the connections) and waits until they are gone or ctx ends.
func (m *Manager) EndAll(ctx context.Context, reason EndReason) {
	m.mu.Lock()
	calls := make([]*Call, 0, len(m.live))
	for _, c := range m.live {
		calls = append(calls, c)
	}
	m.mu.Unlock()
	for _, c := range calls {
		c.Abort(reason, errors.New("gateway shutting down"))
	}
	m.Drain(ctx)
}

func (m *Manager) register(c *Call) error {
	key := c.info.TenantId + "\x00" + c.info.CallId
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.admitLocked(c.tenant); err != nil {
		return err
	}
	if _, dup := m.live[key]; dup {
		return ErrCallLive
	}
	m.live[key] = c
	m.perTen[c.info.TenantId]++
	m.total.Add(1)
	m.replayCap.Add(int64(c.replayBytes))
	return nil
}

func (m *Manager) unregister(c *Call) {
	key := c.info.TenantId + "\x00" + c.info.CallId
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.live[key] != c {
		return
	}
	delete(m.live, key)
	if m.perTen[c.info.TenantId]--; m.perTen[c.info.TenantId] <= 0 {
		delete(m.perTen, c.info.TenantId)
	}
	m.total.Add(-1)
	m.replayCap.Add(-int64(c.replayBytes))
	if len(m.live) == 0 {
		close(m.idle)
		m.idle = make(chan struct{})
	}
}

// now reads the Manager's clock; since is the time elapsed on it.
func (m *Manager) now() time.Time { return m.clock.Now() }

func (c *Call) since(t time.Time) time.Duration { return c.m.now().Sub(t) }

// Load is what a Manager knows of its own load, cheap to read: the
// signals admission control judges the gateway's headroom by.
type Load struct {
	// Calls is the number of live calls (parked ones included), MaxCalls
	// the configured ceiling (0: none).
	Calls, MaxCalls int
	// RealtimeLag is how late realtime's scores come after their audio,
	// smoothed over the last seconds across calls (a chunk dropped from a
	// full realtime queue counts as the queue's whole length); 0 when no
	// score came lately.
	RealtimeLag time.Duration
	// FullcallUnacked is the audio (bytes) fullcall has not yet
	// acknowledged, all calls together.
	FullcallUnacked int64
	// FullcallBacklog is that audio as a duration per live call: the
	// unacknowledged bytes over what the calls' replay logs hold
	// together, times Options.ReplayBuffer. It does not depend on how
	// many calls there are or on their formats, so one limit serves a
	// gateway at 10 calls and at 1,000; a healthy call's is about half
	// fullcall's checkpoint interval plus the audio waiting for
	// realtime's analysis.
	FullcallBacklog time.Duration
}

// Load returns the Manager's load now.
func (m *Manager) Load() Load {
	l := Load{Calls: m.Live(), MaxCalls: m.o.MaxCalls, RealtimeLag: m.lag.value(m.now()), FullcallUnacked: m.unacked.Load()}
	if cp := m.replayCap.Load(); cp > 0 {
		l.FullcallBacklog = time.Duration(float64(l.FullcallUnacked) / float64(cp) * float64(m.o.ReplayBuffer))
	}
	return l
}

// perTenant snapshots live calls per tenant for the metrics.
func (m *Manager) perTenant() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]int, len(m.perTen)+len(m.known))
	for k := range m.known {
		out[k] = 0
	}
	for k, v := range m.perTen {
		out[k] = v
	}
	return out
}
