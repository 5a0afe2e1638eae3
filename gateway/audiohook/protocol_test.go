package audiohook

import (
	"strings"
	"testing"
	"time"

	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
)

func TestDurations(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Duration
	}{
		{"PT0S", 0}, {"PT6.3S", 6300 * time.Millisecond}, {"PT.5S", 500 * time.Millisecond}, {"PT12S", 12 * time.Second},
		{"PT0.000000001S", 1}, {"PT3600.25S", time.Hour + 250*time.Millisecond},
	} {
		got, err := ParseDuration(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "PT", "PTS", "P1S", "PT1", "PT1.S", "PT-1S", "PT1e3S", "PT1.2.3S", "PT 1S", "PT0.0000000001S", "PT99999999999S", "PT1,5S"} {
		if d, err := ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q) = %v; want an error", bad, d)
		}
	}
	for d, want := range map[time.Duration]string{0: "PT0S", 6300 * time.Millisecond: "PT6.3S", 20 * time.Millisecond: "PT0.02S", 12 * time.Second: "PT12S", -time.Second: "PT0S"} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %s; want %s", d, got, want)
		}
	}
	if got := Samples(6300*time.Millisecond, 8000); got != 50400 {
		t.Errorf("Samples(6.3 s) = %d; want 50400", got)
	}
	if got := Samples(time.Duration(maxDurationSeconds)*time.Second, 16000); got != maxDurationSeconds*16000 {
		t.Errorf("Samples of ten years = %d", got)
	}
}

// spec holds client messages as the AudioHook specification shows them.
var spec = map[string]string{
	"open": `{"version":"2","type":"open","seq":1,"serverseq":0,"id":"e160e428-53e2-487c-977d-96989bf5c99d","position":"PT0S",
	  "parameters":{"organizationId":"d7934305-0972-4844-938e-9060eef73d05","conversationId":"090eaa2f-72fa-480a-83e0-8667ff89c0ec",
	  "participant":{"id":"883efee8-3d6c-4537-b500-6d7ca4b92fa0","ani":"+1-555-555-1234","aniName":"John Doe","dnis":"+1-800-555-6789"},
	  "media":[{"type":"audio","format":"PCMU","channels":["external","internal"],"rate":8000},
	           {"type":"audio","format":"PCMU","channels":["external"],"rate":8000},
	           {"type":"audio","format":"PCMU","channels":["internal"],"rate":8000}],
	  "language":"en-US","customConfig":{"agentId":"agent-7"}}}`,
	"ping":      `{"version":"2","type":"ping","seq":2,"serverseq":1,"id":"e160e428-53e2-487c-977d-96989bf5c99d","position":"PT5.02S","parameters":{"rtt":"PT0.0345S"}}`,
	"paused":    `{"version":"2","type":"paused","seq":3,"serverseq":2,"id":"e160e428-53e2-487c-977d-96989bf5c99d","position":"PT10S","parameters":{}}`,
	"resumed":   `{"version":"2","type":"resumed","seq":4,"serverseq":2,"id":"e160e428-53e2-487c-977d-96989bf5c99d","position":"PT30S","parameters":{"start":"PT10S","discarded":"PT20S"}}`,
	"discarded": `{"version":"2","type":"discarded","seq":5,"serverseq":2,"id":"e160e428-53e2-487c-977d-96989bf5c99d","position":"PT31.2S","parameters":{"start":"PT30.6S","discarded":"PT0.6S"}}`,
	"update":    `{"version":"2","type":"update","seq":6,"serverseq":2,"id":"e160e428-53e2-487c-977d-96989bf5c99d","position":"PT32S","parameters":{"language":"es-ES"}}`,
	"error":     `{"version":"2","type":"error","seq":7,"serverseq":2,"id":"e160e428-53e2-487c-977d-96989bf5c99d","position":"PT33S","parameters":{"code":429,"message":"Too many events","retryAfter":"PT1S"}}`,
	"close":     `{"version":"2","type":"close","seq":8,"serverseq":2,"id":"e160e428-53e2-487c-977d-96989bf5c99d","position":"PT60S","parameters":{"reason":"end"}}`,
}

