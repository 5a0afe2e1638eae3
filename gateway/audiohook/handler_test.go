package audiohook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/calmline/calmline/gateway/gatewaytest"
	"github.com/calmline/calmline/gateway/session"
	"github.com/calmline/calmline/gateway/wsconn"
	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/tenant"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const org = "d7934305-0972-4844-938e-9060eef73d05"

type fixture struct {
	url     string
	keys    map[string]string
	secrets map[string][]byte
	mgr     *session.Manager
	rt      *gatewaytest.Realtime
	fc      *gatewaytest.Fullcall
	metrics *gatewaytest.Metrics
}

func start(t *testing.T, o Options, pacing ...session.Pacing) *fixture {
	t.Helper()
	b := gatewaytest.StartBackends(t)
	rt, fc := b.Realtime, b.Fullcall
	mt := gatewaytest.NewMetrics(t)
	mp := mt.Provider
	so := session.Options{Realtime: b.RealtimePool, Fullcall: b.FullcallPool, MeterProvider: mp}
	if len(pacing) > 0 {
		so.Pacing = pacing[0]
	}
	mgr, err := session.NewManager(so)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{keys: map[string]string{}, secrets: map[string][]byte{}, mgr: mgr, rt: rt, fc: fc, metrics: mt}
	var ts []*tenant.Tenant
	for _, c := range []struct {
		id       string
		max      int
		secret   bool
		unsigned bool
		orgs     []string
		scoring  string
	}{
		{id: "acme", max: 10, secret: true},
		{id: "tiny", max: 1, secret: true},
		{id: "pinned", max: 10, secret: true, orgs: []string{"11111111-2222-3333-4444-555555555555"}},
		{id: "nosecret", max: 10},
		{id: "open", max: 10, unsigned: true},
		{id: "private", max: 10, secret: true, scoring: tenant.AgentScoringPrivate},
	} {
		f.keys[c.id] = tenant.NewKey()
		k := tenant.APIKey{ID: c.id + "-1", SHA256: tenant.HashKey(f.keys[c.id])}
		if c.secret {
			f.secrets[c.id] = []byte("secret of " + c.id)
			k.ClientSecret = f.secrets[c.id]
		}
		keys := []tenant.APIKey{k}
		if c.id == "acme" {
			// A care-team key, signed with a secret: refused for its role.
			f.keys["care"], f.secrets["care"] = tenant.NewKey(), []byte("secret of acme's care team")
			keys = append(keys, tenant.APIKey{ID: "acme-care", SHA256: tenant.HashKey(f.keys["care"]), Role: tenant.KeyRoleCare, ClientSecret: f.secrets["care"]})
		}
		ts = append(ts, &tenant.Tenant{ID: c.id, MaxConcurrentCalls: c.max, APIKeys: keys, AgentScoring: c.scoring,
			AudioHook: tenant.AudioHook{OrganizationIDs: c.orgs, AllowUnsigned: c.unsigned}})
	}
	reg, err := tenant.NewRegistry(ts)
	if err != nil {
		t.Fatal(err)
	}
	o.MeterProvider = mp
	h := NewHandler(o, mgr, reg, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		mgr.Drain(ctx)
		h.Close(ctx)
		srv.Close()
	})
	f.url = "ws" + strings.TrimPrefix(srv.URL, "http") + "/api/v1/audiohook/ws"
	return f
}

func (f *fixture) client(tenantID string) *Client {
	return &Client{URL: f.url, APIKey: f.keys[tenantID], ClientSecret: f.secrets[tenantID], OrganizationID: org}
}

// counted returns the refusals counted for a reason.
func (f *fixture) counted(t *testing.T, reason string) int64 {
	t.Helper()
	if reason == "probe" {
		return int64(f.metrics.Value("calmline.gateway.audiohook.probes"))
	}
	return int64(f.metrics.Value("calmline.gateway.calls.refused", "reason", reason))
}

// raw is a hand-driven AudioHook client: the tests write the
// specification's message sequences with it, numbering included.
type raw struct {
	t   *testing.T
	ws  *websocket.Conn
	id  string
	seq uint64
	ack uint64 // last server seq read
}

func (f *fixture) dialRaw(t *testing.T, tenantID string) *raw {
	t.Helper()
	id := newUUID()
	h := http.Header{}
	h.Set(HeaderOrganizationID, org)
	h.Set(HeaderSessionID, id)
	h.Set(HeaderCorrelationID, newUUID())
	h.Set(HeaderAPIKey, f.keys[tenantID])
	u := f.url[len("ws://"):]
	host, path, _ := strings.Cut(u, "/")
	Sign(h, "/"+path, host, f.keys[tenantID], f.secrets[tenantID], newUUID(), time.Now(), 30*time.Second)
	ws, resp, err := websocket.DefaultDialer.Dial(f.url, h)
	if err != nil {
		t.Fatalf("dial: %v %v", err, resp)
	}
	t.Cleanup(func() { ws.Close() })
	return &raw{t: t, ws: ws, id: id}
}

