// Package service is the lifecycle every calmline service shares: one
// listener that carries both gRPC (HTTP/2 with prior knowledge) and plain
// HTTP/1.1 (REST, WebSocket, health and metrics), the standard gRPC health
// service, /healthz and /readyz, and a graceful stop that flips health to
// NOT_SERVING before draining, with a bounded fallback to a hard stop.
package service

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/metric"
	noopmetric "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
)

// Keepalive settings shared by servers and clients: a side that has read
// nothing from its peer for KeepaliveTime pings it, and closes the
// connection when KeepaliveTimeout passes without an answer. A silently
// dead peer (a stopped process, dropped packets: no FIN, no RST) is thus
// noticed at most KeepaliveTime+KeepaliveTimeout = 13 s after it last
// spoke, on either side; the 2 s left of the 15 s goal are margin for a
// loaded machine. Its streams fail with Unavailable (client) or are
// cancelled (server), and the client's balancer moves new streams to the
// other backends. KeepaliveTime is grpc-go's floor for clients (it raises
// anything lower to 10 s), so the timeout is where the margin comes from:
// 3 s is still thousands of times a ping's round trip between two hosts
// of one region.
const (
	KeepaliveTime    = 10 * time.Second
	KeepaliveTimeout = 3 * time.Second
	// KeepaliveMinTime is the most often a client may ping; it must stay
	// below KeepaliveTime or servers close clients for pinging too often.
	KeepaliveMinTime = 5 * time.Second
)

// Options configures a Host.
type Options struct {
	// Name identifies the service in logs and health ("realtime", ...).
	Name           string
	Logger         *slog.Logger
	MeterProvider  metric.MeterProvider
	TracerProvider trace.TracerProvider
	Propagator     propagation.TextMapPropagator
	// Metrics serves /metrics; none when nil.
	Metrics http.Handler
	// AdminToken, when set, serves the Go profiler's /debug/pprof/* to
	// callers that send it as a bearer token (401 otherwise). Without it
	// there is no /debug/pprof at all.
	AdminToken string
	// MaxRecvMsgSize bounds one gRPC message (default 4 MiB).
	MaxRecvMsgSize int
	// UnaryInterceptors run, in order, around every unary gRPC call.
	UnaryInterceptors []grpc.UnaryServerInterceptor
	// StreamInterceptors run, in order, around every streaming gRPC call.
	StreamInterceptors []grpc.StreamServerInterceptor
	// TLS, when set, makes the listener speak TLS only. gRPC and HTTP
	// still share it: ALPN decides (h2: gRPC; http/1.1 or none: REST,
	// WebSocket, health, metrics). With ClientCAs set, gRPC connections
	// must present a certificate the CAs signed (mTLS between services);
	// HTTP clients need one only when ClientAuth says
	// RequireAndVerifyClientCert. Use GetCertificate to rotate
	// certificates without a restart.
	TLS *tls.Config
	// ShutdownGrace bounds the graceful part of a stop triggered by the
	// context given to Serve (default 10 s).
	ShutdownGrace time.Duration
	// MaxConnectionAge is how long a client's gRPC connection lives before
	// the server asks it, with a GOAWAY, to open a new one for its next
	// streams (default 10 min; negative: forever). Clients that reach a
	// pool through DNS (a headless Service) re-resolve then, so instances
	// added by an autoscaler receive new calls within that time. Streams
	// under way go on, up to MaxConnectionAgeGrace (default 4 h, longer
	// than calls last), on the old connection.
	MaxConnectionAge      time.Duration
	MaxConnectionAgeGrace time.Duration
}

// serverParams are the server's keepalive settings: pings that find a
// silently dead client, and the connection age that makes clients
// re-resolve their pools.
func serverParams(o Options) keepalive.ServerParameters {
	p := keepalive.ServerParameters{Time: KeepaliveTime, Timeout: KeepaliveTimeout}
	if o.MaxConnectionAge > 0 {
		p.MaxConnectionAge = o.MaxConnectionAge
		p.MaxConnectionAgeGrace = max(o.MaxConnectionAgeGrace, 0)
	}
	return p
}

// Host serves one service's gRPC and HTTP on one listener.
type Host struct {
	// GRPC is the gRPC server; register services before Serve.
	GRPC *grpc.Server
	// Mux is the HTTP handler; register routes before Serve. /healthz,
	// /readyz and /metrics are taken.
	Mux *http.ServeMux

	o      Options
	log    *slog.Logger
	health *health.Server
	http   *http.Server

	ready    atomic.Bool
	checksMu sync.Mutex
	checks   []func() error

	mu       sync.Mutex
	addr     net.Addr
	serving  bool
	pm       *portMux
	stopOnce sync.Once
	forced   bool          // the graceful part of the stop ran out of time
	stopping chan struct{} // closed when a stop begins
	done     chan struct{} // closed when Serve has returned
}