func TestParsingTheSpecificationsMessages(t *testing.T) {
	for name, text := range spec {
		m, err := ParseClientMessage([]byte(text))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if m.Type != name {
			t.Errorf("%s parsed as %q", name, m.Type)
		}
		switch name {
		case "open":
			p, err := m.DecodeOpen()
			if err != nil || p.ConversationID != "090eaa2f-72fa-480a-83e0-8667ff89c0ec" || len(p.Media) != 3 || agentID(p.CustomConfig) != "agent-7" {
				t.Errorf("open: %+v %v", p, err)
			}
		case "ping":
			if rtt, err := m.DecodePing(); err != nil || rtt != 34500*time.Microsecond || m.Position != 5020*time.Millisecond {
				t.Errorf("ping: rtt %v position %v %v", rtt, m.Position, err)
			}
		case "resumed", "discarded":
			s, err := m.DecodeSpan()
			if err != nil || s.End() != m.Position {
				t.Errorf("%s: span %+v ends at %v; its position is %v (%v)", name, s, s.End(), m.Position, err)
			}
		case "update":
			if l, err := m.DecodeUpdate(); err != nil || l != "es-ES" {
				t.Errorf("update: %q %v", l, err)
			}
		case "error":
			if p, err := m.DecodeError(); err != nil || p.Code != 429 {
				t.Errorf("error: %+v %v", p, err)
			}
		case "close":
			if p, err := m.DecodeClose(); err != nil || p.Reason != "end" {
				t.Errorf("close: %+v %v", p, err)
			}
		case "paused":
			if err := m.DecodeEmpty(); err != nil {
				t.Errorf("paused: %v", err)
			}
		}
	}
}

func TestMalformedClientMessages(t *testing.T) {
	base := `{"version":"2","type":"ping","seq":1,"serverseq":0,"id":"e160e428-53e2-487c-977d-96989bf5c99d","position":"PT0S","parameters":{}}`
	with := func(old, new string) string { return strings.Replace(base, old, new, 1) }
	for _, c := range []struct{ in, want string }{
		{`{"version":"2",`, "not valid JSON"},
		{`[1,2]`, "not a JSON object"},
		{with(`"version":"2"`, `"version":"1"`), `"version" must be "2"`},
		{with(`"id":"e160e428-53e2-487c-977d-96989bf5c99d"`, `"id":"session-1"`), `"id" must be a UUID`},
		{with(`"type":"ping",`, ``), `"type" is missing`},
		{with(`"seq":1`, `"seq":-1`), `"seq" has the wrong type`},
		{with(`"seq":1`, `"seq":"1"`), `"seq" has the wrong type`},
		{with(`"seq":1`, `"seq":1.5`), `"seq" has the wrong type`},
		{with(`"serverseq":0,`, ``), `"seq" and "serverseq"`},
		{with(`"position":"PT0S"`, `"position":"5s"`), `"position"`},
		{with(`"parameters":{}`, `"parameters":null`), `"parameters" must be an object`},
	} {
		_, err := ParseClientMessage([]byte(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseClientMessage(%s) = %v; want an error containing %q", c.in, err, c.want)
		}
	}
	decode := func(typ, params string) *ClientMessage {
		return &ClientMessage{Type: typ, Params: []byte(params)}
	}
	for _, c := range []struct {
		m    *ClientMessage
		f    func(*ClientMessage) error
		want string
	}{
		{decode("open", `{"organizationId":"x","conversationId":"090eaa2f-72fa-480a-83e0-8667ff89c0ec","media":[]}`), func(m *ClientMessage) error { _, err := m.DecodeOpen(); return err }, `"organizationId" must be a UUID`},
		{decode("open", `{"organizationId":"d7934305-0972-4844-938e-9060eef73d05","conversationId":"090eaa2f-72fa-480a-83e0-8667ff89c0ec"}`), func(m *ClientMessage) error { _, err := m.DecodeOpen(); return err }, `"media" is missing`},
		{decode("open", `{"organizationId":"d7934305-0972-4844-938e-9060eef73d05","conversationId":"090eaa2f-72fa-480a-83e0-8667ff89c0ec","media":[{"type":"audio"}]}`), func(m *ClientMessage) error { _, err := m.DecodeOpen(); return err }, `media[0] needs`},
		{decode("open", `{"organizationId":"d7934305-0972-4844-938e-9060eef73d05","conversationId":"090eaa2f-72fa-480a-83e0-8667ff89c0ec","media":"PCMU"}`), func(m *ClientMessage) error { _, err := m.DecodeOpen(); return err }, `"media" has the wrong type`},
		{decode("close", `{"reason":"bored"}`), func(m *ClientMessage) error { _, err := m.DecodeClose(); return err }, `"reason" must be`},
		{decode("discarded", `{"start":"PT1S"}`), func(m *ClientMessage) error { _, err := m.DecodeSpan(); return err }, `"start" and "discarded" are required`},
		{decode("resumed", `{"start":"PT1S","discarded":"1s"}`), func(m *ClientMessage) error { _, err := m.DecodeSpan(); return err }, `"discarded"`},
		{decode("error", `{"code":200,"message":"ok"}`), func(m *ClientMessage) error { _, err := m.DecodeError(); return err }, `"code" must be 400 to 9999`},
		{decode("ping", `{"rtt":5}`), func(m *ClientMessage) error { _, err := m.DecodePing(); return err }, `"rtt" has the wrong type`},
		{decode("update", `{}`), func(m *ClientMessage) error { _, err := m.DecodeUpdate(); return err }, `"language" is required`},
	} {
		if err := c.f(c.m); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %s: %v; want an error containing %q", c.m.Type, c.m.Params, err, c.want)
		}
	}
}

