package twilio

import (
	"cmp"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/calmline/calmline/gateway/wsclient"
	"github.com/calmline/calmline/lib/audio"
)

// Client streams a recording as a Twilio-style sender does: connected,
// start (with the API key in a custom parameter or a header), media per
// track every 20 ms with millisecond timestamps, stop. Tests and the load
// generator use it.
type Client struct {
	// URL is the gateway's endpoint, e.g. ws://host/ws/twilio (the
	// client adds ?envelope= for other dialects).
	URL string
	// APIKey authenticates the stream; it goes in the start's custom
	// parameters unless KeyInHeader is set.
	APIKey      string
	KeyInHeader bool
	// Envelope is the dialect to speak (Twilio when empty).
	Envelope Envelope
	// Dialer dials the WebSocket (websocket.DefaultDialer when nil).
	Dialer *websocket.Dialer
}

// StreamOptions tunes Stream.
type StreamOptions struct {
	CallID  string
	AgentID string
	// Tracks to send: "inbound" (the recording's first channel, the
	// caller) and/or "outbound" (its second, the agent). Both when the
	// recording is stereo, else inbound.
	Tracks []string
	// Encoding names the payload encoding in the start (the dialect's
	// default when empty); the payload is converted to it.
	Encoding string
	// Packet is the audio per media message (default 20 ms).
	Packet time.Duration
	// RealTime paces packets at the wall clock, as a sender does.
	RealTime bool
	// Reorder swaps each pair of consecutive media messages of a
	// track, as a dialect that does not guarantee order may deliver them.
	Reorder bool
	// NoStop ends the stream by dropping the connection without stop or
	// close frame, as senders sometimes do.
	NoStop bool
	// EmptyStopSequence sends stop with an empty sequence number, a quirk
	// of real senders.
	EmptyStopSequence bool
	// OnPacket, when set, runs after each packet time step with the
	// position reached.
	OnPacket func(position time.Duration)
	// CloseTimeout bounds the wait for the server's close after stop
	// (default 15 s).
	CloseTimeout time.Duration
}

// Result is what a streamed call produced.
type Result struct {
	// CloseCode and CloseText are the server's close frame (0 when the
	// connection ended without one).
	CloseCode int
	CloseText string
	// SecondSent holds when each whole second of audio had been sent.
	SecondSent []time.Time
}

// DialError is a stream the server refused before the upgrade.
type DialError = wsclient.RefusedError

// Conn is an open stream to the gateway, for tests that write messages by
// hand (Write writes a frame as it is, Kill drops the
// connection without a close frame, WaitClose returns the server's).
type Conn struct {
	wsclient.Conn
	env Envelope
	mu  sync.Mutex
	seq uint64
}

// Dial opens a stream (no message sent yet).
func (c *Client) Dial(ctx context.Context) (*Conn, error) {
	env := c.Envelope
	if env.Name == "" {
		env = Twilio
	}
	u := c.URL
	if env.Name != Twilio.Name {
		sep := "?"
		if strings.Contains(u, "?") {
			sep = "&"
		}
		u += sep + "envelope=" + env.Name
	}
	h := http.Header{}
	if c.KeyInHeader {
		h.Set("Authorization", "Bearer "+c.APIKey)
	}
	ws, err := wsclient.Dial(ctx, c.Dialer, "twilio", u, h)
	if err != nil {
		return nil, err
	}
	return &Conn{Conn: wsclient.Conn{WS: ws}, env: env}, nil
}

func (c *Conn) num(n uint64) any {
	if c.env.StringNumbers {
		return strconv.FormatUint(n, 10)
	}
	return n
}

