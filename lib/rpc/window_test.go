package rpc

import (
	"context"
	"encoding/binary"
	"net"
	"sync"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/calmline/calmline/lib/service"
)

// Between the services the HTTP/2 windows are fixed, so neither side
// measures the bandwidth-delay product: gRPC's estimator would send a PING
// whenever data arrives with none outstanding — with audio chunks spaced
// wider than the round trip, a PING and its answer for every message, two
// more writes and reads each. Here 40 calls, one after the other, carry
// data both ways; neither the client (rpc.Dial) nor the server
// (service.Host) may send a single PING (keepalive's first is 10 s away).
func TestNoPingPerMessage(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sniff := &sniffListener{Listener: lis}
	h := service.NewHost(service.Options{Name: "window-test"})
	served := make(chan error, 1)
	go func() { served <- h.Serve(context.Background(), sniff) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		h.Shutdown(ctx)
		<-served
	}()
	cc, err := Dial(lis.Addr().String(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hc := healthpb.NewHealthClient(cc)
	for range 40 {
		if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	fromClient, fromServer, data := sniff.counts()
	if data < 40 {
		t.Fatalf("saw %d DATA frames from the client; the sniffer misses frames", data)
	}
	if fromClient != 0 || fromServer != 0 {
		t.Errorf("PINGs over 40 calls: %d from the client, %d from the server; want none", fromClient, fromServer)
	}
}

// sniffListener counts, on the connections it accepts, the HTTP/2 PING
// frames (not acknowledgements) each side sends, and the client's DATA
// frames.
type sniffListener struct {
	net.Listener
	mu    sync.Mutex
	conns []*sniffConn
}

func (l *sniffListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	s := &sniffConn{Conn: c, in: frameCounter{skip: len("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")}}
	l.mu.Lock()
	l.conns = append(l.conns, s)
	l.mu.Unlock()
	return s, nil
}

func (l *sniffListener) counts() (clientPings, serverPings, clientData int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.mu.Lock()
		clientPings += c.in.pings
		serverPings += c.out.pings
		clientData += c.in.data
		c.mu.Unlock()
	}
	return
}

type sniffConn struct {
	net.Conn
	mu      sync.Mutex
	in, out frameCounter
}

func (c *sniffConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.in.feed(p[:n])
	c.mu.Unlock()
	return n, err
}

func (c *sniffConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.out.feed(p)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// frameCounter follows one direction of an HTTP/2 connection (RFC 9113
// §4.1: a 9-byte header, then the payload) and counts its frames.
type frameCounter struct {
	skip        int // bytes before the next frame header (the preface, a payload)
	hdr         []byte
	pings, data int
}

func (f *frameCounter) feed(p []byte) {
	for len(p) > 0 {
		if f.skip > 0 {
			n := min(f.skip, len(p))
			f.skip -= n
			p = p[n:]
			continue
		}
		n := min(9-len(f.hdr), len(p))
		f.hdr = append(f.hdr, p[:n]...)
		p = p[n:]
		if len(f.hdr) < 9 {
			return
		}
		length := int(binary.BigEndian.Uint32(append([]byte{0}, f.hdr[:3]...)))
		switch typ, flags := f.hdr[3], f.hdr[4]; {
		case typ == 0x6 && flags&0x1 == 0: // PING, not ACK
			f.pings++
		case typ == 0x0:
			f.data++
		}
		f.hdr = f.hdr[:0]
		f.skip = length
	}
}
