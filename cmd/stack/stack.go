// Package stack runs several calmline services in one process — all four by
// default, as `calmline serve` and `make run` do. Co-located services still
// talk to each other over their real gRPC interfaces on loopback, so the
// demo, the end-to-end tests and a production split run the same code.
package stack

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/calmline/calmline/console"
	"github.com/calmline/calmline/escalation"
	"github.com/calmline/calmline/fullcall"
	"github.com/calmline/calmline/gateway"
	"github.com/calmline/calmline/lib/daemon"
	"github.com/calmline/calmline/lib/identity"
	"github.com/calmline/calmline/lib/telemetry"
	"github.com/calmline/calmline/lib/tenant"
	"github.com/calmline/calmline/realtime"
)

// Service names.
const (
	Gateway    = "gateway"
	Realtime   = "realtime"
	Fullcall   = "fullcall"
	Escalation = "escalation"
)

// Console is the supervisor console: not one of All, it runs when
// Options.Console is set (calmline serve --console-addr).
const Console = "console"

// All lists every service in start order: a service starts after those it
// calls, and stops before them.
var All = []string{Escalation, Fullcall, Realtime, Gateway}

// Options configures a stack.
type Options struct {
	// Services to run here; the others are reached at their Remote
	// address.
	Services []string
	// Listen gives each local service's listen address ("127.0.0.1:0"
	// picks a free port).
	Listen map[string]string
	// Remote gives the gRPC address of services that run elsewhere.
	Remote    map[string]string
	DataDir   string
	Tenants   *tenant.Registry
	Telemetry *telemetry.Telemetry
	// Announce receives one line per listener once it is open:
	//	calmline: ready service=NAME addr=HOST:PORT
	Announce io.Writer
	// TLS, when set, makes every local listener TLS-only; BackendTLS,
	// when set, is used for the gRPC calls between services (the local
	// ones too, so that an all-in-one process runs the production
	// set-up).
	TLS        *tls.Config
	BackendTLS *tls.Config
	// Identity is the deployment secret the services prove themselves
	// with on internal gRPC (lib/identity). When nil it is read from
	// DataDir/service-identity.secret, created with a new random secret
	// on first start (like the demo key); without a DataDir, a secret
	// held in memory serves the services of this process only.
	Identity *identity.Keyring
	// AdminToken, when set, serves /debug/pprof/* on every local service's
	// port to callers that send it as a bearer token (and POST
	// /admin/drain on the gateway's, when Gateway does not set its own).
	AdminToken string
	// Gateway, Realtime, Fullcall and Escalation start from these when
	// set, else from each package's DefaultOptions.
	Gateway    *gateway.Options
	Realtime   *realtime.Options
	Fullcall   *fullcall.Options
	Escalation *escalation.Options
	// Console, when set, runs the supervisor console on Listen[Console];
	// its gateways, fullcall and escalation default to the local (or
	// Remote) ones. It starts last and stops first.
	Console *console.Options
}

