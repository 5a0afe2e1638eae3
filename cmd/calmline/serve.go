package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/calmline/calmline/cmd/stack"
	"github.com/calmline/calmline/console"
	"github.com/calmline/calmline/escalation"
	"github.com/calmline/calmline/fullcall"
	"github.com/calmline/calmline/gateway"
	"github.com/calmline/calmline/lib/daemon"
	"github.com/calmline/calmline/lib/tenant"
)

func init() {
	commands["serve"] = command{
		summary: "run the services (all four by default) in one process",
		run:     serve,
	}
}

func serve(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("calmline serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var df daemon.Flags
	df.Register(fs, false)
	services := fs.String("services", "all", "comma-separated services to run here: gateway, realtime, fullcall, escalation (and console, with --console-addr)")
	dataDir := fs.String("data-dir", "data", "data directory (SQLite files, the demo tenants file)")
	tenantsFile := fs.String("tenants", "", "tenants file (default DATA-DIR/tenants.yaml, created with a demo tenant when missing)")
	listen := map[string]*string{}
	remote := map[string]*string{}
	defaults := map[string]string{stack.Gateway: "127.0.0.1:8080", stack.Realtime: "127.0.0.1:9090", stack.Fullcall: "127.0.0.1:9092", stack.Escalation: "127.0.0.1:9094"}
	for _, name := range stack.All {
		listen[name] = fs.String(name+"-addr", defaults[name], "listen address of "+name+" when it runs here (port 0 picks one)")
		if name != stack.Gateway {
			remote[name] = fs.String(name, "", "gRPC address of "+name+" when it runs elsewhere")
		}
	}
	gwo := gateway.DefaultOptions()
	fs.DurationVar(&gwo.DrainTimeout, "drain-timeout", gwo.DrainTimeout, "how long live calls may go on after SIGTERM before they are closed with 1001")
	fs.IntVar(&gwo.PoolSize, "pool-size", gwo.PoolSize, "HTTP/2 connections from the gateway to each backend address")
	eo := escalation.DefaultOptions()
	fs.IntVar(&eo.DeliveryWorkers, "delivery-workers", eo.DeliveryWorkers, "escalation: outbound requests (webhooks, warnings, transfers) in flight at once")
	fs.IntVar(&eo.MaxBacklog, "max-outbox", eo.MaxBacklog, "escalation: undelivered requests per tenant before new alerts are refused (0: no bound)")
	fs.StringVar(&eo.Database, "escalation-database", "", "escalation's store: sqlite:PATH or postgres://... (default DATA-DIR/escalation.db); instances sharing a PostgreSQL database share the outbox")
	fco := fullcall.DefaultOptions()
	fs.StringVar(&fco.Database, "fullcall-database", "", "fullcall's store: sqlite:PATH or postgres://... (default DATA-DIR/fullcall.db); instances sharing it share live calls and the batch queue")
	spoolDir := fs.String("fullcall-spool-dir", "", "spool directory fullcall watches for recordings, DIR/TENANT/incoming (default DATA-DIR/spool; \"off\" for none)")
	fs.StringVar(&fco.SpoolName, "fullcall-spool-name", fco.SpoolName, "the spool's name in the job queue: the same for instances sharing the directory")
	fs.IntVar(&fco.Workers, "fullcall-workers", fco.Workers, "batch jobs (uploads, spool files) fullcall analyses at once")
	fs.DurationVar(&fco.CheckpointEvery, "fullcall-checkpoint-every", fco.CheckpointEvery, "audio between durable checkpoints of a live call")
	fs.DurationVar(&fco.RealtimeWait, "fullcall-realtime-wait", fco.RealtimeWait, "audio of a live call fullcall holds waiting for realtime's analysis of it before analysing it itself (1s to 20s)")
	var gf gateway.Flags
	gf.Register(fs)
	co := console.DefaultOptions()
	consoleAddr := fs.String("console-addr", "", "listen address of the supervisor console (off when empty; make run uses 127.0.0.1:8088)")
	consoleGateways := fs.String("console-gateways", "", "console: the gateways whose live feeds make the wall: HOST:PORT,... or dns:///NAME:PORT (default: the local gateway)")
	fs.StringVar(&co.Fullcall, "console-fullcall", "", "console: fullcall's REST address, HOST:PORT or URL (default: the local or --fullcall one)")
	fs.StringVar(&co.Escalation, "console-escalation", "", "console: escalation's REST address, HOST:PORT or URL (default: the local or --escalation one)")
	fs.DurationVar(&co.SessionTTL, "console-session-ttl", co.SessionTTL, "console: how long a sign-in lasts")
	cpuProfile := fs.String("cpu-profile", "", "write a CPU profile of the process to this file until it stops (for go tool pprof)")
	demoHook := fs.String("demo-webhook-receiver", "", "also run a demo webhook receiver on this address (port 0 picks one) that verifies and prints the demo tenant's escalations; \"make run\" uses "+strings.TrimSuffix(strings.TrimPrefix(tenant.DemoWebhookURL, "http://"), demoReceiverPath))
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := gf.Apply(&gwo); err != nil {
		fmt.Fprintln(stderr, "calmline serve:", err)
		return 2
	}
	switch *spoolDir {
	case "":
		fco.SpoolDir = filepath.Join(*dataDir, "spool")
	case "off":
	default:
		fco.SpoolDir = *spoolDir
	}
	svcs, withConsole, err := stack.ParseServices(*services)
	if err != nil {
		fmt.Fprintln(stderr, "calmline serve:", err)
		return 2
	}
	var cop *console.Options
	switch {
	case *consoleAddr != "":
		if *consoleGateways != "" {
			co.Gateways = strings.Split(*consoleGateways, ",")
		}
		cop = &co
	case withConsole:
		fmt.Fprintln(stderr, "calmline serve: --services lists console: give it --console-addr")
		return 2
	}
	stopProfile, err := startCPUProfile(*cpuProfile)
	if err != nil {
		fmt.Fprintln(stderr, "calmline serve:", err)
		return 1
	}
	defer stopProfile()
	listen[stack.Console] = consoleAddr
	if err := runServe(df, svcs, *dataDir, *tenantsFile, *demoHook, listen, remote, &gwo, &eo, &fco, cop, stdout); err != nil {
		fmt.Fprintln(stderr, "calmline serve:", err)
		return 1
	}
	return 0
}

func runServe(df daemon.Flags, svcs []string, dataDir, tenantsFile, demoHook string, listen, remote map[string]*string, gwo *gateway.Options, eo *escalation.Options, fco *fullcall.Options, cop *console.Options, stdout io.Writer) error {
	var demoKey string
	// The demo tenant's escalations go to the demo webhook receiver,
	// signed with a secret kept in the data directory.
	hook := tenant.DemoWebhook{URL: tenant.DemoWebhookURL, SecretFile: filepath.Join(dataDir, "demo-webhook.secret")}
	if abs, err := filepath.Abs(hook.SecretFile); err == nil {
		hook.SecretFile = abs
	}
	if tenantsFile == "" || demoHook != "" {
		if err := os.MkdirAll(dataDir, 0o755); err != nil {
			return err
		}
		secret, err := ensureDemoSecret(hook.SecretFile)
		if err != nil {
			return err
		}
		if demoHook != "" {
			rcv, err := startDemoReceiver(demoHook, secret, stdout)
			if err != nil {
				return err
			}
			defer rcv.close()
			hook.URL = rcv.URL()
			fmt.Fprintf(stdout, "calmline: demo webhook receiver at %s prints the demo tenant's escalations\n", hook.URL)
		}
	}
	if tenantsFile == "" {
		tenantsFile = filepath.Join(dataDir, "tenants.yaml")
		key, created, err := tenant.EnsureDemo(tenantsFile, filepath.Join(dataDir, "demo.key"), hook)
		if err != nil {
			return err
		}
		demoKey = key
		if created {
			fmt.Fprintf(stdout, "calmline: created %s with a demo tenant\n", tenantsFile)
		}
	}
	needTenants := cop != nil || slices.ContainsFunc(svcs, func(s string) bool { return s != stack.Realtime })
	if needTenants {
		df.TenantsFile = tenantsFile
	}
	env, err := daemon.Start("calmline", df)
	if err != nil {
		return err
	}
	defer env.Close()
	env.Telemetry.SetGlobal()
	tlsConf := env.TLS
	o := stack.Options{
		Services:   svcs,
		Listen:     map[string]string{},
		Remote:     map[string]string{},
		DataDir:    dataDir,
		Tenants:    env.Tenants,
		Telemetry:  env.Telemetry,
		Announce:   stdout,
		Gateway:    gwo,
		Escalation: eo,
		Fullcall:   fco,
		Console:    cop,
		TLS:        tlsConf.Server,
		BackendTLS: tlsConf.Client,
		AdminToken: gwo.AdminToken,
		Identity:   env.Identity, // nil: the data directory's, created on first start
	}
	for name, v := range listen {
		o.Listen[name] = *v
	}
	for name, v := range remote {
		o.Remote[name] = *v
	}
	st, err := stack.New(env.Ctx, o)
	if err != nil {
		return err
	}
	ws, web := "ws", "http"
	if tlsConf.Server != nil {
		ws, web = "wss", "https"
	}
	if a := st.Addr(stack.Gateway); a != nil {
		fmt.Fprintf(stdout, "calmline: stream calls to %s://%s/ws/native\n", ws, a)
		fmt.Fprintf(stdout, "calmline: PBX protocols at %s://%s/ws/audiohook, /ws/twilio, /ws/asterisk (docs/protocols.md)\n", ws, a)
	}
	if a := st.Addr(stack.Fullcall); a != nil {
		fmt.Fprintf(stdout, "calmline: reports at %s://%s/api/v1/reports (REST) and %s (gRPC)\n", web, a, a)
	}
	if a := st.Addr(stack.Escalation); a != nil {
		fmt.Fprintf(stdout, "calmline: escalations at %s://%s/api/v1/escalations\n", web, a)
	}
	if a := st.Addr(stack.Console); a != nil {
		fmt.Fprintf(stdout, "calmline: supervisor console at %s://%s/ (sign in with an API key)\n", web, a)
	}
	if demoKey != "" {
		fmt.Fprintf(stdout, "calmline: demo tenant %q, API key %s (send it as \"Authorization: Bearer KEY\")\n", tenant.DemoTenantID, demoKey)
		if a := st.Addr(stack.Fullcall); a != nil {
			fmt.Fprintf(stdout, "calmline: try: curl -H 'Authorization: Bearer %s' %s://%s/api/v1/reports\n", demoKey, web, a)
		}
	}
	if a := st.Addr(stack.Fullcall); a != nil && fco.SpoolDir != "" {
		fmt.Fprintf(stdout, "calmline: recordings dropped into %s are analysed\n", filepath.Join(fco.SpoolDir, "TENANT", "incoming"))
	}
	return st.Serve(env.Ctx)
}
