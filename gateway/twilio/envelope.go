package twilio

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/calmline/calmline/gateway/edge"
	"github.com/calmline/calmline/lib/audio"
)

// Envelope describes one dialect of the Twilio-style media stream: where
// each field sits in the JSON messages. Telnyx, Exotel and Plivo send the
// same events (connected, start, media, mark, dtmf, stop) under other
// field names; an Envelope is configuration, not code, and the Client
// writes the same dialect.
type Envelope struct {
	// Name labels calls streamed in this dialect ("twilio", "telnyx"...).
	Name string
	// Sequence is the top-level sequence number field.
	Sequence string
	// StreamID is the top-level stream id field.
	StreamID string
	// MediaFormat is the start's media format object; Encoding,
	// SampleRate and Channels are its fields.
	MediaFormat, Encoding, SampleRate, Channels string
	// CallID lists the start's call id fields, first found wins.
	CallID []string
	// Tracks is the start's list of tracks ("" when the dialect has none:
	// DefaultTracks then apply unless the URL says otherwise).
	Tracks        string
	DefaultTracks []string
	// CustomParameters is the start's object of custom parameters;
	// ExtraHeaders a top-level "k=v;k2=v2" string some dialects use
	// instead (Plivo).
	CustomParameters string
	ExtraHeaders     string
	// DefaultEncoding applies when the start names none.
	DefaultEncoding string
	// StrictSequence requires sequence numbers to rise by one; otherwise
	// (a dialect that documents reordering) they may come out of order
	// but never twice, and media is held back by Reorder so that late
	// packets still find their place.
	StrictSequence bool
	Reorder        time.Duration
	// StringNumbers makes the Client write numbers as strings, as Twilio
	// and Telnyx do (the server reads both forms in every dialect).
	StringNumbers bool
}

// Dialects the gateway knows, by name (the ?envelope= of the URL).
var (
	Twilio = Envelope{
		Name: "twilio", Sequence: "sequenceNumber", StreamID: "streamSid",
		MediaFormat: "mediaFormat", Encoding: "encoding", SampleRate: "sampleRate", Channels: "channels",
		CallID: []string{"callSid"}, Tracks: "tracks", DefaultTracks: []string{"inbound"},
		CustomParameters: "customParameters", DefaultEncoding: "audio/x-mulaw", StrictSequence: true, StringNumbers: true,
	}
	Telnyx = Envelope{
		Name: "telnyx", Sequence: "sequence_number", StreamID: "stream_id",
		MediaFormat: "media_format", Encoding: "encoding", SampleRate: "sample_rate", Channels: "channels",
		CallID: []string{"call_control_id", "call_session_id"}, DefaultTracks: []string{"inbound"},
		CustomParameters: "custom_parameters", DefaultEncoding: "PCMU", StringNumbers: true, Reorder: 100 * time.Millisecond,
	}
	Exotel = Envelope{
		Name: "exotel", Sequence: "sequence_number", StreamID: "stream_sid",
		MediaFormat: "media_format", Encoding: "encoding", SampleRate: "sample_rate", Channels: "channels",
		CallID: []string{"call_sid"}, DefaultTracks: []string{"inbound"},
		CustomParameters: "custom_parameters", DefaultEncoding: "raw/slin", StrictSequence: true,
	}
	Plivo = Envelope{
		Name: "plivo", Sequence: "sequenceNumber", StreamID: "streamId",
		MediaFormat: "mediaFormat", Encoding: "encoding", SampleRate: "sampleRate", Channels: "channels",
		CallID: []string{"callId"}, Tracks: "tracks", DefaultTracks: []string{"inbound"},
		ExtraHeaders: "extra_headers", DefaultEncoding: "audio/x-mulaw", StrictSequence: true,
	}
)

// Envelopes lists the known dialects by name.
var Envelopes = map[string]Envelope{"twilio": Twilio, "telnyx": Telnyx, "exotel": Exotel, "plivo": Plivo}

// Message is one parsed message of the stream.
type Message struct {
	Event string
	// Seq is the sequence number; HasSeq is false when the message has
	// none or an empty one (Twilio's stop sometimes carries "").
	Seq    uint64
	HasSeq bool
	// Start is set for start.
	Start *Start
	// Media is set for media.
	Media *Media
}

