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
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code, ce.Text, nil
			}
			return 0, "", err
		}
	}
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
