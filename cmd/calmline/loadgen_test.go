package main

import (
	"strings"
	"testing"
)

func TestParseSources(t *testing.T) {
	for _, c := range []struct{ in, want, err string }{
		{"", "", ""},
		{"127.0.0.2,127.0.0.3", "127.0.0.2 127.0.0.3", ""},
		{"127.0.0.2-127.0.0.4", "127.0.0.2 127.0.0.3 127.0.0.4", ""},
		{"127.0.0.4-127.0.0.2", "", "x ≤ y"},
		{"127.0.0.2-127.0.1.4", "", "x ≤ y"},
		{"127.0.0.2,localhost", "", "not an IP address"},
	} {
		got, err := parseSources(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("parseSources(%q) = %v, %v; want an error containing %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || strings.Join(got, " ") != c.want {
			t.Errorf("parseSources(%q) = %v, %v; want %s", c.in, got, err, c.want)
		}
	}
}
