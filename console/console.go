// Package console is calmline's supervisor console: a web application
// embedded in the binary (no CDN, no build step) and the thin
// backend-for-frontend that serves it. Supervisors sign in with an API key,
// which is exchanged for a session cookie and kept on the server; the
// console then reads the services' own APIs with that key — every
// gateway's live feed for the wall, fullcall's reports and agent summaries
// for call timelines and care, escalation's queue, deliveries and audit
// trail — and applies the key's role (AccessFor) to everything it sends to
// the browser. It owns no data of its own beyond sessions and a few
// minutes of live history per signed-in key.
package console

import (
	"context"
	"crypto/tls"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/calmline/calmline/lib/service"
	"github.com/calmline/calmline/lib/tenant"
)

//go:embed assets
var assets embed.FS

// Options configures a Server.
type Options struct {
	Logger        *slog.Logger
	MeterProvider metric.MeterProvider
	// Metrics serves /metrics; none when nil.
	Metrics http.Handler
	// Tenants authenticates the keys people sign in with.
	Tenants *tenant.Registry
	// Gateways lists the gateways whose live feeds make the wall:
	// HOST:PORT or http(s)://HOST:PORT addresses, or one dns:///NAME:PORT
	// re-resolved every ResolveEvery (as the gRPC pools find backends).
	Gateways []string
	// Fullcall and Escalation are the REST addresses of those services
	// (HOST:PORT or http(s)://HOST:PORT; behind a load balancer, its
	// address).
	Fullcall   string
	Escalation string
	// TLS, when set, serves the console over TLS only; session cookies
	// are then Secure.
	TLS *tls.Config
	// BackendTLS, when set, is the client configuration for the
	// services' HTTPS ports (their CA, and a certificate under mTLS).
	BackendTLS *tls.Config
	// SessionTTL is how long a sign-in lasts (default 8 h, a shift).
	SessionTTL time.Duration
	// MaxSessions bounds the signed-in browsers (default 10000); past it
	// sign-ins are refused with 503.
	MaxSessions int
	// History is how much of each live call's scores the wall keeps for
	// its sparkline and the live call view (default 5 min).
	History time.Duration
	// FlushEvery is how often changes go to the browsers (default 250 ms).
	FlushEvery time.Duration
	// ResolveEvery is how often a dns:/// gateway name is resolved again
	// (default 15 s).
	ResolveEvery time.Duration
	// Linger keeps a key's wall (its upstreams and history) after its last
	// browser left, so that a reload keeps the sparklines (default 2 min).
	Linger time.Duration
	// ReconnectMin and ReconnectMax bound the backoff of a lost gateway
	// feed (defaults 500 ms, 5 s).
	ReconnectMin, ReconnectMax time.Duration
	// MaxCalls bounds the live calls one wall holds (default 20000);
	// more are counted and left out.
	MaxCalls int
	// BrowserQueue bounds the batches queued for one browser (default
	// 64, 16 s of changes); a browser that falls further behind is
	// disconnected (counted) and reconnects to a snapshot.
	BrowserQueue int
	// RecheckEvery is how often a browser's live stream checks that its
	// session and key are still valid, and ends if not (default 5 s).
	RecheckEvery time.Duration
	// Shift is the period of "this shift" in agent care (default 8 h).
	Shift time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// DefaultOptions returns the defaults.
func DefaultOptions() Options {
	return Options{SessionTTL: 8 * time.Hour, MaxSessions: 10000, History: 5 * time.Minute, FlushEvery: 250 * time.Millisecond,
		ResolveEvery: 15 * time.Second, Linger: 2 * time.Minute, ReconnectMin: 500 * time.Millisecond, ReconnectMax: 5 * time.Second,
		MaxCalls: 20000, BrowserQueue: 64, Shift: 8 * time.Hour, RecheckEvery: 5 * time.Second}
}

func (o *Options) validate() error {
	d := DefaultOptions()
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MeterProvider == nil {
		o.MeterProvider = noop.NewMeterProvider()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	for _, p := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&o.SessionTTL, d.SessionTTL}, {&o.History, d.History}, {&o.FlushEvery, d.FlushEvery}, {&o.ResolveEvery, d.ResolveEvery},
		{&o.Linger, d.Linger}, {&o.ReconnectMin, d.ReconnectMin}, {&o.ReconnectMax, d.ReconnectMax}, {&o.Shift, d.Shift},
		{&o.RecheckEvery, d.RecheckEvery}} {
		if *p.v <= 0 {
			*p.v = p.def
		}
	}
	for _, p := range []struct {
		v   *int
		def int
	}{{&o.MaxSessions, d.MaxSessions}, {&o.MaxCalls, d.MaxCalls}, {&o.BrowserQueue, d.BrowserQueue}} {
		if *p.v <= 0 {
			*p.v = p.def
		}
	}
	switch {
	case o.Tenants == nil:
		return errors.New("console: Tenants is required")
	case o.Fullcall == "":
		return errors.New("console: Fullcall (the address of fullcall's REST API) is required")
	case o.Escalation == "":
		return errors.New("console: Escalation (the address of escalation's REST API) is required")
	}
	return nil
}

// Server is the console.
type Server struct {
	o        Options
	log      *slog.Logger
	host     *service.Host
	sessions *sessions
	hub      *liveHub
	targets  *targets
	fullcall string
	esc      string
	api      *http.Client
	metrics  struct {
		signIns, refusedSignIns, slowBrowsers, upstreamErrors, badEvents, callsDropped atomic.Int64
	}
}

