package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Reason says how a delivery attempt ended. The client decides it, since it
// is the one that knows HTTP: the retry stage only asks Retryable.
type Reason int

// Reasons.
const (
	// ReasonNetwork: the connection failed or broke (retried).
	ReasonNetwork Reason = iota + 1
	// ReasonTimeout: no complete response within the attempt's timeout
	// (retried).
	ReasonTimeout
	// ReasonRetryableStatus: 408, 429 or 5xx (retried, after Retry-After
	// when the receiver sent one).
	ReasonRetryableStatus
	// ReasonFinalStatus: any other non-2xx status, including 3xx since
	// redirects are never followed (not retried).
	ReasonFinalStatus
	// ReasonBadRequest: the request itself is wrong (bad URL): not retried.
	ReasonBadRequest
	// ReasonCanceled: the caller's context ended (shutdown): the attempt
	// does not count.
	ReasonCanceled
)

func (r Reason) String() string {
	switch r {
	case ReasonNetwork:
		return "network"
	case ReasonTimeout:
		return "timeout"
	case ReasonRetryableStatus:
		return "retryable_status"
	case ReasonFinalStatus:
		return "final_status"
	case ReasonBadRequest:
		return "bad_request"
	case ReasonCanceled:
		return "canceled"
	}
	return "unknown"
}

