package edge_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/calmline/calmline/gateway/edge"
)

// A paced connection is read a chunk at a time (session.Call.ReadPause):
// the 20 ms frames that arrived meanwhile — 200 ms of stereo G.711 is
// about 3.4 kB with the WebSocket headers — must come in with one or two
// reads, not one per kilobyte. Here 400 ms of mono μ-law (3,330 bytes with
// the headers) reaches the server in one TCP write; it may take at most
// two reads to get it all.
func TestFramesThatArriveTogetherAreReadTogether(t *testing.T) {
	p := &edge.Protocol{}
	f := start(t, p)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	counted := &readCounter{Listener: lis}
	srv := httptest.NewUnstartedServer(f.e.Handler(p))
	srv.Listener.Close()
	srv.Listener = counted
	srv.Start()
	defer srv.Close()

	var held *heldConn
	d := websocket.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
		c, err := net.Dial(network, addr)
		if err != nil {
			return nil, err
		}
		held = &heldConn{Conn: c}
		return held, nil
	}}
	ws, resp, err := d.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), http.Header{"Authorization": {"Bearer " + f.keys["acme"]}})
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	defer ws.Close()
	ws.WriteMessage(websocket.TextMessage, []byte("start together"))
	if got := next(t, ws); got != "started" {
		t.Fatalf("got %q; want started", got)
	}

	held.hold()
	for range 20 {
		ws.WriteMessage(websocket.BinaryMessage, make([]byte, 160))
	}
	ws.WriteMessage(websocket.TextMessage, []byte("sync"))
	before := counted.reads.Load()
	if err := held.release(); err != nil {
		t.Fatal(err)
	}
	if got := next(t, ws); got != "synced" {
		t.Fatalf("got %q; want synced", got)
	}
	if n := counted.reads.Load() - before; n > 2 {
		t.Errorf("3,330 bytes that arrived together took %d reads; want at most 2", n)
	}
}

// readCounter counts the reads that returned data on the connections it
// accepts.
type readCounter struct {
	net.Listener
	reads atomic.Int64
}

func (l *readCounter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countedConn{Conn: c, reads: &l.reads}, nil
}

type countedConn struct {
	net.Conn
	reads *atomic.Int64
}

func (c *countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.reads.Add(1)
	}
	return n, err
}

// heldConn gathers the client's writes while held and sends them as one.
type heldConn struct {
	net.Conn
	mu      sync.Mutex
	holding bool
	buf     []byte
}

func (c *heldConn) hold() {
	c.mu.Lock()
	c.holding = true
	c.mu.Unlock()
}

func (c *heldConn) release() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.holding = false
	_, err := c.Conn.Write(c.buf)
	c.buf = nil
	return err
}

func (c *heldConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.holding {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}
