package gateway

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/calmline/calmline/gateway/asterisk"
	"github.com/calmline/calmline/gateway/audiohook"
	"github.com/calmline/calmline/gateway/gatewaytest"
	"github.com/calmline/calmline/gateway/session"
	"github.com/calmline/calmline/lib/tenant"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// A gateway drains every protocol alike (issue 14): on SIGTERM, and on
// POST /admin/drain followed by SIGTERM, with live calls and with
// connections that have not started a call on all four protocols, every
// live call ends with its protocol's going-away signal (native, Twilio and
// Asterisk: close 1001; AudioHook: disconnect, then the close transaction),
// every call's report is stored complete, and every connection — live or
// not — is closed before the shutdown returns, none left behind.
func TestDrainEndsEveryProtocolAlike(t *testing.T) {
	for _, how := range []string{"sigterm", "admin-drain"} {
		t.Run(how, func(t *testing.T) { testDrainEveryProtocol(t, how) })
	}
}

// A live call of the drain test is one second of stereo μ-law: 50 frames
// of 20 ms.
const (
	drainFrames     = 50
	drainCallBytes  = drainFrames * 320
	drainAdminToken = "drain-test-admin-token"
)

// drainGateway is a gateway on loopback in front of fake backends, served
// until its ctx is cancelled as SIGTERM does.
type drainGateway struct {
	s      *Server
	addr   string
	key    string
	secret []byte
	fc     *gatewaytest.Fullcall
	stop   context.CancelFunc // SIGTERM
	served chan struct{}      // closed when Serve returned
	err    error              // what Serve returned

	mu     sync.Mutex
	bytes  map[string]int // audio bytes fullcall received per call
	chunks chan struct{}  // signalled at every chunk
}

func startDrainGateway(t *testing.T) *drainGateway {
	t.Helper()
	g := &drainGateway{key: tenant.NewKey(), secret: []byte("drain test client secret"), fc: gatewaytest.StartFullcall(t),
		served: make(chan struct{}), bytes: map[string]int{}, chunks: make(chan struct{}, 1)}
	rt := gatewaytest.StartRealtime(t)
	g.fc.Configure(func() {
		g.fc.OnChunk = func(callID string, c *callv1.AudioChunk) error {
			g.mu.Lock()
			g.bytes[callID] += len(c.Data)
			g.mu.Unlock()
			select {
			case g.chunks <- struct{}{}:
			default:
			}
			return nil
		}
	})
	reg, err := tenant.NewRegistry([]*tenant.Tenant{{ID: "acme", MaxConcurrentCalls: 20,
		APIKeys: []tenant.APIKey{{ID: "k", SHA256: tenant.HashKey(g.key), ClientSecret: g.secret}}}})
	if err != nil {
		t.Fatal(err)
	}
	o := DefaultOptions()
	o.Tenants, o.RealtimeAddr, o.FullcallAddr = reg, rt.Addr, g.fc.Addr
	o.AdminToken = drainAdminToken
	// Live calls go on for the drain timeout, then are ended.
	o.DrainTimeout = 500 * time.Millisecond
	o.Session.Pacing.Policy = session.PaceOff // the test sends faster than real time
	// Chunks end on whole seconds: each call's second reaches the
	// backends without waiting for the drain.
	o.Session.ChunkPhase = session.DefaultChunkDuration
	// A call's first leg waits for its second for longer than the test,
	// and a leg whose frames the gateway reads late (a slow machine) is
	// waited for rather than filled with silence: the audio the test
	// sends on two legs at once is all in the call.
	o.Asterisk.JoinWait, o.Asterisk.JoinLag = time.Minute, 10*time.Second
	if g.s, err = New(o); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g.addr = lis.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	g.stop = cancel
	go func() {
		defer close(g.served)
		g.err = g.s.Serve(ctx, lis)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-g.served:
		case <-time.After(30 * time.Second):
			t.Error("the gateway did not stop")
		}
	})
	return g
}