// Error is a failed attempt. Its message never holds the URL (URLs of
// webhook endpoints often embed a token) nor any header value.
type Error struct {
	Reason Reason
	// Status is the HTTP status, 0 when no response arrived.
	Status int
	// RetryAfter is the delay the receiver asked for (Retry-After), 0 if
	// none.
	RetryAfter time.Duration
	// Body is the start of the response body, for people reading the
	// dead-letter queue.
	Body string
	Err  error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Reason.String())
	if e.Status != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.Status)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	if e.Body != "" {
		fmt.Fprintf(&b, ": %q", e.Body)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Retryable reports whether another attempt may succeed.
func (e *Error) Retryable() bool {
	switch e.Reason {
	case ReasonNetwork, ReasonTimeout, ReasonRetryableStatus, ReasonCanceled:
		return true
	}
	return false
}

// Classify returns whether an HTTP status means success, and if not,
// whether it is worth retrying: 2xx done; 408, 429 and 5xx retried; every
// other status (3xx included: calmline follows no redirect) final.
func Classify(status int) (ok, retryable bool) {
	switch {
	case status >= 200 && status < 300:
		return true, false
	case status == http.StatusRequestTimeout, status == http.StatusTooManyRequests, status >= 500 && status < 600:
		return false, true
	}
	return false, false
}

// ClientOptions configures a Client.
type ClientOptions struct {
	// UserAgent is sent with every request.
	UserAgent string
	// Transport carries the requests; nil means a dedicated transport with
	// the usual defaults.
	Transport http.RoundTripper
	// MaxRetryAfter caps how long a receiver can ask to be left alone
	// (default 24 h).
	MaxRetryAfter time.Duration
	// Now returns the time (tests set it).
	Now func() time.Time
}

// Client posts messages. It is safe for concurrent use.
type Client struct {
	hc            *http.Client
	ua            string
	maxRetryAfter time.Duration
	now           func() time.Time
}

// NewClient returns a Client. Its HTTP client never follows redirects: a
// request goes only to the URL it names.
func NewClient(o ClientOptions) *Client {
	if o.Transport == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.DialContext = DialContext // no link-local or metadata addresses
		t.MaxIdleConnsPerHost = 16
		t.ResponseHeaderTimeout = 0 // the attempt's context bounds it
		o.Transport = t
	}
	if o.MaxRetryAfter <= 0 {
		o.MaxRetryAfter = 24 * time.Hour
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.UserAgent == "" {
		o.UserAgent = "calmline-webhook/1"
	}
	return &Client{
		hc: &http.Client{
			Transport: o.Transport,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
		ua:            o.UserAgent,
		maxRetryAfter: o.MaxRetryAfter,
		now:           o.Now,
	}
}

// CloseIdleConnections closes the client's idle keep-alive connections.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

// Request is one message to post.
type Request struct {
	URL string
	// ID is the message's webhook-id and Idempotency-Key: the same on
	// every attempt of one message.
	ID   string
	Body []byte
	// Secrets sign the message (Standard Webhooks); none: unsigned.
	Secrets []Secret
	// BearerToken, when set, is sent as "Authorization: Bearer TOKEN".
	BearerToken string
	// Timeout bounds the attempt, response body included (default 10 s).
	Timeout time.Duration
	// Header holds further headers.
	Header http.Header
}

// Response is a successful attempt.
type Response struct {
	Status   int
	Duration time.Duration
}

// maxBody is how much of a response body is read: enough to keep the
// connection reusable for a typical reply, not enough to be flooded.
const maxBody = 64 << 10

// Send makes one attempt. The error, when not nil, is an *Error.
func (c *Client) Send(ctx context.Context, r Request) (Response, error) {
	u, err := url.Parse(r.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Response{}, &Error{Reason: ReasonBadRequest, Err: errors.New("the endpoint URL is not an absolute http(s) URL")}
	}
	if !ValidID(r.ID) {
		return Response{}, &Error{Reason: ReasonBadRequest, Err: fmt.Errorf("message id %q is not a valid webhook-id", r.ID)}
	}
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, u.String(), bytes.NewReader(r.Body))
	if err != nil {
		return Response{}, &Error{Reason: ReasonBadRequest, Err: errors.New("cannot build the request")}
	}
	for k, vs := range r.Header {
		req.Header[k] = vs
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", c.ua)
	if r.BearerToken != "" {
		req.Header.Set("Authorization", "Bearer "+r.BearerToken)
	}
	start := c.now()
	SetHeaders(req.Header, r.ID, start, r.Body, r.Secrets...)
	resp, err := c.hc.Do(req)
	if err != nil {
		return Response{}, c.transportError(ctx, actx, err)
	}
	body, rerr := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody)) // let a slightly larger reply still reuse the connection
	resp.Body.Close()
	ok, retryable := Classify(resp.StatusCode)
	if ok {
		// A 2xx counts as delivered even if the body broke off: the
		// receiver has committed to the message.
		return Response{Status: resp.StatusCode, Duration: c.now().Sub(start)}, nil
	}
	e := &Error{Status: resp.StatusCode, Body: snippet(body), Reason: ReasonFinalStatus}
	if retryable {
		e.Reason = ReasonRetryableStatus
		if d, ok := ParseRetryAfter(resp.Header.Get("Retry-After"), c.now()); ok {
			e.RetryAfter = min(d, c.maxRetryAfter)
		}
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		e.Err = errors.New("redirect not followed: fix the endpoint URL")
	}
	if rerr != nil && e.Body == "" {
		e.Err = errors.Join(e.Err, errors.New("reading the response failed"))
	}
	return Response{}, e
}

// transportError classifies a failed round trip, keeping the URL out of
// the message.
func (c *Client) transportError(parent, attempt context.Context, err error) *Error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	switch {
	case parent.Err() != nil:
		return &Error{Reason: ReasonCanceled, Err: parent.Err()}
	case errors.Is(err, ErrForbiddenAddress):
		// Retrying will not make the address allowed.
		return &Error{Reason: ReasonBadRequest, Err: err}
	case attempt.Err() != nil || isTimeout(err):
		return &Error{Reason: ReasonTimeout, Err: errors.New("no response within the timeout")}
	}
	return &Error{Reason: ReasonNetwork, Err: err}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// snippet returns the start of a response body as printable text.
func snippet(b []byte) string {
	const n = 200
	if len(b) > n {
		b = b[:n]
	}
	s := strings.ToValidUTF8(string(b), "")
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == utf8.RuneError {
			return ' '
		}
		return r
	}, s)
	return strings.TrimSpace(s)
}

// ParseRetryAfter reads a Retry-After header: delay-seconds or an
// HTTP-date (RFC 9110 §10.2.3). A date in the past means no delay. It
// reports false for an empty or malformed value.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if v[0] >= '0' && v[0] <= '9' {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return 0, false
		}
		return time.Duration(n) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}
