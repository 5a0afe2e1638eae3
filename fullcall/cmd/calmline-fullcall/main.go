// Command calmline-fullcall runs calmline's whole-call service on its own.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/calmline/calmline/fullcall"
	"github.com/calmline/calmline/lib/daemon"
)

func main() {
	o := fullcall.DefaultOptions()
	var df daemon.Flags
	fs := flag.NewFlagSet("calmline-fullcall", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:9092", "listen address for gRPC and HTTP (REST API, health, metrics); port 0 picks one")
	fs.StringVar(&o.DataDir, "data-dir", o.DataDir, "directory of the embedded SQLite database")
	fs.StringVar(&o.Database, "database", "", "report store: sqlite:PATH or postgres://... (default DATA-DIR/fullcall.db)")
	fs.Int64Var(&o.MaxUploadBytes, "max-upload-bytes", o.MaxUploadBytes, "largest recording analysed synchronously; larger ones become jobs")
	fs.Int64Var(&o.MaxJobBytes, "max-job-bytes", o.MaxJobBytes, "largest recording queued as a job (upload or spool file)")
	fs.IntVar(&o.MaxCalls, "max-calls", o.MaxCalls, "live calls this instance accepts")
	fs.DurationVar(&o.ShutdownGrace, "shutdown-grace", o.ShutdownGrace, "how long a stop waits for streams to end")
	fs.DurationVar(&o.CheckpointEvery, "checkpoint-every", o.CheckpointEvery, "audio between durable checkpoints of a live call")
	fs.DurationVar(&o.RealtimeWait, "realtime-wait", o.RealtimeWait, "audio of a live call held waiting for realtime's analysis of it before analysing it here (1s to 20s)")
	fs.DurationVar(&o.OrphanAfter, "orphan-after", o.OrphanAfter, "how long an abandoned call waits for a resume before its report is stored as incomplete")
	fs.StringVar(&o.EscalationAddr, "escalation", "", "gRPC address of escalation, to record each live call with its care service")
	fs.IntVar(&o.Workers, "workers", o.Workers, "batch jobs (uploads, spool files) analysed at once")
	fs.IntVar(&o.MaxPendingJobs, "max-pending-jobs", o.MaxPendingJobs, "queued and running jobs per tenant before uploads are refused (429) and spool files wait")
	fs.StringVar(&o.SpoolDir, "spool-dir", "", "spool directory watched for recordings: DIR/TENANT/incoming (off when empty)")
	fs.StringVar(&o.SpoolName, "spool-name", o.SpoolName, "the spool's name in the job queue: the same for instances sharing the directory")
	fs.StringVar(&o.PublicURL, "public-url", "", "base URL of this service in job callbacks (https://fullcall.example.com)")
	fs.DurationVar(&o.RetentionEvery, "retention-every", o.RetentionEvery, "how often the retention job runs")
	df.Register(fs, true)
	fs.Parse(os.Args[1:])
	if err := run(o, df, *addr); err != nil {
		fmt.Fprintln(os.Stderr, "calmline-fullcall:", err)
		os.Exit(1)
	}
}

func run(o fullcall.Options, df daemon.Flags, addr string) error {
	env, err := daemon.Start("calmline-fullcall", df)
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
	o.Tenants = env.Tenants
	s, err := fullcall.New(env.Ctx, o)
	if err != nil {
		return err
	}
	lis, err := daemon.Listen(addr)
	if err != nil {
		return err
	}
	daemon.Announce(os.Stdout, "fullcall", lis.Addr())
	return s.Serve(env.Ctx, lis)
}
