package webhook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The Standard Webhooks reference libraries' own test vector.
func TestSignMatchesTheSpecVector(t *testing.T) {
	s, err := ParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	got := Sign("msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`), s)
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Errorf("Sign = %s; want %s", got, want)
	}
	// Without the prefix the secret is the same.
	s2, err := ParseSecret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil || Sign("msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`), s2) != got {
		t.Errorf("a secret without the whsec_ prefix signs differently (%v)", err)
	}
}

func TestSecretNeverPrints(t *testing.T) {
	raw := NewSecret()
	s, err := ParseSecret(raw)
	if err != nil {
		t.Fatal(err)
	}
	key := strings.TrimPrefix(raw, SecretPrefix)
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s", s, s, s, s), s.LogValue().String()} {
		if strings.Contains(out, key) || strings.Contains(out, key[:8]) {
			t.Errorf("secret printed: %s", out)
		}
	}
	for _, bad := range []string{"whsec_***", "whsec_" + strings.Repeat("A", 8), ""} {
		if _, err := ParseSecret(bad); err == nil {
			t.Errorf("ParseSecret(%q) accepted", bad)
		} else if strings.Contains(err.Error(), "***") {
			t.Errorf("error echoes the secret: %v", err)
		}
	}
}

func TestVerify(t *testing.T) {
	oldS, _ := ParseSecret(NewSecret())
	newS, _ := ParseSecret(NewSecret())
	other, _ := ParseSecret(NewSecret())
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"type":"escalation.triggered"}`)
	signed := func(ts time.Time, secrets ...Secret) http.Header {
		h := http.Header{}
		SetHeaders(h, "dlv_1", ts, body, secrets...)
		return h
	}
	for _, c := range []struct {
		name    string
		h       http.Header
		body    []byte
		holds   []Secret
		wantErr error
	}{
		{"signed with the one secret", signed(now, newS), body, []Secret{newS}, nil},
		{"rotation: receiver still holds the old secret", signed(now, newS, oldS), body, []Secret{oldS}, nil},
		{"rotation: receiver already holds the new secret", signed(now, newS, oldS), body, []Secret{newS}, nil},
		{"another secret", signed(now, newS), body, []Secret{other}, ErrNoMatch},
		{"edited body", signed(now, newS), []byte(`{"type":"escalation.resolved"}`), []Secret{newS}, ErrNoMatch},
		{"replayed too late", signed(now.Add(-6*time.Minute), newS), body, []Secret{newS}, ErrTooOld},
		{"from the future", signed(now.Add(6*time.Minute), newS), body, []Secret{newS}, ErrTooNew},
		{"unsigned", signed(now), body, []Secret{newS}, ErrMissingHeaders},
	} {
		if err := Verify(c.h, c.body, now, DefaultTolerance, c.holds...); !errors.Is(err, c.wantErr) {
			t.Errorf("%s: Verify = %v; want %v", c.name, err, c.wantErr)
		}
	}
	// An edited id fails too: it is part of the signed content.
	h := signed(now, newS)
	h.Set(HeaderID, "dlv_2")
	if err := Verify(h, body, now, DefaultTolerance, newS); !errors.Is(err, ErrNoMatch) {
		t.Errorf("edited id: %v", err)
	}
	// Other signature versions are skipped, not errors.
	h = signed(now, newS)
	h.Set(HeaderSignature, "v1a,AAAA "+h.Get(HeaderSignature)+" v2,BBBB")
	if err := Verify(h, body, now, DefaultTolerance, newS); err != nil {
		t.Errorf("mixed versions: %v", err)
	}
}

// receiver is a test HTTP endpoint answering with handle.
func receiver(t *testing.T, handle http.HandlerFunc) string {
	t.Helper()
	srv := httptest.NewServer(handle)
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestSendClassifiesOutcomes(t *testing.T) {
	c := NewClient(ClientOptions{})
	defer c.CloseIdleConnections()
	secret, _ := ParseSecret(NewSecret())
	elsewhere := make(chan struct{}, 1)
	other := receiver(t, func(w http.ResponseWriter, r *http.Request) { elsewhere <- struct{}{} })
	release := make(chan struct{})
	defer close(release)
	date := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	for _, c2 := range []struct {
		name       string
		handle     http.HandlerFunc
		timeout    time.Duration
		wantOK     bool
		reason     Reason
		status     int
		retryAfter time.Duration // lower bound
	}{
		{"200", func(w http.ResponseWriter, r *http.Request) {}, 0, true, 0, 200, 0},
		{"204", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }, 0, true, 0, 204, 0},
		{"500", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", 500) }, 0, false, ReasonRetryableStatus, 500, 0},
		{"503 with a date", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", date)
			w.WriteHeader(503)
		}, 0, false, ReasonRetryableStatus, 503, 80 * time.Second},
		{"429 with seconds", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(429)
		}, 0, false, ReasonRetryableStatus, 429, 7 * time.Second},
		{"408", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(408) }, 0, false, ReasonRetryableStatus, 408, 0},
		{"404 is final", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(404) }, 0, false, ReasonFinalStatus, 404, 0},
		{"410 is final", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(410) }, 0, false, ReasonFinalStatus, 410, 0},
		{"redirects are not followed", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, other, http.StatusTemporaryRedirect)
		}, 0, false, ReasonFinalStatus, 307, 0},
		{"timeout", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}, 50 * time.Millisecond, false, ReasonTimeout, 0, 0},
	} {
		type seen struct {
			h    http.Header
			body []byte
		}
		seenc := make(chan seen, 1)
		url := receiver(t, func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			seenc <- seen{r.Header.Clone(), b}
			c2.handle(w, r)
		})
		resp, err := c.Send(context.Background(), Request{URL: url + "/hook/s3cr3t-path", ID: "dlv_abc", Body: []byte(`{"x":1}`),
			Secrets: []Secret{secret}, BearerToken: "tok", Timeout: c2.timeout})
		if c2.wantOK {
			if err != nil || resp.Status != c2.status {
				t.Errorf("%s: %v, %v; want status %d", c2.name, resp, err, c2.status)
			}
		} else {
			var e *Error
			if !errors.As(err, &e) {
				t.Errorf("%s: error %v is not an *Error", c2.name, err)
				continue
			}
			if e.Reason != c2.reason || e.Status != c2.status || e.RetryAfter < c2.retryAfter || e.RetryAfter > c2.retryAfter+15*time.Second {
				t.Errorf("%s: %+v; want reason %v, status %d, retry after ≥ %v", c2.name, e, c2.reason, c2.status, c2.retryAfter)
			}
			if e.Retryable() != (c2.reason != ReasonFinalStatus) {
				t.Errorf("%s: retryable %v", c2.name, e.Retryable())
			}
			if strings.Contains(e.Error(), "s3cr3t") || strings.Contains(e.Error(), "127.0.0.1") {
				t.Errorf("%s: the error shows the URL: %v", c2.name, e)
			}
		}
		sn := <-seenc
		got, gotBody := sn.h, sn.body
		if got.Get(HeaderIdempotencyKey) != "dlv_abc" || got.Get("Authorization") != "Bearer tok" || got.Get("Content-Type") != "application/json" {
			t.Errorf("%s: headers %v", c2.name, got)
		}
		if err := Verify(got, gotBody, time.Now(), DefaultTolerance, secret); err != nil {
			t.Errorf("%s: the receiver cannot verify the request: %v", c2.name, err)
		}
	}
	select {
	case <-elsewhere:
		t.Error("a redirect was followed to another server")
	default:
	}
}

func TestSendNetworkErrorsAndCancel(t *testing.T) {
	c := NewClient(ClientOptions{})
	defer c.CloseIdleConnections()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens there now
	_, err = c.Send(context.Background(), Request{URL: "http://" + addr + "/x", ID: "dlv_1", Timeout: time.Second})
	var e *Error
	if !errors.As(err, &e) || e.Reason != ReasonNetwork || !e.Retryable() {
		t.Errorf("connection refused: %v; want a retryable network error", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = c.Send(ctx, Request{URL: "http://" + addr + "/x", ID: "dlv_1"})
	if !errors.As(err, &e) || e.Reason != ReasonCanceled {
		t.Errorf("canceled: %v; want ReasonCanceled", err)
	}
	for _, r := range []Request{{URL: "ftp://x/y", ID: "dlv_1"}, {URL: "/relative", ID: "dlv_1"}, {URL: "http://x/", ID: "has.dot"}} {
		if _, err := c.Send(context.Background(), r); !errors.As(err, &e) || e.Reason != ReasonBadRequest || e.Retryable() {
			t.Errorf("Send(%+v) = %v; want a final bad request", r, err)
		}
	}
}

func TestBackoff(t *testing.T) {
	b := DefaultBackoff
	if err := b.Validate(); err != nil {
		t.Fatal(err)
	}
	for attempt, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 5: 16 * time.Second, 12: 2048 * time.Second, 13: time.Hour, 40: time.Hour} {
		if got := b.Delay(attempt); got != want {
			t.Errorf("Delay(%d) = %v; want %v", attempt, got, want)
		}
	}
	// The default schedule spans about a day whatever the jitter.
	for _, rnd := range []float64{0, 0.5, 0.999} {
		first := time.Unix(0, 0)
		now := first
		attempts := 1
		for {
			next, ok := b.Next(attempts, first, now, 0, rnd)
			if !ok {
				break
			}
			if d := next.Sub(now); d < b.Delay(attempts)/2 || d > b.Delay(attempts) {
				t.Fatalf("delay %v after attempt %d is outside the jitter range", d, attempts)
			}
			now = next
			attempts++
		}
		if span := now.Sub(first); span < 22*time.Hour || span > 24*time.Hour || attempts < 30 {
			t.Errorf("rnd %g: %d attempts over %v; want about a day", rnd, attempts, span)
		}
	}
	// Retry-After wins over a shorter delay.
	now := time.Unix(100, 0)
	if next, ok := b.Next(1, now, now, 30*time.Second, 0.5); !ok || next.Sub(now) != 30*time.Second {
		t.Errorf("Retry-After 30 s: next in %v", next.Sub(now))
	}
	// ... but not past the give-up point.
	if _, ok := b.Next(1, now, now, 25*time.Hour, 0.5); ok {
		t.Error("a Retry-After beyond the schedule was accepted")
	}
	b.MaxAttempts = 3
	if _, ok := b.Next(3, now, now, 0, 0); ok {
		t.Error("a fourth attempt was scheduled with MaxAttempts 3")
	}
	for _, bad := range []Backoff{{}, {Initial: time.Second, Multiplier: 0.5, MaxInterval: time.Hour, GiveUpAfter: time.Hour},
		{Initial: time.Hour, Multiplier: 2, MaxInterval: time.Second, GiveUpAfter: time.Hour}} {
		if bad.Validate() == nil {
			t.Errorf("Validate(%+v) = nil", bad)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"120", 2 * time.Minute, true},
		{" 0 ", 0, true},
		{"Tue, 24 Nov 2026 12:01:00 GMT", time.Minute, true},
		{"Tue, 24 Nov 2026 11:00:00 GMT", 0, true},
		{"", 0, false},
		{"-5", 0, false},
		{"1.5", 0, false},
		{"soon", 0, false},
		{"99999999999999999999", 0, false},
	} {
		got, ok := ParseRetryAfter(c.in, now)
		if got != c.want || ok != c.ok {
			t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"120", "Tue, 24 Nov 2026 12:01:00 GMT", "", "-1", "1e9"} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := ParseRetryAfter(s, now)
		if d < 0 || (!ok && d != 0) {
			t.Errorf("ParseRetryAfter(%q) = %v, %v", s, d, ok)
		}
	})
}

// FuzzVerify feeds arbitrary header values: Verify must not panic, and it
// must accept only a signature made with the secret.
func FuzzVerify(f *testing.F) {
	secret, _ := ParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	f.Add("msg_1", "1614265330", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", []byte(`{"test": 2432232314}`))
	f.Add("a", "x", "v1,", []byte{})
	f.Add("a", "-1", "v1a,xx v1,yy  v1", []byte("{}"))
	f.Fuzz(func(t *testing.T, id, ts, sig string, body []byte) {
		h := http.Header{}
		h.Set(HeaderID, id)
		h.Set(HeaderTimestamp, ts)
		h.Set(HeaderSignature, sig)
		if err := Verify(h, body, time.Now(), 0, secret); err == nil {
			var n int64
			fmt.Sscan(h.Get(HeaderTimestamp), &n)
			want := Sign(h.Get(HeaderID), time.Unix(n, 0), body, secret)
			if !strings.Contains(" "+h.Get(HeaderSignature)+" ", " "+want+" ") && !strings.Contains(h.Get(HeaderSignature), want) {
				t.Errorf("accepted a signature not made with the secret: %q", sig)
			}
		}
	})
}

func FuzzParseSecret(f *testing.F) {
	f.Add("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	f.Add("whsec_")
	f.Add("not base64!")
	f.Fuzz(func(t *testing.T, s string) {
		sec, err := ParseSecret(s)
		if err == nil && (len(sec.key) < 24 || len(sec.key) > 64) {
			t.Errorf("ParseSecret(%q) accepted a %d-byte key", s, len(sec.key))
		}
		// The message never depends on the input beyond its length.
		if err != nil {
			msg := regexp.MustCompile(`[0-9]+`).ReplaceAllString(err.Error(), "#")
			if msg != "webhook secret: not base# after the whsec_ prefix" && msg != "webhook secret: # bytes; want # to #" {
				t.Errorf("the error shows the input: %v", err)
			}
		}
	})
}

func BenchmarkSign(b *testing.B) {
	s, _ := ParseSecret(NewSecret())
	old, _ := ParseSecret(NewSecret())
	body := []byte(strings.Repeat(`{"type":"escalation.triggered","data":{"call_id":"c"}}`, 8))
	b.ReportAllocs()
	for b.Loop() {
		Sign("dlv_0123456789abcdef01234567", time.Unix(1_800_000_000, 0), body, s, old)
	}
}

func TestLinkLocalRefusedAtConnect(t *testing.T) {
	c := NewClient(ClientOptions{})
	for _, u := range []string{"http://169.254.169.254/latest/meta-data/", "http://[fe80::1]:80/x"} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.Send(ctx, Request{URL: u, ID: "msg_1", Body: []byte("{}")})
		cancel()
		if err == nil || !errors.Is(err, ErrForbiddenAddress) {
			t.Errorf("%s: got %v; want ErrForbiddenAddress", u, err)
		}
	}
	for ip, want := range map[string]bool{"169.254.169.254": true, "fe80::1": true, "::ffff:169.254.1.1": true, "100.100.100.200": true, "127.0.0.1": false, "10.0.0.1": false, "8.8.8.8": false} {
		if got := Forbidden(netip.MustParseAddr(ip)); got != want {
			t.Errorf("Forbidden(%s) = %v", ip, got)
		}
	}
}

func TestAllowLinkLocal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := DialContext(AllowLinkLocal(ctx), "tcp", "169.254.0.1:9")
	if errors.Is(err, ErrForbiddenAddress) {
		t.Errorf("an allowed link-local address was refused: %v", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	_, err = DialContext(ctx2, "tcp", "169.254.0.1:9")
	if !errors.Is(err, ErrForbiddenAddress) {
		t.Errorf("a link-local address without the allowance: got %v; want ErrForbiddenAddress", err)
	}
}
