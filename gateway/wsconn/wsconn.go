// Package wsconn is the defensive WebSocket connection under gateway/edge,
// for every protocol: a read limit with a clear close reason, a
// pong-driven read deadline, one writer goroutine with a write timeout and
// a bounded outbound queue (droppable messages are dropped oldest-first and
// counted), and a close handshake with a code and reason that waits for the
// peer under a bound.
package wsconn

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// Options configures a Conn.
type Options struct {
	// ReadLimit bounds one message; a larger one closes the connection
	// with 1009 and a reason (default 64 KiB).
	ReadLimit int
	// PingInterval is how often the server pings (default 10 s).
	PingInterval time.Duration
	// PongWait is how long the connection may stay silent, pongs
	// included, before it is considered dead (default 30 s).
	PongWait time.Duration
	// WriteTimeout bounds each write (default 10 s).
	WriteTimeout time.Duration
	// CloseWait bounds the wait for the peer's close frame (default 2 s).
	CloseWait time.Duration
	// Queue bounds the outbound messages (default 64).
	Queue int
	// OnDrop is called when a droppable message is dropped.
	OnDrop func()
	// OnWrite, when set, is told the size of every message written, for
	// the traffic metrics.
	OnWrite func(n int)
}

func (o *Options) defaults() {
	if o.ReadLimit == 0 {
		o.ReadLimit = 64 << 10
	}
	if o.PingInterval == 0 {
		o.PingInterval = 10 * time.Second
	}
	if o.PongWait == 0 {
		o.PongWait = 30 * time.Second
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.CloseWait == 0 {
		o.CloseWait = 2 * time.Second
	}
	if o.Queue == 0 {
		o.Queue = 64
	}
}

// TooBigError is returned by Read for a message over the read limit; the
// connection is then being closed with 1009.
type TooBigError struct{ Limit int }

func (e *TooBigError) Error() string {
	return fmt.Sprintf("message exceeds %d bytes", e.Limit)
}

// InvalidTextError is returned by Read for a text message that is not
// valid UTF-8 (RFC 6455 §8.1); the connection is then being closed with
// 1007.
type InvalidTextError struct{}

func (*InvalidTextError) Error() string { return "text message is not valid UTF-8" }

// ClientError reports whether err, returned by Read, is the client's fault
// (a message over the read limit, a text message that is not UTF-8), and
// the close code the connection is being closed with.
func ClientError(err error) (code int, ok bool) {
	var tooBig *TooBigError
	var text *InvalidTextError
	switch {
	case errors.As(err, &tooBig):
		return websocket.CloseMessageTooBig, true
	case errors.As(err, &text):
		return websocket.CloseInvalidFramePayloadData, true
	}
	return 0, false
}

type outMsg struct {
	typ       int // websocket.TextMessage or BinaryMessage
	data      []byte
	droppable bool
}

// Conn is one WebSocket connection.
type Conn struct {
	ws  *websocket.Conn
	o   Options
	buf bytes.Buffer

	mu        sync.Mutex
	q         []outMsg
	closeCode int
	closeMsg  string
	closing   bool
	wake      chan struct{}

	readerDone chan struct{} // closed by Finish
	writerDone chan struct{}
	peerClosed atomic.Bool
	closeSent  atomic.Bool // our close frame is out: reads no longer extend the deadline
	// deadlineAt is when the read deadline was last extended (reader
	// only): extending it costs a timer update, so it is done at most
	// once a second rather than for every 20 ms frame.
	deadlineAt time.Time
	// pause is how long the next Read waits before reading (reader only),
	// on pauseT, made at the first pause.
	pause  time.Duration
	pauseT *time.Timer

	// watch, when set, is watched by the writer: when it closes, onWatch
	// runs (once) on the writer goroutine.
	watch      <-chan struct{}
	onWatch    func()
	finishOnce sync.Once
}

// New takes over an upgraded connection and starts its writer. The
// goroutine that reads must call Finish when it stops reading.
func New(ws *websocket.Conn, o Options) *Conn {
	o.defaults()
	c := &Conn{
		ws:         ws,
		o:          o,
		wake:       make(chan struct{}, 1),
		readerDone: make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	// Gorilla's own limit is a backstop; Read enforces o.ReadLimit with a
	// reason.
	ws.SetReadLimit(int64(o.ReadLimit) * 4)
	ws.SetReadDeadline(time.Now().Add(o.PongWait))
	ws.SetPongHandler(func(string) error {
		return ws.SetReadDeadline(time.Now().Add(o.PongWait))
	})
	ws.SetCloseHandler(func(code int, text string) error {
		c.peerClosed.Store(true)
		// Answer the peer's close unless we started the handshake.
		c.mu.Lock()
		answered := c.closing
		c.closing = true
		c.mu.Unlock()
		if !answered {
			ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(o.WriteTimeout))
		}
		return nil
	})
	go c.writer()
	return c
}

// PauseRead makes the next Read wait d before it reads, so that the
// messages arriving meanwhile are read together: a few per system call and
// per goroutine wake-up rather than one each, which is most of what a
// stream of 20 ms audio frames costs the gateway. The wait is not cut
// short (a close waits for it too), so pauses must be short: adapters
// pause for part of a chunk, and only when that delays nothing
// (session.Call.ReadPause). For the reading goroutine only.
func (c *Conn) PauseRead(d time.Duration) { c.pause = d }

// Read returns the next message. The data is valid until the next Read.
func (c *Conn) Read() (int, []byte, error) {
	if d := c.pause; d > 0 {
		c.pause = 0
		if c.pauseT == nil {
			c.pauseT = time.NewTimer(d)
		} else {
			c.pauseT.Reset(d)
		}
		<-c.pauseT.C
	}
	typ, r, err := c.ws.NextReader()
	if err != nil {
		return 0, nil, err
	}
	if now := time.Now(); !c.closeSent.Load() && now.Sub(c.deadlineAt) >= time.Second {
		c.ws.SetReadDeadline(now.Add(c.o.PongWait))
		c.deadlineAt = now
	}
	c.buf.Reset()
	n, err := c.buf.ReadFrom(io.LimitReader(r, int64(c.o.ReadLimit)+1))
	if err != nil {
		return 0, nil, err
	}
	if n > int64(c.o.ReadLimit) {
		err := &TooBigError{Limit: c.o.ReadLimit}
		c.Close(websocket.CloseMessageTooBig, err.Error())
		return 0, nil, err
	}
	if typ == websocket.TextMessage && !utf8.Valid(c.buf.Bytes()) {
		err := &InvalidTextError{}
		c.Close(websocket.CloseInvalidFramePayloadData, err.Error())
		return 0, nil, err
	}
	return typ, c.buf.Bytes(), nil
}

// SendText queues a text message. A droppable message (a score) is the
// first to go when the queue is full; others are kept (the queue then grows
// past its bound only by such control messages, which are few).
func (c *Conn) SendText(data []byte, droppable bool) {
	c.send(outMsg{typ: websocket.TextMessage, data: data, droppable: droppable})
}

// SendBinary queues a binary message.
func (c *Conn) SendBinary(data []byte, droppable bool) {
	c.send(outMsg{typ: websocket.BinaryMessage, data: data, droppable: droppable})
}

func (c *Conn) send(m outMsg) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	if len(c.q) >= c.o.Queue {
		dropped := false
		for i, old := range c.q {
			if old.droppable {
				c.q = append(c.q[:i], c.q[i+1:]...)
				dropped = true
				break
			}
		}
		if !dropped && m.droppable {
			c.mu.Unlock()
			if c.o.OnDrop != nil {
				c.o.OnDrop()
			}
			return
		}
		if dropped && c.o.OnDrop != nil {
			defer c.o.OnDrop()
		}
	}
	c.q = append(c.q, m)
	c.mu.Unlock()
	c.signal()
}

