// Package fullcall is calmline's whole-call service. Gateways stream every
// call's audio to it losslessly while the call runs (IngestService.Record);
// it keeps running aggregates so that hang-up only finalises a report, which
// it stores and serves over gRPC (ReportService) and REST. The same
// analysis serves recordings uploaded through the Web API
// (RecordingService, POST /api/v1/recordings).
package fullcall

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/calmline/calmline/fullcall/store"
	"github.com/calmline/calmline/lib/service"
	"github.com/calmline/calmline/lib/tenant"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// Options configures a fullcall Server.
type Options struct {
	Logger         *slog.Logger
	MeterProvider  metric.MeterProvider
	TracerProvider trace.TracerProvider
	Propagator     propagation.TextMapPropagator
	// Metrics serves /metrics on the service's port; none when nil.
	Metrics http.Handler
	// Tenants authenticates report queries and uploads.
	Tenants *tenant.Registry
	// Database is the report store: "sqlite:PATH" or "postgres://...".
	// Defaults to DataDir/fullcall.db.
	Database string
	// DataDir holds the SQLite file when Database is empty.
	DataDir string
	// MaxUploadBytes bounds a recording analysed synchronously.
	MaxUploadBytes int64
	// AckEvery acknowledges every so many chunks (and always at gaps and
	// at close).
	AckEvery int
	// MaxCalls bounds the live calls of this instance.
	MaxCalls int
	// ShutdownGrace bounds a stop triggered by Serve's context.
	ShutdownGrace time.Duration
}

// DefaultOptions returns the defaults.
func DefaultOptions() Options {
	return Options{
		DataDir:        "data",
		MaxUploadBytes: 32 << 20,
		AckEvery:       5,
		MaxCalls:       5000,
		ShutdownGrace:  10 * time.Second,
	}
}

func (o *Options) validate() error {
	switch {
	case o.Tenants == nil:
		return errors.New("fullcall: Tenants is required")
	case o.Database == "" && o.DataDir == "":
		return errors.New("fullcall: Database or DataDir is required")
	case o.MaxUploadBytes <= 0:
		return fmt.Errorf("fullcall: MaxUploadBytes %d must be positive", o.MaxUploadBytes)
	case o.AckEvery <= 0:
		return fmt.Errorf("fullcall: AckEvery %d must be positive", o.AckEvery)
	case o.MaxCalls <= 0:
		return fmt.Errorf("fullcall: MaxCalls %d must be positive", o.MaxCalls)
	case o.ShutdownGrace <= 0:
		return fmt.Errorf("fullcall: ShutdownGrace %v must be positive", o.ShutdownGrace)
	}
	return nil
}

// Server is a fullcall instance.
type Server struct {
	fullcallv1.UnimplementedIngestServiceServer
	fullcallv1.UnimplementedReportServiceServer
	fullcallv1.UnimplementedRecordingServiceServer

	o     Options
	log   *slog.Logger
	host  *service.Host
	store *store.Store
	m     *metrics
	calls atomic.Int64

	// stored, when set (by tests), receives every report of a live call
	// once it is stored.
	stored chan<- *fullcallv1.Report
}

// New opens the store and returns a Server; Serve starts it.
func New(ctx context.Context, o Options) (*Server, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Database == "" {
		o.Database = "sqlite:" + filepath.Join(o.DataDir, "fullcall.db")
	}
	st, err := store.Open(ctx, o.Database)
	if err != nil {
		return nil, fmt.Errorf("fullcall: %w", err)
	}
	m, err := newMetrics(o.MeterProvider)
	if err != nil {
		st.Close()
		return nil, err
	}
	s := &Server{o: o, log: o.Logger.With("service", "fullcall"), store: st, m: m}
	s.host = service.NewHost(service.Options{
		Name:           "fullcall",
		Logger:         s.log,
		MeterProvider:  o.MeterProvider,
		TracerProvider: o.TracerProvider,
		Propagator:     o.Propagator,
		Metrics:        o.Metrics,
		ShutdownGrace:  o.ShutdownGrace,
		// An upload travels in one message.
		MaxRecvMsgSize: int(o.MaxUploadBytes) + 64<<10,
		UnaryInterceptors: []grpc.UnaryServerInterceptor{o.Tenants.UnaryServerInterceptor(
			fullcallv1.ReportService_ServiceDesc.ServiceName,
			fullcallv1.RecordingService_ServiceDesc.ServiceName,
		)},
	})
	fullcallv1.RegisterIngestServiceServer(s.host.GRPC, s)
	fullcallv1.RegisterReportServiceServer(s.host.GRPC, s)
	fullcallv1.RegisterRecordingServiceServer(s.host.GRPC, s)
	s.routes(s.host.Mux)
	s.host.AddReadyCheck(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := st.Ping(ctx); err != nil {
			return fmt.Errorf("report store: %w", err)
		}
		return nil
	})
	if _, err := m.meter.Int64ObservableGauge("calmline.fullcall.calls.active",
		metric.WithDescription("Live calls being recorded by this instance."),
		metric.WithInt64Callback(func(_ context.Context, ob metric.Int64Observer) error {
			ob.Observe(s.calls.Load())
			return nil
		})); err != nil {
		st.Close()
		return nil, err
	}
	return s, nil
}

// Serve serves lis until ctx ends or Shutdown is called, then closes the
// store.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	err := s.host.Serve(ctx, lis)
	s.store.Close()
	return err
}

// Shutdown stops the server: health turns NOT_SERVING, live streams and
// requests may finish until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.host.Shutdown(ctx)
}

// Addr returns the listening address once Serve runs.
func (s *Server) Addr() net.Addr { return s.host.Addr() }

type metrics struct {
	meter       metric.Meter
	calls       metric.Int64Counter
	chunks      metric.Int64Counter
	duplicates  metric.Int64Counter
	reports     metric.Int64Counter
	finalise    metric.Float64Histogram
	uploads     metric.Int64Counter
	audioBytes  metric.Int64Counter
	storeErrors metric.Int64Counter
}

func newMetrics(mp metric.MeterProvider) (*metrics, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	m := &metrics{meter: mp.Meter("github.com/calmline/calmline/fullcall")}
	var err error
	counter := func(name, desc string) metric.Int64Counter {
		if err != nil {
			return nil
		}
		var c metric.Int64Counter
		c, err = m.meter.Int64Counter(name, metric.WithDescription(desc))
		return c
	}
	m.calls = counter("calmline.fullcall.calls", "Live calls opened (resumes included).")
	m.chunks = counter("calmline.fullcall.chunks", "Audio chunks received.")
	m.duplicates = counter("calmline.fullcall.chunks.duplicate", "Chunks received again (replays) and ignored.")
	m.reports = counter("calmline.fullcall.reports", "Reports stored, by source.")
	m.uploads = counter("calmline.fullcall.uploads", "Recordings uploaded, by outcome.")
	m.audioBytes = counter("calmline.fullcall.audio.bytes", "Bytes of encoded audio received.")
	m.storeErrors = counter("calmline.fullcall.store.errors", "Failed writes to the report store.")
	if err == nil {
		m.finalise, err = m.meter.Float64Histogram("calmline.fullcall.finalise.duration",
			metric.WithDescription("Time from close to stored report."), metric.WithUnit("s"),
			metric.WithExplicitBucketBoundaries(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
	}
	return m, err
}
