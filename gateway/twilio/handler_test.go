package twilio

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/calmline/calmline/gateway/edge"
	"github.com/calmline/calmline/gateway/gatewaytest"
	"github.com/calmline/calmline/gateway/session"
	"github.com/calmline/calmline/gateway/wsconn"
	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/tenant"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fixture struct {
	url     string
	keys    map[string]string
	mgr     *session.Manager
	rt      *gatewaytest.Realtime
	fc      *gatewaytest.Fullcall
	metrics *gatewaytest.Metrics

	mu    sync.Mutex
	audio map[string][]byte        // what fullcall received per call, in order
	first map[string]chan struct{} // closed at a call's first chunk
}

func start(t *testing.T, o Options, pacing ...session.Pacing) *fixture {
	t.Helper()
	b := gatewaytest.StartBackends(t)
	rt, fc, rp, fp := b.Realtime, b.Fullcall, b.RealtimePool, b.FullcallPool
	mt := gatewaytest.NewMetrics(t)
	so := session.Options{Realtime: rp, Fullcall: fp, MeterProvider: mt.Provider}
	if len(pacing) > 0 {
		so.Pacing = pacing[0]
	}
	mgr, err := session.NewManager(so)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{keys: map[string]string{"acme": tenant.NewKey(), "tiny": tenant.NewKey(), "care": tenant.NewKey()}, mgr: mgr, rt: rt, fc: fc, metrics: mt, audio: map[string][]byte{}, first: map[string]chan struct{}{}}
	reg, err := tenant.NewRegistry([]*tenant.Tenant{
		{ID: "acme", MaxConcurrentCalls: 10, APIKeys: []tenant.APIKey{{ID: "a", SHA256: tenant.HashKey(f.keys["acme"])},
			{ID: "care", SHA256: tenant.HashKey(f.keys["care"]), Role: tenant.KeyRoleCare}}},
		{ID: "tiny", MaxConcurrentCalls: 1, APIKeys: []tenant.APIKey{{ID: "t", SHA256: tenant.HashKey(f.keys["tiny"])}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	fc.Configure(func() {
		fc.OnChunk = func(callID string, c *callv1.AudioChunk) error {
			f.mu.Lock()
			f.audio[callID] = append(f.audio[callID], c.Data...)
			ch := f.chunked(callID)
			select {
			case <-ch:
			default:
				close(ch)
			}
			f.mu.Unlock()
			return nil
		}
	})
	h := NewHandler(o, mgr, reg, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		mgr.Drain(ctx)
		h.Close(ctx)
		srv.Close()
	})
	f.url = "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws/twilio"
	return f
}

// chunked returns the channel closed when a call's first chunk reached
// fullcall; f.mu is held.
func (f *fixture) chunked(callID string) chan struct{} {
	ch, ok := f.first[callID]
	if !ok {
		ch = make(chan struct{})
		f.first[callID] = ch
	}
	return ch
}

// live waits until a call's first chunk reached fullcall.
func (f *fixture) live(t *testing.T, callID string) {
	t.Helper()
	f.mu.Lock()
	ch := f.chunked(callID)
	f.mu.Unlock()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("call %s never reached fullcall", callID)
	}
}

func (f *fixture) received(callID string) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]byte(nil), f.audio[callID]...)
}

// ended waits until every call has ended; the gateway then refuses new
// ones (it drains).
func (f *fixture) ended(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if f.mgr.Drain(ctx) != 0 {
		t.Fatal("calls still live")
	}
}

func (f *fixture) counted(t *testing.T, reason string) int64 {
	t.Helper()
	return int64(f.metrics.Value("calmline.gateway.calls.refused", "reason", reason))
}

func (f *fixture) dial(t *testing.T, query string, h http.Header) *websocket.Conn {
	t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial(f.url+query, h)
	if err != nil {
		t.Fatalf("dial: %v %v", err, resp)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

func closeOf(t *testing.T, ws *websocket.Conn) *websocket.CloseError {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return ce
			}
			t.Fatalf("read: %v; want a close frame", err)
		}
	}
}

func b64(b byte, n int) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, n)) }

