package audiohook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Version is the AudioHook protocol version this package speaks.
const Version = "2"

// NullUUID is the conversation id of a connection probe: Genesys Cloud
// opens a session with it to check that a server is reachable and
// accepts its credentials.
const NullUUID = "00000000-0000-0000-0000-000000000000"

// Client message types.
const (
	TypeOpen      = "open"
	TypeClose     = "close"
	TypePing      = "ping"
	TypePaused    = "paused"
	TypeResumed   = "resumed"
	TypeDiscarded = "discarded"
	TypeUpdate    = "update"
	TypeError     = "error"
)

// Server message types.
const (
	TypeOpened     = "opened"
	TypeClosed     = "closed"
	TypePong       = "pong"
	TypeDisconnect = "disconnect"
	TypeEvent      = "event"
	TypeUpdated    = "updated"
	TypePause      = "pause"
	TypeResume     = "resume"
	TypeReconnect  = "reconnect"
)

// Disconnect reasons.
const (
	DisconnectCompleted    = "completed"
	DisconnectUnauthorized = "unauthorized"
	DisconnectError        = "error"
)

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// IsUUID reports whether s is a UUID in its canonical text form.
func IsUUID(s string) bool { return uuidRE.MatchString(s) }

// ProtocolError is a client message the server cannot accept; the
// message is what the server says in its disconnect.
type ProtocolError struct{ Msg string }

func (e *ProtocolError) Error() string { return e.Msg }

func protoErr(format string, args ...any) error {
	return &ProtocolError{Msg: fmt.Sprintf(format, args...)}
}

// ClientMessage is a message from the client (Genesys Cloud), its common
// fields checked; Params holds the raw parameters, decoded per type by
// the Decode* methods.
type ClientMessage struct {
	ID        string
	Type      string
	Seq       uint64
	ServerSeq uint64
	Position  time.Duration
	Params    json.RawMessage
}

// wireClientMessage is a client message as it travels. Pointers tell
// missing fields from zero values.
type wireClientMessage struct {
	Version    *string         `json:"version"`
	ID         *string         `json:"id"`
	Type       *string         `json:"type"`
	Seq        *uint64         `json:"seq"`
	ServerSeq  *uint64         `json:"serverseq"`
	Position   *string         `json:"position"`
	Parameters json.RawMessage `json:"parameters"`
}

// ParseClientMessage parses a text frame from the client and checks the
// fields every client message has (version, id, type, seq, serverseq,
// position, parameters). Errors are *ProtocolError.
func ParseClientMessage(data []byte) (*ClientMessage, error) {
	var w wireClientMessage
	if err := json.Unmarshal(data, &w); err != nil {
		var te *json.UnmarshalTypeError
		switch {
		case !json.Valid(data):
			return nil, protoErr("text message is not valid JSON")
		case errors.As(err, &te) && te.Field != "":
			return nil, protoErr("message is not a well-formed client message: %q has the wrong type", te.Field)
		}
		return nil, protoErr("message is not a well-formed client message: not a JSON object")
	}
	switch {
	case w.Version == nil || *w.Version != Version:
		return nil, protoErr(`message is not a well-formed client message: "version" must be "2"`)
	case w.ID == nil || !IsUUID(*w.ID):
		return nil, protoErr(`message is not a well-formed client message: "id" must be a UUID`)
	case w.Type == nil || *w.Type == "":
		return nil, protoErr(`message is not a well-formed client message: "type" is missing`)
	case w.Seq == nil || w.ServerSeq == nil:
		return nil, protoErr(`message is not a well-formed client message: "seq" and "serverseq" must be non-negative integers`)
	case w.Position == nil:
		return nil, protoErr(`message is not a well-formed client message: "position" is missing`)
	case len(w.Parameters) == 0 || w.Parameters[0] != '{':
		return nil, protoErr(`message is not a well-formed client message: "parameters" must be an object`)
	}
	pos, err := ParseDuration(*w.Position)
	if err != nil {
		return nil, protoErr(`message is not a well-formed client message: "position": %v`, err)
	}
	return &ClientMessage{ID: *w.ID, Type: *w.Type, Seq: *w.Seq, ServerSeq: *w.ServerSeq, Position: pos, Params: w.Parameters}, nil
}

