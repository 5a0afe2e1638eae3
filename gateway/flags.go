package gateway

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/calmline/calmline/gateway/session"
	"github.com/calmline/calmline/lib/rpc"
)

// AdminTokenEnv is the environment variable that may hold the admin token
// (when no token file is given).
const AdminTokenEnv = "CALMLINE_ADMIN_TOKEN"

// Flags are the gateway's command-line settings that calmline-gateway and
// calmline serve share, beyond addresses and pool sizes.
type Flags struct {
	Pacing         string
	PacingLead     time.Duration
	RealtimeStall  time.Duration
	AdminTokenFile string
	Balancing      string
}

// Register adds the flags to fs.
func (f *Flags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.Pacing, "pacing", session.PaceThrottle, "what to do with a client sending audio faster than real time: throttle, refuse (close 4420) or off")
	fs.DurationVar(&f.PacingLead, "pacing-lead", 2*time.Second, "how far a call's audio may run ahead of the clock before pacing applies")
	fs.DurationVar(&f.RealtimeStall, "realtime-stall", 4*time.Second, "how long realtime may leave a call's flowing audio unanswered before the call moves to another instance (a hung instance); negative: never")
	fs.StringVar(&f.Balancing, "balancing", rpc.RoundRobin, "how new calls spread over the healthy realtime and fullcall addresses: "+rpc.RoundRobin+" or "+rpc.LeastLoaded+" (fewest streams open there from this gateway's connection)")
	fs.StringVar(&f.AdminTokenFile, "admin-token-file", "", "file holding the admin token, for POST /admin/drain and /debug/pprof/* (else $"+AdminTokenEnv+"; neither: no admin API)")
}

// Apply sets the flags' values in o, reading the admin token.
func (f *Flags) Apply(o *Options) error {
	o.Session.Pacing.Policy = f.Pacing
	o.Session.Pacing.MaxLead = f.PacingLead
	o.Session.RealtimeStall = f.RealtimeStall
	if f.Balancing != rpc.RoundRobin && f.Balancing != rpc.LeastLoaded {
		return fmt.Errorf("--balancing %q: want %s or %s", f.Balancing, rpc.RoundRobin, rpc.LeastLoaded)
	}
	o.Balancing = f.Balancing
	tok := os.Getenv(AdminTokenEnv)
	if f.AdminTokenFile != "" {
		b, err := os.ReadFile(f.AdminTokenFile)
		if err != nil {
			return fmt.Errorf("admin token: %w", err)
		}
		tok = string(b)
	}
	tok = strings.TrimSpace(tok)
	if tok != "" && len(tok) < 16 {
		return fmt.Errorf("admin token: %d characters is too short to be a secret (want at least 16)", len(tok))
	}
	o.AdminToken = tok
	return nil
}
