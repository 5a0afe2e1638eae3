// Package loadgen is calmline's PBX simulator and load generator. It opens
// N concurrent calls to a gateway over an ingest protocol (ramping up at a
// given rate), streams audio from a WAV file (looped or trimmed) at
// real-time 20 ms pacing, hangs up after a duration (optionally every call
// in the same second), and measures what PBX integrators and SREs ask:
// calls started, completed, refused and dropped; audio→score latency (from
// the moment the frame completing a second of audio was sent to the score
// covering it arriving); stop→stopped latency (the report stored);
// whether every byte sent is in the stored report; errors by kind; and the
// simulator's own CPU.
//
// The simulator is cheap so that it measures the gateway, not itself: one
// ticker goroutine drives a few shard workers that write each call's due
// frames; there is no timer or writer goroutine per call, only the
// protocol's reader goroutine blocked on its socket. Its main cost is the
// write system call: the native connection encodes its frames itself and
// writes each call's due frames at a tick in one write, and
// Options.FramesPerWrite groups frames to make fewer writes. Connections can be
// spread over several loopback source addresses so that its own ephemeral
// ports are never the limit.
//
// Protocols plug in through the Protocol interface: "native" (calmline's
// own), "audiohook" (Genesys AudioHook v2), "twilio" (Twilio-style Media
// Streams) and "asterisk" (chan_websocket, two legs per call). Where a
// protocol sends no scores back (Twilio, Asterisk) the audio→score latency
// is reported as not applicable; where its answer to the hang-up carries
// no report figures (AudioHook's closed, a close 1000), the stored reports
// are fetched afterwards to check that every byte sent is in them.
package loadgen

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/backoff"
)

// FrameDuration is the pacing of audio frames, as PBXs send them.
const FrameDuration = 20 * time.Millisecond

// Options configures a run.
type Options struct {
	// URL is the gateway's endpoint for the protocol, e.g.
	// ws://127.0.0.1:8080/ws/native.
	URL string
	// Protocol is a registered protocol name (default "native").
	Protocol string
	APIKey   string
	// ClientSecret signs AudioHook connection requests (the API key's
	// client secret); empty sends them unsigned.
	ClientSecret []byte
	// Calls is the number of concurrent calls.
	Calls int
	// Ramp is how many calls start per second; 0 starts them all at once.
	Ramp float64
	// Duration is how long each call streams. With BurstHangup, every
	// call hangs up at the same moment, Duration after the last one
	// started.
	Duration time.Duration
	// Audio is what every call plays, looped (or trimmed) to Duration.
	Audio *audio.Recording
	// Roles names the channels; default caller,agent for stereo and agent
	// for mono.
	Roles       []string
	BurstHangup bool
	// SourceAddrs are local IP addresses to dial from, in turn (e.g.
	// 127.0.0.2, 127.0.0.3); default the system's choice.
	SourceAddrs []string
	// CallPrefix starts every call id (default "lg-" and a random run id).
	CallPrefix string
	// Reports, when set, checks every completed call's stored report.
	Reports ReportChecker
	// StopTimeout bounds the wait for a call's report after its hang-up
	// (default 30 s).
	StopTimeout time.Duration
	// Shards is the number of pacing workers (default 2 × GOMAXPROCS).
	Shards int
	// FramesPerWrite sends each call's 20 ms frames in groups of this
	// many (default 1: each frame when it is due), each group when its
	// first frame is due, in one write where the protocol's connection is
	// a Flusher (native) — still one message per frame. Fewer, larger
	// writes cut the simulator's system calls, its main cost, so that it
	// can drive more calls; the audio then arrives up to
	// (FramesPerWrite-1) × 20 ms ahead of real time, in bursts.
	FramesPerWrite int
	// TLS configures wss:// (and the report checker's https://)
	// connections; nil uses the system's roots.
	TLS *tls.Config
	// Reconnect makes a call whose connection is lost (closed without a
	// close frame, or with 1001/1011/1012/1013/1014: a gateway died or
	// drained) redial the same URL and resume as the same call, the audio
	// going on from the current moment (what was due meanwhile is a
	// reconnect gap). It gives up after ReconnectWindow (default 30 s).
	// The native protocol only.
	Reconnect       bool
	ReconnectWindow time.Duration
	Logger          *slog.Logger
}

// ReportChecker fetches a stored report's audio byte and chunk counts.
type ReportChecker interface {
	Report(ctx context.Context, callID string) (audioBytes, chunks uint64, incomplete bool, err error)
}