func (c *Conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Close starts the close handshake with a code and reason after the queued
// messages are written. It is safe from any goroutine and idempotent; the
// first call's code wins.
func (c *Conn) Close(code int, reason string) {
	c.mu.Lock()
	if c.closeCode == 0 && !c.closing {
		// A close reason must fit a control frame (123 bytes) and be
		// valid UTF-8: cut at a rune boundary.
		for len(reason) > 120 {
			_, n := utf8.DecodeLastRuneInString(reason)
			reason = reason[:len(reason)-n]
		}
		if !utf8.ValidString(reason) {
			reason = strings.ToValidUTF8(reason, "?")
		}
		c.closeCode, c.closeMsg = code, reason
	}
	c.mu.Unlock()
	c.signal()
}

// Closing reports whether the close handshake has begun.
func (c *Conn) Closing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing || c.closeCode != 0
}

// PeerClosed reports whether the peer sent a close frame.
func (c *Conn) PeerClosed() bool { return c.peerClosed.Load() }

// Watch makes the writer run f once when ch closes, even while the reader
// waits for the next frame: adapters use it to close the connection when
// the gateway ends the call.
func (c *Conn) Watch(ch <-chan struct{}, f func()) {
	c.mu.Lock()
	c.watch, c.onWatch = ch, f
	c.mu.Unlock()
	c.signal()
}

