package tenant

import (
	"errors"
	"strings"
	"testing"
)

func TestParseCallbackURL(t *testing.T) {
	for _, c := range []struct{ in, want, err string }{
		{"https://crm.example.com/cb/job", "https://crm.example.com/cb/job", ""},
		{"HTTPS://CRM.Example.com/cb/%7Euser/%41b", "https://crm.example.com/cb/~user/Ab", ""},
		{"https://crm.example.com/cb/a%2fb", "", "encoded \"/\""},
		{"https://crm.example.com/cb/x%3a%3f?token=t", "https://crm.example.com/cb/x%3A%3F?token=t", ""},
		{"https://crm.example.com/cb/../admin/drain", "", "dot segments"},
		{"https://crm.example.com/cb/./x", "", "dot segments"},
		{"https://crm.example.com/cb/%2e%2e/%2e%2e/admin", "", "encoded \".\""},
		{"https://crm.example.com/cb/%2E%2e/admin", "", "encoded \".\""},
		{"https://crm.example.com/cb/.%2e/admin", "", "encoded \".\""},
		{"https://crm.example.com/cb/..", "", "dot segments"},
		{"https://crm.example.com/cb\\..\\admin", "", "backslash"},
		{"https://crm.example.com/cb/%5c..%5cadmin", "", "encoded \"\\\\\""},
		{"https://user:pw@crm.example.com/cb", "", "userinfo"},
		{"https://crm.example.com@evil.example/cb", "", "userinfo"},
		{"ftp://crm.example.com/cb", "", "only http and https"},
		{"javascript:alert(1)", "", "only http and https"},
		{"file:///etc/passwd", "", "only http and https"},
		{"/cb/job", "", "only http and https"},
		{"https:///cb", "", "host"},
		{"https://crm.example.com/cb#frag", "", "fragment"},
		{"https://crm.example.com/cb/%zz", "", "does not parse"},
		{"https://crm.example.com/c b", "", "0x20"},
	} {
		u, err := ParseCallbackURL(c.in)
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%q: %v", c.in, err)
		case c.err == "" && u.String() != c.want:
			t.Errorf("%q normalised to %q; want %q", c.in, u.String(), c.want)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err) || !errors.Is(err, ErrCallbackURL)):
			t.Errorf("%q: got %v; want an error about %s", c.in, err, c.err)
		}
	}
}

func TestJobCallbacksPrefix(t *testing.T) {
	c := &JobCallbacks{URLs: []string{"https://crm.example.com/cb", "https://other.example.com:8443/hooks/"}}
	for _, x := range []struct {
		in   string
		want bool
	}{
		{"https://crm.example.com/cb", true},
		{"https://crm.example.com/cb/job?token=x", true},
		{"https://CRM.example.com/%63b/job", true}, // %63 is "c": unreserved, decoded before the check
		{"https://crm.example.com/cbx", false},
		{"https://crm.example.com/cb/../admin/drain", false},
		{"https://crm.example.com/cb/%2e%2e/%2e%2e/admin", false},
		{"http://crm.example.com/cb/job", false},
		{"https://crm.example.com:444/cb/job", false},
		{"https://other.example.com:8443/hooks/a", true},
		{"https://other.example.com/hooks/a", false},
	} {
		if got := c.Allows(x.in); got != x.want {
			t.Errorf("Allows(%q) = %v; want %v", x.in, got, x.want)
		}
	}
	if _, err := c.Check("https://evil.example/cb?token=s3cret"); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("a refusal repeats the query: %v", err)
	}
}

func TestRemoveDotSegments(t *testing.T) {
	// RFC 3986 section 5.2.4's examples.
	for in, want := range map[string]string{"/a/b/c/./../../g": "/a/g", "mid/content=5/../6": "mid/6", "/a/b/..": "/a/", "/./x": "/x"} {
		if got := removeDotSegments(in); got != want {
			t.Errorf("removeDotSegments(%q) = %q; want %q", in, got, want)
		}
	}
}

// FuzzParseCallbackURL: whatever parses has an http(s) scheme, a host,
// no userinfo or fragment, no dot segment, and parses again to itself.
func FuzzParseCallbackURL(f *testing.F) {
	for _, s := range []string{"https://h/cb/x?token=1", "https://h/cb/%2e%2e/a", "https://h/cb/../a", "HTTP://H/%7e", "https://u@h/", "https://h/a%2F"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseCallbackURL(s)
		if err != nil {
			return
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.Fragment != "" {
			t.Fatalf("%q accepted as %q", s, u)
		}
		for _, seg := range strings.Split(u.EscapedPath(), "/") {
			if seg == "." || seg == ".." || strings.Contains(strings.ToLower(seg), "%2e") {
				t.Fatalf("%q kept a dot segment: %q", s, u)
			}
		}
		again, err := ParseCallbackURL(u.String())
		if err != nil || again.String() != u.String() {
			t.Fatalf("%q normalised to %q, which parses to %v, %v", s, u, again, err)
		}
	})
}
