package realtime

import (
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

type metrics struct {
	meter          metric.Meter
	calls          metric.Int64Counter
	refused        metric.Int64Counter
	seconds        metric.Int64Counter
	audioBytes     metric.Int64Counter
	alerts         metric.Int64Counter
	alertsPosted   metric.Int64Counter
	alertsDropped  metric.Int64Counter
	alertRetries   metric.Int64Counter
	timelineSkips  metric.Int64Counter
	analysisTimeNs metric.Int64Counter
}

func newMetrics(mp metric.MeterProvider) (*metrics, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	m := &metrics{meter: mp.Meter("github.com/calmline/calmline/realtime")}
	var err error
	counter := func(name, desc string) metric.Int64Counter {
		if err != nil {
			return nil
		}
		var c metric.Int64Counter
		c, err = m.meter.Int64Counter(name, metric.WithDescription(desc))
		return c
	}
	m.calls = counter("calmline.realtime.calls", "Calls opened on this instance (resumed calls included).")
	m.refused = counter("calmline.realtime.calls.refused", "Streams refused, by reason.")
	m.seconds = counter("calmline.realtime.seconds.scored", "Seconds of call audio scored.")
	m.audioBytes = counter("calmline.realtime.audio.bytes", "Bytes of encoded audio received.")
	m.alerts = counter("calmline.realtime.alerts", "Alert events raised, by state.")
	m.alertsPosted = counter("calmline.realtime.alerts.posted", "Alerts escalation accepted.")
	m.alertsDropped = counter("calmline.realtime.alerts.dropped", "Alerts that never reached escalation (queue full or shutdown).")
	m.alertRetries = counter("calmline.realtime.alerts.retries", "Retried attempts to post an alert.")
	m.timelineSkips = counter("calmline.realtime.timeline.skips", "Audio the analysis skipped because it overlapped audio already analysed.")
	if err == nil {
		m.analysisTimeNs, err = m.meter.Int64Counter("calmline.realtime.analysis.time", metric.WithUnit("ns"),
			metric.WithDescription("Time spent in the voice analysis."))
	}
	return m, err
}
