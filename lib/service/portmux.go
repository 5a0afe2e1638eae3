package service

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/calmline/calmline/lib/backoff"
)

// http2Preface starts every HTTP/2 connection made with prior knowledge,
// which is how gRPC clients speak over cleartext. No HTTP/1.x request can
// start with "PRI ", so four bytes decide.
var http2Preface = []byte("PRI ")

// classifyTimeout bounds how long a new connection may take to send its
// first bytes, or to finish its TLS handshake.
const classifyTimeout = 10 * time.Second

// lingerTimeout bounds how long a connection refused in the TLS handshake
// is read from so that its client can read the alert saying why.
const lingerTimeout = time.Second

// portMux splits one listener into gRPC (HTTP/2) and HTTP/1.x connections:
// in cleartext by the first bytes, under TLS by the protocol ALPN
// negotiated (h2 or http/1.1).
type portMux struct {
	root       net.Listener
	tls        *tls.Config // nil: cleartext
	log        *slog.Logger
	grpc, http *chanListener

	mu      sync.Mutex
	closing bool
	pending map[net.Conn]struct{}
	wg      sync.WaitGroup
}

func newPortMux(root net.Listener, tlsConf *tls.Config, log *slog.Logger) *portMux {
	m := &portMux{root: root, tls: tlsConf, log: log, pending: map[net.Conn]struct{}{}}
	m.grpc = newChanListener(root.Addr())
	m.http = newChanListener(root.Addr())
	return m
}

// serve accepts connections until close is called.
func (m *portMux) serve() error {
	// Out of file descriptors and the like: back off as net/http does.
	retry := backoff.New(backoff.Policy{Initial: 5 * time.Millisecond, Max: time.Second}, nil)
	for {
		c, err := m.root.Accept()
		if err != nil {
			m.mu.Lock()
			closing := m.closing
			m.mu.Unlock()
			if closing {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				retry.Wait(context.Background())
				continue
			}
			return err
		}
		retry.Reset()
		m.mu.Lock()
		if m.closing {
			m.mu.Unlock()
			c.Close()
			return nil
		}
		m.pending[c] = struct{}{}
		m.wg.Add(1)
		m.mu.Unlock()
		go m.classify(c)
	}
}

func (m *portMux) classify(c net.Conn) {
	defer m.wg.Done()
	if m.tls != nil {
		m.classifyTLS(c)
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(classifyTimeout))
	br := bufio.NewReaderSize(c, 512)
	head, err := br.Peek(len(http2Preface))
	_ = c.SetReadDeadline(time.Time{})
	m.mu.Lock()
	delete(m.pending, c)
	m.mu.Unlock()
	if err != nil {
		c.Close()
		return
	}
	pc := &peekedConn{Conn: c, r: br}
	if bytes.Equal(head, http2Preface) {
		m.grpc.deliver(pc)
	} else {
		m.http.deliver(pc)
	}
}

// classifyTLS does the TLS handshake and hands the connection on by the
// protocol it negotiated: h2 to gRPC, anything else (http/1.1, or no ALPN
// as older HTTP clients send) to HTTP. The *tls.Conn itself is handed on,
// so net/http fills Request.TLS and gRPC reports the peer's certificate.
func (m *portMux) classifyTLS(c net.Conn) {
	tc := tls.Server(c, m.tls)
	ctx, cancel := context.WithTimeout(context.Background(), classifyTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		defer func() {
			m.mu.Lock()
			delete(m.pending, c)
			m.mu.Unlock()
		}()
		// A cleartext HTTP request gets the answer net/http gives it; a
		// cleartext gRPC client sees the connection close (Unavailable).
		var re tls.RecordHeaderError
		if errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader[:]) {
			_ = re.Conn.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to a TLS port.\n")
		}
		// The error names the peer's mistake, never key material.
		m.log.Debug("tls handshake failed", "remote", c.RemoteAddr().String(), "err", err)
		if !errors.As(err, &re) && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			// The alert that says why (a missing or unknown client
			// certificate) is on its way. Under TLS 1.3 the client
			// believes itself connected and is already writing:
			// closing with its bytes unread would reset the
			// connection and lose the alert, leaving the client with
			// "broken pipe" instead of the reason. Read what it sends
			// until it closes, for a second at most.
			_ = c.SetReadDeadline(time.Now().Add(lingerTimeout))
			_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<10))
		}
		c.Close()
		return
	}
	m.mu.Lock()
	delete(m.pending, c)
	m.mu.Unlock()
	if isGRPC(tc.ConnectionState()) {
		m.grpc.deliver(tc)
	} else {
		m.http.deliver(tc)
	}
}

// looksLikeHTTP reports whether the first bytes of a connection look like
// an HTTP/1.x request or the HTTP/2 preface.
func looksLikeHTTP(b []byte) bool {
	for _, m := range []string{"GET ", "HEAD", "POST", "PUT ", "OPTI", "DELE", "PATC", "PRI "} {
		if len(b) >= len(m) && string(b[:len(m)]) == m {
			return true
		}
	}
	return false
}

// close stops accepting and drops connections not yet classified. The
// split listeners stay open until their servers close them.
func (m *portMux) close() {
	m.mu.Lock()
	m.closing = true
	for c := range m.pending {
		c.Close()
	}
	m.mu.Unlock()
	m.root.Close()
	m.wg.Wait()
}

// peekedConn replays the bytes classification read.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// chanListener is a net.Listener fed by portMux.
type chanListener struct {
	addr  net.Addr
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) deliver(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }
