package audiohook

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/calmline/calmline/gateway/stereo"
	"github.com/calmline/calmline/gateway/wsclient"
	"github.com/calmline/calmline/lib/audio"
)

// Client speaks AudioHook as Genesys Cloud does: it signs the connection
// request, opens a session offering media formats, streams PCMU frames,
// pings, and closes. Tests and the load generator use it; it checks the
// server's side of the protocol (sequence numbers, message shapes) as it
// goes.
type Client struct {
	// URL is the server's AudioHook endpoint (ws:// or wss://).
	URL string
	// APIKey goes in X-API-KEY; ClientSecret, when set, signs the request.
	APIKey       string
	ClientSecret []byte
	// OrganizationID is the Genesys Cloud organization (a UUID; random
	// when empty).
	OrganizationID string
	// Dialer dials the WebSocket (websocket.DefaultDialer when nil).
	Dialer *websocket.Dialer
	// Header holds extra request headers.
	Header http.Header
}

// OpenRequest is what a session opens with.
type OpenRequest struct {
	// SessionID and ConversationID are UUIDs; random when empty. A
	// connection probe uses NullUUID as its conversation id.
	SessionID      string
	ConversationID string
	// AgentID goes in customConfig.agentId.
	AgentID string
	// Media lists the formats offered, preferred first; by default stereo
	// PCMU (external, internal), then mono external, then mono internal.
	Media    []MediaParameter
	Language string
	// Timeout bounds the open transaction (default 5 s, as Genesys Cloud).
	Timeout time.Duration
	// OnEvent, when set, receives each event (scores, alerts,
	// disconnect, and closed with Type TypeClosed) from the session's
	// reader as it arrives, instead of the session keeping it for Events:
	// a load generator's long sessions then hold nothing. It must not
	// block.
	OnEvent func(Event)
	// OnEnd, when set, runs once when the connection ends, with the
	// server's close frame (0 when there was none) or the read error.
	OnEnd func(code int, reason string, err error)
}

// DefaultMedia is what Genesys Cloud offers for a call.
var DefaultMedia = []MediaParameter{
	{Type: "audio", Format: "PCMU", Channels: []string{"external", "internal"}, Rate: 8000},
	{Type: "audio", Format: "PCMU", Channels: []string{"external"}, Rate: 8000},
	{Type: "audio", Format: "PCMU", Channels: []string{"internal"}, Rate: 8000},
}

// Event is a server message the session received after opened.
type Event struct {
	Type    string
	Arrived time.Time
	// Score and Alert are set for calmline's event entities.
	Score *ScoreData
	Alert *AlertData
	// Entities holds the raw entities of any event message.
	Entities []json.RawMessage
	// Disconnect is set for a disconnect message.
	Disconnect *DisconnectParameters
}

// Session is an open AudioHook session.
type Session struct {
	ws       *websocket.Conn
	id       string
	selected MediaParameter
	opened   OpenedParameters

	wmu      sync.Mutex    // serialises writes
	seq      atomic.Uint64 // last client message sequence number
	position time.Duration // stream position: audio sent and spans reported; under wmu

	mu        sync.Mutex
	serverSeq uint64
	events    []Event
	pongs     []time.Duration
	pingSent  map[uint64]time.Time
	violation error // the first protocol violation the server made
	closed    chan struct{}
	closedMsg bool
	discon    chan struct{} // closed at the first disconnect
	readErr   error
	readerEnd chan struct{}
	onEvent   func(Event)
	onEnd     func(code int, reason string, err error)
}

func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// DialError is a connection the server refused before the upgrade; its
// Code is the JSON error's code.
type DialError = wsclient.RefusedError

