package loadgen

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/calmline/calmline/gateway/edge"
	"github.com/calmline/calmline/gateway/twilio"
	"github.com/calmline/calmline/lib/audio"
)

func init() { Register("twilio", Twilio{}) }

// Twilio is the client side of Twilio-style Media Streams
// (docs/protocols.md), built on gateway/twilio's Client: connected, start
// with the API key in the custom parameters (as a Twilio <Stream> sends
// it: a sender cannot set headers), one media message per track every
// 20 ms (the caller inbound, the agent outbound, base64 μ-law with
// millisecond timestamps), stop. The gateway sends nothing back: no
// scores, no answer to start (a refusal is its close frame, reported as a
// *RefusedError through Events.Closed), and a close 1000 after stop once
// the call has ended, so the stored report is fetched to check it.
type Twilio struct{}

// Traits implements Describer.
func (Twilio) Traits() Traits { return Traits{} }

// Check implements Checker: Twilio streams carry μ-law at 8 kHz, a
// track per role.
func (Twilio) Check(f audio.Format, roles []string) error {
	if f.Codec != audio.CodecPCMU || f.SampleRate != 8000 {
		return fmt.Errorf("Twilio streams carry μ-law at 8000 Hz; the audio is %v at %d Hz (use --codec pcmu and an 8 kHz file)", f.Codec, f.SampleRate)
	}
	_, err := twilioTracks(roles)
	return err
}

func twilioTracks(roles []string) ([]string, error) {
	var tracks []string
	for _, r := range roles {
		switch r {
		case "caller":
			tracks = append(tracks, "inbound")
		case "agent":
			tracks = append(tracks, "outbound")
		default:
			return nil, fmt.Errorf("role %q: Twilio tracks are the caller (inbound) and the agent (outbound)", r)
		}
	}
	if len(tracks) == 2 && tracks[0] == tracks[1] {
		return nil, fmt.Errorf("roles %v: two channels of the same role", roles)
	}
	return tracks, nil
}

// twilioRefusals are the close codes with which the gateway refuses a
// stream at its start.
var twilioRefusals = map[int]bool{
	edge.CloseUnauthenticated:    true,
	edge.CloseForbidden:          true,
	edge.CloseOverQuota:          true,
	edge.CloseCallLive:           true,
	websocket.CloseTryAgainLater: true,
}

// Open implements Protocol.
func (Twilio) Open(ctx context.Context, spec CallSpec, ev Events) (Conn, error) {
	tracks, err := twilioTracks(spec.Roles)
	if err != nil {
		return nil, err
	}
	cl := &twilio.Client{URL: spec.URL, APIKey: spec.APIKey, Dialer: &websocket.Dialer{
		NetDialContext:   spec.Dialer.DialContext,
		TLSClientConfig:  spec.TLS,
		HandshakeTimeout: 10 * time.Second,
		ReadBufferSize:   1024,
		WriteBufferSize:  1024,
	}}
	conn, err := cl.Dial(ctx)
	if err != nil {
		var de *twilio.DialError
		if errors.As(err, &de) {
			return nil, &RefusedError{Status: de.Status, Reason: de.Body}
		}
		return nil, err
	}
	c := &twilioConn{conn: conn, tracks: tracks, stream: "MZ" + spec.CallID, callID: spec.CallID, buf: make([][]byte, len(tracks)), seq: 1}
	params := map[string]string{twilio.KeyParameter: spec.APIKey, twilio.AgentParameter: spec.AgentID}
	if err := conn.Send("connected", map[string]any{"protocol": "Call", "version": "1.0.0"}); err != nil {
		conn.Kill()
		return nil, err
	}
	if err := conn.Start(c.stream, spec.CallID, tracks, "audio/x-mulaw", 8000, params); err != nil {
		conn.Kill()
		return nil, err
	}
	go c.read(ev)
	return c, nil
}

type twilioConn struct {
	conn     *twilio.Conn
	tracks   []string
	stream   string
	callID   string
	buf      [][]byte // a track's payload, de-interleaved
	msg      []byte   // a media message, built in place
	chunk    uint64
	seq      uint64 // the last sequence number sent (start's is 1)
	stopping atomic.Bool
}

// readLimit bounds how long the reader waits for the gateway's close: it
// sends nothing else.
const readLimit = 24 * time.Hour

// read is the stream's reader goroutine: the gateway sends only its close.
func (c *twilioConn) read(ev Events) {
	code, reason, err := c.conn.WaitClose(readLimit)
	stopping := c.stopping.Load()
	switch {
	case err != nil:
	case stopping && code == websocket.CloseNormalClosure:
		ev.Stopped(Stopped{Verify: true})
	case !stopping && twilioRefusals[code]:
		err = &RefusedError{CloseCode: code, Reason: reason}
	}
	ev.Closed(code, reason, err)
}

func (c *twilioConn) Audio(frame []byte) error {
	n := len(c.tracks)
	per := len(frame) / n
	for t := range n {
		b := c.buf[t][:0]
		for i := t; i < len(frame); i += n {
			b = append(b, frame[i])
		}
		c.buf[t] = b
	}
	ts := c.chunk * 20
	c.chunk++
	for t, tr := range c.tracks {
		// Built by hand, not with encoding/json: at hundreds of calls
		// the simulator's own CPU would otherwise make it late, and
		// late frames reach the gateway in bursts that cost it less
		// than real-time pacing does. The message is what twilio.Conn's
		// Media writes (the same fields, numbers as Twilio sends them).
		c.seq++
		m := append(c.msg[:0], `{"event":"media","sequenceNumber":"`...)
		m = strconv.AppendUint(m, c.seq, 10)
		m = append(m, `","streamSid":"`...)
		m = append(m, c.stream...)
		m = append(m, `","media":{"track":"`...)
		m = append(m, tr...)
		m = append(m, `","chunk":"`...)
		m = strconv.AppendUint(m, c.chunk, 10)
		m = append(m, `","timestamp":"`...)
		m = strconv.AppendUint(m, ts, 10)
		m = append(m, `","payload":"`...)
		m = base64.StdEncoding.AppendEncode(m, c.buf[t][:per])
		m = append(m, `"}}`...)
		c.msg = m
		if err := c.conn.Write(websocket.TextMessage, m); err != nil {
			return err
		}
	}
	return nil
}

func (c *twilioConn) Stop() error {
	c.stopping.Store(true)
	c.seq++
	b, err := json.Marshal(map[string]any{"event": "stop", "sequenceNumber": strconv.FormatUint(c.seq, 10), "streamSid": c.stream,
		"stop": map[string]any{"callSid": c.callID}})
	if err != nil {
		return err
	}
	return c.conn.Write(websocket.TextMessage, b)
}

func (c *twilioConn) Close() error {
	c.conn.Kill()
	return nil
}
