package loadgen

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/calmline/calmline/gateway/asterisk"
	"github.com/calmline/calmline/gateway/edge"
	"github.com/calmline/calmline/lib/audio"
)

func init() { Register("asterisk", Asterisk{}) }

// Asterisk is the client side of Asterisk's chan_websocket
// (docs/protocols.md), built on gateway/asterisk's Client: one WebSocket
// per role (subprotocol "media", Basic authentication with the API key as
// password, call id and role in the URL), MEDIA_START on each, then each
// leg's audio in 20 ms frames, and a close frame per leg at the hang-up.
// The gateway sends nothing back but its close frames; it stores the
// report after the last leg's close, so the stored report is fetched
// (asked for again until it is there) to check it.
type Asterisk struct{}

// asteriskSlack is the audio a stored report may hold beyond what was
// sent: the later leg starts on the call's timeline when its MEDIA_START
// arrived, after the first's, and its head is silence.
const asteriskSlack = time.Second

// Traits implements Describer.
func (Asterisk) Traits() Traits { return Traits{ReportSlack: asteriskSlack} }

// Check implements Checker: a leg per role, in a format chan_websocket
// names.
func (Asterisk) Check(f audio.Format, roles []string) error {
	if _, err := asteriskFormat(f); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, r := range roles {
		if r != asterisk.RoleCaller && r != asterisk.RoleAgent {
			return fmt.Errorf("role %q: Asterisk legs are the caller and the agent", r)
		}
		if seen[r] {
			return fmt.Errorf("roles %v: two legs of the same role", roles)
		}
		seen[r] = true
	}
	return nil
}

func asteriskFormat(f audio.Format) (string, error) {
	switch {
	case f.Codec == audio.CodecPCMU && f.SampleRate == 8000:
		return "ulaw", nil
	case f.Codec == audio.CodecPCMA && f.SampleRate == 8000:
		return "alaw", nil
	case f.Codec == audio.CodecL16 && f.SampleRate == 8000:
		return "slin", nil
	case f.Codec == audio.CodecL16 && f.SampleRate == 16000:
		return "slin16", nil
	}
	return "", fmt.Errorf("chan_websocket carries ulaw, alaw, slin or slin16; the audio is %v at %d Hz", f.Codec, f.SampleRate)
}

// asteriskRefusals are the close codes with which the gateway refuses a
// leg after its MEDIA_START (the call could not start).
var asteriskRefusals = map[int]bool{
	edge.CloseOverQuota:          true,
	edge.CloseCallLive:           true,
	websocket.CloseTryAgainLater: true,
}

// Open implements Protocol.
func (Asterisk) Open(ctx context.Context, spec CallSpec, ev Events) (Conn, error) {
	format, err := asteriskFormat(spec.Format)
	if err != nil {
		return nil, err
	}
	cl := &asterisk.Client{URL: spec.URL, APIKey: spec.APIKey, Dialer: &websocket.Dialer{
		NetDialContext:   spec.Dialer.DialContext,
		TLSClientConfig:  spec.TLS,
		HandshakeTimeout: 10 * time.Second,
		ReadBufferSize:   1024,
		WriteBufferSize:  1024,
	}}
	c := &asteriskConn{width: spec.Format.Codec.BytesPerSample(), buf: make([][]byte, len(spec.Roles))}
	kill := func() {
		for _, l := range c.legs {
			l.Kill()
		}
	}
	for _, role := range spec.Roles {
		l, err := cl.DialLeg(ctx, spec.CallID, role, len(spec.Roles), spec.AgentID)
		if err != nil {
			kill()
			var de *asterisk.DialError
			if errors.As(err, &de) {
				return nil, &RefusedError{Status: de.Status, Reason: de.Body}
			}
			return nil, err
		}
		c.legs = append(c.legs, l)
	}
	for i, l := range c.legs {
		if err := l.MediaStart(false, fmt.Sprintf("%s.%d", spec.CallID, i), format); err != nil {
			kill()
			return nil, err
		}
	}
	c.left.Store(int32(len(c.legs)))
	for _, l := range c.legs {
		go c.read(l, ev)
	}
	return c, nil
}

type asteriskConn struct {
	legs     []*asterisk.Leg
	width    int
	buf      [][]byte
	stopping atomic.Bool
	left     atomic.Int32 // legs whose reader has not ended

	mu     sync.Mutex
	code   int // the first close that was not 1000, else 1000
	reason string
	err    error
}

// read is a leg's reader goroutine: the gateway sends only its close. The
// last leg to end reports the call's end.
func (c *asteriskConn) read(l *asterisk.Leg, ev Events) {
	code, reason, err := l.WaitClose(readLimit)
	c.mu.Lock()
	if c.code == 0 || (c.code == websocket.CloseNormalClosure && code != websocket.CloseNormalClosure) {
		c.code, c.reason = code, reason
	}
	if err != nil && c.err == nil {
		c.err = err
	}
	if c.left.Add(-1) > 0 {
		if !c.stopping.Load() {
			// One leg closed by the gateway: the call is over for the
			// other too.
			for _, o := range c.legs {
				if o != l {
					o.SendClose()
				}
			}
		}
		c.mu.Unlock()
		return
	}
	code, reason, err = c.code, c.reason, c.err
	c.mu.Unlock()
	stopping := c.stopping.Load()
	switch {
	case err != nil:
	case stopping && code == websocket.CloseNormalClosure:
		ev.Stopped(Stopped{Verify: true})
	case !stopping && asteriskRefusals[code]:
		err = &RefusedError{CloseCode: code, Reason: reason}
	}
	ev.Closed(code, reason, err)
}

func (c *asteriskConn) Audio(frame []byte) error {
	n := len(c.legs)
	if n == 1 {
		return c.legs[0].Send(frame)
	}
	w := c.width
	for t := range n {
		b := c.buf[t][:0]
		for i := t * w; i < len(frame); i += n * w {
			b = append(b, frame[i:i+w]...)
		}
		c.buf[t] = b
	}
	for t, l := range c.legs {
		if err := l.Send(c.buf[t]); err != nil {
			return err
		}
	}
	return nil
}

func (c *asteriskConn) Stop() error {
	c.stopping.Store(true)
	var errs []error
	for _, l := range c.legs {
		errs = append(errs, l.SendClose())
	}
	return errors.Join(errs...)
}

func (c *asteriskConn) Close() error {
	for _, l := range c.legs {
		l.Kill()
	}
	return nil
}
