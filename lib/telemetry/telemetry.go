// Package telemetry sets up what every calmline process reports about
// itself: structured logs (log/slog), OpenTelemetry metrics served on a
// Prometheus scrape endpoint, and OpenTelemetry traces exported over OTLP
// when an endpoint is configured.
//
// Services never reach for globals: they receive a Logger, MeterProvider
// and TracerProvider in their Options, which a Telemetry value provides.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Options configures telemetry.
type Options struct {
	// ServiceName is reported as service.name ("calmline", or one service).
	ServiceName string
	// LogLevel is debug, info, warn or error.
	LogLevel string
	// LogFormat is "text" or "json".
	LogFormat string
	// LogOutput receives the logs (os.Stderr when nil).
	LogOutput io.Writer
	// OTLPEndpoint, when set (host:port), exports traces over OTLP/gRPC.
	// The standard OTEL_EXPORTER_OTLP_* variables also apply.
	OTLPEndpoint string
	// OTLPInsecure disables TLS to the OTLP endpoint.
	OTLPInsecure bool
}

// Telemetry holds a process's logger and OpenTelemetry providers.
type Telemetry struct {
	Logger         *slog.Logger
	MeterProvider  metric.MeterProvider
	TracerProvider trace.TracerProvider
	// Propagator carries trace context across gRPC and HTTP.
	Propagator propagation.TextMapPropagator

	registry *prometheus.Registry
	shutdown []func(context.Context) error
	// spans is the OTLP exporter, shared by the services' tracer
	// providers; nil when traces are off.
	spans sdktrace.SpanExporter
	// discard marks telemetry that exports nothing (Discard).
	discard bool
	// decl holds the histogram series declared through MeterProvider.
	decl *declarations
}

// New sets up telemetry. Call Shutdown when the process ends to flush
// exporters.
func New(ctx context.Context, o Options) (*Telemetry, error) {
	logger, err := NewLogger(o.LogOutput, o.LogLevel, o.LogFormat)
	if err != nil {
		return nil, err
	}
	if o.ServiceName == "" {
		o.ServiceName = "calmline"
	}
	res := resource.NewSchemaless(semconv.ServiceName(o.ServiceName))

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter), sdkmetric.WithResource(res))
	decl := &declarations{}
	t := &Telemetry{
		Logger:        logger,
		MeterProvider: declaringProvider{mp, decl},
		decl:          decl,
		Propagator:    propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		registry:      reg,
		shutdown:      []func(context.Context) error{mp.Shutdown},
	}
	if o.OTLPEndpoint == "" {
		// No exporter: spans are not recorded, but incoming trace context
		// still flows through to outgoing calls.
		t.TracerProvider = noop.NewTracerProvider()
	} else {
		opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(o.OTLPEndpoint)}
		if o.OTLPInsecure {
			opts = append(opts, otlptracegrpc.WithInsecure())
		}
		exp, err := otlptracegrpc.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("otlp trace exporter: %w", err)
		}
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(callIDs{}), sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
		t.TracerProvider = tp
		t.spans = exp
		t.shutdown = append(t.shutdown, tp.Shutdown)
	}
	return t, nil
}

// Service returns the telemetry of one service in a process that runs
// several: the same logger, but its own Prometheus registry (so that the
// service's port exposes its own series and nothing else — a Prometheus
// scraping every port counts each series once) and meter and tracer
// providers whose resource says service.name=name. Spans go to the same
// OTLP exporter. With process set, the registry also carries the process's
// own series (go_*, process_*); give it to exactly one service of the
// process. The parent's Shutdown also stops what Service made.
func (t *Telemetry) Service(name string, process bool) (*Telemetry, error) {
	c := &Telemetry{
		Logger:     t.Logger,
		Propagator: t.Propagator,
		registry:   prometheus.NewRegistry(),
		discard:    t.discard,
	}
	if t.discard {
		c.MeterProvider, c.TracerProvider = sdkmetric.NewMeterProvider(), noop.NewTracerProvider()
		return c, nil
	}
	res := resource.NewSchemaless(semconv.ServiceName(name))
	if process {
		c.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	exporter, err := otelprom.New(otelprom.WithRegisterer(c.registry), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter), sdkmetric.WithResource(res))
	c.decl = &declarations{}
	c.MeterProvider = declaringProvider{mp, c.decl}
	stop := []func(context.Context) error{mp.Shutdown}
	if t.spans == nil {
		c.TracerProvider = noop.NewTracerProvider()
	} else {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(callIDs{}), sdktrace.WithBatcher(sharedExporter{t.spans}), sdktrace.WithResource(res))
		c.TracerProvider = tp
		stop = append(stop, tp.Shutdown)
	}
	// The services stop (flushing their spans) before the parent's
	// exporter does.
	t.shutdown = append(stop, t.shutdown...)
	return c, nil
}

// sharedExporter lets several tracer providers use one exporter: their
// shutdown flushes their own spans but leaves the exporter to its owner.
type sharedExporter struct{ sdktrace.SpanExporter }

func (sharedExporter) Shutdown(context.Context) error { return nil }

// Discard returns telemetry that logs nothing and exports nothing, for
// tests.
func Discard() *Telemetry {
	return &Telemetry{
		Logger:         slog.New(slog.DiscardHandler),
		MeterProvider:  sdkmetric.NewMeterProvider(),
		TracerProvider: noop.NewTracerProvider(),
		Propagator:     propagation.TraceContext{},
		registry:       prometheus.NewRegistry(),
		discard:        true,
	}
}

// SetGlobal installs the providers as the process-wide OpenTelemetry
// defaults, for libraries that only look there. Only main should call it.
func (t *Telemetry) SetGlobal() {
	otel.SetMeterProvider(t.MeterProvider)
	otel.SetTracerProvider(t.TracerProvider)
	otel.SetTextMapPropagator(t.Propagator)
}

// MetricsHandler serves the Prometheus scrape endpoint.
func (t *Telemetry) MetricsHandler() http.Handler {
	var g prometheus.Gatherer = t.registry
	if t.decl != nil {
		g = zeroGatherer{g: t.registry, decl: t.decl}
	}
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{EnableOpenMetrics: true})
}

// Shutdown flushes and stops the exporters.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	var errs []error
	for _, f := range t.shutdown {
		errs = append(errs, f(ctx))
	}
	return errors.Join(errs...)
}

// NewLogger returns a slog logger writing to w (stderr when nil) at the
// given level ("" = info) and format ("text" or "json", "" = text).
func NewLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	if w == nil {
		w = stderr
	}
	var lv slog.Level
	if level != "" {
		if err := lv.UnmarshalText([]byte(level)); err != nil {
			return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
		}
	}
	hopts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, hopts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, hopts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}
