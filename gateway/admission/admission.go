// Package admission decides, before a WebSocket upgrade, whether a
// connection may be opened at all, whatever its protocol: the handshake
// rate of each source address (a token bucket per address, in a bounded
// map), the connections that have been upgraded but have not started a
// call (per tenant, against the tenant's call quota plus a margin, and in
// total), and the Origin of browsers on paths that take Basic
// authentication, which a browser sends by itself. Refusals are answered
// before the upgrade with the gateway's JSON error body and, for 429 and
// 503, Retry-After; each is counted by reason.
//
// A Guard wraps a protocol's handler. A connection it admits holds a
// Ticket, found in the request's context, until the connection closes (the
// Guard sees the hijacked net.Conn close) or the adapter calls
// Ticket.Started once the connection's call is live: from then on the call
// counts against the tenant's quota instead.
//
// The Guard also judges the gateway's headroom (Capacity) from the call
// core's load (session.Manager.Load): live calls and the connections about
// to start one against the ceiling, realtime's lag behind the audio, and
// fullcall's unacknowledged audio. Without headroom a new connection is
// refused before the upgrade with 503, Retry-After and the reason
// (capacity_calls, capacity_realtime_lag, capacity_fullcall_backlog), so
// that the PBX or the load balancer tries another gateway; calls already
// admitted are not touched. AdmitCall makes the same judgement for a
// protocol that learns only at its start message that a connection is a
// call (answered with 4429 and the reason).
package admission

import (
	"bufio"
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/calmline/calmline/gateway/session"
	"github.com/calmline/calmline/lib/tenant"
)

