package asterisk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

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
	audio map[string][]byte
	first map[string]chan struct{}
}

func start(t *testing.T, o Options, pacing ...session.Pacing) *fixture {
	t.Helper()
	b := gatewaytest.StartBackends(t)
	rt, fc, rp, fp := b.Realtime, b.Fullcall, b.RealtimePool, b.FullcallPool
	mt := gatewaytest.NewMetrics(t)
	// Legs here send faster than real time; the gateway's pacing has tests
	// of its own.
	mgr, err := session.NewManager(session.Options{Realtime: rp, Fullcall: fp, MeterProvider: mt.Provider,
		Pacing: append(pacing, session.Pacing{Policy: session.PaceOff})[0]})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{keys: map[string]string{"acme": tenant.NewKey(), "tiny": tenant.NewKey(), "agent": tenant.NewKey()}, mgr: mgr, rt: rt, fc: fc, metrics: mt,
		audio: map[string][]byte{}, first: map[string]chan struct{}{}}
	reg, err := tenant.NewRegistry([]*tenant.Tenant{
		{ID: "acme", MaxConcurrentCalls: 10, APIKeys: []tenant.APIKey{{ID: "a", SHA256: tenant.HashKey(f.keys["acme"])},
			{ID: "agent-7", SHA256: tenant.HashKey(f.keys["agent"]), Role: tenant.KeyRoleAgent, AgentID: "7"}}},
		{ID: "tiny", MaxConcurrentCalls: 1, APIKeys: []tenant.APIKey{{ID: "t", SHA256: tenant.HashKey(f.keys["tiny"])}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	fc.Configure(func() {
		fc.OnChunk = func(callID string, c *callv1.AudioChunk) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.audio[callID] = append(f.audio[callID], c.Data...)
			if ch := f.chunked(callID); !isClosed(ch) {
				close(ch)
			}
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
	f.url = "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws/asterisk"
	return f
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func (f *fixture) chunked(callID string) chan struct{} {
	ch, ok := f.first[callID]
	if !ok {
		ch = make(chan struct{})
		f.first[callID] = ch
	}
	return ch
}

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

// ended waits until every call has ended (the gateway then drains).
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

func (f *fixture) client() *Client { return &Client{URL: f.url, APIKey: f.keys["acme"]} }

func TestTwoLegsJoinOneStereoCall(t *testing.T) {
	for _, jsonForm := range []bool{false, true} {
		t.Run(fmt.Sprintf("json=%v", jsonForm), func(t *testing.T) {
			// Legs are aligned by when each started and then by their
			// length: they must arrive at the pace Asterisk sends, as
			// here; the lag allowed covers a loaded test machine.
			f := start(t, Options{JoinLag: time.Second})
			cl := f.client()
			cl.JSON = jsonForm
			ctx := context.Background()
			// The agent's leg connects first, the caller's right after;
			// frames of each leg carry its own byte.
			agent, err := cl.DialLeg(ctx, "call-1", RoleAgent, 0, "agent-3")
			if err != nil {
				t.Fatal(err)
			}
			caller, err := cl.DialLeg(ctx, "call-1", RoleCaller, 0, "")
			if err != nil {
				t.Fatal(err)
			}
			agent.MediaStart(jsonForm, "1.1", "ulaw")
			caller.MediaStart(jsonForm, "1.2", "ulaw")
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for range 50 {
				<-tick.C
				caller.Send(bytes.Repeat([]byte{'c'}, 160))
				agent.Send(bytes.Repeat([]byte{'a'}, 160))
			}
			f.live(t, "call-1")
			// The legs hang up at different times; the call ends once,
			// when the last one does.
			if err := caller.Hangup(5 * time.Second); err != nil {
				t.Fatal(err)
			}
			if f.mgr.Live() != 1 {
				t.Errorf("%d live calls after one leg hung up; want 1", f.mgr.Live())
			}
			agent.Send(bytes.Repeat([]byte{'a'}, 160))
			if err := agent.Hangup(5 * time.Second); err != nil {
				t.Fatal(err)
			}
			f.ended(t)
			rep := f.fc.Report("call-1")
			if rep == nil || fmt.Sprint(rep.Format.Channels) != "[CHANNEL_ROLE_CALLER CHANNEL_ROLE_AGENT]" || rep.AgentId != "agent-3" ||
				rep.EndReason != fullcallv1.EndReason_END_REASON_HANGUP {
				t.Fatalf("report %+v", rep)
			}
			// Caller first in every frame; the caller's leg started a
			// moment after the agent's, so its audio sits a little later
			// on the timeline, and its end is silence.
			got := f.received("call-1")
			if len(got)%2 != 0 || len(got) < 2*8000 || len(got) > 2*8000+2*800 {
				t.Fatalf("fullcall received %d bytes; want about 1 s of stereo", len(got))
			}
			for i := 0; i < len(got); i += 2 {
				if (got[i] != 'c' && got[i] != 0xff) || (got[i+1] != 'a' && got[i+1] != 0xff) {
					t.Fatalf("frame %d is %q; want caller then agent", i/2, got[i:i+2])
				}
			}
			if bytes.Count(got, []byte("ca")) < 7900 {
				t.Errorf("only %d frames with both legs' audio", bytes.Count(got, []byte("ca")))
			}
		})
	}
}

func TestALegAloneIsAMonoCall(t *testing.T) {
	f := start(t, Options{JoinWait: 100 * time.Millisecond})
	cl := f.client()
	// legs=1 starts at once; a second leg that never comes ends the
	// join wait and the call goes on with one leg.
	rec := &audio.Recording{Format: audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 1}, Data: bytes.Repeat([]byte{'c'}, 8000)}
	if _, err := cl.Stream(context.Background(), rec, StreamOptions{CallID: "mono-1"}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	agent, err := cl.DialLeg(ctx, "mono-2", RoleAgent, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	agent.MediaStart(false, "2.1", "ulaw")
	start := time.Now()
	for time.Since(start) < 150*time.Millisecond {
		agent.Send(bytes.Repeat([]byte{'a'}, 160)) // as fast as it goes: past the join wait
	}
	f.live(t, "mono-2")
	late, err := cl.DialLeg(ctx, "mono-2", RoleCaller, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	late.MediaStart(false, "2.2", "ulaw")
	if code, text, _ := late.WaitClose(5 * time.Second); code != edge.CloseCallLive || !strings.Contains(text, "started without its caller leg") {
		t.Errorf("late leg: %d %q; want %d", code, text, edge.CloseCallLive)
	}
	agent.Hangup(5 * time.Second)
	f.ended(t)
	for id, want := range map[string]string{"mono-1": "[CHANNEL_ROLE_CALLER]", "mono-2": "[CHANNEL_ROLE_AGENT]"} {
		if rep := f.fc.Report(id); rep == nil || fmt.Sprint(rep.Format.Channels) != want {
			t.Errorf("%s: report %+v; want channels %s", id, rep, want)
		}
	}
	if got := f.received("mono-1"); !bytes.Equal(got, rec.Data) {
		t.Errorf("mono call audio: %d bytes; want the leg's 8000", len(got))
	}
}

func TestALegThatEndsFirstWaitsForTheOther(t *testing.T) {
	f := start(t, Options{JoinWait: 2 * time.Second})
	cl := f.client()
	ctx := context.Background()
	// The caller's leg streams and hangs up before the agent's leg
	// connects (a fast sender, or a leg delayed in the network): the
	// call waits for the agent's leg and both are one call.
	caller, err := cl.DialLeg(ctx, "early", RoleCaller, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	caller.MediaStart(false, "1", "ulaw")
	caller.Send(bytes.Repeat([]byte{'c'}, 800))
	if err := caller.Hangup(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	agent, err := cl.DialLeg(ctx, "early", RoleAgent, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	agent.MediaStart(false, "2", "ulaw")
	agent.Send(bytes.Repeat([]byte{'a'}, 800))
	agent.Hangup(5 * time.Second)
	f.live(t, "early")
	f.ended(t)
	if rep := f.fc.Report("early"); rep == nil || fmt.Sprint(rep.Format.Channels) != "[CHANNEL_ROLE_CALLER CHANNEL_ROLE_AGENT]" {
		t.Errorf("report %+v; want one stereo call", rep)
	}
	if got := f.received("early"); bytes.Count(got, []byte{'c'}) != 800 || bytes.Count(got, []byte{'a'}) != 800 {
		t.Errorf("joined audio has %d caller and %d agent samples; want 800 each", bytes.Count(got, []byte{'c'}), bytes.Count(got, []byte{'a'}))
	}
}

func TestALegDroppedWithoutACloseStillEndsTheCall(t *testing.T) {
	f := start(t, Options{})
	l, err := f.client().DialLeg(context.Background(), "dropped", RoleCaller, 1, "")
	if err != nil {
		t.Fatal(err)
	}
	l.MediaStart(false, "3.1", "slin")
	for range 10 {
		l.Send(make([]byte, 320))
	}
	f.live(t, "dropped")
	l.Kill()
	f.ended(t)
	if rep := f.fc.Report("dropped"); rep == nil || rep.EndReason != fullcallv1.EndReason_END_REASON_DISCONNECTED || rep.Format.Codec != callv1.Codec_CODEC_L16 || rep.DurationS != 0.2 {
		t.Errorf("report %+v; want 0.2 s of 16-bit PCM, disconnected", rep)
	}
}

func TestLegsAreRefusedBeforeTheUpgrade(t *testing.T) {
	f := start(t, Options{})
	for _, c := range []struct {
		query  string
		header http.Header
		status int
	}{
		{"?call_id=x&role=caller", nil, 401},
		{"?call_id=x&role=caller", http.Header{"Authorization": {"Basic YXN0ZXJpc2s6Y2xrX25vcGU="}}, 401},
		{"?role=caller", http.Header{"X-Api-Key": {f.keys["acme"]}}, 400},
		{"?call_id=x&role=boss", http.Header{"X-Api-Key": {f.keys["acme"]}}, 400},
		{"?call_id=x&role=caller&legs=3", http.Header{"X-Api-Key": {f.keys["acme"]}}, 400},
		{"?call_id=" + strings.Repeat("x", 129) + "&role=caller", http.Header{"X-Api-Key": {f.keys["acme"]}}, 400},
		{"?call_id=x&role=caller&label.queue=VIP%20Support", http.Header{"X-Api-Key": {f.keys["acme"]}}, 400},
	} {
		_, resp, err := websocket.DefaultDialer.Dial(f.url+c.query, c.header)
		if err == nil || resp.StatusCode != c.status {
			t.Errorf("%s %v: %v; want %d", c.query, c.header, resp, c.status)
		}
	}
	// Over quota for a new call, but a call's second leg takes no slot.
	cl := &Client{URL: f.url, APIKey: f.keys["tiny"]}
	first, err := cl.DialLeg(context.Background(), "t1", RoleCaller, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	first.MediaStart(false, "1", "ulaw")
	second, err := cl.DialLeg(context.Background(), "t1", RoleAgent, 0, "")
	if err != nil {
		t.Fatalf("second leg of a live call refused: %v", err)
	}
	second.MediaStart(false, "2", "ulaw")
	// Two chunks (400 ms) of each leg: with one (200 ms) the call
	// sometimes reached fullcall with nothing (seen under -race: the legs
	// join a moment apart and their audio need not line up on a chunk).
	first.Send(make([]byte, 3200))
	second.Send(make([]byte, 3200))
	f.live(t, "t1")
	_, err = cl.DialLeg(context.Background(), "t2", RoleCaller, 0, "")
	var de *DialError
	if !errors.As(err, &de) || de.Status != http.StatusTooManyRequests {
		t.Errorf("a second call over quota: %v; want 429", err)
	}
	first.Hangup(5 * time.Second)
	second.Hangup(5 * time.Second)
}

func TestBadInputClosesTheLeg(t *testing.T) {
	f := start(t, Options{Conn: wsconn.Options{ReadLimit: 4096}})
	type step struct {
		text   string
		binary []byte
	}
	T := func(s string) step { return step{text: s} }
	B := func(n int) step { return step{binary: make([]byte, n)} }
	ms := "MEDIA_START connection_id:c channel:WebSocket/c/0x1 channel_id:1.1 format:ulaw optimal_frame_size:160 ptime:20"
	for _, c := range []struct {
		name   string
		steps  []step
		code   int
		reason string
	}{
		{"media before MEDIA_START", []step{B(160)}, edge.CloseOutOfOrder, "media before MEDIA_START"},
		{"MEDIA_START twice", []step{T(ms), T(ms)}, edge.CloseOutOfOrder, "MEDIA_START sent twice"},
		{"malformed JSON", []step{T(`{"event":"MEDIA_START",`)}, edge.CloseBadMessage, "malformed JSON"},
		{"unknown event", []step{T(ms), T("HELLO world:1")}, edge.CloseBadMessage, `unknown event "HELLO"`},
		{"not an event", []step{T("hello")}, edge.CloseBadMessage, `"hello" is not an event name`},
		{"bad plain-text field", []step{T("MEDIA_START format")}, edge.CloseBadMessage, `field "format" is not key:value`},
		{"unsupported format", []step{T(strings.Replace(ms, "ulaw", "opus", 1))}, edge.CloseUnsupportedMedia, `unsupported format "opus"`},
		{"no format", []step{T("MEDIA_START connection_id:c")}, edge.CloseUnsupportedMedia, "names no format"},
		{"odd 16-bit frame", []step{T(strings.Replace(ms, "ulaw", "slin", 1)), B(321)}, edge.CloseBadMessage, "321 bytes is not a whole number of 2-byte samples"},
	} {
		t.Run(c.name, func(t *testing.T) {
			counted := fmt.Sprintf("close_%d", c.code)
			before := f.counted(t, counted)
			l, err := f.client().DialLeg(context.Background(), "bad-"+strings.ReplaceAll(c.name, " ", "-"), RoleCaller, 1, "")
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range c.steps {
				if s.binary != nil {
					l.Send(s.binary)
				} else {
					l.Text(s.text)
				}
			}
			code, text, err := l.WaitClose(5 * time.Second)
			if err != nil || code != c.code || !strings.Contains(text, c.reason) {
				t.Errorf("closed with %d %q (%v); want %d containing %q", code, text, err, c.code, c.reason)
			}
			if f.counted(t, counted) != before+1 {
				t.Errorf("%s not counted", counted)
			}
		})
	}
	// Two caller legs of one call: whichever joins second is refused.
	cl := f.client()
	var legs []*Leg
	for i := range 2 {
		l, err := cl.DialLeg(context.Background(), "mixed", RoleCaller, 0, "")
		if err != nil {
			t.Fatal(err)
		}
		l.MediaStart(false, fmt.Sprint(i), "ulaw")
		legs = append(legs, l)
	}
	closed := make(chan string, 2)
	for _, l := range legs {
		go func() {
			code, text, _ := l.WaitClose(10 * time.Second)
			closed <- fmt.Sprint(code, " ", text)
		}()
	}
	if got := <-closed; !strings.HasPrefix(got, fmt.Sprint(edge.CloseCallLive)) || !strings.Contains(got, "already has a caller leg") {
		t.Errorf("second caller leg: %s; want %d", got, edge.CloseCallLive)
	}
	// A leg in another format than the call's first.
	b, err := cl.DialLeg(context.Background(), "mixed", RoleAgent, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	b.MediaStart(false, "2", "alaw")
	if code, text, err := b.WaitClose(5 * time.Second); code != edge.CloseUnsupportedMedia || !strings.Contains(text, "first leg is pcmu") {
		t.Errorf("leg in another format: %d %q %v", code, text, err)
	}
	for _, l := range legs {
		l.Kill()
	}
	<-closed
}

func TestOversizeFramesCloseWith1009(t *testing.T) {
	f := start(t, Options{Conn: wsconn.Options{ReadLimit: 4096}})
	l, err := f.client().DialLeg(context.Background(), "big", RoleCaller, 1, "")
	if err != nil {
		t.Fatal(err)
	}
	l.MediaStart(false, "1.1", "ulaw")
	l.Send(make([]byte, 5000))
	if code, text, _ := l.WaitClose(5 * time.Second); code != websocket.CloseMessageTooBig || !strings.Contains(text, "exceeds 4096 bytes") {
		t.Errorf("closed with %d %q; want 1009", code, text)
	}
	f.ended(t) // the call ends after the refusal is counted
	if f.counted(t, "close_1009") != 1 {
		t.Error("close_1009 not counted")
	}
}

func TestControlMessages(t *testing.T) {
	for _, c := range []struct {
		in    string
		name  string
		field string
		value string
	}{
		{"MEDIA_START connection_id:media_connection1 channel:WebSocket/media_connection1/0x5140001a0040 channel_id:1761245643.1 format:ulaw optimal_frame_size:160 ptime:20", "MEDIA_START", "channel_id", "1761245643.1"},
		{`{"event":"MEDIA_START","connection_id":"media_connection1","channel":"WebSocket/media_connection1/0x5140001a0040","channel_id":"1761245643.1","format":"ulaw","optimal_frame_size":160,"ptime":20,"channel_variables":{"DIALEDPEERNUMBER":"media_connection1/c(ulaw)"}}`, "MEDIA_START", "optimal_frame_size", "160"},
		{"DTMF_END digit:5 channel_id:1761245643.1", "DTMF_END", "digit", "5"},
		{"ERROR channel_id:1.1 error_text:Unable to parse JSON command", "ERROR", "error_text", "Unable to parse JSON command"},
		{"MEDIA_MARK_PROCESSED mark-7", "MEDIA_MARK_PROCESSED", "correlation_id", "mark-7"},
		{"MEDIA_XOFF", "MEDIA_XOFF", "", ""},
		{`{"event":"STATUS","channel_id":"1.1","queue_length":3,"queue_full":false}`, "STATUS", "queue_length", "3"},
	} {
		e, err := ParseEvent([]byte(c.in))
		if err != nil || e.Name != c.name || (c.field != "" && e.Fields[c.field] != c.value) {
			t.Errorf("ParseEvent(%s) = %+v, %v", c.in, e, err)
		}
	}
	e, _ := ParseEvent([]byte(FormatMediaStart(true, "c", "ch", "1.1", "slin16", 640, 20)))
	if codec, rate, err := e.MediaFormat(); err != nil || codec != audio.CodecL16 || rate != 16000 || e.FrameSize() != 640 {
		t.Errorf("slin16: %v %d %v", codec, rate, err)
	}
}

func FuzzParseEvent(f *testing.F) {
	f.Add([]byte("MEDIA_START connection_id:media_connection1 channel:WebSocket/media_connection1/0x5 channel_id:1.1 format:ulaw optimal_frame_size:160 ptime:20"))
	f.Add([]byte(`{"event":"MEDIA_START","format":"slin16","optimal_frame_size":640,"channel_variables":{}}`))
	f.Add([]byte("ERROR channel_id:1 error_text:a b  c"))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := ParseEvent(data)
		if err != nil {
			return
		}
		if !knownEvents[e.Name] {
			t.Fatalf("unknown event %q accepted", e.Name)
		}
		if codec, rate, err := e.MediaFormat(); err == nil && (codec.BytesPerSample() == 0 || !audio.SupportedSampleRate(rate)) {
			t.Fatalf("format %v at %d accepted", codec, rate)
		}
		e.FrameSize()
	})
}

// TestFeedOnlyKeysAreRefused checks that an agent's key, which reads that
// agent's live feed only, cannot stream a leg, as on the native endpoint.
func TestFeedOnlyKeysAreRefused(t *testing.T) {
	f := start(t, Options{})
	_, err := (&Client{URL: f.url, APIKey: f.keys["agent"]}).DialLeg(context.Background(), "c1", RoleCaller, 1, "")
	var de *DialError
	if !errors.As(err, &de) || de.Status != http.StatusForbidden || !strings.Contains(de.Body, "live feed only") {
		t.Fatalf("a leg with an agent's key: %v; want 403", err)
	}
	if n := f.counted(t, "forbidden"); n != 1 {
		t.Errorf("%d refusals counted as forbidden; want 1", n)
	}
}

// TestTooFastIsClosedWith4420 checks that the pacing refusal closes every
// leg of the call with 4420 and a reason, as on the native endpoint.
func TestTooFastIsClosedWith4420(t *testing.T) {
	f := start(t, Options{}, session.Pacing{Policy: session.PaceRefuse, MaxLead: 100 * time.Millisecond})
	cl := &Client{URL: f.url, APIKey: f.keys["acme"]}
	var legs []*Leg
	for _, role := range []string{RoleCaller, RoleAgent} {
		l, err := cl.DialLeg(context.Background(), "fast", role, 2, "")
		if err != nil {
			t.Fatal(err)
		}
		legs = append(legs, l)
	}
	for i, l := range legs {
		l.MediaStart(false, fmt.Sprint(i), "ulaw")
	}
	for range 25 { // 0.5 s at once
		for _, l := range legs {
			l.Send(make([]byte, 160))
		}
	}
	for i, l := range legs {
		if code, reason, err := l.WaitClose(10 * time.Second); err != nil || code != edge.CloseTooFast || !strings.Contains(reason, "faster than real time") {
			t.Errorf("leg %d: close %d %q %v; want %d, too fast", i, code, reason, err, edge.CloseTooFast)
		}
	}
	if n := f.counted(t, "close_4420"); n != 1 {
		t.Errorf("%d refusals counted as close_4420; want 1", n)
	}
}

func TestInvalidUTF8ClosesWith1007(t *testing.T) {
	f := start(t, Options{})
	l, err := f.client().DialLeg(context.Background(), "u8", RoleCaller, 1, "")
	if err != nil {
		t.Fatal(err)
	}
	l.MediaStart(false, "1.1", "ulaw")
	l.Send(make([]byte, 160))
	l.Text("DTMF_END digit:\xff")
	if code, text, _ := l.WaitClose(5 * time.Second); code != websocket.CloseInvalidFramePayloadData {
		t.Errorf("closed with %d %q; want 1007", code, text)
	}
	f.ended(t)
	if f.counted(t, "close_1007") != 1 {
		t.Error("close_1007 not counted")
	}
}

// Dialplans in the field spell the call id callid and the caller customer.
func TestCallIDAndRoleAliases(t *testing.T) {
	f := start(t, Options{})
	cl := &Client{URL: f.url + "?callid=alias-1", APIKey: f.keys["acme"]}
	l, err := cl.DialLeg(context.Background(), "", "customer", 1, "")
	if err != nil {
		t.Fatal(err)
	}
	l.MediaStart(false, "1.1", "ulaw")
	l.Send(make([]byte, 160))
	l.Hangup(5 * time.Second)
	f.ended(t)
	r := f.fc.Report("alias-1")
	if r == nil || len(r.Format.GetChannels()) != 1 || r.Format.Channels[0] != callv1.ChannelRole_CHANNEL_ROLE_CALLER {
		t.Errorf("report %v; want a caller-only call alias-1", r)
	}
}

// label.KEY=VALUE query parameters are the call's labels; the legs'
// labels join, the caller's winning.
func TestQueryLabelsBecomeCallLabels(t *testing.T) {
	f := start(t, Options{})
	caller, err := (&Client{URL: f.url + "?label.queue=vip&label.skill=de", APIKey: f.keys["acme"]}).DialLeg(context.Background(), "lab", RoleCaller, 2, "")
	if err != nil {
		t.Fatal(err)
	}
	agent, err := (&Client{URL: f.url + "?label.queue=other&label.group=night", APIKey: f.keys["acme"]}).DialLeg(context.Background(), "lab", RoleAgent, 2, "ana")
	if err != nil {
		t.Fatal(err)
	}
	caller.MediaStart(false, "1", "ulaw")
	agent.MediaStart(false, "2", "ulaw")
	caller.Send(make([]byte, 3200)) // two chunks: see TestLegsAreRefusedBeforeTheUpgrade
	agent.Send(make([]byte, 3200))
	f.live(t, "lab")
	caller.Kill()
	agent.Kill()
	f.ended(t)
	rep := f.fc.Report("lab")
	if rep == nil {
		t.Fatal("no report")
	}
	if labels := rep.Labels; labels["queue"] != "vip" || labels["skill"] != "de" || labels["group"] != "night" || labels["asterisk_caller_channel_id"] != "1" {
		t.Errorf("labels %v; want queue=vip, skill=de, group=night and the channel ids", labels)
	}
}
