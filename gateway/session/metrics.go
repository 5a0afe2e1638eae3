package session

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/calmline/calmline/lib/telemetry"
)

// Attributes of the per-call traffic histogram.
var (
	dirClientIn   = metric.WithAttributes(attribute.String("direction", "client_in"))
	dirClientOut  = metric.WithAttributes(attribute.String("direction", "client_out"))
	dirBackendOut = metric.WithAttributes(attribute.String("direction", "backend_out"))
)

// The histograms' help texts and buckets (also declared to telemetry, so
// that their series exist before the first observation).
const (
	helpScoreDelay  = "Time from the audio that completes a second reaching the gateway to its score reaching the gateway."
	helpRTT         = "Backend round trip: fullcall, a chunk sent to its acknowledgement; realtime, the audio completing a second sent to its score."
	helpCallSeconds = "Length of ended calls."
	helpCallRate    = "Average traffic of each ended call, by direction: client_in (audio from the client), client_out (events to the client), backend_out (audio payload to the backends)."
)

var (
	scoreDelayBuckets  = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}
	rttBuckets         = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}
	callSecondsBuckets = []float64{1, 10, 30, 60, 120, 300, 600, 1800, 3600}
	callRateBuckets    = []float64{100, 1000, 4000, 8000, 16000, 17000, 32000, 34000, 64000, 68000, 128000}
)

type metrics struct {
	mp         metric.MeterProvider
	calls      metric.Int64Counter
	resumed    metric.Int64Counter
	parked     metric.Int64Counter
	refused    metric.Int64Counter
	bytesIn    metric.Int64Counter
	bytesOut   metric.Int64Counter
	backendOut metric.Int64Counter
	chunksOut  metric.Int64Counter
	dropped    metric.Int64Counter
	reconnects metric.Int64Counter
	rtStalls   metric.Int64Counter
	replayed   metric.Int64Counter
	incomplete metric.Int64Counter
	evDropped  metric.Int64Counter
	tooFast    metric.Int64Counter
	throttled  metric.Float64Counter
	// backpressure is the time clients were held because fullcall had
	// not acknowledged a full replay log.
	backpressure metric.Float64Counter
	scoreDelay   metric.Float64Histogram
	rtt          metric.Float64Histogram
	callSeconds  metric.Float64Histogram
	callRate     metric.Float64Histogram
}

func newMetrics(mp metric.MeterProvider, mgr *Manager) (*metrics, error) {
	meter := mp.Meter("github.com/calmline/calmline/gateway/session")
	m := &metrics{}
	var err error
	counter := func(name, unit, desc string) metric.Int64Counter {
		if err != nil {
			return nil
		}
		var c metric.Int64Counter
		c, err = meter.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		return c
	}
	histogram := func(name, unit, desc string, buckets ...float64) metric.Float64Histogram {
		if err != nil {
			return nil
		}
		var h metric.Float64Histogram
		h, err = meter.Float64Histogram(name, metric.WithUnit(unit), metric.WithDescription(desc), metric.WithExplicitBucketBoundaries(buckets...))
		return h
	}
	m.calls = counter("calmline.gateway.calls", "{call}", "Calls started, by tenant and protocol.")
	m.parked = counter("calmline.gateway.calls.parked", "{call}", "Calls whose connection dropped without a hang-up and that waited for a resume, by tenant.")
	m.resumed = counter("calmline.gateway.calls.resumed", "{call}", "Calls a client resumed after their stream ended without a hang-up (a broken connection, or a gateway that died), by tenant.")
	m.refused = counter("calmline.gateway.calls.refused", "{call}", "Calls and connections refused, by tenant, protocol and reason.")
	m.bytesIn = counter("calmline.gateway.audio.in", "By", "Audio bytes received from clients, by tenant.")
	m.bytesOut = counter("calmline.gateway.events.out", "By", "Bytes of events sent back to clients, by tenant.")
	m.backendOut = counter("calmline.gateway.backend.out", "By", "Audio payload bytes sent to the backends (replays included), by backend.")
	m.chunksOut = counter("calmline.gateway.backend.chunks", "{chunk}", "Audio chunks (gRPC messages carrying audio) sent to the backends (replays included), by backend: what queued for a call while its sender was busy goes out as one.")
	m.dropped = counter("calmline.gateway.audio.dropped", "By", "Audio dropped, by path and reason.")
	m.reconnects = counter("calmline.gateway.backend.reconnects", "{stream}", "Backend streams reopened after a failure, by backend.")
	m.rtStalls = counter("calmline.gateway.realtime.stalls", "{stream}", "Realtime streams given up because audio went unanswered for --realtime-stall (a hung instance); the call moves to another.")
	m.replayed = counter("calmline.gateway.fullcall.replayed", "{chunk}", "Chunks replayed to fullcall after a reconnect.")
	m.incomplete = counter("calmline.gateway.calls.incomplete", "{call}", "Calls whose fullcall audio could not all be kept.")
	m.evDropped = counter("calmline.gateway.events.dropped", "{event}", "Score events dropped because a client read too slowly, by tenant.")
	m.tooFast = counter("calmline.gateway.calls.too_fast", "{call}", "Calls refused by the pacing policy for sending faster than real time, by tenant.")
	if err == nil {
		m.throttled, err = meter.Float64Counter("calmline.gateway.audio.throttled", metric.WithUnit("s"),
			metric.WithDescription("Time clients were held back for sending faster than real time, by tenant."))
	}
	if err == nil {
		m.backpressure, err = meter.Float64Counter("calmline.gateway.fullcall.backpressure", metric.WithUnit("s"),
			metric.WithDescription("Time clients were held back because fullcall had not yet acknowledged a call's full replay log (fullcall audio is never dropped), by tenant."))
	}
	m.mp = mp
	m.scoreDelay = histogram("calmline.gateway.score.delay", "s", helpScoreDelay, scoreDelayBuckets...)
	m.rtt = histogram("calmline.gateway.backend.rtt", "s", helpRTT, rttBuckets...)
	m.callSeconds = histogram("calmline.gateway.call.duration", "s", helpCallSeconds, callSecondsBuckets...)
	m.callRate = histogram("calmline.gateway.call.traffic", "By/s", helpCallRate, callRateBuckets...)
	if err == nil {
		_, err = meter.Int64ObservableGauge("calmline.gateway.calls.active", metric.WithUnit("{call}"),
			metric.WithDescription("Live calls, by tenant."),
			metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
				// Every known tenant is observed, at zero between calls:
				// the series must not vanish (the HPA reads it).
				for t, n := range mgr.perTenant() {
					o.Observe(int64(n), metric.WithAttributes(attribute.String("tenant", t)))
				}
				return nil
			}))
	}
	if err == nil {
		_, err = meter.Int64ObservableGauge("calmline.gateway.fullcall.unacked", metric.WithUnit("By"),
			metric.WithDescription("Audio held in the calls' replay logs until fullcall acknowledges it."),
			metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
				o.Observe(mgr.unacked.Load())
				return nil
			}))
	}
	if err == nil {
		m.zeroFixed()
	}
	return m, err
}