// Start is what a start message says about the stream.
type Start struct {
	StreamID   string
	CallID     string
	Tracks     []string
	Codec      audio.Codec
	SampleRate int
	Parameters map[string]string
}

// Media is one media message.
type Media struct {
	Track string
	// Timestamp is the payload's position in milliseconds from the start
	// of the stream; HasTimestamp is false when the message has none.
	Timestamp    uint64
	HasTimestamp bool
	Payload      []byte
}

// BadMessage is a message the server cannot accept; it closes the
// connection with Code and the message as reason.
type BadMessage struct {
	Code int
	Msg  string
}

func (e *BadMessage) Error() string { return e.Msg }

func bad(format string, args ...any) error {
	return &BadMessage{Code: edge.CloseBadMessage, Msg: fmt.Sprintf(format, args...)}
}

// maxPayload bounds a decoded media payload: a second of 16 kHz PCM.
const maxPayload = 32000

// Parse parses a text message in the envelope's dialect. Errors are
// *BadMessage.
func (e *Envelope) Parse(data []byte) (*Message, error) { return e.parse(data, nil) }

// parse is Parse decoding media payloads into *buf when it can: the
// message refers to it until the next parse.
func (e *Envelope) parse(data []byte, buf *[]byte) (*Message, error) {
	if m, ok, err := e.parseMedia(data, buf); ok {
		return m, err
	}
	return e.parseGeneral(data)
}

// parseGeneral parses any message with encoding/json.
func (e *Envelope) parseGeneral(data []byte) (*Message, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil || top == nil {
		return nil, bad("malformed JSON: not a JSON object")
	}
	var m Message
	if err := str(top, "event", &m.Event); err != nil || m.Event == "" {
		return nil, bad(`message without "event"`)
	}
	if raw, ok := top[e.Sequence]; ok {
		n, has, err := number(raw)
		if err != nil {
			return nil, bad("%s: %v", e.Sequence, err)
		}
		m.Seq, m.HasSeq = n, has
	}
	switch m.Event {
	case "start":
		s, err := e.parseStart(top)
		if err != nil {
			return nil, err
		}
		m.Start = s
	case "media":
		md, err := parseMedia(top)
		if err != nil {
			return nil, err
		}
		m.Media = md
	}
	return &m, nil
}

