package escalation

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	escalationv1 "github.com/calmline/calmline/proto/calmline/escalation/v1"
)

func TestSilenceMatchesAndWindow(t *testing.T) {
	a := func(agent, rule string, labels map[string]string) *escalationv1.Alert {
		return &escalationv1.Alert{TenantId: "acme", AgentId: agent, Labels: labels, Event: &callv1.AlertEvent{RuleId: rule}}
	}
	s := &silence{Match: map[string]string{"queue": "training"}, StartsAt: 100, EndsAt: 200}
	for _, tc := range []struct {
		s    *silence
		a    *escalationv1.Alert
		want bool
	}{
		{s, a("ana", "cp", map[string]string{"queue": "training", "skill": "de"}), true},
		{s, a("ana", "cp", map[string]string{"queue": "vip"}), false},
		{s, a("ana", "cp", nil), false},
		{&silence{AgentID: "ana"}, a("ana", "cp", nil), true},
		{&silence{AgentID: "ana"}, a("bo", "cp", nil), false},
		{&silence{RuleID: "vip", Match: map[string]string{"queue": "vip"}}, a("bo", "cp", map[string]string{"queue": "vip"}), false},
		{&silence{RuleID: "vip", Match: map[string]string{"queue": "vip"}}, a("bo", "vip", map[string]string{"queue": "vip"}), true},
	} {
		if got := tc.s.matches(tc.a); got != tc.want {
			t.Errorf("%+v matches %v = %v; want %v", tc.s, tc.a, got, tc.want)
		}
	}
	for now, want := range map[int64]escalationv1.SilenceState{
		99: escalationv1.SilenceState_SILENCE_STATE_PENDING, 100: escalationv1.SilenceState_SILENCE_STATE_ACTIVE,
		199: escalationv1.SilenceState_SILENCE_STATE_ACTIVE, 200: escalationv1.SilenceState_SILENCE_STATE_EXPIRED,
	} {
		if got := s.state(now); got != want {
			t.Errorf("state at %d = %v; want %v", now, got, want)
		}
	}
}

func TestNewSilenceRefusesBadRequests(t *testing.T) {
	now := time.Date(2026, 12, 7, 14, 0, 0, 0, time.UTC)
	ts := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(now.Add(d)) }
	ok := func() *escalationv1.CreateSilenceRequest {
		return &escalationv1.CreateSilenceRequest{MatchLabels: map[string]string{"queue": "training"}, EndsAt: ts(time.Hour), CreatedBy: "sup-ana"}
	}
	if s, err := newSilence("acme", ok(), now); err != nil || s.StartsAt != now.UnixMilli() || !strings.HasPrefix(s.ID, "sil_") {
		t.Fatalf("newSilence = %+v, %v", s, err)
	}
	for _, tc := range []struct {
		mod  func(*escalationv1.CreateSilenceRequest)
		want string
	}{
		{func(r *escalationv1.CreateSilenceRequest) { r.MatchLabels = nil }, "needs match_labels, agent_id or rule_id"},
		{func(r *escalationv1.CreateSilenceRequest) { r.MatchLabels = map[string]string{"queue": "a b"} }, `match_labels["queue"] has byte 0x20`},
		{func(r *escalationv1.CreateSilenceRequest) { r.AgentId = "ana\n" }, "agent_id has byte 0x0a"},
		{func(r *escalationv1.CreateSilenceRequest) { r.CreatedBy = " " }, "created_by: say who"},
		{func(r *escalationv1.CreateSilenceRequest) { r.Comment = "line\nbreak" }, "comment has control character"},
		{func(r *escalationv1.CreateSilenceRequest) { r.Comment = strings.Repeat("x", 1025) }, "comment is 1025 bytes long"},
		{func(r *escalationv1.CreateSilenceRequest) { r.EndsAt = nil }, "ends_at is required"},
		{func(r *escalationv1.CreateSilenceRequest) { r.StartsAt = ts(2 * time.Hour) }, "is not after starts_at"},
		{func(r *escalationv1.CreateSilenceRequest) { r.StartsAt, r.EndsAt = ts(-2*time.Hour), ts(-time.Hour) }, "has passed"},
		{func(r *escalationv1.CreateSilenceRequest) { r.EndsAt = ts(31 * 24 * time.Hour) }, "at most 720h0m0s"},
	} {
		r := ok()
		tc.mod(r)
		_, err := newSilence("acme", r, now)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v; want %q", r, err, tc.want)
		}
	}
}

