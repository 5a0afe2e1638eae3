package service

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"sync"
	"time"
)

// http2Preface starts every HTTP/2 connection made with prior knowledge,
// which is how gRPC clients speak over cleartext. No HTTP/1.x request can
// start with "PRI ", so four bytes decide.
var http2Preface = []byte("PRI ")

// classifyTimeout bounds how long a new connection may take to send its
// first bytes.
const classifyTimeout = 10 * time.Second

// portMux splits one listener into gRPC (HTTP/2) and HTTP/1.x connections.
type portMux struct {
	root       net.Listener
	grpc, http *chanListener

	mu      sync.Mutex
	closing bool
	pending map[net.Conn]struct{}
	wg      sync.WaitGroup
}

func newPortMux(root net.Listener) *portMux {
	m := &portMux{root: root, pending: map[net.Conn]struct{}{}}
	m.grpc = newChanListener(root.Addr())
	m.http = newChanListener(root.Addr())
	return m
}

// serve accepts connections until close is called.
func (m *portMux) serve() error {
	var delay time.Duration
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
				// Out of file descriptors and the like: back off as
				// net/http does.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
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