// Protocols are the values of the calls counter's protocol label.
var Protocols = []string{"native", "audiohook", "twilio", "asterisk"}

// admissionRefusals are the refusal reasons every protocol counts for a
// tenant; others (bad input, a protocol's own) appear when first counted.
var admissionRefusals = []string{"quota", "draining", "duplicate_call", "backend_unavailable", "forbidden",
	ReasonCapacityCalls, "capacity_realtime_lag", "capacity_fullcall_backlog"}

// zeroFixed makes the series whose label values are known in advance
// exist at zero from the start, so that rate() and alerts see their first
// increase (Prometheus's "avoid missing metrics").
func (m *metrics) zeroFixed() {
	ctx := context.Background()
	for _, a := range []metric.AddOption{pathRealtime, pathFullcall} {
		m.backendOut.Add(ctx, 0, a)
		m.chunksOut.Add(ctx, 0, a)
		m.reconnects.Add(ctx, 0, a)
	}
	for _, a := range []metric.AddOption{dropOverflow, dropNoFullcall} {
		m.dropped.Add(ctx, 0, a)
	}
	m.replayed.Add(ctx, 0)
	for _, p := range Protocols {
		for _, r := range []string{"unauthenticated", ReasonCapacityCalls, "capacity_realtime_lag", "capacity_fullcall_backlog"} {
			m.refused.Add(ctx, 0, metric.WithAttributes(attribute.String("tenant", ""), attribute.String("protocol", p), attribute.String("reason", r)))
		}
	}
	telemetry.DeclareHistogram(m.mp, "calmline_gateway_score_delay_seconds", helpScoreDelay, scoreDelayBuckets)
	telemetry.DeclareHistogram(m.mp, "calmline_gateway_backend_rtt_seconds", helpRTT, rttBuckets,
		map[string]string{"backend": "realtime"}, map[string]string{"backend": "fullcall"})
	telemetry.DeclareHistogram(m.mp, "calmline_gateway_call_traffic_bytes_per_second", helpCallRate, callRateBuckets,
		map[string]string{"direction": "client_in"}, map[string]string{"direction": "client_out"}, map[string]string{"direction": "backend_out"})
}

// zeroTenant makes a tenant's series exist at zero.
func (m *metrics) zeroTenant(id string) {
	ctx := context.Background()
	ten := attribute.String("tenant", id)
	a := metric.WithAttributes(ten)
	for _, c := range []metric.Int64Counter{m.resumed, m.parked, m.bytesIn, m.bytesOut, m.rtStalls, m.incomplete, m.evDropped, m.tooFast} {
		c.Add(ctx, 0, a)
	}
	m.throttled.Add(ctx, 0, a)
	m.backpressure.Add(ctx, 0, a)
	for _, p := range Protocols {
		proto := attribute.String("protocol", p)
		m.calls.Add(ctx, 0, metric.WithAttributes(ten, proto))
		for _, r := range admissionRefusals {
			m.refused.Add(ctx, 0, metric.WithAttributes(ten, proto, attribute.String("reason", r)))
		}
	}
	telemetry.DeclareHistogram(m.mp, "calmline_gateway_call_duration_seconds", helpCallSeconds, callSecondsBuckets, map[string]string{"tenant": id})
}
