package escalation

import (
	"context"
	"encoding/json"
	"net/http"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// The outbox keeps a call's trace going: an escalation stores the trace
// context (W3C traceparent, tracestate and baggage, which carries the call
// id) of the PostAlerts request that opened it; each ladder step starts a
// span under it, and each delivery stores the context its attempts are
// children of: the step's span, or the escalation's for an event. The
// context is in the database, so an attempt made after a restart, or by
// another instance, continues the same trace.

// Span and attribute names of the outbox's spans (docs/escalation.md).
const (
	spanStep    = "escalation step"
	spanAttempt = "webhook attempt"

	attrEscalationID = "calmline.escalation_id"
	attrDeliveryID   = "calmline.delivery_id"
	attrStep         = "calmline.escalation.step"
	attrAction       = "calmline.escalation.action"
	attrEndpoint     = "calmline.escalation.endpoint" // the endpoint's name in the tenants file, never its URL
	attrEventType    = "calmline.escalation.event_type"
	attrAttempt      = "calmline.delivery.attempt"
	attrOutcome      = "calmline.delivery.outcome" // succeeded, retry, dead_final, dead_exhausted, released
	attrStatus       = "http.response.status_code"
)

// defaultPropagator is the one calmline's services use: W3C trace context
// and baggage.
var defaultPropagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// outgoing is what a webhook carries: the trace context only, never the
// baggage (the receiver is outside calmline).
var outgoing = propagation.TraceContext{}

// tracing is the store's tracer and propagator.
type tracing struct {
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
}

func newTracing(tp trace.TracerProvider, p propagation.TextMapPropagator) tracing {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	if p == nil {
		p = defaultPropagator
	}
	return tracing{tracer: tp.Tracer("github.com/calmline/calmline/escalation"), prop: p}
}

// inject returns ctx's trace context as stored: a JSON object of the
// propagator's fields; "" when ctx carries none.
func (tr tracing) inject(ctx context.Context) string {
	c := propagation.MapCarrier{}
	tr.prop.Inject(ctx, c)
	if len(c) == 0 {
		return ""
	}
	b, err := json.Marshal(c)
	if err != nil {
		return ""
	}
	return string(b)
}

// extract returns ctx carrying the stored trace context; ctx itself when
// there is none or it cannot be read (a trace is not worth failing a
// delivery for).
func (tr tracing) extract(ctx context.Context, stored string) context.Context {
	if stored == "" {
		return ctx
	}
	var c propagation.MapCarrier
	if err := json.Unmarshal([]byte(stored), &c); err != nil {
		return ctx
	}
	return tr.prop.Extract(ctx, c)
}

// traceHeader returns the headers that continue ctx's trace at a webhook
// receiver: traceparent (and tracestate); nil when there is no trace.
func traceHeader(ctx context.Context) http.Header {
	h := http.Header{}
	outgoing.Inject(ctx, propagation.HeaderCarrier(h))
	if len(h) == 0 {
		return nil
	}
	return h
}