func (o *Options) validate() error {
	if o.Protocol == "" {
		o.Protocol = "native"
	}
	if _, ok := protocols[o.Protocol]; !ok {
		return fmt.Errorf("loadgen: unknown protocol %q (have %s)", o.Protocol, strings.Join(Protocols(), ", "))
	}
	switch {
	case o.URL == "":
		return errors.New("loadgen: URL is required")
	case o.Calls < 1:
		return fmt.Errorf("loadgen: %d calls; want at least 1", o.Calls)
	case o.Ramp < 0:
		return fmt.Errorf("loadgen: ramp %g calls/s is negative", o.Ramp)
	case o.Duration < FrameDuration:
		return fmt.Errorf("loadgen: duration %v is shorter than a frame", o.Duration)
	case o.Audio == nil || len(o.Audio.Data) == 0:
		return errors.New("loadgen: no audio")
	}
	if err := o.Audio.Format.Validate(); err != nil {
		return fmt.Errorf("loadgen: audio: %w", err)
	}
	if o.Audio.Format.SampleRate*int(FrameDuration)%int(time.Second) != 0 {
		return fmt.Errorf("loadgen: %d Hz does not divide into 20 ms frames", o.Audio.Format.SampleRate)
	}
	if len(o.Roles) == 0 {
		o.Roles = []string{"caller", "agent"}
		if o.Audio.Format.Channels == 1 {
			o.Roles = []string{"agent"}
		}
	}
	if len(o.Roles) != o.Audio.Format.Channels {
		return fmt.Errorf("loadgen: %d roles for %d channels", len(o.Roles), o.Audio.Format.Channels)
	}
	if c, ok := protocols[o.Protocol].(Checker); ok {
		if err := c.Check(o.Audio.Format, o.Roles); err != nil {
			return fmt.Errorf("loadgen: %s: %w", o.Protocol, err)
		}
	}
	if o.CallPrefix == "" {
		var b [4]byte
		rand.Read(b[:])
		o.CallPrefix = "lg-" + hex.EncodeToString(b[:]) + "-"
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = 30 * time.Second
	}
	if o.ReconnectWindow <= 0 {
		o.ReconnectWindow = 30 * time.Second
	}
	if r, ok := protocols[o.Protocol].(interface{ CanResume() bool }); o.Reconnect && (!ok || !r.CanResume()) {
		return fmt.Errorf("loadgen: the %s protocol cannot resume a call: --reconnect needs the native protocol", o.Protocol)
	}
	if o.FramesPerWrite < 0 || o.FramesPerWrite > 50 {
		return fmt.Errorf("loadgen: frames per write %d: want 1 to 50", o.FramesPerWrite)
	}
	if o.FramesPerWrite == 0 {
		o.FramesPerWrite = 1
	}
	if o.Shards <= 0 {
		o.Shards = 2 * runtime.GOMAXPROCS(0)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// call states.
const (
	streaming    int32 = iota
	stopping           // stop sent, waiting for the report
	finished           // connection gone
	reconnecting       // connection lost, redialling
	writeFailed        // a write failed; the reader will see the connection end
)

// call is one simulated call. Its shard worker owns the sending side; the
// protocol's reader fills in what arrives, under mu.
type call struct {
	id       string
	reportID string // the id the call's report is stored under
	conn     Conn
	startAt  time.Time // when audio began
	state    atomic.Int32
	sent     int // the timeline in frames (the next frame's index), owned by the worker
	frames   int // frames actually sent
	bytes    uint64
	// lost counts bytes sent to a gateway that died before they were
	// durable (the resume said where the durable record ended): the
	// stored report holds bytes - lost. Written while the worker is off
	// the call (reconnecting).
	lost    uint64
	agentID string
	shard   *shard
	dialer  *net.Dialer
	// paceMu is held by the worker while it paces the call, and by a
	// reconnect while it moves the call's timeline on.
	paceMu sync.Mutex
	// redial is set when the connection a reconnect opened was lost
	// before the reconnect handed the call back.
	redial atomic.Bool
	limit  int // frames to send before the hang-up; 0 = until the burst
	rate   uint64

	mu        sync.Mutex
	marks     [32]mark // when the frame completing each recent second was sent
	latencies []float64
	unmatched int
	scores    int
	stopAt    time.Time
	stopped   *Stopped
	stoppedAt time.Time
	closeCode int
	closeErr  error
	closedAt  time.Time
	writeErr  error
	timedOut  bool
	watchdog  *time.Timer
	done      chan struct{}
}

type mark struct {
	end uint64
	at  time.Time
}

// slot is where the mark of the second ending at end goes: one slot per
// second, so that a score up to len(marks) seconds late still finds it.
func (c *call) slot(end uint64) int { return int(end/c.rate) % len(c.marks) }

func (c *call) score(end uint64) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.scores++
	m := c.marks[c.slot(end)]
	if m.end == end && !m.at.IsZero() {
		c.latencies = append(c.latencies, float64(now.Sub(m.at))/float64(time.Millisecond))
	} else {
		c.unmatched++ // the last, partial second, or a score far behind
	}
}

// run is one load run.
type run struct {
	o        Options
	proto    Protocol
	traits   Traits
	fb       int // frame bytes
	spf      int // samples per channel per frame
	rate     int
	nframes  int // frames in the audio, looped
	dialers  []*net.Dialer
	shards   []*shard
	hangupAt atomic.Int64 // unix nanoseconds; 0 = not yet known

	mu      sync.Mutex
	calls   []*call
	errs    map[string]int
	refused int
	failed  int
	late    atomic.Int64

	ctx             context.Context // the run's; reconnects end with it
	bg              sync.WaitGroup  // reconnect goroutines
	reconnects      []Reconnect
	reconnectFailed int
}

type shard struct {
	tick  chan struct{}
	mu    sync.Mutex
	calls []*call
}

// Run runs the load and returns its summary. It ends when every call has
// ended, or early (hanging every call up) when ctx ends.
func Run(ctx context.Context, o Options) (*Summary, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	f := o.Audio.Format
	r := &run{
		o:      o,
		proto:  protocols[o.Protocol],
		traits: traitsOf(protocols[o.Protocol]),
		fb:     f.FrameBytes() * f.SampleRate * int(FrameDuration) / int(time.Second),
		spf:    f.SampleRate * int(FrameDuration) / int(time.Second),
		rate:   f.SampleRate,
		errs:   map[string]int{},
		ctx:    ctx,
	}
	r.nframes = len(o.Audio.Data) / r.fb
	if r.nframes == 0 {
		return nil, fmt.Errorf("loadgen: the audio is shorter than one 20 ms frame")
	}
	for _, a := range o.SourceAddrs {
		ip := net.ParseIP(a)
		if ip == nil {
			return nil, fmt.Errorf("loadgen: source address %q is not an IP address", a)
		}
		r.dialers = append(r.dialers, &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 10 * time.Second})
	}
	if len(r.dialers) == 0 {
		r.dialers = []*net.Dialer{{Timeout: 10 * time.Second}}
	}
	usage0 := rusage()
	begin := time.Now()

	// The pacer and the shard workers.
	pace, stopPace := context.WithCancel(context.Background())
	var workers sync.WaitGroup
	for range o.Shards {
		s := &shard{tick: make(chan struct{}, 1)}
		r.shards = append(r.shards, s)
		workers.Add(1)
		go func() { defer workers.Done(); r.work(pace, s) }()
	}
	workers.Add(1)
	go func() {
		defer workers.Done()
		t := time.NewTicker(FrameDuration)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				for _, s := range r.shards {
					select {
					case s.tick <- struct{}{}:
					default: // the worker is still busy with the last tick
					}
				}
			case <-pace.Done():
				return
			}
		}
	}()

	// The ramp: calls open concurrently, at the ramp's rate.
	var opening sync.WaitGroup
	for i := range o.Calls {
		if o.Ramp > 0 {
			at := begin.Add(time.Duration(float64(i) / o.Ramp * float64(time.Second)))
			select {
			case <-time.After(time.Until(at)):
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			break
		}
		opening.Add(1)
		go func() { defer opening.Done(); r.open(ctx, i) }()
	}
	opening.Wait()
	rampDone := time.Now()
	if o.BurstHangup {
		r.hangupAt.Store(rampDone.Add(o.Duration).UnixNano())
	}

	// Wait for every call to end; on ctx's end hang everything up now.
	r.mu.Lock()
	calls := append([]*call(nil), r.calls...)
	r.mu.Unlock()
	for _, c := range calls {
		select {
		case <-c.done:
		case <-ctx.Done():
			r.hangupAt.Store(time.Now().UnixNano())
			<-c.done
		}
		c.mu.Lock()
		if c.watchdog != nil {
			c.watchdog.Stop()
		}
		c.mu.Unlock()
	}
	r.bg.Wait()
	stopPace()
	workers.Wait()
	end := time.Now()
	s := r.summarize(begin, rampDone, end, usage0)
	if o.Reports != nil {
		s.Reports = r.checkReports(ctx, calls)
		for k, v := range s.Reports.errors {
			s.Errors[k] += v
		}
	}
	s.OK = s.ok()
	return s, nil
}