// Options configures a Guard.
type Options struct {
	// HandshakeRate is how many WebSocket handshakes one source address
	// may make per second, on average (default 200; negative: no limit).
	// HandshakeBurst is how many it may make at once (default 400).
	HandshakeRate  float64
	HandshakeBurst int
	// MaxAddresses bounds the addresses whose buckets are remembered;
	// past it the least recently seen is forgotten (default 10,000). A
	// forgotten address starts again with a full bucket.
	MaxAddresses int
	// MaxPending bounds the upgraded connections of all tenants that have
	// not started a call (default 1,000); past it new ones get 503.
	MaxPending int
	// TenantMargin is how many connections without a call a tenant may
	// hold beyond its free quota: its live calls plus its waiting
	// connections may reach max_concurrent_calls + TenantMargin (default
	// 10). TenantPending bounds the waiting connections of a tenant with
	// no quota (default 100). Past either, new ones get 429.
	TenantMargin  int
	TenantPending int
	// TrustedProxies are the addresses of proxies in front of the gateway
	// (nginx, a load balancer): for a request from one of them the source
	// address is the last address in X-Forwarded-For that is not a
	// trusted proxy. Without them every client behind a proxy shares the
	// proxy's bucket.
	TrustedProxies []netip.Prefix
	// AllowedOrigins lists the browser origins (scheme://host[:port])
	// allowed on paths that take Basic authentication. A request without
	// an Origin header is not a browser's and is allowed.
	AllowedOrigins []string
	// Capacity is the headroom policy.
	Capacity Capacity
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Capacity is the headroom policy: when the gateway stops admitting new
// calls for want of headroom, and when it starts again. The ceiling of
// live calls is the call core's (session.Options.MaxCalls, --max-calls);
// the other two signals trip above their limit and clear only once they
// have stayed at or under half of it for Hold, so that admission does not
// flap around a limit.
type Capacity struct {
	// MaxRealtimeLag refuses new calls while realtime's scores come, on
	// average over the last seconds, later than this after their audio
	// (0 or negative: not judged).
	MaxRealtimeLag time.Duration
	// MaxFullcallBacklog refuses new calls while the audio fullcall has
	// not acknowledged exceeds this much per live call on average
	// (session.Load.FullcallBacklog; 0 or negative: not judged). It must
	// stay below the replay log (30 s): a call whose log is full holds
	// its client back.
	MaxFullcallBacklog time.Duration
	// Hold is how long a tripped signal must stay at or under half its
	// limit before calls are admitted again (default 2 s).
	Hold time.Duration
	// RetryAfter is what refused clients are told to wait (default 5 s).
	RetryAfter time.Duration
}

// Load is what a Guard's Calls may also provide: the call core's load,
// for the headroom judgement. session.Manager provides it.
type Load interface {
	Load() session.Load
}

// DefaultOptions returns the defaults.
func DefaultOptions() Options {
	return Options{HandshakeRate: 200, HandshakeBurst: 400, MaxAddresses: 10000, MaxPending: 1000, TenantMargin: 10, TenantPending: 100}
}

func (o *Options) defaults() {
	d := DefaultOptions()
	if o.HandshakeRate == 0 {
		o.HandshakeRate = d.HandshakeRate
	}
	if o.HandshakeBurst <= 0 {
		o.HandshakeBurst = d.HandshakeBurst
	}
	if o.MaxAddresses <= 0 {
		o.MaxAddresses = d.MaxAddresses
	}
	if o.MaxPending <= 0 {
		o.MaxPending = d.MaxPending
	}
	if o.TenantMargin < 0 {
		o.TenantMargin = 0
	} else if o.TenantMargin == 0 {
		o.TenantMargin = d.TenantMargin
	}
	if o.TenantPending <= 0 {
		o.TenantPending = d.TenantPending
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Capacity.Hold <= 0 {
		o.Capacity.Hold = 2 * time.Second
	}
	if o.Capacity.RetryAfter <= 0 {
		o.Capacity.RetryAfter = 5 * time.Second
	}
}

// Calls is what a Guard needs from the call core: a tenant's live calls
// and a place to count refusals.
type Calls interface {
	LiveCalls(tenantID string) int
	Refused(ctx context.Context, tenantID, protocol, reason string)
}

// Route describes a protocol's path for the Guard.
type Route struct {
	// Protocol names the path's protocol in the refusals counted.
	Protocol string
	// Key returns the API key the request carries, if any (the Guard
	// counts the connection against that key's tenant; the protocol's
	// handler still authenticates it).
	Key func(*http.Request) string
	// CheckOrigin refuses a browser Origin not in AllowedOrigins when the
	// request carries Basic authentication.
	CheckOrigin bool
}

// Guard admits connections. It is safe for concurrent use.
type Guard struct {
	o       Options
	calls   Calls
	tenants *tenant.Registry
	origins map[string]bool

	mu      sync.Mutex
	buckets map[string]*list.Element // address -> element of lru (*bucket)
	lru     *list.List               // front: most recently seen
	pending map[string]int           // tenant id -> connections without a call
	total   int                      // connections without a call
	// lag and backlog are the tripping signals' states.
	lag, backlog hysteresis
}

type bucket struct {
	addr   string
	tokens float64
	at     time.Time
}

// New returns a Guard.
func New(o Options, calls Calls, tenants *tenant.Registry) *Guard {
	o.defaults()
	g := &Guard{o: o, calls: calls, tenants: tenants, origins: map[string]bool{},
		buckets: map[string]*list.Element{}, lru: list.New(), pending: map[string]int{}}
	for _, s := range o.AllowedOrigins {
		g.origins[strings.ToLower(strings.TrimRight(s, "/"))] = true
	}
	return g
}

// Refusal reasons, as counted.
const (
	ReasonRateLimited = "rate_limited"
	ReasonTenantConns = "too_many_connections"
	ReasonPending     = "too_many_pending"
	ReasonOrigin      = "origin_not_allowed"
	// Capacity refusals: the gateway has no headroom for another call.
	ReasonCapacityCalls   = session.ReasonCapacityCalls
	ReasonCapacityLag     = "capacity_realtime_lag"
	ReasonCapacityBacklog = "capacity_fullcall_backlog"
)

// Error is a refusal: the status, code and message of the answer, and how
// long the client should wait.
type Error struct {
	Status     int
	Code       string
	Reason     string
	Msg        string
	RetryAfter time.Duration
}

func (e *Error) Error() string { return e.Msg }

// allowHandshake takes a token from addr's bucket; it returns how long
// until one is available when there is none.
func (g *Guard) allowHandshake(addr string) (bool, time.Duration) {
	if g.o.HandshakeRate < 0 {
		return true, 0
	}
	now := g.o.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	var b *bucket
	if e, ok := g.buckets[addr]; ok {
		g.lru.MoveToFront(e)
		b = e.Value.(*bucket)
		b.tokens = math.Min(float64(g.o.HandshakeBurst), b.tokens+now.Sub(b.at).Seconds()*g.o.HandshakeRate)
		b.at = now
	} else {
		if g.lru.Len() >= g.o.MaxAddresses {
			old := g.lru.Back()
			g.lru.Remove(old)
			delete(g.buckets, old.Value.(*bucket).addr)
		}
		b = &bucket{addr: addr, tokens: float64(g.o.HandshakeBurst), at: now}
		g.buckets[addr] = g.lru.PushFront(b)
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / g.o.HandshakeRate * float64(time.Second))
}

// Addresses returns how many source addresses the Guard remembers.
func (g *Guard) Addresses() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.lru.Len()
}

// Pending returns the connections without a call: of tenantID, and in
// total.
func (g *Guard) Pending(tenantID string) (int, int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.pending[tenantID], g.total
}

// source returns the address a request's handshake counts against.
func (g *Guard) source(r *http.Request) string {
	host := r.RemoteAddr
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if !g.trusted(host) {
		return host
	}
	// Walk X-Forwarded-For from the right (the hop nearest the gateway),
	// past the trusted proxies: the first other address is the client.
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		h := strings.TrimSpace(hops[i])
		if _, err := netip.ParseAddr(h); err != nil {
			break // a forged or broken entry: stop at what we know
		}
		host = h
		if !g.trusted(h) {
			break
		}
	}
	return host
}

