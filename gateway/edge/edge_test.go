package edge_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/calmline/calmline/gateway/admission"
	"github.com/calmline/calmline/gateway/edge"
	"github.com/calmline/calmline/gateway/gatewaytest"
	"github.com/calmline/calmline/gateway/session"
	"github.com/calmline/calmline/gateway/wsconn"
	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/tenant"
	"github.com/calmline/calmline/lib/wire"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// toy is the smallest protocol: text "start ID" starts a mono μ-law call,
// binary frames are its audio, "stop" ends it, "bad" is bad input. Its
// Close is a close frame; it renders scores as "score N".
type toy struct{}

func (toy) Frame(c *edge.Conn, typ int, data []byte) error {
	if typ == websocket.BinaryMessage {
		return c.Audio(data)
	}
	switch s := string(data); {
	case strings.HasPrefix(s, "start "):
		if _, err := c.Start(session.Start{CallID: strings.TrimPrefix(s, "start "), Format: audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 1},
			Roles: []callv1.ChannelRole{callv1.ChannelRole_CHANNEL_ROLE_CALLER}}); err != nil {
			return err
		}
		c.Send([]byte("started"), false)
	case strings.HasPrefix(s, "auth "):
		if err := c.Authenticate(strings.TrimPrefix(s, "auth ")); err != nil {
			return err
		}
		c.Send([]byte("authenticated "+c.Tenant().ID), false)
	case s == "sync": // every frame before it has been handed on
		c.Send([]byte("synced"), false)
	case s == "stop":
		c.End(fullcallv1.EndReason_END_REASON_HANGUP)
		c.Close(edge.CloseNormal, "stopped")
	default:
		return edge.Errorf(edge.CloseBadMessage, "unknown message %q", s)
	}
	return nil
}

func (toy) Close(c *edge.Conn, code int, reason string) { c.Close(code, reason) }

func (toy) Score(c *edge.Conn, s edge.Score) {
	c.Send(fmt.Appendf(nil, "score %d agent=%v %s", s.Second, s.AgentStress != nil, s.AgentStressAbstain), true)
}

func (toy) Alert(c *edge.Conn, a *callv1.AlertEvent) {
	c.Send([]byte("alert "+wire.ScoreName(a.Score)), false)
}

type fixture struct {
	logs *logBuffer
	e    *edge.Edge
	url  string
	keys map[string]string
	b    *gatewaytest.Backends
	mt   *gatewaytest.Metrics
}

// admitter is a fake headroom judge.
type admitter func(ctx context.Context, tenantID string) *admission.Error

func (a admitter) AdmitCall(ctx context.Context, tenantID, _ string) *admission.Error {
	return a(ctx, tenantID)
}

func start(t *testing.T, p *edge.Protocol, adm ...admitter) *fixture {
	t.Helper()
	f := &fixture{b: gatewaytest.StartBackends(t), mt: gatewaytest.NewMetrics(t)}
	mgr, err := session.NewManager(session.Options{Realtime: f.b.RealtimePool, Fullcall: f.b.FullcallPool, MeterProvider: f.mt.Provider,
		Pacing: session.Pacing{Policy: session.PaceOff},
		// Chunks end on whole seconds, which the fake realtime scores.
		ChunkPhase: session.DefaultChunkDuration})
	if err != nil {
		t.Fatal(err)
	}
	var reg *tenant.Registry
	care := tenant.NewKey()
	reg, f.keys = gatewaytest.Tenants(t,
		&tenant.Tenant{ID: "acme", MaxConcurrentCalls: 10, APIKeys: []tenant.APIKey{{ID: "care", SHA256: tenant.HashKey(care), Role: tenant.KeyRoleCare}}},
		&tenant.Tenant{ID: "tiny", MaxConcurrentCalls: 1},
		&tenant.Tenant{ID: "private", MaxConcurrentCalls: 10, AgentScoring: tenant.AgentScoringPrivate})
	f.keys["care"] = care
	f.logs = &logBuffer{}
	o := edge.Options{Sessions: mgr, Tenants: reg, Logger: slog.New(slog.NewJSONHandler(f.logs, nil))}
	if len(adm) > 0 {
		o.Admission = adm[0]
	}
	f.e = edge.New(o)
	if p.Name == "" {
		p.Name = "toy"
	}
	codec := toy{}
	if p.Accept == nil {
		p.Accept = func(r *http.Request) (*edge.Accepted, error) {
			if r.URL.Query().Get("broken") != "" {
				return nil, errors.New("a broken request")
			}
			key := tenant.KeyFromRequest(r)
			if key == "" && r.URL.Query().Get("late") != "" {
				return &edge.Accepted{Codec: codec}, nil // the key comes in the stream
			}
			t, _, ref := f.e.Authenticate(key)
			if ref != nil {
				return nil, ref
			}
			return &edge.Accepted{Tenant: t, Codec: codec}, nil
		}
	}
	srv := httptest.NewServer(f.e.Handler(p))
	f.url = "ws" + strings.TrimPrefix(srv.URL, "http")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		f.e.Close(ctx)
		srv.Close()
	})
	return f
}

