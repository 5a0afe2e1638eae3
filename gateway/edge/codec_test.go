package edge

import (
	"maps"
	"net/url"
	"slices"
	"testing"

	"github.com/calmline/calmline/lib/audio"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
)

func TestChannels(t *testing.T) {
	caller, agent := callv1.ChannelRole_CHANNEL_ROLE_CALLER, callv1.ChannelRole_CHANNEL_ROLE_AGENT
	for _, tc := range []struct {
		names []string
		lanes map[string]int
		roles []callv1.ChannelRole
	}{
		{[]string{"inbound", "outbound"}, map[string]int{"inbound": 0, "outbound": 1}, []callv1.ChannelRole{caller, agent}},
		{[]string{"outbound"}, map[string]int{"outbound": 0}, []callv1.ChannelRole{agent}},
		{[]string{"outbound", "inbound"}, map[string]int{"outbound": 0, "inbound": 1}, []callv1.ChannelRole{agent, caller}},
		{nil, map[string]int{}, []callv1.ChannelRole{}},
	} {
		lanes, roles := Channels(tc.names, "outbound")
		if !maps.Equal(lanes, tc.lanes) || !slices.Equal(roles, tc.roles) {
			t.Errorf("Channels(%q) = %v %v; want %v %v", tc.names, lanes, roles, tc.lanes, tc.roles)
		}
	}
}

func TestLabels(t *testing.T) {
	params := map[string]string{"label.queue": "vip", "label.skill": "", "api_key": "secret", "labelx": "no", "agent_id": "a1"}
	if got, want := Labels(params), map[string]string{"queue": "vip", "skill": ""}; !maps.Equal(got, want) {
		t.Errorf("Labels(params) = %v; want %v", got, want)
	}
	q, _ := url.ParseQuery("call_id=c1&label.queue=vip&label.queue=second&label.tier=gold&role=agent")
	if got, want := Labels(q), map[string]string{"queue": "vip", "tier": "gold"}; !maps.Equal(got, want) {
		t.Errorf("Labels(query) = %v; want %v (the first value of a repeated parameter)", got, want)
	}
	if got := Labels(url.Values{"label.empty": nil}); len(got) != 0 {
		t.Errorf("a parameter without a value made labels %v", got)
	}
}

func TestStartOf(t *testing.T) {
	labels := map[string]string{"queue": "vip"}
	st, lanes := StartOf("c1", "a1", audio.CodecL16, 16000, []string{"caller", "agent"}, "agent", labels)
	want := audio.Format{Codec: audio.CodecL16, SampleRate: 16000, Channels: 2}
	if st.CallID != "c1" || st.AgentID != "a1" || st.Format != want || !maps.Equal(st.Labels, labels) ||
		!slices.Equal(st.Roles, []callv1.ChannelRole{callv1.ChannelRole_CHANNEL_ROLE_CALLER, callv1.ChannelRole_CHANNEL_ROLE_AGENT}) ||
		!maps.Equal(lanes, map[string]int{"caller": 0, "agent": 1}) {
		t.Fatalf("StartOf = %+v %v", st, lanes)
	}
	if st, _ := StartOf("c2", "", audio.CodecPCMU, 8000, []string{"agent"}, "agent", nil); st.Format.Channels != 1 || st.Roles[0] != callv1.ChannelRole_CHANNEL_ROLE_AGENT {
		t.Fatalf("an agent-only call starts as %+v; want one agent channel", st)
	}
}