// Drop closes the connection at once, without a close frame, as a broken
// network would: the reader's Read fails. The gateway uses it to hand a
// call over to a new connection of the same client.
func (c *Conn) Drop() { c.ws.NetConn().Close() }

// Done is closed when the connection is finished.
func (c *Conn) Done() <-chan struct{} { return c.writerDone }

func (c *Conn) writer() {
	defer close(c.writerDone)
	ping := time.NewTicker(c.o.PingInterval)
	defer ping.Stop()
	for {
		c.mu.Lock()
		batch := c.q
		c.q = nil
		code, msg := c.closeCode, c.closeMsg
		watch, onWatch := c.watch, c.onWatch
		c.mu.Unlock()
		for _, m := range batch {
			c.ws.SetWriteDeadline(time.Now().Add(c.o.WriteTimeout))
			if err := c.ws.WriteMessage(m.typ, m.data); err != nil {
				c.ws.Close() // the reader sees the error and finishes
				<-c.readerDone
				return
			}
			if c.o.OnWrite != nil {
				c.o.OnWrite(len(m.data))
			}
		}
		if len(batch) > 0 {
			continue
		}
		if code != 0 {
			c.mu.Lock()
			already := c.closing
			c.closing = true
			c.mu.Unlock()
			c.closeSent.Store(true)
			if !already {
				c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, msg), time.Now().Add(c.o.WriteTimeout))
			}
			// Wait for the peer's close (the reader ends) within bounds.
			c.ws.SetReadDeadline(time.Now().Add(c.o.CloseWait))
			select {
			case <-c.readerDone:
			case <-time.After(c.o.CloseWait + time.Second):
			}
			c.ws.Close()
			<-c.readerDone
			return
		}
		select {
		case <-c.wake:
		case <-watch:
			c.mu.Lock()
			c.watch = nil
			c.mu.Unlock()
			onWatch()
		case <-ping.C:
			c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.o.WriteTimeout))
		case <-c.readerDone:
			// The reader stopped (peer gone or closed): flush nothing more.
			c.ws.Close()
			return
		}
	}
}

// Finish is called by the reader once it stops reading; it waits for the
// writer to write what is queued (a final close included) and closes the
// connection.
func (c *Conn) Finish() {
	c.finishOnce.Do(func() { close(c.readerDone) })
	<-c.writerDone
}

// IsClose reports whether err is the peer closing normally or going away.
func IsClose(err error) bool {
	return websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway, websocket.CloseNoStatusReceived)
}