func (g *Guard) trusted(host string) bool {
	a, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range g.o.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// admit checks a request and, when it may go on, returns its Ticket.
func (g *Guard) admit(r *http.Request, rt Route) (*Ticket, *Error) {
	if rt.CheckOrigin {
		if _, _, basic := r.BasicAuth(); basic {
			if o := r.Header.Get("Origin"); o != "" && !g.origins[strings.ToLower(strings.TrimRight(o, "/"))] {
				return nil, &Error{Status: http.StatusForbidden, Code: "forbidden_origin", Reason: ReasonOrigin,
					Msg: fmt.Sprintf("origin %q may not stream with Basic authentication (a browser sends it by itself); allow it with --allowed-origins", o)}
			}
		}
	}
	addr := g.source(r)
	if ok, wait := g.allowHandshake(addr); !ok {
		return nil, &Error{Status: http.StatusTooManyRequests, Code: "rate_limited", Reason: ReasonRateLimited,
			Msg: fmt.Sprintf("too many connection attempts from %s (limit %g a second)", addr, g.o.HandshakeRate), RetryAfter: wait}
	}
	tk := &Ticket{g: g}
	var t *tenant.Tenant
	if rt.Key != nil {
		if key := rt.Key(r); key != "" {
			t, _, _ = g.tenants.AuthenticateKey(key)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if t != nil {
		n := g.pending[t.ID]
		limit := g.o.TenantPending
		if t.MaxConcurrentCalls > 0 {
			n += g.calls.LiveCalls(t.ID)
			limit = t.MaxConcurrentCalls + g.o.TenantMargin
		}
		if n >= limit {
			return nil, &Error{Status: http.StatusTooManyRequests, Code: "too_many_connections", Reason: ReasonTenantConns,
				Msg: fmt.Sprintf("the tenant holds %d connections and calls (limit %d): start calls on the connections you have, or close them", n, limit), RetryAfter: 5 * time.Second}
		}
		tk.tenant = t.ID
	}
	if e := g.headroomLocked(g.total); e != nil {
		return nil, e
	}
	if g.total >= g.o.MaxPending {
		return nil, &Error{Status: http.StatusServiceUnavailable, Code: "busy", Reason: ReasonPending,
			Msg: fmt.Sprintf("too many connections waiting to start a call (%d); retry", g.total), RetryAfter: 5 * time.Second}
	}
	g.total++
	if tk.tenant != "" {
		g.pending[tk.tenant]++
	}
	return tk, nil
}

// Ticket is an admitted connection's place in the counts of connections
// without a call.
type Ticket struct {
	g      *Guard
	tenant string
	done   atomic.Bool
}

// Started takes the connection out of the counts: its call is live (and
// counts against the tenant's quota). It is safe on a nil Ticket and
// idempotent.
func (t *Ticket) Started() { t.release() }

func (t *Ticket) release() {
	if t == nil || !t.done.CompareAndSwap(false, true) {
		return
	}
	g := t.g
	g.mu.Lock()
	defer g.mu.Unlock()
	g.total--
	if t.tenant != "" {
		if g.pending[t.tenant]--; g.pending[t.tenant] <= 0 {
			delete(g.pending, t.tenant)
		}
	}
}

type ticketKey struct{}

// FromContext returns the Ticket of the request whose context ctx is (or
// derives from); nil when the request did not pass a Guard.
func FromContext(ctx context.Context) *Ticket {
	t, _ := ctx.Value(ticketKey{}).(*Ticket)
	return t
}

// Wrap returns h behind the Guard's checks.
func (g *Guard) Wrap(rt Route, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tk, err := g.admit(r, rt)
		if err != nil {
			g.calls.Refused(r.Context(), tenantOf(g, r, rt), rt.Protocol, err.Reason)
			WriteError(w, err)
			return
		}
		hw := &hijackWatcher{ResponseWriter: w, t: tk}
		h.ServeHTTP(hw, r.WithContext(context.WithValue(r.Context(), ticketKey{}, tk)))
		if !hw.hijacked {
			tk.release() // refused by the handler, or not a WebSocket
		}
	})
}

// tenantOf names the tenant of a refused request for the metrics, when
// its key is known.
func tenantOf(g *Guard, r *http.Request, rt Route) string {
	if rt.Key == nil {
		return ""
	}
	if t, _, ok := g.tenants.AuthenticateKey(rt.Key(r)); ok {
		return t.ID
	}
	return ""
}

// WriteError answers a refusal before the upgrade.
func WriteError(w http.ResponseWriter, e *Error) {
	w.Header().Set("Content-Type", "application/json")
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(e.RetryAfter.Seconds()))))
	}
	w.WriteHeader(e.Status)
	b, _ := json.Marshal(map[string]any{"error": map[string]string{"code": e.Code, "message": e.Msg}})
	w.Write(append(b, '\n'))
}

