// Package gateway is calmline's thin edge: it terminates PBX WebSockets,
// authenticates the tenant, enforces its concurrent-call limit, turns each
// protocol's framing into one internal audio stream per call, and fans the
// audio out over pooled gRPC connections to realtime and fullcall. It keeps
// no analysis state and never decodes audio.
//
// Protocol adapters live in subpackages (native, audiohook, twilio,
// asterisk) on top of the connection core in package edge (one owner of a
// connection's life, for every protocol) and the call core in package
// session.
package gateway

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/calmline/calmline/gateway/admission"
	"github.com/calmline/calmline/gateway/asterisk"
	"github.com/calmline/calmline/gateway/audiohook"
	"github.com/calmline/calmline/gateway/edge"
	"github.com/calmline/calmline/gateway/feed"
	"github.com/calmline/calmline/gateway/native"
	"github.com/calmline/calmline/gateway/session"
	"github.com/calmline/calmline/gateway/twilio"
	"github.com/calmline/calmline/lib/identity"
	"github.com/calmline/calmline/lib/rpc"
	"github.com/calmline/calmline/lib/service"
	"github.com/calmline/calmline/lib/tenant"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// Options configures a gateway Server.
type Options struct {
	Logger         *slog.Logger
	MeterProvider  metric.MeterProvider
	TracerProvider trace.TracerProvider
	Propagator     propagation.TextMapPropagator
	// Metrics serves /metrics; none when nil.
	Metrics http.Handler
	// TLS, when set, makes the listener TLS-only (gRPC and HTTP split by
	// ALPN; see service.Options.TLS).
	TLS *tls.Config
	// BackendTLS, when set, is the TLS (and mTLS) configuration of
	// outgoing gRPC connections to the other services.
	BackendTLS *tls.Config
	// Identity is the deployment secret proving the gateway to realtime
	// and fullcall (lib/identity); without it only an mTLS client
	// certificate naming the gateway does.
	Identity *identity.Keyring
	// Balancing spreads new calls' streams over the healthy backend
	// addresses: rpc.RoundRobin (default) or rpc.LeastLoaded.
	Balancing string
	// Tenants authenticates clients.
	Tenants *tenant.Registry
	// RealtimeAddr and FullcallAddr are the backends' gRPC addresses:
	// host:port, a comma-separated list, or dns:///name:port.
	RealtimeAddr string
	FullcallAddr string
	// PoolSize is the number of HTTP/2 connections to each backend
	// address, whatever the number of calls (default 2).
	PoolSize int
	// Session tunes the call core (chunk size, queues, timeouts).
	Session session.Options
	// Native tunes the native protocol's connections.
	Native native.Options
	// AudioHook, Twilio and Asterisk tune the adapters of Genesys
	// AudioHook (/ws/audiohook), Twilio-style media streams (/ws/twilio)
	// and Asterisk chan_websocket (/ws/asterisk).
	AudioHook audiohook.Options
	Twilio    twilio.Options
	Asterisk  asterisk.Options
	// Feed tunes the live feed (GET /api/v1/live).
	Feed feed.Options
	// Admission bounds, on every WebSocket path, the handshakes per source
	// address, the upgraded connections without a call (per tenant and in
	// total), and the browser origins allowed with Basic authentication.
	Admission admission.Options
	// AdminToken, when set, enables POST /admin/drain and /debug/pprof/*
	// for callers that
	// present it as a bearer token. Read it from a file or the
	// environment; it is never logged.
	AdminToken string
	// DrainTimeout is how long live calls may go on after a drain begins
	// before they are closed with 1001 (default 30 s).
	DrainTimeout time.Duration
	// ShutdownGrace bounds the final stop after the drain (default 10 s).
	ShutdownGrace time.Duration
}

// DefaultOptions returns the defaults.
func DefaultOptions() Options {
	return Options{PoolSize: 2, DrainTimeout: 30 * time.Second, ShutdownGrace: 10 * time.Second, Admission: admission.DefaultOptions()}
}

func (o *Options) validate() error {
	switch {
	case o.Tenants == nil:
		return errors.New("gateway: Tenants is required")
	case o.RealtimeAddr == "" || o.FullcallAddr == "":
		return errors.New("gateway: RealtimeAddr and FullcallAddr are required")
	case o.PoolSize < 1 || o.PoolSize > 64:
		return fmt.Errorf("gateway: PoolSize %d outside [1, 64]", o.PoolSize)
	case o.DrainTimeout < 0 || o.ShutdownGrace <= 0:
		return errors.New("gateway: DrainTimeout must not be negative and ShutdownGrace must be positive")
	}
	return nil
}

// Server is a gateway instance.
type Server struct {
	o        Options
	log      *slog.Logger
	host     *service.Host
	sessions *session.Manager
	realtime *rpc.Pool
	fullcall *rpc.Pool
	feed     *feed.Hub
	// admission guards every WebSocket path before its handler.
	admission *admission.Guard
	// edge owns the WebSocket connections of the protocols on it.
	edge *edge.Edge

	drainOnce sync.Once
	drainWG   sync.WaitGroup

	shutdownOnce sync.Once
	shutdownErr  error
	shutdownDone chan struct{}
}