func (e *Envelope) parseStart(top map[string]json.RawMessage) (*Start, error) {
	var start map[string]json.RawMessage
	if err := json.Unmarshal(top["start"], &start); err != nil || start == nil {
		return nil, bad(`start: "start" must be an object`)
	}
	s := &Start{Parameters: map[string]string{}}
	if err := str(top, e.StreamID, &s.StreamID); err != nil {
		return nil, bad("start: %s: %v", e.StreamID, err)
	}
	if s.StreamID == "" {
		str(start, e.StreamID, &s.StreamID)
	}
	for _, f := range e.CallID {
		if err := str(start, f, &s.CallID); err != nil {
			return nil, bad("start: %s: %v", f, err)
		}
		if s.CallID != "" {
			break
		}
	}
	if e.Tracks != "" {
		if raw, ok := start[e.Tracks]; ok {
			if err := json.Unmarshal(raw, &s.Tracks); err != nil {
				return nil, bad("start: %s must be a list of strings", e.Tracks)
			}
		}
	}
	encoding := e.DefaultEncoding
	s.SampleRate = 8000
	channels := uint64(1)
	if raw, ok := start[e.MediaFormat]; ok {
		var mf map[string]json.RawMessage
		if err := json.Unmarshal(raw, &mf); err != nil || mf == nil {
			return nil, bad("start: %s must be an object", e.MediaFormat)
		}
		var enc string
		if err := str(mf, e.Encoding, &enc); err != nil {
			return nil, bad("start: %s.%s: %v", e.MediaFormat, e.Encoding, err)
		}
		if enc != "" {
			encoding = enc
		}
		if raw, ok := mf[e.SampleRate]; ok {
			n, has, err := number(raw)
			if err != nil {
				return nil, bad("start: %s.%s: %v", e.MediaFormat, e.SampleRate, err)
			}
			if has {
				if n > 1<<20 {
					return nil, &BadMessage{Code: edge.CloseUnsupportedMedia, Msg: fmt.Sprintf("start: unsupported sample rate %d", n)}
				}
				s.SampleRate = int(n)
			}
		}
		if raw, ok := mf[e.Channels]; ok {
			n, has, err := number(raw)
			if err != nil {
				return nil, bad("start: %s.%s: %v", e.MediaFormat, e.Channels, err)
			}
			if has {
				channels = n
			}
		}
	}
	codec, err := ParseEncoding(encoding)
	if err != nil {
		return nil, &BadMessage{Code: edge.CloseUnsupportedMedia, Msg: "start: " + err.Error()}
	}
	s.Codec = codec
	if !audio.SupportedSampleRate(s.SampleRate) {
		return nil, &BadMessage{Code: edge.CloseUnsupportedMedia, Msg: fmt.Sprintf("start: unsupported sample rate %d (want 8000 or 16000)", s.SampleRate)}
	}
	if channels != 1 {
		return nil, &BadMessage{Code: edge.CloseUnsupportedMedia, Msg: fmt.Sprintf("start: %d channels per track (want 1)", channels)}
	}
	if e.CustomParameters != "" {
		if raw, ok := start[e.CustomParameters]; ok && !bytes.Equal(raw, []byte("null")) {
			var p map[string]json.RawMessage
			if err := json.Unmarshal(raw, &p); err != nil {
				return nil, bad("start: %s must be an object", e.CustomParameters)
			}
			for k := range p {
				var sv string
				if str(p, k, &sv) == nil {
					s.Parameters[k] = sv
				}
			}
		}
	}
	if e.ExtraHeaders != "" {
		var h string
		if err := str(top, e.ExtraHeaders, &h); err != nil {
			return nil, bad("start: %s must be a string", e.ExtraHeaders)
		}
		for _, kv := range strings.FieldsFunc(h, func(r rune) bool { return r == ';' || r == ',' }) {
			if k, v, ok := strings.Cut(kv, "="); ok {
				s.Parameters[strings.TrimSpace(k)] = strings.TrimSpace(v)
			}
		}
	}
	return s, nil
}

// parseMedia parses a media message on the hot path, without reflection:
// a strict scan of the object for the event, the sequence number and the
// media fields. ok is false when the message is not a media message or
// uses what the scan leaves to the general path (escaped strings), and
// Parse then takes the general path; FuzzFastMediaMatchesGeneralParse
// checks that both agree. The payload is decoded into *buf when it is
// not nil (a connection reuses it); the message then refers to it.
func (e *Envelope) parseMedia(data []byte, buf *[]byte) (m *Message, ok bool, err error) {
	var event, media, seq, track, ts, payload []byte
	var seen bool
	it := objectIter{data: data}
	for it.next() {
		switch string(it.key) {
		case "event":
			event = it.value
		case e.Sequence:
			seq, seen = it.value, true
		case "media":
			media = it.value
		}
	}
	if !it.ok() || !bytes.Equal(event, []byte(`"media"`)) || len(media) == 0 || media[0] != '{' {
		return nil, false, nil
	}
	it = objectIter{data: media}
	for it.next() {
		switch string(it.key) {
		case "track":
			track = it.value
		case "timestamp":
			ts = it.value
		case "payload":
			payload = it.value
		}
	}
	if !it.ok() || !plainString(track) || !plainString(payload) {
		return nil, false, nil
	}
	mm := &struct {
		Message
		Media
	}{}
	msg := &mm.Message
	msg.Event, msg.Media = "media", &mm.Media
	switch t := track[1 : len(track)-1]; string(t) {
	case "inbound":
		mm.Track = "inbound"
	case "outbound":
		mm.Track = "outbound"
	default:
		mm.Track = string(t)
	}
	if seen {
		if msg.Seq, msg.HasSeq, err = number(seq); err != nil {
			return nil, true, bad("%s: %v", e.Sequence, err)
		}
	}
	if ts != nil {
		if mm.Timestamp, mm.HasTimestamp, err = number(ts); err != nil {
			return nil, true, bad("media: timestamp: %v", err)
		}
	}
	if mm.Payload, err = decodePayload(payload[1:len(payload)-1], buf); err != nil {
		return nil, true, err
	}
	return msg, true, nil
}