// send writes a client message with the next seq (or the given one).
func (r *raw) send(typ string, params string, seq ...uint64) {
	r.t.Helper()
	r.seq++
	s := r.seq
	if len(seq) > 0 {
		s = seq[0]
	}
	msg := fmt.Sprintf(`{"version":"2","id":%q,"type":%q,"seq":%d,"serverseq":%d,"position":"PT0S","parameters":%s}`, r.id, typ, s, r.ack, params)
	if err := r.ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		r.t.Fatal(err)
	}
}

func (r *raw) sendText(text string) {
	r.t.Helper()
	if err := r.ws.WriteMessage(websocket.TextMessage, []byte(text)); err != nil {
		r.t.Fatal(err)
	}
}

func (r *raw) audio(n int) {
	r.t.Helper()
	if err := r.ws.WriteMessage(websocket.BinaryMessage, make([]byte, n)); err != nil {
		r.t.Fatal(err)
	}
}

type got struct {
	ServerMessage
	Params json.RawMessage
}

// next reads the next server message, checking its numbering.
func (r *raw) next() got {
	r.t.Helper()
	r.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, data, err := r.ws.ReadMessage()
	if err != nil {
		r.t.Fatalf("read: %v", err)
	}
	m, params, err := ParseServerMessage(data)
	if err != nil {
		r.t.Fatalf("%v: %s", err, data)
	}
	if m.Seq != r.ack+1 || m.ID != r.id {
		r.t.Fatalf("server message %s: seq %d id %s after seq %d; want the next seq and the session id", data, m.Seq, m.ID, r.ack)
	}
	r.ack = m.Seq
	return got{*m, params}
}

// until reads server messages up to one of the given type, skipping
// events.
func (r *raw) until(typ string) got {
	r.t.Helper()
	for {
		m := r.next()
		if m.Type == typ {
			return m
		}
		if m.Type != TypeEvent {
			r.t.Fatalf("got %s %s while waiting for %s", m.Type, m.Params, typ)
		}
	}
}

// closeCode reads until the server closes the WebSocket.
func (r *raw) closeCode() int {
	r.t.Helper()
	r.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, _, err := r.ws.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code
			}
			r.t.Fatalf("read: %v; want a close frame", err)
		}
	}
}

const openStereo = `{"organizationId":"` + org + `","conversationId":"%s","participant":{"id":"883efee8-3d6c-4537-b500-6d7ca4b92fa0","ani":"","aniName":"","dnis":""},
 "media":[{"type":"audio","format":"PCMU","channels":["external","internal"],"rate":8000},{"type":"audio","format":"PCMU","channels":["external"],"rate":8000}],
 "language":"en-US","customConfig":{"agentId":"agent-7","labels":{"queue":"vip"},"customer":"Jane Doe"}}`

