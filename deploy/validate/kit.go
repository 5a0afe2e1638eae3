package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// docMetric matches a series' row in docs/metrics.md.
var docMetric = regexp.MustCompile("^\\| `([a-z_][a-z0-9_]*)` \\|")

// DocumentedMetrics reads the series names docs/metrics.md lists.
func DocumentedMetrics(path string) (map[string]bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	known := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := docMetric.FindStringSubmatch(sc.Text()); m != nil {
			known[m[1]] = true
		}
	}
	if len(known) == 0 {
		return nil, fmt.Errorf("%s lists no metrics", path)
	}
	return known, sc.Err()
}

// prometheusSeries are series Prometheus makes itself, not calmline.
var prometheusSeries = map[string]bool{"up": true, "scrape_duration_seconds": true}

// metricNames returns the metric names an expression selects, histogram
// and summary suffixes removed.
func metricNames(expr parser.Expr) []string {
	var names []string
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			name := vs.Name
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				name = strings.TrimSuffix(name, s)
			}
			names = append(names, name)
		}
		return nil
	})
	return names
}

// checkNames reports every metric an expression names that is neither
// documented nor Prometheus's own.
func checkNames(where, expr string, e parser.Expr, known map[string]bool) []string {
	var problems []string
	names := metricNames(e)
	if len(names) == 0 {
		problems = append(problems, fmt.Sprintf("%s: %q selects no metric by name", where, expr))
	}
	for _, n := range names {
		if !known[n] && !prometheusSeries[n] {
			problems = append(problems, fmt.Sprintf("%s: metric %s is not in docs/metrics.md", where, n))
		}
	}
	return problems
}

// CheckRules parses a Prometheus rule file with Prometheus's own parser
// (strict fields, every expression and template checked) and checks that
// each alert says how bad it is and what it means, and that every metric
// it reads is documented.
func CheckRules(path string, known map[string]bool) []string {
	p := parser.NewParser(parser.Options{})
	groups, errs := rulefmt.ParseFile(path, false, model.UTF8Validation, p, slog.New(slog.NewTextHandler(io.Discard, nil)))
	var problems []string
	for _, err := range errs {
		problems = append(problems, err.Error())
	}
	if groups == nil {
		return problems
	}
	alerts := 0
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			where := fmt.Sprintf("%s: group %s, rule %s%s", path, g.Name, r.Alert, r.Record)
			e, err := p.ParseExpr(r.Expr)
			if err != nil {
				continue // rulefmt reported it
			}
			problems = append(problems, checkNames(where, r.Expr, e, known)...)
			if r.Alert == "" {
				continue
			}
			alerts++
			if s := r.Labels["severity"]; s != "page" && s != "ticket" {
				problems = append(problems, fmt.Sprintf("%s: severity %q; want page or ticket", where, s))
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				problems = append(problems, where+": needs a summary and a description annotation")
			}
		}
	}
	if alerts == 0 {
		problems = append(problems, path+": no alerting rules")
	}
	return problems
}

// grafanaVariable matches Grafana's template variables in a query.
var grafanaVariable = regexp.MustCompile(`\$\{?(__rate_interval|__interval|__range|[a-z_]+)\}?`)

// CheckDashboard decodes a Grafana dashboard strictly into Grafana's own
// schema (grafana-foundation-sdk, generated from Grafana's dashboard
// kind: an unknown field, a wrong type or a panel option a plugin does not
// have fails), and parses every Prometheus query with PromQL's parser
// (template variables replaced) checking that its metrics are documented.
func CheckDashboard(path string, known map[string]bool) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return []string{err.Error()}
	}
	plugins.RegisterDefaultPlugins()
	//lint:ignore SA1019 the classic dashboard JSON (what Grafana's import and provisioning read) is this schema; dashboardv2 is the newer API resource.
	var d dashboard.Dashboard
	if err := buildError(d.UnmarshalJSONStrict(b)); err != nil {
		return []string{fmt.Sprintf("%s: not a dashboard Grafana's schema accepts: %v", path, err)}
	}
	var problems []string
	if err := buildError(d.Validate()); err != nil {
		problems = append(problems, fmt.Sprintf("%s: %v", path, err))
	}
	if d.Uid == nil || *d.Uid == "" || d.Title == nil || *d.Title == "" {
		problems = append(problems, path+": needs a uid and a title")
	}
	// The SDK checks every field, but (v0.0.22) its strict decoding drops
	// each panel it accepted (an empty error list returned as a non-nil
	// error), so the queries are read from the JSON itself.
	var raw struct {
		Panels []rawPanel `json:"panels"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return append(problems, fmt.Sprintf("%s: %v", path, err))
	}
	p := parser.NewParser(parser.Options{})
	queries := 0
	var walk func(panels []rawPanel)
	walk = func(panels []rawPanel) {
		for _, panel := range panels {
			walk(panel.Panels)
			if panel.Type == "row" {
				continue
			}
			if _, ok := cog.ConfigForPanelcfgVariant(panel.Type); !ok {
				problems = append(problems, fmt.Sprintf("%s: panel %q: type %q is not a Grafana panel plugin", path, panel.Title, panel.Type))
			}
			for i, t := range panel.Targets {
				where := fmt.Sprintf("%s: panel %q, target %d", path, panel.Title, i)
				if t.Datasource.Type != "prometheus" || t.Expr == "" {
					problems = append(problems, where+": not a Prometheus query")
					continue
				}
				queries++
				expr := grafanaVariable.ReplaceAllStringFunc(t.Expr, func(v string) string {
					if strings.Contains(v, "interval") || strings.Contains(v, "range") {
						return "5m"
					}
					return ".*"
				})
				e, err := p.ParseExpr(expr)
				if err != nil {
					problems = append(problems, fmt.Sprintf("%s: %q: %v", where, t.Expr, err))
					continue
				}
				problems = append(problems, checkNames(where, t.Expr, e, known)...)
			}
		}
	}
	walk(raw.Panels)
	if queries == 0 {
		problems = append(problems, path+": no Prometheus queries")
	}
	return problems
}

// buildError is err, or nil for the empty list of problems the SDK returns
// as a non-nil error when there are none.
func buildError(err error) error {
	var be cog.BuildErrors
	if errors.As(err, &be) && len(be) == 0 {
		return nil
	}
	return err
}

// rawPanel is what CheckDashboard reads of a panel.
type rawPanel struct {
	Type    string     `json:"type"`
	Title   string     `json:"title"`
	Panels  []rawPanel `json:"panels"`
	Targets []struct {
		Expr       string `json:"expr"`
		Datasource struct {
			Type string `json:"type"`
		} `json:"datasource"`
	} `json:"targets"`
}