// decode unmarshals the parameters into v.
func (m *ClientMessage) decode(v any) error {
	if err := json.Unmarshal(m.Params, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return protoErr("invalid %q message: parameter %q has the wrong type", m.Type, te.Field)
		}
		return protoErr("invalid %q message: invalid parameters", m.Type)
	}
	return nil
}

// MediaParameter is one media format: offered by the client in open,
// selected by the server in opened.
type MediaParameter struct {
	Type     string   `json:"type"`
	Format   string   `json:"format"`
	Channels []string `json:"channels"`
	Rate     int      `json:"rate"`
}

// Participant is the call's customer participant, as open names it.
type Participant struct {
	ID      string `json:"id"`
	ANI     string `json:"ani"`
	ANIName string `json:"aniName"`
	DNIS    string `json:"dnis"`
}

// ContinuedSession names a session an open continues (reconnects).
type ContinuedSession struct {
	ID        string `json:"id"`
	ServerSeq uint64 `json:"serverseq"`
	ClientSeq uint64 `json:"clientseq"`
}

// OpenParameters are the parameters of open.
type OpenParameters struct {
	OrganizationID     string             `json:"organizationId"`
	ConversationID     string             `json:"conversationId"`
	Participant        *Participant       `json:"participant,omitempty"`
	Media              []MediaParameter   `json:"media"`
	Language           string             `json:"language,omitempty"`
	SupportedLanguages bool               `json:"supportedLanguages,omitempty"`
	ContinuedSessions  []ContinuedSession `json:"continuedSessions,omitempty"`
	CustomConfig       json.RawMessage    `json:"customConfig,omitempty"`
}

// DecodeOpen returns the parameters of an open message.
func (m *ClientMessage) DecodeOpen() (*OpenParameters, error) {
	var p OpenParameters
	if err := m.decode(&p); err != nil {
		return nil, err
	}
	switch {
	case !IsUUID(p.OrganizationID):
		return nil, protoErr(`invalid "open" message: "organizationId" must be a UUID`)
	case !IsUUID(p.ConversationID):
		return nil, protoErr(`invalid "open" message: "conversationId" must be a UUID`)
	case p.Media == nil:
		return nil, protoErr(`invalid "open" message: "media" is missing`)
	case len(p.Media) > 16:
		return nil, protoErr(`invalid "open" message: %d media formats offered (at most 16)`, len(p.Media))
	case len(p.Language) > 64:
		return nil, protoErr(`invalid "open" message: "language" is too long`)
	case len(p.CustomConfig) > 0 && p.CustomConfig[0] != '{':
		return nil, protoErr(`invalid "open" message: "customConfig" must be an object`)
	}
	if p.Participant != nil && p.Participant.ID != "" && !IsUUID(p.Participant.ID) {
		return nil, protoErr(`invalid "open" message: "participant.id" must be a UUID`)
	}
	for i, md := range p.Media {
		if md.Type == "" || md.Format == "" || md.Rate <= 0 || len(md.Channels) == 0 || len(md.Channels) > 2 {
			return nil, protoErr(`invalid "open" message: media[%d] needs type, format, rate and one or two channels`, i)
		}
	}
	return &p, nil
}

// CloseParameters are the parameters of close.
type CloseParameters struct {
	Reason string `json:"reason"`
}

// DecodeClose returns the parameters of a close message.
func (m *ClientMessage) DecodeClose() (*CloseParameters, error) {
	var p CloseParameters
	if err := m.decode(&p); err != nil {
		return nil, err
	}
	switch p.Reason {
	case "end", "error", "disconnect", "reconnect":
		return &p, nil
	}
	return nil, protoErr(`invalid "close" message: "reason" must be end, error, disconnect or reconnect`)
}

// Span is a stretch of the stream without audio: the parameters of
// discarded and resumed. Start is where it begins, Discarded how long it
// lasts.
type Span struct {
	Start     time.Duration
	Discarded time.Duration
}

// End returns the stream position after the span.
func (s Span) End() time.Duration { return s.Start + s.Discarded }

