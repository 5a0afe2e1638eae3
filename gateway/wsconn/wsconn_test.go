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