// open starts call i and hands it to a shard.
func (r *run) open(ctx context.Context, i int) {
	c := &call{id: fmt.Sprintf("%s%05d", r.o.CallPrefix, i+1), rate: uint64(r.rate), done: make(chan struct{}),
		agentID: fmt.Sprintf("agent-%05d", i+1), shard: r.shards[i%len(r.shards)], dialer: r.dialers[i%len(r.dialers)]}
	c.reportID = c.id
	if !r.o.BurstHangup {
		c.limit = int(r.o.Duration / FrameDuration)
	}
	conn, err := r.proto.Open(ctx, r.spec(c), r.events(c))
	if err != nil {
		var ref *RefusedError
		r.mu.Lock()
		if errors.As(err, &ref) {
			r.refused++
			r.errs[ref.Kind()]++
		} else {
			r.failed++
			r.errs["open_"+errorKind(err)]++
		}
		r.mu.Unlock()
		r.o.Logger.Debug("call not started", "call_id", c.id, "err", err)
		return
	}
	c.conn, c.startAt = conn, time.Now()
	if ri, ok := conn.(ReportIDer); ok {
		c.reportID = ri.ReportID()
	}
	r.mu.Lock()
	r.calls = append(r.calls, c)
	r.mu.Unlock()
	c.shard.add(c)
}

