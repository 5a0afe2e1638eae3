// Package daemon is what every calmline command does around its services:
// signals become context cancellation, telemetry comes from flags, the
// tenants file is loaded and reloaded (on change or SIGHUP), TLS
// certificates are loaded and reloaded (on SIGHUP), and each
// listener announces itself with one line once it is ready, so that scripts
// can start a stack on port 0 and read where it listens.
package daemon

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/calmline/calmline/lib/identity"
	"github.com/calmline/calmline/lib/telemetry"
	"github.com/calmline/calmline/lib/tenant"
)

// Flags are the settings every command shares.
type Flags struct {
	Telemetry   telemetry.Options
	TenantsFile string
	// TLS names the certificate files of the listeners and of outgoing
	// gRPC.
	TLS TLSFlags
	// ServiceSecretFile names the deployment secret proving this
	// service's identity on internal RPCs (lib/identity); else the
	// secret comes from $CALMLINE_SERVICE_SECRET.
	ServiceSecretFile string
}

// Register adds the flags to fs; the tenants flag only when the command
// needs tenants.
func (f *Flags) Register(fs *flag.FlagSet, tenants bool) {
	f.Telemetry.RegisterFlags(fs)
	f.TLS.Register(fs)
	fs.StringVar(&f.ServiceSecretFile, "service-secret-file", os.Getenv("CALMLINE_SERVICE_SECRET_FILE"),
		"deployment secret proving this service to the others on internal gRPC (current secret first, previous second during a rotation; re-read when it changes); else $"+identity.EnvSecret+" (default $CALMLINE_SERVICE_SECRET_FILE)")
	if tenants {
		fs.StringVar(&f.TenantsFile, "tenants", "tenants.yaml", "tenants file (re-read when it changes or on SIGHUP)")
	}
}

// Env is a running command's environment.
type Env struct {
	// Ctx ends on SIGINT or SIGTERM.
	Ctx       context.Context
	Telemetry *telemetry.Telemetry
	// Tenants is nil unless a tenants file was given.
	Tenants *tenant.Registry
	// TLS holds the listeners' (Server) and outgoing gRPC's (Client) TLS
	// configurations, each nil when not configured; their key pairs are
	// re-read on SIGHUP.
	TLS *TLS
	// Identity is the deployment secret of --service-secret-file or
	// $CALMLINE_SERVICE_SECRET; nil when neither is set (see
	// RequireIdentity).
	Identity *identity.Keyring

	stop context.CancelFunc
	wg   sync.WaitGroup
}

// Start sets the environment up for the named service.
func Start(name string, f Flags) (*Env, error) {
	tlsConf, err := f.TLS.Load()
	if err != nil {
		return nil, err
	}
	var id *identity.Keyring
	if f.ServiceSecretFile != "" {
		id, err = identity.LoadFile(f.ServiceSecretFile)
	} else {
		id, err = identity.FromEnv(identity.EnvSecret)
	}
	if err != nil {
		return nil, err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	f.Telemetry.ServiceName = name
	tel, err := telemetry.New(ctx, f.Telemetry)
	if err != nil {
		stop()
		return nil, err
	}
	e := &Env{Ctx: ctx, Telemetry: tel, TLS: tlsConf, Identity: id, stop: stop}
	e.WatchTLS(tlsConf)
	if f.TenantsFile != "" {
		reg, err := tenant.Load(f.TenantsFile)
		if err != nil {
			e.Close()
			return nil, err
		}
		e.Tenants = reg
		e.WatchTenants()
	}
	return e, nil
}

// RequireIdentity returns an error unless the command can check its
// callers (verifies: it serves internal methods) and prove itself (proves:
// it calls them): a deployment secret, or mTLS — client CAs on the
// listener to verify, a client certificate on outgoing gRPC to prove.
// Service identity is on by default: a per-service command without either
// would refuse every internal call or be refused, so it does not start.
func (e *Env) RequireIdentity(f Flags, verifies, proves bool) error {
	if e.Identity != nil || (!verifies || f.TLS.ClientCA != "") && (!proves || f.TLS.BackendCert != "") {
		return nil
	}
	return fmt.Errorf("service identity: give --service-secret-file or $%s (the deployment secret shared by the services; docs/security.md), or mTLS (--tls-client-ca to check callers, --backend-cert to prove this service)", identity.EnvSecret)
}

// WatchTenants reloads Tenants on change or SIGHUP until Close.
func (e *Env) WatchTenants() {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reload := make(chan struct{})
	e.wg.Add(2)
	go func() {
		defer e.wg.Done()
		defer signal.Stop(hup)
		for {
			select {
			case <-hup:
				select {
				case reload <- struct{}{}:
				case <-e.Ctx.Done():
					return
				}
			case <-e.Ctx.Done():
				return
			}
		}
	}()
	go func() {
		defer e.wg.Done()
		e.Tenants.Watch(e.Ctx, 2*time.Second, reload, e.Telemetry.Logger)
	}()
}

// Close stops watching and flushes telemetry.
func (e *Env) Close() {
	e.stop()
	e.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e.Telemetry.Shutdown(ctx)
}

// Listen opens a TCP listener; port 0 picks a free port.
func Listen(addr string) (net.Listener, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return lis, nil
}

// Announce prints the line that says a service listens at addr:
//
//	calmline: ready service=gateway addr=127.0.0.1:8080
func Announce(w io.Writer, service string, addr net.Addr) {
	fmt.Fprintf(w, "calmline: ready service=%s addr=%s\n", service, addr)
}
