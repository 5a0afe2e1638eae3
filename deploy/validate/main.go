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
	if err := fs.Parse(argv); err != nil {
		return 2
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