func (s *shard) add(c *call) {
	s.mu.Lock()
	s.calls = append(s.calls, c)
	s.mu.Unlock()
}

func (r *run) spec(c *call) CallSpec {
	return CallSpec{URL: r.o.URL, APIKey: r.o.APIKey, CallID: c.id, AgentID: c.agentID,
		Format: r.o.Audio.Format, Roles: r.o.Roles, Dialer: c.dialer, TLS: r.o.TLS, ClientSecret: r.o.ClientSecret}
}

// events are what one connection of c reports.
func (r *run) events(c *call) Events {
	return Events{
		Score: c.score,
		Stopped: func(st Stopped) {
			c.mu.Lock()
			c.stopped, c.stoppedAt = &st, time.Now()
			c.mu.Unlock()
		},
		Closed: func(code int, reason string, err error) {
			now := time.Now()
			c.mu.Lock()
			c.closeCode, c.closeErr, c.closedAt = code, err, now
			answered := c.stopped != nil || c.timedOut
			c.mu.Unlock()
			if r.o.Reconnect && !answered && lostConnection(code) {
				switch c.state.Swap(reconnecting) {
				case reconnecting:
					// A reconnect is under way (this is the connection it
					// just opened, lost at once): it dials again.
					c.redial.Store(true)
					return
				case streaming, stopping, writeFailed:
					r.bg.Add(1)
					go func() { defer r.bg.Done(); r.reconnect(c, now) }()
					return
				}
			}
			c.state.Store(finished)
			close(c.done)
		},
	}
}

// lostConnection tells a lost connection (no close frame, or a gateway
// going away, failing or restarting) from a call the gateway ended.
func lostConnection(code int) bool {
	switch code {
	case 0, 1001, 1006, 1011, 1012, 1013, 1014:
		return true
	}
	return false
}

// Reconnect is one resumed call's reconnection.
type Reconnect struct {
	// AtMS is when the connection was lost (Unix milliseconds).
	AtMS int64 `json:"at_unix_ms"`
	// MS is the time from the loss to the resumed call's "started".
	MS float64 `json:"ms"`
	// LostBytes were sent to the gateway that died but not durable.
	LostBytes uint64 `json:"lost_bytes"`
	// SkippedMS is the audio that became due while reconnecting (a gap).
	SkippedMS float64 `json:"skipped_ms"`
}