// Open connects and runs the open transaction. On success the session is
// open and its Selected media says what to send.
func (c *Client) Open(ctx context.Context, req OpenRequest) (*Session, error) {
	req.SessionID = cmp.Or(req.SessionID, newUUID())
	req.ConversationID = cmp.Or(req.ConversationID, newUUID())
	if req.Media == nil {
		req.Media = DefaultMedia
	}
	req.Timeout = cmp.Or(req.Timeout, 5*time.Second)
	org := cmp.Or(c.OrganizationID, newUUID())
	u, err := url.Parse(c.URL)
	if err != nil {
		return nil, fmt.Errorf("audiohook: %w", err)
	}
	h := http.Header{}
	for k, v := range c.Header {
		h[k] = v
	}
	h.Set(HeaderOrganizationID, org)
	h.Set(HeaderCorrelationID, newUUID())
	h.Set(HeaderSessionID, req.SessionID)
	h.Set(HeaderAPIKey, c.APIKey)
	if len(c.ClientSecret) > 0 {
		var nonce [18]byte
		rand.Read(nonce[:])
		Sign(h, u.RequestURI(), u.Host, c.APIKey, c.ClientSecret, base64.StdEncoding.EncodeToString(nonce[:]), time.Now(), 30*time.Second)
	}
	ws, err := wsclient.Dial(ctx, c.Dialer, "audiohook", c.URL, h)
	if err != nil {
		return nil, err
	}
	s := &Session{ws: ws, id: req.SessionID, pingSent: map[uint64]time.Time{}, closed: make(chan struct{}),
		discon: make(chan struct{}), readerEnd: make(chan struct{}), onEvent: req.OnEvent, onEnd: req.OnEnd}
	params := OpenParameters{
		OrganizationID: org,
		ConversationID: req.ConversationID,
		Participant:    &Participant{ID: newUUID()},
		Media:          req.Media,
		Language:       req.Language,
	}
	if req.ConversationID == NullUUID {
		params.Participant = &Participant{ID: NullUUID}
	}
	if req.AgentID != "" {
		params.CustomConfig, _ = json.Marshal(map[string]string{"agentId": req.AgentID})
	}
	if err := s.write(TypeOpen, params); err != nil {
		ws.Close()
		return nil, err
	}
	// The open transaction, read synchronously: opened or a disconnect.
	ws.SetReadDeadline(time.Now().Add(req.Timeout))
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			ws.Close()
			return nil, fmt.Errorf("audiohook: waiting for opened: %w", err)
		}
		m, raw, err := s.check(data)
		if err != nil {
			ws.Close()
			return nil, err
		}
		switch m.Type {
		case TypeOpened:
			if err := json.Unmarshal(raw, &s.opened); err != nil || len(s.opened.Media) > 1 {
				ws.Close()
				return nil, fmt.Errorf("audiohook: bad opened parameters %s", raw)
			}
			if len(s.opened.Media) == 1 {
				s.selected = s.opened.Media[0]
			}
			ws.SetReadDeadline(time.Time{})
			go s.read()
			return s, nil
		case TypeDisconnect:
			var p DisconnectParameters
			json.Unmarshal(raw, &p)
			s.write(TypeClose, CloseParameters{Reason: "disconnect"})
			wsclient.WaitClose(ws, 2*time.Second) // the server's closed, briefly
			return nil, &DisconnectedError{Reason: p.Reason, Info: p.Info}
		default:
			ws.Close()
			return nil, fmt.Errorf("audiohook: %q before opened", m.Type)
		}
	}
}

// DisconnectedError is a session the server ended with disconnect.
type DisconnectedError struct{ Reason, Info string }

func (e *DisconnectedError) Error() string {
	return fmt.Sprintf("audiohook: server disconnected (%s): %s", e.Reason, e.Info)
}

// check validates a server message's numbering and shape.
func (s *Session) check(data []byte) (*ServerMessage, json.RawMessage, error) {
	m, raw, err := ParseServerMessage(data)
	if err != nil {
		return nil, nil, fmt.Errorf("audiohook: %w: %s", err, data)
	}
	sent := s.seq.Load()
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case m.Seq != s.serverSeq+1:
		return nil, nil, fmt.Errorf("audiohook: server seq %d after %d", m.Seq, s.serverSeq)
	case m.ClientSeq > sent:
		return nil, nil, fmt.Errorf("audiohook: server clientseq %d but only %d messages sent", m.ClientSeq, sent)
	case m.ID != s.id:
		return nil, nil, fmt.Errorf("audiohook: server message id %q; want the session id %q", m.ID, s.id)
	}
	s.serverSeq = m.Seq
	return m, raw, nil
}

