package feed

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSubscriberQueueOverflow(t *testing.T) {
	score := func(n int) *event { return &event{typ: "score", general: []byte{byte(n)}, score: true} }
	state := func(n int) *event { return &event{typ: "started", general: []byte{byte(n)}} }
	for _, c := range []struct {
		name       string
		queued     []*event
		push       *event
		wantReason string
		wantQueue  []byte // the events' payloads left queued
		wantKicked bool
	}{
		{"room left", []*event{score(1)}, score(2), "", []byte{1, 2}, false},
		{"full: the oldest score goes", []*event{state(1), score(2), score(3)}, state(4), "queue_full", []byte{1, 3, 4}, false},
		{"full of state events: a new score goes", []*event{state(1), state(2), state(3)}, score(4), "queue_full", []byte{1, 2, 3}, false},
		{"full of state events: a state event disconnects", []*event{state(1), state(2), state(3)}, state(4), "slow_subscriber", nil, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := &subscriber{max: 3, wake: make(chan struct{}, 1)}
			for _, ev := range c.queued {
				s.push(ev)
			}
			if reason := s.push(c.push); reason != c.wantReason {
				t.Errorf("drop reason %q; want %q", reason, c.wantReason)
			}
			q, kicked := s.take()
			var got []byte
			for _, ev := range q {
				got = append(got, ev.general[0])
			}
			if string(got) != string(c.wantQueue) || kicked != c.wantKicked {
				t.Errorf("queue %v, kicked %v; want %v, %v", got, kicked, c.wantQueue, c.wantKicked)
			}
		})
	}
}

func TestSubscriberFilters(t *testing.T) {
	ev := &event{typ: "score", callID: "c1", agentID: "a1", general: []byte("g"), full: []byte("f")}
	hidden := &event{typ: "alert", callID: "c1", agentID: "a1", full: []byte("f")}
	for _, c := range []struct {
		s           *subscriber
		ev          *event
		want        bool
		wantPayload string
	}{
		{&subscriber{}, ev, true, "g"},
		{&subscriber{full: true}, ev, true, "f"},
		{&subscriber{agentID: "a2"}, ev, false, ""},
		{&subscriber{callID: "c1"}, ev, true, "g"},
		{&subscriber{callID: "c2"}, ev, false, ""},
		{&subscriber{}, hidden, false, ""},
		{&subscriber{full: true, agentID: "a1"}, hidden, true, "f"},
	} {
		if got := c.s.wants(c.ev); got != c.want {
			t.Errorf("subscriber{full %v agent %q call %q} wants %s: %v; want %v", c.s.full, c.s.agentID, c.s.callID, c.ev.typ, got, c.want)
		}
		if c.want && string(c.ev.view(c.s.full)) != c.wantPayload {
			t.Errorf("subscriber{full %v} sees %q; want %q", c.s.full, c.ev.view(c.s.full), c.wantPayload)
		}
	}
}
