package webhook

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"
)

type allowLinkLocalKey struct{}

// AllowLinkLocal returns a context under which requests may reach
// link-local and metadata addresses (a tenant that allows it).
func AllowLinkLocal(ctx context.Context) context.Context {
	return context.WithValue(ctx, allowLinkLocalKey{}, true)
}

// ErrForbiddenAddress is returned (wrapped) when a request would connect
// to a link-local or cloud metadata address.
var ErrForbiddenAddress = fmt.Errorf("forbidden address")

// metadata lists cloud metadata addresses outside the link-local ranges.
var metadata = []netip.Addr{
	netip.MustParseAddr("100.100.100.200"), // Alibaba Cloud
	netip.MustParseAddr("fd00:ec2::254"),   // AWS IMDS over IPv6
}

// Forbidden reports whether ip is a link-local (169.254.0.0/16 — where
// cloud metadata services answer — or fe80::/10) or a cloud metadata
// address.
func Forbidden(ip netip.Addr) bool {
	ip = ip.Unmap()
	if ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() {
		return true
	}
	for _, m := range metadata {
		if ip == m {
			return true
		}
	}
	return false
}

// DialContext dials like net.Dialer but refuses, at connect time (so that
// a DNS answer that changes after a check cannot get round it), link-local
// and metadata addresses unless ctx carries AllowLinkLocal.
func DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	allow, _ := ctx.Value(allowLinkLocalKey{}).(bool)
	d := &net.Dialer{Timeout: 30e9, KeepAlive: 30e9}
	if !allow {
		d.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("%w: %s", ErrForbiddenAddress, address)
			}
			if Forbidden(ap.Addr()) {
				return fmt.Errorf("%w: %s is link-local or a cloud metadata address (allow_link_local lets a tenant reach it)", ErrForbiddenAddress, ap.Addr())
			}
			return nil
		}
	}
	return d.DialContext(ctx, network, addr)
}
