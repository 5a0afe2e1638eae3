package fullcall

import (
	"context"
	"encoding/json"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/calmline/calmline/lib/telemetry"
)

// A recording that is not a live call — an upload, a file from a spool —
// is the root of its own trace, as a live call's WebSocket session is: a
// span "recording" or "spool file" with the call id, and the analysis,
// the report's write and a job's callback as its children. A job stores
// the root's context (W3C trace context and the baggage with the call
// id), so that the worker that runs it, in this process or another, and
// after a restart, continues the same trace.

// Span names (docs/architecture.md, observability).
const (
	spanRecording = "recording"
	spanSpoolFile = "spool file"
	spanJob       = "job"
	spanAnalysis  = "analysis"
	spanWrite     = "report write"
	spanCallback  = "callback"
)

type tracing struct {
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
}

func newTracing(tp trace.TracerProvider, p propagation.TextMapPropagator) tracing {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	if p == nil {
		p = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	return tracing{tracer: tp.Tracer("github.com/calmline/calmline/fullcall"), prop: p}
}

// root starts a recording's root span: a new trace, linked to the request
// that brought the recording when there is one, carrying the call id.
func (tr tracing) root(ctx context.Context, name, callID string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	opts := []trace.SpanStartOption{trace.WithNewRoot(), trace.WithAttributes(append(attrs, attribute.String(telemetry.CallIDKey, callID))...)}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
	}
	return tr.tracer.Start(telemetry.WithCallID(ctx, callID), name, opts...)
}

// child starts a span under ctx's; err ends it as failed.
func (tr tracing) child(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, func(error)) {
	ctx, span := tr.tracer.Start(ctx, name, trace.WithAttributes(attrs...))
	return ctx, func(err error) {
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
}

// inject returns ctx's trace context as a job stores it ("" for none).
func (tr tracing) inject(ctx context.Context) string {
	c := propagation.MapCarrier{}
	tr.prop.Inject(ctx, c)
	if len(c) == 0 {
		return ""
	}
	b, _ := json.Marshal(c)
	return string(b)
}

// extract returns ctx carrying a stored trace context; ctx as it was when
// there is none or it cannot be read.
func (tr tracing) extract(ctx context.Context, stored string) context.Context {
	var c propagation.MapCarrier
	if stored == "" || json.Unmarshal([]byte(stored), &c) != nil {
		return ctx
	}
	return tr.prop.Extract(ctx, c)
}