// ParseServices checks a comma-separated list of services. "console" may
// be listed too; it is left out of the list (the console runs when
// Options.Console is set) and reported by withConsole.
func ParseServices(s string) (svcs []string, withConsole bool, err error) {
	if s == "" || s == "all" {
		return All, false, nil
	}
	out := []string{}
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		if name == Console {
			withConsole = true
			continue
		}
		if !slices.Contains(All, name) {
			return nil, false, fmt.Errorf("unknown service %q (want %s, console)", name, strings.Join(All, ", "))
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out, withConsole, nil
}

type server interface {
	Serve(context.Context, net.Listener) error
	Shutdown(context.Context) error
}

// Stack is a set of running services.
type Stack struct {
	o Options
	// gatewayStop bounds the gateway's shutdown: its drain and final stop.
	gatewayStop time.Duration
	addrs       map[string]net.Addr
	servers     map[string]server
	lis         map[string]net.Listener
}

// New opens every local service's listener (so that each knows the others'
// addresses) and builds the services.
func New(ctx context.Context, o Options) (*Stack, error) {
	if o.Services == nil {
		o.Services = All // an empty, non-nil list runs only the console
	}
	if o.Telemetry == nil {
		o.Telemetry = telemetry.Discard()
	}
	if o.Announce == nil {
		o.Announce = io.Discard
	}
	if o.Identity == nil {
		var err error
		if o.DataDir != "" {
			o.Identity, err = identity.LoadOrCreate(filepath.Join(o.DataDir, identity.SecretFileName))
		} else {
			o.Identity, err = memoryKeyring()
		}
		if err != nil {
			return nil, err
		}
	}
	s := &Stack{o: o, addrs: map[string]net.Addr{}, servers: map[string]server{}, lis: map[string]net.Listener{}}
	local := func(name string) bool { return slices.Contains(o.Services, name) }
	for _, name := range All {
		if !local(name) {
			continue
		}
		addr := o.Listen[name]
		if addr == "" {
			addr = "127.0.0.1:0"
		}
		lis, err := daemon.Listen(addr)
		if err != nil {
			s.closeListeners()
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		s.lis[name] = lis
		s.addrs[name] = lis.Addr()
	}
	target := func(name string) (string, error) {
		if a, ok := s.addrs[name]; ok {
			return a.String(), nil
		}
		if r := o.Remote[name]; r != "" {
			return r, nil
		}
		return "", fmt.Errorf("%s is neither run here nor given a remote address", name)
	}
	// Each service reports as itself (service.name=calmline-NAME) and its
	// port exposes only its own series; the process's own series (go_*,
	// process_*) go with the gateway's when it runs here, else with the
	// first service started.
	processOwner := ""
	for _, name := range All {
		if local(name) && (processOwner == "" || name == Gateway) {
			processOwner = name
		}
	}
	var err error
	for _, name := range All {
		if !local(name) || err != nil {
			continue
		}
		var tel *telemetry.Telemetry
		if tel, err = o.Telemetry.Service("calmline-"+name, name == processOwner); err != nil {
			break
		}
		metrics := tel.MetricsHandler()
		switch name {
		case Escalation:
			eo := escalation.DefaultOptions()
			if o.Escalation != nil {
				eo = *o.Escalation
			}
			eo.Logger, eo.MeterProvider, eo.TracerProvider, eo.Propagator, eo.Metrics = tel.Logger, tel.MeterProvider, tel.TracerProvider, tel.Propagator, metrics
			eo.TLS = o.TLS
			eo.Identity = o.Identity
			if o.AdminToken != "" {
				eo.AdminToken = o.AdminToken
			}
			eo.Tenants, eo.DataDir = o.Tenants, o.DataDir
			s.servers[name], err = escalation.New(ctx, eo)
		case Fullcall:
			fo := fullcall.DefaultOptions()
			if o.Fullcall != nil {
				fo = *o.Fullcall
			}
			fo.Logger, fo.MeterProvider, fo.TracerProvider, fo.Propagator, fo.Metrics = tel.Logger, tel.MeterProvider, tel.TracerProvider, tel.Propagator, metrics
			fo.TLS = o.TLS
			fo.Identity = o.Identity
			if o.AdminToken != "" {
				fo.AdminToken = o.AdminToken
			}
			fo.BackendTLS = o.BackendTLS
			fo.Tenants, fo.DataDir = o.Tenants, o.DataDir
			if fo.EscalationAddr == "" {
				// Each live call's report goes to escalation's care
				// record, when there is an escalation to reach.
				if addr, terr := target(Escalation); terr == nil {
					fo.EscalationAddr = addr
				} else {
					tel.Logger.Warn("fullcall runs without escalation: no care record of finished calls")
				}
			}
			s.servers[name], err = fullcall.New(ctx, fo)
		case Realtime:
			ro := realtime.DefaultOptions()
			if o.Realtime != nil {
				ro = *o.Realtime
			}
			ro.Logger, ro.MeterProvider, ro.TracerProvider, ro.Propagator, ro.Metrics = tel.Logger, tel.MeterProvider, tel.TracerProvider, tel.Propagator, metrics
			ro.TLS = o.TLS
			ro.Identity = o.Identity
			if o.AdminToken != "" {
				ro.AdminToken = o.AdminToken
			}
			ro.BackendTLS = o.BackendTLS
			if ro.EscalationAddr, err = target(Escalation); err != nil {
				// Alerts then reach only the gateway; say so loudly.
				tel.Logger.Warn("realtime runs without escalation: alerts reach only the gateway")
				ro.EscalationAddr, err = "", nil
			}
			s.servers[name], err = realtime.New(ro)
		case Gateway:
			gwo := gateway.DefaultOptions()
			if o.Gateway != nil {
				gwo = *o.Gateway
			}
			gwo.Logger, gwo.MeterProvider, gwo.TracerProvider, gwo.Propagator, gwo.Metrics = tel.Logger, tel.MeterProvider, tel.TracerProvider, tel.Propagator, metrics
			gwo.TLS = o.TLS
			gwo.Identity = o.Identity
			if gwo.AdminToken == "" {
				gwo.AdminToken = o.AdminToken
			}
			gwo.BackendTLS = o.BackendTLS
			gwo.Tenants = o.Tenants
			s.gatewayStop = gwo.DrainTimeout + gwo.ShutdownGrace
			if gwo.RealtimeAddr, err = target(Realtime); err != nil {
				break
			}
			if gwo.FullcallAddr, err = target(Fullcall); err != nil {
				break
			}
			s.servers[name], err = gateway.New(gwo)
		}
		if err != nil {
			err = fmt.Errorf("%s: %w", name, err)
		}
	}
	if err == nil && o.Console != nil {
		err = s.newConsole(target)
	}
	if err != nil {
		s.closeListeners()
		return nil, err
	}
	// The listeners are open: connections wait in the backlog until Serve.
	for _, name := range append(All[:len(All):len(All)], Console) {
		if l, ok := s.lis[name]; ok {
			daemon.Announce(o.Announce, name, l.Addr())
		}
	}
	return s, nil
}

// newConsole builds the console on its own listener, reading the local
// services unless its options name others.
func (s *Stack) newConsole(target func(string) (string, error)) error {
	co := *s.o.Console
	// The console reports as itself on its own port; it carries the
	// process's own series only when it runs alone (--services=console).
	alone := !slices.ContainsFunc(All, func(n string) bool { _, ok := s.servers[n]; return ok })
	tel, err := s.o.Telemetry.Service("calmline-console", alone)
	if err != nil {
		return fmt.Errorf("console: %w", err)
	}
	co.Logger, co.MeterProvider, co.Metrics = tel.Logger, tel.MeterProvider, tel.MetricsHandler()
	co.Tenants = s.o.Tenants
	co.TLS = s.o.TLS
	co.BackendTLS = s.o.BackendTLS
	if len(co.Gateways) == 0 {
		a, ok := s.addrs[Gateway]
		if !ok {
			return errors.New("console: no gateway runs here: name the gateways (--console-gateways)")
		}
		co.Gateways = []string{a.String()}
	}
	if co.Fullcall == "" {
		if co.Fullcall, err = target(Fullcall); err != nil {
			return fmt.Errorf("console: %w (--console-fullcall)", err)
		}
		co.Fullcall, _, _ = strings.Cut(co.Fullcall, ",")
	}
	if co.Escalation == "" {
		if co.Escalation, err = target(Escalation); err != nil {
			return fmt.Errorf("console: %w (--console-escalation)", err)
		}
		co.Escalation, _, _ = strings.Cut(co.Escalation, ",")
	}
	addr := s.o.Listen[Console]
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	lis, err := daemon.Listen(addr)
	if err != nil {
		return fmt.Errorf("console: %w", err)
	}
	srv, err := console.New(co)
	if err != nil {
		lis.Close()
		return err
	}
	s.lis[Console], s.addrs[Console], s.servers[Console] = lis, lis.Addr(), srv
	return nil
}

func memoryKeyring() (*identity.Keyring, error) {
	secrets, err := identity.ParseSecrets(identity.NewSecret())
	if err != nil {
		return nil, err
	}
	return identity.NewKeyring(secrets...)
}

func (s *Stack) closeListeners() {
	for _, l := range s.lis {
		l.Close()
	}
}

// Identity returns the deployment secret the stack's services prove
// themselves with (tools that play a service in-process, like the
// benchmarks, use it).
func (s *Stack) Identity() *identity.Keyring { return s.o.Identity }

// Addr returns a local service's address.
func (s *Stack) Addr(name string) net.Addr { return s.addrs[name] }

// Serve runs the services until ctx ends or one fails, then stops them in
// reverse start order: the gateway first (it drains its calls, so fullcall
// stores their reports), escalation last (realtime's last alerts reach it).
func (s *Stack) Serve(ctx context.Context) error {
	runCtx, cancelRun := context.WithCancel(context.Background())
	defer cancelRun()
	var wg sync.WaitGroup
	errc := make(chan error, len(s.servers))
	for _, name := range append(All[:len(All):len(All)], Console) {
		srv, ok := s.servers[name]
		if !ok {
			continue
		}
		lis := s.lis[name]
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(runCtx, lis); err != nil {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	var errs []error
	errs = append(errs, err)
	if srv, ok := s.servers[Console]; ok {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			errs = append(errs, fmt.Errorf("console: shutdown: %w", err))
		}
		cancel()
	}
	for i := len(All) - 1; i >= 0; i-- {
		srv, ok := s.servers[All[i]]
		if !ok {
			continue
		}
		grace := 15 * time.Second
		if All[i] == Gateway {
			grace = s.gatewayStop
		}
		sctx, cancel := context.WithTimeout(context.Background(), grace)
		if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			errs = append(errs, fmt.Errorf("%s: shutdown: %w", All[i], err))
		}
		cancel()
	}
	wg.Wait()
	return errors.Join(errs...)
}
