package asterisk

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/calmline/calmline/lib/audio"
)

// Event is a control message from Asterisk: MEDIA_START and the events
// that may follow it (DTMF_END, MEDIA_XOFF, MEDIA_XON, QUEUE_DRAINED,
// STATUS, ERROR...), in the plain-text form ("MEDIA_START
// connection_id:x channel:y ...") or the JSON form ({"event":
// "MEDIA_START", ...}) chan_websocket sends, depending on its
// control_message_format.
type Event struct {
	Name string
	// Fields holds the event's fields as text.
	Fields map[string]string
}

// Events Asterisk sends besides MEDIA_START; the adapter accepts and
// ignores them.
var knownEvents = map[string]bool{
	"MEDIA_START": true, "MEDIA_XON": true, "MEDIA_XOFF": true, "QUEUE_DRAINED": true, "STATUS": true, "ERROR": true,
	"MEDIA_BUFFERING_COMPLETED": true, "MEDIA_MARK_PROCESSED": true, "DTMF_END": true,
}

// maxControl bounds a control message (Asterisk's own limit is far lower
// for what it receives; MEDIA_START with channel variables runs longer).
const maxControl = 16 << 10

// ParseEvent parses a text frame from Asterisk.
func ParseEvent(data []byte) (*Event, error) {
	if len(data) > maxControl {
		return nil, fmt.Errorf("control message of %d bytes (at most %d)", len(data), maxControl)
	}
	s := strings.TrimSpace(string(data))
	if s == "" {
		return nil, fmt.Errorf("empty control message")
	}
	e := &Event{Fields: map[string]string{}}
	if s[0] == '{' {
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			return nil, fmt.Errorf("malformed JSON control message")
		}
		if err := json.Unmarshal(m["event"], &e.Name); err != nil || e.Name == "" {
			return nil, fmt.Errorf(`JSON control message without "event"`)
		}
		for k, v := range m {
			var str string
			if json.Unmarshal(v, &str) == nil {
				e.Fields[k] = str
				continue
			}
			var n json.Number
			if json.Unmarshal(v, &n) == nil {
				e.Fields[k] = n.String()
			}
		}
	} else {
		name, rest, _ := strings.Cut(s, " ")
		e.Name = name
		// Plain text: space-separated key:value pairs; a value may not
		// hold spaces except the last (ERROR's error_text).
		for rest != "" {
			var field string
			field, rest, _ = strings.Cut(strings.TrimLeft(rest, " "), " ")
			k, v, ok := strings.Cut(field, ":")
			if !ok {
				if e.Name == "MEDIA_BUFFERING_COMPLETED" || e.Name == "MEDIA_MARK_PROCESSED" {
					e.Fields["correlation_id"] = field
					continue
				}
				return nil, fmt.Errorf("%s: field %q is not key:value", e.Name, field)
			}
			if k == "error_text" {
				v = strings.TrimSpace(v + " " + rest)
				rest = ""
			}
			e.Fields[k] = v
		}
	}
	for _, c := range e.Name {
		if (c < 'A' || c > 'Z') && c != '_' {
			return nil, fmt.Errorf("%q is not an event name", e.Name)
		}
	}
	if !knownEvents[e.Name] {
		return nil, fmt.Errorf("unknown event %q", e.Name)
	}
	return e, nil
}

// MediaFormat returns the format MEDIA_START announces: ulaw, alaw, slin
// (16-bit, 8 kHz) or slin16 (16 kHz) — at 8 kHz, lib/audio's codec names
// and aliases.
func (e *Event) MediaFormat() (audio.Codec, int, error) {
	name := e.Fields["format"]
	switch strings.ToLower(name) {
	case "slin8":
		return audio.CodecL16, 8000, nil
	case "slin16":
		return audio.CodecL16, 16000, nil
	case "":
		return audio.CodecUnknown, 0, fmt.Errorf("MEDIA_START names no format")
	}
	if c, err := audio.ParseCodec(name); err == nil {
		return c, 8000, nil
	}
	return audio.CodecUnknown, 0, fmt.Errorf("unsupported format %q (want ulaw, alaw, slin or slin16)", name)
}

// FrameSize returns MEDIA_START's optimal_frame_size (0 when absent).
func (e *Event) FrameSize() int {
	n, _ := strconv.Atoi(e.Fields["optimal_frame_size"])
	return n
}

// FormatMediaStart writes MEDIA_START as Asterisk does, in plain text or
// JSON (the Client uses it).
func FormatMediaStart(jsonForm bool, connectionID, channel, channelID, format string, frameSize, ptime int) string {
	if jsonForm {
		b, _ := json.Marshal(map[string]any{"event": "MEDIA_START", "connection_id": connectionID, "channel": channel,
			"channel_id": channelID, "format": format, "optimal_frame_size": frameSize, "ptime": ptime,
			"channel_variables": map[string]string{"MEDIA_WEBSOCKET_CONNECTION_ID": connectionID}})
		return string(b)
	}
	return fmt.Sprintf("MEDIA_START connection_id:%s channel:%s channel_id:%s format:%s optimal_frame_size:%d ptime:%d",
		connectionID, channel, channelID, format, frameSize, ptime)
}
