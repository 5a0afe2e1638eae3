// Package edge owns a gateway WebSocket connection's whole life, whatever
// its protocol: the HTTP handler (accept → admit → refuse before the
// upgrade with one JSON error format and Retry-After → upgrade → register
// → serve on a goroutine of its own, tracked), the reader loop, idle
// timeouts, the call's start and end through package session, the one
// table from errors to close codes, the one place that renders scores and
// alerts under the tenant's privacy mode, and Close, which drains: every
// live call ends with its protocol's "going away" and its report stored,
// every connection without a call is closed the same way, and Close waits
// until no connection is left (net/http does not track upgraded
// connections: their owner must).
//
// A protocol supplies a Protocol (what it needs to accept a request, its
// timeouts) and, per connection, a Codec: it decodes the peer's frames and
// drives the Conn (Start, Audio, Gap, End), closes in its own way (a close
// frame, or AudioHook's disconnect first), and may render scores and
// alerts (Renderer), settle its own end (Finisher) or hand over audio it
// holds before the call ends (Flusher). It keeps only the state that is
// truly its own.
package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/calmline/calmline/gateway/admission"
	"github.com/calmline/calmline/gateway/session"
	"github.com/calmline/calmline/gateway/wsconn"
	"github.com/calmline/calmline/lib/tenant"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// Options configures an Edge.
type Options struct {
	// Sessions is the call core: admission, calls, refusal counts.
	Sessions *session.Manager
	// Tenants authenticates API keys.
	Tenants *tenant.Registry
	Logger  *slog.Logger
	// Admission, when set, judges the gateway's headroom again as a call
	// starts on a connection admitted earlier (gateway/admission's
	// Guard.AdmitCall): without headroom the start is refused with 4429
	// and the refusal's code as the reason.
	Admission interface {
		AdmitCall(ctx context.Context, tenantID, protocol string) *admission.Error
	}
}

// Edge owns the connections of every protocol it serves.
type Edge struct {
	admit   func(ctx context.Context, tenantID, protocol string) *admission.Error
	m       *session.Manager
	tenants *tenant.Registry
	log     *slog.Logger

	mu     sync.Mutex
	conns  map[*Conn]struct{}
	closed bool
	// closing is closed with closed set: see Closing.
	closing chan struct{}
	wg      sync.WaitGroup
}

// New returns an Edge.
func New(o Options) *Edge {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	e := &Edge{m: o.Sessions, tenants: o.Tenants, log: o.Logger, conns: map[*Conn]struct{}{}, closing: make(chan struct{})}
	if o.Admission != nil {
		e.admit = o.Admission.AdmitCall
	}
	return e
}

// Sessions returns the call core.
func (e *Edge) Sessions() *session.Manager { return e.m }

// Log returns the edge's logger.
func (e *Edge) Log() *slog.Logger { return e.log }

// Tenants returns the tenants the edge authenticates.
func (e *Edge) Tenants() *tenant.Registry { return e.tenants }

// Timeout closes a connection that went quiet: no start for the start
// timeout, or nothing after it for the idle timeout.
type Timeout struct {
	// After is how long (default 30 s).
	After time.Duration
	// Missing names what did not come, in the close reason: "no
	// Missing for After".
	Missing string
	// Count, when set, counts the close as a refusal with this reason.
	Count string
}

// Protocol describes a protocol to the edge.
type Protocol struct {
	// Name names the protocol in reports, metrics and logs.
	Name string
	// Accept checks a request before the upgrade and returns what its
	// connection needs. A *Refusal error is answered as it says; any
	// other error as 400 bad_request.
	Accept func(r *http.Request) (*Accepted, error)
	// Subprotocols are selected when the client offers them.
	Subprotocols []string
	// Conn tunes the connections.
	Conn wsconn.Options
	// Start closes a connection whose session has not started (see
	// Conn.SetStarted), Idle one whose started session went quiet (see
	// Conn.Touch).
	Start, Idle Timeout
	// ReadPause lets a call leave the connection unread between its
	// chunks when that delays nothing (session.Call.ReadPause): fewer
	// reads and wake-ups for a protocol whose client sends nothing
	// urgent between audio frames.
	ReadPause bool
	// Counts names the refusal reasons of closes for a message over the
	// read limit (1009) or text that is not UTF-8 (1007); default
	// close_CODE.
	Counts map[int]string
}

