package native

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/calmline/calmline/gateway/gatewaytest"
	"github.com/calmline/calmline/gateway/session"
	"github.com/calmline/calmline/gateway/wsconn"
	"github.com/calmline/calmline/lib/tenant"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fixture struct {
	url  string
	keys map[string]string
	mgr  *session.Manager
	rt   *gatewaytest.Realtime
	fc   *gatewaytest.Fullcall
}

func start(t *testing.T, o Options) *fixture {
	t.Helper()
	b := gatewaytest.StartBackends(t)
	mgr, err := session.NewManager(session.Options{Realtime: b.RealtimePool, Fullcall: b.FullcallPool})
	if err != nil {
		t.Fatal(err)
	}
	reg, keys := gatewaytest.Tenants(t, &tenant.Tenant{ID: "acme", MaxConcurrentCalls: 10}, &tenant.Tenant{ID: "tiny", MaxConcurrentCalls: 1})
	h := NewHandler(o, mgr, reg, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		mgr.Drain(ctx)
		h.Close(ctx)
		srv.Close()
	})
	return &fixture{url: "ws" + strings.TrimPrefix(srv.URL, "http"), keys: keys, mgr: mgr, rt: b.Realtime, fc: b.Fullcall}
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

// closeOf reads until the server closes and returns the close frame and
// the messages before it.
func closeOf(t *testing.T, ws *websocket.Conn) (*websocket.CloseError, []map[string]any) {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	var msgs []map[string]any
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return ce, msgs
			}
			t.Fatalf("read: %v; want a close frame", err)
		}
		var m map[string]any
		json.Unmarshal(data, &m)
		msgs = append(msgs, m)
	}
}

func startMsg(callID string) map[string]any {
	return map[string]any{"type": "start", "call_id": callID, "agent_id": "a1", "codec": "pcmu", "sample_rate": 8000, "channels": []string{"caller", "agent"}}
}

func TestRefusedBeforeTheUpgrade(t *testing.T) {
	f := start(t, Options{})
	for _, c := range []struct {
		name   string
		header http.Header
	}{
		{"no key", nil},
		{"unknown key", http.Header{"Authorization": {"Bearer clk_nope"}}},
		{"key in the wrong header", http.Header{"X-Token": {f.keys["acme"]}}},
	} {
		_, resp, err := websocket.DefaultDialer.Dial(f.url, c.header)
		if err == nil {
			t.Errorf("%s: upgraded", c.name)
			continue
		}
		var body struct{ Error struct{ Code string } }
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || body.Error.Code != "unauthenticated" {
			t.Errorf("%s: %d %q; want 401 unauthenticated", c.name, resp.StatusCode, body.Error.Code)
		}
	}
	// X-API-Key works as well as the bearer token.
	ws, _, err := websocket.DefaultDialer.Dial(f.url, http.Header{"X-API-Key": {f.keys["acme"]}})
	if err != nil {
		t.Fatalf("X-API-Key refused: %v", err)
	}
	ws.Close()
}

