package asterisk

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/gorilla/websocket"

	"github.com/calmline/calmline/gateway/wsclient"
	"github.com/calmline/calmline/lib/audio"
)

// Client plays calls as Asterisk's chan_websocket does: one WebSocket
// per leg (subprotocol "media", Basic authentication with the tenant's
// API key as password, call id and role in the URL), MEDIA_START, then
// the leg's audio in 20 ms frames, and a close at hang-up. Tests and the
// load generator use it.
type Client struct {
	// URL is the gateway's endpoint, e.g. ws://host/ws/asterisk.
	URL    string
	APIKey string
	// JSON sends control messages in chan_websocket's JSON form instead
	// of plain text.
	JSON bool
	// Dialer dials the WebSockets (websocket.DefaultDialer when nil).
	Dialer *websocket.Dialer
}

// Leg is one leg's WebSocket (Kill drops it without a close frame,
// WaitClose returns the server's close frame).
type Leg struct {
	wsclient.Conn
	role string
}

// DialError is a leg the server refused before the upgrade.
type DialError = wsclient.RefusedError

// DialLeg opens one leg of a call. legs is 1 or 2 (0 leaves it out of
// the URL, which means 2).
func (c *Client) DialLeg(ctx context.Context, callID, role string, legs int, agentID string) (*Leg, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	q.Set("call_id", callID)
	q.Set("role", role)
	if legs > 0 {
		q.Set("legs", strconv.Itoa(legs))
	}
	if agentID != "" {
		q.Set("agent_id", agentID)
	}
	u.RawQuery = q.Encode()
	h := http.Header{}
	req := http.Request{Header: h}
	req.SetBasicAuth("asterisk", c.APIKey)
	d := c.Dialer
	if d == nil {
		d = &websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	}
	dd := *d
	dd.Subprotocols = []string{Subprotocol}
	ws, err := wsclient.Dial(ctx, &dd, "asterisk", u.String(), h)
	if err != nil {
		return nil, err
	}
	if ws.Subprotocol() != Subprotocol {
		ws.Close()
		return nil, fmt.Errorf("asterisk: the server did not select the %q subprotocol", Subprotocol)
	}
	return &Leg{Conn: wsclient.Conn{WS: ws}, role: role}, nil
}

// MediaStart sends MEDIA_START for the format (ulaw, alaw, slin, slin16).
func (l *Leg) MediaStart(jsonForm bool, channelID, format string) error {
	frame := 160
	switch format {
	case "slin":
		frame = 320
	case "slin16":
		frame = 640
	}
	msg := FormatMediaStart(jsonForm, "calmline-"+l.role, "WebSocket/calmline-"+l.role+"/0x1", channelID, format, frame, 20)
	return l.Text(msg)
}

// Text writes a text frame.
func (l *Leg) Text(s string) error { return l.Write(websocket.TextMessage, []byte(s)) }

// Send writes a binary media frame.
func (l *Leg) Send(frame []byte) error { return l.Write(websocket.BinaryMessage, frame) }

// Hangup closes the leg as Asterisk does at hang-up and waits for the
// server's close.
func (l *Leg) Hangup(timeout time.Duration) error {
	wsclient.SendClose(l.WS, time.Second)
	_, _, err := l.WaitNormalClose("asterisk: leg", timeout)
	return err
}

// SendClose writes the close frame of a hang-up and returns without
// waiting for the server's: a load generator's legs end on their readers
// (WaitClose).
func (l *Leg) SendClose() error {
	return wsclient.SendClose(l.WS, 10*time.Second)
}

// StreamOptions tunes Stream.
type StreamOptions struct {
	CallID  string
	AgentID string
	// Roles of the legs to play: the recording's first channel is the
	// caller, its second the agent. Both for a stereo recording, else
	// the caller.
	Roles []string
	// Format is the legs' format (default ulaw).
	Format string
	// Packet is the audio per frame (default 20 ms).
	Packet time.Duration
	// RealTime paces frames at the wall clock, as Asterisk sends.
	RealTime bool
	// OnPacket, when set, runs after each packet time step with the
	// position reached.
	OnPacket func(position time.Duration)
	// CloseTimeout bounds the wait for the server's close (default 15 s).
	CloseTimeout time.Duration
}

// Result is what a streamed call produced.
type Result struct {
	// SecondSent holds when each whole second of audio had been sent.
	SecondSent []time.Time
}

// Stream plays a recording as one call: a leg per role, frames sent in
// step on every leg, then every leg hangs up.
func (c *Client) Stream(ctx context.Context, rec *audio.Recording, o StreamOptions) (*Result, error) {
	if o.Roles == nil {
		o.Roles = []string{RoleCaller}
		if rec.Format.Channels == 2 {
			o.Roles = []string{RoleCaller, RoleAgent}
		}
	}
	o.Format = cmp.Or(o.Format, "ulaw")
	if o.Packet <= 0 {
		o.Packet = 20 * time.Millisecond
	}
	if o.CloseTimeout <= 0 {
		o.CloseTimeout = 15 * time.Second
	}
	codec, rate, err := (&Event{Fields: map[string]string{"format": o.Format}}).MediaFormat()
	if err != nil {
		return nil, err
	}
	if rate != rec.Format.SampleRate {
		return nil, fmt.Errorf("asterisk: the recording is %d Hz; %s is %d Hz", rec.Format.SampleRate, o.Format, rate)
	}
	chans, err := wsclient.Tracks(rec, codec, o.Roles, RoleAgent, false)
	if err != nil {
		return nil, err
	}
	var legs []*Leg
	kill := func() {
		for _, l := range legs {
			l.Kill()
		}
	}
	for _, role := range o.Roles {
		l, err := c.DialLeg(ctx, o.CallID, role, len(o.Roles), o.AgentID)
		if err != nil {
			kill()
			return nil, err
		}
		legs = append(legs, l)
	}
	// The legs start together, as the dialplan creates them: the server
	// places each on the call's timeline by when its MEDIA_START came.
	for i, l := range legs {
		if err := l.MediaStart(c.JSON, fmt.Sprintf("%d.%d", time.Now().Unix(), i), o.Format); err != nil {
			kill()
			return nil, err
		}
	}
	res := &Result{}
	n := len(chans[0])
	res.SecondSent, err = wsclient.PlayBytes(ctx, o.RealTime, o.Packet, rate, codec.BytesPerSample(), n, o.OnPacket, func(_, off, end int) error {
		for i, l := range legs {
			if err := l.Send(chans[i][off:end]); err != nil {
				return fmt.Errorf("asterisk: %s leg: %w", o.Roles[i], err)
			}
		}
		return nil
	})
	if err != nil {
		kill()
		return res, err
	}
	var errs []error
	for _, l := range legs {
		if err := l.Hangup(o.CloseTimeout); err != nil {
			errs = append(errs, fmt.Errorf("%s leg: %w", l.role, err))
		}
	}
	return res, errors.Join(errs...)
}