// Accepted is what Protocol.Accept returns for a request it accepts.
type Accepted struct {
	// Tenant is the authenticated tenant; nil when the protocol
	// authenticates after the upgrade (Conn.Authenticate).
	Tenant *tenant.Tenant
	// Codec serves the connection.
	Codec Codec
	// NoAdmit skips the tenant's quota check before the upgrade (an
	// Asterisk call's second leg takes no new slot).
	NoAdmit bool
	// Log adds attributes to the connection's log lines.
	Log []any
}

// Codec is a protocol's side of one connection.
type Codec interface {
	// Frame decodes one message from the peer and drives the connection
	// (Conn.Start, Audio, Gap, End). A returned error fails the
	// connection (Conn.Fail). It runs on the connection's reader.
	Frame(c *Conn, typ int, data []byte) error
	// Close closes the connection with a close code and reason the
	// protocol's way: a close frame, or a protocol message first. The
	// edge calls it for failures, idle timeouts, calls the gateway ended
	// (CloseInternal) and the drain (CloseGoingAway, its "going away").
	// It may run on any goroutine, more than once: the first counts.
	Close(c *Conn, code int, reason string)
}

// Renderer is a Codec that sends the call's scores and alerts to its peer.
// The edge hands it what the tenant's privacy mode lets a PBX see. Its
// methods run on the call's backend goroutines and must not block.
type Renderer interface {
	Score(c *Conn, s Score)
	Alert(c *Conn, a *callv1.AlertEvent)
}

// Finisher is a Codec that settles its connection's end itself, once the
// reader has stopped: it must end the call (Conn.End) or hand it on (the
// native protocol parks it for a resume). reason is how the connection
// ended.
type Finisher interface {
	Finish(c *Conn, reason session.EndReason)
}

// Flusher is a Codec that holds audio of the call (a jitter or join
// buffer): Flush hands it to the call just before the call ends.
type Flusher interface {
	Flush(c *Conn, call *session.Call)
}

// Discarder is a Codec that holds something for its connection from Accept
// on (a Twilio-style stream counted as waiting for its start): Discard runs
// when the connection is not served after all (refused after Accept, or
// the upgrade failed). A connection served ends through Finish or End.
type Discarder interface {
	Discard()
}

// Refusal answers a request before the upgrade, in the gateway's one JSON
// error format ({"error":{"code","message"}}), with Retry-After for 429
// and 503.
type Refusal struct {
	Status int
	Code   string
	Msg    string
	// Count is the refusal metric's reason (default Code); Tenant its
	// tenant, when known.
	Count  string
	Tenant string
	// Challenge, for a 401, is the WWW-Authenticate header.
	Challenge string
	// RetryAfter defaults to 5 s for 429 and 503.
	RetryAfter time.Duration
}

func (r *Refusal) Error() string { return fmt.Sprintf("%d %s: %s", r.Status, r.Code, r.Msg) }

// Authenticate checks an API key before the upgrade: its tenant, or a
// Refusal (401 for a missing or unknown key, 403 for a feed-only key)
// that a protocol may reword.
func (e *Edge) Authenticate(key string) (*tenant.Tenant, *tenant.APIKey, *Refusal) {
	t, k, ok := e.tenants.AuthenticateKey(key)
	if !ok {
		return nil, nil, &Refusal{Status: http.StatusUnauthorized, Code: "unauthenticated", Msg: "missing or unknown API key",
			Challenge: `Bearer realm="calmline"`}
	}
	if !tenant.Allows(k.Role, tenant.ActionStreamCalls) {
		// Care-team and agent keys live on less trusted desktops: they
		// read the live feed, they do not stream calls.
		return nil, nil, &Refusal{Status: http.StatusForbidden, Code: "forbidden", Tenant: t.ID, Msg: feedOnly(k.Role)}
	}
	return t, k, nil
}

