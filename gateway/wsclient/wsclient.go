// Package wsclient provides what the protocol clients (tests and
// calmline loadgen play calls with them) share: dialing with the
// server's refusal decoded, waiting for the server's close frame, and
// pacing audio at the wall clock.
package wsclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/gorilla/websocket"

	"github.com/calmline/calmline/gateway/stereo"
	"github.com/calmline/calmline/lib/audio"
)

// RefusedError is a connection the server refused before the upgrade.
type RefusedError struct {
	// Protocol names the client ("audiohook", "twilio", "asterisk").
	Protocol string
	Status   int
	// Code is the JSON error body's code ("" when the body is not one).
	Code string
	Body string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("%s: server refused the connection: %d %s", e.Protocol, e.Status, e.Body)
}

// Dial opens a WebSocket with d (websocket.DefaultDialer when nil); a
// refusal before the upgrade is a *RefusedError with the server's status
// and body.
func Dial(ctx context.Context, d *websocket.Dialer, protocol, url string, h http.Header) (*websocket.Conn, error) {
	if d == nil {
		d = websocket.DefaultDialer
	}
	ws, resp, err := d.DialContext(ctx, url, h)
	if err == nil {
		return ws, nil
	}
	if resp == nil {
		return nil, fmt.Errorf("%s: dial: %w", protocol, err)
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	var body struct {
		Error struct{ Code string }
	}
	json.Unmarshal(raw, &body)
	return nil, &RefusedError{Protocol: protocol, Status: resp.StatusCode, Code: body.Error.Code, Body: string(raw)}
}

// SendClose writes a normal-closure close frame.
func SendClose(ws *websocket.Conn, timeout time.Duration) error {
	return ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(timeout))
}

// WaitClose reads until the server closes the connection, closes it, and
// returns the server's close frame (an error when the connection ended
// without one or timeout passed first).
func WaitClose(ws *websocket.Conn, timeout time.Duration) (int, string, error) {
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(timeout))
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			return CloseOf(err)
		}
	}
}

// CloseOf returns the close frame a read error carries, or the error
// when it carries none.
func CloseOf(err error) (int, string, error) {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code, ce.Text, nil
	}
	return 0, "", err
}

// Pacer steps a stream's packets: at the wall clock when real time was
// asked for, else as fast as they are written; it notes when each whole
// second of audio had been sent.
type Pacer struct {
	tick       *time.Ticker
	nextSecond time.Duration
	// SecondSent holds when each whole second of audio had been sent.
	SecondSent []time.Time
}

// NewPacer returns a pacer of packet steps; Stop releases it.
func NewPacer(realTime bool, packet time.Duration) *Pacer {
	p := &Pacer{nextSecond: time.Second}
	if realTime {
		p.tick = time.NewTicker(packet)
	}
	return p
}

// Wait waits for the next packet's time (at once when not in real time).
func (p *Pacer) Wait(ctx context.Context) error {
	if p.tick == nil {
		return nil
	}
	select {
	case <-p.tick.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Sent records that the stream has reached pos.
func (p *Pacer) Sent(pos time.Duration) {
	for pos >= p.nextSecond {
		p.SecondSent = append(p.SecondSent, time.Now())
		p.nextSecond += time.Second
	}
}

// Stop releases the pacer's ticker.
func (p *Pacer) Stop() {
	if p.tick != nil {
		p.tick.Stop()
	}
}

// Play sends a stream of packets paced as a Pacer: send sends packet i
// and returns the stream position reached, which onPacket (when set) is
// given. It returns when each whole second of audio had been sent, and
// the first error of send or of the pacing (ctx ended).
func Play(ctx context.Context, realTime bool, packet time.Duration, packets int, onPacket func(time.Duration), send func(i int) (time.Duration, error)) ([]time.Time, error) {
	p := NewPacer(realTime, packet)
	defer p.Stop()
	for i := range packets {
		if err := p.Wait(ctx); err != nil {
			return p.SecondSent, err
		}
		pos, err := send(i)
		if err != nil {
			return p.SecondSent, err
		}
		p.Sent(pos)
		if onPacket != nil {
			onPacket(pos)
		}
	}
	return p.SecondSent, nil
}

// PlayBytes plays channels of n bytes each (samples of width bytes at
// rate Hz) as Play, in packets of the duration packet: send sends bytes
// [off, end) of each channel as packet i.
func PlayBytes(ctx context.Context, realTime bool, packet time.Duration, rate, width, n int, onPacket func(time.Duration), send func(i, off, end int) error) ([]time.Time, error) {
	step := int(packet*time.Duration(rate)/time.Second) * width
	if step <= 0 {
		return nil, fmt.Errorf("a packet of %s holds no whole sample at %d Hz", packet, rate)
	}
	return Play(ctx, realTime, packet, (n+step-1)/step, onPacket, func(i int) (time.Duration, error) {
		off := i * step
		end := min(off+step, n)
		return time.Duration(end/width) * time.Second / time.Duration(rate), send(i, off, end)
	})
}

// Tracks splits a recording into what each of a stream's tracks sends, in
// codec: the track named agent sends the recording's second channel, any
// other its first. A mono recording's one channel serves every track,
// unless strict, when a track without its channel is an error.
func Tracks(rec *audio.Recording, codec audio.Codec, tracks []string, agent string, strict bool) ([][]byte, error) {
	if len(tracks) == 0 {
		return nil, errors.New("no tracks to send")
	}
	chans, err := stereo.Split(rec, codec)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(tracks))
	for i, name := range tracks {
		ch := 0
		if name == agent {
			ch = 1
		}
		if ch >= len(chans) {
			if strict {
				return nil, fmt.Errorf("the recording has no %s channel", name)
			}
			ch = 0
		}
		out[i] = chans[ch]
	}
	return out, nil
}

// Conn is a client's WebSocket: writes with a deadline, the wait for the
// server's close, and a drop without a close frame.
type Conn struct{ WS *websocket.Conn }

// Write writes a message as it is.
func (c Conn) Write(typ int, b []byte) error {
	c.WS.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return c.WS.WriteMessage(typ, b)
}

// Kill drops the connection without a close frame, as a crashed client
// would.
func (c Conn) Kill() { c.WS.NetConn().Close() }

// WaitClose reads until the server closes the connection and returns its
// close frame (see WaitClose).
func (c Conn) WaitClose(timeout time.Duration) (int, string, error) { return WaitClose(c.WS, timeout) }

// WaitNormalClose is WaitClose for a stream that ended well: a close
// frame other than 1000 is an error, "what closed with CODE TEXT".
func (c Conn) WaitNormalClose(what string, timeout time.Duration) (int, string, error) {
	code, text, err := c.WaitClose(timeout)
	if err == nil && code != websocket.CloseNormalClosure {
		err = fmt.Errorf("%s closed with %d %s", what, code, text)
	}
	return code, text, err
}
