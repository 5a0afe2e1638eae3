package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/calmline/calmline/cmd/capacity"
)

func init() {
	commands["capacity"] = command{
		summary: "turn measured per-call costs into instances, bandwidth and database load for N calls",
		run:     capacityCmd,
	}
}

func capacityCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("calmline capacity", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := capacity.DefaultOptions()
	calls := fs.String("calls", "", "concurrent calls, or a comma-separated list (default: a table for 150, 1000, 10000 and 100000)")
	inputs := fs.String("inputs", "", "data file of measured inputs (default: the embedded cmd/capacity/measured.json)")
	fs.Float64Var(&o.Cores, "cores", o.Cores, "cores per instance (pod or VM)")
	fs.Float64Var(&o.Target, "target", o.Target, "CPU utilisation to plan each instance for, 0-1")
	every := fs.Duration("checkpoint-every", time.Duration(o.CheckpointEvery*float64(time.Second)), "fullcall's --fullcall-checkpoint-every")
	fs.BoolVar(&o.TLS, "tls", o.TLS, "count TLS record overhead on the PBX connections")
	fs.BoolVar(&o.AppGateway, "appgw", false, "an Azure Application Gateway v2 (L7) in front of the gateways: count its instance limit")
	fs.IntVar(&o.MinInstances, "min-instances", o.MinInstances, "instances of each service at least (redundancy)")
	asJSON := fs.Bool("json", false, "print the plans as JSON")
	showInputs := fs.Bool("show-inputs", false, "list the inputs with their sources and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "calmline capacity: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	o.CheckpointEvery = every.Seconds()
	data := capacity.Measured
	if *inputs != "" {
		b, err := os.ReadFile(*inputs)
		if err != nil {
			fmt.Fprintln(stderr, "calmline capacity:", err)
			return 1
		}
		data = b
	}
	in, err := capacity.Parse(data)
	if err != nil {
		fmt.Fprintln(stderr, "calmline capacity:", err)
		return 1
	}
	if *showInputs {
		if err := capacity.WriteInputs(stdout, in); err != nil {
			return 1
		}
		return 0
	}
	levels := []int{150, 1000, 10000, 100000}
	if *calls != "" {
		levels = nil
		for _, f := range strings.Split(*calls, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(strings.ReplaceAll(f, "_", "")))
			if err != nil || n < 1 {
				fmt.Fprintf(stderr, "calmline capacity: --calls %q: want a positive whole number of calls\n", f)
				return 2
			}
			levels = append(levels, n)
		}
	}
	var plans []capacity.Plan
	for _, n := range levels {
		p, err := capacity.Compute(in, o, n)
		if err != nil {
			fmt.Fprintln(stderr, "calmline capacity:", err)
			return 2
		}
		plans = append(plans, p)
	}
	switch {
	case *asJSON:
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(plans)
	case len(plans) == 1:
		err = capacity.WriteDetail(stdout, in, o, plans[0])
	default:
		err = capacity.WriteTable(stdout, plans)
	}
	if err != nil {
		fmt.Fprintln(stderr, "calmline capacity:", err)
		return 1
	}
	return 0
}
