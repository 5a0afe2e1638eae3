package realtime

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

type metrics struct {
	meter         metric.Meter
	calls         metric.Int64Counter
	refused       metric.Int64Counter
	seconds       metric.Int64Counter
	audioBytes    metric.Int64Counter
	alerts        metric.Int64Counter
	alertsPosted  metric.Int64Counter
	alertsDropped metric.Int64Counter
	alertRetries  metric.Int64Counter
	timelineSkips metric.Int64Counter
	analysisTime  metric.Float64Counter
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
		// Seconds, Prometheus's base unit: calmline_realtime_analysis_time_seconds_total.
		m.analysisTime, err = m.meter.Float64Counter("calmline.realtime.analysis.time", metric.WithUnit("s"),
			metric.WithDescription("Time spent in the voice analysis."))
	}
	if err == nil {
		m.zero()
	}
	return m, err
}

// zero makes every series whose label values are known exist at zero from
// the start, so that rate() and alerts see the first increase.
func (m *metrics) zero() {
	ctx := context.Background()
	for _, c := range []metric.Int64Counter{m.calls, m.seconds, m.audioBytes, m.alertsPosted, m.alertRetries, m.timelineSkips} {
		c.Add(ctx, 0)
	}
	m.analysisTime.Add(ctx, 0)
	for _, r := range []string{"draining", "max_calls"} {
		m.refused.Add(ctx, 0, metric.WithAttributes(reasonAttr.String(r)))
	}
	for _, st := range []string{"ALERT_STATE_FIRING", "ALERT_STATE_CLEARED"} {
		m.alerts.Add(ctx, 0, metric.WithAttributes(stateAttr.String(st)))
	}
	for _, r := range alertDropReasons {
		m.alertsDropped.Add(ctx, 0, metric.WithAttributes(attribute.String("reason", r)))
	}
}