// received waits until fullcall has received at least n bytes of a call's
// audio.
func (g *drainGateway) received(t *testing.T, callID string, n int) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		g.mu.Lock()
		got := g.bytes[callID]
		g.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-g.chunks:
		case <-timeout:
			t.Fatalf("fullcall received %d bytes of %s; want %d before the drain", got, callID, n)
		}
	}
}

// drainPeer is one client connection: a real WebSocket client that records
// the server's close frame before it answers it, so that a close recorded
// when the gateway's shutdown returns is one the gateway has seen answered.
type drainPeer struct {
	name   string
	callID string // the call it carries; "" for a connection without one
	ws     *websocket.Conn
	// onText, when set, sees each text message, on the reader.
	onText func(p *drainPeer, data []byte)

	closed chan struct{} // the server's close frame arrived
	ended  chan struct{} // the connection ended
	mu     sync.Mutex
	code   int
	reason string
	// audiohook marks an AudioHook client; disconnect is the disconnect
	// that arrived before the close, if any.
	audiohook  bool
	disconnect *audiohook.DisconnectParameters
	serverSeq  uint64 // AudioHook: the last server message's seq
}

func newDrainPeer(name, callID string, ws *websocket.Conn) *drainPeer {
	p := &drainPeer{name: name, callID: callID, ws: ws, closed: make(chan struct{}), ended: make(chan struct{})}
	ws.SetCloseHandler(func(code int, text string) error {
		p.mu.Lock()
		p.code, p.reason = code, text
		p.mu.Unlock()
		close(p.closed)
		ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(time.Second))
		return nil
	})
	return p
}

// read starts the peer's reader.
func (p *drainPeer) read() {
	go func() {
		defer close(p.ended)
		for {
			typ, data, err := p.ws.ReadMessage()
			if err != nil {
				return
			}
			if typ == websocket.TextMessage && p.onText != nil {
				p.onText(p, data)
			}
		}
	}()
}

// closeFrame returns the close frame received, if one was.
func (p *drainPeer) closeFrame() (int, string, bool) {
	select {
	case <-p.closed:
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.code, p.reason, true
	default:
		return 0, "", false
	}
}