func TestBadInputGetsASpecificCloseCode(t *testing.T) {
	f := start(t, Options{Conn: wsconn.Options{ReadLimit: 4096}})
	text := func(v any) []byte {
		if s, ok := v.(string); ok {
			return []byte(s)
		}
		b, _ := json.Marshal(v)
		return b
	}
	withField := func(k string, v any) map[string]any {
		m := startMsg("c-" + k)
		m[k] = v
		return m
	}
	type msg struct {
		binary bool
		data   []byte
	}
	T := func(v any) msg { return msg{data: text(v)} }
	B := func(b []byte) msg { return msg{binary: true, data: b} }
	for _, c := range []struct {
		name   string
		msgs   []msg
		code   int
		reason string
	}{
		{"malformed JSON", []msg{T(`{"type":"start",`)}, CloseBadMessage, "malformed JSON"},
		{"no type", []msg{T(`{"call_id":"x"}`)}, CloseBadMessage, `without "type"`},
		{"unknown type", []msg{T(`{"type":"hello"}`)}, CloseBadMessage, `unknown message type "hello"`},
		{"start without call id", []msg{T(withField("call_id", ""))}, CloseBadMessage, "call_id is required"},
		{"unsupported codec", []msg{T(withField("codec", "opus"))}, CloseUnsupportedMedia, `unsupported codec "opus"`},
		{"unsupported sample rate", []msg{T(withField("sample_rate", 44100))}, CloseUnsupportedMedia, "unsupported sample_rate 44100"},
		{"three channels", []msg{T(withField("channels", []string{"caller", "agent", "agent"}))}, CloseUnsupportedMedia, "3 channels"},
		{"unknown role", []msg{T(withField("channels", []string{"caller", "boss"}))}, CloseBadMessage, `unknown channel role "boss"`},
		{"same role twice", []msg{T(withField("channels", []string{"agent", "agent"}))}, CloseBadMessage, "distinct"},
		{"label with a space", []msg{T(withField("labels", map[string]string{"queue": "VIP Support"}))}, CloseBadMessage, `labels["queue"] has byte 0x20`},
		{"empty label key", []msg{T(withField("labels", map[string]string{"": "x"}))}, CloseBadMessage, "labels key is required"},
		{"audio before start", []msg{B(make([]byte, 320))}, CloseOutOfOrder, "audio before start"},
		{"stop before start", []msg{T(`{"type":"stop"}`)}, CloseOutOfOrder, "stop before start"},
		{"start twice", []msg{T(startMsg("c-twice")), T(startMsg("c-twice"))}, CloseOutOfOrder, "start sent twice"},
		{"partial sample frame", []msg{T(startMsg("c-odd")), B(make([]byte, 321))}, CloseBadMessage, "not a whole number of 2-byte sample frames"},
		{"oversize message", []msg{T(startMsg("c-big")), B(make([]byte, 5000))}, websocket.CloseMessageTooBig, "exceeds 4096 bytes"},
		{"bad gap", []msg{T(startMsg("c-gap")), T(`{"type":"gap","samples":0}`)}, CloseBadMessage, "gap: want samples"},
		{"gap over an hour", []msg{T(startMsg("c-gap-hour")), T(`{"type":"gap","samples":57600001,"reason":"paused"}`)}, CloseBadMessage, "gap: want samples"},
		{"gap a minute ahead of the clock", []msg{T(startMsg("c-gap-ahead")), T(`{"type":"gap","samples":480000,"reason":"paused"}`)}, CloseTooFast, "ahead of the clock"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ws := f.dial(t, f.keys["acme"])
			for _, m := range c.msgs {
				typ := websocket.TextMessage
				if m.binary {
					typ = websocket.BinaryMessage
				}
				if err := ws.WriteMessage(typ, m.data); err != nil {
					t.Fatal(err)
				}
			}
			ce, _ := closeOf(t, ws)
			if ce.Code != c.code || !strings.Contains(ce.Text, c.reason) {
				t.Errorf("closed with %d %q; want %d containing %q", ce.Code, ce.Text, c.code, c.reason)
			}
		})
	}
}

func TestQuotaAndDuplicateCalls(t *testing.T) {
	f := start(t, Options{})
	first := f.dial(t, f.keys["tiny"])
	first.WriteJSON(startMsg("live"))
	var started map[string]any
	if err := first.ReadJSON(&started); err != nil || started["type"] != "started" {
		t.Fatalf("first call: %v %v", started, err)
	}
	// The tenant's limit is one live call: the next is refused, before the
	// upgrade and, if it raced past, at start.
	_, resp, err := websocket.DefaultDialer.Dial(f.url, http.Header{"Authorization": {"Bearer " + f.keys["tiny"]}})
	if err == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("second connection over quota: %v; want 429 with Retry-After", resp)
	}
	// Another tenant with the same call id is a different call; the same
	// tenant with a live call id is refused.
	dup := f.dial(t, f.keys["acme"])
	dup.WriteJSON(startMsg("live"))
	if err := dup.ReadJSON(&started); err != nil || started["type"] != "started" {
		t.Fatalf("acme's call with the same id: %v %v", started, err)
	}
	again := f.dial(t, f.keys["acme"])
	again.WriteJSON(startMsg("live"))
	if ce, _ := closeOf(t, again); ce.Code != CloseCallLive {
		t.Errorf("duplicate live call id: %d %q; want %d", ce.Code, ce.Text, CloseCallLive)
	}
	first.WriteJSON(map[string]string{"type": "stop"})
	if ce, msgs := closeOf(t, first); ce.Code != websocket.CloseNormalClosure || msgs[len(msgs)-1]["type"] != "stopped" {
		t.Errorf("stop: %v, last message %v", ce, msgs[len(msgs)-1])
	}
	dup.WriteJSON(map[string]string{"type": "stop"})
	closeOf(t, dup)
}