// A stream as Twilio's documentation shows it: string-typed numbers,
// both tracks, the key in a custom parameter, marks and DTMF between the
// media, and stop.
func TestATwilioStreamAsDocumented(t *testing.T) {
	f := start(t, Options{})
	ws := f.dial(t, "", nil)
	msgs := []string{
		`{"event":"connected","protocol":"Call","version":"1.0.0"}`,
		`{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC123","streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0","callSid":"CA123",
		  "tracks":["inbound","outbound"],"customParameters":{"api_key":"` + f.keys["acme"] + `","agent_id":"agent-9","label.queue":"vip","customer":"Jane Doe"},
		  "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0"}`,
	}
	seq := 2
	for i := range 50 {
		for _, tr := range []struct {
			name string
			b    byte
		}{{"inbound", 'i'}, {"outbound", 'o'}} {
			msgs = append(msgs, fmt.Sprintf(`{"event":"media","sequenceNumber":"%d","media":{"track":%q,"chunk":"%d","timestamp":"%d","payload":%q},"streamSid":"MZ18"}`,
				seq, tr.name, i+1, i*20, b64(tr.b, 160)))
			seq++
		}
		if i == 10 {
			msgs = append(msgs, fmt.Sprintf(`{"event":"mark","sequenceNumber":"%d","streamSid":"MZ18","mark":{"name":"greeting"}}`, seq))
			seq++
			msgs = append(msgs, fmt.Sprintf(`{"event":"dtmf","streamSid":"MZ18","sequenceNumber":"%d","dtmf":{"track":"inbound_track","digit":"1"}}`, seq))
			seq++
		}
	}
	msgs = append(msgs, fmt.Sprintf(`{"event":"stop","sequenceNumber":"%d","stop":{"accountSid":"AC123","callSid":"CA123"},"streamSid":"MZ18"}`, seq))
	for _, m := range msgs {
		if err := ws.WriteMessage(websocket.TextMessage, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	// The close comes once the report is stored.
	if ce := closeOf(t, ws); ce.Code != websocket.CloseNormalClosure {
		t.Errorf("close %d %q; want 1000 after stop", ce.Code, ce.Text)
	}
	rep := f.fc.Report("CA123")
	if rep == nil || rep.DurationS != 1 || rep.AgentId != "agent-9" || rep.EndReason != fullcallv1.EndReason_END_REASON_HANGUP ||
		fmt.Sprint(rep.Format.Channels) != "[CHANNEL_ROLE_CALLER CHANNEL_ROLE_AGENT]" {
		t.Fatalf("report %+v", rep)
	}
	if got := f.received("CA123"); !bytes.Equal(got, bytes.Repeat([]byte("io"), 8000)) {
		t.Errorf("fullcall received %d bytes not interleaved caller/agent", len(got))
	}
	// label.* custom parameters are the call's labels; the others (the
	// API key above all) are not.
	if l := rep.Labels; l["queue"] != "vip" || l["stream_id"] == "" || l["api_key"] != "" || l["agent_id"] != "" || l["customer"] != "" || len(l) != 3 {
		t.Errorf("labels %v; want queue=vip and the stream's own only", l)
	}
}

func TestTracksAreAlignedByTimestampNotArrival(t *testing.T) {
	f := start(t, Options{JoinLag: time.Second})
	cl := &Client{URL: f.url, APIKey: f.keys["acme"]}
	conn, err := cl.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Start("MZ1", "call-align", []string{"inbound", "outbound"}, "audio/x-mulaw", 8000, map[string]string{KeyParameter: f.keys["acme"]})
	// The outbound track arrives a quarter second late, both tracks skip
	// 100 ms (a gap, not audio), then four packets of the inbound track go
	// missing (80 ms, more than the 60 ms jitter tolerance: their place
	// becomes silence).
	for i := range 25 {
		conn.Media("MZ1", "inbound", uint64(i+1), uint64(i*20), bytes.Repeat([]byte{byte('a' + i%20)}, 160))
	}
	for i := range 25 {
		conn.Media("MZ1", "outbound", uint64(i+1), uint64(i*20), bytes.Repeat([]byte{byte('A' + i%20)}, 160))
	}
	lost := func(i int) bool { return i >= 31 && i <= 34 }
	for i := 30; i < 40; i++ {
		if !lost(i) {
			conn.Media("MZ1", "inbound", uint64(i+1), uint64(i*20), bytes.Repeat([]byte{'x'}, 160))
		}
		conn.Media("MZ1", "outbound", uint64(i+1), uint64(i*20), bytes.Repeat([]byte{'X'}, 160))
	}
	conn.Send("stop", nil)
	if code, _, _ := conn.WaitClose(10 * time.Second); code != websocket.CloseNormalClosure {
		t.Fatalf("close %d", code)
	}
	var want []byte
	for i := range 25 {
		want = append(want, bytes.Repeat([]byte{byte('a' + i%20), byte('A' + i%20)}, 160)...)
	}
	for i := 30; i < 40; i++ {
		in := byte('x')
		if lost(i) {
			in = 0xff
		}
		want = append(want, bytes.Repeat([]byte{in, 'X'}, 160)...)
	}
	if got := f.received("call-align"); !bytes.Equal(got, want) {
		t.Errorf("joined audio differs from the tracks aligned by timestamp (%d bytes, want %d)", len(got), len(want))
	}
	if rep := f.fc.Report("call-align"); rep == nil || rep.DurationS != 0.8 {
		t.Errorf("report %+v; want 0.8 s (0.5 s, a 0.1 s gap, 0.2 s)", rep)
	}
}

func TestSendersQuirksAreTolerated(t *testing.T) {
	f := start(t, Options{})
	rec := &audio.Recording{Format: audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 2}, Data: bytes.Repeat([]byte{1, 2}, 8000)}
	cl := &Client{URL: f.url, APIKey: f.keys["acme"]}
	// Numbers as JSON numbers instead of strings, and stop with an empty
	// sequence number.
	numeric := Twilio
	numeric.StringNumbers = false
	cl.Envelope = numeric
	if _, err := cl.Stream(context.Background(), rec, StreamOptions{CallID: "numbers", EmptyStopSequence: true}); err != nil {
		t.Fatalf("numeric fields, empty stop sequence: %v", err)
	}
	if rep := f.fc.Report("numbers"); rep == nil || rep.DurationS != 1 || rep.EndReason != fullcallv1.EndReason_END_REASON_HANGUP {
		t.Errorf("numbers: %+v", rep)
	}
	// A socket dropped with no stop and no close frame: the call still
	// ends with what arrived.
	cl.Envelope = Twilio
	conn, err := cl.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	conn.Start("MZ", "dropped", nil, "audio/x-mulaw", 8000, map[string]string{KeyParameter: f.keys["acme"]})
	for i := range 50 {
		conn.Media("MZ", "inbound", uint64(i+1), uint64(i*20), make([]byte, 160))
	}
	f.live(t, "dropped")
	conn.Kill()
	f.ended(t)
	if rep := f.fc.Report("dropped"); rep == nil || rep.DurationS != 1 || rep.EndReason != fullcallv1.EndReason_END_REASON_DISCONNECTED {
		t.Errorf("dropped: %+v", rep)
	}
}

func TestOtherDialectsAreConfiguration(t *testing.T) {
	f := start(t, Options{})
	pcm := make([]int16, 16000)
	for i := range pcm {
		pcm[i] = int16(i%100*50 - 2500)
	}
	rec := &audio.Recording{Format: audio.Format{Codec: audio.CodecL16, SampleRate: 8000, Channels: 2}, Data: audio.Encode(nil, pcm, audio.CodecL16)}
	for _, c := range []struct {
		env      Envelope
		tracks   []string
		header   bool
		reorder  bool
		channels string
		codec    callv1.Codec
	}{
		{Telnyx, []string{"inbound", "outbound"}, true, true, "[CHANNEL_ROLE_CALLER CHANNEL_ROLE_AGENT]", callv1.Codec_CODEC_PCMU},
		{Exotel, nil, false, false, "[CHANNEL_ROLE_CALLER]", callv1.Codec_CODEC_L16},
		{Plivo, []string{"inbound", "outbound"}, false, false, "[CHANNEL_ROLE_CALLER CHANNEL_ROLE_AGENT]", callv1.Codec_CODEC_PCMU},
	} {
		cl := &Client{URL: f.url, APIKey: f.keys["acme"], Envelope: c.env, KeyInHeader: c.header}
		url := f.url
		if c.env.Name == "telnyx" {
			// Telnyx names no tracks in its start: the URL says which.
			cl.URL = url + "?tracks=both"
		}
		callID := "call-" + c.env.Name
		tracks := c.tracks
		if tracks == nil {
			tracks = []string{"inbound"}
		}
		if _, err := cl.Stream(context.Background(), rec, StreamOptions{CallID: callID, Tracks: tracks, Reorder: c.reorder}); err != nil {
			t.Errorf("%s: %v", c.env.Name, err)
			continue
		}
		rep := f.fc.Report(callID)
		if rep == nil || rep.DurationS != 1 || fmt.Sprint(rep.Format.Channels) != c.channels || rep.Format.Codec != c.codec {
			t.Errorf("%s: report %+v; want 1 s, %s, %v", c.env.Name, rep, c.channels, c.codec)
		}
		if len(f.received(callID)) != 8000*len(tracks)*int(map[callv1.Codec]int{callv1.Codec_CODEC_PCMU: 1, callv1.Codec_CODEC_L16: 2}[c.codec]) {
			t.Errorf("%s: fullcall received %d bytes", c.env.Name, len(f.received(callID)))
		}
	}
}

func TestAuthenticationByHeaderOrStart(t *testing.T) {
	f := start(t, Options{})
	// A key in a header is checked before the upgrade.
	for _, h := range []http.Header{{"Authorization": {"Bearer clk_nope"}}, {"X-Api-Key": {"clk_nope"}}} {
		_, resp, err := websocket.DefaultDialer.Dial(f.url, h)
		if err == nil || resp.StatusCode != 401 {
			t.Errorf("unknown key in %v: %v; want 401", h, resp)
		}
	}
	basic := http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("exotel-sid:"+f.keys["acme"]))}}
	ws := f.dial(t, "?envelope=exotel", basic)
	ws.Close()
	// A key in the start's custom parameters.
	for _, c := range []struct{ params, want string }{
		{`{}`, "unauthenticated"},
		{`{"api_key":"clk_nope"}`, "unauthenticated"},
	} {
		ws := f.dial(t, "", nil)
		ws.WriteMessage(websocket.TextMessage, []byte(`{"event":"start","sequenceNumber":"1","start":{"callSid":"c","customParameters":`+c.params+`},"streamSid":"s"}`))
		if ce := closeOf(t, ws); ce.Code != edge.CloseUnauthenticated || !strings.Contains(ce.Text, c.want) {
			t.Errorf("start with %s: %d %q; want %d", c.params, ce.Code, ce.Text, edge.CloseUnauthenticated)
		}
	}
	// Over quota: by header before the upgrade, by start at start.
	cl := &Client{URL: f.url, APIKey: f.keys["tiny"]}
	first, err := cl.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	first.Start("s1", "tiny-1", nil, "audio/x-mulaw", 8000, map[string]string{KeyParameter: f.keys["tiny"]})
	for i := range 10 { // a chunk (200 ms)
		first.Media("s1", "inbound", uint64(i+1), uint64(i*20), make([]byte, 160))
	}
	f.live(t, "tiny-1")
	second, err := cl.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	second.Start("s2", "tiny-2", nil, "audio/x-mulaw", 8000, map[string]string{KeyParameter: f.keys["tiny"]})
	if code, _, _ := second.WaitClose(10 * time.Second); code != edge.CloseOverQuota {
		t.Errorf("second call over quota: %d; want %d", code, edge.CloseOverQuota)
	}
	_, resp, err := websocket.DefaultDialer.Dial(f.url, http.Header{"Authorization": {"Bearer " + f.keys["tiny"]}})
	if err == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("over quota with a header key: %v; want 429", resp)
	}
	first.Send("stop", nil)
	first.WaitClose(10 * time.Second)
	// Connections waiting for their start are bounded (two here; the
	// ones above have been authenticated or closed).
	g := start(t, Options{MaxUnauthenticated: 2})
	g.dial(t, "", nil)
	g.dial(t, "", nil)
	_, resp, err = websocket.DefaultDialer.Dial(g.url, nil)
	if err == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("third unauthenticated connection: %v; want 503", resp)
	}
}

