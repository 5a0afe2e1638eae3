package gateway

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/calmline/calmline/gateway/gatewaytest"
	"github.com/calmline/calmline/lib/tenant"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func startGateway(t *testing.T, drain time.Duration) (*Server, string, string, chan error) {
	t.Helper()
	rt, fc := gatewaytest.StartRealtime(t), gatewaytest.StartFullcall(t)
	key := tenant.NewKey()
	reg, err := tenant.NewRegistry([]*tenant.Tenant{{ID: "acme", APIKeys: []tenant.APIKey{{ID: "k", SHA256: tenant.HashKey(key)}}}})
	if err != nil {
		t.Fatal(err)
	}
	o := DefaultOptions()
	o.Tenants, o.RealtimeAddr, o.FullcallAddr, o.DrainTimeout = reg, rt.Addr, fc.Addr, drain
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
	return s, lis.Addr().String(), key, served
}

func dial(t *testing.T, addr, key, callID string) *websocket.Conn {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws/native", http.Header{"Authorization": {"Bearer " + key}})
	if err != nil {
		t.Fatal(err)
	}
	ws.WriteJSON(map[string]any{"type": "start", "call_id": callID, "codec": "pcmu", "sample_rate": 8000, "channels": []string{"caller", "agent"}})
	var m map[string]any
	if err := ws.ReadJSON(&m); err != nil || m["type"] != "started" {
		t.Fatalf("start: %v %v", m, err)
	}
	return ws
}

func readyz(addr string) int {
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestDrainLetsLiveCallsFinishThenClosesWithGoingAway(t *testing.T) {
	s, addr, key, served := startGateway(t, 2*time.Second)
	if code := readyz(addr); code != 200 {
		t.Fatalf("readyz before the drain = %d", code)
	}
	finishing := dial(t, addr, key, "finishing")
	lingering := dial(t, addr, key, "lingering")
	lingering.WriteMessage(websocket.BinaryMessage, make([]byte, 1600))

	stopped := make(chan error, 1)
	go func() { stopped <- s.Shutdown(context.Background()) }()
	// Readiness fails and new calls are refused at once...
	deadline := time.Now().Add(5 * time.Second)
	for readyz(addr) != http.StatusServiceUnavailable {
		if time.Now().After(deadline) {
			t.Fatal("readyz never failed during the drain")
		}
	}
	_, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws/native", http.Header{"Authorization": {"Bearer " + key}})
	if err == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("new connection during the drain: %v; want 503", resp)
	}
	// ...while a live call may still finish normally.
	finishing.WriteMessage(websocket.BinaryMessage, make([]byte, 1600))
	finishing.WriteJSON(map[string]string{"type": "stop"})
	var last map[string]any
	for {
		var m map[string]any
		if err := finishing.ReadJSON(&m); err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.CloseNormalClosure {
				t.Errorf("finishing call closed with %v; want 1000", err)
			}
			break
		}
		last = m
	}
	if last["type"] != "stopped" {
		t.Errorf("finishing call's last message %v; want stopped", last)
	}
	// The call that does not finish is closed with 1001 after the drain
	// timeout, so that its PBX reconnects elsewhere.
	lingering.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, _, err := lingering.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway {
				t.Errorf("lingering call closed with %v; want 1001", err)
			}
			break
		}
	}
	lingering.Close()
	finishing.Close()
	if err := <-stopped; err != nil {
		t.Errorf("Shutdown = %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve = %v", err)
	}
}