func feedOnly(role string) string {
	return fmt.Sprintf("a key with role %q reads the live feed only; stream calls with a general key", role)
}

// Handler returns the HTTP handler of a protocol's path.
func (e *Edge) Handler(p *Protocol) http.Handler {
	p.Start.defaults()
	p.Idle.defaults()
	return &handler{e: e, p: p, up: websocket.Upgrader{
		// A paced connection is read a chunk at a time: the frames that
		// arrived meanwhile (200 ms of stereo G.711 ≈ 3.4 kB) come in
		// with one read, not one per kilobyte
		// (TestFramesThatArriveTogetherAreReadTogether).
		ReadBufferSize:  4096,
		WriteBufferSize: 1024,
		WriteBufferPool: &writePool, // idle connections hold no write buffer
		Subprotocols:    p.Subprotocols,
		// Browsers cannot set the headers protocols authenticate with;
		// where Basic authentication (which a browser sends by itself)
		// is taken, gateway/admission checks the Origin first.
		CheckOrigin: func(*http.Request) bool { return true },
	}}
}

func (t *Timeout) defaults() {
	if t.After == 0 {
		t.After = 30 * time.Second
	}
}

var writePool sync.Pool

type handler struct {
	e  *Edge
	p  *Protocol
	up websocket.Upgrader
}

func (h *handler) refuse(w http.ResponseWriter, r *http.Request, ref *Refusal) {
	count := ref.Count
	if count == "" {
		count = ref.Code
	}
	h.e.m.Refused(r.Context(), ref.Tenant, h.p.Name, count)
	if ref.Challenge != "" {
		w.Header().Set("WWW-Authenticate", ref.Challenge)
	}
	if ref.RetryAfter == 0 && (ref.Status == http.StatusTooManyRequests || ref.Status == http.StatusServiceUnavailable) {
		ref.RetryAfter = 5 * time.Second
	}
	admission.WriteError(w, &admission.Error{Status: ref.Status, Code: ref.Code, Msg: ref.Msg, RetryAfter: ref.RetryAfter})
}

func draining(tenantID string) *Refusal {
	return &Refusal{Status: http.StatusServiceUnavailable, Code: "draining", Tenant: tenantID, Msg: "this gateway is draining; reconnect to another"}
}

// ServeHTTP accepts, admits, upgrades and registers a connection, and
// serves it on a goroutine of its own: returning lets the HTTP server drop
// the request, response and buffers (about 10 KiB).
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e := h.e
	acc, err := h.p.Accept(r)
	if err != nil {
		var ref *Refusal
		if !errors.As(err, &ref) {
			ref = &Refusal{Status: http.StatusBadRequest, Code: "bad_request", Count: h.p.Name + "_bad_request", Msg: err.Error()}
		}
		h.refuse(w, r, ref)
		return
	}
	served := false
	defer func() {
		if d, ok := acc.Codec.(Discarder); ok && !served {
			d.Discard()
		}
	}()
	t := acc.Tenant
	tenantID := ""
	if t != nil {
		tenantID = t.ID
	}
	if t != nil && !acc.NoAdmit {
		if err := e.m.Admit(t); err != nil {
			if errors.Is(err, session.ErrDraining) {
				h.refuse(w, r, draining(t.ID))
			} else {
				h.refuse(w, r, &Refusal{Status: http.StatusTooManyRequests, Code: "over_quota", Count: "quota", Tenant: t.ID, Msg: err.Error()})
			}
			return
		}
	}
	// The connection counts from before the upgrade, so that a Close
	// that begins meanwhile waits for it.
	e.mu.Lock()
	if e.closed || t == nil && e.m.Draining() {
		e.mu.Unlock()
		h.refuse(w, r, draining(tenantID))
		return
	}
	e.wg.Add(1)
	e.mu.Unlock()
	ws, err := h.up.Upgrade(w, r, nil)
	if err != nil {
		e.wg.Done()
		return // the upgrader has answered
	}
	c := &Conn{e: e, p: h.p, codec: acc.Codec, ticket: admission.FromContext(r.Context())}
	c.tenant.Store(t)
	if r, ok := acc.Codec.(Renderer); ok {
		c.render = r
	}
	attrs := append([]any{"protocol", h.p.Name, "remote", r.RemoteAddr}, acc.Log...)
	if t != nil {
		attrs = append(attrs, "tenant", t.ID)
	}
	c.log.Store(e.log.With(attrs...))
	c.Touch()
	co := h.p.Conn
	co.OnDrop = func() { e.m.EventDropped(c.tenantID()) }
	co.OnWrite = func(n int) {
		if call := c.live.Load(); call != nil {
			call.Sent(n)
		}
	}
	c.ws = wsconn.New(ws, co)
	e.mu.Lock()
	e.conns[c] = struct{}{}
	missed := e.closed // a drain began during the upgrade and missed it
	e.mu.Unlock()
	served = true
	if missed {
		c.codec.Close(c, CloseGoingAway, "gateway draining; reconnect")
	}
	go func() {
		defer e.wg.Done()
		c.run()
		e.mu.Lock()
		delete(e.conns, c)
		e.mu.Unlock()
	}()
}

