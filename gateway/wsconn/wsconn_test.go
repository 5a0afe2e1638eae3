package wsconn

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestCloseReasonIsCutAtARuneBoundary closes with a reason longer than a
// control frame holds, made of multi-byte characters: the peer receives a
// valid, shortened reason and the code.
func TestCloseReasonIsCutAtARuneBoundary(t *testing.T) {
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c := New(ws, Options{})
		c.Close(4400, "a"+strings.Repeat("é", 100)) // 201 bytes: 120 falls inside an é
		for {
			if _, _, err := c.Read(); err != nil {
				break
			}
		}
		c.Finish()
	}))
	defer srv.Close()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err = ws.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("read: %v; want a close frame", err)
	}
	if ce.Code != 4400 || len(ce.Text) > 123 || !utf8.ValidString(ce.Text) || !strings.HasPrefix(ce.Text, "aé") {
		t.Errorf("close %d %q (%d bytes); want 4400 with a valid reason of at most 123 bytes", ce.Code, ce.Text, len(ce.Text))
	}
}

// TestPauseRead checks that a paused Read waits before reading, then
// returns the messages that came meanwhile, and that the pause is used
// once.
func TestPauseRead(t *testing.T) {
	const pause = 80 * time.Millisecond
	type result struct {
		waited time.Duration
		got    []string
		err    error
	}
	results := make(chan result, 1)
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c := New(ws, Options{})
		defer c.Finish()
		var res result
		_, b, err := c.Read()
		if err != nil {
			res.err = err
			results <- res
			return
		}
		res.got = append(res.got, string(b))
		c.PauseRead(pause)
		begin := time.Now()
		for range 2 {
			_, b, err := c.Read()
			if err != nil {
				res.err = err
				break
			}
			res.got = append(res.got, string(b))
		}
		res.waited = time.Since(begin)
		results <- res
	}))
	defer srv.Close()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	for _, m := range []string{"one", "two", "three"} {
		if err := ws.WriteMessage(websocket.BinaryMessage, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case res := <-results:
		if strings.Join(res.got, ",") != "one,two,three" {
			t.Errorf("read %q; want one, two, three", res.got)
		}
		if res.waited < pause {
			t.Errorf("paused Read returned after %v; want ≥ %v", res.waited, pause)
		}
		if res.err != nil {
			t.Errorf("read: %v", res.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no messages read")
	}
}