// reconnect redials c's call with resume until it is back or the window
// has passed; then the shard worker takes it up again (or it ends).
func (r *run) reconnect(c *call, lostAt time.Time) {
	c.mu.Lock()
	old := c.conn
	c.mu.Unlock()
	old.Close()
	retry := backoff.New(backoff.Policy{Initial: 50 * time.Millisecond, Max: time.Second}, nil)
	var lastErr error
	for attempt := 0; time.Since(lostAt) < r.o.ReconnectWindow && r.ctx.Err() == nil; attempt++ {
		// The audio goes on from now: what fell due while the connection
		// was down never reached calmline.
		c.paceMu.Lock()
		due := max(int(time.Since(c.startAt)/FrameDuration), c.sent)
		c.paceMu.Unlock()
		spec := r.spec(c)
		spec.Resume, spec.ResumeAt = true, uint64(due*r.spf)
		c.redial.Store(false)
		conn, err := r.proto.Open(r.ctx, spec, r.events(c))
		if err == nil && c.redial.Load() {
			conn.Close()
			err = errors.New("the resumed connection was lost at once")
		}
		if err == nil {
			took := time.Since(lostAt)
			var at uint64
			if rs, ok := conn.(Resumer); ok {
				at = rs.ResumedAt()
			}
			c.paceMu.Lock()
			defer c.paceMu.Unlock()
			sentAt := uint64(c.sent * r.spf)
			var lost uint64
			if at < sentAt {
				lost = (sentAt - at) * uint64(r.fb) / uint64(r.spf)
			}
			c.mu.Lock()
			c.lost += lost
			c.stopped, c.closeCode, c.closeErr = nil, 0, nil
			hungUp := !c.stopAt.IsZero()
			c.mu.Unlock()
			ev := Reconnect{AtMS: lostAt.UnixMilli(), MS: round(float64(took) / float64(time.Millisecond)), LostBytes: lost,
				SkippedMS: round(float64(time.Duration(due-c.sent) * FrameDuration / time.Millisecond))}
			r.mu.Lock()
			r.reconnects = append(r.reconnects, ev)
			r.mu.Unlock()
			c.sent = due
			c.mu.Lock()
			c.conn = conn
			c.mu.Unlock()
			r.o.Logger.Debug("call resumed", "call_id", c.id, "ms", ev.MS, "lost_bytes", lost, "attempt", attempt)
			if hungUp {
				// The hang-up was on its way when the gateway died: say it
				// again; the watchdog set then still bounds the wait.
				c.state.Store(stopping)
				if err := conn.Stop(); err != nil {
					conn.Close()
				}
				return
			}
			c.state.Store(streaming)
			c.shard.add(c)
			return
		}
		lastErr = err
		var ref *RefusedError
		if errors.As(err, &ref) && ref.CloseCode != 0 && !lostConnection(ref.CloseCode) {
			break // the gateway will not resume this call
		}
		retry.Wait(r.ctx)
	}
	r.o.Logger.Warn("call not resumed", "call_id", c.id, "err", lastErr)
	r.mu.Lock()
	r.reconnectFailed++
	if lastErr != nil {
		var ref *RefusedError
		if errors.As(lastErr, &ref) {
			r.errs["resume_"+ref.Kind()]++
		} else {
			r.errs["resume_"+errorKind(lastErr)]++
		}
	}
	r.mu.Unlock()
	c.state.Store(finished)
	close(c.done)
}

// errorKind classifies a network error briefly.
func errorKind(err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case strings.Contains(err.Error(), "connection refused"):
		return "connection_refused"
	case strings.Contains(err.Error(), "reset by peer"):
		return "connection_reset"
	case strings.Contains(err.Error(), "address already in use"), strings.Contains(err.Error(), "cannot assign requested address"):
		return "no_source_port"
	}
	return "error"
}

// work sends the due frames of its calls at every tick.
func (r *run) work(ctx context.Context, s *shard) {
	for {
		select {
		case <-s.tick:
		case <-ctx.Done():
			return
		}
		s.mu.Lock()
		calls := s.calls
		s.mu.Unlock()
		now := time.Now()
		hangup := r.hangupAt.Load()
		live := calls[:0:0]
		for _, c := range calls {
			if c.state.Load() == streaming {
				c.paceMu.Lock()
				if c.state.Load() == streaming {
					r.pace(c, now, hangup)
				}
				c.paceMu.Unlock()
			}
			if c.state.Load() == streaming {
				live = append(live, c)
			}
		}
		// Forget calls that no longer stream.
		s.mu.Lock()
		if len(s.calls) == len(calls) {
			s.calls = live
		} else { // calls joined meanwhile
			s.calls = append(live, s.calls[len(calls):]...)
		}
		s.mu.Unlock()
	}
}

// mark records when the frame completing second end of c's audio was sent.
func (r *run) mark(c *call, end uint64, at time.Time) {
	c.mu.Lock()
	c.marks[c.slot(end)] = mark{end: end, at: at}
	c.mu.Unlock()
}

// sentFrames counts c's frames from first up to c.sent as sent.
func (r *run) sentFrames(c *call, first int) {
	c.frames += c.sent - first
	c.bytes += uint64((c.sent - first) * r.fb)
}

// writeFailed ends c's streaming after a failed write: with Reconnect the
// reader sees the connection end and resumes the call; otherwise the call
// fails with err.
func (r *run) writeFailed(c *call, err error) {
	if r.o.Reconnect {
		c.state.Store(writeFailed)
		c.conn.Close()
		return
	}
	c.mu.Lock()
	c.writeErr = err
	c.mu.Unlock()
	c.state.Store(stopping) // the reader will see the connection end
	c.conn.Close()
}

