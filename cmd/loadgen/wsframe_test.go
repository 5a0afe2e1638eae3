package loadgen

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestAppendFrameDecodes writes frames of every length class (7-bit,
// 16-bit and 64-bit lengths, their edges, a payload not a multiple of the
// eight-byte masking step) in one write to a real WebSocket server
// (gorilla's, an independent decoder), which must read back each message
// exactly.
func TestAppendFrameDecodes(t *testing.T) {
	type msg struct {
		kind int
		data []byte
	}
	got := make(chan msg, 32)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := websocket.Upgrader{}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		defer ws.Close()
		ws.SetReadLimit(1 << 20)
		for {
			kind, data, err := ws.ReadMessage()
			if err != nil {
				close(got)
				return
			}
			got <- msg{kind, data}
		}
	}))
	defer srv.Close()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()

	var want []msg
	var out []byte
	for i, n := range []int{0, 1, 7, 8, 9, 125, 126, 127, 320, 641, 0xffff, 0x10000, 70001} {
		p := make([]byte, n)
		for j := range p {
			p[j] = byte(j*7 + i)
		}
		kind, op := websocket.BinaryMessage, byte(2)
		if i%4 == 3 {
			kind, op = websocket.TextMessage, 1
			p = bytes.Repeat([]byte("a"), n)
		}
		want = append(want, msg{kind, append([]byte(nil), p...)})
		out = appendFrame(out, op, p, newMaskKey())
	}
	nc := ws.NetConn()
	nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := nc.Write(out); err != nil {
		t.Fatal(err)
	}
	for i, w := range want {
		select {
		case m, ok := <-got:
			if !ok {
				t.Fatalf("message %d: the server's read ended", i)
			}
			if m.kind != w.kind || !bytes.Equal(m.data, w.data) {
				t.Fatalf("message %d: got type %d, %d bytes; want type %d, %d bytes", i, m.kind, len(m.data), w.kind, len(w.data))
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("message %d never arrived", i)
		}
	}
}

// TestMaskBytes checks the eight-at-a-time masking against the RFC's
// byte-wise definition, on every length up to 40 and every key byte.
func TestMaskBytes(t *testing.T) {
	key := uint32(0xa1b2c3d4)
	k := [4]byte{0xd4, 0xc3, 0xb2, 0xa1}
	for n := range 41 {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i * 13)
		}
		maskBytes(b, key)
		for i := range b {
			if want := byte(i*13) ^ k[i%4]; b[i] != want {
				t.Fatalf("n=%d byte %d: %#x; want %#x", n, i, b[i], want)
			}
		}
	}
}