func TestIdleConnectionsAreClosed(t *testing.T) {
	f := start(t, Options{IdleTimeout: 100 * time.Millisecond, Conn: wsconn.Options{PingInterval: 20 * time.Millisecond}})
	// No start at all.
	ws := f.dial(t, f.keys["acme"])
	if ce, _ := closeOf(t, ws); ce.Code != CloseIdle || !strings.Contains(ce.Text, "no start") {
		t.Errorf("no start: %d %q; want %d", ce.Code, ce.Text, CloseIdle)
	}
	// A call that stops sending audio ends, and its report is stored.
	ws = f.dial(t, f.keys["acme"])
	ws.WriteJSON(startMsg("quiet"))
	ws.WriteMessage(websocket.BinaryMessage, make([]byte, 1600))
	if ce, _ := closeOf(t, ws); ce.Code != CloseIdle || !strings.Contains(ce.Text, "no audio") {
		t.Errorf("no audio: %d %q; want %d", ce.Code, ce.Text, CloseIdle)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	f.mgr.Drain(ctx) // every call has ended once this returns
	if r := f.fc.Report("quiet"); r == nil || r.Chunks != 1 {
		t.Errorf("report of the idle call: %v", r)
	}
}

func TestCallFlowsToBothBackends(t *testing.T) {
	f := start(t, Options{})
	var rtBytes atomic.Int64
	f.rt.Configure(func() {
		f.rt.OnChunk = func(_ string, ch *callv1.AudioChunk) error { rtBytes.Add(int64(len(ch.Data))); return nil }
	})
	ws := f.dial(t, f.keys["acme"])
	ws.WriteJSON(startMsg("flow"))
	audio := bytes.Repeat([]byte{0xff, 0x7f}, 8000*5/2) // 2.5 s of stereo μ-law silence
	for i := 0; i < len(audio); i += 320 {
		ws.WriteMessage(websocket.BinaryMessage, audio[i:i+320])
	}
	ws.WriteJSON(map[string]string{"type": "stop"})
	ce, msgs := closeOf(t, ws)
	if ce.Code != websocket.CloseNormalClosure {
		t.Errorf("close %d %q; want 1000", ce.Code, ce.Text)
	}
	var types []string
	for _, m := range msgs {
		types = append(types, m["type"].(string))
	}
	if got := strings.Join(types, ","); got != "started,score,score,score,stopped" {
		t.Errorf("messages %s; want started, three scores, stopped", got)
	}
	score := msgs[1]
	if score["model"].(map[string]any)["name"] != gatewaytest.Model.Name || score["caller_pressure"] != 50.0 || score["agent_stress"] != nil {
		t.Errorf("score message %v", score)
	}
	rep := msgs[len(msgs)-1]["report"].(map[string]any)
	if rep["duration_s"] != 2.5 || rep["url"] != "/api/v1/reports/flow" {
		t.Errorf("stopped report %v", rep)
	}
	seqs := f.fc.Seqs("flow")
	// Chunks queued behind a busy sender go out merged: the audio counts.
	if r := f.fc.Report("flow"); r == nil || r.AudioBytes != 25*1600 || uint64(len(seqs)) != r.Chunks {
		t.Fatalf("fullcall received chunks %v, report %v; want 2.5 s of audio (40,000 bytes) in them", seqs, r)
	}
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Fatalf("fullcall chunk %d has seq %d", i, s)
		}
	}
	// Sent far faster than real time, realtime may lose the oldest audio
	// to its bounded queue (2 s by default); fullcall never does.
	if n := rtBytes.Load(); n < 20*1600 || n > 25*1600 {
		t.Errorf("realtime received %d bytes; want 2 to 2.5 s of audio (32,000 to 40,000)", n)
	}
}

// RFC 6455 §8.1: a text frame that is not UTF-8 fails the connection with
// 1007; the call ends with its report, as for any bad input.
func TestInvalidUTF8ClosesWith1007(t *testing.T) {
	f := start(t, Options{})
	ws := f.dial(t, f.keys["acme"])
	ws.WriteJSON(startMsg("utf8"))
	ws.WriteMessage(websocket.BinaryMessage, make([]byte, 1600))
	ws.WriteMessage(websocket.TextMessage, []byte("{\"type\":\"gap\",\"reason\":\"\xff\xfe\"}"))
	if ce, _ := closeOf(t, ws); ce.Code != websocket.CloseInvalidFramePayloadData {
		t.Errorf("closed with %d %q; want 1007", ce.Code, ce.Text)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	f.mgr.Drain(ctx)
	if r := f.fc.Report("utf8"); r == nil || r.EndReason != fullcallv1.EndReason_END_REASON_ERROR || r.AudioBytes != 1600 {
		t.Errorf("report: %v; want END_REASON_ERROR with the 1600 bytes sent", r)
	}
}
