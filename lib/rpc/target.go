package rpc

import (
	"fmt"
	"net"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// listScheme names targets that are a fixed list of addresses.
const listScheme = "calmline-list"

// parseTarget turns a backend address into a gRPC target and the dial
// options it needs. A single host:port is dialled as is; a comma-separated
// list of host:port becomes a static list balanced round-robin; anything
// with a scheme ("dns:///realtime:9090") is used as given. Unless
// serverName overrides them, list entries are verified under TLS against
// their own host names.
func parseTarget(s, serverName string) (string, []grpc.DialOption, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", nil, fmt.Errorf("empty backend address")
	}
	if strings.Contains(s, "://") || strings.HasPrefix(s, "dns:") || !strings.Contains(s, ",") {
		return s, nil, nil
	}
	var addrs []resolver.Address
	for _, a := range strings.Split(s, ",") {
		a = strings.TrimSpace(a)
		if _, _, err := net.SplitHostPort(a); err != nil || a == "" {
			return "", nil, fmt.Errorf("backend address %q: %w", a, err)
		}
		host, _, _ := net.SplitHostPort(a)
		if serverName != "" {
			// A per-address name would win over the override.
			host = ""
		}
		// Under TLS each address is verified against its own host name,
		// not the list's placeholder authority.
		addrs = append(addrs, resolver.Address{Addr: a, ServerName: host})
	}
	r := manual.NewBuilderWithScheme(listScheme)
	r.InitialState(resolver.State{Addresses: addrs})
	return listScheme + ":///backends", []grpc.DialOption{grpc.WithResolvers(r)}, nil
}