// write sends a client message with the next sequence number.
func (s *Session) write(typ string, params any) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	ack := s.serverSeq
	s.mu.Unlock()
	seq := s.seq.Add(1)
	if typ == TypePing {
		s.mu.Lock()
		s.pingSent[seq] = time.Now()
		s.mu.Unlock()
	}
	b, err := json.Marshal(ClientMessageOut{Version: Version, ID: s.id, Type: typ, Seq: seq, ServerSeq: ack,
		Position: FormatDuration(s.position), Parameters: params})
	if err != nil {
		return err
	}
	s.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := s.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		return fmt.Errorf("audiohook: write %s: %w", typ, err)
	}
	return nil
}

// read dispatches server messages until the connection ends.
func (s *Session) read() {
	defer close(s.readerEnd)
	for {
		typ, data, err := s.ws.ReadMessage()
		if err != nil {
			s.mu.Lock()
			s.readErr = err
			s.mu.Unlock()
			if s.onEnd != nil {
				code, text, err := wsclient.CloseOf(err)
				s.onEnd(code, text, err)
			}
			return
		}
		now := time.Now()
		if typ == websocket.BinaryMessage {
			s.violate(errors.New("audiohook: the server sent a binary message"))
			continue
		}
		m, raw, err := s.check(data)
		if err != nil {
			s.violate(err)
			continue
		}
		ev := Event{Type: m.Type, Arrived: now}
		switch m.Type {
		case TypePong:
			s.mu.Lock()
			if at, ok := s.pingSent[m.ClientSeq]; ok {
				s.pongs = append(s.pongs, now.Sub(at))
				delete(s.pingSent, m.ClientSeq)
			} else {
				s.violation = errors.Join(s.violation, fmt.Errorf("audiohook: pong with clientseq %d answers no ping", m.ClientSeq))
			}
			s.mu.Unlock()
			continue
		case TypeClosed:
			s.mu.Lock()
			first := !s.closedMsg
			if first {
				s.closedMsg = true
				close(s.closed)
			}
			s.mu.Unlock()
			if first && s.onEvent != nil {
				s.onEvent(ev)
			}
			continue
		case TypeEvent:
			var p struct {
				Entities []json.RawMessage `json:"entities"`
			}
			if err := json.Unmarshal(raw, &p); err != nil || len(p.Entities) == 0 {
				s.violate(fmt.Errorf("audiohook: event without entities: %s", raw))
				continue
			}
			ev.Entities = p.Entities
			for _, e := range p.Entities {
				var head struct {
					Type string          `json:"type"`
					Data json.RawMessage `json:"data"`
				}
				json.Unmarshal(e, &head)
				switch head.Type {
				case EntityScore:
					ev.Score = &ScoreData{}
					json.Unmarshal(head.Data, ev.Score)
				case EntityAlert:
					ev.Alert = &AlertData{}
					json.Unmarshal(head.Data, ev.Alert)
				}
			}
		case TypeDisconnect:
			ev.Disconnect = &DisconnectParameters{}
			json.Unmarshal(raw, ev.Disconnect)
			s.mu.Lock()
			select {
			case <-s.discon:
			default:
				close(s.discon)
			}
			s.mu.Unlock()
		}
		if s.onEvent != nil {
			s.onEvent(ev)
			continue
		}
		s.mu.Lock()
		s.events = append(s.events, ev)
		s.mu.Unlock()
	}
}

func (s *Session) violate(err error) {
	s.mu.Lock()
	if s.violation == nil {
		s.violation = err
	}
	s.mu.Unlock()
}

// Selected returns the media format the server accepted.
func (s *Session) Selected() MediaParameter { return s.selected }

// Opened returns the opened message's parameters.
func (s *Session) Opened() OpenedParameters { return s.opened }

// ID returns the session id.
func (s *Session) ID() string { return s.id }

// SendAudio sends a binary frame of the selected media and advances the
// stream position.
func (s *Session) SendAudio(frame []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if n := len(s.selected.Channels); n > 0 {
		s.position += time.Duration(len(frame)/n) * time.Second / 8000
	}
	s.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return s.ws.WriteMessage(websocket.BinaryMessage, frame)
}

