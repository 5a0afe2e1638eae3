package escalation

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"

	"github.com/calmline/calmline/lib/telemetry"
	escalationv1 "github.com/calmline/calmline/proto/calmline/escalation/v1"
)

// TestOutboxContinuesTheCallsTrace: the ladder step and each attempt of
// its delivery are spans of the trace of the PostAlerts request that
// opened the escalation, children of it in that order, with the call id,
// the step, the endpoint's name (never its URL), the attempt number, the
// status and the outcome; an attempt made by a restarted instance, from
// the trace context stored in the database, continues the same trace; the
// webhook carries traceparent, and never the baggage.
func TestOutboxContinuesTheCallsTrace(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })

	var up atomic.Bool
	rcv := newReceiver(t, func(m message) answer {
		if !up.Load() {
			return answer{status: 503}
		}
		return answer{status: 200, processed: true}
	})
	cfg := fmt.Sprintf(`    escalation:
      retry: {initial: 100ms, max_interval: 100ms}
      endpoints: [{name: on-call, url: '%s?token=s3cret'}]
      ladder: [{name: notify, action: notify, endpoint: on-call}]
`, rcv.srv.URL)
	st := startStack(t, cfg, func(o *Options) {
		o.TracerProvider = tp
		o.Propagator = defaultPropagator
	})

	// The caller (realtime) sends the call's trace context and the call id
	// as baggage.
	ctx, root := tp.Tracer("test").Start(telemetry.WithCallID(context.Background(), "c1"), "call")
	carrier := propagation.MapCarrier{}
	defaultPropagator.Inject(ctx, carrier)
	md := metadata.MD{}
	for k, v := range carrier {
		md.Set(k, v)
	}
	resp, err := escalationv1.NewAlertServiceClient(st.cc).PostAlerts(metadata.NewOutgoingContext(ctx, md),
		&escalationv1.PostAlertsRequest{Alerts: []*escalationv1.Alert{firing("c1", 1)}})
	if err != nil {
		t.Fatalf("PostAlerts: %v", err)
	}
	root.End()
	escID := resp.EscalationIds[0]
	callTrace := root.SpanContext().TraceID()

	eventually(t, 5*time.Second, "a failed attempt", func() bool { return len(rcv.messages()) > 0 })
	st.stop()
	up.Store(true)
	again := serveOptions(t, st.s.o)
	again.key = st.key
	rcv.collect(t, 1, 5*time.Second)
	again.stop() // ends the attempt's span before the spans are read

	byName := map[string][]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		byName[s.Name()] = append(byName[s.Name()], s)
	}
	var post sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if strings.HasSuffix(s.Name(), "/PostAlerts") {
			post = s
		}
	}
	if post == nil || post.Parent().SpanID() != root.SpanContext().SpanID() {
		t.Fatalf("no PostAlerts span under the call's; spans: %v", names(rec.Ended()))
	}
	steps := byName[spanStep]
	if len(steps) != 1 {
		t.Fatalf("%d step spans; want 1; spans: %v", len(steps), names(rec.Ended()))
	}
	step := steps[0]
	if step.SpanContext().TraceID() != callTrace || step.Parent().SpanID() != post.SpanContext().SpanID() {
		t.Errorf("the step span is not a child of PostAlerts in the call's trace")
	}
	wantAttrs(t, step, map[string]any{telemetry.CallIDKey: "c1", attrEscalationID: escID, attrStep: "notify",
		attrAction: "notify", attrEndpoint: "on-call"})

	attempts := byName[spanAttempt]
	if len(attempts) < 2 {
		t.Fatalf("%d attempt spans; want at least 2 (a failure, then the success after the restart)", len(attempts))
	}
	for i, a := range attempts {
		if a.SpanContext().TraceID() != callTrace || a.Parent().SpanID() != step.SpanContext().SpanID() {
			t.Errorf("attempt %d is not a child of the step span in the call's trace", i+1)
		}
		if a.SpanKind() != trace.SpanKindClient {
			t.Errorf("attempt %d is a %v span; want client", i+1, a.SpanKind())
		}
		for _, kv := range a.Attributes() {
			if v := kv.Value.String(); strings.Contains(v, "127.0.0.1") || strings.Contains(v, "s3cret") {
				t.Errorf("attempt %d's attribute %s holds the endpoint's URL: %q", i+1, kv.Key, v)
			}
		}
	}
	first, last := attempts[0], attempts[len(attempts)-1]
	wantAttrs(t, first, map[string]any{telemetry.CallIDKey: "c1", attrEndpoint: "on-call", attrStep: "notify",
		attrAttempt: int64(1), attrStatus: int64(503), attrOutcome: "retry"})
	wantAttrs(t, last, map[string]any{telemetry.CallIDKey: "c1", attrAttempt: int64(len(attempts)), attrStatus: int64(200),
		attrOutcome: "succeeded"})

	// The receiver sees the trace: each request's traceparent names its
	// attempt's span; the baggage stays inside calmline.
	msgs := rcv.messages()
	if len(msgs) != len(attempts) {
		t.Fatalf("%d requests for %d attempt spans", len(msgs), len(attempts))
	}
	for i, m := range msgs {
		want := fmt.Sprintf("00-%s-%s-01", callTrace, attempts[i].SpanContext().SpanID())
		if got := m.Header.Get("traceparent"); got != want {
			t.Errorf("request %d: traceparent %q; want %q", i+1, got, want)
		}
		if b := m.Header.Get("baggage"); b != "" {
			t.Errorf("request %d carries baggage %q out of calmline", i+1, b)
		}
	}
}

