package session

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Attributes of the per-call traffic histogram.
var (
	dirClientIn   = metric.WithAttributes(attribute.String("direction", "client_in"))
	dirClientOut  = metric.WithAttributes(attribute.String("direction", "client_out"))
	dirBackendOut = metric.WithAttributes(attribute.String("direction", "backend_out"))
)

type metrics struct {
	calls       metric.Int64Counter
	resumed     metric.Int64Counter
	parked      metric.Int64Counter
	refused     metric.Int64Counter
	bytesIn     metric.Int64Counter
	bytesOut    metric.Int64Counter
	backendOut  metric.Int64Counter
	dropped     metric.Int64Counter
	reconnects  metric.Int64Counter
	rtStalls    metric.Int64Counter
	replayed    metric.Int64Counter
	incomplete  metric.Int64Counter
	evDropped   metric.Int64Counter
	tooFast     metric.Int64Counter
	throttled   metric.Float64Counter
	scoreDelay  metric.Float64Histogram
	rtt         metric.Float64Histogram
	callSeconds metric.Float64Histogram
	callRate    metric.Float64Histogram
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
	m.refused = counter("calmline.gateway.calls.refused", "{call}", "Calls and connections refused, by tenant and reason.")
	m.bytesIn = counter("calmline.gateway.audio.in", "By", "Audio bytes received from clients, by tenant.")
	m.bytesOut = counter("calmline.gateway.events.out", "By", "Bytes of events sent back to clients, by tenant.")
	m.backendOut = counter("calmline.gateway.backend.out", "By", "Audio payload bytes sent to the backends (replays included), by backend.")
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
	m.scoreDelay = histogram("calmline.gateway.score.delay", "s",
		"Time from the audio that completes a second reaching the gateway to its score reaching the gateway.",
		0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
	m.rtt = histogram("calmline.gateway.backend.rtt", "s",
		"Backend round trip: fullcall, a chunk sent to its acknowledgement; realtime, the audio completing a second sent to its score.",
		0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
	m.callSeconds = histogram("calmline.gateway.call.duration", "s", "Length of ended calls.",
		1, 10, 30, 60, 120, 300, 600, 1800, 3600)
	m.callRate = histogram("calmline.gateway.call.traffic", "By/s",
		"Average traffic of each ended call, by direction: client_in (audio from the client), client_out (events to the client), backend_out (audio payload to the backends).",
		100, 1000, 4000, 8000, 16000, 17000, 32000, 34000, 64000, 68000, 128000)
	if err == nil {
		_, err = meter.Int64ObservableGauge("calmline.gateway.calls.active", metric.WithUnit("{call}"),
			metric.WithDescription("Live calls, by tenant."),
			metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
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
				o.Observe(mgr.unacked())
				return nil
			}))
	}
	return m, err
}