// DecodeSpan returns the parameters of a discarded or resumed message.
func (m *ClientMessage) DecodeSpan() (Span, error) {
	var p struct {
		Start     *string `json:"start"`
		Discarded *string `json:"discarded"`
	}
	if err := m.decode(&p); err != nil {
		return Span{}, err
	}
	if p.Start == nil || p.Discarded == nil {
		return Span{}, protoErr(`invalid %q message: "start" and "discarded" are required`, m.Type)
	}
	s, err := ParseDuration(*p.Start)
	if err != nil {
		return Span{}, protoErr(`invalid %q message: "start": %v`, m.Type, err)
	}
	d, err := ParseDuration(*p.Discarded)
	if err != nil {
		return Span{}, protoErr(`invalid %q message: "discarded": %v`, m.Type, err)
	}
	return Span{Start: s, Discarded: d}, nil
}

// ErrorParameters are the parameters of a client's error message.
type ErrorParameters struct {
	Code       int    `json:"code"`
	Message    string `json:"message"`
	RetryAfter string `json:"retryAfter,omitempty"`
}

// DecodeError returns the parameters of an error message.
func (m *ClientMessage) DecodeError() (*ErrorParameters, error) {
	var p ErrorParameters
	if err := m.decode(&p); err != nil {
		return nil, err
	}
	if p.Code < 400 || p.Code > 9999 {
		return nil, protoErr(`invalid "error" message: "code" must be 400 to 9999`)
	}
	return &p, nil
}

// DecodePing checks the parameters of a ping (an optional rtt).
func (m *ClientMessage) DecodePing() (rtt time.Duration, err error) {
	var p struct {
		RTT *string `json:"rtt"`
	}
	if err := m.decode(&p); err != nil {
		return 0, err
	}
	if p.RTT != nil {
		if rtt, err = ParseDuration(*p.RTT); err != nil {
			return 0, protoErr(`invalid "ping" message: "rtt": %v`, err)
		}
	}
	return rtt, nil
}

// DecodeUpdate returns the parameters of an update (the new language).
func (m *ClientMessage) DecodeUpdate() (language string, err error) {
	var p struct {
		Language *string `json:"language"`
	}
	if err := m.decode(&p); err != nil {
		return "", err
	}
	if p.Language == nil || len(*p.Language) > 64 {
		return "", protoErr(`invalid "update" message: "language" is required`)
	}
	return *p.Language, nil
}

// DecodeEmpty checks the parameters of a message that has none (paused).
func (m *ClientMessage) DecodeEmpty() error {
	var p map[string]json.RawMessage
	return m.decode(&p)
}

// maxDurationSeconds bounds a duration: ten years of stream.
const maxDurationSeconds = 10 * 366 * 24 * 3600

// ParseDuration parses an AudioHook duration, "PT{seconds}S" with an
// optional decimal fraction ("PT0S", "PT6.3S", "PT.5S"), to nanosecond
// precision without floating point.
func ParseDuration(s string) (time.Duration, error) {
	body, ok := strings.CutPrefix(s, "PT")
	if ok {
		body, ok = strings.CutSuffix(body, "S")
	}
	if !ok || body == "" {
		return 0, fmt.Errorf("%q is not a duration of the form PT{seconds}S", s)
	}
	whole, frac, dotted := strings.Cut(body, ".")
	if (whole == "" && !dotted) || (dotted && frac == "") || len(whole) > 10 || len(frac) > 9 {
		return 0, fmt.Errorf("%q is not a duration of the form PT{seconds}S", s)
	}
	for _, c := range whole + frac {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%q is not a duration of the form PT{seconds}S", s)
		}
	}
	var secs int64
	if whole != "" {
		secs, _ = strconv.ParseInt(whole, 10, 64)
	}
	if secs > maxDurationSeconds {
		return 0, fmt.Errorf("%q is longer than ten years", s)
	}
	var nanos int64
	if frac != "" {
		nanos, _ = strconv.ParseInt(frac+strings.Repeat("0", 9-len(frac)), 10, 64)
	}
	return time.Duration(secs)*time.Second + time.Duration(nanos), nil
}

// FormatDuration writes d as an AudioHook duration, with the fewest
// decimals that keep millisecond precision.
func FormatDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	ms := d.Round(time.Millisecond).Milliseconds()
	s := strconv.FormatInt(ms/1000, 10)
	if f := ms % 1000; f != 0 {
		s += strings.TrimRight(fmt.Sprintf(".%03d", f), "0")
	}
	return "PT" + s + "S"
}

