package console

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/calmline/calmline/lib/field"
	"github.com/calmline/calmline/lib/service"
)

// The console's views of the services' data. Each is built from the
// services' REST answers into the console's own small JSON, so that only
// what the key may see reaches the browser (agent_stress, for one, is
// never copied unless Access.AgentScores).

// escalationJSON is the part of escalation's Escalation the console shows.
type escalationJSON struct {
	ID             string     `json:"id"`
	CallID         string     `json:"call_id"`
	AgentID        string     `json:"agent_id"`
	State          string     `json:"state"`
	Score          string     `json:"score"`
	Value          *float64   `json:"value,omitempty"`
	Threshold      float64    `json:"threshold"`
	OpenedAt       string     `json:"opened_at"`
	Cleared        bool       `json:"cleared"`
	CallEnded      bool       `json:"call_ended"`
	AcknowledgedBy string     `json:"acknowledged_by"`
	AcknowledgedAt string     `json:"acknowledged_at"`
	ResolvedBy     string     `json:"resolved_by"`
	ResolvedAt     string     `json:"resolved_at"`
	Resolution     string     `json:"resolution"`
	Steps          []stepJSON `json:"steps"`
}

type stepJSON struct {
	Name       string `json:"name"`
	Action     string `json:"action"`
	State      string `json:"state"`
	Attempts   uint32 `json:"attempts"`
	LastError  string `json:"last_error"`
	Endpoint   string `json:"endpoint"`
	DueAt      string `json:"due_at"`
	DoneAt     string `json:"done_at"`
	NextAt     string `json:"next_attempt_at"`
	DeliveryID string `json:"delivery_id"`
	Detail     string `json:"detail"`
}