// pace sends c's frames due by now, and hangs up when its time is up.
func (r *run) pace(c *call, now time.Time, hangup int64) {
	due := int(now.Sub(c.startAt)/FrameDuration) + 1
	behind := due - c.sent
	if n := r.o.FramesPerWrite; n > 1 {
		// Frames go in groups of n, each sent when its first is due.
		due = (due + n - 1) / n * n
	}
	limit := c.limit
	if hangup != 0 {
		byHangup := int(time.Duration(hangup-c.startAt.UnixNano()) / FrameDuration)
		if limit == 0 || byHangup < limit {
			limit = max(byHangup, c.sent)
		}
	}
	target := due
	if limit > 0 {
		target = min(due, limit)
	}
	if limit > 0 {
		behind = min(behind, limit-c.sent)
	}
	if behind > 5 { // more than 100 ms behind: the simulator is late
		r.late.Add(int64(behind))
	}
	data := r.o.Audio.Data
	flusher, _ := c.conn.(Flusher)
	first := c.sent
	var marks [4]uint64 // seconds completed in this write, marked once it is done
	nm := 0
	for c.sent < target {
		off := (c.sent % r.nframes) * r.fb
		if err := c.conn.Audio(data[off : off+r.fb]); err != nil {
			if flusher != nil {
				c.sent = first // nothing of this tick's has been written
			}
			r.sentFrames(c, first)
			r.writeFailed(c, err)
			return
		}
		c.sent++
		if end := uint64(c.sent * r.spf); end%uint64(r.rate) == 0 {
			if flusher != nil && nm < len(marks) {
				marks[nm] = end
				nm++
			} else {
				r.mark(c, end, time.Now())
			}
		}
	}
	if flusher != nil && c.sent > first {
		if err := flusher.Flush(); err != nil {
			c.sent = first // as when a single frame's write fails: none counted
			r.writeFailed(c, err)
			return
		}
		if nm > 0 {
			at := time.Now()
			for _, end := range marks[:nm] {
				r.mark(c, end, at)
			}
		}
	}
	r.sentFrames(c, first)
	if limit > 0 && c.sent >= limit {
		c.mu.Lock()
		c.stopAt = time.Now()
		c.mu.Unlock()
		c.state.Store(stopping)
		if err := c.conn.Stop(); err != nil {
			if !r.o.Reconnect {
				c.mu.Lock()
				c.writeErr = err
				c.mu.Unlock()
			}
			c.conn.Close()
			return
		}
		// Bound the wait for the report: a watchdog per stopping call
		// would be a timer per call; the connection's own end (the
		// gateway closes after stopped) or this close ends it.
		t := time.AfterFunc(r.o.StopTimeout, func() {
			if c.state.Load() == stopping {
				c.mu.Lock()
				c.timedOut = true
				conn := c.conn
				c.mu.Unlock()
				conn.Close()
			}
		})
		c.mu.Lock()
		c.watchdog = t
		c.mu.Unlock()
	}
}

