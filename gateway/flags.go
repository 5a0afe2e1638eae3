package gateway

import (
	"cmp"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/calmline/calmline/gateway/admission"
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
	// Admission limits (see admission.Options).
	HandshakeRate  float64
	HandshakeBurst int
	MaxPending     int
	TenantMargin   int
	AllowedOrigins string
	TrustedProxies string
	// ResumeGrace is how long a native call whose connection broke waits
	// for its client to resume it.
	ResumeGrace time.Duration
	// Headroom (see session.Options.MaxCalls, FullcallFailover and
	// admission.Capacity).
	MaxCalls             int
	AdmitRealtimeLag     time.Duration
	AdmitFullcallBacklog time.Duration
	FullcallFailover     time.Duration
	// FullcallBatch is session.Options.FullcallBatch.
	FullcallBatch time.Duration
}

// Register adds the flags to fs.
func (f *Flags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.Pacing, "pacing", session.PaceThrottle, "what to do with a client sending audio faster than real time: throttle, refuse (close 4420) or off")
	fs.DurationVar(&f.PacingLead, "pacing-lead", 2*time.Second, "how far a call's audio may run ahead of the clock before pacing applies")
	fs.DurationVar(&f.RealtimeStall, "realtime-stall", 4*time.Second, "how long realtime may leave a call's flowing audio unanswered before the call moves to another instance (a hung instance); negative: never")
	fs.StringVar(&f.Balancing, "balancing", rpc.RoundRobin, "how new calls spread over the healthy realtime and fullcall addresses: "+rpc.RoundRobin+" or "+rpc.LeastLoaded+" (fewest streams open there from this gateway's connection)")
	fs.DurationVar(&f.ResumeGrace, "resume-grace", 30*time.Second, "how long a native-protocol call whose connection broke without stop stays open for the client to resume it (then it ends as disconnected); 0: it ends at once")
	ad := admission.DefaultOptions()
	fs.Float64Var(&f.HandshakeRate, "handshake-rate", ad.HandshakeRate, "WebSocket handshakes a second one source address may make on average (429 beyond); negative: no limit")
	fs.IntVar(&f.HandshakeBurst, "handshake-burst", ad.HandshakeBurst, "WebSocket handshakes one source address may make at once")
	fs.IntVar(&f.MaxPending, "max-pending-connections", ad.MaxPending, "upgraded connections that have not started a call, all tenants together (503 beyond)")
	fs.IntVar(&f.TenantMargin, "tenant-connection-margin", ad.TenantMargin, "connections without a call a tenant may hold beyond its free call quota (429 beyond)")
	fs.StringVar(&f.TrustedProxies, "trusted-proxies", "", "comma-separated addresses or CIDRs of proxies in front of the gateway (nginx, a load balancer): handshakes from them count against the client address in X-Forwarded-For")
	fs.StringVar(&f.AllowedOrigins, "allowed-origins", "", "comma-separated browser origins (https://host[:port]) allowed to stream with Basic authentication on /ws/twilio and /ws/asterisk; requests without an Origin header are not browsers' and always allowed")
	fs.IntVar(&f.MaxCalls, "max-calls", 0, "ceiling of live calls on this gateway: past it new connections get 503 capacity_calls before the upgrade (and starts 4429); 0: none")
	fs.DurationVar(&f.AdmitRealtimeLag, "admit-realtime-lag", time.Second, "refuse new calls (503 capacity_realtime_lag) while realtime's scores trail their audio by more than this on average, until back under half of it for 2 s; 0: not judged")
	fs.DurationVar(&f.AdmitFullcallBacklog, "admit-fullcall-backlog", 15*time.Second, "refuse new calls (503 capacity_fullcall_backlog) while the audio fullcall has not acknowledged exceeds this per live call on average, until back under half of it for 2 s; below the 30 s replay log; 0: not judged")
	fs.DurationVar(&f.FullcallFailover, "fullcall-failover", 30*time.Second, "how long fullcall may acknowledge nothing while a call's replay log is full (its client held back meanwhile) before the call's fullcall audio is given up and the call ends (fullcall_lost)")
	fs.DurationVar(&f.FullcallBatch, "fullcall-batch", 0, "audio (at most 1s) a call gathers before it goes to fullcall, instead of each chunk (200 ms) at once: fewer gRPC messages to fullcall; 0: off")
	fs.StringVar(&f.AdminTokenFile, "admin-token-file", "", "file holding the admin token, for POST /admin/drain and /debug/pprof/* (else $"+AdminTokenEnv+"; neither: no admin API)")
}

