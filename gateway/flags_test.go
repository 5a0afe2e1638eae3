package gateway

import (
	"flag"
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
