package escalation

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/calmline/calmline/lib/telemetry"
	"github.com/calmline/calmline/lib/tenant"
)

type metrics struct {
	meter             metric.Meter
	alerts            metric.Int64Counter
	refused           metric.Int64Counter
	attempts          metric.Int64Counter
	firstAttemptDelay metric.Float64Histogram
}

func newMetrics(mp metric.MeterProvider) (*metrics, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	m := &metrics{meter: mp.Meter("github.com/calmline/calmline/escalation")}
	var err error
	counter := func(name, desc string) metric.Int64Counter {
		if err != nil {
			return nil
		}
		var c metric.Int64Counter
		c, err = m.meter.Int64Counter(name, metric.WithDescription(desc))
		return c
	}
	m.alerts = counter("calmline.escalation.alerts", "Alert events recorded.")
	m.refused = counter("calmline.escalation.alerts.refused", "PostAlerts requests refused, by reason (outbox_full: the tenant's unfinished deliveries reached the bound).")
	m.attempts = counter("calmline.escalation.delivery.attempts", "Delivery attempts, by payload type and result (succeeded, retry, dead_final, dead_exhausted, released).")
	if err == nil {
		m.firstAttemptDelay, err = m.meter.Float64Histogram("calmline.escalation.delivery.first_attempt_delay", metric.WithUnit("s"),
			metric.WithDescription(helpFirstAttempt), metric.WithExplicitBucketBoundaries(firstAttemptBuckets...))
	}
	telemetry.DeclareHistogram(mp, "calmline_escalation_delivery_first_attempt_delay_seconds", helpFirstAttempt, firstAttemptBuckets)
	if err == nil {
		m.zero()
	}
	return m, err
}

const helpFirstAttempt = "From a delivery's creation (an alert accepted, a step due, an event) to its first attempt."

var firstAttemptBuckets = []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// attemptResults are the result label's values of
// calmline_escalation_delivery_attempts_total.
var attemptResults = []string{"succeeded", "retry", "dead_final", "dead_exhausted", "released"}

// deliveryTypes are the type label's values: every payload escalation sends.
var deliveryTypes = []string{tenant.EventEscalationTriggered, TypeWarningRequested, TypeTransferRequested,
	tenant.EventEscalationTransferSucceeded, tenant.EventEscalationTransferFailed,
	tenant.EventEscalationAcknowledged, tenant.EventEscalationResolved, tenant.EventAgentCareRecommended}

// zero makes every series whose label values are known exist at zero from
// the start, so that rate() and alerts see the first increase.
func (m *metrics) zero() {
	ctx := context.Background()
	m.alerts.Add(ctx, 0)
	m.refused.Add(ctx, 0, metric.WithAttributes(attribute.String("reason", "outbox_full")))
	for _, typ := range deliveryTypes {
		for _, r := range attemptResults {
			m.attempts.Add(ctx, 0, metric.WithAttributes(attribute.String("type", typ), attribute.String("result", r)))
		}
	}
}