func (f *fixture) dial(t *testing.T, key string) *websocket.Conn {
	t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial(f.url, http.Header{"Authorization": {"Bearer " + key}})
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

// next reads the next text message.
func next(t *testing.T, ws *websocket.Conn) string {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := ws.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

// closeOf reads until the server closes and returns its close frame.
func closeOf(t *testing.T, ws *websocket.Conn) *websocket.CloseError {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("read: %v; want a close frame", err)
			}
			return ce
		}
	}
}

func TestRefusalsBeforeTheUpgradeShareOneFormat(t *testing.T) {
	f := start(t, &edge.Protocol{})
	live := f.dial(t, f.keys["tiny"])
	live.WriteMessage(websocket.TextMessage, []byte("start only-one"))
	if got := next(t, live); got != "started" {
		t.Fatalf("tiny's call: %q", got)
	}
	refused := func(name, url string, h http.Header, status int, code, retryAfter, count string) {
		t.Helper()
		before := f.mt.Value("calmline.gateway.calls.refused", "reason", count)
		ws, resp, err := websocket.DefaultDialer.Dial(url, h)
		if err == nil {
			ws.Close()
			t.Errorf("%s: upgraded; want %d before the upgrade", name, status)
			return
		}
		defer resp.Body.Close()
		var body struct {
			Error struct{ Code, Message string }
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Errorf("%s: body is not the JSON error: %v", name, err)
		}
		if resp.StatusCode != status || body.Error.Code != code || body.Error.Message == "" || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d %+v; want %d with code %s and a message", name, resp.StatusCode, body, status, code)
		}
		if got := resp.Header.Get("Retry-After"); got != retryAfter {
			t.Errorf("%s: Retry-After %q; want %q", name, got, retryAfter)
		}
		if got := f.mt.Value("calmline.gateway.calls.refused", "reason", count); got != before+1 {
			t.Errorf("%s: refusals counted as %s went from %v to %v; want one more", name, count, before, got)
		}
	}
	bearer := func(k string) http.Header { return http.Header{"Authorization": {"Bearer " + k}} }
	refused("no key", f.url, nil, 401, "unauthenticated", "", "unauthenticated")
	refused("unknown key", f.url, bearer("clk_nope"), 401, "unauthenticated", "", "unauthenticated")
	refused("feed-only key", f.url, bearer(f.keys["care"]), 403, "forbidden", "", "forbidden")
	refused("over quota", f.url, bearer(f.keys["tiny"]), 429, "over_quota", "5", "quota")
	refused("protocol's own refusal", f.url+"?broken=1", bearer(f.keys["acme"]), 400, "bad_request", "", "toy_bad_request")
	f.e.Drain()
	refused("draining", f.url, bearer(f.keys["acme"]), 503, "draining", "5", "draining")
	// A refusal carries the challenge of 401.
	_, resp, _ := websocket.DefaultDialer.Dial(f.url, nil)
	if resp.Header.Get("WWW-Authenticate") == "" {
		t.Error("401 without WWW-Authenticate")
	}
	resp.Body.Close()
}