// Latency summarises a latency distribution in milliseconds.
type Latency struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50"`
	P95   float64 `json:"p95"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
}

func latency(v []float64) Latency {
	if len(v) == 0 {
		return Latency{}
	}
	sort.Float64s(v)
	q := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(v)))) - 1
		return round(v[max(i, 0)])
	}
	return Latency{Count: len(v), P50: q(0.50), P95: q(0.95), P99: q(0.99), Max: round(v[len(v)-1])}
}

func round(v float64) float64  { return math.Round(v*10) / 10 }
func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

// Summary is a run's result, printed as JSON by `calmline loadgen --json`.
type Summary struct {
	// OK says every requested call completed with its report, with no
	// error of any kind.
	OK        bool    `json:"ok"`
	Protocol  string  `json:"protocol"`
	URL       string  `json:"url"`
	Requested int     `json:"calls_requested"`
	DurationS float64 `json:"call_duration_s"`
	Burst     bool    `json:"burst_hangup"`
	Calls     struct {
		Started   int `json:"started"`
		Completed int `json:"completed"`
		Refused   int `json:"refused"`
		// Dropped calls were started but ended without their report:
		// closed by the gateway, cut, or timed out after the hang-up.
		Dropped int `json:"dropped"`
		// Failed calls could not be opened for another reason (network).
		Failed int `json:"failed"`
	} `json:"calls"`
	FramesSent     int    `json:"frames_sent"`
	AudioBytesSent uint64 `json:"audio_bytes_sent"`
	ScoresReceived int    `json:"scores_received"`
	// AudioToScore is nil (null in JSON) where the protocol sends no
	// scores back (Twilio, Asterisk): not applicable, not zero.
	AudioToScore *Latency `json:"audio_to_score_ms"`
	// ScoresUnmatched counts scores not matched to a second of sent audio
	// (the last, partial second of each call, or a score very late).
	ScoresUnmatched int `json:"scores_unmatched"`
	// StopToStopped runs from the hang-up to the gateway's answer: the
	// native stopped or AudioHook closed (both after the report is
	// stored), Twilio's close after stop (also after), Asterisk's close
	// of the last leg (only the close handshake: the report is stored
	// after it).
	StopToStopped Latency `json:"stop_to_stopped_ms"`
	Hangup        struct {
		// Spread is the time from the first hang-up to the last.
		SpreadMS float64 `json:"first_to_last_stop_ms"`
		// LastStopToLastStopped is the time from the last hang-up to the
		// last report stored.
		LastStopToLastStoppedMS float64 `json:"last_stop_to_last_stopped_ms"`
	} `json:"hangup"`
	// LateFrames counts frames the simulator sent more than 100 ms after
	// they were due (it was starved of CPU).
	LateFrames int64 `json:"late_frames"`
	// Reconnects are the calls resumed after a lost connection (with
	// --reconnect).
	Reconnects struct {
		Count  int     `json:"count"`
		Failed int     `json:"failed"`
		Time   Latency `json:"time_ms"`
		// LostBytes were sent to a gateway that died before they were
		// durable; the stored reports hold what was sent minus these.
		LostBytes uint64      `json:"lost_bytes"`
		Events    []Reconnect `json:"events,omitempty"`
	} `json:"reconnects"`
	Reports *ReportsCheck `json:"reports,omitempty"`
	// ReportsUnverified counts completed calls whose protocol's answer
	// carries no report figures while no report checker was given
	// (--verify-reports): nothing shows their reports hold every byte.
	ReportsUnverified int            `json:"reports_unverified,omitempty"`
	Errors            map[string]int `json:"errors"`
	RampS             float64        `json:"ramp_s"`
	WallS             float64        `json:"wall_s"`
	Client            struct {
		CPUUserS   float64 `json:"cpu_user_s"`
		CPUSystemS float64 `json:"cpu_system_s"`
		// CPUPercent is the simulator's CPU over the run, in percent of
		// one core.
		CPUPercent float64 `json:"cpu_percent"`
		MaxRSSKiB  int64   `json:"max_rss_kib"`
	} `json:"client"`
}

// ok reports whether every requested call completed with its report and
// nothing went wrong.
func (s *Summary) ok() bool {
	return s.Calls.Completed == s.Requested && len(s.Errors) == 0 && (s.Reports == nil || s.Reports.OK == s.Calls.Completed)
}

func (r *run) summarize(begin, rampDone, end time.Time, usage0 usage) *Summary {
	s := &Summary{Protocol: r.o.Protocol, URL: r.o.URL, Requested: r.o.Calls, DurationS: r.o.Duration.Seconds(), Burst: r.o.BurstHangup, Errors: map[string]int{}}
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, v := range r.errs {
		s.Errors[k] = v
	}
	s.Calls.Refused, s.Calls.Failed = r.refused, r.failed
	var lat, stop []float64
	var firstStop, lastStop, lastStopped time.Time
	for _, c := range r.calls {
		c.mu.Lock()
		var ref *RefusedError
		if c.stopAt.IsZero() && errors.As(c.closeErr, &ref) {
			// Refused after the start went out (no answer to wait for).
			s.Calls.Refused++
			s.Errors[ref.Kind()]++
			s.FramesSent += c.frames
			s.AudioBytesSent += c.bytes
			c.mu.Unlock()
			continue
		}
		s.Calls.Started++
		s.FramesSent += c.frames
		s.AudioBytesSent += c.bytes
		s.Reconnects.LostBytes += c.lost
		s.ScoresReceived += c.scores
		s.ScoresUnmatched += c.unmatched
		lat = append(lat, c.latencies...)
		kind := ""
		switch {
		case c.writeErr != nil:
			kind = "write_" + errorKind(c.writeErr)
		case c.stopAt.IsZero() && c.stopped == nil:
			kind = fmt.Sprintf("closed_before_stop_%d", c.closeCode)
			var ended *EndedError
			if errors.As(c.closeErr, &ended) {
				kind = "closed_before_stop_" + ended.Kind
			}
		case c.stopped == nil:
			kind = "no_stopped"
			if c.closedAt.Sub(c.stopAt) >= r.o.StopTimeout {
				kind = "stop_timeout"
			}
		case !c.stopped.ReportStored && !c.stopped.Verify:
			kind = "report_not_stored"
		case c.stopped.Incomplete:
			kind = "report_incomplete"
		case !c.stopped.Verify && c.stopped.AudioBytes != c.bytes-c.lost:
			kind = "report_bytes_mismatch"
		case c.closeCode != 1000:
			kind = fmt.Sprintf("closed_after_stopped_%d", c.closeCode)
		}
		if kind != "" {
			s.Calls.Dropped++
			s.Errors[kind]++
		} else {
			s.Calls.Completed++
			if c.stopped.Verify && r.o.Reports == nil {
				s.ReportsUnverified++
			}
		}
		if !c.stopAt.IsZero() {
			if firstStop.IsZero() || c.stopAt.Before(firstStop) {
				firstStop = c.stopAt
			}
			if c.stopAt.After(lastStop) {
				lastStop = c.stopAt
			}
		}
		if c.stopped != nil {
			stop = append(stop, float64(c.stoppedAt.Sub(c.stopAt))/float64(time.Millisecond))
			if c.stoppedAt.After(lastStopped) {
				lastStopped = c.stoppedAt
			}
		}
		c.mu.Unlock()
	}
	s.Reconnects.Count, s.Reconnects.Failed = len(r.reconnects), r.reconnectFailed
	s.Reconnects.Events = append([]Reconnect(nil), r.reconnects...)
	var rt []float64
	for _, e := range r.reconnects {
		rt = append(rt, e.MS)
	}
	s.Reconnects.Time = latency(rt)
	if r.traits.Scores {
		l := latency(lat)
		s.AudioToScore = &l
	}
	s.StopToStopped = latency(stop)
	if !firstStop.IsZero() {
		s.Hangup.SpreadMS = round(float64(lastStop.Sub(firstStop)) / float64(time.Millisecond))
	}
	if !lastStopped.IsZero() {
		s.Hangup.LastStopToLastStoppedMS = round(float64(lastStopped.Sub(lastStop)) / float64(time.Millisecond))
	}
	s.LateFrames = r.late.Load()
	s.RampS = round3(rampDone.Sub(begin).Seconds())
	s.WallS = round3(end.Sub(begin).Seconds())
	u := rusage()
	s.Client.CPUUserS = round3(u.user - usage0.user)
	s.Client.CPUSystemS = round3(u.system - usage0.system)
	if w := end.Sub(begin).Seconds(); w > 0 {
		s.Client.CPUPercent = round(100 * (s.Client.CPUUserS + s.Client.CPUSystemS) / w)
	}
	s.Client.MaxRSSKiB = u.maxRSSKiB
	return s
}

// ReportsCheck is the result of checking the stored reports.
type ReportsCheck struct {
	Checked int `json:"checked"`
	// OK reports hold every byte the call sent and are complete.
	OK         int `json:"ok"`
	Missing    int `json:"missing"`
	Mismatched int `json:"mismatched"`
	errors     map[string]int
}

// checkReports compares each completed call's stored report with what was
// sent, a few requests at a time.
func (r *run) checkReports(ctx context.Context, calls []*call) *ReportsCheck {
	rc := &ReportsCheck{errors: map[string]int{}}
	var mu sync.Mutex
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, c := range calls {
		c.mu.Lock()
		ok := c.stopped != nil && (c.stopped.ReportStored || c.stopped.Verify) && c.closeCode == 1000
		verify := ok && c.stopped.Verify
		c.mu.Unlock()
		if !ok {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			bytes, chunks, incomplete, err := r.fetchReport(ctx, c.reportID, verify)
			mu.Lock()
			defer mu.Unlock()
			rc.Checked++
			switch {
			case err != nil:
				rc.Missing++
				rc.errors["stored_report_missing"]++
				r.o.Logger.Warn("stored report", "call_id", c.id, "err", err)
			case bytes < c.bytes-c.lost || bytes > c.bytes-c.lost+r.slackBytes() || incomplete || chunks == 0:
				rc.Mismatched++
				rc.errors["stored_report_mismatch"]++
				r.o.Logger.Warn("stored report does not hold what was sent", "call_id", c.id,
					"sent_bytes", c.bytes, "lost_bytes", c.lost, "stored_bytes", bytes, "chunks", chunks, "incomplete", incomplete)
			default:
				rc.OK++
			}
		}()
	}
	wg.Wait()
	return rc
}

// fetchReport reads a call's stored report. Where the protocol's answer to
// the hang-up does not say the report is stored (verify; Asterisk's legs
// close before it is), a missing report is asked for again for a few
// seconds.
func (r *run) fetchReport(ctx context.Context, id string, verify bool) (audioBytes, chunks uint64, incomplete bool, err error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		audioBytes, chunks, incomplete, err = r.o.Reports.Report(ctx, id)
		if err == nil || !verify || time.Now().After(deadline) {
			return
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return
		}
	}
}

// slackBytes is how many bytes more than sent a stored report may hold.
func (r *run) slackBytes() uint64 {
	f := r.o.Audio.Format
	return uint64(r.traits.ReportSlack) * uint64(f.SampleRate) / uint64(time.Second) * uint64(f.FrameBytes())
}

// parseUint reads a JSON number that protojson may render as a string.
func parseUint(v any) uint64 {
	switch x := v.(type) {
	case float64:
		return uint64(x)
	case string:
		n, _ := strconv.ParseUint(x, 10, 64)
		return n
	}
	return 0
}