func TestBadInputClosesWithASpecificCode(t *testing.T) {
	f := start(t, Options{Conn: wsconn.Options{ReadLimit: 8192}, MaxHole: time.Minute})
	startMsg := func(seq int, extra string) string {
		return fmt.Sprintf(`{"event":"start","sequenceNumber":"%d","start":{"callSid":"c-%d-%d","tracks":["inbound"],"customParameters":{"api_key":%q}%s,
			"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"streamSid":"s"}`, seq, seq, time.Now().UnixNano(), f.keys["acme"], extra)
	}
	media := func(seq int, track, ts, payload string) string {
		return fmt.Sprintf(`{"event":"media","sequenceNumber":"%d","media":{"track":%q,"chunk":"1","timestamp":%s,"payload":%q},"streamSid":"s"}`, seq, track, ts, payload)
	}
	good := b64(0xff, 160)
	for _, c := range []struct {
		name   string
		msgs   []string
		binary bool
		code   int
		reason string
	}{
		{"malformed JSON", []string{`{"event":"start",`}, false, edge.CloseBadMessage, "malformed JSON"},
		{"no event", []string{`{"sequenceNumber":"1"}`}, false, edge.CloseBadMessage, `without "event"`},
		{"unknown event", []string{startMsg(1, ""), `{"event":"hello","sequenceNumber":"2"}`}, false, edge.CloseBadMessage, `unknown event "hello"`},
		{"media before start", []string{media(1, "inbound", `"0"`, good)}, false, edge.CloseOutOfOrder, "media before start"},
		{"stop before start", []string{`{"event":"stop","sequenceNumber":"1"}`}, false, edge.CloseOutOfOrder, "stop before start"},
		{"start twice", []string{startMsg(1, ""), startMsg(2, "")}, false, edge.CloseOutOfOrder, "start sent twice"},
		{"sequence number repeated", []string{startMsg(1, ""), media(2, "inbound", `"0"`, good), media(2, "inbound", `"20"`, good)}, false, edge.CloseOutOfOrder, "sequence number 2 after 2"},
		{"sequence number skips", []string{startMsg(1, ""), media(3, "inbound", `"0"`, good)}, false, edge.CloseOutOfOrder, "sequence number 3 after 1"},
		{"sequence number not a number", []string{`{"event":"connected","sequenceNumber":"one"}`}, false, edge.CloseBadMessage, `"one" is not a non-negative integer`},
		{"base64 garbage", []string{startMsg(1, ""), media(2, "inbound", `"0"`, "not*base64!")}, false, edge.CloseBadMessage, "payload is not base64"},
		{"empty payload", []string{startMsg(1, ""), media(2, "inbound", `"0"`, "")}, false, edge.CloseBadMessage, "empty payload"},
		{"odd 16-bit payload", []string{strings.Replace(startMsg(1, ""), "audio/x-mulaw", "audio/x-l16", 1), media(2, "inbound", `"0"`, b64(0, 161))}, false, edge.CloseBadMessage, "161 bytes is not a whole number of 2-byte samples"},
		{"undeclared track", []string{startMsg(1, ""), media(2, "outbound", `"0"`, good)}, false, edge.CloseUnsupportedMedia, `track "outbound", which the start did not declare`},
		{"unknown track in start", []string{strings.Replace(startMsg(1, ""), `["inbound"]`, `["sideways"]`, 1)}, false, edge.CloseUnsupportedMedia, `unknown track "sideways"`},
		{"unsupported encoding", []string{strings.Replace(startMsg(1, ""), "audio/x-mulaw", "audio/opus", 1)}, false, edge.CloseUnsupportedMedia, `unsupported encoding "audio/opus"`},
		{"unsupported sample rate", []string{strings.Replace(startMsg(1, ""), `"sampleRate":8000`, `"sampleRate":44100`, 1)}, false, edge.CloseUnsupportedMedia, "unsupported sample rate 44100"},
		{"timestamp jumps far ahead", []string{startMsg(1, ""), media(2, "inbound", `"0"`, good), media(3, "inbound", `"3600000"`, good)}, false, edge.CloseBadMessage, "jumps more than 1m0s ahead"},
		{"negative timestamp", []string{startMsg(1, ""), media(2, "inbound", `-20`, good)}, false, edge.CloseBadMessage, "timestamp"},
		{"binary frame", []string{"\x00\x01"}, true, edge.CloseBadMessage, "binary frames are not part of the protocol"},
	} {
		t.Run(c.name, func(t *testing.T) {
			reason := fmt.Sprintf("close_%d", c.code)
			before := f.counted(t, reason)
			ws := f.dial(t, "", nil)
			for _, m := range c.msgs {
				typ := websocket.TextMessage
				if c.binary {
					typ = websocket.BinaryMessage
				}
				ws.WriteMessage(typ, []byte(m))
			}
			ce := closeOf(t, ws)
			if ce.Code != c.code || !strings.Contains(ce.Text, c.reason) {
				t.Errorf("closed with %d %q; want %d containing %q", ce.Code, ce.Text, c.code, c.reason)
			}
			if f.counted(t, reason) != before+1 {
				t.Errorf("%s not counted", reason)
			}
		})
	}
}