// decodePayload decodes a media payload, into *buf when buf is not nil
// (a connection reuses it).
func decodePayload(p []byte, buf *[]byte) ([]byte, error) {
	size := base64.StdEncoding.DecodedLen(len(p))
	if size > maxPayload+3 {
		return nil, bad("media: payload larger than %d bytes", maxPayload)
	}
	var b []byte
	if buf != nil && cap(*buf) >= size {
		b = (*buf)[:size]
	} else {
		b = make([]byte, size)
		if buf != nil {
			*buf = b
		}
	}
	n, err := base64.StdEncoding.Decode(b, p)
	switch {
	case err != nil:
		return nil, bad("media: payload is not base64")
	case n == 0:
		return nil, bad("media: empty payload")
	}
	return b[:n], nil
}

// plainString reports whether v is a JSON string without escapes.
func plainString(v []byte) bool {
	return len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' && bytes.IndexByte(v[1:len(v)-1], '\\') < 0
}

// objectIter walks the members of a JSON object: next moves to the next
// member (key unquoted; keys with escapes stop the walk) and ok reports,
// once next returned false, whether data was exactly one well-formed
// object.
type objectIter struct {
	data       []byte
	i          int
	key, value []byte
	started    bool
	done, good bool
}

func (it *objectIter) next() bool {
	if it.done {
		return false
	}
	data := it.data
	fail := func() bool { it.done, it.good = true, false; return false }
	if !it.started {
		it.started = true
		it.i = skipSpace(data, 0)
		if it.i >= len(data) || data[it.i] != '{' {
			return fail()
		}
		it.i = skipSpace(data, it.i+1)
		if it.i < len(data) && data[it.i] == '}' {
			it.done, it.good = true, skipSpace(data, it.i+1) == len(data)
			return false
		}
	} else {
		i := skipSpace(data, it.i)
		if i >= len(data) {
			return fail()
		}
		switch data[i] {
		case ',':
			it.i = skipSpace(data, i+1)
		case '}':
			it.done, it.good = true, skipSpace(data, i+1) == len(data)
			return false
		default:
			return fail()
		}
	}
	i := it.i
	end, ok := skipString(data, i)
	if !ok || bytes.IndexByte(data[i+1:end-1], '\\') >= 0 {
		return fail()
	}
	it.key = data[i+1 : end-1]
	i = skipSpace(data, end)
	if i >= len(data) || data[i] != ':' {
		return fail()
	}
	i = skipSpace(data, i+1)
	vend, ok := skipValue(data, i, 0)
	if !ok {
		return fail()
	}
	it.value, it.i = data[i:vend], vend
	return true
}

func (it *objectIter) ok() bool { return it.done && it.good }

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at i.
func skipString(data []byte, i int) (int, bool) {
	if i >= len(data) || data[i] != '"' {
		return 0, false
	}
	for i++; i < len(data); i++ {
		switch c := data[i]; {
		case c == '"':
			return i + 1, true
		case c == '\\':
			i++
			if i >= len(data) {
				return 0, false
			}
			switch data[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(data) {
					return 0, false
				}
				for _, h := range data[i+1 : i+5] {
					if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
						return 0, false
					}
				}
				i += 4
			default:
				return 0, false
			}
		case c < 0x20:
			return 0, false
		}
	}
	return 0, false
}

