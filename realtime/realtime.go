// Package realtime is calmline's live scoring service. The gateway opens one
// bidirectional gRPC stream per call (RealtimeService.Analyze) and sends the
// call's audio in chunks; realtime decodes it, analyses each channel, sends
// a score update for every second of audio, evaluates the tenant's alert
// rule and posts alerts to escalation.
//
// Realtime keeps no state beyond live streams: a call moves to another
// instance by opening a new stream there.
package realtime

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	nooptrace "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"

	"github.com/calmline/calmline/lib/identity"
	"github.com/calmline/calmline/lib/rpc"
	"github.com/calmline/calmline/lib/service"
	escalationv1 "github.com/calmline/calmline/proto/calmline/escalation/v1"
	realtimev1 "github.com/calmline/calmline/proto/calmline/realtime/v1"
)

// Options configures a realtime Server.
type Options struct {
	Logger         *slog.Logger
	MeterProvider  metric.MeterProvider
	TracerProvider trace.TracerProvider
	Propagator     propagation.TextMapPropagator
	// Metrics serves /metrics on the service's port; none when nil.
	Metrics http.Handler
	// AdminToken, when set, serves /debug/pprof/* on the service's port to
	// callers sending it as a bearer token; none when empty.
	AdminToken string
	// TLS, when set, makes the listener TLS-only (gRPC and HTTP split by
	// ALPN; see service.Options.TLS).
	TLS *tls.Config
	// BackendTLS, when set, is the TLS (and mTLS) configuration of
	// outgoing gRPC connections to the other services.
	BackendTLS *tls.Config
	// Identity is the deployment secret proving this service to the
	// others and verifying who calls its internal methods (lib/identity).
	// Without it only mTLS client certificates naming a service prove an
	// identity: internal methods refuse every other caller.
	Identity *identity.Keyring
	// EscalationAddr is escalation's gRPC address (host:port, a list, or a
	// dns:/// target). When empty, alerts reach only the gateway.
	EscalationAddr string
	// MaxCalls bounds the live calls of this instance; past it new streams
	// are refused with RESOURCE_EXHAUSTED so the gateway tries elsewhere.
	MaxCalls int
	// ShutdownGrace bounds a stop triggered by Serve's context.
	ShutdownGrace time.Duration
}

// DefaultOptions returns the defaults.
func DefaultOptions() Options {
	return Options{
		MaxCalls:      5000,
		ShutdownGrace: 10 * time.Second,
	}
}

func (o *Options) validate() error {
	if o.MaxCalls <= 0 {
		return fmt.Errorf("realtime: MaxCalls %d must be positive", o.MaxCalls)
	}
	if o.ShutdownGrace <= 0 {
		return fmt.Errorf("realtime: ShutdownGrace %v must be positive", o.ShutdownGrace)
	}
	return nil
}

// Server is a realtime instance.
type Server struct {
	realtimev1.UnimplementedRealtimeServiceServer

	o      Options
	log    *slog.Logger
	host   *service.Host
	m      *metrics
	esc    *grpc.ClientConn
	poster *poster
	tracer trace.Tracer

	calls    atomic.Int64
	draining chan struct{}
	drainMu  sync.Once

	bg       sync.WaitGroup
	stopBg   context.CancelFunc
	bgCtx    context.Context
	serveMu  sync.Mutex
	started  bool
	shutdown bool
}

// New returns a Server; Serve starts it.
func New(o Options) (*Server, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	log := o.Logger.With("service", "realtime")
	m, err := newMetrics(o.MeterProvider)
	if err != nil {
		return nil, err
	}
	s := &Server{o: o, log: log, m: m, draining: make(chan struct{})}
	tp := o.TracerProvider
	if tp == nil {
		tp = nooptrace.NewTracerProvider()
	}
	s.tracer = tp.Tracer("github.com/calmline/calmline/realtime")
	s.bgCtx, s.stopBg = context.WithCancel(context.Background())
	if o.EscalationAddr != "" {
		cc, err := rpc.Dial(o.EscalationAddr, rpc.Options{TLS: o.BackendTLS, Identity: identity.Credentials(o.Identity, identity.Realtime), MeterProvider: o.MeterProvider, TracerProvider: o.TracerProvider, Propagator: o.Propagator})
		if err != nil {
			return nil, fmt.Errorf("realtime: escalation: %w", err)
		}
		s.esc = cc
		s.poster = &poster{
			tracer:  s.tracer,
			client:  escalationv1.NewAlertServiceClient(cc),
			log:     log,
			queue:   make(chan *escalationv1.Alert, alertQueueSize),
			posted:  m.alertsPosted,
			dropped: m.alertsDropped,
			retries: m.alertRetries,
		}
	}
	verifier, err := identity.NewVerifier(identity.VerifierOptions{Keyring: o.Identity, Logger: log, MeterProvider: o.MeterProvider})
	if err != nil {
		return nil, err
	}
	s.host = service.NewHost(service.Options{
		Name:           "realtime",
		Logger:         log,
		MeterProvider:  o.MeterProvider,
		TracerProvider: o.TracerProvider,
		Propagator:     o.Propagator,
		Metrics:        o.Metrics,
		AdminToken:     o.AdminToken,
		ShutdownGrace:  o.ShutdownGrace,
		TLS:            o.TLS,
		// Analyze is internal: only the gateway may stream calls in.
		UnaryInterceptors:  []grpc.UnaryServerInterceptor{verifier.UnaryServerInterceptor()},
		StreamInterceptors: []grpc.StreamServerInterceptor{verifier.StreamServerInterceptor()},
	})
	realtimev1.RegisterRealtimeServiceServer(s.host.GRPC, s)
	if o.MeterProvider != nil {
		if _, err := m.meter.Int64ObservableGauge("calmline.realtime.calls.active",
			metric.WithDescription("Live calls being scored by this instance."),
			metric.WithInt64Callback(func(_ context.Context, ob metric.Int64Observer) error {
				ob.Observe(s.calls.Load())
				return nil
			})); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Serve serves lis until ctx ends or Shutdown is called.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	s.serveMu.Lock()
	if s.started || s.shutdown {
		s.serveMu.Unlock()
		return errors.New("realtime: Serve called twice or after Shutdown")
	}
	s.started = true
	if s.poster != nil {
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			s.poster.run(s.bgCtx, 5*time.Second)
		}()
	}
	s.serveMu.Unlock()
	err := s.host.Serve(ctx, lis)
	s.drain()
	s.stopBackground()
	return err
}

// Shutdown drains the instance: its health turns NOT_SERVING so gateways
// open no new streams here, live streams end with UNAVAILABLE at their next
// chunk so that gateways move the calls elsewhere, then the server stops.
// Alerts not yet posted get a last try.
func (s *Server) Shutdown(ctx context.Context) error {
	s.serveMu.Lock()
	s.shutdown = true
	s.serveMu.Unlock()
	s.drain()
	err := s.host.Shutdown(ctx)
	s.stopBackground()
	return err
}

func (s *Server) drain() { s.drainMu.Do(func() { close(s.draining) }) }

func (s *Server) stopBackground() {
	s.stopBg()
	s.bg.Wait()
	if s.esc != nil {
		s.esc.Close()
	}
}

// Addr returns the listening address once Serve runs.
func (s *Server) Addr() net.Addr { return s.host.Addr() }

// Ready reports whether the instance takes new calls.
func (s *Server) Ready() error { return s.host.Ready() }