func TestOversizeMessagesCloseWith1009(t *testing.T) {
	f := start(t, Options{Conn: wsconn.Options{ReadLimit: 8192}})
	ws := f.dial(t, "", nil)
	ws.WriteMessage(websocket.TextMessage, []byte(`{"event":"start","sequenceNumber":"1","start":{"callSid":"big","customParameters":{"api_key":"`+f.keys["acme"]+`"}},"streamSid":"s"}`))
	ws.WriteMessage(websocket.TextMessage, []byte(`{"event":"media","sequenceNumber":"2","media":{"track":"inbound","timestamp":"0","payload":"`+b64(0xff, 9000)+`"}}`))
	if ce := closeOf(t, ws); ce.Code != websocket.CloseMessageTooBig || !strings.Contains(ce.Text, "exceeds 8192 bytes") {
		t.Errorf("closed with %d %q; want 1009", ce.Code, ce.Text)
	}
	f.ended(t) // the call ends after the refusal is counted
	if f.counted(t, "close_1009") != 1 {
		t.Error("close_1009 not counted")
	}
}

func TestIdleStreamsAreClosed(t *testing.T) {
	f := start(t, Options{IdleTimeout: 50 * time.Millisecond, Conn: wsconn.Options{PingInterval: 20 * time.Millisecond}})
	ws := f.dial(t, "", nil)
	if ce := closeOf(t, ws); ce.Code != edge.CloseIdle || !strings.Contains(ce.Text, "no start") {
		t.Errorf("no start: %d %q", ce.Code, ce.Text)
	}
}