func TestRefusedBeforeTheUpgrade(t *testing.T) {
	f := start(t, Options{})
	c := func(tenantID string, mod func(*Client)) *Client {
		cl := f.client(tenantID)
		if mod != nil {
			mod(cl)
		}
		return cl
	}
	for _, tc := range []struct {
		name    string
		client  *Client
		session string
		status  int
		code    string
		counted string
	}{
		{"no API key", c("acme", func(c *Client) { c.APIKey = "" }), "", 401, "unauthenticated", "audiohook_unauthenticated"},
		{"unknown API key", c("acme", func(c *Client) { c.APIKey = "clk_unknown" }), "", 401, "unauthenticated", "audiohook_unauthenticated"},
		{"unsigned", c("acme", func(c *Client) { c.ClientSecret = nil }), "", 401, "unsigned", "audiohook_unsigned"},
		{"signed with the wrong secret", c("acme", func(c *Client) { c.ClientSecret = []byte("guess") }), "", 401, "signature_mismatch", "audiohook_signature_mismatch"},
		{"signed with another tenant's secret", c("acme", func(c *Client) { c.ClientSecret = f.secrets["tiny"] }), "", 401, "signature_mismatch", "audiohook_signature_mismatch"},
		{"organization not allowed", c("pinned", nil), "", 403, "forbidden", "audiohook_organization"},
		{"key without a client secret", c("nosecret", func(c *Client) { c.ClientSecret = []byte("x") }), "", 401, "no_client_secret", "audiohook_no_client_secret"},
		{"unsigned, tenant requires signatures", c("nosecret", nil), "", 401, "unsigned", "audiohook_unsigned"},
		{"bad session id header", c("acme", nil), "not-a-uuid", 400, "bad_request", "audiohook_bad_request"},
	} {
		before := f.counted(t, tc.counted)
		_, err := tc.client.Open(context.Background(), OpenRequest{SessionID: tc.session})
		var de *DialError
		if !errors.As(err, &de) || de.Status != tc.status || de.Code != tc.code {
			t.Errorf("%s: %v; want %d %s", tc.name, err, tc.status, tc.code)
		}
		if f.counted(t, tc.counted) != before+1 {
			t.Errorf("%s: refusal %s not counted", tc.name, tc.counted)
		}
	}
	// A replayed connection request (same signature, same nonce) is
	// refused even though its signature is valid.
	h := http.Header{}
	h.Set(HeaderOrganizationID, org)
	h.Set(HeaderSessionID, newUUID())
	h.Set(HeaderCorrelationID, newUUID())
	h.Set(HeaderAPIKey, f.keys["acme"])
	host, path, _ := strings.Cut(f.url[len("ws://"):], "/")
	Sign(h, "/"+path, host, f.keys["acme"], f.secrets["acme"], "cmVwbGF5ZWQtbm9uY2UtMDE=", time.Now(), 30*time.Second)
	ws, _, err := websocket.DefaultDialer.Dial(f.url, h)
	if err != nil {
		t.Fatalf("first use of the signature: %v", err)
	}
	ws.Close()
	_, resp, err := websocket.DefaultDialer.Dial(f.url, h)
	if err == nil || resp.StatusCode != 401 {
		t.Errorf("replayed request: %v; want 401", resp)
	}
	// A tenant that allows unsigned requests for keys without a secret.
	s, err := f.client("open").Open(context.Background(), OpenRequest{})
	if err != nil {
		t.Fatalf("unsigned request of a tenant that allows them: %v", err)
	}
	s.Close(context.Background(), "end")
}