// NewHost returns a Host with the shared gRPC defaults: keepalive
// enforcement and parameters, OpenTelemetry instrumentation, the health
// service and reflection.
func NewHost(o Options) *Host {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.ShutdownGrace == 0 {
		o.ShutdownGrace = 10 * time.Second
	}
	if o.MaxConnectionAge == 0 {
		o.MaxConnectionAge = 10 * time.Minute
	}
	if o.MaxConnectionAgeGrace == 0 {
		o.MaxConnectionAgeGrace = 4 * time.Hour
	}
	if o.MaxRecvMsgSize == 0 {
		o.MaxRecvMsgSize = 4 << 20
	}
	var statsOpts []otelgrpc.Option
	if o.MeterProvider != nil {
		statsOpts = append(statsOpts, otelgrpc.WithMeterProvider(o.MeterProvider))
	}
	if o.TracerProvider != nil {
		statsOpts = append(statsOpts, otelgrpc.WithTracerProvider(o.TracerProvider))
	}
	if o.Propagator != nil {
		statsOpts = append(statsOpts, otelgrpc.WithPropagators(o.Propagator))
	}
	// otelgrpc records no per-message span events by default; keep it so,
	// since they would cost on every audio chunk.
	var grpcOpts []grpc.ServerOption
	if o.TLS != nil {
		o.TLS = serverTLS(o.TLS)
		grpcOpts = append(grpcOpts, grpc.Creds(handshakenTLS{}))
	}
	h := &Host{
		GRPC: grpc.NewServer(append(grpcOpts,
			grpc.StatsHandler(otelgrpc.NewServerHandler(statsOpts...)),
			grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
				MinTime:             KeepaliveMinTime,
				PermitWithoutStream: true,
			}),
			grpc.KeepaliveParams(serverParams(o)),
			grpc.MaxRecvMsgSize(o.MaxRecvMsgSize),
			grpc.StaticStreamWindowSize(StreamWindow),
			grpc.StaticConnWindowSize(ConnWindow),
			grpc.ChainUnaryInterceptor(o.UnaryInterceptors...),
			grpc.ChainStreamInterceptor(o.StreamInterceptors...),
		)...),
		Mux:      http.NewServeMux(),
		o:        o,
		log:      o.Logger,
		health:   health.NewServer(),
		stopping: make(chan struct{}),
		done:     make(chan struct{}),
	}
	healthpb.RegisterHealthServer(h.GRPC, h.health)
	reflection.Register(h.GRPC)
	h.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	h.Mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	h.Mux.HandleFunc("GET /readyz", h.serveReadyz)
	if o.Metrics != nil {
		h.Mux.Handle("GET /metrics", o.Metrics)
	}
	if o.AdminToken != "" {
		admin := func(f http.HandlerFunc) http.Handler { return RequireBearer(o.AdminToken, "calmline-admin", f) }
		h.Mux.Handle("/debug/pprof/", admin(pprof.Index)) // the named profiles: heap, goroutine, allocs, block, mutex…
		h.Mux.Handle("/debug/pprof/cmdline", admin(pprof.Cmdline))
		h.Mux.Handle("/debug/pprof/profile", admin(pprof.Profile))
		h.Mux.Handle("/debug/pprof/symbol", admin(pprof.Symbol))
		h.Mux.Handle("/debug/pprof/trace", admin(pprof.Trace))
	}
	var handler http.Handler = h.Mux
	if o.TracerProvider != nil {
		// Every REST and SSE request is a span; the scrapes, probes and
		// profiles are not, nor WebSocket upgrades (/ws/…): the call
		// core starts each call's trace with its own root span, whatever
		// the protocol, so that a call is one trace. The HTTP metrics
		// are left out: docs/metrics.md lists what each port exposes.
		handler = otelhttp.NewHandler(h.Mux, o.Name,
			otelhttp.WithTracerProvider(o.TracerProvider),
			otelhttp.WithPropagators(propagatorOrDefault(o.Propagator)),
			otelhttp.WithMeterProvider(noopmetric.NewMeterProvider()),
			otelhttp.WithFilter(func(r *http.Request) bool {
				switch p := r.URL.Path; {
				case p == "/metrics", p == "/healthz", p == "/readyz", strings.HasPrefix(p, "/debug/pprof"), strings.HasPrefix(p, "/ws/"):
					return false
				}
				return true
			}),
			otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
				return r.Method + " " + r.URL.Path
			}))
	}
	h.http = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(o.Logger.Handler(), slog.LevelWarn),
	}
	return h
}

// AddReadyCheck adds a condition /readyz and the gRPC health status depend
// on; f returns why the service is not ready, or nil.
func (h *Host) AddReadyCheck(f func() error) {
	h.checksMu.Lock()
	defer h.checksMu.Unlock()
	h.checks = append(h.checks, f)
}

// SetReady flips readiness: /readyz and the gRPC health status. Serve makes
// the host ready; a stop makes it unready first.
func (h *Host) SetReady(ready bool) {
	h.ready.Store(ready)
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ready {
		st = healthpb.HealthCheckResponse_SERVING
	}
	h.health.SetServingStatus("", st)
	if h.o.Name != "" {
		h.health.SetServingStatus(h.o.Name, st)
	}
}

