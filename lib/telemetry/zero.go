package telemetry

import (
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// OpenTelemetry's SDK exports a histogram's series only once something
// was recorded in it, so a histogram would appear with its first
// observation — against Prometheus's advice to export every series you
// know of from the start (rate() and histogram_quantile() then see the
// first observation, and an alert on the series can tell "none yet" from
// "not scraped"). A service declares its histograms' series with
// DeclareHistogram; the scrape endpoint adds an empty series (every bucket
// at zero) for each declared one the SDK has not exported yet.

// zeroHistogram is a declared histogram series.
type zeroHistogram struct {
	help    string
	buckets []float64
	labels  map[string]string
}

// declarations holds a service's declared histogram series by Prometheus
// family name.
type declarations struct {
	mu   sync.Mutex
	hist map[string][]zeroHistogram
}

// declaringProvider is a service's meter provider: the SDK's, carrying its
// declarations.
type declaringProvider struct {
	*sdkmetric.MeterProvider
	decl *declarations
}

// DeclareHistogram declares the series of a histogram by its Prometheus
// name (calmline_…_seconds), one per label set (none for a histogram
// without labels), so that the scrape endpoint of the service whose meter
// provider mp is shows them empty before their first observation. With
// any other meter provider it does nothing. It may be called again (for a
// tenant added by a reload); a label set declared twice counts once.
func DeclareHistogram(mp metric.MeterProvider, name, help string, buckets []float64, labelSets ...map[string]string) {
	dp, ok := mp.(declaringProvider)
	if !ok {
		return
	}
	if len(labelSets) == 0 {
		labelSets = []map[string]string{{}}
	}
	dp.decl.mu.Lock()
	defer dp.decl.mu.Unlock()
	if dp.decl.hist == nil {
		dp.decl.hist = map[string][]zeroHistogram{}
	}
next:
	for _, ls := range labelSets {
		for _, h := range dp.decl.hist[name] {
			if sameLabels(h.labels, ls) {
				continue next
			}
		}
		dp.decl.hist[name] = append(dp.decl.hist[name], zeroHistogram{help: help, buckets: buckets, labels: ls})
	}
}

func sameLabels(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// zeroGatherer adds the declared histogram series the SDK has not
// exported yet to what g gathers.
type zeroGatherer struct {
	g    prometheus.Gatherer
	decl *declarations
}

func (z zeroGatherer) Gather() ([]*dto.MetricFamily, error) {
	mfs, err := z.g.Gather()
	if err != nil {
		return mfs, err
	}
	z.decl.mu.Lock()
	defer z.decl.mu.Unlock()
	byName := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		byName[mf.GetName()] = mf
	}
	for name, hs := range z.decl.hist {
		mf := byName[name]
		if mf == nil {
			mf = &dto.MetricFamily{Name: new(name), Help: &hs[0].help, Type: dto.MetricType_HISTOGRAM.Enum()}
			mfs = append(mfs, mf)
			byName[name] = mf
		}
		if mf.GetType() != dto.MetricType_HISTOGRAM {
			continue
		}
	series:
		for _, h := range hs {
			for _, m := range mf.Metric {
				if labelsOf(m) == nil && len(h.labels) == 0 || sameLabels(labelsOf(m), h.labels) {
					continue series
				}
			}
			mf.Metric = append(mf.Metric, emptyHistogram(h))
		}
	}
	sort.Slice(mfs, func(i, j int) bool { return mfs[i].GetName() < mfs[j].GetName() })
	return mfs, nil
}

func labelsOf(m *dto.Metric) map[string]string {
	if len(m.Label) == 0 {
		return nil
	}
	out := make(map[string]string, len(m.Label))
	for _, l := range m.Label {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

func emptyHistogram(h zeroHistogram) *dto.Metric {
	var names []string
	for k := range h.labels {
		names = append(names, k)
	}
	sort.Strings(names)
	m := &dto.Metric{Histogram: &dto.Histogram{SampleCount: new(uint64), SampleSum: new(float64)}}
	for _, k := range names {
		m.Label = append(m.Label, &dto.LabelPair{Name: &k, Value: new(h.labels[k])})
	}
	for _, b := range h.buckets {
		m.Histogram.Bucket = append(m.Histogram.Bucket, &dto.Bucket{UpperBound: new(b), CumulativeCount: new(uint64)})
	}
	return m
}