func TestOverQuotaIsRefusedBeforeTheUpgradeOrAtOpen(t *testing.T) {
	f := start(t, Options{})
	first, err := f.client("tiny").Open(context.Background(), OpenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.client("tiny").Open(context.Background(), OpenRequest{})
	var de *DialError
	if !errors.As(err, &de) || de.Status != http.StatusTooManyRequests {
		t.Errorf("second session over quota: %v; want 429", err)
	}
	first.Close(context.Background(), "end")
}

func TestASessionAsTheSpecificationDescribesIt(t *testing.T) {
	f := start(t, Options{})
	r := f.dialRaw(t, "acme")
	conv := newUUID()
	r.send("open", fmt.Sprintf(openStereo, conv))
	opened := r.next()
	var op OpenedParameters
	json.Unmarshal(opened.Params, &op)
	if opened.Type != TypeOpened || opened.ClientSeq != 1 || len(op.Media) != 1 || strings.Join(op.Media[0].Channels, ",") != "external,internal" || op.StartPaused {
		t.Fatalf("opened: %+v %s", opened, opened.Params)
	}
	// ping → pong at once, answering the ping's seq.
	r.send("ping", `{}`)
	if pong := r.until(TypePong); pong.ClientSeq != 2 {
		t.Errorf("pong clientseq %d; want 2", pong.ClientSeq)
	}
	// 1 s of stereo audio in 20 ms frames.
	for range 50 {
		r.audio(320)
	}
	// paused, then resumed after 2 s: the pause is a gap, not audio.
	r.send("paused", `{}`)
	r.send("paused", `{}`) // a client may repeat it; still paused
	r.send("resumed", `{"start":"PT1S","discarded":"PT2S"}`)
	for range 50 {
		r.audio(320)
	}
	// 0.5 s discarded by the client.
	r.send("discarded", `{"start":"PT4S","discarded":"PT0.5S"}`)
	r.send("update", `{"language":"fr-FR"}`)
	r.until(TypeUpdated)
	r.send("error", `{"code":429,"message":"rate limited","retryAfter":"PT1S"}`) // logged, not fatal
	for range 25 {
		r.audio(320)
	}
	r.send("close", `{"reason":"end"}`)
	closed := r.until(TypeClosed)
	if closed.ClientSeq != r.seq {
		t.Errorf("closed clientseq %d; want %d", closed.ClientSeq, r.seq)
	}
	// closed went out after the report was stored: 1 s + 2 s paused +
	// 1 s + 0.5 s discarded + 0.5 s.
	rep := f.fc.Report(conv)
	if rep == nil || rep.DurationS != 5 || rep.EndReason != fullcallv1.EndReason_END_REASON_HANGUP || rep.AgentId != "agent-7" {
		t.Fatalf("report when closed arrived: %+v", rep)
	}
	if code := r.closeCode(); code != websocket.CloseNormalClosure {
		t.Errorf("WebSocket closed with %d; want 1000", code)
	}
	// The backends saw a stereo call, caller first, with its labels, and
	// audio only for the 2.5 s that carried audio.
	var open *callv1.Call
	for _, o := range f.rt.OpenCalls() {
		if o.Call.CallId == conv {
			open = o.Call
		}
	}
	if open == nil || open.Protocol != Protocol || len(open.Format.Channels) != 2 || open.Format.Channels[0] != callv1.ChannelRole_CHANNEL_ROLE_CALLER ||
		open.Labels["audiohook_session_id"] != r.id || open.Labels["language"] != "en-US" ||
		// customConfig.labels are the call's labels; its other entries
		// are not (and, not being identifiers, must not refuse the call).
		open.Labels["queue"] != "vip" || open.Labels["agentId"] != "" || open.Labels["customer"] != "" {
		t.Errorf("call as realtime saw it: %+v", open)
	}
	// Chunks queued behind a busy sender go out merged: the audio counts.
	if rep := f.fc.Report(conv); rep == nil || rep.AudioBytes != 2*20000 || uint64(len(f.fc.Seqs(conv))) != rep.Chunks {
		t.Errorf("fullcall's report %v, chunks %v; want 2.5 s of audio (40,000 bytes), every chunk received", rep, f.fc.Seqs(conv))
	}
}

func TestScoresAndAlertsTravelAsEvents(t *testing.T) {
	f := start(t, Options{})
	f.rt.Configure(func() {
		f.rt.Alert = func(callID string, second uint32) *callv1.AlertEvent {
			if second == 1 {
				return &callv1.AlertEvent{AlertId: callID + "/1", RuleId: "caller-pressure", Episode: 1, State: callv1.AlertState_ALERT_STATE_FIRING,
					Score: callv1.ScoreKind_SCORE_KIND_CALLER_PRESSURE, Value: 80, Threshold: 70, Second: 1}
			}
			return nil
		}
	})
	rec := &audio.Recording{Format: audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 2}, Data: make([]byte, 3*16000)}
	for _, tenantID := range []string{"acme", "private"} {
		res, err := f.client(tenantID).Stream(context.Background(), rec, StreamOptions{OpenRequest: OpenRequest{AgentID: "a1"}, PingInterval: time.Second})
		if err != nil {
			t.Fatalf("%s: %v", tenantID, err)
		}
		scores := res.Scores()
		if len(scores) != 3 {
			t.Fatalf("%s: %d score events for 3 s; want 3: %+v", tenantID, len(scores), res.Events)
		}
		for i, s := range scores {
			if s.Second != uint32(i) || s.Position != fmt.Sprintf("PT%dS", i+1) || s.CallerPressure == nil || *s.CallerPressure != 50 || s.Model.Name != gatewaytest.Model.Name {
				t.Errorf("%s: score %d = %+v", tenantID, i, s)
			}
			if tenantID == "private" && !strings.HasPrefix(s.Abstain["agentStress"], "private") {
				t.Errorf("private tenant: agent stress not withheld: %+v", s)
			}
		}
		var alerts int
		for _, e := range res.Events {
			if e.Alert != nil {
				alerts++
				if e.Alert.State != "firing" || e.Alert.Score != "caller_pressure" || e.Alert.Value != 80 {
					t.Errorf("alert event %+v", e.Alert)
				}
			}
		}
		if alerts != 1 {
			t.Errorf("%s: %d alert events; want 1", tenantID, alerts)
		}
		if len(res.RTTs) == 0 {
			t.Errorf("%s: no ping answered", tenantID)
		}
	}
}

func TestEventsWaitForTheClientsAcknowledgement(t *testing.T) {
	f := start(t, Options{MaxUnackedEvents: 3})
	r := f.dialRaw(t, "acme")
	r.send("open", fmt.Sprintf(openStereo, newUUID()))
	r.until(TypeOpened)
	// 6 s of audio, and a client that acknowledges nothing, not even
	// opened: two events may go out (three messages unacknowledged), the
	// other four scores are dropped and counted.
	for range 6 * 50 {
		r.audio(320)
	}
	r.sendText(fmt.Sprintf(`{"version":"2","id":%q,"type":"close","seq":2,"serverseq":0,"position":"PT6S","parameters":{"reason":"end"}}`, r.id))
	var events int
	for {
		m := r.next()
		if m.Type == TypeClosed {
			break
		}
		if m.Type != TypeEvent {
			t.Fatalf("unexpected %s", m.Type)
		}
		events++
	}
	if events != 2 {
		t.Errorf("%d events to a client that acknowledged none; want 2", events)
	}
	if dropped := f.metrics.Value("calmline.gateway.events.dropped"); dropped != 4 {
		t.Errorf("%v events counted as dropped; want 4", dropped)
	}
}