// A silence mutes the escalations of the calls it matches: they are still
// recorded (resolved, with the silence's id, audited) but nothing is sent.
// Calls it does not match, and calls after it expired, escalate as usual.
func TestSilencesMuteMatchingEscalations(t *testing.T) {
	rcv := newReceiver(t, nil)
	st := startStack(t, fmt.Sprintf(`    escalation:
      endpoints:
        - {name: on-call, url: '%s'}
      ladder:
        - {name: notify, action: notify, endpoint: on-call}
`, rcv.srv.URL), nil)
	labelled := func(call, queue string) *escalationv1.Alert {
		a := firing(call, 1)
		a.Labels = map[string]string{"queue": queue}
		return a
	}
	var sil escalationv1.Silence
	body := fmt.Sprintf(`{"match_labels":{"queue":"training"},"ends_at":%q,"created_by":"sup-ana","comment":"new hires this week"}`,
		time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	if code := st.rest(t, "POST", "/api/v1/silences", body, &sil); code != http.StatusCreated {
		t.Fatalf("POST /api/v1/silences = %d", code)
	}
	// (JSON enums decode as numbers only through protojson; read the
	// state over gRPC below.)
	if sil.Id == "" || sil.CreatedBy != "sup-ana" {
		t.Fatalf("created silence %+v", &sil)
	}

	muted := st.post(t, labelled("t1", "training"))[0]
	loud := st.post(t, labelled("v1", "vip"))[0]
	e := st.get(t, muted)
	if e.SilenceId != sil.Id || e.State != escalationv1.EscalationState_ESCALATION_STATE_RESOLVED || len(e.Steps) != 0 ||
		e.ResolvedBy != "calmline" || !strings.Contains(e.Resolution, sil.Id) {
		t.Errorf("silenced escalation %v; want resolved by the silence, without steps", e)
	}
	// Listed with the rest, and a repeat of the alert changes nothing.
	ec := escalationv1.NewEscalationServiceClient(st.cc)
	if l, err := ec.ListEscalations(st.ctx(), &escalationv1.ListEscalationsRequest{CallId: "t1"}); err != nil || len(l.Escalations) != 1 || l.Escalations[0].SilenceId != sil.Id {
		t.Errorf("escalations of call t1: %v, %v", l, err)
	}
	if again := st.post(t, labelled("t1", "training"))[0]; again != muted {
		t.Errorf("repeat of a silenced alert: %q; want %q", again, muted)
	}
	if e := st.get(t, loud); e.SilenceId != "" || e.State != escalationv1.EscalationState_ESCALATION_STATE_OPEN || e.Labels["queue"] != "vip" {
		t.Errorf("unsilenced escalation %v", e)
	}

	// Expired, the silence mutes nothing more.
	sc := escalationv1.NewSilenceServiceClient(st.cc)
	if code := st.rest(t, "POST", "/api/v1/silences/"+sil.Id+"/expire", `{"by":"sup-bo"}`, nil); code != http.StatusOK {
		t.Fatalf("expire = %d", code)
	}
	if code := st.rest(t, "POST", "/api/v1/silences/"+sil.Id+"/expire", `{"by":"sup-bo"}`, nil); code != http.StatusConflict {
		t.Errorf("expiring twice = %d; want 409", code)
	}
	after := st.post(t, labelled("t2", "training"))[0]
	if e := st.get(t, after); e.SilenceId != "" || e.State != escalationv1.EscalationState_ESCALATION_STATE_OPEN {
		t.Errorf("escalation after the silence expired: %v", e)
	}
	got := rcv.collect(t, 2, 10*time.Second)
	rcv.quiet(t, 200*time.Millisecond)
	if types := typesOf(got); !slices.Equal(types, []string{"escalation.triggered/v1", "escalation.triggered/t2"}) &&
		!slices.Equal(types, []string{"escalation.triggered/t2", "escalation.triggered/v1"}) {
		t.Errorf("sent %v; want the triggers of v1 and t2 only", types)
	}
	// The webhook names the call's labels.
	for _, m := range got {
		if l, _ := m.Data["labels"].(map[string]any); l["queue"] == nil {
			t.Errorf("%s carries no labels: %v", m.Type, m.Data)
		}
	}
	ls, err := sc.ListSilences(st.ctx(), &escalationv1.ListSilencesRequest{})
	if err != nil || len(ls.Silences) != 1 || ls.Silences[0].State != escalationv1.SilenceState_SILENCE_STATE_EXPIRED || ls.Silences[0].ExpiredBy != "sup-bo" {
		t.Errorf("ListSilences = %v, %v", ls, err)
	}
	if active, _ := sc.ListSilences(st.ctx(), &escalationv1.ListSilencesRequest{State: escalationv1.SilenceState_SILENCE_STATE_ACTIVE}); len(active.GetSilences()) != 0 {
		t.Errorf("active silences %v; want none", active)
	}
	if kinds := auditKinds(t, st); kinds["silence.created"] != 1 || kinds["silence.expired"] != 1 || kinds["escalation.silenced"] != 1 || kinds["escalation.opened"] != 2 {
		t.Errorf("audit kinds %v", kinds)
	}

	// An agent's silence over gRPC, and the API's errors.
	if _, err := sc.CreateSilence(st.ctx(), &escalationv1.CreateSilenceRequest{AgentId: "agent-7", CreatedBy: "care",
		EndsAt: timestamppb.New(time.Now().Add(time.Hour))}); err != nil {
		t.Fatal(err)
	}
	if id := st.post(t, firing("c9", 1))[0]; st.get(t, id).SilenceId == "" {
		t.Error("the agent's silence did not mute the agent's call")
	}
	for _, tc := range []struct {
		method, path, body string
		want               int
	}{
		{"POST", "/api/v1/silences", `{"match_labels":{"queue":"x"},"created_by":"a"}`, 400},
		{"POST", "/api/v1/silences", `{"ends_at":"2099-01-01T00:00:00Z","created_by":"a"}`, 400},
		{"POST", "/api/v1/silences", `{"colour":"blue"}`, 400},
		{"GET", "/api/v1/silences?state=bogus", "", 400},
		{"POST", "/api/v1/silences/sil_nope/expire", `{"by":"a"}`, 404},
		{"POST", "/api/v1/silences/" + sil.Id + "/expire", `{}`, 400},
	} {
		if code := st.rest(t, tc.method, tc.path, tc.body, nil); code != tc.want {
			t.Errorf("%s %s %s = %d; want %d", tc.method, tc.path, tc.body, code, tc.want)
		}
	}
}