// Apply sets the flags' values in o, reading the admin token.
func (f *Flags) Apply(o *Options) error {
	o.Session.Pacing.Policy = f.Pacing
	o.Session.Pacing.MaxLead = f.PacingLead
	o.Session.RealtimeStall = f.RealtimeStall
	o.Session.ResumeGrace = f.ResumeGrace
	if f.ResumeGrace <= 0 {
		o.Session.ResumeGrace = -1 // none
	}
	if f.Balancing != rpc.RoundRobin && f.Balancing != rpc.LeastLoaded {
		return fmt.Errorf("--balancing %q: want %s or %s", f.Balancing, rpc.RoundRobin, rpc.LeastLoaded)
	}
	o.Balancing = f.Balancing
	if f.MaxCalls < 0 || f.AdmitRealtimeLag < 0 || f.AdmitFullcallBacklog < 0 || f.FullcallFailover <= 0 {
		return fmt.Errorf("--max-calls, --admit-realtime-lag and --admit-fullcall-backlog must not be negative, --fullcall-failover must be positive")
	}
	if rb := cmp.Or(o.Session.ReplayBuffer, session.DefaultReplayBuffer); f.AdmitFullcallBacklog >= rb {
		return fmt.Errorf("--admit-fullcall-backlog %v must be below the replay log's %v (a call whose log is full already holds its client back)", f.AdmitFullcallBacklog, rb)
	}
	o.Session.MaxCalls, o.Session.FullcallFailover = f.MaxCalls, f.FullcallFailover
	if f.FullcallBatch < 0 || f.FullcallBatch > time.Second {
		return fmt.Errorf("--fullcall-batch %v: want 0 (off) to 1s", f.FullcallBatch)
	}
	o.Session.FullcallBatch = f.FullcallBatch
	o.Admission.Capacity.MaxRealtimeLag = f.AdmitRealtimeLag
	o.Admission.Capacity.MaxFullcallBacklog = f.AdmitFullcallBacklog
	if f.HandshakeBurst < 1 || f.MaxPending < 1 || f.TenantMargin < 0 {
		return fmt.Errorf("--handshake-burst and --max-pending-connections must be positive, --tenant-connection-margin not negative")
	}
	o.Admission.HandshakeRate, o.Admission.HandshakeBurst, o.Admission.MaxPending = f.HandshakeRate, f.HandshakeBurst, f.MaxPending
	o.Admission.TenantMargin = f.TenantMargin
	if f.TenantMargin == 0 {
		o.Admission.TenantMargin = -1 // none
	}
	o.Admission.TrustedProxies = nil
	for _, s := range strings.Split(f.TrustedProxies, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if !strings.Contains(s, "/") {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return fmt.Errorf("--trusted-proxies %q: %v", s, err)
			}
			s = netip.PrefixFrom(a, a.BitLen()).String()
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("--trusted-proxies %q: %v", s, err)
		}
		o.Admission.TrustedProxies = append(o.Admission.TrustedProxies, p.Masked())
	}
	o.Admission.AllowedOrigins = nil
	for _, s := range strings.Split(f.AllowedOrigins, ",") {
		if s = strings.TrimSpace(s); s != "" {
			if !strings.HasPrefix(s, "http://") && !strings.HasPrefix(s, "https://") {
				return fmt.Errorf("--allowed-origins %q: want http(s)://host[:port]", s)
			}
			o.Admission.AllowedOrigins = append(o.Admission.AllowedOrigins, s)
		}
	}
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