func TestConnectionProbesAreAnsweredAndNotCalls(t *testing.T) {
	f := start(t, Options{})
	s, err := f.client("tiny").Open(context.Background(), OpenRequest{ConversationID: NullUUID})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(s.Selected().Channels, ",") != "external,internal" || f.mgr.Live() != 0 {
		t.Errorf("probe: selected %v, %d live calls; want stereo and none", s.Selected(), f.mgr.Live())
	}
	s.SendAudio(make([]byte, 320)) // audio of a probe goes nowhere
	if err := s.Close(context.Background(), "end"); err != nil {
		t.Fatal(err)
	}
	if f.fc.Report(NullUUID) != nil || len(f.rt.OpenCalls()) != 0 {
		t.Error("a probe reached the backends")
	}
	if f.counted(t, "probe") != 1 {
		t.Error("probe not counted")
	}
	// The tenant's only call slot is still free.
	s, err = f.client("tiny").Open(context.Background(), OpenRequest{})
	if err != nil {
		t.Fatalf("call after the probe: %v", err)
	}
	s.Close(context.Background(), "end")
}

func TestMonoAndInvertedOffersKeepTheFrameOrder(t *testing.T) {
	f := start(t, Options{})
	pcmu := func(ch ...string) MediaParameter {
		return MediaParameter{Type: "audio", Format: "PCMU", Channels: ch, Rate: 8000}
	}
	for _, c := range []struct {
		offer []MediaParameter
		roles []callv1.ChannelRole
	}{
		{[]MediaParameter{pcmu("internal", "external"), pcmu("internal"), pcmu("external")}, []callv1.ChannelRole{callv1.ChannelRole_CHANNEL_ROLE_AGENT, callv1.ChannelRole_CHANNEL_ROLE_CALLER}},
		{[]MediaParameter{pcmu("internal")}, []callv1.ChannelRole{callv1.ChannelRole_CHANNEL_ROLE_AGENT}},
		{[]MediaParameter{pcmu("external")}, []callv1.ChannelRole{callv1.ChannelRole_CHANNEL_ROLE_CALLER}},
	} {
		conv := newUUID()
		rec := &audio.Recording{Format: audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 2}, Data: make([]byte, 16000)}
		if _, err := f.client("acme").Stream(context.Background(), rec, StreamOptions{OpenRequest: OpenRequest{ConversationID: conv, Media: c.offer}}); err != nil {
			t.Fatal(err)
		}
		rep := f.fc.Report(conv)
		if rep == nil || rep.DurationS != 1 || fmt.Sprint(rep.Format.Channels) != fmt.Sprint(c.roles) {
			t.Errorf("offer %v: report %+v; want roles %v and 1 s", c.offer, rep, c.roles)
		}
	}
}

