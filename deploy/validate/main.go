// Command validate checks calmline's Kubernetes manifests offline: it
// decodes every document strictly into the official Kubernetes Go types
// (k8s.io/api; an unknown or duplicated field, a wrong type or a bad
// quantity fails) and checks the invariants a deployment of calmline
// depends on — probes on /readyz and /healthz, a termination grace that
// covers the gateway's drain, PodDisruptionBudgets, HPAs on live calls per
// pod, dns:/// backend targets that name headless Services, resource
// requests, a non-root read-only container, flags calmline serve has.
//
//	go run . [-calmline bin/calmline] DIR...
//	go run . -metrics docs/metrics.md -rules FILE -dashboard FILE
//
// The second form checks the operator's kit: Prometheus alerting rules
// parsed by Prometheus's own rule parser, a Grafana dashboard decoded
// strictly into Grafana's schema, and every metric either reads being one
// docs/metrics.md documents.
//
// It is its own module so that calmline's modules do not depend on
// k8s.io/api; `make validate-deploy` runs it.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(argv []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	bin := fs.String("calmline", "", "calmline binary: check that every argument is a flag of its serve command (`calmline serve -h`)")
	metricsDoc := fs.String("metrics", "", "docs/metrics.md: the documented series the rules and dashboards may read")
	var rules, dashboards []string
	fs.Func("rules", "a Prometheus rule file to check with Prometheus's rule parser (repeatable; needs -metrics)", func(s string) error { rules = append(rules, s); return nil })
	fs.Func("dashboard", "a Grafana dashboard JSON to check against Grafana's schema (repeatable; needs -metrics)", func(s string) error { dashboards = append(dashboards, s); return nil })
	if err := fs.Parse(argv); err != nil {
		return 2
	}
	if len(rules)+len(dashboards) > 0 {
		known, err := DocumentedMetrics(*metricsDoc)
		if err != nil {
			fmt.Fprintf(stderr, "validate: -metrics: %v\n", err)
			return 2
		}
		var problems []string
		for _, r := range rules {
			problems = append(problems, CheckRules(r, known)...)
		}
		for _, d := range dashboards {
			problems = append(problems, CheckDashboard(d, known)...)
		}
		for _, p := range problems {
			fmt.Fprintf(stderr, "validate: %s\n", p)
		}
		fmt.Fprintf(stdout, "%d rule files, %d dashboards checked against %d documented series: %d problems\n", len(rules), len(dashboards), len(known), len(problems))
		if len(problems) > 0 {
			return 1
		}
		if fs.NArg() == 0 {
			return 0
		}
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "usage: validate [-calmline BIN] DIR...")
		return 2
	}
	var o Options
	if *bin != "" {
		// serve -h prints the flags and exits 2 (flag.ErrHelp), so the
		// exit status says nothing: the flags found do.
		out, err := exec.Command(*bin, "serve", "-h").CombinedOutput()
		o.Flags = serveFlags(string(out))
		if !o.Flags["services"] {
			fmt.Fprintf(stderr, "validate: found no flags in %s serve -h (%v)\n", *bin, err)
			return 1
		}
	}
	failed := false
	for _, dir := range fs.Args() {
		objs, err := LoadDir(dir)
		if err != nil {
			fmt.Fprintf(stderr, "validate: %v\n", err)
			failed = true
		}
		problems := Check(objs, o)
		for _, p := range problems {
			fmt.Fprintf(stderr, "validate: %s: %s\n", dir, p)
		}
		failed = failed || len(problems) > 0
		counts := map[string]int{}
		for _, obj := range objs {
			counts[obj.Kind]++
		}
		fmt.Fprintf(stdout, "%s: %d objects decoded strictly (%v), %d problems\n", dir, len(objs), counts, len(problems))
	}
	if failed {
		return 1
	}
	return 0
}