// Send writes an event with the next sequence number; fields are the
// event's other top-level fields.
func (c *Conn) Send(event string, fields map[string]any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := map[string]any{"event": event}
	if event != "connected" {
		c.seq++
		m[c.env.Sequence] = c.num(c.seq)
	}
	for k, v := range fields {
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return c.Write(websocket.TextMessage, b)
}

// Start sends the start event.
func (c *Conn) Start(streamID, callID string, tracks []string, encoding string, rate int, params map[string]string) error {
	e := c.env
	start := map[string]any{
		e.MediaFormat: map[string]any{e.Encoding: encoding, e.SampleRate: c.num(uint64(rate)), e.Channels: c.num(1)},
		e.StreamID:    streamID,
	}
	if len(e.CallID) > 0 {
		start[e.CallID[0]] = callID
	}
	if e.Tracks != "" && tracks != nil {
		start[e.Tracks] = tracks
	}
	fields := map[string]any{"start": start, e.StreamID: streamID}
	if e.CustomParameters != "" {
		start[e.CustomParameters] = params
	} else if e.ExtraHeaders != "" {
		var s string
		for k, v := range params {
			if s != "" {
				s += ";"
			}
			s += k + "=" + v
		}
		fields[e.ExtraHeaders] = s
	}
	return c.Send("start", fields)
}

// Media sends one media event.
func (c *Conn) Media(streamID, track string, chunk uint64, timestampMS uint64, payload []byte) error {
	return c.Send("media", map[string]any{c.env.StreamID: streamID, "media": map[string]any{
		"track": track, "chunk": c.num(chunk), "timestamp": c.num(timestampMS), "payload": encodePayload(payload)}})
}

// Close sends a close frame.
func (c *Conn) Close() error {
	wsclient.SendClose(c.WS, time.Second)
	return c.WS.Close()
}

// Stream plays a recording as one call.
func (c *Client) Stream(ctx context.Context, rec *audio.Recording, o StreamOptions) (*Result, error) {
	conn, err := c.Dial(ctx)
	if err != nil {
		return nil, err
	}
	env := conn.env
	if o.Tracks == nil {
		o.Tracks = []string{"inbound"}
		if rec.Format.Channels == 2 {
			o.Tracks = []string{"inbound", "outbound"}
		}
	}
	o.Encoding = cmp.Or(o.Encoding, env.DefaultEncoding)
	codec, err := ParseEncoding(o.Encoding)
	if err != nil {
		conn.Close()
		return nil, err
	}
	chans, err := wsclient.Tracks(rec, codec, o.Tracks, "outbound", false)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if o.Packet <= 0 {
		o.Packet = 20 * time.Millisecond
	}
	if o.CloseTimeout <= 0 {
		o.CloseTimeout = 15 * time.Second
	}
	rate := rec.Format.SampleRate
	streamID := "MZ" + strconv.FormatInt(time.Now().UnixNano(), 36)
	params := map[string]string{}
	if !c.KeyInHeader {
		params[KeyParameter] = c.APIKey
	}
	if o.AgentID != "" {
		params[AgentParameter] = o.AgentID
	}
	res := &Result{}
	fail := func(err error) (*Result, error) {
		conn.Kill()
		return res, err
	}
	if err := conn.Send("connected", map[string]any{"protocol": "Call", "version": "1.0.0"}); err != nil {
		return fail(err)
	}
	if err := conn.Start(streamID, o.CallID, o.Tracks, o.Encoding, rate, params); err != nil {
		return fail(err)
	}
	type pkt struct {
		track string
		chunk uint64
		ts    uint64
		data  []byte
	}
	var held []pkt
	n := len(chans[0])
	res.SecondSent, err = wsclient.PlayBytes(ctx, o.RealTime, o.Packet, rate, codec.BytesPerSample(), n, o.OnPacket, func(i, off, end int) error {
		ts := uint64(time.Duration(i) * o.Packet / time.Millisecond)
		for k, tr := range o.Tracks {
			p := pkt{tr, uint64(i + 1), ts, chans[k][off:end]}
			if o.Reorder && i%2 == 0 {
				held = append(held, p)
				continue
			}
			if err := conn.Media(streamID, p.track, p.chunk, p.ts, p.data); err != nil {
				return err
			}
		}
		if !o.Reorder || i%2 == 1 || end >= n {
			for _, p := range held {
				if err := conn.Media(streamID, p.track, p.chunk, p.ts, p.data); err != nil {
					return err
				}
			}
			held = held[:0]
		}
		return nil
	})
	if err != nil {
		return fail(err)
	}
	if o.NoStop {
		conn.Kill()
		return res, nil
	}
	stop := map[string]any{env.StreamID: streamID, "stop": map[string]any{"callSid": o.CallID}}
	if o.EmptyStopSequence {
		conn.mu.Lock()
		b, _ := json.Marshal(map[string]any{"event": "stop", env.Sequence: "", env.StreamID: streamID})
		conn.mu.Unlock()
		err = conn.Write(websocket.TextMessage, b)
	} else {
		err = conn.Send("stop", stop)
	}
	if err != nil {
		return fail(err)
	}
	res.CloseCode, res.CloseText, err = conn.WaitNormalClose("twilio: stream", o.CloseTimeout)
	return res, err
}
