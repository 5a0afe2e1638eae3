package wsclient

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestDialRefusal(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"error":{"code":"unsigned","message":"sign it"}}`))
	}))
	defer srv.Close()
	_, err := Dial(context.Background(), nil, "audiohook", "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	var re *RefusedError
	if !errors.As(err, &re) || re.Status != http.StatusUnauthorized || re.Code != "unsigned" || !strings.Contains(re.Body, "sign it") {
		t.Fatalf("err %v (%#v); want a 401 refusal with code unsigned and the body", err, re)
	}
	if !strings.HasPrefix(err.Error(), "audiohook: server refused") {
		t.Errorf("message %q does not name the protocol", err)
	}
	// A refusal whose body is not the JSON error keeps the body, no code.
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "nope", http.StatusForbidden) })
	_, err = Dial(context.Background(), nil, "twilio", "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if !errors.As(err, &re) || re.Status != http.StatusForbidden || re.Code != "" || re.Body != "nope\n" {
		t.Fatalf("err %v; want a 403 refusal with the plain body", err)
	}
}

func TestDialAndWaitClose(t *testing.T) {
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		ws.ReadMessage() // the client's frame
		ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4410, "idle"), time.Now().Add(time.Second))
	}))
	defer srv.Close()
	ws, err := Dial(context.Background(), nil, "twilio", "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ws.WriteMessage(websocket.TextMessage, []byte("hi"))
	code, text, err := WaitClose(ws, 5*time.Second)
	if err != nil || code != 4410 || text != "idle" {
		t.Fatalf("WaitClose = %d %q %v; want 4410 idle", code, text, err)
	}
}

func TestPacerSeconds(t *testing.T) {
	p := NewPacer(false, 20*time.Millisecond)
	defer p.Stop()
	for pos := 20 * time.Millisecond; pos <= 2500*time.Millisecond; pos += 20 * time.Millisecond {
		if err := p.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
		p.Sent(pos)
	}
	if len(p.SecondSent) != 2 {
		t.Fatalf("%d seconds noted after 2.5 s; want 2", len(p.SecondSent))
	}
	rt := NewPacer(true, time.Hour)
	defer rt.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := rt.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait on a cancelled context = %v; want context.Canceled", err)
	}
}
