package session

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

type metrics struct {
	calls       metric.Int64Counter
	refused     metric.Int64Counter
	bytesIn     metric.Int64Counter
	bytesOut    metric.Int64Counter
	dropped     metric.Int64Counter
	reconnects  metric.Int64Counter
	replayed    metric.Int64Counter
	incomplete  metric.Int64Counter
	evDropped   metric.Int64Counter
	scoreDelay  metric.Float64Histogram
	callSeconds metric.Float64Histogram
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
	m.calls = counter("calmline.gateway.calls", "{call}", "Calls started, by tenant and protocol.")
	m.refused = counter("calmline.gateway.calls.refused", "{call}", "Calls refused, by tenant and reason.")
	m.bytesIn = counter("calmline.gateway.audio.in", "By", "Audio bytes received from clients, by tenant.")
	m.bytesOut = counter("calmline.gateway.events.out", "By", "Bytes of events sent back to clients, by tenant.")
	m.dropped = counter("calmline.gateway.audio.dropped", "By", "Audio dropped, by path and reason.")
	m.reconnects = counter("calmline.gateway.backend.reconnects", "{stream}", "Backend streams reopened after a failure, by backend.")
	m.replayed = counter("calmline.gateway.fullcall.replayed", "{chunk}", "Chunks replayed to fullcall after a reconnect.")
	m.incomplete = counter("calmline.gateway.calls.incomplete", "{call}", "Calls whose fullcall audio could not all be kept.")
	m.evDropped = counter("calmline.gateway.events.dropped", "{event}", "Score events dropped because a client read too slowly, by tenant.")
	if err == nil {
		m.scoreDelay, err = meter.Float64Histogram("calmline.gateway.score.delay", metric.WithUnit("s"),
			metric.WithDescription("Time from the audio that completes a second reaching the gateway to its score reaching the gateway."),
			metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
	}
	if err == nil {
		m.callSeconds, err = meter.Float64Histogram("calmline.gateway.call.duration", metric.WithUnit("s"),
			metric.WithDescription("Length of ended calls."))
	}
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
	return m, err
}
