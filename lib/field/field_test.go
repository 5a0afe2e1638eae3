package field

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestID(t *testing.T) {
	for _, s := range []string{"a", "call-1", "CA5f8e.9:@+=_~", strings.Repeat("x", MaxID)} {
		if err := ID("call_id", s); err != nil {
			t.Errorf("ID(%q) = %v, want nil", s, err)
		}
	}
	for _, s := range []string{"", " ", "a b", "a\nb", "a\x00", "caf\u00e9", "\x7f", strings.Repeat("x", MaxID+1)} {
		err := ID("call_id", s)
		if err == nil {
			t.Errorf("ID(%q) = nil, want an error", s)
			continue
		}
		if !strings.HasPrefix(err.Error(), "call_id ") {
			t.Errorf("ID(%q) = %q, want the field named first", s, err)
		}
	}
	if OptionalID("agent_id", "") != nil || OptionalID("agent_id", "a b") == nil {
		t.Error("OptionalID: want empty accepted and invalid refused")
	}
}

func TestText(t *testing.T) {
	for _, s := range []string{"", "supervisor 山田", "on call: Ana (ext. 12)"} {
		if err := Text("by", s, 64); err != nil {
			t.Errorf("Text(%q) = %v", s, err)
		}
	}
	for _, s := range []string{"a\nb", "a\tb", "\x1b[31m", "a\u2028b", "\xff", strings.Repeat("x", 65)} {
		if Text("by", s, 64) == nil {
			t.Errorf("Text(%q) = nil, want an error", s)
		}
	}
}

func TestFinite(t *testing.T) {
	if Finite("min_peak", 70) != nil {
		t.Error("70 refused")
	}
	for _, f := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		if Finite("min_peak", f) == nil {
			t.Errorf("%v accepted", f)
		}
	}
}

// FuzzID checks that an accepted id is exactly what the rule says, and that
// the rule never panics.
func FuzzID(f *testing.F) {
	f.Add("call-1")
	f.Add("a\x00b")
	f.Add(strings.Repeat("z", 200))
	f.Fuzz(func(t *testing.T, s string) {
		err := ID("id", s)
		ok := s != "" && len(s) <= MaxID && strings.IndexFunc(s, func(r rune) bool { return r < 0x21 || r > 0x7e }) < 0
		if (err == nil) != ok {
			t.Fatalf("ID(%q) = %v, want ok=%v", s, err, ok)
		}
		if terr := Text("t", s, 1<<20); terr == nil && !utf8.ValidString(s) {
			t.Fatalf("Text accepted invalid UTF-8 %q", s)
		}
	})
}

func TestLabels(t *testing.T) {
	many := map[string]string{}
	for i := range MaxLabels + 1 {
		many[fmt.Sprintf("k%d", i)] = "v"
	}
	for _, tc := range []struct {
		m    map[string]string
		want string // "" accepts
	}{
		{nil, ""},
		{map[string]string{"queue": "vip", "skill": "billing-de"}, ""},
		{map[string]string{"queue": ""}, `labels["queue"] is required`},
		{map[string]string{"": "x"}, "labels key is required"},
		{map[string]string{"queue": "VIP Support"}, `labels["queue"] has byte 0x20`},
		{map[string]string{"qu eue": "vip"}, "labels key has byte 0x20"},
		{many, "33 labels, at most 32"},
	} {
		err := Labels("labels", tc.m)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Labels(%v) = %v; want %q", tc.m, err, tc.want)
		}
	}
}

func FuzzLabels(f *testing.F) {
	f.Add("queue", "vip", "skill", "billing-de")
	f.Add("", "x", "a b", "\x00")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		m := map[string]string{k1: v1, k2: v2}
		err := Labels("labels", m)
		valid := true
		for k, v := range m {
			if ID("k", k) != nil || ID("v", v) != nil {
				valid = false
			}
		}
		if (err == nil) != valid {
			t.Fatalf("Labels(%q) = %v; the ids' own checks say valid=%v", m, err, valid)
		}
	})
}
