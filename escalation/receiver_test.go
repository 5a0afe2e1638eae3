package escalation

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/calmline/calmline/lib/identity/identitytest"
	"github.com/calmline/calmline/lib/tenant"
	escalationv1 "github.com/calmline/calmline/proto/calmline/escalation/v1"
)

// verifySignature is an independent implementation of the Standard
// Webhooks check, written from the specification for the tests (it shares
// no code with lib/webhook): HMAC-SHA256 over "id.timestamp.body" with the
// base64-decoded secret, compared in constant time with every "v1,"
// signature of the space-separated header, and a 5-minute tolerance.
func verifySignature(h http.Header, body []byte, keys ...[]byte) error {
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return errors.New("missing webhook headers")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("webhook-timestamp %q", ts)
	}
	if d := time.Since(time.Unix(sec, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return fmt.Errorf("timestamp %d out of tolerance", sec)
	}
	for _, key := range keys {
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(id + "." + ts + "." + string(body)))
		want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
		for _, s := range strings.Split(sigs, " ") {
			if hmac.Equal([]byte(s), []byte(want)) {
				return nil
			}
		}
	}
	return errors.New("no signature matches")
}

// newKey makes a signing key and writes it, serialised as a Standard
// Webhooks secret, to a file.
func newKey(t *testing.T, dir, name string) ([]byte, string) {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte("whsec_"+base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return key, path
}

// message is a request a receiver took in.
type message struct {
	ID      string
	Attempt int
	Type    string
	Data    map[string]any
	Body    []byte
	Header  http.Header
	At      time.Time
}

// answer is what a receiver does with one attempt: processed is false for
// an error answer that took no effect; delay holds the answer back (past
// the sender's timeout, for "succeeds late").
type answer struct {
	status     int
	retryAfter string
	delay      time.Duration
	processed  bool
}

// receiver is an HTTP endpoint on loopback that de-duplicates by
// webhook-id, as the specification asks receivers to: each id's effect is
// taken once, whatever the number of attempts.
type receiver struct {
	srv  *httptest.Server
	keys [][]byte // signing keys it accepts (nil: none checked)
	// script decides each attempt; nil answers 200.
	script func(m message) answer
	// effects receives each id's effect, once.
	effects chan message

	mu       sync.Mutex
	attempts map[string]int
	seen     map[string]bool
	all      []message
	badSigs  []string
	release  chan struct{}
}

func newReceiver(t *testing.T, script func(m message) answer, keys ...[]byte) *receiver {
	t.Helper()
	r := &receiver{keys: keys, script: script, effects: make(chan message, 1000), attempts: map[string]int{}, seen: map[string]bool{},
		release: make(chan struct{})}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(func() {
		close(r.release)
		r.srv.Close()
	})
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	m := message{ID: req.Header.Get("webhook-id"), Body: body, Header: req.Header.Clone(), At: time.Now()}
	var env struct {
		Type string         `json:"type"`
		Data map[string]any `json:"data"`
	}
	json.Unmarshal(body, &env)
	m.Type, m.Data = env.Type, env.Data
	r.mu.Lock()
	if len(r.keys) > 0 {
		if err := verifySignature(req.Header, body, r.keys...); err != nil {
			r.badSigs = append(r.badSigs, m.ID+": "+err.Error())
			r.mu.Unlock()
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
	}
	if req.Header.Get("Idempotency-Key") != m.ID {
		r.badSigs = append(r.badSigs, m.ID+": Idempotency-Key differs from webhook-id")
	}
	r.attempts[m.ID]++
	m.Attempt = r.attempts[m.ID]
	r.all = append(r.all, m)
	r.mu.Unlock()
	a := answer{status: 200, processed: true}
	if r.script != nil {
		a = r.script(m) // outside the lock: a script may hold the answer back
	}
	r.mu.Lock()
	if a.processed && !r.seen[m.ID] {
		r.seen[m.ID] = true
		r.effects <- m
	}
	r.mu.Unlock()
	if a.status < 0 {
		// Break the connection without an answer.
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
	}
	if a.delay > 0 {
		select {
		case <-time.After(a.delay):
		case <-r.release:
		}
	}
	if a.retryAfter != "" {
		w.Header().Set("Retry-After", a.retryAfter)
	}
	w.WriteHeader(a.status)
}

// collect waits for n effects, or fails at the deadline.
func (r *receiver) collect(t *testing.T, n int, within time.Duration) []message {
	t.Helper()
	var out []message
	deadline := time.After(within)
	for len(out) < n {
		select {
		case m := <-r.effects:
			out = append(out, m)
		case <-deadline:
			t.Fatalf("receiver got %d effects within %v; want %d: %v", len(out), within, n, typesOf(out))
		}
	}
	return out
}

// quiet fails if an effect arrives within d (a negative check has to wait
// for something not to happen; d is kept short).
func (r *receiver) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case m := <-r.effects:
		t.Errorf("unexpected message %s %s", m.Type, m.ID)
	case <-time.After(d):
	}
}