// Ready reports whether the host is ready and its checks pass, and if not,
// why.
func (h *Host) Ready() error {
	if !h.ready.Load() {
		select {
		case <-h.stopping:
			return errors.New("shutting down")
		default:
			return errors.New("not serving")
		}
	}
	h.checksMu.Lock()
	defer h.checksMu.Unlock()
	for _, f := range h.checks {
		if err := f(); err != nil {
			return err
		}
	}
	return nil
}

func (h *Host) serveReadyz(w http.ResponseWriter, r *http.Request) {
	if err := h.Ready(); err != nil {
		http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}

// Serve serves lis until ctx is done or Shutdown is called, then stops
// gracefully. It returns nil after a requested stop, or the error that made
// serving impossible.
func (h *Host) Serve(ctx context.Context, lis net.Listener) error {
	h.mu.Lock()
	if h.serving {
		h.mu.Unlock()
		return errors.New("service: Serve called twice")
	}
	select {
	case <-h.stopping:
		h.mu.Unlock()
		return errors.New("service: Serve after Shutdown")
	default:
	}
	h.serving = true
	h.addr = lis.Addr()
	h.pm = newPortMux(lis, h.o.TLS, h.log)
	h.mu.Unlock()
	defer close(h.done)

	var wg sync.WaitGroup
	errc := make(chan error, 3)
	run := func(f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				errc <- err
			}
		}()
	}
	run(h.pm.serve)
	run(func() error { return h.GRPC.Serve(h.pm.grpc) })
	run(func() error {
		if err := h.http.Serve(h.pm.http); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	h.SetReady(true)

	var err error
	select {
	case <-ctx.Done():
	case <-h.stopping:
	case err = <-errc:
		err = fmt.Errorf("%s: %w", h.o.Name, err)
	}
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.o.ShutdownGrace)
	defer cancel()
	h.stop(stopCtx)
	wg.Wait()
	return err
}

// Shutdown stops serving: health turns NOT_SERVING, the listener closes,
// in-flight gRPC streams and HTTP requests may finish until ctx is done,
// then the rest are cut. It waits for Serve to return, and like
// http.Server.Shutdown returns ctx's error when it had to cut.
func (h *Host) Shutdown(ctx context.Context) error {
	h.mu.Lock()
	serving := h.serving
	h.mu.Unlock()
	h.stop(ctx)
	if serving {
		<-h.done // prompt: every server was stopped, by force if need be
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.forced {
		return ctx.Err()
	}
	return nil
}

// stop runs the stop sequence once; later calls wait for nothing.
func (h *Host) stop(ctx context.Context) {
	h.stopOnce.Do(func() {
		close(h.stopping)
		h.ready.Store(false)
		h.health.Shutdown() // every service NOT_SERVING, watchers told
		h.mu.Lock()
		pm := h.pm
		h.mu.Unlock()
		if pm == nil {
			h.GRPC.Stop()
			return
		}
		pm.close()

		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			stopped := make(chan struct{})
			go func() {
				h.GRPC.GracefulStop()
				close(stopped)
			}()
			select {
			case <-stopped:
			case <-ctx.Done():
				h.log.Warn("graceful stop timed out; cutting remaining gRPC streams", "service", h.o.Name)
				h.mu.Lock()
				h.forced = true
				h.mu.Unlock()
				h.GRPC.Stop()
				<-stopped
			}
		}()
		go func() {
			defer wg.Done()
			if err := h.http.Shutdown(ctx); err != nil {
				h.mu.Lock()
				h.forced = true
				h.mu.Unlock()
				h.http.Close()
			}
		}()
		wg.Wait()
	})
}

// Addr returns the address Serve listens on, or nil before Serve.
func (h *Host) Addr() net.Addr {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.addr
}

// Stopping is closed when a stop begins.
func (h *Host) Stopping() <-chan struct{} { return h.stopping }

// RequireBearer serves next only to requests carrying token as
// "Authorization: Bearer TOKEN" (compared in constant time); others get
// 401 with a WWW-Authenticate challenge for realm.
func RequireBearer(token, realm string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+realm+`"`)
			WriteError(w, http.StatusUnauthorized, "unauthenticated", "missing or wrong admin token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func propagatorOrDefault(p propagation.TextMapPropagator) propagation.TextMapPropagator {
	if p == nil {
		return propagation.TraceContext{}
	}
	return p
}

// StreamWindow and ConnWindow are the HTTP/2 flow-control windows of every
// gRPC connection between the services, client and server side: fixed,
// which turns off gRPC's bandwidth-delay estimation. That estimation sends
// a PING (and a WINDOW_UPDATE) whenever data arrives with no PING
// outstanding, and is answered by another: with audio chunks spaced wider
// than the loopback or LAN round trip, that is two more frames, each a
// write and a read, for every chunk. A stream's window is gRPC's initial
// 64 KiB (4 s of a stereo G.711 call): a realtime that stops reading still
// blocks the gateway's sends after that much, so its queue drops what it
// cannot score. The connection's, 4 MiB, is shared by the calls on it.
const (
	StreamWindow = 64 << 10
	ConnWindow   = 4 << 20
)
