package loadgen

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/calmline/calmline/gateway/audiohook"
	"github.com/calmline/calmline/lib/audio"
)

func init() { Register("audiohook", AudioHook{}) }

// AudioHook is the client side of Genesys AudioHook v2 (docs/protocols.md),
// built on gateway/audiohook's Client: a signed connection request (with
// CallSpec.ClientSecret), open offering the call's one format (PCMU 8 kHz;
// caller = external, agent = internal), binary frames, a ping every 5 s of
// audio as Genesys Cloud sends, and close → closed at the hang-up. Scores
// come back as calmline.score events; closed comes after the report is
// stored but carries no figures, so the stored report is fetched to check
// it.
type AudioHook struct{}

// pingEvery is how many 20 ms frames go between pings: 5 s, as Genesys
// Cloud.
const pingEvery = 250

// Traits implements Describer.
func (AudioHook) Traits() Traits { return Traits{Scores: true} }

// Check implements Checker: AudioHook carries PCMU at 8 kHz, one or two
// channels, external (caller) and internal (agent).
func (AudioHook) Check(f audio.Format, roles []string) error {
	if f.Codec != audio.CodecPCMU || f.SampleRate != 8000 {
		return fmt.Errorf("AudioHook carries PCMU at 8000 Hz; the audio is %v at %d Hz (use --codec pcmu and an 8 kHz file)", f.Codec, f.SampleRate)
	}
	_, err := audiohookChannels(roles)
	return err
}

// audiohookChannels names the AudioHook channels for the roles.
func audiohookChannels(roles []string) ([]string, error) {
	var chans []string
	for _, r := range roles {
		switch r {
		case "caller":
			chans = append(chans, "external")
		case "agent":
			chans = append(chans, "internal")
		default:
			return nil, fmt.Errorf("role %q: AudioHook channels are the caller (external) and the agent (internal)", r)
		}
	}
	if len(chans) == 2 && chans[0] == chans[1] {
		return nil, fmt.Errorf("roles %v: two channels of the same role", roles)
	}
	return chans, nil
}

// Open implements Protocol.
func (AudioHook) Open(ctx context.Context, spec CallSpec, ev Events) (Conn, error) {
	chans, err := audiohookChannels(spec.Roles)
	if err != nil {
		return nil, err
	}
	cl := &audiohook.Client{
		URL:          spec.URL,
		APIKey:       spec.APIKey,
		ClientSecret: spec.ClientSecret,
		Dialer: &websocket.Dialer{
			NetDialContext:   spec.Dialer.DialContext,
			TLSClientConfig:  spec.TLS,
			HandshakeTimeout: 10 * time.Second,
			ReadBufferSize:   1024,
			WriteBufferSize:  1024,
		},
	}
	c := &audiohookConn{conv: ConversationID(spec.CallID)}
	s, err := cl.Open(ctx, audiohook.OpenRequest{
		ConversationID: c.conv,
		AgentID:        spec.AgentID,
		Media:          []audiohook.MediaParameter{{Type: "audio", Format: "PCMU", Channels: chans, Rate: 8000}},
		Timeout:        10 * time.Second,
		OnEvent:        func(e audiohook.Event) { c.event(e, ev) },
		OnEnd: func(code int, reason string, err error) {
			if d := c.disconnect.Load(); d != nil && !c.stopping.Load() {
				err = d
			}
			ev.Closed(code, reason, err)
			c.ended.Store(true)
			if s := c.s.Load(); s != nil {
				s.Drop()
			}
		},
	})
	if err != nil {
		var de *audiohook.DialError
		var dis *audiohook.DisconnectedError
		switch {
		case errors.As(err, &de):
			reason := de.Body
			if len(reason) > 200 {
				reason = reason[:200]
			}
			return nil, &RefusedError{Status: de.Status, Code: de.Code, Reason: reason}
		case errors.As(err, &dis):
			return nil, &RefusedError{Disconnect: dis.Reason, Reason: dis.Info}
		}
		return nil, err
	}
	c.s.Store(s)
	if c.ended.Load() { // the connection ended before the store
		s.Drop()
	}
	if sel := s.Selected(); len(sel.Channels) != len(chans) || sel.Channels[0] != chans[0] {
		s.Drop()
		return nil, fmt.Errorf("audiohook: the gateway selected %v; offered %v", sel.Channels, chans)
	}
	return c, nil
}

// ConversationID is the AudioHook conversation id (a UUID, as the protocol
// wants) under which loadgen streams, and fullcall stores, the call with
// the given loadgen call id; derived from it, so that reruns with the same
// prefix name the same calls.
func ConversationID(callID string) string {
	var b [16]byte
	h := fnv64(callID)
	for i := range 8 {
		b[i] = byte(h >> (8 * i))
	}
	h = fnv64(callID + "\x00")
	for i := range 8 {
		b[8+i] = byte(h >> (8 * i))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func fnv64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := range len(s) {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

type audiohookConn struct {
	s          atomic.Pointer[audiohook.Session]
	conv       string
	frames     int
	stopping   atomic.Bool
	ended      atomic.Bool
	disconnect atomic.Pointer[EndedError]
}

// event handles what the gateway sends, on the session's reader.
func (c *audiohookConn) event(e audiohook.Event, ev Events) {
	switch {
	case e.Score != nil:
		if d, err := audiohook.ParseDuration(e.Score.Position); err == nil {
			ev.Score(uint64(d * 8000 / time.Second))
		}
	case e.Type == audiohook.TypeClosed:
		ev.Stopped(Stopped{Verify: true, ReportStored: true})
	case e.Disconnect != nil:
		// The gateway ends the session (too fast, drain, an error): the
		// protocol wants the client to close.
		c.disconnect.Store(&EndedError{Kind: "disconnect_" + e.Disconnect.Reason, Reason: e.Disconnect.Info})
		if s := c.s.Load(); s != nil && !c.stopping.Load() {
			s.SendClose("disconnect")
		}
	}
}

// ReportID implements ReportIDer: the report is stored under the
// conversation id.
func (c *audiohookConn) ReportID() string { return c.conv }

func (c *audiohookConn) Audio(frame []byte) error {
	s := c.s.Load()
	if err := s.SendAudio(frame); err != nil {
		return err
	}
	c.frames++
	if c.frames%pingEvery == 0 {
		return s.Ping()
	}
	return nil
}

func (c *audiohookConn) Stop() error {
	c.stopping.Store(true)
	return c.s.Load().SendClose("end")
}

func (c *audiohookConn) Close() error { return c.s.Load().Drop() }
