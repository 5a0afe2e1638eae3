package gatewaytest

import (
	"testing"

	"github.com/calmline/calmline/lib/rpc"
	"github.com/calmline/calmline/lib/tenant"
)

// Backends are a fake realtime and a fake fullcall on loopback with a pool
// of real gRPC connections to each: what the call core (session.Manager)
// needs, for the tests of protocols and of the edge. (gatewaytest cannot
// build the Manager itself: session's own tests use this package.)
type Backends struct {
	Realtime     *Realtime
	Fullcall     *Fullcall
	RealtimePool *rpc.Pool
	FullcallPool *rpc.Pool
}

// StartBackends starts the fake backends and dials them; the pools close
// when the test ends, after the cleanups registered later (servers,
// drains) have run.
func StartBackends(t testing.TB) *Backends {
	t.Helper()
	b := &Backends{Realtime: StartRealtime(t), Fullcall: StartFullcall(t)}
	var err error
	if b.RealtimePool, err = rpc.NewPool(b.Realtime.Addr, 1, rpc.Options{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.RealtimePool.Close() })
	if b.FullcallPool, err = rpc.NewPool(b.Fullcall.Addr, 1, rpc.Options{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.FullcallPool.Close() })
	return b
}

// Tenants returns a registry of the tenants given, each with a new API key
// (ID "<tenant>-1") added to the keys it already has, and those keys by
// tenant id.
func Tenants(t testing.TB, ts ...*tenant.Tenant) (*tenant.Registry, map[string]string) {
	t.Helper()
	keys := map[string]string{}
	for _, tn := range ts {
		keys[tn.ID] = tenant.NewKey()
		tn.APIKeys = append([]tenant.APIKey{{ID: tn.ID + "-1", SHA256: tenant.HashKey(keys[tn.ID])}}, tn.APIKeys...)
	}
	reg, err := tenant.NewRegistry(ts)
	if err != nil {
		t.Fatal(err)
	}
	return reg, keys
}