// Samples converts a stream duration to samples at rate, rounding to the
// nearest sample.
func Samples(d time.Duration, rate int) uint64 {
	if d <= 0 {
		return 0
	}
	// Seconds and the fraction separately, so that ten years at 16 kHz
	// cannot overflow.
	secs := uint64(d / time.Second)
	frac := uint64(d % time.Second)
	return secs*uint64(rate) + (frac*uint64(rate)+uint64(time.Second)/2)/uint64(time.Second)
}

// ServerMessage is a message from the server.
type ServerMessage struct {
	Version    string `json:"version"`
	ID         string `json:"id"`
	Type       string `json:"type"`
	Seq        uint64 `json:"seq"`
	ClientSeq  uint64 `json:"clientseq"`
	Parameters any    `json:"parameters"`
}

// OpenedParameters are the parameters of opened.
type OpenedParameters struct {
	Media              []MediaParameter `json:"media"`
	StartPaused        bool             `json:"startPaused"`
	DiscardTo          string           `json:"discardTo,omitempty"`
	SupportedLanguages *[]string        `json:"supportedLanguages,omitempty"`
}

// DisconnectParameters are the parameters of disconnect.
type DisconnectParameters struct {
	Reason string `json:"reason"`
	Info   string `json:"info,omitempty"`
}

// EventParameters are the parameters of event.
type EventParameters struct {
	Entities []EventEntity `json:"entities"`
}

// EventEntity is one entity of an event.
type EventEntity struct {
	Type string `json:"type"`
	Data any    `json:"data"`
}

// Entity types of the events calmline sends.
const (
	EntityScore = "calmline.score"
	EntityAlert = "calmline.alert"
)

// ScoreData is the data of a calmline.score entity: the scores of one
// second of the call.
type ScoreData struct {
	Second uint32 `json:"second"`
	// Position is where the scored second ends on the stream's timeline.
	Position       string            `json:"position"`
	CallerPressure *float64          `json:"callerPressure"`
	AgentStress    *float64          `json:"agentStress"`
	Abstain        map[string]string `json:"abstain,omitempty"`
	Model          ModelData         `json:"model"`
}

// ModelData names the model that made a score.
type ModelData struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// AlertData is the data of a calmline.alert entity: the tenant's alert
// rule fired or cleared.
type AlertData struct {
	AlertID   string  `json:"alertId"`
	RuleID    string  `json:"ruleId"`
	Episode   uint32  `json:"episode"`
	State     string  `json:"state"`
	Score     string  `json:"score"`
	Value     float64 `json:"value"`
	Threshold float64 `json:"threshold"`
	Second    uint32  `json:"second"`
}

// ClientMessageOut is a message from the client as it is written (the
// Client uses it).
type ClientMessageOut struct {
	Version    string `json:"version"`
	ID         string `json:"id"`
	Type       string `json:"type"`
	Seq        uint64 `json:"seq"`
	ServerSeq  uint64 `json:"serverseq"`
	Position   string `json:"position"`
	Parameters any    `json:"parameters"`
}

// ParseServerMessage parses a message from the server (the Client uses
// it), with its parameters left raw.
func ParseServerMessage(data []byte) (*ServerMessage, json.RawMessage, error) {
	var w struct {
		Version    string          `json:"version"`
		ID         string          `json:"id"`
		Type       string          `json:"type"`
		Seq        *uint64         `json:"seq"`
		ClientSeq  *uint64         `json:"clientseq"`
		Parameters json.RawMessage `json:"parameters"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&w); err != nil {
		return nil, nil, fmt.Errorf("server message: %w", err)
	}
	if w.Version != Version || w.Seq == nil || w.ClientSeq == nil || w.Type == "" || len(w.Parameters) == 0 || w.Parameters[0] != '{' {
		return nil, nil, errors.New("server message: not a well-formed AudioHook server message")
	}
	return &ServerMessage{Version: w.Version, ID: w.ID, Type: w.Type, Seq: *w.Seq, ClientSeq: *w.ClientSeq}, w.Parameters, nil
}