func TestOneTableMapsErrorsToCloseCodes(t *testing.T) {
	for _, c := range []struct {
		err     error
		code    int
		refused bool
	}{
		{fmt.Errorf("%w: the call's audio runs 3 s ahead", session.ErrTooFast), edge.CloseTooFast, false},
		{fmt.Errorf("%w: call_id is required", session.ErrBadStart), edge.CloseBadMessage, false},
		{fmt.Errorf("%w (1)", session.ErrOverQuota), edge.CloseOverQuota, true},
		{session.ErrDraining, edge.CloseGoingAway, true},
		{session.ErrCallLive, edge.CloseCallLive, true},
		{fmt.Errorf("%w: no checkpoint", session.ErrNotResumable), edge.CloseNotResumable, true},
		{fmt.Errorf("%w: fullcall: refused", session.ErrUnavailable), edge.CloseTryAgainLater, true},
		{&wsconn.TooBigError{Limit: 10}, edge.CloseTooBig, false},
		{&wsconn.InvalidTextError{}, edge.CloseInvalidText, false},
		{edge.Errorf(edge.CloseOutOfOrder, "audio before start"), edge.CloseOutOfOrder, false},
		{fmt.Errorf("decoding: %w", edge.Errorf(edge.CloseUnsupportedMedia, "opus")), edge.CloseUnsupportedMedia, false},
		{errors.New("something else"), edge.CloseTryAgainLater, true},
	} {
		e := edge.ErrorOf(c.err)
		if e.Code != c.code || e.Refused != c.refused || e.Reason == "" {
			t.Errorf("ErrorOf(%v) = %+v; want code %d, refused %v, a reason", c.err, e, c.code, c.refused)
		}
		if own := (*edge.Error)(nil); !errors.As(c.err, &own) && !errors.Is(e, c.err) {
			t.Errorf("ErrorOf(%v) does not unwrap to it", c.err)
		}
	}
	// On the wire: bad input closes with its code and ends the call as
	// an error, its report stored; the refusal is counted by its code.
	f := start(t, &edge.Protocol{})
	ws := f.dial(t, f.keys["acme"])
	ws.WriteMessage(websocket.TextMessage, []byte("start bad-input"))
	next(t, ws)
	ws.WriteMessage(websocket.BinaryMessage, make([]byte, 800))
	ws.WriteMessage(websocket.TextMessage, []byte("hello"))
	if ce := closeOf(t, ws); ce.Code != edge.CloseBadMessage || !strings.Contains(ce.Text, `unknown message "hello"`) {
		t.Errorf("closed with %d %q; want 4400 naming the message", ce.Code, ce.Text)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f.e.Sessions().Drain(ctx)
	if r := f.b.Fullcall.Report("bad-input"); r == nil || r.EndReason != fullcallv1.EndReason_END_REASON_ERROR || r.AudioBytes != 800 {
		t.Errorf("report %+v; want one ended as an error with the 800 bytes sent", r)
	}
	if got := f.mt.Value("calmline.gateway.calls.refused", "reason", "close_4400"); got != 1 {
		t.Errorf("close_4400 counted %v times; want 1", got)
	}
}

func TestCloseDrainsLiveAndWaitingConnectionsAndWaits(t *testing.T) {
	f := start(t, &edge.Protocol{})
	live := f.dial(t, f.keys["acme"])
	live.WriteMessage(websocket.TextMessage, []byte("start draining-call"))
	next(t, live)
	live.WriteMessage(websocket.BinaryMessage, make([]byte, 8000)) // 1 s
	live.WriteMessage(websocket.TextMessage, []byte("sync"))
	for next(t, live) != "synced" {
	}
	// A connection without a call: whether Close finds it registered or
	// it is upgraded just after, it goes away the same way.
	waiting := f.dial(t, f.keys["acme"])
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		closed <- f.e.Close(ctx)
	}()
	for name, ws := range map[string]*websocket.Conn{"live call": live, "no call": waiting} {
		if ce := closeOf(t, ws); ce.Code != edge.CloseGoingAway {
			t.Errorf("%s closed with %d %q; want 1001", name, ce.Code, ce.Text)
		}
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close = %v", err)
	}
	// Close waited: no connection is left, and the live call's report
	// is stored, ended by the drain, with its audio.
	if n := f.e.Conns(); n != 0 {
		t.Errorf("%d connections left after Close", n)
	}
	if r := f.b.Fullcall.Report("draining-call"); r == nil || r.EndReason != fullcallv1.EndReason_END_REASON_DRAIN || r.AudioBytes != 8000 {
		t.Errorf("report %+v; want one ended by the drain with the 8000 bytes sent", r)
	}
	// Later connections are refused before the upgrade.
	if _, resp, err := websocket.DefaultDialer.Dial(f.url, http.Header{"Authorization": {"Bearer " + f.keys["acme"]}}); err == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("after Close: %v; want 503", resp)
	}
}

