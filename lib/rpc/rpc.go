// Package rpc holds calmline's gRPC client defaults: keepalive that notices
// a silently dead backend within 13 s (service.KeepaliveTime+Timeout),
// optional TLS and mTLS, round-robin (or least-loaded) balancing over every
// address a target resolves to with health checking, OpenTelemetry
// instrumentation,
// and a small fixed pool of connections per target so that the number of
// TCP connections from a gateway to a backend never grows with calls.
package rpc

import (
	"crypto/tls"
	"fmt"
	"sync/atomic"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	_ "google.golang.org/grpc/balancer/leastrequest" // LeastLoaded
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/health" // client-side health checking
	"google.golang.org/grpc/keepalive"

	"github.com/calmline/calmline/lib/service"
)

// Balancing policies for new streams over a target's healthy addresses.
const (
	// RoundRobin takes the addresses in turn (the default).
	RoundRobin = "round_robin"
	// LeastLoaded takes the address with the fewest streams open from
	// this connection (grpc-go's least_request balancer sampling 10
	// addresses at random, which for up to a few backends finds the
	// least loaded almost surely). It evens out faster than round-robin
	// after a backend joins or restarts, since long calls stay where
	// they started.
	LeastLoaded = "least_loaded"
)

// serviceConfig returns the service config for a balancing policy: an
// address whose health service says NOT_SERVING (a draining backend)
// receives no new streams under either.
func serviceConfig(policy string) (string, error) {
	var lb string
	switch policy {
	case "", RoundRobin:
		lb = `{"round_robin": {}}`
	case LeastLoaded:
		lb = `{"least_request_experimental": {"choiceCount": 10}}`
	default:
		return "", fmt.Errorf("balancing policy %q: want %s or %s", policy, RoundRobin, LeastLoaded)
	}
	return `{"loadBalancingConfig": [` + lb + `], "healthCheckConfig": {"serviceName": ""}}`, nil
}

// Options configures client connections.
type Options struct {
	// TLS, when set, is used for every connection and health check;
	// otherwise cleartext. RootCAs verifies the servers, Certificates or
	// GetClientCertificate is the client certificate for mTLS. The name
	// verified is ServerName when set, else the host of each address
	// (of the target, of each list entry, of the DNS name).
	TLS            *tls.Config
	MeterProvider  metric.MeterProvider
	TracerProvider trace.TracerProvider
	Propagator     propagation.TextMapPropagator
	// MaxRecvMsgSize bounds one received message (default 4 MiB).
	MaxRecvMsgSize int
	// Balancing is RoundRobin (default) or LeastLoaded.
	Balancing string
	// Identity proves which service calls (identity.Credentials): internal
	// methods refuse calls without it unless the client certificate
	// names the service.
	Identity credentials.PerRPCCredentials
}

// Dial returns a client connection to target, which may be a host:port, a
// "dns:///name:port" resolving to several backends, or a comma-separated
// list of host:port balanced round-robin.
func Dial(target string, o Options) (*grpc.ClientConn, error) {
	var serverName string
	if o.TLS != nil {
		serverName = o.TLS.ServerName
	}
	sc, err := serviceConfig(o.Balancing)
	if err != nil {
		return nil, err
	}
	target, opts, err := parseTarget(target, serverName)
	if err != nil {
		return nil, err
	}
	creds := insecure.NewCredentials()
	if o.TLS != nil {
		c := o.TLS.Clone()
		if c.MinVersion == 0 {
			c.MinVersion = tls.VersionTLS12
		}
		creds = credentials.NewTLS(c) // sets ALPN h2
		if c.ServerName != "" {
			// gRPC verifies the channel's authority, which this sets.
			opts = append(opts, grpc.WithAuthority(c.ServerName))
		}
	}
	var statsOpts []otelgrpc.Option
	if o.MeterProvider != nil {
		statsOpts = append(statsOpts, otelgrpc.WithMeterProvider(o.MeterProvider))
	}
	if o.TracerProvider != nil {
		statsOpts = append(statsOpts, otelgrpc.WithTracerProvider(o.TracerProvider))
	}
	if o.Propagator != nil {
		statsOpts = append(statsOpts, otelgrpc.WithPropagators(o.Propagator))
	}
	callOpts := []grpc.CallOption{}
	if o.MaxRecvMsgSize > 0 {
		callOpts = append(callOpts, grpc.MaxCallRecvMsgSize(o.MaxRecvMsgSize))
	}
	if o.Identity != nil {
		opts = append(opts, grpc.WithPerRPCCredentials(o.Identity))
	}
	opts = append(opts,
		grpc.WithTransportCredentials(creds),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(statsOpts...)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                service.KeepaliveTime,
			Timeout:             service.KeepaliveTimeout,
			PermitWithoutStream: true,
		}),
		grpc.WithDefaultServiceConfig(sc),
		grpc.WithDefaultCallOptions(callOpts...),
		grpc.WithStaticStreamWindowSize(service.StreamWindow),
		grpc.WithStaticConnWindowSize(service.ConnWindow),
	)
	cc, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", target, err)
	}
	return cc, nil
}

// Pool is a fixed set of client connections to one target, used in turn:
// each connection is one HTTP/2 connection per backend address, carrying
// any number of streams, so a pool of n costs n TCP connections per
// backend address whatever the load.
type Pool struct {
	target string
	conns  []*grpc.ClientConn
	next   atomic.Uint32
}

// NewPool dials n connections to target (n < 1 means 1).
func NewPool(target string, n int, o Options) (*Pool, error) {
	n = max(n, 1)
	p := &Pool{target: target}
	for range n {
		cc, err := Dial(target, o)
		if err != nil {
			p.Close()
			return nil, err
		}
		p.conns = append(p.conns, cc)
	}
	return p, nil
}

// Conn returns the next connection in turn.
func (p *Pool) Conn() *grpc.ClientConn {
	i := p.next.Add(1)
	return p.conns[int(i)%len(p.conns)]
}

// Target returns the target the pool dials.
func (p *Pool) Target() string { return p.target }

// Size returns the number of connections in the pool.
func (p *Pool) Size() int { return len(p.conns) }

// Close closes every connection.
func (p *Pool) Close() error {
	for _, c := range p.conns {
		c.Close()
	}
	return nil
}