// SendRaw writes a message as it is (tests of bad input).
func (s *Session) SendRaw(typ int, data []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.ws.WriteMessage(typ, data)
}

// Ping sends a ping; the round trip is measured when the pong arrives.
func (s *Session) Ping() error { return s.write(TypePing, struct{}{}) }

// Paused tells the server the stream is paused.
func (s *Session) Paused() error { return s.write(TypePaused, struct{}{}) }

// Resumed tells the server the stream resumes after d of paused time.
func (s *Session) Resumed(d time.Duration) error { return s.span(TypeResumed, d) }

// Discarded tells the server that d of audio from the current position
// was dropped, and advances the position over it.
func (s *Session) Discarded(d time.Duration) error { return s.span(TypeDiscarded, d) }

// span sends a message of a span of d without audio from the current
// position, and advances the position over it.
func (s *Session) span(typ string, d time.Duration) error {
	s.wmu.Lock()
	start := s.position
	s.position += d
	s.wmu.Unlock()
	return s.write(typ, map[string]string{"start": FormatDuration(start), "discarded": FormatDuration(d)})
}

// Update sends an update with a new language.
func (s *Session) Update(language string) error {
	return s.write(TypeUpdate, map[string]string{"language": language})
}

// Position returns the stream position.
func (s *Session) Position() time.Duration {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.position
}

// Closed is closed when the server answered the close transaction.
func (s *Session) Closed() <-chan struct{} { return s.closed }

// Disconnected is closed when the server sends disconnect.
func (s *Session) Disconnected() <-chan struct{} { return s.discon }

// Events returns what the server sent after opened, pongs and closed
// excepted.
func (s *Session) Events() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Event(nil), s.events...)
}

// RTTs returns the ping round trips measured.
func (s *Session) RTTs() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.pongs...)
}

// Violation returns the first protocol violation the server made, if any.
func (s *Session) Violation() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.violation
}

// Close runs the close transaction with the given reason ("end" for a
// call that ended) and closes the connection once the server answered
// closed; it reports an error when closed did not come before ctx ended.
// The session's reader has stopped when Close returns.
func (s *Session) Close(ctx context.Context, reason string) error {
	werr := s.write(TypeClose, CloseParameters{Reason: reason})
	var err error
	if werr == nil {
		select {
		case <-s.closed:
		case <-s.readerEnd:
			// The reader marks closed before it ends: when both are
			// ready the select may pick either, so look again.
			select {
			case <-s.closed:
			default:
				err = errors.New("audiohook: connection ended before closed")
			}
		case <-ctx.Done():
			err = fmt.Errorf("audiohook: no closed: %w", ctx.Err())
		}
	} else {
		err = werr
	}
	s.wmu.Lock()
	wsclient.SendClose(s.ws, time.Second)
	s.wmu.Unlock()
	select {
	case <-s.readerEnd:
	case <-time.After(2 * time.Second):
	}
	s.ws.Close()
	<-s.readerEnd
	return err
}

// SendClose starts the close transaction and returns without waiting for
// closed: a load generator's many sessions end on their reader (OnEvent
// sees closed, OnEnd the connection's end), not on a goroutine each.
func (s *Session) SendClose(reason string) error {
	return s.write(TypeClose, CloseParameters{Reason: reason})
}

// Drop closes the connection at once, without a close transaction or a
// wait for the reader; unlike Kill it may be called from OnEnd.
func (s *Session) Drop() error { return s.ws.Close() }

// Kill drops the connection without a close transaction or close frame,
// as a crashed client would.
func (s *Session) Kill() {
	s.ws.NetConn().Close()
	<-s.readerEnd
}

// CloseCode returns the WebSocket close frame the server sent, once the
// reader has ended (0 when none).
func (s *Session) CloseCode() (int, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	code, text, _ := wsclient.CloseOf(s.readErr)
	return code, text
}