func TestCloseWaitsForAPeerThatDoesNotAnswer(t *testing.T) {
	// A client that never reads does not answer the close: Close still
	// returns once the connection's bounded close wait is over, and not
	// before the connection is gone.
	f := start(t, &edge.Protocol{Conn: wsconn.Options{CloseWait: 50 * time.Millisecond}})
	ws := f.dial(t, f.keys["acme"])
	ws.WriteMessage(websocket.TextMessage, []byte("start deaf"))
	next(t, ws) // then it reads no more
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.e.Close(ctx); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if n := f.e.Conns(); n != 0 {
		t.Errorf("%d connections left after Close", n)
	}
}

func TestIdleConnectionsCloseWithTheirProtocolsWords(t *testing.T) {
	f := start(t, &edge.Protocol{Start: edge.Timeout{After: 50 * time.Millisecond, Missing: "hello", Count: "toy_no_hello"},
		Idle: edge.Timeout{After: 50 * time.Millisecond, Missing: "audio"}})
	ws := f.dial(t, f.keys["acme"])
	if ce := closeOf(t, ws); ce.Code != edge.CloseIdle || ce.Text != "no hello for 50ms" {
		t.Errorf("no start: %d %q; want 4408 no hello for 50ms", ce.Code, ce.Text)
	}
	if n := f.mt.Value("calmline.gateway.calls.refused", "reason", "toy_no_hello"); n != 1 {
		t.Errorf("idle closes counted %v; want 1", n)
	}
	ws = f.dial(t, f.keys["acme"])
	ws.WriteMessage(websocket.TextMessage, []byte("start quiet"))
	next(t, ws)
	ws.WriteMessage(websocket.BinaryMessage, make([]byte, 800))
	if ce := closeOf(t, ws); ce.Code != edge.CloseIdle || ce.Text != "no audio for 50ms" {
		t.Errorf("no audio: %d %q; want 4408 no audio for 50ms", ce.Code, ce.Text)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f.e.Sessions().Drain(ctx)
	if r := f.b.Fullcall.Report("quiet"); r == nil || r.EndReason != fullcallv1.EndReason_END_REASON_IDLE_TIMEOUT {
		t.Errorf("report %+v; want ended as idle", r)
	}
}

func TestScoresAreRenderedUnderThePrivacyMode(t *testing.T) {
	stress, pressure := 80.0, 40.0
	u := &callv1.ScoreUpdate{CallId: "c", Second: 3, CallerPressure: &pressure, AgentStress: &stress}
	if s := edge.ViewScore(u, false); s.AgentStress == nil || *s.AgentStress != 80 || s.Abstain("cp", "as") != nil {
		t.Errorf("open view %+v; want agent_stress 80 and nothing abstaining", s)
	}
	s := edge.ViewScore(u, true)
	if s.AgentStress != nil || s.CallerPressure == nil || s.Abstain("cp", "as")["as"] != edge.PrivateAbstain {
		t.Errorf("private view %+v; want agent_stress withheld as private, caller_pressure kept", s)
	}
	u.CallerPressure, u.CallerPressureAbstain = nil, "too little speech"
	if got := edge.ViewScore(u, true).Abstain("cp", "as"); len(got) != 2 || got["cp"] != "too little speech" {
		t.Errorf("private view's abstain %v; want both reasons", got)
	}
	agentAlert := &callv1.AlertEvent{Score: callv1.ScoreKind_SCORE_KIND_AGENT_STRESS}
	callerAlert := &callv1.AlertEvent{Score: callv1.ScoreKind_SCORE_KIND_CALLER_PRESSURE}
	if edge.AlertVisible(agentAlert, true) || !edge.AlertVisible(agentAlert, false) || !edge.AlertVisible(callerAlert, true) {
		t.Error("an alert on agent_stress must be hidden in private mode only; caller alerts always shown")
	}
	// On the wire: a private tenant's connection renders no agent score
	// and no alert on it.
	f := start(t, &edge.Protocol{})
	f.b.Realtime.Configure(func() {
		f.b.Realtime.AgentStress = &stress
		f.b.Realtime.Alert = func(_ string, second uint32) *callv1.AlertEvent {
			kind := callv1.ScoreKind_SCORE_KIND_AGENT_STRESS
			if second == 1 {
				kind = callv1.ScoreKind_SCORE_KIND_CALLER_PRESSURE
			}
			return &callv1.AlertEvent{AlertId: fmt.Sprint("a", second), Score: kind, Second: second}
		}
	})
	for _, c := range []struct {
		tenant string
		want   []string
	}{
		{"acme", []string{"score 0 agent=true ", "alert agent_stress", "score 1 agent=true ", "alert caller_pressure"}},
		{"private", []string{"score 0 agent=false " + edge.PrivateAbstain, "score 1 agent=false " + edge.PrivateAbstain, "alert caller_pressure"}},
	} {
		ws := f.dial(t, f.keys[c.tenant])
		ws.WriteMessage(websocket.TextMessage, []byte("start scored-"+c.tenant))
		next(t, ws)
		ws.WriteMessage(websocket.BinaryMessage, make([]byte, 16000))
		var got []string
		for range c.want {
			got = append(got, next(t, ws))
		}
		if strings.Join(got, "|") != strings.Join(c.want, "|") {
			t.Errorf("%s: %q; want %q", c.tenant, got, c.want)
		}
		ws.WriteMessage(websocket.TextMessage, []byte("stop"))
		closeOf(t, ws)
	}
}

func TestKeyOfTakesTheQueryKeyOutOfTheURL(t *testing.T) {
	for _, c := range []struct {
		name, url string
		header    http.Header
		basic     string
		want      string
	}{
		{"bearer", "/ws/x?api_key=clk_query&call_id=c", http.Header{"Authorization": {"Bearer clk_header"}}, "", "clk_header"},
		{"x-api-key", "/ws/x", http.Header{"X-Api-Key": {"clk_header"}}, "", "clk_header"},
		{"basic", "/ws/x?api_key=clk_query", nil, "clk_basic", "clk_basic"},
		{"query", "/ws/x?call_id=c&api_key=+clk_query+", nil, "", "clk_query"},
		{"none", "/ws/x?call_id=c", nil, "", ""},
	} {
		r := httptest.NewRequest(http.MethodGet, c.url, nil)
		for k, v := range c.header {
			r.Header[k] = v
		}
		if c.basic != "" {
			r.SetBasicAuth("asterisk", c.basic)
		}
		if got := edge.KeyOf(r); got != c.want {
			t.Errorf("%s: KeyOf = %q; want %q", c.name, got, c.want)
		}
		if strings.Contains(r.URL.String(), "api_key") || strings.Contains(r.RequestURI, "api_key") {
			t.Errorf("%s: the key is still in the URL: %s %s", c.name, r.URL, r.RequestURI)
		}
		if strings.Contains(c.url, "call_id=c") && r.URL.Query().Get("call_id") != "c" {
			t.Errorf("%s: other parameters lost: %s", c.name, r.URL)
		}
	}
}

func TestStartErrorsNameTheCall(t *testing.T) {
	if e := edge.StartError(session.ErrCallLive, "c-1"); e.Code != edge.CloseCallLive || e.Reason != `call "c-1" is already live` || !e.Refused {
		t.Errorf("duplicate: %+v", e)
	}
	if e := edge.StartError(fmt.Errorf("%w: call_id is required", session.ErrBadStart), ""); e.Code != edge.CloseBadMessage || !strings.HasPrefix(e.Reason, "start: ") || e.Refused {
		t.Errorf("bad start: %+v", e)
	}
}

func TestAStartWithoutHeadroomIsRefusedWith4429(t *testing.T) {
	var full atomic.Bool
	full.Store(true)
	f := start(t, &edge.Protocol{}, func(_ context.Context, tenantID string) *admission.Error {
		if !full.Load() {
			return nil
		}
		return &admission.Error{Status: http.StatusServiceUnavailable, Code: "capacity_realtime_lag", Msg: "realtime is 1.5 s behind"}
	})
	ws := f.dial(t, f.keys["acme"])
	ws.WriteMessage(websocket.TextMessage, []byte("start no-room"))
	if ce := closeOf(t, ws); ce.Code != edge.CloseOverQuota || !strings.HasPrefix(ce.Text, "capacity_realtime_lag") {
		t.Errorf("closed with %d %q; want 4429 capacity_realtime_lag", ce.Code, ce.Text)
	}
	if r := f.b.Fullcall.Report("no-room"); r != nil {
		t.Errorf("a refused start left a report: %+v", r)
	}
	full.Store(false)
	ws = f.dial(t, f.keys["acme"])
	ws.WriteMessage(websocket.TextMessage, []byte("start room"))
	if got := next(t, ws); got != "started" {
		t.Errorf("with headroom: %q; want started", got)
	}
}

func TestAKeySentAfterTheUpgradeIsCheckedAtStart(t *testing.T) {
	f := start(t, &edge.Protocol{})
	late := func() *websocket.Conn {
		ws, _, err := websocket.DefaultDialer.Dial(f.url+"?late=1", nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ws.Close() })
		return ws
	}
	for _, c := range []struct {
		key, reason string
		code        int
	}{{"clk_unknown", "unauthenticated", edge.CloseUnauthenticated}, {f.keys["care"], "forbidden", edge.CloseForbidden}} {
		before := f.mt.Value("calmline.gateway.calls.refused", "reason", c.reason)
		ws := late()
		ws.WriteMessage(websocket.TextMessage, []byte("auth "+c.key))
		if ce := closeOf(t, ws); ce.Code != c.code || !strings.HasPrefix(ce.Text, c.reason) {
			t.Errorf("key %s: closed with %d %q; want %d %s", c.reason, ce.Code, ce.Text, c.code, c.reason)
		}
		if got := f.mt.Value("calmline.gateway.calls.refused", "reason", c.reason); got != before+1 {
			t.Errorf("%s counted %v times; want %v", c.reason, got, before+1)
		}
	}
	// A start before the key: no tenant, no call.
	ws := late()
	ws.WriteMessage(websocket.TextMessage, []byte("start anonymous"))
	if ce := closeOf(t, ws); ce.Code != edge.CloseUnauthenticated {
		t.Errorf("start without a key: %d %q; want 4401", ce.Code, ce.Text)
	}
	ws = late()
	ws.WriteMessage(websocket.TextMessage, []byte("auth "+f.keys["acme"]))
	if got := next(t, ws); got != "authenticated acme" {
		t.Fatalf("good key: %q", got)
	}
	ws.WriteMessage(websocket.TextMessage, []byte("start late-key"))
	if got := next(t, ws); got != "started" {
		t.Errorf("start after the key: %q", got)
	}
	ws.WriteMessage(websocket.TextMessage, []byte("stop"))
	closeOf(t, ws)
	if r := f.b.Fullcall.Report("late-key"); r == nil || r.TenantId != "acme" {
		t.Errorf("report %+v; want acme's", r)
	}
}