func (e *Edge) isClosed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closed
}

func (e *Edge) snapshot() []*Conn {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]*Conn, 0, len(e.conns))
	for c := range e.conns {
		out = append(out, c)
	}
	return out
}

// Drain refuses new connections from now on (503 before the upgrade) and
// closes every connection without a live call with its protocol's "going
// away": it could not start one on a draining gateway, and its PBX should
// reconnect elsewhere now. Live calls go on.
func (e *Edge) Drain() {
	e.mu.Lock()
	if !e.closed {
		e.closed = true
		close(e.closing)
	}
	e.mu.Unlock()
	for _, c := range e.snapshot() {
		if c.live.Load() == nil {
			c.codec.Close(c, CloseGoingAway, "gateway draining; reconnect")
		}
	}
}

// Closing is closed once the edge drains: no connection comes after it,
// so a protocol that waits for one (an Asterisk leg for its call's other
// leg) stops waiting.
func (e *Edge) Closing() <-chan struct{} { return e.closing }

// Close drains: new connections are refused, every live call is ended
// with its protocol's "going away" (its report stored as ended by the
// drain), every connection without one is closed the same way, and Close
// waits until no connection is left or ctx ends.
func (e *Edge) Close(ctx context.Context) error {
	e.Drain()
	for _, c := range e.snapshot() {
		if call := c.live.Load(); call != nil {
			call.Abort(fullcallv1.EndReason_END_REASON_DRAIN, errors.New("gateway shutting down"))
		}
	}
	done := make(chan struct{})
	go func() { e.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("edge: %d connections still open: %w", len(e.snapshot()), ctx.Err())
	}
}

// Single serves one protocol on an edge of its own: a protocol package's
// tests, or a server with one protocol. Close drains it.
type Single struct {
	*Edge
	h http.Handler
}

// NewSingle returns an edge serving the protocol that protocol builds for
// it.
func NewSingle(o Options, protocol func(*Edge) *Protocol) *Single {
	e := New(o)
	return &Single{Edge: e, h: e.Handler(protocol(e))}
}

func (s *Single) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.h.ServeHTTP(w, r) }

// KeyOf returns the API key a request carries before the upgrade: a Bearer
// or X-API-Key header, else the password of Basic authentication, else
// the api_key query parameter, which is taken out of the request's URL
// whatever carried the key, so that nothing after this logs it.
func KeyOf(r *http.Request) string {
	k := PeekKey(r)
	wsconn.TakeQueryKey(r)
	return k
}

// PeekKey returns the key KeyOf returns but leaves the URL as it is: for
// gateway/admission, which reads the key before the protocol's handler
// takes it.
func PeekKey(r *http.Request) string {
	k := tenant.KeyFromRequest(r)
	if k == "" {
		if _, pw, ok := r.BasicAuth(); ok {
			k = pw
		}
	}
	if k == "" {
		k = strings.TrimSpace(r.URL.Query().Get(wsconn.KeyParameter))
	}
	return k
}

// Conns returns the number of open connections.
func (e *Edge) Conns() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.conns)
}