// New dials the backend pools and returns a Server; Serve starts it.
func New(o Options) (*Server, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	log := o.Logger.With("service", "gateway")
	// The gateway signs with the keyring but verifies nothing: it reports
	// the secret file's failed reloads itself.
	if err := o.Identity.ReportReloadErrors(log, o.MeterProvider); err != nil {
		return nil, err
	}
	ro := rpc.Options{TLS: o.BackendTLS, Identity: identity.Credentials(o.Identity, identity.Gateway), Balancing: o.Balancing, MeterProvider: o.MeterProvider, TracerProvider: o.TracerProvider, Propagator: o.Propagator}
	rt, err := rpc.NewPool(o.RealtimeAddr, o.PoolSize, ro)
	if err != nil {
		return nil, fmt.Errorf("gateway: realtime: %w", err)
	}
	fc, err := rpc.NewPool(o.FullcallAddr, o.PoolSize, ro)
	if err != nil {
		rt.Close()
		return nil, fmt.Errorf("gateway: fullcall: %w", err)
	}
	fo := o.Feed
	fo.Logger, fo.MeterProvider, fo.Tenants = log, o.MeterProvider, o.Tenants
	hub, err := feed.New(fo)
	if err != nil {
		rt.Close()
		fc.Close()
		return nil, err
	}
	so := o.Session
	so.Logger, so.MeterProvider, so.TracerProvider, so.Realtime, so.Fullcall, so.Observer = log, o.MeterProvider, o.TracerProvider, rt, fc, hub
	mgr, err := session.NewManager(so)
	if err != nil {
		rt.Close()
		fc.Close()
		return nil, err
	}
	s := &Server{o: o, log: log, sessions: mgr, realtime: rt, fullcall: fc, feed: hub, shutdownDone: make(chan struct{})}
	// Every tenant's series exist at zero from the start (and after a
	// reload adds tenants): calls_active must not vanish between calls.
	knowTenants := func() {
		var ids []string
		for _, t := range o.Tenants.Tenants() {
			ids = append(ids, t.ID)
		}
		mgr.KnowTenants(ids)
		hub.KnowTenants(ids)
	}
	knowTenants()
	o.Tenants.OnReload(knowTenants)
	s.host = service.NewHost(service.Options{
		Name:           "gateway",
		Logger:         log,
		MeterProvider:  o.MeterProvider,
		TracerProvider: o.TracerProvider,
		Propagator:     o.Propagator,
		Metrics:        o.Metrics,
		AdminToken:     o.AdminToken,
		ShutdownGrace:  o.ShutdownGrace,
		TLS:            o.TLS,
	})
	s.admission = admission.New(o.Admission, mgr, o.Tenants)
	headerKey := func(protocol string) admission.Route {
		return admission.Route{Protocol: protocol, Key: tenant.KeyFromRequest}
	}
	// Twilio-style senders and Asterisk may send the key as the password
	// of Basic authentication, which a browser sends by itself: their
	// paths check the Origin.
	anyKey := func(protocol string) admission.Route {
		return admission.Route{Protocol: protocol, Key: edge.PeekKey, CheckOrigin: true}
	}
	s.edge = edge.New(edge.Options{Sessions: mgr, Tenants: o.Tenants, Logger: log, Admission: s.admission})
	s.host.Mux.Handle("GET /ws/native", s.admission.Wrap(headerKey(native.Protocol), s.edge.Handler(native.NewProtocol(o.Native, s.edge))))
	aho := o.AudioHook
	if aho.MeterProvider == nil {
		aho.MeterProvider = o.MeterProvider
	}
	s.host.Mux.Handle("GET /ws/audiohook", s.admission.Wrap(headerKey(audiohook.Protocol), s.edge.Handler(audiohook.NewProtocol(aho, s.edge))))
	s.host.Mux.Handle("GET /ws/twilio", s.admission.Wrap(anyKey(twilio.Protocol), s.edge.Handler(twilio.NewProtocol(o.Twilio, s.edge))))
	s.host.Mux.Handle("GET /ws/asterisk", s.admission.Wrap(anyKey(asterisk.Protocol), s.edge.Handler(asterisk.NewProtocol(o.Asterisk, s.edge))))
	s.host.Mux.Handle("GET /api/v1/live", hub)
	if o.AdminToken != "" {
		s.host.Mux.HandleFunc("POST /admin/drain", s.serveDrain)
	}
	s.host.AddReadyCheck(func() error {
		select {
		case <-s.edge.Closing():
			return errors.New("draining")
		default:
		}
		if mgr.Draining() {
			return errors.New("draining")
		}
		return nil
	})
	return s, nil
}

// Sessions returns the call core, for protocol adapters.
func (s *Server) Sessions() *session.Manager { return s.sessions }