// New returns a console.
func New(o Options) (*Server, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	tg, err := parseGateways(o.Gateways, o.BackendTLS)
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	s := &Server{o: o, log: o.Logger.With("service", "console"), targets: tg,
		sessions: newSessions(o.SessionTTL, o.MaxSessions, o.Now)}
	if s.fullcall, err = baseURL("fullcall", o.Fullcall, o.BackendTLS != nil); err != nil {
		return nil, err
	}
	if s.esc, err = baseURL("escalation", o.Escalation, o.BackendTLS != nil); err != nil {
		return nil, err
	}
	// The REST calls get an overall timeout; the live feeds (same
	// transport, their own client value) must not.
	api := *tg.client("")
	api.Timeout = 15 * time.Second
	s.api = &api
	s.hub = newLiveHub(s)
	s.host = service.NewHost(service.Options{Name: "console", Logger: o.Logger, MeterProvider: o.MeterProvider, Metrics: o.Metrics, TLS: o.TLS})
	if err := s.registerMetrics(); err != nil {
		return nil, err
	}
	s.routes(s.host.Mux)
	return s, nil
}

func baseURL(name, s string, tlsOn bool) (string, error) {
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			return "", fmt.Errorf("console: %s: %q: want http(s)://HOST:PORT without credentials", name, redactURL(s))
		}
		return strings.TrimSuffix(u.Scheme+"://"+u.Host+u.Path, "/"), nil
	}
	if _, _, err := net.SplitHostPort(s); err != nil {
		return "", fmt.Errorf("console: %s: %q: want HOST:PORT", name, s)
	}
	if tlsOn {
		return "https://" + s, nil
	}
	return "http://" + s, nil
}

func (s *Server) registerMetrics() error {
	meter := s.o.MeterProvider.Meter("github.com/calmline/calmline/console")
	for _, c := range []struct {
		name, desc string
		v          *atomic.Int64
	}{
		{"calmline.console.sign_ins", "Console sign-ins.", &s.metrics.signIns},
		{"calmline.console.sign_ins.refused", "Console sign-ins refused (unknown key, role, or too many sessions).", &s.metrics.refusedSignIns},
		{"calmline.console.browsers.slow", "Browsers disconnected from the wall for reading too slowly.", &s.metrics.slowBrowsers},
		{"calmline.console.upstream.errors", "Gateway live-feed connections of the console that ended or failed.", &s.metrics.upstreamErrors},
		{"calmline.console.upstream.bad_events", "Unreadable live-feed events.", &s.metrics.badEvents},
		{"calmline.console.calls.dropped", "Live calls left off a wall over its MaxCalls bound.", &s.metrics.callsDropped},
	} {
		v := c.v
		if _, err := meter.Int64ObservableCounter(c.name, metric.WithDescription(c.desc),
			metric.WithInt64Callback(func(_ context.Context, ob metric.Int64Observer) error { ob.Observe(v.Load()); return nil })); err != nil {
			return err
		}
	}
	_, err := meter.Int64ObservableGauge("calmline.console.sessions", metric.WithDescription("Signed-in console sessions."),
		metric.WithInt64Callback(func(_ context.Context, ob metric.Int64Observer) error {
			ob.Observe(int64(s.sessions.len()))
			return nil
		}))
	return err
}

// Serve serves the console on lis until ctx ends or Shutdown is called.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	return s.host.Serve(ctx, lis)
}

// Shutdown ends the browsers' streams and the upstream feeds, then stops
// the listener.
func (s *Server) Shutdown(ctx context.Context) error {
	s.hub.close()
	return s.host.Shutdown(ctx)
}

// Addr returns the listener's address once serving.
func (s *Server) Addr() net.Addr { return s.host.Addr() }

func (s *Server) routes(mux *http.ServeMux) {
	static, _ := fs.Sub(assets, "assets")
	files := http.FileServerFS(static)
	mux.Handle("GET /", secured(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" && !strings.HasPrefix(r.URL.Path, "/assets/") {
			service.WriteError(w, http.StatusNotFound, "not_found", "no such page")
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		if r.URL.Path == "/" {
			http.ServeFileFS(w, r, static, "index.html")
			return
		}
		http.StripPrefix("/assets", files).ServeHTTP(w, r)
	})))
	mux.Handle("POST /api/login", secured(http.HandlerFunc(s.login)))
	mux.Handle("POST /api/logout", secured(s.withSession(true, s.logout)))
	mux.Handle("GET /api/session", secured(s.withSession(false, s.sessionInfo)))
	mux.Handle("GET /api/live", secured(s.withSession(false, s.live)))
	mux.Handle("GET /api/escalations", secured(s.withSession(false, s.escalations)))
	mux.Handle("GET /api/escalations/{id}", secured(s.withSession(false, s.escalation)))
	mux.Handle("POST /api/escalations/{id}/{action}", secured(s.withSession(true, s.escalationAction)))
	mux.Handle("GET /api/calls/{id}", secured(s.withSession(false, s.call)))
	mux.Handle("GET /api/care", secured(s.withSession(false, s.care)))
}

// secured sets the headers every console response carries: a content
// security policy that allows only the console's own files (no inline
// script, no other origin), no framing, no sniffing, no referrer.
func secured(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		if strings.HasPrefix(r.URL.Path, "/api/") {
			hd.Set("Cache-Control", "no-store")
		}
		h.ServeHTTP(w, r)
	})
}
