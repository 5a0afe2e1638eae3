package edge

import (
	"strings"

	"github.com/calmline/calmline/gateway/session"
	"github.com/calmline/calmline/lib/audio"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
)

// CloseFrame is the Close of a Codec whose protocol has only the
// WebSocket's close frame to end a connection with (Twilio-style,
// Asterisk): embed it.
type CloseFrame struct{}

// Close implements Codec.
func (CloseFrame) Close(c *Conn, code int, reason string) { c.Close(code, reason) }

// Channels returns the channel of each of a call's tracks (Twilio's
// tracks, Asterisk's legs, AudioHook's channels), named in frame order,
// and the channels' roles: the track named agent is the agent's, any
// other the caller's.
func Channels(names []string, agent string) (map[string]int, []callv1.ChannelRole) {
	lanes := make(map[string]int, len(names))
	roles := make([]callv1.ChannelRole, len(names))
	for i, name := range names {
		lanes[name], roles[i] = i, callv1.ChannelRole_CHANNEL_ROLE_CALLER
		if name == agent {
			roles[i] = callv1.ChannelRole_CHANNEL_ROLE_AGENT
		}
	}
	return lanes, roles
}

// StartOf returns the start of a call whose channels are the named tracks,
// in frame order (roles as Channels gives them), and each track's channel.
func StartOf(callID, agentID string, codec audio.Codec, rate int, tracks []string, agent string, labels map[string]string) (session.Start, map[string]int) {
	lanes, roles := Channels(tracks, agent)
	return session.Start{CallID: callID, AgentID: agentID, Roles: roles, Labels: labels,
		Format: audio.Format{Codec: codec, SampleRate: rate, Channels: len(roles)}}, lanes
}

// Labels returns the call labels among a start's parameters (a
// Twilio-style start's custom parameters, an Asterisk leg's URL query):
// those named label.KEY (session.LabelParamPrefix), under KEY. The call
// core checks them.
func Labels[V string | []string](params map[string]V) map[string]string {
	labels := map[string]string{}
	for k, v := range params {
		if name, ok := strings.CutPrefix(k, session.LabelParamPrefix); ok {
			switch v := any(v).(type) {
			case string:
				labels[name] = v
			case []string:
				if len(v) > 0 {
					labels[name] = v[0]
				}
			}
		}
	}
	return labels
}
