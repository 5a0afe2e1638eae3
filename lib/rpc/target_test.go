package rpc

import (
	"net"
	"strings"
	"testing"
)

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct {
		in, serverName, want string
		list                 bool
		bad                  bool
	}{
		{in: "realtime:9090", want: "realtime:9090"},
		{in: " dns:///realtime.calmline:9090 ", want: "dns:///realtime.calmline:9090"},
		{in: "10.0.0.1:9090,10.0.0.2:9090", want: listScheme + ":///backends", list: true},
		{in: "a:1,b:2", serverName: "realtime.internal", want: listScheme + ":///backends", list: true},
		{in: "", bad: true},
		{in: "a:1,", bad: true},
		{in: "a:1,b", bad: true},
	} {
		got, opts, err := parseTarget(tc.in, tc.serverName)
		if tc.bad {
			if err == nil {
				t.Errorf("parseTarget(%q) = %q; want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want || (len(opts) > 0) != tc.list {
			t.Errorf("parseTarget(%q) = %q, %d options, %v; want %q", tc.in, got, len(opts), err, tc.want)
		}
	}
}

func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{"realtime:9090", "dns:///rt:9090", "a:1,b:2", "[::1]:9090,127.0.0.1:1", ",", "a:1,,b:2", "x://y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		target, opts, err := parseTarget(s, "")
		if err != nil {
			if !strings.Contains(err.Error(), "backend address") && !strings.Contains(err.Error(), "empty") {
				t.Fatalf("parseTarget(%q): unclear error %v", s, err)
			}
			return
		}
		if target == "" {
			t.Fatalf("parseTarget(%q) accepted with an empty target", s)
		}
		if len(opts) > 0 {
			// A list: every entry was a host:port.
			for _, a := range strings.Split(s, ",") {
				if _, _, err := net.SplitHostPort(strings.TrimSpace(a)); err != nil {
					t.Fatalf("parseTarget(%q) accepted the entry %q", s, a)
				}
			}
		}
	})
}
