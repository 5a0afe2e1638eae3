package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/calmline/calmline/gateway/audiohook"
	"github.com/calmline/calmline/gateway/gatewaytest"
	"github.com/calmline/calmline/gateway/session"
	"github.com/calmline/calmline/lib/tenant"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// TestADrainEndsEveryConnectionAlike drains a gateway (as SIGTERM does)
// with, on native and on AudioHook, a live call and a connection that has
// not started one: each ends with its protocol's going away (native: close
// 1001; AudioHook: disconnect, which the client answers with close),
// each live call's report is stored as ended by the drain, and no
// connection outlives Shutdown.
func TestADrainEndsEveryConnectionAlike(t *testing.T) {
	b := gatewaytest.StartBackends(t)
	key, secret := tenant.NewKey(), []byte("drain test client secret")
	reg, err := tenant.NewRegistry([]*tenant.Tenant{{ID: "acme", APIKeys: []tenant.APIKey{{ID: "k", SHA256: tenant.HashKey(key), ClientSecret: secret}}}})
	if err != nil {
		t.Fatal(err)
	}
	o := DefaultOptions()
	o.Tenants, o.RealtimeAddr, o.FullcallAddr = reg, b.Realtime.Addr, b.Fullcall.Addr
	o.DrainTimeout = 100 * time.Millisecond // live calls do not finish: the drain ends them
	o.Session.Pacing.Policy = session.PaceOff
	// Chunks end on whole seconds, which the fake realtime scores.
	o.Session.ChunkPhase = session.DefaultChunkDuration
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(context.Background(), lis) }()
	addr := lis.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// Each live call sends a second of audio and waits for its score: the
	// gateway has it all before the drain begins.
	nativeLive := dial(t, addr, key, "native-live")
	nativeLive.WriteMessage(websocket.BinaryMessage, make([]byte, 16000))
	nativeLive.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		var m map[string]any
		if err := nativeLive.ReadJSON(&m); err != nil {
			t.Fatalf("native call's score: %v", err)
		}
		if m["type"] == "score" {
			break
		}
	}
	nativeWaiting, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws/native", http.Header{"Authorization": {"Bearer " + key}})
	if err != nil {
		t.Fatal(err)
	}
	defer nativeWaiting.Close()
	ah := &audiohook.Client{URL: "ws://" + addr + "/ws/audiohook", APIKey: key, ClientSecret: secret, OrganizationID: "d7934305-0972-4844-938e-9060eef73d05"}
	const conv = "8a0b5f4e-2b5c-4a43-9d4e-3c6f2e1d0a9b"
	scored := make(chan struct{}, 1)
	var ahDisconnect *audiohook.DisconnectParameters // written by the client's reader before Close returns
	ahLive, err := ah.Open(ctx, audiohook.OpenRequest{ConversationID: conv, OnEvent: func(e audiohook.Event) {
		switch {
		case e.Score != nil:
			select {
			case scored <- struct{}{}:
			default:
			}
		case e.Disconnect != nil:
			ahDisconnect = e.Disconnect
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := ahLive.SendAudio(make([]byte, 16000)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-scored:
	case <-ctx.Done():
		t.Fatal("no score on the AudioHook call")
	}
	ahWaiting := dialAudioHookUnopened(t, addr, key, secret, ah.OrganizationID)
	defer ahWaiting.Close()

	stopped := make(chan error, 1)
	go func() { stopped <- s.Shutdown(ctx) }()

	for name, ws := range map[string]*websocket.Conn{"native live call": nativeLive, "native without a call": nativeWaiting} {
		if code := closeCode(t, ws, nil); code != websocket.CloseGoingAway {
			t.Errorf("%s closed with %d; want 1001", name, code)
		}
	}
	select {
	case <-ahLive.Disconnected():
	case <-ctx.Done():
		t.Fatal("the AudioHook call got no disconnect")
	}
	if err := ahLive.Close(ctx, "disconnect"); err != nil {
		t.Errorf("AudioHook close after the drain's disconnect: %v", err)
	}
	if d := ahDisconnect; d == nil || d.Reason != audiohook.DisconnectError || !strings.Contains(d.Info, "draining") {
		t.Errorf("AudioHook call's disconnect %+v; want reason error, draining", d)
	}
	// The session that never opened gets the same disconnect and, when
	// its client closes as the protocol asks, closed.
	var disconnect *audiohook.DisconnectParameters
	var types []string
	closeCode(t, ahWaiting, func(data []byte) {
		var m struct {
			Type       string
			Seq        uint64
			Parameters audiohook.DisconnectParameters
		}
		json.Unmarshal(data, &m)
		types = append(types, m.Type)
		if m.Type == audiohook.TypeDisconnect {
			disconnect = &m.Parameters
			ahWaiting.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"version":"2","id":%q,"type":"close","seq":1,"serverseq":%d,"position":"PT0S","parameters":{"reason":"disconnect"}}`, ahSession, m.Seq))
		}
	})
	if disconnect == nil || disconnect.Reason != audiohook.DisconnectError || !strings.Contains(disconnect.Info, "draining") || strings.Join(types, ",") != "disconnect,closed" {
		t.Errorf("AudioHook session without a call: %v, disconnect %+v; want the drain's disconnect, then closed", types, disconnect)
	}

	if err := <-stopped; err != nil {
		t.Errorf("Shutdown = %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve = %v", err)
	}
	if n := s.edge.Conns(); n != 0 {
		t.Errorf("%d connections outlived Shutdown", n)
	}
	for _, id := range []string{"native-live", conv} {
		if r := b.Fullcall.Report(id); r == nil || r.EndReason != fullcallv1.EndReason_END_REASON_DRAIN || r.AudioBytes != 16000 {
			t.Errorf("report of %s: %+v; want one ended by the drain with the 16000 bytes sent", id, r)
		}
	}
}

const ahSession = "0f0e0d0c-0b0a-4908-8706-050403020100"

// dialAudioHookUnopened opens a signed AudioHook connection that sends no
// open message.
func dialAudioHookUnopened(t *testing.T, addr, key string, secret []byte, org string) *websocket.Conn {
	t.Helper()
	h := http.Header{}
	h.Set(audiohook.HeaderOrganizationID, org)
	h.Set(audiohook.HeaderSessionID, ahSession)
	h.Set(audiohook.HeaderCorrelationID, "1f0e0d0c-0b0a-4908-8706-050403020100")
	h.Set(audiohook.HeaderAPIKey, key)
	audiohook.Sign(h, "/ws/audiohook", addr, key, secret, "ZHJhaW4tdGVzdC1ub25jZS0x", time.Now(), 30*time.Second)
	ws, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws/audiohook", h)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	return ws
}

// closeCode reads until the server closes and returns its close code,
// handing each message to seen when set.
func closeCode(t *testing.T, ws *websocket.Conn, seen func([]byte)) int {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("read: %v; want a close frame", err)
			}
			return ce.Code
		}
		if seen != nil {
			seen(data)
		}
	}
}
