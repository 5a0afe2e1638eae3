package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

func init() { Register("native", Native{}) }

// Native is the client side of calmline's native protocol
// (docs/protocol-native.md).
type Native struct{}

// writeTimeout bounds each write to the gateway.
const writeTimeout = 10 * time.Second

// CanResume says the native protocol resumes calls (loadgen --reconnect).
func (Native) CanResume() bool { return true }

// Open implements Protocol.
func (Native) Open(ctx context.Context, spec CallSpec, ev Events) (Conn, error) {
	d := websocket.Dialer{
		NetDialContext:   spec.Dialer.DialContext,
		HandshakeTimeout: 10 * time.Second,
		ReadBufferSize:   1024,
		WriteBufferSize:  1024,
		Subprotocols:     []string{"calmline.native.v1"},
		TLSClientConfig:  spec.TLS,
	}
	ws, resp, err := d.DialContext(ctx, spec.URL, http.Header{"Authorization": {"Bearer " + spec.APIKey}})
	if err != nil {
		if resp != nil {
			defer resp.Body.Close()
			var body struct {
				Error struct{ Code, Message string }
			}
			json.NewDecoder(resp.Body).Decode(&body)
			return nil, &RefusedError{Status: resp.StatusCode, Code: body.Error.Code, Reason: body.Error.Message}
		}
		return nil, err
	}
	start := map[string]any{"type": "start", "call_id": spec.CallID, "agent_id": spec.AgentID,
		"codec": spec.Format.Codec.String(), "sample_rate": spec.Format.SampleRate, "channels": spec.Roles}
	if spec.Resume {
		start["resume"] = true
		start["resume_at_sample"] = spec.ResumeAt
	}
	ws.SetWriteDeadline(time.Now().Add(writeTimeout))
	if err := ws.WriteJSON(start); err != nil {
		ws.Close()
		return nil, err
	}
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	var first nativeMsg
	_, data, err := ws.ReadMessage()
	if err != nil {
		ws.Close()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return nil, &RefusedError{CloseCode: ce.Code, Reason: ce.Text}
		}
		return nil, fmt.Errorf("waiting for started: %w", err)
	}
	if err := json.Unmarshal(data, &first); err != nil || first.Type != "started" {
		ws.Close()
		return nil, fmt.Errorf("answer to start: %.100s", data)
	}
	ws.SetReadDeadline(time.Time{})
	c := &nativeConn{ws: ws, nc: ws.NetConn()}
	// gorilla's answer to a ping sets the connection's write deadline to
	// its own; the next audio write sets ours again.
	ws.SetPingHandler(func(data string) error {
		err := ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		c.deadlineSet.Store(false)
		var ne net.Error
		if err == websocket.ErrCloseSent || errors.As(err, &ne) {
			return nil
		}
		return err
	})
	if first.ResumedAt != nil {
		c.resumedAt = *first.ResumedAt
	}
	go c.read(ev)
	return c, nil
}

type nativeMsg struct {
	Type      string  `json:"type"`
	EndSample uint64  `json:"end_sample"`
	Error     string  `json:"error"`
	ResumedAt *uint64 `json:"resumed_at_sample"`
	Report    *struct {
		Incomplete bool   `json:"incomplete"`
		Chunks     uint64 `json:"chunks"`
		AudioBytes uint64 `json:"audio_bytes"`
	} `json:"report"`
}

type nativeConn struct {
	ws *websocket.Conn
	// nc is ws's connection: audio frames are encoded here and written to
	// it directly, several in one write when the pacer sends several
	// (Flush). A Write on a net.Conn (or tls.Conn) writes all its bytes
	// before another goroutine's Write starts, so the frames gorilla
	// writes from the reader (a pong, a close) never split one of ours.
	nc          net.Conn
	out         []byte // frames encoded since the last Flush
	writes      int
	deadlineSet atomic.Bool
	resumedAt   uint64
}

// ResumedAt implements Resumer.
func (c *nativeConn) ResumedAt() uint64 { return c.resumedAt }

// read is the call's reader goroutine; it ends with the connection.
func (c *nativeConn) read(ev Events) {
	defer c.ws.Close()
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				ev.Closed(ce.Code, ce.Text, nil)
			} else {
				ev.Closed(0, "", err)
			}
			return
		}
		var m nativeMsg
		if json.Unmarshal(data, &m) != nil {
			continue
		}
		switch m.Type {
		case "score":
			ev.Score(m.EndSample)
		case "stopped":
			st := Stopped{Error: m.Error}
			if m.Report != nil {
				st.ReportStored, st.Incomplete, st.Chunks, st.AudioBytes = true, m.Report.Incomplete, m.Report.Chunks, m.Report.AudioBytes
			}
			ev.Stopped(st)
		}
	}
}

// Audio encodes frame as one binary message; Flush sends it.
func (c *nativeConn) Audio(frame []byte) error {
	c.out = appendFrame(c.out, websocket.BinaryMessage, frame, newMaskKey())
	return nil
}

// Flush writes the messages encoded since the last Flush in one write.
func (c *nativeConn) Flush() error {
	if len(c.out) == 0 {
		return nil
	}
	// A deadline per second of writes, not per write: setting it costs.
	if c.writes%50 == 0 || !c.deadlineSet.Load() {
		c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
		c.deadlineSet.Store(true)
	}
	c.writes++
	_, err := c.nc.Write(c.out)
	c.out = c.out[:0]
	return err
}

func (c *nativeConn) Stop() error {
	c.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
	return c.ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"stop"}`))
}

func (c *nativeConn) Close() error { return c.ws.Close() }