func names(spans []sdktrace.ReadOnlySpan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name())
	}
	return out
}

func wantAttrs(t *testing.T, s sdktrace.ReadOnlySpan, want map[string]any) {
	t.Helper()
	got := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		got[kv.Key] = kv.Value
	}
	for k, w := range want {
		if v, ok := got[attribute.Key(k)]; !ok || v.AsInterface() != w {
			t.Errorf("%s span: %s = %v; want %v", s.Name(), k, v.AsInterface(), w)
		}
	}
}

// TestTraceContextStoredAndRestored: what is stored is what is restored,
// and a stored context that cannot be read leaves the context as it was.
func TestTraceContextStoredAndRestored(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(context.Background())
	tr := newTracing(tp, nil)
	if got := tr.inject(context.Background()); got != "" {
		t.Errorf("no trace stored as %q; want empty", got)
	}
	ctx, span := tp.Tracer("test").Start(telemetry.WithCallID(context.Background(), "call-1"), "x")
	defer span.End()
	stored := tr.inject(ctx)
	back := tr.extract(context.Background(), stored)
	if sc := trace.SpanContextFromContext(back); sc.TraceID() != span.SpanContext().TraceID() || sc.SpanID() != span.SpanContext().SpanID() || !sc.IsRemote() {
		t.Errorf("restored %v from %q; want the span %v", sc, stored, span.SpanContext())
	}
	for _, bad := range []string{"{", "[]", `{"traceparent":"00-zz"}`} {
		if sc := trace.SpanContextFromContext(tr.extract(context.Background(), bad)); sc.IsValid() {
			t.Errorf("extract(%q) = %v; want no span context", bad, sc)
		}
	}
	if h := traceHeader(ctx); h.Get("traceparent") == "" || h.Get("baggage") != "" {
		t.Errorf("outgoing headers %v; want traceparent and no baggage", h)
	}
}

// TestRolledBackStepHasNoSpan: a step started in a transaction that rolls
// back never happened, and no span says it did.
func TestRolledBackStepHasNoSpan(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	rcv := newReceiver(t, nil)
	st := startStack(t, fmt.Sprintf(`    escalation:
      endpoints: [{name: on-call, url: '%s'}]
      ladder: [{name: notify, action: notify, endpoint: on-call}]
`, rcv.srv.URL), func(o *Options) { o.TracerProvider = tp })
	id := st.post(t, firing("c1", 1))[0]
	rcv.collect(t, 1, 5*time.Second)
	committed := len(spansNamed(rec, spanStep))
	if committed != 1 {
		t.Fatalf("%d step spans after one escalation; want 1", committed)
	}
	rollback := errors.New("roll back")
	err := st.s.store.inTx(context.Background(), func(tx *txn) error {
		e, err := tx.getEsc("acme", id)
		if err != nil {
			return err
		}
		if err := tx.startStep(e, stepRow{EscalationID: id, Idx: 7, Name: "again", Action: "notify", Endpoint: "on-call"}); err != nil {
			return err
		}
		return rollback
	})
	if !errors.Is(err, rollback) {
		t.Fatalf("inTx = %v; want the rollback", err)
	}
	if n := len(spansNamed(rec, spanStep)); n != committed {
		t.Errorf("%d step spans after a rolled-back step; want %d", n, committed)
	}
}

func spansNamed(rec *tracetest.SpanRecorder, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}