func TestBadInputDisconnectsWithAReason(t *testing.T) {
	f := start(t, Options{Conn: wsconn.Options{ReadLimit: 4096}})
	conv := func() string { return fmt.Sprintf(openStereo, newUUID()) }
	type step func(r *raw)
	text := func(s string) step { return func(r *raw) { r.sendText(strings.ReplaceAll(s, "SESSION", r.id)) } }
	msg := func(typ, params string, seq ...uint64) step { return func(r *raw) { r.send(typ, params, seq...) } }
	open := func(r *raw) { r.send("open", conv()); r.until(TypeOpened) }
	audio := func(n int) step { return func(r *raw) { r.audio(n) } }
	for _, c := range []struct {
		name   string
		steps  []step
		reason string // disconnect reason
		info   string
		count  string
	}{
		{"malformed JSON", []step{text(`{"version":"2","type":"open",`)}, "error", "not valid JSON", "audiohook_malformed_json"},
		{"not a client message", []step{text(`{"type":"open","seq":1}`)}, "error", "not a well-formed client message", "audiohook_bad_message"},
		{"unknown message type", []step{open, msg("hello", `{}`)}, "error", `"hello" is not a supported client message`, "audiohook_unknown_type"},
		{"server message type from the client", []step{open, msg("opened", `{}`)}, "error", `"opened" is not a supported client message`, "audiohook_unknown_type"},
		{"seq skips", []step{open, msg("ping", `{}`, 5)}, "error", "Invalid seq value 5 (want 2", "audiohook_sequence"},
		{"seq repeats", []step{open, msg("ping", `{}`, 1)}, "error", "Invalid seq value 1 (want 2", "audiohook_sequence"},
		{"serverseq ahead of the server", []step{open, text(`{"version":"2","id":"SESSION","type":"ping","seq":2,"serverseq":9,"position":"PT0S","parameters":{}}`)}, "error", "Invalid serverseq value 9", "audiohook_sequence"},
		{"another session's id", []step{open, text(`{"version":"2","id":"e160e428-53e2-487c-977d-96989bf5c99d","type":"ping","seq":2,"serverseq":1,"position":"PT0S","parameters":{}}`)}, "error", "Session identifier mismatch", "audiohook_sequence"},
		{"audio before open", []step{audio(320)}, "error", "audio before the session was opened", "audiohook_audio_before_open"},
		{"pause before open", []step{msg("paused", `{}`)}, "error", `"paused" before the session was opened`, "audiohook_out_of_order"},
		{"open twice", []step{open, msg("open", conv())}, "error", "open twice", "audiohook_out_of_order"},
		{"odd stereo frame", []step{open, audio(321)}, "error", "321 bytes is not a whole number of 2-byte sample frames", "audiohook_bad_frame"},
		{"audio while paused", []step{open, msg("paused", `{}`), audio(320)}, "error", "audio while the stream is paused", "audiohook_audio_while_paused"},
		{"open without media", []step{msg("open", `{"organizationId":"`+org+`","conversationId":"090eaa2f-72fa-480a-83e0-8667ff89c0ec"}`)}, "error", `"media" is missing`, "audiohook_bad_message"},
		{"only L16 offered", []step{msg("open", `{"organizationId":"`+org+`","conversationId":"090eaa2f-72fa-480a-83e0-8667ff89c0ec","media":[{"type":"audio","format":"L16","channels":["external"],"rate":8000}]}`)}, "error", "No offered media format is supported", "audiohook_unsupported_media"},
		{"organization differs from the header", []step{msg("open", `{"organizationId":"11111111-2222-3333-4444-555555555555","conversationId":"090eaa2f-72fa-480a-83e0-8667ff89c0ec","media":[]}`)}, "unauthorized", "organizationId", "audiohook_organization"},
		{"bad span", []step{open, msg("discarded", `{"start":"5 seconds","discarded":"PT1S"}`)}, "error", `"start"`, "audiohook_bad_message"},
		{"pause longer than the limit", []step{open, msg("paused", `{}`), msg("resumed", `{"start":"PT0S","discarded":"PT7200S"}`)}, "error", "exceeds the 1h0m0s limit", "audiohook_gap_too_long"},
		{"discarded span far ahead of the clock", []step{open, msg("discarded", `{"start":"PT0S","discarded":"PT60S"}`)}, "error", "faster than real time", "audiohook_gap_refused"},
		{"labels not an object of strings", []step{msg("open", strings.Replace(conv(), `"labels":{"queue":"vip"}`, `"labels":{"queue":1}`, 1))}, "error", "customConfig.labels must be an object of strings", "audiohook_bad_message"},
		{"bad close reason", []step{open, msg("close", `{"reason":"bored"}`)}, "error", `"reason" must be`, "audiohook_bad_message"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := f.counted(t, c.count)
			r := f.dialRaw(t, "acme")
			for _, s := range c.steps {
				s(r)
			}
			d := r.until(TypeDisconnect)
			var p DisconnectParameters
			json.Unmarshal(d.Params, &p)
			if p.Reason != c.reason || !strings.Contains(p.Info, c.info) {
				t.Errorf("disconnect %+v; want reason %s with %q", p, c.reason, c.info)
			}
			// The client answers with close; the server confirms.
			r.send("close", `{"reason":"disconnect"}`, r.seq+1)
			r.until(TypeClosed)
			if f.counted(t, c.count) != before+1 {
				t.Errorf("refusal %s not counted", c.count)
			}
		})
	}
	t.Run("oversize message", func(t *testing.T) {
		r := f.dialRaw(t, "acme")
		open(r)
		r.audio(5000)
		if code := r.closeCode(); code != websocket.CloseMessageTooBig {
			t.Errorf("close %d; want 1009", code)
		}
	})
	t.Run("text that is not UTF-8", func(t *testing.T) {
		r := f.dialRaw(t, "acme")
		open(r)
		r.sendText("{\"version\":\"2\",\"type\":\"ping\",\"seq\":2,\"id\":\"\xff\"}")
		if code := r.closeCode(); code != websocket.CloseInvalidFramePayloadData {
			t.Errorf("close %d; want 1007", code)
		}
	})
	t.Run("no close after a disconnect", func(t *testing.T) {
		f := start(t, Options{DisconnectWait: 50 * time.Millisecond})
		r := f.dialRaw(t, "acme")
		r.audio(320)
		r.until(TypeDisconnect)
		if code := r.closeCode(); code != websocket.ClosePolicyViolation {
			t.Errorf("close %d; want 1008", code)
		}
	})
}

