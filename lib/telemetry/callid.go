package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// CallIDKey names the call id on every span of a call's trace, and in the
// baggage that carries it from service to service.
const CallIDKey = "calmline.call_id"

// WithCallID returns ctx carrying the call id as baggage: every span
// started under it, in this process or (through the propagator, over gRPC)
// in the services the call reaches, gets the calmline.call_id attribute.
func WithCallID(ctx context.Context, callID string) context.Context {
	m, err := baggage.NewMemberRaw(CallIDKey, callID)
	if err != nil {
		return ctx
	}
	b, err := baggage.FromContext(ctx).SetMember(m)
	if err != nil {
		return ctx
	}
	return baggage.ContextWithBaggage(ctx, b)
}

// callIDs is a span processor that copies the call id from the baggage
// onto each span as it starts.
type callIDs struct{}

func (callIDs) OnStart(parent context.Context, s sdktrace.ReadWriteSpan) {
	if v := baggage.FromContext(parent).Member(CallIDKey).Value(); v != "" {
		s.SetAttributes(attribute.String(CallIDKey, v))
	}
}

func (callIDs) OnEnd(sdktrace.ReadOnlySpan)      {}
func (callIDs) Shutdown(context.Context) error   { return nil }
func (callIDs) ForceFlush(context.Context) error { return nil }

// CallIDSpans returns the span processor that puts the call id from the
// baggage on every span (New installs it; tests of a service's spans use
// it with their own recorder).
func CallIDSpans() sdktrace.SpanProcessor { return callIDs{} }