// hijackWatcher sees the upgrade take the connection over, and releases
// the ticket when that connection closes.
type hijackWatcher struct {
	http.ResponseWriter
	t        *Ticket
	hijacked bool
}

func (w *hijackWatcher) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("admission: the response writer cannot be hijacked")
	}
	c, rw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.hijacked = true
	return &closeWatcher{Conn: c, t: w.t}, rw, nil
}

func (w *hijackWatcher) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type closeWatcher struct {
	net.Conn
	t *Ticket
}

func (c *closeWatcher) Close() error {
	c.t.release()
	return c.Conn.Close()
}

// hysteresis is one headroom signal's state: tripped above its limit,
// cleared once at or under half the limit for the policy's Hold.
type hysteresis struct {
	tripped bool
	under   time.Time // since when the value has been at or under the low mark
}

// update moves the state with the value v seen at now and reports whether
// the signal is tripped.
func (h *hysteresis) update(now time.Time, v, limit float64, hold time.Duration) bool {
	if limit <= 0 {
		h.tripped = false
		return false
	}
	switch {
	case v > limit:
		h.tripped, h.under = true, time.Time{}
	case !h.tripped:
	case v > limit/2:
		h.under = time.Time{}
	case h.under.IsZero():
		h.under = now
		h.tripped = hold > 0
	case now.Sub(h.under) >= hold:
		h.tripped = false
	}
	return h.tripped
}

// headroomLocked judges whether the gateway can take another call, with
// starting more connections about to start one (negative: leave the
// ceiling out): nil, or the refusal. The tripping signals move only when
// judged, on each new connection.
func (g *Guard) headroomLocked(starting int) *Error {
	lr, ok := g.calls.(Load)
	if !ok {
		return nil
	}
	l := lr.Load()
	c := g.o.Capacity
	now := g.o.Now()
	lag := g.lag.update(now, l.RealtimeLag.Seconds(), c.MaxRealtimeLag.Seconds(), c.Hold)
	backlog := g.backlog.update(now, l.FullcallBacklog.Seconds(), c.MaxFullcallBacklog.Seconds(), c.Hold)
	refuse := func(reason, msg string) *Error {
		return &Error{Status: http.StatusServiceUnavailable, Code: reason, Reason: reason, Msg: msg, RetryAfter: c.RetryAfter}
	}
	switch {
	case starting >= 0 && l.MaxCalls > 0 && l.Calls+starting >= l.MaxCalls:
		return refuse(ReasonCapacityCalls, fmt.Sprintf("the gateway holds %d calls and %d connections about to start one (ceiling %d); try another gateway or retry", l.Calls, starting, l.MaxCalls))
	case lag:
		return refuse(ReasonCapacityLag, fmt.Sprintf("realtime scores trail the audio by %v (limit %v); try another gateway or retry", l.RealtimeLag.Round(time.Millisecond), c.MaxRealtimeLag))
	case backlog:
		return refuse(ReasonCapacityBacklog, fmt.Sprintf("fullcall has %v of audio per call to acknowledge (limit %v); try another gateway or retry", l.FullcallBacklog.Round(100*time.Millisecond), c.MaxFullcallBacklog))
	}
	return nil
}

// AdmitCall judges the headroom for a call a connection already upgraded
// is about to start, for protocols that learn only then that it is a
// call: nil, or the refusal (counted), which the protocol answers with its
// "over quota" close (4429) and the refusal's Code as the reason. The
// ceiling of live calls is left to the call core's Start, which knows it
// exactly.
func (g *Guard) AdmitCall(ctx context.Context, tenantID, protocol string) *Error {
	g.mu.Lock()
	e := g.headroomLocked(-1)
	g.mu.Unlock()
	if e != nil {
		g.calls.Refused(ctx, tenantID, protocol, e.Reason)
	}
	return e
}
