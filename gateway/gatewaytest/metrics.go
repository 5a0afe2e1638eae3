package gatewaytest

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// Metrics is an OpenTelemetry meter provider whose measurements tests can
// read back.
type Metrics struct {
	t        testing.TB
	reader   *sdkmetric.ManualReader
	Provider metric.MeterProvider
}

// NewMetrics returns a meter provider for a test.
func NewMetrics(t testing.TB) *Metrics {
	r := sdkmetric.NewManualReader()
	return &Metrics{t: t, reader: r, Provider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(r))}
}

// Value sums the named metric's points whose attributes include every
// key=value pair given (as "key", "value", ...): a counter's or gauge's
// value, a histogram's count.
func (m *Metrics) Value(name string, kv ...string) float64 {
	v, _ := m.Histogram(name, kv...)
	return v
}

// Histogram returns, for a histogram, the count and sum of the matching
// points; for other metrics, the value twice.
func (m *Metrics) Histogram(name string, kv ...string) (count, sum float64) {
	m.t.Helper()
	var rm metricdata.ResourceMetrics
	if err := m.reader.Collect(context.Background(), &rm); err != nil {
		m.t.Fatal(err)
	}
	match := func(s attribute.Set) bool {
		for i := 0; i+1 < len(kv); i += 2 {
			if v, ok := s.Value(attribute.Key(kv[i])); !ok || v.String() != kv[i+1] {
				return false
			}
		}
		return true
	}
	for _, sm := range rm.ScopeMetrics {
		for _, md := range sm.Metrics {
			if md.Name != name {
				continue
			}
			switch d := md.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					if match(p.Attributes) {
						count += float64(p.Value)
					}
				}
			case metricdata.Sum[float64]:
				for _, p := range d.DataPoints {
					if match(p.Attributes) {
						count += p.Value
					}
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					if match(p.Attributes) {
						count += float64(p.Value)
					}
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					if match(p.Attributes) {
						count += float64(p.Count)
						sum += p.Sum
					}
				}
				return count, sum
			}
		}
	}
	return count, count
}
