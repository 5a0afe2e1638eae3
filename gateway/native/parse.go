package native

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/field"
	"github.com/calmline/calmline/lib/wire"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
)

// clientMsg is a client's text message as JSON.
type clientMsg struct {
	Type       string            `json:"type"`
	CallID     string            `json:"call_id"`
	AgentID    string            `json:"agent_id"`
	Codec      string            `json:"codec"`
	SampleRate int               `json:"sample_rate"`
	Channels   []string          `json:"channels"`
	Labels     map[string]string `json:"labels"`
	// Resume continues a call whose connection ended without stop;
	// ResumeAt is the timeline position of the audio that follows.
	Resume   bool   `json:"resume"`
	ResumeAt uint64 `json:"resume_at_sample"`
	// gap
	Samples uint64 `json:"samples"`
	Reason  string `json:"reason"`
}

// message is a client's text message, decoded and checked.
type message struct {
	typ string // "start", "gap" or "stop"
	// start
	callID, agentID string
	format          audio.Format
	roles           []callv1.ChannelRole
	labels          map[string]string
	resume          bool
	resumeAt        uint64
	// gap
	gapSamples uint64
	gapReason  callv1.GapReason
	gapDetail  string
}

// protoError is a client error: the close code and reason the connection
// ends with.
type protoError struct {
	code   int
	reason string
}

var gapReasons = map[string]callv1.GapReason{
	"":          callv1.GapReason_GAP_REASON_PAUSED,
	"paused":    callv1.GapReason_GAP_REASON_PAUSED,
	"discarded": callv1.GapReason_GAP_REASON_DISCARDED,
	"lost":      callv1.GapReason_GAP_REASON_CLIENT_LOSS,
}

// maxGapSamples bounds one gap: an hour at 16 kHz, as the other
// protocols' adapters bound theirs.
const maxGapSamples = 3600 * 16000

// parseText decodes and checks a text message. The checks that need no
// state are all here (the order of messages is the connection's business);
// a bad message gets its documented close code and a precise reason. A
// message that fails is still returned when its type is known.
func parseText(data []byte) (*message, *protoError) {
	var m clientMsg
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, &protoError{CloseBadMessage, "malformed JSON: " + err.Error()}
	}
	switch m.Type {
	case "start":
		return parseStart(&m)
	case "gap":
		g, ok := gapReasons[m.Reason]
		if !ok || m.Samples == 0 || m.Samples > maxGapSamples {
			return &message{typ: "gap"}, &protoError{CloseBadMessage, "gap: want samples > 0 and reason paused, discarded or lost"}
		}
		return &message{typ: "gap", gapSamples: m.Samples, gapReason: g, gapDetail: m.Reason}, nil
	case "stop":
		return &message{typ: "stop"}, nil
	case "":
		return nil, &protoError{CloseBadMessage, `message without "type"`}
	}
	return nil, &protoError{CloseBadMessage, fmt.Sprintf("unknown message type %.40q", m.Type)}
}

func parseStart(m *clientMsg) (*message, *protoError) {
	out := &message{typ: "start"}
	bad := func(code int, format string, args ...any) (*message, *protoError) {
		return out, &protoError{code, "start: " + fmt.Sprintf(format, args...)}
	}
	if err := field.ID("call_id", m.CallID); err != nil {
		return bad(CloseBadMessage, "%v", err)
	}
	if err := field.OptionalID("agent_id", m.AgentID); err != nil {
		return bad(CloseBadMessage, "%v", err)
	}
	switch {
	case m.ResumeAt != 0 && !m.Resume:
		return bad(CloseBadMessage, "resume_at_sample without resume")
	case m.ResumeAt > 24*maxGapSamples:
		return bad(CloseBadMessage, "resume_at_sample %d is more than a day of audio", m.ResumeAt)
	}
	codec, err := audio.ParseCodec(m.Codec)
	if err != nil {
		return bad(CloseUnsupportedMedia, "%v", err)
	}
	if !audio.SupportedSampleRate(m.SampleRate) {
		return bad(CloseUnsupportedMedia, "unsupported sample_rate %d (want 8000 or 16000)", m.SampleRate)
	}
	if len(m.Channels) == 0 {
		m.Channels = []string{"caller", "agent"}
	}
	if len(m.Channels) > 2 {
		return bad(CloseUnsupportedMedia, "%d channels (want 1 or 2)", len(m.Channels))
	}
	roles := make([]callv1.ChannelRole, len(m.Channels))
	for i, name := range m.Channels {
		if roles[i], err = wire.Role(strings.ToLower(name)); err != nil {
			return bad(CloseBadMessage, "%v", err)
		}
	}
	if len(roles) == 2 && roles[0] == roles[1] {
		return bad(CloseBadMessage, "channel roles must be distinct caller/agent")
	}
	out.callID, out.agentID, out.labels, out.roles = m.CallID, m.AgentID, m.Labels, roles
	out.resume, out.resumeAt = m.Resume, m.ResumeAt
	out.format = audio.Format{Codec: codec, SampleRate: m.SampleRate, Channels: len(roles)}
	return out, nil
}