func (r *receiver) attemptsOf(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.attempts[id]
}

func (r *receiver) badSignatures() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.badSigs...)
}

func (r *receiver) messages() []message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]message(nil), r.all...)
}

func typesOf(ms []message) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Type+"/"+fmt.Sprint(m.Data["call_id"]))
	}
	return out
}

// stack is an escalation server for a tenants file, on loopback.
type stack struct {
	s      *Server
	cc     *grpc.ClientConn
	base   string
	key    string
	dbPath string
	// stop stops the server before the test's end (restarts).
	stop func()
}

// startStack runs escalation for one tenant, "acme", whose escalation
// settings are the YAML given (indented under the tenant).
func startStack(t *testing.T, tenantYAML string, tweak func(*Options)) *stack {
	t.Helper()
	key := tenant.NewKey()
	doc := fmt.Sprintf("tenants:\n  - id: acme\n    api_keys: [{id: k1, sha256: %s}]\n%s", tenant.HashKey(key), tenantYAML)
	ts, err := tenant.Parse([]byte(doc))
	if err != nil {
		t.Fatalf("tenants file: %v\n%s", err, doc)
	}
	reg, err := tenant.NewRegistry(ts)
	if err != nil {
		t.Fatal(err)
	}
	o := DefaultOptions()
	o.Tenants = reg
	dsn, dbPath := newDatabase(t)
	o.Database = dsn
	o.PollInterval = 50 * time.Millisecond
	o.DeliveryDrain = time.Second
	if tweak != nil {
		tweak(&o)
	}
	st := serveOptions(t, o)
	st.key, st.dbPath = key, dbPath
	return st
}

func serveOptions(t *testing.T, o Options) *stack {
	t.Helper()
	if o.Identity == nil {
		o.Identity = identitytest.Keyring(t)
	}
	s, err := New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(context.Background(), lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(), append(identitytest.DialOptions(o.Identity), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	st := &stack{s: s, cc: cc, base: "http://" + lis.Addr().String()}
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cc.Close()
		if err := s.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}
	t.Cleanup(stop)
	st.stop = stop
	return st
}

func (s *stack) ctx() context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+s.key)
}

func (s *stack) post(t *testing.T, alerts ...*escalationv1.Alert) []string {
	t.Helper()
	resp, err := escalationv1.NewAlertServiceClient(s.cc).PostAlerts(context.Background(), &escalationv1.PostAlertsRequest{Alerts: alerts})
	if err != nil {
		t.Fatalf("PostAlerts: %v", err)
	}
	return resp.EscalationIds
}

func (s *stack) get(t *testing.T, id string) *escalationv1.Escalation {
	t.Helper()
	r, err := escalationv1.NewEscalationServiceClient(s.cc).GetEscalation(s.ctx(), &escalationv1.GetEscalationRequest{Id: id})
	if err != nil {
		t.Fatalf("GetEscalation(%s): %v", id, err)
	}
	return r.Escalation
}

// rest makes a REST call with the tenant's key and decodes the JSON reply.
func (s *stack) rest(t *testing.T, method, path, body string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(method, s.base+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+s.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

// eventually polls cond until it holds or the deadline passes: for state
// the service reaches on its own clock (a step's due time).
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		<-tick.C
	}
}