func TestSequenceCheckerToleratesReorderingButNotRepeats(t *testing.T) {
	var s seqCheck
	for _, n := range []uint64{1, 3, 2, 5, 4, 300} {
		if err := s.next(n, false); err != nil {
			t.Fatalf("%d: %v", n, err)
		}
	}
	for _, n := range []uint64{300, 4, 299 - seqWindow} {
		if err := s.next(n, false); err == nil {
			t.Errorf("%d accepted after 300", n)
		}
	}
	if err := s.next(299, false); err != nil {
		t.Errorf("299 (not seen, in the window): %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(`{"event":"start","sequenceNumber":"1","start":{"callSid":"CA1","tracks":["inbound","outbound"],"customParameters":{"api_key":"k"},"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":"8000","channels":1}},"streamSid":"MZ"}`, uint8(0))
	f.Add(`{"event":"media","sequence_number":"4","media":{"track":"outbound","chunk":"2","timestamp":"5","payload":"/w=="},"stream_id":"x"}`, uint8(1))
	f.Add(`{"event":"start","sequence_number":1,"start":{"call_sid":"c","media_format":{"encoding":"base64","sample_rate":"16000","bit_rate":"128kbps"}}}`, uint8(2))
	f.Add(`{"event":"start","sequenceNumber":1,"start":{"callId":"c","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-l16","sampleRate":16000}},"extra_headers":"api_key=abc;x=y"}`, uint8(3))
	f.Add(`{"event":"stop","sequenceNumber":""}`, uint8(0))
	envs := []Envelope{Twilio, Telnyx, Exotel, Plivo}
	f.Fuzz(func(t *testing.T, data string, e uint8) {
		env := envs[int(e)%len(envs)]
		m, err := env.Parse([]byte(data))
		if err != nil {
			var bm *BadMessage
			if !errors.As(err, &bm) || bm.Code < 4000 {
				t.Fatalf("error %v is not a BadMessage with a 4xxx code", err)
			}
			return
		}
		if m.Event == "" {
			t.Fatal("message without event accepted")
		}
		if s := m.Start; s != nil && (!audio.SupportedSampleRate(s.SampleRate) || s.Codec.BytesPerSample() == 0) {
			t.Fatalf("start with an unsupported format accepted: %+v", s)
		}
		if md := m.Media; md != nil && (len(md.Payload) == 0 || len(md.Payload) > maxPayload) {
			t.Fatalf("media payload of %d bytes accepted", len(md.Payload))
		}
	})
}

// FuzzFastMediaMatchesGeneralParse checks the hot path for media messages
// against the general parser: where the hot path takes a message, both
// must read the same thing or both refuse it.
func FuzzFastMediaMatchesGeneralParse(f *testing.F) {
	f.Add(`{"event":"media","sequenceNumber":"3","media":{"track":"inbound","chunk":"1","timestamp":"5","payload":"/w=="},"streamSid":"MZ"}`, uint8(0))
	f.Add(`{"event":"media","sequence_number":4,"media":{"track":"outbound","timestamp":20,"payload":"AAE="},"stream_id":"x","extra":[1,{"a":null}]}`, uint8(1))
	f.Add(` { "media" : {"payload":"!!","track":"inbound"}, "event":"media" } `, uint8(0))
	f.Add(`{"event":"media","sequenceNumber":"","media":{"track":"in\u0062ound","payload":""}}`, uint8(3))
	envs := []Envelope{Twilio, Telnyx, Exotel, Plivo}
	f.Fuzz(func(t *testing.T, data string, e uint8) {
		env := envs[int(e)%len(envs)]
		fast, ok, ferr := env.parseMedia([]byte(data), nil)
		if !ok {
			return
		}
		gen, gerr := env.parseGeneral([]byte(data))
		if (ferr == nil) != (gerr == nil) {
			t.Fatalf("hot path error %v, general path error %v", ferr, gerr)
		}
		if ferr != nil {
			return
		}
		if !utf8.ValidString(fast.Media.Track) {
			return // encoding/json replaces invalid UTF-8; either way no track matches
		}
		if fast.Event != gen.Event || fast.Seq != gen.Seq || fast.HasSeq != gen.HasSeq || fast.Media.Track != gen.Media.Track ||
			fast.Media.Timestamp != gen.Media.Timestamp || fast.Media.HasTimestamp != gen.Media.HasTimestamp || !bytes.Equal(fast.Media.Payload, gen.Media.Payload) {
			t.Fatalf("hot path %+v %+v; general path %+v %+v", fast, fast.Media, gen, gen.Media)
		}
	})
}

// BenchmarkParseMedia parses a Twilio media message (20 ms of μ-law).
func BenchmarkParseMedia(b *testing.B) {
	msg := []byte(`{"event":"media","sequenceNumber":"42","media":{"track":"inbound","chunk":"21","timestamp":"400","payload":"` + b64(0x55, 160) + `"},"streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0"}`)
	var buf []byte
	b.ReportAllocs()
	for range b.N {
		if _, err := Twilio.parse(msg, &buf); err != nil {
			b.Fatal(err)
		}
	}
}

// TestFeedOnlyKeysAreRefused checks that a care-team key, which reads the
// live feed only, cannot stream a call, in a header (403 before the
// upgrade) or in the start's custom parameters (close 4403), as on the
// native endpoint.
func TestFeedOnlyKeysAreRefused(t *testing.T) {
	f := start(t, Options{})
	_, resp, err := websocket.DefaultDialer.Dial(f.url, http.Header{"Authorization": {"Bearer " + f.keys["care"]}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a care-team key in a header: %v %v; want 403", err, resp)
	}
	conn, err := (&Client{URL: f.url, APIKey: f.keys["care"]}).Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	conn.Send("connected", map[string]any{"protocol": "Call"})
	conn.Start("MZcare", "CAcare", []string{"inbound"}, "audio/x-mulaw", 8000, map[string]string{KeyParameter: f.keys["care"]})
	if code, reason, err := conn.WaitClose(10 * time.Second); err != nil || code != edge.CloseForbidden || !strings.Contains(reason, "live feed only") {
		t.Errorf("a care-team key in the custom parameters: close %d %q %v; want %d", code, reason, err, edge.CloseForbidden)
	}
	if n := f.counted(t, "forbidden"); n != 2 {
		t.Errorf("%d refusals counted as forbidden; want 2", n)
	}
}

// TestTooFastIsClosedWith4420 checks that the pacing refusal closes a
// stream with 4420 and a reason, as on the native endpoint.
func TestTooFastIsClosedWith4420(t *testing.T) {
	f := start(t, Options{}, session.Pacing{Policy: session.PaceRefuse, MaxLead: 100 * time.Millisecond})
	conn, err := (&Client{URL: f.url, APIKey: f.keys["acme"]}).Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	conn.Send("connected", map[string]any{"protocol": "Call"})
	conn.Start("MZfast", "CAfast", []string{"inbound"}, "audio/x-mulaw", 8000, map[string]string{KeyParameter: f.keys["acme"]})
	for i := range 25 { // 0.5 s at once
		if conn.Media("MZfast", "inbound", uint64(i+1), uint64(20*i), make([]byte, 160)) != nil {
			break
		}
	}
	if code, reason, err := conn.WaitClose(10 * time.Second); err != nil || code != edge.CloseTooFast || !strings.Contains(reason, "faster than real time") {
		t.Errorf("close %d %q %v; want %d, too fast", code, reason, err, edge.CloseTooFast)
	}
	if n := f.counted(t, "close_4420"); n != 1 {
		t.Errorf("%d refusals counted as close_4420; want 1", n)
	}
}

func TestInvalidUTF8ClosesWith1007(t *testing.T) {
	f := start(t, Options{})
	ws := f.dial(t, "", nil)
	ws.WriteMessage(websocket.TextMessage, []byte(`{"event":"start","sequenceNumber":"1","start":{"callSid":"u8","customParameters":{"api_key":"`+f.keys["acme"]+`"}},"streamSid":"s"}`))
	ws.WriteMessage(websocket.TextMessage, []byte("{\"event\":\"mark\",\"sequenceNumber\":\"2\",\"mark\":{\"name\":\"\xc3\x28\"}}"))
	if ce := closeOf(t, ws); ce.Code != websocket.CloseInvalidFramePayloadData {
		t.Errorf("closed with %d %q; want 1007", ce.Code, ce.Text)
	}
	f.ended(t)
	if f.counted(t, "close_1007") != 1 {
		t.Error("close_1007 not counted")
	}
}

// Ids follow lib/field on every protocol: a call id that is not printable
// ASCII is refused, never cleaned into another call's id.
func TestInvalidCallIDsAreRefused(t *testing.T) {
	f := start(t, Options{})
	for _, sid := range []string{"CA\u00e9", "CA 1", strings.Repeat("x", 129)} {
		ws := f.dial(t, "", nil)
		ws.WriteMessage(websocket.TextMessage, []byte(`{"event":"start","sequenceNumber":"1","start":{"callSid":"`+sid+`","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"customParameters":{"api_key":"`+f.keys["acme"]+`"}},"streamSid":"s"}`))
		if ce := closeOf(t, ws); ce.Code != edge.CloseBadMessage || !strings.Contains(ce.Text, "call_id") {
			t.Errorf("callSid %q: closed with %d %q; want 4400 naming call_id", sid, ce.Code, ce.Text)
		}
	}
}

// A stream whose media stops ends at the idle timeout (not at the next
// ping) and is stored as an idle timeout.
func TestAnIdleCallEndsOnTimeAsIdle(t *testing.T) {
	const idle = 200 * time.Millisecond
	f := start(t, Options{IdleTimeout: idle}) // pings every 10 s
	ws := f.dial(t, "", nil)
	ws.WriteMessage(websocket.TextMessage, []byte(`{"event":"start","sequenceNumber":"1","start":{"callSid":"quiet","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"customParameters":{"api_key":"`+f.keys["acme"]+`"}},"streamSid":"s"}`))
	ws.WriteMessage(websocket.TextMessage, []byte(`{"event":"media","sequenceNumber":"2","media":{"track":"inbound","timestamp":"0","payload":"`+b64(0xff, 160)+`"}}`))
	last := time.Now()
	ce := closeOf(t, ws)
	if waited := time.Since(last); ce.Code != edge.CloseIdle || waited < idle || waited > 5*time.Second {
		t.Errorf("closed with %d after %v; want %d after the %v idle timeout", ce.Code, waited, edge.CloseIdle, idle)
	}
	f.ended(t)
	if r := f.fc.Report("quiet"); r == nil || r.EndReason != fullcallv1.EndReason_END_REASON_IDLE_TIMEOUT {
		t.Errorf("report %v; want END_REASON_IDLE_TIMEOUT", r)
	}
}

// jittered returns the timestamp (ms) a sender stamping packet i of 20 ms
// with its wall clock might send: ±3 ms of jitter, and in 1 % of packets
// an outlier up to 20 ms late.
func jittered(rng *rand.Rand, i int) uint64 {
	ts := int64(i*20) + rng.Int64N(7) - 3
	if rng.IntN(100) == 0 {
		ts += 2 + rng.Int64N(19)
	}
	return uint64(max(ts, 0))
}

// Media stamped with a jittering wall clock loses nothing: every sample
// received is in the report, and no gap is made of the jitter. A real
// loss of 200 ms is still one gap of 200 ms.
func TestTimestampJitterLosesNoAudio(t *testing.T) {
	f := start(t, Options{}, session.Pacing{Policy: session.PaceOff})
	cl := &Client{URL: f.url, APIKey: f.keys["acme"]}
	conn, err := cl.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Start("MZj", "jitter", []string{"inbound", "outbound"}, "audio/x-mulaw", 8000, map[string]string{KeyParameter: f.keys["acme"]})
	rng := rand.New(rand.NewPCG(1, 2))
	const packets = 500 // 10 s a track
	seq := uint64(0)
	send := func(i int, ts uint64) {
		for _, track := range []string{"inbound", "outbound"} {
			seq++
			conn.Media("MZj", track, seq, ts, bytes.Repeat([]byte{byte(i)}, 160))
		}
	}
	for i := range packets {
		send(i, jittered(rng, i))
	}
	// 200 ms (10 packets) lost on both tracks, then 50 more packets.
	for i := packets + 10; i < packets+60; i++ {
		ts := jittered(rng, i)
		if i == packets+10 {
			ts = uint64(i * 20) // the first stamp after the loss says exactly where it resumes
		}
		send(i, ts)
	}
	conn.Send("stop", nil)
	if code, _, _ := conn.WaitClose(10 * time.Second); code != websocket.CloseNormalClosure {
		t.Fatalf("close %d", code)
	}
	rep := f.fc.Report("jitter")
	if want := uint64((packets + 50) * 160 * 2); rep == nil || rep.AudioBytes != want {
		t.Fatalf("report %+v; want every one of the %d bytes sent", rep, want)
	}
	gaps := f.fc.CallGaps("jitter")
	if len(gaps) != 1 || gaps[0].Samples != 1600 || gaps[0].StartSample != packets*160 {
		t.Fatalf("gaps %v; want one of 1600 samples (200 ms) at %d", gaps, packets*160)
	}
	// Not one sample moved either: the call's audio is the packets in
	// order, both tracks side by side.
	var want []byte
	for i := range packets + 60 {
		if i < packets || i >= packets+10 {
			want = append(want, bytes.Repeat([]byte{byte(i)}, 320)...)
		}
	}
	if got := f.received("jitter"); !bytes.Equal(got, want) {
		t.Errorf("fullcall received %d bytes that differ from the %d sent in order", len(got), len(want))
	}
	if rep.DurationS != 11.2 {
		t.Errorf("duration %v; want 11.2 s (10 s, 0.2 s lost, 1 s)", rep.DurationS)
	}
}

// Pacing still applies to jittered media: a sender far ahead of real time
// is held back (throttle), not let through.
func TestJitteredMediaIsStillPaced(t *testing.T) {
	f := start(t, Options{}, session.Pacing{Policy: session.PaceThrottle, MaxLead: 100 * time.Millisecond})
	cl := &Client{URL: f.url, APIKey: f.keys["acme"]}
	conn, err := cl.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	began := time.Now()
	conn.Start("MZp", "paced", []string{"inbound"}, "audio/x-mulaw", 8000, map[string]string{KeyParameter: f.keys["acme"]})
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 30 { // 0.6 s, sent at once
		conn.Media("MZp", "inbound", uint64(i+1), jittered(rng, i), make([]byte, 160))
	}
	conn.Send("stop", nil)
	if code, _, _ := conn.WaitClose(10 * time.Second); code != websocket.CloseNormalClosure {
		t.Fatalf("close %d", code)
	}
	if held := time.Since(began); held < 400*time.Millisecond {
		t.Errorf("0.6 s of media with a 0.1 s lead went through in %v; want it held to real time", held)
	}
	if rep := f.fc.Report("paced"); rep == nil || rep.AudioBytes != 30*160 {
		t.Errorf("report %+v; want all 4800 bytes", rep)
	}
}

// Jitter does not hide a sender far ahead of real time either: under the
// refuse policy it is closed with 4420, as without jitter.
func TestJitteredMediaTooFastIsClosedWith4420(t *testing.T) {
	f := start(t, Options{}, session.Pacing{Policy: session.PaceRefuse, MaxLead: 100 * time.Millisecond})
	conn, err := (&Client{URL: f.url, APIKey: f.keys["acme"]}).Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	conn.Start("MZjf", "jitter-fast", []string{"inbound"}, "audio/x-mulaw", 8000, map[string]string{KeyParameter: f.keys["acme"]})
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 25 { // 0.5 s at once
		if conn.Media("MZjf", "inbound", uint64(i+1), jittered(rng, i), make([]byte, 160)) != nil {
			break
		}
	}
	if code, reason, err := conn.WaitClose(10 * time.Second); err != nil || code != edge.CloseTooFast || !strings.Contains(reason, "faster than real time") {
		t.Errorf("close %d %q %v; want %d, too fast", code, reason, err, edge.CloseTooFast)
	}
	if n := f.counted(t, "close_4420"); n != 1 {
		t.Errorf("%d refusals counted as close_4420; want 1", n)
	}
}

// A stream that declares both tracks but carries only the inbound one is
// a caller-only call, not a call with a silent agent; media the silent
// track sends once the call has started is not made a channel.
func TestOnlyTracksThatCarryAudioAreChannels(t *testing.T) {
	f := start(t, Options{TrackWait: 200 * time.Millisecond}, session.Pacing{Policy: session.PaceOff})
	cl := &Client{URL: f.url, APIKey: f.keys["acme"]}
	conn, err := cl.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Start("MZi", "inbound-only", []string{"inbound", "outbound"}, "audio/x-mulaw", 8000, map[string]string{KeyParameter: f.keys["acme"]})
	for i := range 50 {
		conn.Media("MZi", "inbound", uint64(i+1), uint64(i*20), bytes.Repeat([]byte{'c'}, 160))
	}
	conn.Media("MZi", "outbound", 51, 1000, bytes.Repeat([]byte{'a'}, 160))
	conn.Send("stop", nil)
	if code, _, _ := conn.WaitClose(10 * time.Second); code != websocket.CloseNormalClosure {
		t.Fatalf("close %d", code)
	}
	rep := f.fc.Report("inbound-only")
	if rep == nil || fmt.Sprint(rep.Format.Channels) != "[CHANNEL_ROLE_CALLER]" || rep.AudioBytes != 50*160 {
		t.Fatalf("report %+v; want a caller-only call of 8000 bytes", rep)
	}
	if got := f.received("inbound-only"); !bytes.Equal(got, bytes.Repeat([]byte{'c'}, 8000)) {
		t.Errorf("fullcall received %d bytes; want the caller's 8000 alone", len(got))
	}
	// Both tracks: a stereo call, as before.
	conn2, err := cl.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	conn2.Start("MZb", "both", []string{"inbound", "outbound"}, "audio/x-mulaw", 8000, map[string]string{KeyParameter: f.keys["acme"]})
	for i := range 10 {
		conn2.Media("MZb", "inbound", uint64(2*i+1), uint64(i*20), make([]byte, 160))
		conn2.Media("MZb", "outbound", uint64(2*i+2), uint64(i*20), make([]byte, 160))
	}
	conn2.Send("stop", nil)
	conn2.WaitClose(10 * time.Second)
	if rep := f.fc.Report("both"); rep == nil || len(rep.Format.Channels) != 2 {
		t.Errorf("report %+v; want a stereo call", rep)
	}
}

// A request that is not upgraded after all (not a WebSocket handshake)
// holds no place among the connections waiting for their start.
func TestRequestsNotUpgradedHoldNoPlace(t *testing.T) {
	f := start(t, Options{MaxUnauthenticated: 1})
	for range 3 {
		resp, err := http.Get("http" + strings.TrimPrefix(f.url, "ws"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("plain GET: %d; want 400 from the upgrader", resp.StatusCode)
		}
	}
	f.dial(t, "", nil) // the one place is free
	if _, resp, err := websocket.DefaultDialer.Dial(f.url, nil); err == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("second connection waiting for its start: %v; want 503", resp)
	}
}
