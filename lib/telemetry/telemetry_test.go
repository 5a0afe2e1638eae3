package telemetry

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

func scrape(t *testing.T, tel *Telemetry) string {
	t.Helper()
	rec := httptest.NewRecorder()
	tel.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

// TestServicesExposeTheirOwnSeries: two services of one process each
// expose their own series, under their own service.name, and only the one
// given the process's series exposes go_* and process_*.
func TestServicesExposeTheirOwnSeries(t *testing.T) {
	parent, err := New(context.Background(), Options{ServiceName: "calmline", LogOutput: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer parent.Shutdown(context.Background())
	gw, err := parent.Service("calmline-gateway", true)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := parent.Service("calmline-realtime", false)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := gw.MeterProvider.Meter("t").Int64Counter("calmline.gateway.things")
	c.Add(context.Background(), 0)
	r, _ := rt.MeterProvider.Meter("t").Int64Counter("calmline.realtime.things")
	r.Add(context.Background(), 0)
	gwText, rtText := scrape(t, gw), scrape(t, rt)
	for _, c := range []struct {
		text, has, hasNot string
	}{
		{gwText, "calmline_gateway_things_total 0", "calmline_realtime_things_total"},
		{rtText, "calmline_realtime_things_total 0", "calmline_gateway_things_total"},
		{gwText, `service_name="calmline-gateway"`, `service_name="calmline-realtime"`},
		{rtText, `service_name="calmline-realtime"`, `service_name="calmline-gateway"`},
		{gwText, "go_goroutines", ""},
		{rtText, "calmline_realtime", "go_goroutines"},
	} {
		if !strings.Contains(c.text, c.has) || c.hasNot != "" && strings.Contains(c.text, c.hasNot) {
			t.Errorf("want %q and not %q in:\n%s", c.has, c.hasNot, c.text)
		}
	}
}

// TestCallIDOnEverySpan: spans started under WithCallID carry the call id,
// those of the call's children too; others do not.
func TestCallIDOnEverySpan(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(callIDs{}), sdktrace.WithSpanProcessor(rec))
	tr := tp.Tracer("t")
	ctx, root := tr.Start(WithCallID(context.Background(), "call-7"), "call")
	_, child := tr.Start(ctx, "child")
	child.End()
	root.End()
	_, other := tr.Start(context.Background(), "other")
	other.End()
	for _, s := range rec.Ended() {
		var got string
		for _, kv := range s.Attributes() {
			if kv.Key == attribute.Key(CallIDKey) {
				got = kv.Value.AsString()
			}
		}
		want := "call-7"
		if s.Name() == "other" {
			want = ""
		}
		if got != want {
			t.Errorf("span %q: call id %q; want %q", s.Name(), got, want)
		}
	}
}

// TestDeclaredHistogramsExistFromTheStart: a declared histogram's series
// are exposed empty before the first observation, and once observed, only
// the real series is.
func TestDeclaredHistogramsExistFromTheStart(t *testing.T) {
	parent, err := New(context.Background(), Options{LogOutput: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer parent.Shutdown(context.Background())
	svc, err := parent.Service("calmline-test", false)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := svc.MeterProvider.Meter("t").Float64Histogram("calmline.test.rtt", metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(0.1, 1))
	DeclareHistogram(svc.MeterProvider, "calmline_test_rtt_seconds", "Round trip.", []float64{0.1, 1},
		map[string]string{"backend": "a"}, map[string]string{"backend": "b"})
	DeclareHistogram(svc.MeterProvider, "calmline_test_rtt_seconds", "Round trip.", []float64{0.1, 1}, map[string]string{"backend": "a"})
	text := scrape(t, svc)
	for _, want := range []string{`calmline_test_rtt_seconds_bucket{backend="a",le="0.1"} 0`, `calmline_test_rtt_seconds_count{backend="a"} 0`,
		`calmline_test_rtt_seconds_count{backend="b"} 0`, "# TYPE calmline_test_rtt_seconds histogram"} {
		if !strings.Contains(text, want) {
			t.Errorf("before any observation: no %q in\n%s", want, text)
		}
	}
	if n := strings.Count(text, `calmline_test_rtt_seconds_count{backend="a"}`); n != 1 {
		t.Errorf("declared twice, exposed %d times", n)
	}
	h.Record(context.Background(), 0.5, metric.WithAttributes(attribute.String("backend", "a")))
	text = scrape(t, svc)
	if n := strings.Count(text, `calmline_test_rtt_seconds_count{backend="a"}`); n != 1 || !strings.Contains(text, `calmline_test_rtt_seconds_count{backend="a"} 1`) {
		t.Errorf("after one observation: want exactly the real series, count 1:\n%s", text)
	}
	if !strings.Contains(text, `calmline_test_rtt_seconds_count{backend="b"} 0`) {
		t.Errorf("the series not yet observed vanished:\n%s", text)
	}
}
