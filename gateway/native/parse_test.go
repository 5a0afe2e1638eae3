package native

import (
	"strings"
	"testing"

	"github.com/calmline/calmline/lib/field"
)

// FuzzParseText feeds the text-message parser anything: it never panics,
// and it either accepts a well-formed message or names the problem with a
// documented close code.
func FuzzParseText(f *testing.F) {
	for _, s := range []string{
		`{"type":"start","call_id":"c1","agent_id":"a1","codec":"pcmu","sample_rate":8000,"channels":["caller","agent"],"labels":{"q":"x"}}`,
		`{"type":"start","call_id":"c1","codec":"l16","sample_rate":16000,"channels":["agent"]}`,
		`{"type":"start","call_id":"c1","codec":"opus","sample_rate":48000}`,
		`{"type":"start","call_id":"c1","codec":"alaw","sample_rate":8000,"channels":["agent","agent"]}`,
		`{"type":"start","call_id":"c1","codec":"pcmu","sample_rate":8000,"resume":true,"resume_at_sample":24000}`,
		`{"type":"start","call_id":"c1","codec":"pcmu","sample_rate":8000,"resume_at_sample":24000}`,
		`{"type":"gap","samples":8000,"reason":"paused"}`,
		`{"type":"gap","samples":0}`,
		`{"type":"stop"}`,
		`{"type":"hello"}`,
		`{"call_id":"x"}`,
		`{"type":"start",`,
		`[]`,
		`null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, perr := parseText(data)
		if perr != nil {
			switch perr.code {
			case CloseBadMessage, CloseUnsupportedMedia:
			default:
				t.Fatalf("close code %d for a bad message", perr.code)
			}
			if perr.reason == "" {
				t.Fatal("no reason")
			}
			return
		}
		switch m.typ {
		case "start":
			if field.ID("call_id", m.callID) != nil || field.OptionalID("agent_id", m.agentID) != nil {
				t.Fatalf("start accepted with call id %q, agent id %q", m.callID, m.agentID)
			}
			if err := m.format.Validate(); err != nil {
				t.Fatalf("start accepted with format %+v: %v", m.format, err)
			}
			if m.resumeAt != 0 && !m.resume {
				t.Fatalf("start accepted with resume_at_sample %d and no resume", m.resumeAt)
			}
			if len(m.roles) != m.format.Channels || len(m.roles) == 2 && m.roles[0] == m.roles[1] {
				t.Fatalf("start accepted with roles %v for %d channels", m.roles, m.format.Channels)
			}
		case "gap":
			if m.gapSamples == 0 || m.gapSamples > maxGapSamples {
				t.Fatalf("gap accepted with %d samples", m.gapSamples)
			}
		case "stop":
		default:
			t.Fatalf("accepted a message of type %q", m.typ)
		}
	})
}

func TestParseStartCallIDLimit(t *testing.T) {
	_, perr := parseText([]byte(`{"type":"start","call_id":"` + strings.Repeat("x", 129) + `","codec":"pcmu","sample_rate":8000}`))
	if perr == nil || perr.code != CloseBadMessage || !strings.Contains(perr.reason, "at most 128") {
		t.Errorf("a 129-byte call id: %+v; want 4400 naming the limit", perr)
	}
}

// Ids are refused, never cleaned: two different invalid ids (invalid
// UTF-8 becomes U+FFFD in JSON, a space or a control character would be
// trimmed by a careless consumer) must not become the same call.
func TestParseStartRefusesIDsThatCouldCollide(t *testing.T) {
	for _, id := range []string{`a\u00e9`, `a\ufffd`, "a b", `a\u0000`, `a\t`, "a\xff", `\u00ff\u00fe`} {
		for _, fld := range []string{"call_id", "agent_id"} {
			msg := `{"type":"start","call_id":"c1","codec":"pcmu","sample_rate":8000,"` + fld + `":"` + id + `"}`
			if _, perr := parseText([]byte(msg)); perr == nil || perr.code != CloseBadMessage || !strings.Contains(perr.reason, fld) {
				t.Errorf("%s %q: %+v; want 4400 naming the field", fld, id, perr)
			}
		}
	}
}

func TestParseStartResume(t *testing.T) {
	for _, c := range []struct {
		msg    string
		resume bool
		at     uint64
		bad    string
	}{
		{msg: `"resume":true,"resume_at_sample":24000`, resume: true, at: 24000},
		{msg: `"resume":true`, resume: true},
		{msg: `"resume_at_sample":24000`, bad: "resume_at_sample without resume"},
		{msg: `"resume":true,"resume_at_sample":99999999999999`, bad: "more than a day"},
	} {
		m, perr := parseText([]byte(`{"type":"start","call_id":"c1","codec":"pcmu","sample_rate":8000,` + c.msg + `}`))
		switch {
		case c.bad != "":
			if perr == nil || perr.code != CloseBadMessage || !strings.Contains(perr.reason, c.bad) {
				t.Errorf("%s: %+v; want 4400 saying %q", c.msg, perr, c.bad)
			}
		case perr != nil:
			t.Errorf("%s: refused: %+v", c.msg, perr)
		case m.resume != c.resume || m.resumeAt != c.at:
			t.Errorf("%s: resume %v at %d; want %v at %d", c.msg, m.resume, m.resumeAt, c.resume, c.at)
		}
	}
}