// Serve serves lis until ctx ends (then drains, as Shutdown does) or
// Shutdown is called.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), s.o.DrainTimeout+s.o.ShutdownGrace)
			defer cancel()
			s.Shutdown(dctx)
		case <-stop:
		}
	}()
	// The host stops only through Shutdown, after the drain.
	err := s.host.Serve(context.WithoutCancel(ctx), lis)
	if err != nil {
		// Serving failed on its own: stop everything else too.
		sctx, cancel := context.WithTimeout(context.Background(), s.o.ShutdownGrace)
		defer cancel()
		s.Shutdown(sctx)
	}
	<-s.shutdownDone
	return err
}

// Shutdown drains the gateway: /readyz fails and new calls are refused at
// once (503 before the upgrade), live calls may finish for DrainTimeout
// (bounded by ctx), then the rest are ended — their reports stored — and
// closed with 1001 "going away" so that PBXs reconnect elsewhere. Then the
// listener closes.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() {
		defer close(s.shutdownDone)
		s.drain(ctx)
		s.drainWG.Wait() // a drain started by POST /admin/drain
		// No call is live: close what is left and wait for it.
		if err := s.edge.Close(ctx); err != nil {
			s.log.Warn("connections still open at shutdown", "err", err)
		}
		s.feed.Close()
		s.shutdownErr = s.host.Shutdown(ctx)
		s.realtime.Close()
		s.fullcall.Close()
	})
	<-s.shutdownDone
	return s.shutdownErr
}

// drain refuses new calls, lets live calls finish for DrainTimeout
// (bounded by ctx), then ends the rest, closing them with 1001.
// Its start, its progress (every drainProgressEvery, while calls remain)
// and its end are logged at INFO: a drain is a normal event.
func (s *Server) drain(ctx context.Context) {
	start := time.Now()
	s.log.Info("drain started; new calls are refused", "live_calls", s.sessions.Live(), "drain_timeout", s.o.DrainTimeout)
	dctx, cancel := context.WithTimeout(ctx, s.o.DrainTimeout)
	// Connections without a call could not start one now: they go away
	// at once, so that their PBXs reconnect elsewhere.
	s.edge.Drain()
	done := make(chan struct{})
	progress := make(chan struct{})
	go func() {
		defer close(progress)
		t := time.NewTicker(drainProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				s.log.Info("draining", "live_calls", s.sessions.Live(), "elapsed", time.Since(start).Round(time.Second))
			case <-done:
				return
			}
		}
	}()
	live := s.sessions.Drain(dctx)
	cancel()
	close(done)
	<-progress
	if live > 0 {
		s.log.Info("drain timeout; closing live calls with 1001", "calls", live)
		s.sessions.EndAll(ctx, fullcallv1.EndReason_END_REASON_DRAIN)
	}
	// Every call has ended: what is left of the connections closes with
	// its protocol's going away, and the drain waits for it.
	if err := s.edge.Close(ctx); err != nil {
		s.log.Info("connections still open after the drain", "err", err)
	}
	s.log.Info("drain finished", "closed_at_timeout", live, "live_calls", s.sessions.Live(), "elapsed", time.Since(start).Round(time.Millisecond))
}

// drainProgressEvery is how often a drain logs the calls still live.
const drainProgressEvery = 5 * time.Second

// StartDrain begins a drain without stopping the server, as
// POST /admin/drain does: /readyz fails and new calls are refused at once,
// live calls may finish for DrainTimeout, then the rest are ended (their
// reports stored) and closed with 1001. The server still answers health
// checks, metrics and the live feed until Shutdown (SIGTERM). Calling it
// again changes nothing.
func (s *Server) StartDrain() {
	s.drainOnce.Do(func() {
		s.log.Info("drain requested", "live_calls", s.sessions.Live(), "drain_timeout", s.o.DrainTimeout)
		// New connections are refused, and readiness fails, before the
		// request is answered (the drain itself runs on).
		s.edge.Drain()
		s.drainWG.Add(1)
		go func() {
			defer s.drainWG.Done()
			ctx, cancel := context.WithTimeout(context.Background(), s.o.DrainTimeout+s.o.ShutdownGrace)
			defer cancel()
			s.drain(ctx)
		}()
	})
}

// serveDrain serves POST /admin/drain.
func (s *Server) serveDrain(w http.ResponseWriter, r *http.Request) {
	tok := tenant.KeyFromRequest(r)
	if subtle.ConstantTimeCompare([]byte(tok), []byte(s.o.AdminToken)) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="calmline-admin"`)
		service.WriteError(w, http.StatusUnauthorized, "unauthenticated", "missing or wrong admin token")
		return
	}
	s.StartDrain()
	service.WriteJSON(w, http.StatusAccepted, map[string]any{
		"draining":        true,
		"live_calls":      s.sessions.Live(),
		"drain_timeout_s": s.o.DrainTimeout.Seconds(),
	})
}

// Addr returns the listening address once Serve runs.
func (s *Server) Addr() net.Addr { return s.host.Addr() }