// holder is toy with a jitter buffer: its audio waits in held until the
// call ends (Flush).
type holder struct {
	toy
	held []byte
}

func (h *holder) Frame(c *edge.Conn, typ int, data []byte) error {
	if typ == websocket.BinaryMessage && c.Call() != nil {
		h.held = append(h.held, data...)
		return nil
	}
	return h.toy.Frame(c, typ, data)
}

func (h *holder) Flush(c *edge.Conn, call *session.Call) {
	call.Audio(h.held)
	h.held = nil
}

func TestHeldAudioReachesTheReportHoweverTheCallEnds(t *testing.T) {
	var f *fixture
	f = start(t, &edge.Protocol{Accept: func(r *http.Request) (*edge.Accepted, error) {
		t, _, ref := f.e.Authenticate(tenant.KeyFromRequest(r))
		if ref != nil {
			return nil, ref
		}
		return &edge.Accepted{Tenant: t, Codec: &holder{}}, nil
	}})
	for _, end := range []string{"stop", "lost", "bad input"} {
		id := "held-" + strings.ReplaceAll(end, " ", "-")
		ws := f.dial(t, f.keys["acme"])
		ws.WriteMessage(websocket.TextMessage, []byte("start "+id))
		next(t, ws)
		ws.WriteMessage(websocket.BinaryMessage, make([]byte, 800))
		switch end {
		case "stop":
			ws.WriteMessage(websocket.TextMessage, []byte("stop"))
			closeOf(t, ws)
		case "lost":
			ws.UnderlyingConn().Close()
		case "bad input":
			ws.WriteMessage(websocket.TextMessage, []byte("nonsense"))
			closeOf(t, ws)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f.e.Sessions().Drain(ctx)
	for id, reason := range map[string]fullcallv1.EndReason{
		"held-stop":      fullcallv1.EndReason_END_REASON_HANGUP,
		"held-lost":      fullcallv1.EndReason_END_REASON_DISCONNECTED,
		"held-bad-input": fullcallv1.EndReason_END_REASON_ERROR,
	} {
		if r := f.b.Fullcall.Report(id); r == nil || r.EndReason != reason || r.AudioBytes != 800 {
			t.Errorf("%s: report %+v; want %v with the 800 bytes held", id, r, reason)
		}
	}
}

// logBuffer collects JSON log lines.
type logBuffer struct {
	mu    sync.Mutex
	lines []map[string]any
}

func (b *logBuffer) Write(p []byte) (int, error) {
	var m map[string]any
	json.Unmarshal(p, &m)
	b.mu.Lock()
	b.lines = append(b.lines, m)
	b.mu.Unlock()
	return len(p), nil
}

// find returns the first line with the message whose attributes include
// every key and value given.
func (b *logBuffer) find(msg string, kv ...any) map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
next:
	for _, l := range b.lines {
		if l["msg"] != msg {
			continue
		}
		for i := 0; i < len(kv); i += 2 {
			if fmt.Sprint(l[kv[i].(string)]) != fmt.Sprint(kv[i+1]) {
				continue next
			}
		}
		return l
	}
	return nil
}

func TestRefusalsAfterTheUpgradeAreLoggedWithTheirTenant(t *testing.T) {
	f := start(t, &edge.Protocol{})
	// Both connections pass the handshake; only one call fits the quota.
	first, second := f.dial(t, f.keys["tiny"]), f.dial(t, f.keys["tiny"])
	first.WriteMessage(websocket.TextMessage, []byte("start fits"))
	next(t, first)
	second.WriteMessage(websocket.TextMessage, []byte("start over"))
	if ce := closeOf(t, second); ce.Code != edge.CloseOverQuota {
		t.Errorf("over quota at start: %d %q; want 4429", ce.Code, ce.Text)
	}
	ws, _, err := websocket.DefaultDialer.Dial(f.url+"?late=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.WriteMessage(websocket.TextMessage, []byte("auth clk_wrong"))
	closeOf(t, ws)
	for _, want := range [][]any{
		{"code", edge.CloseOverQuota, "tenant", "tiny", "protocol", "toy", "level", "INFO"},
		{"code", edge.CloseUnauthenticated, "protocol", "toy", "level", "INFO"},
	} {
		if f.logs.find("call refused after the upgrade", want...) == nil {
			t.Errorf("no INFO line for the refusal %v; lines: %v", want, f.logs.lines)
		}
	}
	for _, l := range f.logs.lines {
		if strings.Contains(fmt.Sprint(l), "clk_wrong") {
			t.Errorf("the key reached the log: %v", l)
		}
	}
}

func TestAudioInFlightWhenTheDrainBeginsIsKept(t *testing.T) {
	f := start(t, &edge.Protocol{})
	ws := f.dial(t, f.keys["acme"])
	ws.WriteMessage(websocket.TextMessage, []byte("start in-flight"))
	next(t, ws)
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		closed <- f.e.Close(ctx)
	}()
	// Sent while the gateway says going away: the client has not read
	// it yet, so this audio may reach the gateway after its close frame.
	for range 10 {
		ws.WriteMessage(websocket.BinaryMessage, make([]byte, 800))
	}
	if ce := closeOf(t, ws); ce.Code != edge.CloseGoingAway {
		t.Errorf("closed with %d; want 1001", ce.Code)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if r := f.b.Fullcall.Report("in-flight"); r == nil || r.EndReason != fullcallv1.EndReason_END_REASON_DRAIN || r.AudioBytes != 8000 {
		t.Errorf("report %+v; want the 8000 bytes sent before the client saw the going away, ended by the drain", r)
	}
}
