// Command calmline-gateway runs calmline's WebSocket gateway on its own.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/calmline/calmline/gateway"
	"github.com/calmline/calmline/lib/daemon"
)

func main() {
	o := gateway.DefaultOptions()
	var df daemon.Flags
	var gf gateway.Flags
	fs := flag.NewFlagSet("calmline-gateway", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:8080", "listen address for WebSockets and HTTP (health, metrics); port 0 picks one")
	fs.StringVar(&o.RealtimeAddr, "realtime", "127.0.0.1:9090", "realtime gRPC address (host:port, comma-separated list or dns:///name:port)")
	fs.StringVar(&o.FullcallAddr, "fullcall", "127.0.0.1:9092", "fullcall gRPC address (host:port, comma-separated list or dns:///name:port)")
	fs.IntVar(&o.PoolSize, "pool-size", o.PoolSize, "HTTP/2 connections per backend address")
	fs.DurationVar(&o.Session.ChunkDuration, "chunk", 0, "audio per chunk sent to the backends (default 200ms; should divide a second)")
	fs.DurationVar(&o.Session.ChunkPhase, "chunk-phase", 0, "where chunks end past each multiple of --chunk (default 160ms: the voice model's latency, so no score waits for a chunk)")
	fs.DurationVar(&o.DrainTimeout, "drain-timeout", o.DrainTimeout, "how long live calls may go on after SIGTERM before they are closed with 1001")
	gf.Register(fs)
	df.Register(fs, true)
	fs.Parse(os.Args[1:])
	if err := gf.Apply(&o); err != nil {
		fmt.Fprintln(os.Stderr, "calmline-gateway:", err)
		os.Exit(2)
	}
	if err := run(o, df, *addr); err != nil {
		fmt.Fprintln(os.Stderr, "calmline-gateway:", err)
		os.Exit(1)
	}
}

func run(o gateway.Options, df daemon.Flags, addr string) error {
	env, err := daemon.Start("calmline-gateway", df)
	if err != nil {
		return err
	}
	defer env.Close()
	tel := env.Telemetry
	o.Logger, o.MeterProvider, o.TracerProvider, o.Propagator = tel.Logger, tel.MeterProvider, tel.TracerProvider, tel.Propagator
	o.Metrics = tel.MetricsHandler()
	o.TLS = env.TLS.Server
	if err := env.RequireIdentity(df, false, true); err != nil {
		return err
	}
	o.Identity = env.Identity
	o.BackendTLS = env.TLS.Client
	o.Tenants = env.Tenants
	s, err := gateway.New(o)
	if err != nil {
		return err
	}
	lis, err := daemon.Listen(addr)
	if err != nil {
		return err
	}
	daemon.Announce(os.Stdout, "gateway", lis.Addr())
	return s.Serve(env.Ctx, lis)
}
