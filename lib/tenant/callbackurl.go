package tenant

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// ErrCallbackURL is wrapped by every refusal of ParseCallbackURL.
var ErrCallbackURL = errors.New("bad callback URL")

// ParseCallbackURL parses a URL calmline will call (a job's callback, an
// escalation endpoint) and returns it normalised the RFC 3986 way: scheme
// and host in lower case, percent-encoded unreserved characters decoded,
// other percent-encodings in upper case, dot segments removed. It refuses
// what could make the URL mean something else than it looks like to a
// prefix check or to the receiver: a scheme other than http(s), userinfo,
// a fragment, a missing host, dot segments ("/cb/../admin") and encoded
// dots ("%2e"), encoded or literal backslashes and encoded slashes. The
// error wraps ErrCallbackURL and never repeats the URL's query.
func ParseCallbackURL(raw string) (*url.URL, error) {
	bad := func(why string) error { return fmt.Errorf("%w: %s", ErrCallbackURL, why) }
	if raw == "" {
		return nil, bad("empty")
	}
	if len(raw) > 2048 {
		return nil, bad(fmt.Sprintf("%d bytes long, at most 2048", len(raw)))
	}
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; c <= ' ' || c >= 0x7f || c == '\\' {
			return nil, bad(fmt.Sprintf("byte 0x%02x at offset %d: only printable ASCII without spaces or backslashes", c, i))
		}
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, bad("does not parse")
	}
	u.Scheme = strings.ToLower(u.Scheme)
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, bad(fmt.Sprintf("scheme %q: only http and https", u.Scheme))
	case u.Opaque != "" || u.Host == "":
		return nil, bad("not an absolute URL with a host")
	case u.User != nil:
		return nil, bad("carries userinfo (credentials); use the signing secret or a bearer token")
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return nil, bad("carries a fragment")
	case u.Port() == "" && strings.HasSuffix(u.Host, ":"):
		return nil, bad("empty port")
	}
	u.Host = strings.ToLower(u.Host)
	path := u.EscapedPath()
	low := strings.ToLower(path)
	for _, enc := range []string{"%2e", "%2f", "%5c", "%00"} {
		if strings.Contains(low, enc) {
			return nil, bad(fmt.Sprintf("the path has an encoded %q", map[string]string{"%2e": ".", "%2f": "/", "%5c": "\\", "%00": "NUL"}[enc]))
		}
	}
	norm, err := normalizePath(path)
	if err != nil {
		return nil, bad(err.Error())
	}
	for _, seg := range strings.Split(norm, "/") {
		if seg == "." || seg == ".." {
			return nil, bad("the path has dot segments (. or ..)")
		}
	}
	norm = removeDotSegments(norm)
	p, err := url.PathUnescape(norm)
	if err != nil {
		return nil, bad("the path has a malformed percent-encoding")
	}
	u.Path, u.RawPath = p, norm
	if u.EscapedPath() != norm {
		u.RawPath = ""
	}
	return u, nil
}

// normalizePath decodes percent-encoded unreserved characters (ALPHA,
// DIGIT, "-", ".", "_", "~") and upper-cases the hex digits of the others.
func normalizePath(p string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] != '%' {
			b.WriteByte(p[i])
			continue
		}
		if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
			return "", errors.New("the path has a malformed percent-encoding")
		}
		c := unhex(p[i+1])<<4 | unhex(p[i+2])
		if isUnreserved(c) {
			b.WriteByte(c)
		} else {
			b.WriteString("%" + strings.ToUpper(p[i+1:i+3]))
		}
		i += 2
	}
	return b.String(), nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// removeDotSegments is RFC 3986 section 5.2.4.
func removeDotSegments(in string) string {
	var out []string
	for in != "" {
		switch {
		case strings.HasPrefix(in, "../"):
			in = in[3:]
		case strings.HasPrefix(in, "./"):
			in = in[2:]
		case strings.HasPrefix(in, "/./"):
			in = in[2:]
		case in == "/.":
			in = "/"
		case strings.HasPrefix(in, "/../"):
			in = in[3:]
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		case in == "/..":
			in = "/"
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		case in == "." || in == "..":
			in = ""
		default:
			i := strings.IndexByte(in[1:], '/')
			if i < 0 {
				out = append(out, in)
				in = ""
			} else {
				out = append(out, in[:i+1])
				in = in[i+1:]
			}
		}
	}
	return strings.Join(out, "")
}

// underPrefix reports whether u is under the prefix p (both normalised):
// same scheme and host (with port), and a path that is p's path or goes
// on below it segment by segment ("/cb" covers "/cb" and "/cb/x", not
// "/cbx").
func underPrefix(u, p *url.URL) bool {
	if u.Scheme != p.Scheme || u.Host != p.Host {
		return false
	}
	up, pp := u.EscapedPath(), p.EscapedPath()
	if pp == "" || pp == "/" {
		return true
	}
	if !strings.HasPrefix(up, pp) {
		return false
	}
	return len(up) == len(pp) || strings.HasSuffix(pp, "/") || up[len(pp)] == '/'
}
