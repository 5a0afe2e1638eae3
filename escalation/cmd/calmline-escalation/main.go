// Command calmline-escalation runs calmline's escalation service on its own.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/calmline/calmline/escalation"
	"github.com/calmline/calmline/lib/daemon"
)

func main() {
	o := escalation.DefaultOptions()
	var df daemon.Flags
	fs := flag.NewFlagSet("calmline-escalation", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:9094", "listen address for gRPC and HTTP (REST API, health, metrics); port 0 picks one")
	fs.StringVar(&o.DataDir, "data-dir", o.DataDir, "directory of the embedded SQLite database")
	fs.StringVar(&o.Database, "database", "", "escalation store: sqlite:PATH or postgres://... (default DATA-DIR/escalation.db)")
	fs.DurationVar(&o.ShutdownGrace, "shutdown-grace", o.ShutdownGrace, "how long a stop waits for requests to end")
	fs.IntVar(&o.DeliveryWorkers, "delivery-workers", o.DeliveryWorkers, "outbound requests (webhooks, warnings, transfers) in flight at once")
	fs.IntVar(&o.MaxBacklog, "max-outbox", o.MaxBacklog, "undelivered requests per tenant before new alerts are refused (0: no bound)")
	df.Register(fs, true)
	fs.Parse(os.Args[1:])
	if err := run(o, df, *addr); err != nil {
		fmt.Fprintln(os.Stderr, "calmline-escalation:", err)
		os.Exit(1)
	}
}

func run(o escalation.Options, df daemon.Flags, addr string) error {
	env, err := daemon.Start("calmline-escalation", df)
	if err != nil {
		return err
	}
	defer env.Close()
	tel := env.Telemetry
	o.Logger, o.MeterProvider, o.TracerProvider, o.Propagator = tel.Logger, tel.MeterProvider, tel.TracerProvider, tel.Propagator
	o.Metrics = tel.MetricsHandler()
	o.TLS = env.TLS.Server
	if err := env.RequireIdentity(df, true, false); err != nil {
		return err
	}
	o.Identity = env.Identity
	o.Tenants = env.Tenants
	s, err := escalation.New(env.Ctx, o)
	if err != nil {
		return err
	}
	lis, err := daemon.Listen(addr)
	if err != nil {
		return err
	}
	daemon.Announce(os.Stdout, "escalation", lis.Addr())
	return s.Serve(env.Ctx, lis)
}
