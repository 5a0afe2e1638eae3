package redact

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"https://crm.example.com/cb?token=s3cret", "https://crm.example.com/cb"},
		{"https://user:s3cret@crm.example.com:8443/cb#s3cret", "https://crm.example.com:8443/cb"},
		{"http://h/p?", "http://h/p"},
		{"postgres://calmline:s3cret@db/x?sslmode=verify-full&password=s3cret", "postgres://db/x"},
		{"https://h/%zz?token=s3cret", "https://h/%zz"},
		{"://user:s3cret@h/p?token=s3cret", "://h/p"},
	} {
		if got := URL(c.in); got != c.want || strings.Contains(got, "s3cret") {
			t.Errorf("URL(%q) = %q; want %q", c.in, got, c.want)
		}
	}
}

func TestError(t *testing.T) {
	err := &url.Error{Op: "Post", URL: "https://h/cb?token=s3cret", Err: errors.New("connection refused")}
	if got := Error(err); strings.Contains(got, "s3cret") || !strings.Contains(got, "connection refused") || !strings.Contains(got, "https://h/cb") {
		t.Errorf("Error = %q", got)
	}
}

func FuzzURL(f *testing.F) {
	f.Add("https://u:p@h/p?token=x#f")
	f.Fuzz(func(t *testing.T, s string) {
		got := URL(s)
		if u, err := url.Parse(s); err == nil && u.RawQuery != "" && len(u.RawQuery) > 3 && strings.Contains(got, "?"+u.RawQuery) {
			t.Fatalf("query kept: %q -> %q", s, got)
		}
	})
}
