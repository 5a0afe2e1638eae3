package escalation

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	escalationv1 "github.com/calmline/calmline/proto/calmline/escalation/v1"
)

// firing returns a firing alert of episode ep of a call.
func firing(call string, ep int) *escalationv1.Alert {
	return alertEvent(call, ep, callv1.AlertState_ALERT_STATE_FIRING, callv1.ScoreKind_SCORE_KIND_CALLER_PRESSURE)
}

func alertEvent(call string, ep int, st callv1.AlertState, score callv1.ScoreKind) *escalationv1.Alert {
	return &escalationv1.Alert{TenantId: "acme", CallId: call, AgentId: "agent-7", Event: &callv1.AlertEvent{
		AlertId: fmt.Sprintf("acme/%s/cp/%d", call, ep), RuleId: "cp", Episode: uint32(ep), State: st, Score: score,
		Value: 84, Threshold: 70, Second: 12, At: timestamppb.Now(),
	}}
}

// TestEveryEscalationDeliveredInOrderOnce is the outbox's main promise.
// The on-call team's receiver fails, times out, answers 429 with
// Retry-After, breaks the connection, and succeeds late (it takes the
// message, then answers after the sender gave up); the intervention
// team's transfer API fails too. Every escalation still reaches both,
// in order per call, each message's effect taken once, every request
// signed (verified by an independent implementation of the check, with
// the on-call receiver still holding the old secret of a rotation).
func TestEveryEscalationDeliveredInOrderOnce(t *testing.T) {
	dir := t.TempDir()
	oldKey, oldPath := newKey(t, dir, "oncall-old")
	_, newPath := newKey(t, dir, "oncall-new")
	ivKey, ivPath := newKey(t, dir, "intervention")
	var slow atomic.Bool // set once the late answer was given, so that it happens once
	oncall := newReceiver(t, func(m message) answer {
		call, _ := m.Data["call_id"].(string)
		switch {
		case call == "c1" && m.Type == "escalation.triggered" && m.Attempt == 1:
			return answer{status: 500}
		case call == "c2" && m.Type == "escalation.triggered" && m.Attempt == 1 && slow.CompareAndSwap(false, true):
			return answer{status: 200, processed: true, delay: 1500 * time.Millisecond} // succeeds late
		case call == "c3" && m.Type == "escalation.triggered" && m.Attempt == 1:
			return answer{status: 429, retryAfter: "1"}
		case call == "c4" && m.Type == "escalation.triggered" && m.Attempt == 1:
			return answer{status: -1} // connection broken
		case call == "c1" && m.Type == "escalation.acknowledged" && m.Attempt < 3:
			return answer{status: 503}
		}
		return answer{status: 200, processed: true}
	}, oldKey)
	intervention := newReceiver(t, func(m message) answer {
		call, _ := m.Data["call_id"].(string)
		switch {
		case call == "c1" && m.Attempt == 1:
			return answer{status: 502}
		case call == "c3" && m.Attempt == 1:
			return answer{status: 200, processed: true, delay: 1500 * time.Millisecond}
		}
		return answer{status: 200, processed: true}
	}, ivKey)
	st := startStack(t, fmt.Sprintf(`    escalation:
      retry: {initial: 30ms, max_interval: 200ms, give_up_after: 1m}
      endpoints:
        - name: on-call
          url: %s/hooks/calmline
          events: [escalation.transfer_succeeded, escalation.transfer_failed, escalation.acknowledged, escalation.resolved]
          signing_secrets: [{file: %s}, {file: %s}]
          timeout: 1s
        - name: intervention
          url: %s/api/transfers
          signing_secrets: [{file: %s}]
          timeout: 1s
          params: {queue: intervention-1}
      ladder:
        - {name: notify, action: notify, endpoint: on-call}
        - {name: transfer, action: transfer, endpoint: intervention}
`, oncall.srv.URL, newPath, oldPath, intervention.srv.URL, ivPath), nil)

	calls := []string{"c1", "c2", "c3", "c4", "c5", "c6"}
	ids := map[string]string{}
	for _, c := range calls {
		ids[c] = st.post(t, firing(c, 1))[0]
	}
	// Repeats (a retry, another realtime instance) are the same
	// escalations and send nothing more.
	again := st.post(t, firing("c1", 1), firing("c2", 1), firing("c1", 1))
	if again[0] != ids["c1"] || again[1] != ids["c2"] || again[2] != ids["c1"] {
		t.Errorf("repeated alerts: %v; want %s, %s, %s", again, ids["c1"], ids["c2"], ids["c1"])
	}
	// People act while the first messages are still being retried: their
	// events must wait for the earlier ones of the same call.
	ec := escalationv1.NewEscalationServiceClient(st.cc)
	for _, c := range calls[:3] {
		if _, err := ec.AcknowledgeEscalation(st.ctx(), &escalationv1.AcknowledgeEscalationRequest{Id: ids[c], By: "sup-ana"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range calls {
		if code := st.rest(t, "POST", "/api/v1/escalations/"+ids[c]+"/resolve", `{"by":"sup-ana","resolution":"agent ok"}`, nil); code != 200 {
			t.Fatalf("resolve %s: %d", c, code)
		}
	}

	// 6 triggered + 6 transfer_succeeded + 3 acknowledged + 6 resolved.
	got := oncall.collect(t, 21, 20*time.Second)
	transfers := intervention.collect(t, 6, 10*time.Second)
	oncall.quiet(t, 300*time.Millisecond)
	intervention.quiet(t, 10*time.Millisecond)

	dc := escalationv1.NewDeliveryServiceClient(st.cc)
	for _, c := range calls {
		// In order per call: the receiver took the call's messages in the
		// order they were created.
		list, err := dc.ListDeliveries(st.ctx(), &escalationv1.ListDeliveriesRequest{CallId: c})
		if err != nil {
			t.Fatal(err)
		}
		var want, have []string
		for i := len(list.Deliveries) - 1; i >= 0; i-- {
			d := list.Deliveries[i]
			if d.State != escalationv1.DeliveryState_DELIVERY_STATE_SUCCEEDED {
				t.Errorf("%s: delivery %s (%s) is %v after %d attempts: %s", c, d.Id, d.EventType, d.State, d.Attempts, d.LastError)
			}
			if d.Endpoint == "on-call" {
				want = append(want, d.EventType+" "+d.Id)
			}
		}
		for _, m := range got {
			if m.Data["call_id"] == c {
				have = append(have, m.Type+" "+m.ID)
			}
		}
		if !slices.Equal(have, want) {
			t.Errorf("%s: the on-call team got\n  %v\nwant, in creation order,\n  %v", c, have, want)
		}
		if len(have) == 0 || !strings.HasPrefix(have[0], "escalation.triggered") {
			t.Errorf("%s: messages %v; want escalation.triggered first", c, have)
		}
		e := st.get(t, ids[c])
		if len(e.Steps) != 2 || e.Steps[0].State != escalationv1.StepState_STEP_STATE_SUCCEEDED || e.Steps[1].State != escalationv1.StepState_STEP_STATE_SUCCEEDED {
			t.Errorf("%s: steps %v; want notify and transfer succeeded", c, e.Steps)
		}
	}
	// Retries happened where the receivers failed, with the same id, and
	// the late success was taken once.
	byCall := map[string]message{}
	for _, m := range got {
		if m.Type == "escalation.triggered" {
			byCall[m.Data["call_id"].(string)] = m
		}
	}
	// (At least: on a loaded machine a slow answer may time out too.)
	for _, c := range []string{"c1", "c2", "c3", "c4"} {
		if n := oncall.attemptsOf(byCall[c].ID); n < 2 {
			t.Errorf("%s: %d attempts of escalation.triggered; want a retry after the failure", c, n)
		}
	}
	// Retry-After: 1 was honoured.
	var c3 []time.Time
	for _, m := range oncall.messages() {
		if m.ID == byCall["c3"].ID {
			c3 = append(c3, m.At)
		}
	}
	if len(c3) != 2 || c3[1].Sub(c3[0]) < time.Second {
		t.Errorf("c3: attempts at %v; want the second at least 1 s after the first (Retry-After: 1)", c3)
	}
	if bad := append(oncall.badSignatures(), intervention.badSignatures()...); len(bad) > 0 {
		t.Errorf("requests the receivers could not verify: %v", bad)
	}
	sigs := strings.Fields(got[0].Header.Get("webhook-signature"))
	if len(sigs) != 2 || !strings.HasPrefix(sigs[0], "v1,") || !strings.HasPrefix(sigs[1], "v1,") {
		t.Errorf("webhook-signature %q; want two v1 signatures during the rotation", got[0].Header.Get("webhook-signature"))
	}
	// The transfer request carries what the intervention team needs.
	tr := transfers[0]
	if tr.Type != TypeTransferRequested || tr.Data["escalation_id"] == "" || tr.Data["agent_id"] != "agent-7" ||
		tr.Data["params"].(map[string]any)["queue"] != "intervention-1" || tr.Data["alert"].(map[string]any)["score"] != "caller_pressure" {
		t.Errorf("transfer request %s", tr.Body)
	}
}

func TestDeadLetterAndRedrive(t *testing.T) {
	var healthy atomic.Bool
	oncall := newReceiver(t, nil)
	pbx := newReceiver(t, func(m message) answer {
		if !healthy.Load() {
			return answer{status: 404} // final: not retried
		}
		return answer{status: 200, processed: true}
	})
	intervention := newReceiver(t, func(m message) answer {
		if !healthy.Load() {
			return answer{status: 500} // retried until the schedule runs out
		}
		return answer{status: 200, processed: true}
	})
	st := startStack(t, fmt.Sprintf(`    escalation:
      retry: {initial: 10ms, max_interval: 20ms, max_attempts: 3}
      endpoints:
        - {name: on-call, url: '%s', events: [escalation.transfer_failed, escalation.transfer_succeeded]}
        - {name: pbx, url: '%s'}
        - {name: intervention, url: '%s'}
      ladder:
        - {name: notify, action: notify, endpoint: on-call}
        - {name: warn, action: warn_caller, endpoint: pbx}
        - {name: transfer, action: transfer, endpoint: intervention}
`, oncall.srv.URL, pbx.srv.URL, intervention.srv.URL), nil)
	id := st.post(t, firing("c1", 1))[0]
	got := oncall.collect(t, 2, 10*time.Second)
	if got[0].Type != "escalation.triggered" || got[1].Type != "escalation.transfer_failed" {
		t.Fatalf("on-call got %v; want triggered, then transfer_failed", typesOf(got))
	}
	if tr := got[1].Data["transfer"].(map[string]any); tr["attempts"] != 3.0 || tr["last_status"] != 500.0 {
		t.Errorf("transfer_failed data %s", got[1].Body)
	}
	e := st.get(t, id)
	want := []escalationv1.StepState{escalationv1.StepState_STEP_STATE_SUCCEEDED, escalationv1.StepState_STEP_STATE_FAILED, escalationv1.StepState_STEP_STATE_FAILED}
	for i, s := range e.Steps {
		if s.State != want[i] {
			t.Errorf("step %s: %v; want %v", s.Name, s.State, want[i])
		}
	}

	// The dead letters are visible over REST ...
	var raw struct {
		Deliveries []struct {
			ID        string `json:"id"`
			State     string `json:"state"`
			EventType string `json:"event_type"`
			Endpoint  string `json:"endpoint"`
			LastError string `json:"last_error"`
			Attempts  int    `json:"attempts"`
		}
	}
	if code := st.rest(t, "GET", "/api/v1/deliveries?state=dead", "", &raw); code != 200 || len(raw.Deliveries) != 2 {
		t.Fatalf("dead letters over REST: %d %+v", code, raw)
	}
	attempts := map[string]int{}
	for _, d := range raw.Deliveries {
		attempts[d.Endpoint] = d.Attempts
		if d.State != "DELIVERY_STATE_DEAD" || d.LastError == "" {
			t.Errorf("dead letter %+v", d)
		}
	}
	if attempts["pbx"] != 1 || attempts["intervention"] != 3 {
		t.Errorf("attempts %v; want 1 for the final 404 and 3 for the exhausted 500s", attempts)
	}
	if pbx.attemptsOf(raw.Deliveries[0].ID)+pbx.attemptsOf(raw.Deliveries[1].ID) != 1 {
		t.Error("the PBX saw a final 404 retried")
	}
	// ... and over gRPC, and re-drivable.
	dc := escalationv1.NewDeliveryServiceClient(st.cc)
	list, err := dc.ListDeliveries(st.ctx(), &escalationv1.ListDeliveriesRequest{State: escalationv1.DeliveryState_DELIVERY_STATE_DEAD})
	if err != nil || len(list.Deliveries) != 2 {
		t.Fatalf("dead letters over gRPC: %v, %v", list, err)
	}
	dead := list
	healthy.Store(true)
	var viaREST map[string]any
	if code := st.rest(t, "POST", "/api/v1/deliveries/"+dead.Deliveries[0].Id+"/redrive", `{"by":"ops-kim"}`, &viaREST); code != 200 {
		t.Fatalf("redrive over REST: %d %v", code, viaREST)
	}
	if _, err := dc.RedriveDelivery(st.ctx(), &escalationv1.RedriveDeliveryRequest{Id: dead.Deliveries[1].Id, By: "ops-kim"}); err != nil {
		t.Fatalf("redrive over gRPC: %v", err)
	}
	pbx.collect(t, 1, 5*time.Second)
	intervention.collect(t, 1, 5*time.Second)
	if m := oncall.collect(t, 1, 5*time.Second); m[0].Type != "escalation.transfer_succeeded" {
		t.Errorf("after the re-drive the on-call team got %s; want transfer_succeeded", m[0].Type)
	}
	eventually(t, 5*time.Second, "steps succeeded after the re-drive", func() bool {
		e := st.get(t, id)
		return e.Steps[1].State == escalationv1.StepState_STEP_STATE_SUCCEEDED && e.Steps[2].State == escalationv1.StepState_STEP_STATE_SUCCEEDED
	})
	if _, err := dc.RedriveDelivery(st.ctx(), &escalationv1.RedriveDeliveryRequest{Id: dead.Deliveries[1].Id, By: "ops-kim"}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("re-driving a delivered message: %v; want FailedPrecondition", err)
	}
	if code := st.rest(t, "POST", "/api/v1/deliveries/dlv_nope/redrive", `{"by":"x"}`, nil); code != 404 {
		t.Errorf("re-driving an unknown delivery: %d; want 404", code)
	}
	kinds := auditKinds(t, st)
	for k, n := range map[string]int{"delivery.dead_lettered": 2, "delivery.redriven": 2, "step.failed": 2, "step.succeeded": 3} {
		if kinds[k] != n {
			t.Errorf("audit has %d %s entries; want %d (%v)", kinds[k], k, n, kinds)
		}
	}
}

func auditKinds(t *testing.T, st *stack) map[string]int {
	t.Helper()
	r, err := escalationv1.NewAuditServiceClient(st.cc).ListAuditEntries(st.ctx(), &escalationv1.ListAuditEntriesRequest{PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, e := range r.Entries {
		out[e.Kind]++
	}
	return out
}

func TestLadderSkipsAtMostOneOpenAndPrivacy(t *testing.T) {
	rcv := newReceiver(t, nil)
	st := startStack(t, fmt.Sprintf(`    agent_scoring: private
    escalation:
      endpoints:
        - {name: on-call, url: '%s', events: ["*"]}
        - {name: pbx, url: '%s'}
        - {name: intervention, url: '%s'}
      ladder:
        - {name: notify, action: notify, endpoint: on-call}
        - {name: warn, action: warn_caller, endpoint: pbx, after: 1s, skip_if: [cleared]}
        - {name: transfer, action: transfer, endpoint: intervention, after: 1h}
`, rcv.srv.URL, rcv.srv.URL, rcv.srv.URL), nil)
	ec := escalationv1.NewEscalationServiceClient(st.cc)

	// Call a: the episode clears before the warning is due, then someone
	// acknowledges: the warning is skipped as cleared, the transfer as
	// acknowledged.
	a := st.post(t, firing("a", 1))[0]
	st.post(t, alertEvent("a", 1, callv1.AlertState_ALERT_STATE_CLEARED, callv1.ScoreKind_SCORE_KIND_CALLER_PRESSURE))
	if _, err := ec.AcknowledgeEscalation(st.ctx(), &escalationv1.AcknowledgeEscalationRequest{Id: a, By: "sup"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "warning skipped once due", func() bool {
		return st.get(t, a).Steps[1].State == escalationv1.StepState_STEP_STATE_SKIPPED
	})
	e := st.get(t, a)
	if !e.Cleared || e.ClearedAt == nil || e.Steps[1].Detail != "cleared" || e.Steps[2].State != escalationv1.StepState_STEP_STATE_SKIPPED || e.Steps[2].Detail != "acknowledged" {
		t.Errorf("call a: %v", e)
	}

	// Call b: a second episode while the first escalation is open joins
	// it; after it is resolved, a third episode opens a new one.
	b1 := st.post(t, firing("b", 1))[0]
	b2 := st.post(t, firing("b", 2))[0]
	if b1 != b2 {
		t.Errorf("second episode opened %s; want it to join %s", b2, b1)
	}
	if e := st.get(t, b1); !slices.Equal(e.AlertIds, []string{"acme/b/cp/1", "acme/b/cp/2"}) {
		t.Errorf("alert ids %v", e.AlertIds)
	}
	if _, err := ec.ResolveEscalation(st.ctx(), &escalationv1.ResolveEscalationRequest{Id: b1, By: "sup"}); err != nil {
		t.Fatal(err)
	}
	e = st.get(t, b1)
	if e.Steps[1].Detail != "resolved" || e.Steps[2].Detail != "resolved" {
		t.Errorf("steps after resolve: %v", e.Steps)
	}
	if b3 := st.post(t, firing("b", 3))[0]; b3 == b1 || b3 == "" {
		t.Errorf("an episode after the resolution got %q; want a new escalation", b3)
	}
	open, err := ec.ListEscalations(st.ctx(), &escalationv1.ListEscalationsRequest{CallId: "b", State: escalationv1.EscalationState_ESCALATION_STATE_OPEN})
	if err != nil || len(open.Escalations) != 1 {
		t.Errorf("open escalations of call b: %v, %v; want one", open, err)
	}

	// Privacy mode private: an agent_stress alert sets off nothing.
	id := st.post(t, alertEvent("p", 1, callv1.AlertState_ALERT_STATE_FIRING, callv1.ScoreKind_SCORE_KIND_AGENT_STRESS))[0]
	if id != "" {
		t.Errorf("agent_stress alert under agent_scoring private opened %q", id)
	}
	if l, _ := ec.ListEscalations(st.ctx(), &escalationv1.ListEscalationsRequest{CallId: "p"}); len(l.Escalations) != 0 {
		t.Errorf("escalations of call p: %v", l.Escalations)
	}
	if kinds := auditKinds(t, st); kinds["alert.suppressed"] != 1 || kinds["alert.joined"] != 1 || kinds["escalation.opened"] != 3 {
		t.Errorf("audit kinds %v", kinds)
	}
	// Nothing sent carries an agent-side score.
	for _, m := range rcv.messages() {
		if strings.Contains(string(m.Body), "agent_stress") {
			t.Errorf("a message names agent_stress under agent_scoring private: %s", m.Body)
		}
	}
}

func TestInhibitionWhileTransferInProgress(t *testing.T) {
	oncall := newReceiver(t, nil)
	hold := make(chan struct{})
	intervention := newReceiver(t, func(m message) answer {
		<-hold // the transfer is in progress until the test lets it answer
		return answer{status: 200, processed: true}
	})
	st := startStack(t, fmt.Sprintf(`    escalation:
      endpoints:
        - {name: on-call, url: '%s', events: [escalation.resolved, escalation.transfer_succeeded]}
        - {name: intervention, url: '%s', timeout: 1m}
      ladder:
        - {name: notify, action: notify, endpoint: on-call}
        - {name: transfer, action: transfer, endpoint: intervention}
`, oncall.srv.URL, intervention.srv.URL), nil)
	id := st.post(t, firing("c", 1))[0]
	oncall.collect(t, 1, 5*time.Second)
	eventually(t, 5*time.Second, "transfer in flight", func() bool { return intervention.attemptsOf(firstID(intervention)) == 1 })
	if _, err := escalationv1.NewEscalationServiceClient(st.cc).ResolveEscalation(st.ctx(), &escalationv1.ResolveEscalationRequest{Id: id, By: "sup"}); err != nil {
		t.Fatal(err)
	}
	// A new episode while the call is being transferred: recorded against
	// the transfer's escalation, and nothing starts.
	if again := st.post(t, firing("c", 2))[0]; again != id {
		t.Errorf("episode during the transfer: %q; want it inhibited into %s", again, id)
	}
	close(hold)
	got := oncall.collect(t, 2, 5*time.Second) // resolved, transfer_succeeded
	oncall.quiet(t, 200*time.Millisecond)
	for _, m := range got {
		if m.Type == "escalation.triggered" {
			t.Errorf("an inhibited episode notified the on-call team")
		}
	}
	if e := st.get(t, id); e.InhibitedAlerts != 1 || len(e.AlertIds) != 2 {
		t.Errorf("escalation %v; want one inhibited alert", e)
	}
	if st.post(t, firing("c", 3))[0] != id {
		t.Error("after the transfer succeeded, a new episode was not inhibited")
	}
}

func firstID(r *receiver) string {
	if ms := r.messages(); len(ms) > 0 {
		return ms[0].ID
	}
	return ""
}

// TestOutboxSurvivesRestart stops the service while a delivery waits for
// its retry; the next instance on the same database delivers it.
func TestOutboxSurvivesRestart(t *testing.T) {
	var up atomic.Bool
	rcv := newReceiver(t, func(m message) answer {
		if !up.Load() {
			return answer{status: 503}
		}
		return answer{status: 200, processed: true}
	})
	cfg := fmt.Sprintf(`    escalation:
      retry: {initial: 100ms, max_interval: 100ms}
      endpoints: [{name: on-call, url: '%s'}]
      ladder: [{name: notify, action: notify, endpoint: on-call}]
`, rcv.srv.URL)
	st := startStack(t, cfg, nil)
	id := st.post(t, firing("c1", 1))[0]
	eventually(t, 5*time.Second, "a failed attempt", func() bool { return len(rcv.messages()) > 0 })
	st.stop()
	up.Store(true)
	o := st.s.o
	again := serveOptions(t, o)
	again.key = st.key
	m := rcv.collect(t, 1, 5*time.Second)
	if m[0].Data["escalation_id"] != id {
		t.Errorf("delivered %s; want the escalation %s", m[0].Body, id)
	}
}

func TestDeliveryAndAuditAPIErrors(t *testing.T) {
	rcv := newReceiver(t, nil)
	st := startStack(t, fmt.Sprintf(`    escalation:
      endpoints: [{name: on-call, url: '%s'}]
      ladder: [{name: notify, action: notify, endpoint: on-call}]
`, rcv.srv.URL), nil)
	st.post(t, firing("c1", 1))
	m := rcv.collect(t, 1, 5*time.Second)[0]
	for _, c := range []struct {
		method, path, body string
		key                bool
		want               int
	}{
		{"GET", "/api/v1/deliveries", "", false, 401},
		{"GET", "/api/v1/audit", "", false, 401},
		{"GET", "/api/v1/audit/verify", "", false, 401},
		{"GET", "/api/v1/deliveries?state=lost", "", true, 400},
		{"GET", "/api/v1/deliveries?page_size=-1", "", true, 400},
		{"GET", "/api/v1/deliveries?page_token=not-a-token!", "", true, 400},
		{"GET", "/api/v1/audit?after_seq=x", "", true, 400},
		{"GET", "/api/v1/deliveries/dlv_missing", "", true, 404},
		{"GET", "/api/v1/deliveries/" + m.ID, "", true, 200},
		{"GET", "/api/v1/deliveries?state=succeeded&call_id=c1", "", true, 200},
		{"POST", "/api/v1/deliveries/" + m.ID + "/redrive", `{"by":""}`, true, 400},
		{"POST", "/api/v1/deliveries/" + m.ID + "/redrive", `{"by":"ops"}`, true, 409},
	} {
		req, _ := http.NewRequest(c.method, st.base+c.path, strings.NewReader(c.body))
		if c.key {
			req.Header.Set("Authorization", "Bearer "+st.key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s %s: %d; want %d", c.method, c.path, resp.StatusCode, c.want)
		}
	}
	dc := escalationv1.NewDeliveryServiceClient(st.cc)
	if _, err := dc.ListDeliveries(context.Background(), &escalationv1.ListDeliveriesRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("ListDeliveries without a key: %v", err)
	}
	if _, err := dc.RedriveDelivery(st.ctx(), &escalationv1.RedriveDeliveryRequest{Id: m.ID}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("RedriveDelivery without by: %v", err)
	}
	if _, err := dc.GetDelivery(st.ctx(), &escalationv1.GetDeliveryRequest{Id: "dlv_missing"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetDelivery of a missing id: %v", err)
	}
	// Paging lists every delivery once.
	for i := 2; i <= 5; i++ {
		st.post(t, firing(fmt.Sprint("c", i), 1))
	}
	rcv.collect(t, 4, 5*time.Second)
	seen := map[string]bool{}
	tok := ""
	for {
		r, err := dc.ListDeliveries(st.ctx(), &escalationv1.ListDeliveriesRequest{PageSize: 2, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range r.Deliveries {
			if seen[d.Id] {
				t.Errorf("delivery %s listed twice", d.Id)
			}
			seen[d.Id] = true
		}
		if tok = r.NextPageToken; tok == "" {
			break
		}
	}
	if len(seen) != 5 {
		t.Errorf("paging listed %d deliveries; want 5", len(seen))
	}
}