// skipValue returns the index after the JSON value starting at i.
func skipValue(data []byte, i, depth int) (int, bool) {
	if i >= len(data) || depth > 32 {
		return 0, false
	}
	switch c := data[i]; {
	case c == '"':
		return skipString(data, i)
	case c == '{' || c == '[':
		closer := byte('}')
		if c == '[' {
			closer = ']'
		}
		i = skipSpace(data, i+1)
		if i < len(data) && data[i] == closer {
			return i + 1, true
		}
		for {
			if c == '{' {
				end, ok := skipString(data, i)
				if !ok {
					return 0, false
				}
				i = skipSpace(data, end)
				if i >= len(data) || data[i] != ':' {
					return 0, false
				}
				i = skipSpace(data, i+1)
			}
			end, ok := skipValue(data, i, depth+1)
			if !ok {
				return 0, false
			}
			i = skipSpace(data, end)
			if i >= len(data) {
				return 0, false
			}
			if data[i] == closer {
				return i + 1, true
			}
			if data[i] != ',' {
				return 0, false
			}
			i = skipSpace(data, i+1)
		}
	case c == '-' || c >= '0' && c <= '9':
		end := i
		for end < len(data) && bytes.IndexByte([]byte("+-.eE0123456789"), data[end]) >= 0 {
			end++
		}
		if !json.Valid(data[i:end]) {
			return 0, false
		}
		return end, true
	default:
		for _, lit := range []string{"true", "false", "null"} {
			if bytes.HasPrefix(data[i:], []byte(lit)) {
				return i + len(lit), true
			}
		}
	}
	return 0, false
}

func parseMedia(top map[string]json.RawMessage) (*Media, error) {
	var media map[string]json.RawMessage
	if err := json.Unmarshal(top["media"], &media); err != nil || media == nil {
		return nil, bad(`media: "media" must be an object`)
	}
	m := &Media{}
	if err := str(media, "track", &m.Track); err != nil {
		return nil, bad("media: track: %v", err)
	}
	if raw, ok := media["timestamp"]; ok {
		n, has, err := number(raw)
		if err != nil {
			return nil, bad("media: timestamp: %v", err)
		}
		m.Timestamp, m.HasTimestamp = n, has
	}
	var payload string
	if err := str(media, "payload", &payload); err != nil {
		return nil, bad("media: payload: %v", err)
	}
	b, err := decodePayload([]byte(payload), nil)
	if err != nil {
		return nil, err
	}
	m.Payload = b
	return m, nil
}

// str reads a string field; a missing field or null leaves *dst alone.
func str(obj map[string]json.RawMessage, key string, dst *string) error {
	raw, ok := obj[key]
	if !ok || bytes.Equal(raw, []byte("null")) {
		return nil
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return errors.New("must be a string")
	}
	return nil
}

// number reads a non-negative integer sent as a JSON number or as a
// string of digits, as real senders do both; "" and null mean absent.
func number(raw json.RawMessage) (n uint64, has bool, err error) {
	if bytes.Equal(raw, []byte("null")) {
		return 0, false, nil
	}
	// The common case, digits alone or quoted, without allocating.
	digits := raw
	if len(digits) >= 2 && digits[0] == '"' && digits[len(digits)-1] == '"' {
		digits = digits[1 : len(digits)-1]
	}
	if len(digits) > 0 && len(digits) <= 19 {
		var v uint64
		ok := true
		for _, c := range digits {
			if c < '0' || c > '9' {
				ok = false
				break
			}
			v = v*10 + uint64(c-'0')
		}
		if ok {
			return v, true, nil
		}
	}
	var s string
	if len(raw) > 0 && raw[0] == '"' {
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, false, errors.New("must be a number")
		}
		s = strings.TrimSpace(s)
		if s == "" {
			return 0, false, nil
		}
	} else {
		s = string(raw)
	}
	n, err = strconv.ParseUint(s, 10, 64)
	if err != nil {
		// 5.0 is how some JSON encoders write 5.
		if f, ferr := strconv.ParseFloat(s, 64); ferr == nil && f >= 0 && f == float64(uint64(f)) && f < 1<<53 {
			return uint64(f), true, nil
		}
		return 0, false, fmt.Errorf("%s is not a non-negative integer", strconv.Quote(s))
	}
	return n, true, nil
}

// ParseEncoding maps the encodings the dialects name to a codec: lib/audio's
// names and aliases (audio/x-mulaw, pcmu, g711_alaw, linear16 ...), and the
// other names of 16-bit linear PCM, little-endian, as Exotel and Plivo
// send it.
func ParseEncoding(s string) (audio.Codec, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "audio/x-l16", "raw/slin", "base64", "pcm":
		return audio.CodecL16, nil
	}
	if c, err := audio.ParseCodec(s); err == nil {
		return c, nil
	}
	return audio.CodecUnknown, fmt.Errorf("unsupported encoding %q (want audio/x-mulaw, audio/x-alaw or 16-bit linear PCM)", s)
}