func (e *escalationJSON) UnmarshalJSON(b []byte) error {
	type plain escalationJSON
	var raw struct {
		plain
		Value float64 `json:"value"`
		Steps []struct {
			stepJSON
			NextAttemptAt string `json:"next_attempt_at"`
		} `json:"steps"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*e = escalationJSON(raw.plain)
	e.State = strings.ToLower(strings.TrimPrefix(e.State, "ESCALATION_STATE_"))
	e.Score = scoreName(e.Score)
	e.Value = &raw.Value
	e.Steps = nil
	for _, st := range raw.Steps {
		x := st.stepJSON
		x.NextAt = st.NextAttemptAt
		x.State = strings.ToLower(strings.TrimPrefix(x.State, "STEP_STATE_"))
		e.Steps = append(e.Steps, x)
	}
	return nil
}

func scoreName(s string) string {
	switch s {
	case "SCORE_KIND_AGENT_STRESS", "agent_stress":
		return "agent_stress"
	case "SCORE_KIND_CALLER_PRESSURE", "caller_pressure":
		return "caller_pressure"
	}
	return strings.ToLower(strings.TrimPrefix(s, "SCORE_KIND_"))
}

// redact applies Access to an escalation.
func (e *escalationJSON) redact(a Access) {
	if e.Score == "agent_stress" && !a.AgentScores {
		e.Value = nil
		e.Score = "withheld"
	}
}

// listEscalations reads the escalations the key may see: the open and
// acknowledged ones and the latest resolved.
func (s *Server) listEscalations(ctx context.Context, se *session, a Access, callID string) ([]escalationJSON, error) {
	out := []escalationJSON{}
	for _, st := range []struct {
		state string
		size  int
	}{{"open", 200}, {"acknowledged", 200}, {"resolved", 30}} {
		q := url.Values{"state": {st.state}, "page_size": {strconv.Itoa(st.size)}}
		if a.AgentID != "" {
			q.Set("agent_id", a.AgentID)
		}
		if callID != "" {
			q.Set("call_id", callID)
		}
		var resp struct {
			Escalations []escalationJSON `json:"escalations"`
		}
		if err := s.backend(ctx, se, "GET", s.esc, "/api/v1/escalations", q, nil, &resp); err != nil {
			return nil, err
		}
		for _, e := range resp.Escalations {
			if a.SeesAgent(e.AgentID) {
				e.redact(a)
				out = append(out, e)
			}
		}
	}
	return out, nil
}

func (s *Server) escalations(w http.ResponseWriter, r *http.Request, se *session, a Access) {
	if !a.Escalations {
		service.WriteError(w, http.StatusForbidden, "forbidden", "this key does not see escalations")
		return
	}
	es, err := s.listEscalations(r.Context(), se, a, "")
	if err != nil {
		writeErr(w, err)
		return
	}
	service.WriteJSON(w, http.StatusOK, map[string]any{"escalations": es})
}

type deliveryJSON struct {
	ID         string `json:"id"`
	Endpoint   string `json:"endpoint"`
	EventType  string `json:"event_type"`
	Step       string `json:"step"`
	State      string `json:"state"`
	Attempts   uint32 `json:"attempts"`
	LastStatus uint32 `json:"last_status"`
	LastError  string `json:"last_error"`
	CreatedAt  string `json:"created_at"`
	NextAt     string `json:"next_attempt_at"`
	DoneAt     string `json:"done_at"`
}

type auditJSON struct {
	Seq    string `json:"seq"`
	At     string `json:"at"`
	Kind   string `json:"kind"`
	Actor  string `json:"actor"`
	EscID  string `json:"escalation_id"`
	CallID string `json:"call_id"`
	Detail string `json:"detail"`
	Hash   string `json:"hash"`
}

// recentAudit returns the tenant's last n audit entries.
func (s *Server) recentAudit(ctx context.Context, se *session, n int) ([]auditJSON, error) {
	var head struct {
		HeadSeq string `json:"head_seq"`
	}
	if err := s.backend(ctx, se, "GET", s.esc, "/api/v1/audit", url.Values{"page_size": {"1"}}, nil, &head); err != nil {
		return nil, err
	}
	hs, _ := strconv.ParseUint(head.HeadSeq, 10, 64)
	after := uint64(0)
	if hs > uint64(n) {
		after = hs - uint64(n)
	}
	var resp struct {
		Entries []auditJSON `json:"entries"`
	}
	err := s.backend(ctx, se, "GET", s.esc, "/api/v1/audit", url.Values{"after_seq": {strconv.FormatUint(after, 10)}, "page_size": {strconv.Itoa(n)}}, nil, &resp)
	return resp.Entries, err
}

// escalation returns one escalation with its deliveries and its audit
// trail (from the tenant's latest 1000 entries).
func (s *Server) escalation(w http.ResponseWriter, r *http.Request, se *session, a Access) {
	id := r.PathValue("id")
	if !checkID(w, "id", id) {
		return
	}
	if !a.Escalations {
		service.WriteError(w, http.StatusForbidden, "forbidden", "this key does not see escalations")
		return
	}
	var e escalationJSON
	if err := s.backend(r.Context(), se, "GET", s.esc, "/api/v1/escalations/"+url.PathEscape(id), nil, nil, &e); err != nil {
		writeErr(w, err)
		return
	}
	if !a.SeesAgent(e.AgentID) {
		service.WriteError(w, http.StatusNotFound, "not_found", "no such escalation")
		return
	}
	e.redact(a)
	out := map[string]any{"escalation": e}
	if a.Deliveries {
		var ds struct {
			Deliveries []deliveryJSON `json:"deliveries"`
		}
		if err := s.backend(r.Context(), se, "GET", s.esc, "/api/v1/deliveries", url.Values{"escalation_id": {id}, "page_size": {"100"}}, nil, &ds); err != nil {
			writeErr(w, err)
			return
		}
		for i := range ds.Deliveries {
			d := &ds.Deliveries[i]
			d.State = strings.ToLower(strings.TrimPrefix(d.State, "DELIVERY_STATE_"))
		}
		out["deliveries"] = ds.Deliveries
	}
	if a.Audit {
		entries, err := s.recentAudit(r.Context(), se, 1000)
		if err != nil {
			writeErr(w, err)
			return
		}
		var mine []auditJSON
		for _, en := range entries {
			if en.EscID == id {
				mine = append(mine, en)
			}
		}
		out["audit"] = mine
	}
	service.WriteJSON(w, http.StatusOK, out)
}

// escalationAction acknowledges or resolves an escalation in the name of
// the signed-in key ("console:KEY-ID", or a name the person gives).
func (s *Server) escalationAction(w http.ResponseWriter, r *http.Request, se *session, a Access) {
	id, action := r.PathValue("id"), r.PathValue("action")
	if !checkID(w, "id", id) {
		return
	}
	if action != "acknowledge" && action != "resolve" {
		service.WriteError(w, http.StatusNotFound, "not_found", "no such action")
		return
	}
	if !a.Act {
		service.WriteError(w, http.StatusForbidden, "forbidden", "this key may not acknowledge or resolve escalations")
		return
	}
	var body struct {
		By         string `json:"by"`
		Resolution string `json:"resolution"`
	}
	if !jsonBody(w, r, &body) {
		return
	}
	if err := field.Text("by", body.By, 100); err != nil {
		service.WriteError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	if err := field.Text("resolution", body.Resolution, 1000); err != nil {
		service.WriteError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	by := "console:" + a.KeyID
	if b := strings.TrimSpace(body.By); b != "" {
		by = b + " (console:" + a.KeyID + ")"
	}
	var e escalationJSON
	if err := s.backend(r.Context(), se, "GET", s.esc, "/api/v1/escalations/"+url.PathEscape(id), nil, nil, &e); err != nil {
		writeErr(w, err)
		return
	}
	if !a.SeesAgent(e.AgentID) {
		service.WriteError(w, http.StatusNotFound, "not_found", "no such escalation")
		return
	}
	req := map[string]string{"by": by}
	if action == "resolve" {
		req["resolution"] = body.Resolution
	}
	var raw json.RawMessage
	if err := s.backend(r.Context(), se, "POST", s.esc, "/api/v1/escalations/"+url.PathEscape(id)+"/"+action, nil, req, &raw); err != nil {
		writeErr(w, err)
		return
	}
	s.log.Info("console: escalation "+action+"d", "tenant", a.TenantID, "key_id", a.KeyID, "escalation_id", id)
	if err := s.backend(r.Context(), se, "GET", s.esc, "/api/v1/escalations/"+url.PathEscape(id), nil, nil, &e); err != nil {
		writeErr(w, err)
		return
	}
	e.redact(a)
	service.WriteJSON(w, http.StatusOK, map[string]any{"escalation": e})
}

// reportJSON is the part of fullcall's report the call view reads.
type reportJSON struct {
	CallID    string  `json:"call_id"`
	AgentID   string  `json:"agent_id"`
	StartedAt string  `json:"started_at"`
	EndedAt   string  `json:"ended_at"`
	DurationS float64 `json:"duration_s"`
	Protocol  string  `json:"protocol"`
	Format    struct {
		Rate uint32 `json:"sample_rate_hz"`
	} `json:"format"`
	Model    json.RawMessage `json:"model"`
	Channels []struct {
		Role     string  `json:"role"`
		TalkS    float64 `json:"talk_s"`
		SilenceS float64 `json:"silence_s"`
	} `json:"channels"`
	Timeline []struct {
		Second     uint32   `json:"second"`
		AS         *float64 `json:"agent_stress"`
		CP         *float64 `json:"caller_pressure"`
		CallerTalk *float64 `json:"caller_talk"`
		AgentTalk  *float64 `json:"agent_talk"`
		Overlap    *float64 `json:"overlap"`
	} `json:"timeline"`
	AgentStress    json.RawMessage `json:"agent_stress"`
	CallerPressure json.RawMessage `json:"caller_pressure"`
	Overlap        json.RawMessage `json:"overlap"`
	Alerts         []struct {
		AlertID   string  `json:"alert_id"`
		State     string  `json:"state"`
		Score     string  `json:"score"`
		Value     float64 `json:"value"`
		Threshold float64 `json:"threshold"`
		Second    uint32  `json:"second"`
	} `json:"alerts"`
	Gaps       []gapJSON `json:"gaps"`
	LiveGaps   []gapJSON `json:"live_scoring_gaps"`
	EndReason  string    `json:"end_reason"`
	Incomplete bool      `json:"incomplete"`
}

type gapJSON struct {
	StartSample string `json:"start_sample"`
	Samples     string `json:"samples"`
	Reason      string `json:"reason"`
}

type callViewJSON struct {
	CallID     string          `json:"call_id"`
	AgentID    string          `json:"agent_id"`
	Live       bool            `json:"live"`
	StartedAt  string          `json:"started_at"`
	EndedAt    string          `json:"ended_at,omitempty"`
	DurationS  float64         `json:"duration_s"`
	Protocol   string          `json:"protocol"`
	EndReason  string          `json:"end_reason,omitempty"`
	Incomplete bool            `json:"incomplete"`
	Model      json.RawMessage `json:"model,omitempty"`
	Timeline   []point         `json:"timeline"`
	// Talk holds, per second of Timeline, the shares of the second in which
	// the caller talked, the agent talked and both did ([c, a, o]; null
	// for a second without them: reports stored before they were kept).
	Talk           []*[3]float64    `json:"talk,omitempty"`
	CallerPressure json.RawMessage  `json:"caller_pressure,omitempty"`
	AgentStress    json.RawMessage  `json:"agent_stress,omitempty"`
	Channels       []map[string]any `json:"channels"`
	Overlap        json.RawMessage  `json:"overlap,omitempty"`
	Alerts         []map[string]any `json:"alerts"`
	// Gaps are [from, to) seconds of the timeline without audio (reason),
	// and of live scoring interrupted.
	Gaps        []map[string]any `json:"gaps"`
	Escalations []escalationJSON `json:"escalations"`
	AgentScores bool             `json:"agent_scores"`
}

func gapSeconds(g gapJSON, rate uint32, kind string) map[string]any {
	start, _ := strconv.ParseFloat(g.StartSample, 64)
	n, _ := strconv.ParseFloat(g.Samples, 64)
	if rate == 0 {
		rate = 8000
	}
	return map[string]any{"from": start / float64(rate), "to": (start + n) / float64(rate),
		"reason": strings.ToLower(strings.TrimPrefix(g.Reason, "GAP_REASON_")), "kind": kind}
}

// call returns a call's view: its stored report, or while it is live its
// recent seconds from the wall.
func (s *Server) call(w http.ResponseWriter, r *http.Request, se *session, a Access) {
	id := r.PathValue("id")
	if !checkID(w, "call_id", id) {
		return
	}
	var rep reportJSON
	err := s.backend(r.Context(), se, "GET", s.fullcall, "/api/v1/reports/"+url.PathEscape(id), nil, nil, &rep)
	var v callViewJSON
	if ae, ok := err.(*apiError); ok && ae.status == http.StatusNotFound {
		c, live := s.hub.liveCall(se.key, id)
		if !live || !a.SeesAgent(c.Agent) {
			service.WriteError(w, http.StatusNotFound, "not_found", "no such call")
			return
		}
		v = callViewJSON{CallID: c.ID, AgentID: c.Agent, Live: true, StartedAt: c.StartedAt, Protocol: c.Protocol, Timeline: c.Hist}
		if t, err := time.Parse(time.RFC3339Nano, c.StartedAt); err == nil {
			v.DurationS = s.o.Now().Sub(t).Seconds()
		}
	} else if err != nil {
		writeErr(w, err)
		return
	} else {
		if !a.SeesAgent(rep.AgentID) {
			service.WriteError(w, http.StatusNotFound, "not_found", "no such call")
			return
		}
		v = callViewJSON{CallID: rep.CallID, AgentID: rep.AgentID, StartedAt: rep.StartedAt, EndedAt: rep.EndedAt, DurationS: rep.DurationS,
			Protocol: rep.Protocol, EndReason: strings.ToLower(strings.TrimPrefix(rep.EndReason, "END_REASON_")), Incomplete: rep.Incomplete,
			Model: rep.Model, CallerPressure: rep.CallerPressure, Overlap: rep.Overlap}
		if a.AgentScores {
			v.AgentStress = rep.AgentStress
		}
		talk := false
		for _, p := range rep.Timeline {
			pt := point{S: p.Second, CP: finite(p.CP)}
			if a.AgentScores {
				pt.AS = finite(p.AS)
			}
			v.Timeline = append(v.Timeline, pt)
			var tk *[3]float64
			if c, a, o := finite(p.CallerTalk), finite(p.AgentTalk), finite(p.Overlap); c != nil && a != nil && o != nil {
				tk = &[3]float64{min(max(*c, 0), 1), min(max(*a, 0), 1), min(max(*o, 0), 1)}
				talk = true
			}
			v.Talk = append(v.Talk, tk)
		}
		if !talk {
			v.Talk = nil
		}
		for _, c := range rep.Channels {
			v.Channels = append(v.Channels, map[string]any{"role": strings.ToLower(strings.TrimPrefix(c.Role, "CHANNEL_ROLE_")), "talk_s": c.TalkS, "silence_s": c.SilenceS})
		}
		for _, al := range rep.Alerts {
			sc := scoreName(al.Score)
			if sc == "agent_stress" && !a.AgentScores {
				continue
			}
			v.Alerts = append(v.Alerts, map[string]any{"second": al.Second, "state": strings.ToLower(strings.TrimPrefix(al.State, "ALERT_STATE_")),
				"score": sc, "value": al.Value, "threshold": al.Threshold})
		}
		for _, g := range rep.Gaps {
			v.Gaps = append(v.Gaps, gapSeconds(g, rep.Format.Rate, "audio"))
		}
		for _, g := range rep.LiveGaps {
			v.Gaps = append(v.Gaps, gapSeconds(g, rep.Format.Rate, "scoring"))
		}
	}
	v.AgentScores = a.AgentScores
	if a.Escalations {
		es, err := s.listEscalations(r.Context(), se, a, id)
		if err != nil {
			writeErr(w, err)
			return
		}
		v.Escalations = es
	}
	service.WriteJSON(w, http.StatusOK, v)
}

// careAgent is one agent's care line.
type careAgent struct {
	AgentID string          `json:"agent_id"`
	Shift   json.RawMessage `json:"shift"`
	Week    json.RawMessage `json:"week"`
	Due     []careDue       `json:"due"`
	Recent  []recentCall    `json:"recent"`
	Live    bool            `json:"live"`
}

type careDue struct {
	At             string          `json:"at"`
	RuleID         string          `json:"rule_id"`
	Recommendation string          `json:"recommendation"`
	Detail         json.RawMessage `json:"detail"`
}

type recentCall struct {
	CallID    string  `json:"call_id"`
	StartedAt string  `json:"started_at"`
	DurationS float64 `json:"duration_s"`
	Peak      float64 `json:"caller_pressure_peak"`
	Escalated bool    `json:"escalated"`
}

// care returns each agent's exposure over the shift and the week (fullcall's
// agent summaries), the care rules that fired for them during the shift
// (escalation's audit trail: care.recommended) and their recent calls under
// pressure (fullcall's reports).
func (s *Server) care(w http.ResponseWriter, r *http.Request, se *session, a Access) {
	if !a.Care {
		service.WriteError(w, http.StatusForbidden, "forbidden", "this key does not see agent care")
		return
	}
	ctx := r.Context()
	now := s.o.Now().UTC()
	week := now.Add(-7 * 24 * time.Hour)
	agents := map[string]*careAgent{}
	get := func(id string) *careAgent {
		c := agents[id]
		if c == nil {
			c = &careAgent{AgentID: id}
			agents[id] = c
		}
		return c
	}
	// The week's reports name the agents and their calls under pressure.
	q := url.Values{"from": {week.Format(time.RFC3339)}, "page_size": {"500"}}
	if a.AgentID != "" {
		q.Set("agent_id", a.AgentID)
		get(a.AgentID)
	}
	for page := 0; page < 4; page++ {
		var resp struct {
			Reports []struct {
				CallID         string  `json:"call_id"`
				AgentID        string  `json:"agent_id"`
				StartedAt      string  `json:"started_at"`
				DurationS      float64 `json:"duration_s"`
				CallerPressure struct {
					Peak      float64 `json:"peak"`
					Threshold float64 `json:"threshold"`
				} `json:"caller_pressure"`
				Alerts []json.RawMessage `json:"alerts"`
			} `json:"reports"`
			Next string `json:"next_page_token"`
		}
		if err := s.backend(ctx, se, "GET", s.fullcall, "/api/v1/reports", q, nil, &resp); err != nil {
			writeErr(w, err)
			return
		}
		for _, rp := range resp.Reports {
			if rp.AgentID == "" || !a.SeesAgent(rp.AgentID) {
				continue
			}
			c := get(rp.AgentID)
			cp := rp.CallerPressure
			if (cp.Threshold > 0 && cp.Peak >= cp.Threshold) || len(rp.Alerts) > 0 {
				if len(c.Recent) < 5 {
					c.Recent = append(c.Recent, recentCall{CallID: rp.CallID, StartedAt: rp.StartedAt, DurationS: rp.DurationS, Peak: cp.Peak, Escalated: len(rp.Alerts) > 0})
				}
			}
		}
		if resp.Next == "" {
			break
		}
		q.Set("page_token", resp.Next)
	}
	// Care rules that fired during the shift: escalation keeps them in the
	// audit trail, which only keys that may read it get.
	var entries []auditJSON
	if a.Audit {
		var err error
		if entries, err = s.recentAudit(ctx, se, 1000); err != nil {
			writeErr(w, err)
			return
		}
	}
	shiftStart := now.Add(-s.o.Shift)
	for _, en := range entries {
		if en.Kind != "care.recommended" {
			continue
		}
		var d struct {
			AgentID        string `json:"agent_id"`
			RuleID         string `json:"rule_id"`
			Recommendation string `json:"recommendation"`
		}
		if json.Unmarshal([]byte(en.Detail), &d) != nil || d.AgentID == "" || !a.SeesAgent(d.AgentID) {
			continue
		}
		if t, err := time.Parse(time.RFC3339Nano, en.At); err != nil || t.Before(shiftStart) {
			continue
		}
		c := get(d.AgentID)
		c.Due = append(c.Due, careDue{At: en.At, RuleID: d.RuleID, Recommendation: d.Recommendation, Detail: json.RawMessage(en.Detail)})
	}
	list := make([]*careAgent, 0, len(agents))
	for _, c := range agents {
		list = append(list, c)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].AgentID < list[j].AgentID })
	if len(list) > 200 {
		list = list[:200]
	}
	// Exposure over the shift and the week, a few agents at a time.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	var mu sync.Mutex
	var firstErr error
	for _, c := range list {
		for _, p := range []struct {
			from time.Time
			out  *json.RawMessage
		}{{shiftStart, &c.Shift}, {week, &c.Week}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				var resp json.RawMessage
				err := s.backend(ctx, se, "GET", s.fullcall, "/api/v1/agents/"+url.PathEscape(c.AgentID)+"/summary",
					url.Values{"from": {p.from.Format(time.RFC3339)}, "to": {now.Add(time.Second).Format(time.RFC3339)}}, nil, &resp)
				mu.Lock()
				defer mu.Unlock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				*p.out = resp
			}()
		}
	}
	wg.Wait()
	if firstErr != nil {
		writeErr(w, firstErr)
		return
	}
	service.WriteJSON(w, http.StatusOK, map[string]any{"agents": list, "due_known": a.Audit, "shift_start": shiftStart.Format(time.RFC3339), "week_start": week.Format(time.RFC3339)})
}
