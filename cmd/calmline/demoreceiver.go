package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/calmline/calmline/lib/webhook"
)

// demoReceiver is the webhook receiver "make run" starts beside the stack
// (calmline serve --demo-webhook-receiver ADDR), so that a newcomer sees
// the whole path from a call to a signed webhook: it verifies each
// request's Standard Webhooks signature with the demo tenant's secret and
// prints one line per delivery on standard output. It is a demo, not an
// integration: real receivers are the customer's.
type demoReceiver struct {
	srv    *http.Server
	lis    net.Listener
	secret webhook.Secret
	out    io.Writer
	mu     sync.Mutex // serialises lines on out
	done   chan struct{}
}

// demoReceiverPath is the path the demo receiver takes deliveries on.
const demoReceiverPath = "/hooks/calmline"

// ensureDemoSecret returns the demo receiver's signing secret, kept in
// path (mode 0600), creating it on first use.
func ensureDemoSecret(path string) (webhook.Secret, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		s := webhook.NewSecret()
		if err := os.WriteFile(path, []byte(s+"\n"), 0o600); err != nil {
			return webhook.Secret{}, fmt.Errorf("demo webhook secret: %w", err)
		}
		b = []byte(s)
	} else if err != nil {
		return webhook.Secret{}, fmt.Errorf("demo webhook secret: %w", err)
	}
	s, err := webhook.ParseSecret(strings.TrimSpace(string(b)))
	if err != nil {
		return webhook.Secret{}, fmt.Errorf("demo webhook secret %s: %w", path, err)
	}
	return s, nil
}

// startDemoReceiver listens on addr (port 0 picks one) and serves until
// close.
func startDemoReceiver(addr string, secret webhook.Secret, out io.Writer) (*demoReceiver, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("demo webhook receiver: %w", err)
	}
	r := &demoReceiver{lis: lis, secret: secret, out: out, done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+demoReceiverPath, r.serve)
	r.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(r.done)
		r.srv.Serve(lis)
	}()
	return r, nil
}

// URL is where the receiver takes deliveries.
func (r *demoReceiver) URL() string { return "http://" + r.lis.Addr().String() + demoReceiverPath }

func (r *demoReceiver) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	r.srv.Shutdown(ctx)
	<-r.done
}

func (r *demoReceiver) printf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.out, format, args...)
}

func (r *demoReceiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, 1<<20))
	if err != nil {
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	if err := webhook.Verify(req.Header, body, time.Now(), webhook.DefaultTolerance, r.secret); err != nil {
		r.printf("calmline: demo webhook receiver: refused a delivery: %v\n", err)
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var ev struct {
		Type string `json:"type"`
		Data struct {
			EscalationID string `json:"escalation_id"`
			CallID       string `json:"call_id"`
			AgentID      string `json:"agent_id"`
			Alert        struct {
				RuleID string  `json:"rule_id"`
				Score  string  `json:"score"`
				Value  float64 `json:"value"`
			} `json:"alert"`
		} `json:"data"`
	}
	json.Unmarshal(body, &ev)
	d := ev.Data
	r.printf("calmline: demo webhook receiver: verified %s escalation_id=%s call_id=%s agent_id=%s rule_id=%s %s=%g\n",
		ev.Type, d.EscalationID, d.CallID, d.AgentID, d.Alert.RuleID, d.Alert.Score, d.Alert.Value)
	w.WriteHeader(http.StatusNoContent)
}
