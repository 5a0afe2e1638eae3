// Package rpc holds calmline's gRPC client defaults: keepalive that notices
// a silently dead backend within 13 s (service.KeepaliveTime+Timeout),
// optional TLS and mTLS, round-robin balancing over every address a
// target resolves to with health checking, OpenTelemetry instrumentation,
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
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/health" // client-side health checking
	"google.golang.org/grpc/keepalive"

	"github.com/calmline/calmline/lib/service"
)

// serviceConfig balances new streams round-robin over every healthy
// address the target resolves to; an address whose health service says
// NOT_SERVING (a draining backend) receives no new streams.
const serviceConfig = `{
  "loadBalancingConfig": [{"round_robin": {}}],
  "healthCheckConfig": {"serviceName": ""}
}`

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
}

// Dial returns a client connection to target, which may be a host:port, a
// "dns:///name:port" resolving to several backends, or a comma-separated
// list of host:port balanced round-robin.
func Dial(target string, o Options) (*grpc.ClientConn, error) {
	var serverName string
	if o.TLS != nil {
		serverName = o.TLS.ServerName
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
	opts = append(opts,
		grpc.WithTransportCredentials(creds),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(statsOpts...)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                service.KeepaliveTime,
			Timeout:             service.KeepaliveTimeout,
			PermitWithoutStream: true,
		}),
		grpc.WithDefaultServiceConfig(serviceConfig),
		grpc.WithDefaultCallOptions(callOpts...),
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