func (g *drainGateway) dial(t *testing.T, path string, h http.Header, subprotocols ...string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, Subprotocols: subprotocols}
	ws, resp, err := d.Dial("ws://"+g.addr+path, h)
	if err != nil {
		t.Fatalf("dial %s: %v (%v)", path, err, resp)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

// nativePeer connects on the native path; with a call id it starts a
// call and sends a second of audio.
func (g *drainGateway) nativePeer(t *testing.T, name, callID string) *drainPeer {
	ws := g.dial(t, "/ws/native", http.Header{"Authorization": {"Bearer " + g.key}})
	p := newDrainPeer(name, callID, ws)
	if callID != "" {
		ws.WriteJSON(map[string]any{"type": "start", "call_id": callID, "codec": "pcmu", "sample_rate": 8000, "channels": []string{"caller", "agent"}})
		var m map[string]any
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		if err := ws.ReadJSON(&m); err != nil || m["type"] != "started" {
			t.Fatalf("native start: %v %v", m, err)
		}
		ws.SetReadDeadline(time.Time{})
		for i := range drainFrames {
			ws.WriteMessage(websocket.BinaryMessage, drainFrame(i, 320))
		}
	}
	p.read()
	return p
}

// audiohookPeer connects on the AudioHook path, signed; with a call id (a
// conversation id, which names the call) it opens a session and sends a
// second of audio, and answers a disconnect with the close transaction,
// as Genesys Cloud does.
func (g *drainGateway) audiohookPeer(t *testing.T, name, callID string) *drainPeer {
	sessionID := drainUUID()
	h := http.Header{}
	h.Set(audiohook.HeaderOrganizationID, "d7934305-0972-4844-938e-9060eef73d05")
	h.Set(audiohook.HeaderSessionID, sessionID)
	h.Set(audiohook.HeaderCorrelationID, drainUUID())
	h.Set(audiohook.HeaderAPIKey, g.key)
	audiohook.Sign(h, "/ws/audiohook", g.addr, g.key, g.secret, drainUUID(), time.Now(), 30*time.Second)
	ws := g.dial(t, "/ws/audiohook", h)
	p := newDrainPeer(name, callID, ws)
	p.audiohook = true
	msg := func(typ string, seq, serverSeq uint64, position string, params string) []byte {
		return fmt.Appendf(nil, `{"version":"2","id":%q,"type":%q,"seq":%d,"serverseq":%d,"position":%q,"parameters":%s}`,
			sessionID, typ, seq, serverSeq, position, params)
	}
	// The client's close: after open and a second of audio, or first.
	closeSeq, closePos := uint64(2), "PT1S"
	p.onText = func(p *drainPeer, data []byte) {
		m, raw, err := audiohook.ParseServerMessage(data)
		if err != nil {
			return
		}
		p.mu.Lock()
		p.serverSeq = m.Seq
		first := m.Type == audiohook.TypeDisconnect && p.disconnect == nil
		if first {
			p.disconnect = &audiohook.DisconnectParameters{}
			json.Unmarshal(raw, p.disconnect)
		}
		seq := p.serverSeq
		p.mu.Unlock()
		if first {
			p.ws.WriteMessage(websocket.TextMessage, msg("close", closeSeq, seq, closePos, `{"reason":"disconnect"}`))
		}
	}
	if callID == "" {
		closeSeq, closePos = 1, "PT0S"
		p.read()
		return p
	}
	ws.WriteMessage(websocket.TextMessage, msg("open", 1, 0, "PT0S", `{"organizationId":"d7934305-0972-4844-938e-9060eef73d05","conversationId":"`+callID+
		`","participant":{"id":"883efee8-3d6c-4537-b500-6d7ca4b92fa0","ani":"","aniName":"","dnis":""},"media":[{"type":"audio","format":"PCMU","channels":["external","internal"],"rate":8000}]}`))
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, data, err := ws.ReadMessage()
	m, _, perr := audiohook.ParseServerMessage(data)
	if err != nil || perr != nil || m.Type != audiohook.TypeOpened {
		t.Fatalf("audiohook open: %s %v %v", data, err, perr)
	}
	ws.SetReadDeadline(time.Time{})
	p.serverSeq = m.Seq
	for i := range drainFrames {
		ws.WriteMessage(websocket.BinaryMessage, drainFrame(i, 320))
	}
	p.read()
	return p
}

// twilioPeer connects on the Twilio-style path with the key in the URL
// (a header-less sender); with a call id it starts a stream of both
// tracks and sends a second of each; without, it sends connected only and
// no start.
func (g *drainGateway) twilioPeer(t *testing.T, name, callID string) *drainPeer {
	path := "/ws/twilio"
	if callID != "" {
		path += "?api_key=" + url.QueryEscape(g.key)
	}
	ws := g.dial(t, path, nil)
	p := newDrainPeer(name, callID, ws)
	ws.WriteMessage(websocket.TextMessage, []byte(`{"event":"connected","protocol":"Call","version":"1.0.0"}`))
	if callID != "" {
		ws.WriteMessage(websocket.TextMessage, []byte(`{"event":"start","sequenceNumber":"1","start":{"callSid":"`+callID+`","tracks":["inbound","outbound"],`+
			`"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"streamSid":"MZdrain"}`))
		seq := 1
		for i := range drainFrames {
			for _, track := range []string{"inbound", "outbound"} {
				seq++
				ws.WriteMessage(websocket.TextMessage, fmt.Appendf(nil,
					`{"event":"media","sequenceNumber":"%d","streamSid":"MZdrain","media":{"track":%q,"chunk":"%d","timestamp":"%d","payload":%q}}`,
					seq, track, i+1, i*20, base64.StdEncoding.EncodeToString(drainFrame(i, 160))))
			}
		}
	}
	p.read()
	return p
}

// asteriskPeer connects one chan_websocket leg; with format it sends
// MEDIA_START, and frames of audio.
func (g *drainGateway) asteriskPeer(t *testing.T, name, callID, role string, mediaStart bool) *drainPeer {
	req := http.Request{Header: http.Header{}}
	req.SetBasicAuth("asterisk", g.key)
	ws := g.dial(t, "/ws/asterisk?call_id="+callID+"&role="+role, req.Header, asterisk.Subprotocol)
	p := newDrainPeer(name, "", ws)
	if mediaStart {
		ws.WriteMessage(websocket.TextMessage, []byte(asterisk.FormatMediaStart(false, callID+"-"+role, "WebSocket/"+callID+"-"+role+"/0x1", "1."+role, "ulaw", 160, 20)))
	}
	p.read()
	return p
}

// drainFrame is frame i of a test call: n bytes, different in every frame.
func drainFrame(i, n int) []byte {
	b := make([]byte, n)
	for k := range b {
		b[k] = byte(i*7 + k)
	}
	return b
}

func drainUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// wentAway checks that the peer's connection ended with its protocol's
// going-away: close 1001, or for AudioHook a disconnect saying the gateway
// drains, then the close transaction (1000) or, if the client did not
// answer, 1001.
func (p *drainPeer) wentAway(t *testing.T, code int, reason string) {
	t.Helper()
	if !p.audiohook {
		if code != websocket.CloseGoingAway {
			t.Errorf("closed with %d %q; want 1001 (going away)", code, reason)
		}
		return
	}
	p.mu.Lock()
	d := p.disconnect
	p.mu.Unlock()
	if d == nil {
		t.Errorf("closed with %d %q and no disconnect; want disconnect first", code, reason)
	} else if !strings.Contains(strings.ToLower(d.Info), "drain") {
		t.Errorf("disconnect %+v; want it to say the gateway drains", d)
	}
	if code != websocket.CloseNormalClosure && code != websocket.CloseGoingAway {
		t.Errorf("closed with %d %q; want 1000 after closed, or 1001", code, reason)
	}
}

func testDrainEveryProtocol(t *testing.T, how string) {
	g := startDrainGateway(t)
	// Connections that have not started a call: native without start,
	// AudioHook upgraded without open, Twilio-style without start (and
	// without a key yet), an Asterisk leg waiting for its call's other
	// leg, and an Asterisk connection that sent nothing.
	waiting := []*drainPeer{
		g.nativePeer(t, "native without start", ""),
		g.audiohookPeer(t, "audiohook without open", ""),
		g.twilioPeer(t, "twilio without start", ""),
		g.asteriskPeer(t, "asterisk leg waiting for its pair", "ast-alone", asterisk.RoleCaller, true),
		g.asteriskPeer(t, "asterisk connection that sent nothing", "ast-silent", asterisk.RoleCaller, false),
	}
	// Live calls, a second of audio each.
	native := g.nativePeer(t, "native call", "n-live")
	ahCall := drainUUID() // AudioHook calls are named by their conversation
	ah := g.audiohookPeer(t, "audiohook call", ahCall)
	tw := g.twilioPeer(t, "twilio call", "tw-live")
	astCaller := g.asteriskPeer(t, "asterisk caller leg", "ast-live", asterisk.RoleCaller, true)
	astAgent := g.asteriskPeer(t, "asterisk agent leg", "ast-live", asterisk.RoleAgent, true)
	for i := range drainFrames {
		astCaller.ws.WriteMessage(websocket.BinaryMessage, drainFrame(i, 160))
		astAgent.ws.WriteMessage(websocket.BinaryMessage, drainFrame(i+1000, 160))
	}
	astCaller.callID, astAgent.callID = "ast-live", "ast-live"
	live := []*drainPeer{native, ah, tw, astCaller, astAgent}
	// Every call's audio has reached fullcall before the drain begins.
	for _, id := range []string{"n-live", ahCall, "tw-live", "ast-live"} {
		g.received(t, id, drainCallBytes)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	switch how {
	case "sigterm":
		g.stop()
	case "admin-drain":
		req, _ := http.NewRequest("POST", "http://"+g.addr+"/admin/drain", nil)
		req.Header.Set("Authorization", "Bearer "+drainAdminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("POST /admin/drain: %d", resp.StatusCode)
		}
		// The live calls end at the drain timeout, the gateway still
		// serving; their reports are stored once no call is live.
		for _, p := range live {
			select {
			case <-p.closed:
			case <-ctx.Done():
				t.Fatalf("%s: not closed by the drain", p.name)
			}
		}
		if n := g.s.Sessions().Drain(ctx); n != 0 {
			t.Fatalf("%d calls still live after the drain", n)
		}
		for _, p := range live {
			if g.fc.Report(p.callID) == nil {
				t.Errorf("%s: no report once the drain ended its call", p.name)
			}
		}
		// Then SIGTERM.
		g.stop()
	}
	select {
	case <-g.served:
		if g.err != nil {
			t.Errorf("Serve = %v", g.err)
		}
	case <-ctx.Done():
		t.Fatal("the gateway's shutdown did not return")
	}
	// Serve has returned: the shutdown is over. What every client saw
	// then is fixed: look now, before waiting for anything.
	type seen struct {
		code   int
		reason string
		ok     bool
	}
	atShutdown := map[*drainPeer]seen{}
	for _, p := range append(append([]*drainPeer{}, live...), waiting...) {
		code, reason, ok := p.closeFrame()
		atShutdown[p] = seen{code, reason, ok}
	}

	for _, p := range live {
		t.Run(p.name, func(t *testing.T) {
			s := atShutdown[p]
			if !s.ok {
				t.Fatal("still open when the shutdown returned")
			}
			p.wentAway(t, s.code, s.reason)
			r := g.fc.Report(p.callID)
			switch {
			case r == nil:
				t.Fatal("no report stored")
			case r.EndReason != fullcallv1.EndReason_END_REASON_DRAIN:
				t.Errorf("report's end reason %v; want END_REASON_DRAIN", r.EndReason)
			case r.Incomplete:
				t.Error("report marked incomplete")
			case len(r.Format.GetChannels()) != 2:
				t.Errorf("report's channels %v; want caller and agent", r.Format.GetChannels())
			}
			// Asterisk's legs are aligned by when each started: the
			// second may begin a few samples late, padded with silence.
			if want := uint64(drainCallBytes); r.AudioBytes < want || (p.callID != "ast-live" && r.AudioBytes != want) {
				t.Errorf("report holds %d bytes of audio; want the %d sent", r.AudioBytes, want)
			}
		})
	}
	for _, p := range waiting {
		t.Run(p.name, func(t *testing.T) {
			s := atShutdown[p]
			if !s.ok {
				t.Fatal("still open when the shutdown returned")
			}
			p.wentAway(t, s.code, s.reason)
		})
	}
	t.Run("no connection left", func(t *testing.T) {
		if n := g.s.Sessions().Live(); n != 0 {
			t.Errorf("%d calls live after the shutdown", n)
		}
		if n := g.s.edge.Conns(); n != 0 {
			t.Errorf("the gateway holds %d connections after the shutdown", n)
		}
		if tenantN, total := g.s.admission.Pending("acme"); tenantN != 0 || total != 0 {
			t.Errorf("%d connections without a call still open (%d in total)", tenantN, total)
		}
		// The gateway closed every TCP connection too.
		for _, p := range append(append([]*drainPeer{}, live...), waiting...) {
			select {
			case <-p.ended:
			case <-time.After(10 * time.Second):
				t.Errorf("%s: the connection is still open", p.name)
			}
		}
	})
}