func TestSelectMediaPrefersStereoAndKeepsTheFrameOrder(t *testing.T) {
	pcmu := func(ch ...string) MediaParameter {
		return MediaParameter{Type: "audio", Format: "PCMU", Channels: ch, Rate: 8000}
	}
	caller, agent := callv1.ChannelRole_CHANNEL_ROLE_CALLER, callv1.ChannelRole_CHANNEL_ROLE_AGENT
	for _, c := range []struct {
		name    string
		offered []MediaParameter
		want    []string
		roles   []callv1.ChannelRole
	}{
		{"stereo first", DefaultMedia, []string{"external", "internal"}, []callv1.ChannelRole{caller, agent}},
		{"stereo offered last", []MediaParameter{pcmu("internal"), pcmu("external"), pcmu("external", "internal")}, []string{"external", "internal"}, []callv1.ChannelRole{caller, agent}},
		{"inverted stereo", []MediaParameter{pcmu("internal", "external"), pcmu("internal"), pcmu("external")}, []string{"internal", "external"}, []callv1.ChannelRole{agent, caller}},
		{"mono caller before agent", []MediaParameter{pcmu("internal"), pcmu("external")}, []string{"external"}, []callv1.ChannelRole{caller}},
		{"mono agent", []MediaParameter{pcmu("internal")}, []string{"internal"}, []callv1.ChannelRole{agent}},
		{"L16 skipped", []MediaParameter{{Type: "audio", Format: "L16", Channels: []string{"external", "internal"}, Rate: 8000}, pcmu("external")}, []string{"external"}, []callv1.ChannelRole{caller}},
		{"16 kHz skipped", []MediaParameter{{Type: "audio", Format: "PCMU", Channels: []string{"external"}, Rate: 16000}}, nil, nil},
		{"nothing", nil, nil, nil},
	} {
		m, roles, ok := SelectMedia(c.offered)
		if ok != (c.want != nil) || strings.Join(m.Channels, ",") != strings.Join(c.want, ",") || len(roles) != len(c.roles) {
			t.Errorf("%s: selected %v %v %v; want %v %v", c.name, m.Channels, roles, ok, c.want, c.roles)
			continue
		}
		for i := range roles {
			if roles[i] != c.roles[i] {
				t.Errorf("%s: roles %v; want %v", c.name, roles, c.roles)
			}
		}
	}
}
