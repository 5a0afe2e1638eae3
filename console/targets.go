package console

import (
	"context"
	"crypto/tls"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"
)

// target is one gateway whose feed the console follows.
type target struct {
	name   string // shown in the console: host:port
	base   string // scheme://host:port
	client *http.Client
}

// targets finds the gateways the way the gRPC pools find backends: a list
// of addresses ("127.0.0.1:8080,127.0.0.1:8081", or URLs with a scheme),
// or one "dns:///name:port" re-resolved every ResolveEvery, so that a
// headless Service's gateways are all followed as they come and go.
type targets struct {
	scheme string
	tls    *tls.Config
	static []string // host:port or URLs
	dns    string   // name:port behind dns:///
	lookup func(ctx context.Context, host string) ([]string, error)

	mu      sync.Mutex
	last    []target
	clients map[string]*http.Client
}

// parseGateways checks the console's gateway list.
func parseGateways(list []string, clientTLS *tls.Config) (*targets, error) {
	t := &targets{scheme: "http", tls: clientTLS, lookup: net.DefaultResolver.LookupHost, clients: map[string]*http.Client{}}
	if clientTLS != nil {
		t.scheme = "https"
	}
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if rest, ok := strings.CutPrefix(s, "dns:///"); ok {
			if len(list) != 1 {
				return nil, fmt.Errorf("gateways: a dns:/// target must be the only one, got %d", len(list))
			}
			if _, _, err := net.SplitHostPort(rest); err != nil {
				return nil, fmt.Errorf("gateways: %q: want dns:///NAME:PORT", s)
			}
			t.dns = rest
			continue
		}
		if strings.Contains(s, "://") {
			u, err := url.Parse(s)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") {
				return nil, fmt.Errorf("gateways: %q: want http(s)://HOST:PORT without credentials or path", redactURL(s))
			}
		} else if _, _, err := net.SplitHostPort(s); err != nil {
			return nil, fmt.Errorf("gateways: %q: want HOST:PORT", s)
		}
		t.static = append(t.static, s)
	}
	if t.dns == "" && len(t.static) == 0 {
		return nil, fmt.Errorf("gateways: none given")
	}
	return t, nil
}

// redactURL hides a URL's credentials before it reaches an error or a log.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		u.User = url.User("REDACTED")
		return u.String()
	}
	return s
}

func (t *targets) client(serverName string) *http.Client {
	if c, ok := t.clients[serverName]; ok {
		return c
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = 10 * time.Second
	// HTTP/1.1 only: the services' ports hand HTTP/2 (by ALPN) to gRPC.
	tr.ForceAttemptHTTP2 = false
	tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	if t.tls != nil {
		tc := t.tls.Clone()
		if serverName != "" {
			tc.ServerName = serverName
		}
		tc.NextProtos = []string{"http/1.1"}
		tr.TLSClientConfig = tc
	}
	c := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	t.clients[serverName] = c
	return c
}

// current returns the gateways to follow now. A failed DNS lookup keeps the
// last answer.
func (t *targets) current() []target {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []target
	if t.dns != "" {
		host, port, _ := net.SplitHostPort(t.dns)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		addrs, err := t.lookup(ctx, host)
		cancel()
		if err != nil {
			return t.last
		}
		sort.Strings(addrs)
		for _, a := range addrs {
			hp := net.JoinHostPort(a, port)
			out = append(out, target{name: hp, base: t.scheme + "://" + hp, client: t.client(host)})
		}
	} else {
		for _, s := range t.static {
			if strings.Contains(s, "://") {
				u, _ := url.Parse(s)
				out = append(out, target{name: u.Host, base: u.Scheme + "://" + u.Host, client: t.client("")})
			} else {
				out = append(out, target{name: s, base: t.scheme + "://" + s, client: t.client("")})
			}
		}
	}
	t.last = out
	return out
}

// finite returns p unless it points at NaN or an infinity.
func finite(p *float64) *float64 {
	if p == nil || math.IsNaN(*p) || math.IsInf(*p, 0) {
		return nil
	}
	v := *p
	return &v
}
