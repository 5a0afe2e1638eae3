// Command calmline-realtime runs calmline's live scoring service on its own.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/calmline/calmline/lib/daemon"
	"github.com/calmline/calmline/realtime"
)

func main() {
	o := realtime.DefaultOptions()
	var df daemon.Flags
	fs := flag.NewFlagSet("calmline-realtime", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:9090", "listen address for gRPC and HTTP (health, metrics); port 0 picks one")
	fs.StringVar(&o.EscalationAddr, "escalation", "", "escalation gRPC address (host:port, comma-separated list or dns:///name:port); alerts go only to the gateway when empty")
	fs.IntVar(&o.MaxCalls, "max-calls", o.MaxCalls, "live calls this instance accepts")
	fs.DurationVar(&o.ShutdownGrace, "shutdown-grace", o.ShutdownGrace, "how long a stop waits for streams to end")
	df.Register(fs, false)
	fs.Parse(os.Args[1:])
	if err := run(o, df, *addr); err != nil {
		fmt.Fprintln(os.Stderr, "calmline-realtime:", err)
		os.Exit(1)
	}
}

func run(o realtime.Options, df daemon.Flags, addr string) error {
	env, err := daemon.Start("calmline-realtime", df)
	if err != nil {
		return err
	}
	defer env.Close()
	tel := env.Telemetry
	o.Logger, o.MeterProvider, o.TracerProvider, o.Propagator = tel.Logger, tel.MeterProvider, tel.TracerProvider, tel.Propagator
	o.Metrics = tel.MetricsHandler()
	o.TLS = env.TLS.Server
	if err := env.RequireIdentity(df, true, true); err != nil {
		return err
	}
	o.Identity = env.Identity
	o.BackendTLS = env.TLS.Client
	s, err := realtime.New(o)
	if err != nil {
		return err
	}
	lis, err := daemon.Listen(addr)
	if err != nil {
		return err
	}
	daemon.Announce(os.Stdout, "realtime", lis.Addr())
	return s.Serve(env.Ctx, lis)
}
