package edge

import (
	"maps"
	"net/url"
	"slices"
	"testing"

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