func TestBadInputNeverAffectsOtherCalls(t *testing.T) {
	f := start(t, Options{})
	conv := newUUID()
	good, err := f.client("acme").Open(context.Background(), OpenRequest{ConversationID: conv})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		r := f.dialRaw(t, "acme")
		r.send("open", fmt.Sprintf(openStereo, newUUID()))
		r.until(TypeOpened)
		good.SendAudio(make([]byte, 8000))
		r.audio(321 + i*2)
		r.until(TypeDisconnect)
	}
	if err := good.Close(context.Background(), "end"); err != nil {
		t.Fatal(err)
	}
	for _, e := range good.Events() {
		if e.Disconnect != nil {
			t.Errorf("the good session was disconnected: %+v", e.Disconnect)
		}
	}
	if rep := f.fc.Report(conv); rep == nil || rep.DurationS != 2 || rep.EndReason != fullcallv1.EndReason_END_REASON_HANGUP || rep.Incomplete {
		t.Errorf("the good call's report: %+v; want 2 s, complete, hung up", rep)
	}
}

func TestTheGatewayEndsASessionWithDisconnect(t *testing.T) {
	f := start(t, Options{})
	s, err := f.client("acme").Open(context.Background(), OpenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	s.SendAudio(make([]byte, 16000))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ended := make(chan struct{})
	go func() { defer close(ended); f.mgr.EndAll(ctx, fullcallv1.EndReason_END_REASON_DRAIN) }()
	select {
	case <-s.Disconnected():
	case <-ctx.Done():
		t.Fatal("no disconnect when the gateway drained")
	}
	ev := s.Events()
	if d := ev[len(ev)-1].Disconnect; d == nil || d.Reason != DisconnectError || !strings.Contains(d.Info, "draining") {
		t.Errorf("disconnect %+v; want reason error, gateway draining", d)
	}
	// As Genesys Cloud does, the client closes; the call's report is
	// stored with the drain as its end reason.
	if err := s.Close(ctx, "disconnect"); err != nil {
		t.Errorf("close after the disconnect: %v", err)
	}
	<-ended
	var rep *fullcallv1.Report
	for _, o := range f.rt.OpenCalls() {
		rep = f.fc.Report(o.Call.CallId)
	}
	if rep == nil || rep.EndReason != fullcallv1.EndReason_END_REASON_DRAIN || rep.DurationS != 1 {
		t.Errorf("report %+v; want 1 s ended by the drain", rep)
	}
}

func TestSessionsThatGoQuietAreDisconnected(t *testing.T) {
	f := start(t, Options{OpenTimeout: 50 * time.Millisecond, IdleTimeout: 50 * time.Millisecond, DisconnectWait: 50 * time.Millisecond,
		Conn: wsconn.Options{PingInterval: 20 * time.Millisecond}})
	r := f.dialRaw(t, "acme")
	d := r.until(TypeDisconnect)
	if !strings.Contains(string(d.Params), "no open message") {
		t.Errorf("no open: %s", d.Params)
	}
	r = f.dialRaw(t, "acme")
	conv := newUUID()
	r.send("open", fmt.Sprintf(openStereo, conv))
	r.until(TypeOpened)
	r.audio(1600)
	d = r.until(TypeDisconnect)
	if !strings.Contains(string(d.Params), "no audio or message") {
		t.Errorf("idle: %s", d.Params)
	}
	// The client never closes: the server drops it, and the call is
	// ended with its report stored.
	r.closeCode()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	f.mgr.Drain(ctx)
	if rep := f.fc.Report(conv); rep == nil || rep.Chunks != 1 || rep.EndReason != fullcallv1.EndReason_END_REASON_IDLE_TIMEOUT {
		t.Errorf("report of the idle call: %+v; want one chunk, ended as idle", rep)
	}
}

func TestAConnectionLostMidCallStillEndsTheCall(t *testing.T) {
	f := start(t, Options{})
	conv := newUUID()
	s, err := f.client("acme").Open(context.Background(), OpenRequest{ConversationID: conv})
	if err != nil {
		t.Fatal(err)
	}
	s.SendAudio(make([]byte, 16000))
	s.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	f.mgr.Drain(ctx)
	if rep := f.fc.Report(conv); rep == nil || rep.DurationS != 1 || rep.EndReason != fullcallv1.EndReason_END_REASON_DISCONNECTED {
		t.Errorf("report %+v; want 1 s, disconnected", rep)
	}
}

func TestClientHooksReportEventsAndTheEnd(t *testing.T) {
	f := start(t, Options{})
	events := make(chan Event, 16)
	ended := make(chan int, 2)
	s, err := f.client("acme").Open(context.Background(), OpenRequest{
		OnEvent: func(e Event) { events <- e },
		OnEnd:   func(code int, _ string, _ error) { ended <- code },
	})
	if err != nil {
		t.Fatal(err)
	}
	s.SendAudio(make([]byte, 2*16000))
	if err := s.Close(context.Background(), "end"); err != nil {
		t.Fatal(err)
	}
	if code := <-ended; code != websocket.CloseNormalClosure {
		t.Errorf("OnEnd with %d; want 1000", code)
	}
	if len(ended) != 0 || len(s.Events()) != 0 || len(events) != 3 {
		t.Errorf("%d more OnEnd calls, %d kept events, %d hooked events; want 0, 0, 3", len(ended), len(s.Events()), len(events))
	}
	if e := <-events; e.Score == nil || e.Score.Second != 0 {
		t.Errorf("first event %+v; want the score of second 0", e)
	}
	<-events
	if e := <-events; e.Type != TypeClosed {
		t.Errorf("last event %+v; want closed", e)
	}
}

// TestFeedOnlyKeysAreRefused checks that a care-team key, which reads the
// live feed only, cannot stream a call, as on the native endpoint.
func TestFeedOnlyKeysAreRefused(t *testing.T) {
	f := start(t, Options{})
	_, err := f.client("care").Open(context.Background(), OpenRequest{})
	var de *DialError
	if !errors.As(err, &de) || de.Status != http.StatusForbidden || de.Code != "forbidden" {
		t.Fatalf("open with a care-team key: %v; want 403 forbidden", err)
	}
	if n := f.counted(t, "forbidden"); n != 1 {
		t.Errorf("%d refusals counted as forbidden; want 1", n)
	}
}

// TestTooFastIsDisconnectedWithError checks that the pacing refusal
// (native's close 4420) reaches an AudioHook client as the protocol's
// disconnect with reason error and the cause in info, counted, and that
// the call's report is stored.
func TestTooFastIsDisconnectedWithError(t *testing.T) {
	f := start(t, Options{}, session.Pacing{Policy: session.PaceRefuse, MaxLead: 100 * time.Millisecond})
	conv := newUUID()
	s, err := f.client("acme").Open(context.Background(), OpenRequest{ConversationID: conv})
	if err != nil {
		t.Fatal(err)
	}
	s.SendAudio(make([]byte, 2*4000)) // 0.5 s at once: past the 100 ms lead
	select {
	case <-s.Disconnected():
	case <-time.After(10 * time.Second):
		t.Fatal("no disconnect for audio faster than real time")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Close(ctx, "disconnect"); err != nil {
		t.Errorf("close after the disconnect: %v", err)
	}
	// The reader has ended: every event it received is kept (Disconnected
	// fires before the disconnect is kept).
	var got *DisconnectParameters
	for _, e := range s.Events() {
		if e.Disconnect != nil {
			got = e.Disconnect
		}
	}
	if got == nil || got.Reason != DisconnectError || !strings.Contains(got.Info, "faster than real time") {
		t.Errorf("disconnect %+v; want reason error, info saying the audio is too fast", got)
	}
	if n := f.counted(t, "audiohook_too_fast"); n != 1 {
		t.Errorf("%d refusals counted as audiohook_too_fast; want 1", n)
	}
	if rep := f.fc.Report(conv); rep == nil || rep.EndReason != fullcallv1.EndReason_END_REASON_ERROR {
		t.Errorf("report %+v; want one, ended for an error", rep)
	}
}

// TestEventsSentAreCounted checks that what the gateway sends an AudioHook
// client (events, pongs) counts as the call's traffic out, as native's
// messages do.
func TestEventsSentAreCounted(t *testing.T) {
	f := start(t, Options{})
	s, err := f.client("acme").Open(context.Background(), OpenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	s.SendAudio(make([]byte, 2*16000)) // 2 s: two score events
	s.Ping()
	if err := s.Close(context.Background(), "end"); err != nil {
		t.Fatal(err)
	}
	out := f.metrics.Value("calmline.gateway.events.out")
	if n := len(s.RTTs()); n != 1 || out < 200 {
		t.Errorf("%d pongs, %v bytes out counted; want 1 pong and the events' and pong's bytes (≥ 200)", n, out)
	}
}
