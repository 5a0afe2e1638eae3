package gateway

import (
	"flag"
	"io"
	"testing"
	"time"
)

func TestFlagsForTheEdgeLimits(t *testing.T) {
	parse := func(args ...string) (Options, error) {
		var f Flags
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		f.Register(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		o := DefaultOptions()
		return o, f.Apply(&o)
	}
	o, err := parse()
	if err != nil || o.Session.ResumeGrace != 30*time.Second || o.Admission.HandshakeRate != 200 || o.Admission.MaxPending != 1000 || o.Admission.TenantMargin != 10 || o.Admission.AllowedOrigins != nil {
		t.Errorf("defaults: %+v %+v, %v", o.Session, o.Admission, err)
	}
	o, err = parse("--resume-grace=0", "--tenant-connection-margin=0", "--handshake-rate=-1", "--allowed-origins=https://a.example, http://b.example:8080", "--trusted-proxies=127.0.0.1, 10.0.0.0/8")
	if err != nil || o.Session.ResumeGrace >= 0 || o.Admission.TenantMargin >= 0 || o.Admission.HandshakeRate >= 0 || len(o.Admission.AllowedOrigins) != 2 || len(o.Admission.TrustedProxies) != 2 {
		t.Errorf("set: %+v %+v, %v", o.Session, o.Admission, err)
	}
	for _, bad := range [][]string{{"--allowed-origins=a.example"}, {"--max-pending-connections=0"}, {"--handshake-burst=0"}, {"--tenant-connection-margin=-1"}, {"--trusted-proxies=nginx"}} {
		if _, err := parse(bad...); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func TestFlagsForHeadroom(t *testing.T) {
	parse := func(args ...string) (Options, error) {
		var f Flags
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		f.Register(fs)
		fs.SetOutput(io.Discard)
		o := DefaultOptions()
		if err := fs.Parse(args); err != nil {
			return o, err // a value of the wrong kind ("64" for a duration)
		}
		return o, f.Apply(&o)
	}
	o, err := parse()
	if err != nil || o.Session.MaxCalls != 0 || o.Session.FullcallFailover != 30*time.Second ||
		o.Admission.Capacity.MaxRealtimeLag != time.Second || o.Admission.Capacity.MaxFullcallBacklog != 15*time.Second {
		t.Errorf("defaults: max calls %d, failover %v, %+v, %v", o.Session.MaxCalls, o.Session.FullcallFailover, o.Admission.Capacity, err)
	}
	o, err = parse("--max-calls=300", "--admit-realtime-lag=0", "--admit-fullcall-backlog=8s", "--fullcall-failover=10s")
	if err != nil || o.Session.MaxCalls != 300 || o.Session.FullcallFailover != 10*time.Second ||
		o.Admission.Capacity.MaxRealtimeLag != 0 || o.Admission.Capacity.MaxFullcallBacklog != 8*time.Second {
		t.Errorf("set: max calls %d, failover %v, %+v, %v", o.Session.MaxCalls, o.Session.FullcallFailover, o.Admission.Capacity, err)
	}
	for _, bad := range [][]string{{"--max-calls=-1"}, {"--admit-realtime-lag=-1s"}, {"--admit-fullcall-backlog=-1s"}, {"--admit-fullcall-backlog=30s"}, {"--admit-fullcall-backlog=64"}, {"--fullcall-failover=0"}} {
		if _, err := parse(bad...); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