// selectedAudio converts a recording to the selected media: PCMU, the
// channels interleaved in the selected order (external is the
// recording's first channel, the caller; internal its second).
func (s *Session) selectedAudio(rec *audio.Recording) ([]byte, error) {
	if rec.Format.SampleRate != 8000 {
		return nil, fmt.Errorf("audiohook: the recording is %d Hz; AudioHook carries 8000 Hz", rec.Format.SampleRate)
	}
	if len(s.selected.Channels) == 0 {
		return nil, errors.New("audiohook: the server selected no media")
	}
	sel, err := wsclient.Tracks(rec, audio.CodecPCMU, s.selected.Channels, "internal", true)
	if err != nil {
		return nil, fmt.Errorf("audiohook: %w", err)
	}
	return stereo.Interleave(sel, 1), nil
}

// StreamOptions tunes Stream.
type StreamOptions struct {
	OpenRequest
	// Frame is the duration of one binary frame (default 20 ms).
	Frame time.Duration
	// RealTime paces frames at the wall clock, as a PBX sends; otherwise
	// they go as fast as the connection takes them.
	RealTime bool
	// PingInterval sends a ping this often, in stream time (default 5 s,
	// as Genesys Cloud; negative: never).
	PingInterval time.Duration
	// CloseTimeout bounds the close transaction (default 10 s).
	CloseTimeout time.Duration
	// OnFrame, when set, runs after each frame is sent with the stream
	// position reached.
	OnFrame func(position time.Duration)
}

// Result is what a streamed call produced.
type Result struct {
	Session  *Session
	Selected MediaParameter
	Events   []Event
	RTTs     []time.Duration
	// SecondSent holds when each whole second of audio had been sent.
	SecondSent []time.Time
}

// Scores returns the score events received.
func (r *Result) Scores() []ScoreData {
	var out []ScoreData
	for _, e := range r.Events {
		if e.Score != nil {
			out = append(out, *e.Score)
		}
	}
	return out
}

// Stream plays a recording as one call: open, frames, pings, close.
func (c *Client) Stream(ctx context.Context, rec *audio.Recording, o StreamOptions) (*Result, error) {
	s, err := c.Open(ctx, o.OpenRequest)
	if err != nil {
		return nil, err
	}
	res := &Result{Session: s, Selected: s.Selected()}
	data, err := s.selectedAudio(rec)
	if err != nil {
		s.Close(ctx, "error")
		return res, err
	}
	o.PingInterval = cmp.Or(o.PingInterval, 5*time.Second)
	o.CloseTimeout = cmp.Or(o.CloseTimeout, 10*time.Second)
	frameDur := o.Frame
	if frameDur <= 0 {
		frameDur = 20 * time.Millisecond
	}
	nextPing := o.PingInterval
	channels := len(s.selected.Channels)
	res.SecondSent, err = wsclient.PlayBytes(ctx, o.RealTime, frameDur, 8000, channels, len(data), o.OnFrame, func(_, off, end int) error {
		select {
		case <-s.Disconnected():
			return errDisconnected
		default:
		}
		if err := s.SendAudio(data[off:end]); err != nil {
			return fmt.Errorf("audiohook: send audio: %w", err)
		}
		if pos := s.Position(); o.PingInterval > 0 && pos >= nextPing {
			s.Ping()
			nextPing += o.PingInterval
		}
		return nil
	})
	switch {
	case errors.Is(err, errDisconnected):
		return c.finish(ctx, s, res, o, "disconnect")
	case err != nil:
		s.Kill()
		return res, err
	}
	return c.finish(ctx, s, res, o, "end")
}

// errDisconnected stops a stream the server disconnected.
var errDisconnected = errors.New("audiohook: disconnected")

func (c *Client) finish(ctx context.Context, s *Session, res *Result, o StreamOptions, reason string) (*Result, error) {
	cctx, cancel := context.WithTimeout(ctx, o.CloseTimeout)
	defer cancel()
	err := s.Close(cctx, reason)
	res.Events, res.RTTs = s.Events(), s.RTTs()
	if v := s.Violation(); v != nil {
		err = errors.Join(err, v)
	}
	for _, e := range res.Events {
		if e.Disconnect != nil {
			err = errors.Join(err, &DisconnectedError{Reason: e.Disconnect.Reason, Info: e.Disconnect.Info})
		}
	}
	return res, err
}
