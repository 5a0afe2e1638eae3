package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/calmline/calmline/gateway/gatewaytest"
	"github.com/calmline/calmline/gateway/session"
	"github.com/calmline/calmline/lib/tenant"
)

// tenantDef describes a tenant of a test's tenants file.
type tenantDef struct {
	id      string
	max     int
	scoring string
	keys    []keyDef
}

type keyDef struct {
	id, key, role, agent string
	disabled             bool
}

func tenantsYAML(ts ...tenantDef) string {
	var b strings.Builder
	b.WriteString("tenants:\n")
	for _, t := range ts {
		fmt.Fprintf(&b, "  - id: %s\n    max_concurrent_calls: %d\n", t.id, t.max)
		if t.scoring != "" {
			fmt.Fprintf(&b, "    agent_scoring: %q\n", t.scoring)
		}
		b.WriteString("    api_keys:\n")
		for _, k := range t.keys {
			fmt.Fprintf(&b, "      - {id: %s, sha256: %s, disabled: %v", k.id, tenant.HashKey(k.key), k.disabled)
			if k.role != "" {
				fmt.Fprintf(&b, ", role: %s", k.role)
			}
			if k.agent != "" {
				fmt.Fprintf(&b, ", agent_id: %s", k.agent)
			}
			b.WriteString("}\n")
		}
	}
	return b.String()
}

// fixture is a gateway on loopback in front of fake backends, with its
// tenants in a file that tests rewrite and reload.
type fixture struct {
	s      *Server
	addr   string
	file   string
	reg    *tenant.Registry
	rt     *gatewaytest.Realtime
	fc     *gatewaytest.Fullcall
	mt     *gatewaytest.Metrics
	served chan error
}

func newFixture(t *testing.T, tenants string, tweak func(*Options)) *fixture {
	t.Helper()
	f := &fixture{rt: gatewaytest.StartRealtime(t), fc: gatewaytest.StartFullcall(t), mt: gatewaytest.NewMetrics(t), served: make(chan error, 1)}
	f.file = filepath.Join(t.TempDir(), "tenants.yaml")
	if err := os.WriteFile(f.file, []byte(tenants), 0o644); err != nil {
		t.Fatal(err)
	}
	var err error
	if f.reg, err = tenant.Load(f.file); err != nil {
		t.Fatal(err)
	}
	o := DefaultOptions()
	o.Tenants, o.RealtimeAddr, o.FullcallAddr, o.MeterProvider = f.reg, f.rt.Addr, f.fc.Addr, f.mt.Provider
	o.DrainTimeout = 2 * time.Second
	o.Session.Pacing.Policy = session.PaceOff // tests send faster than real time
	if tweak != nil {
		tweak(&o)
	}
	if f.s, err = New(o); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = lis.Addr().String()
	go func() { f.served <- f.s.Serve(context.Background(), lis) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		f.s.Shutdown(ctx)
		<-f.served
	})
	return f
}

// reload rewrites the tenants file and reloads it, as SIGHUP does.
func (f *fixture) reload(t *testing.T, tenants string) {
	t.Helper()
	if err := os.WriteFile(f.file, []byte(tenants), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := f.reg.Reload(); err != nil {
		t.Fatal(err)
	}
}

// dialStatus tries to connect with key and returns the HTTP status of a
// refusal (101 when upgraded; the connection is then closed).
func (f *fixture) dialStatus(t *testing.T, key string) (int, string) {
	t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial("ws://"+f.addr+"/ws/native", http.Header{"Authorization": {"Bearer " + key}})
	if err == nil {
		ws.Close()
		return http.StatusSwitchingProtocols, ""
	}
	if resp == nil {
		t.Fatalf("dial: %v", err)
	}
	defer resp.Body.Close()
	var body struct{ Error struct{ Code string } }
	json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body.Error.Code
}

// call is a native client call.
type call struct {
	ws     *websocket.Conn
	msgs   chan map[string]any
	closed chan *websocket.CloseError
}

func (f *fixture) start(t *testing.T, key, callID, agentID string) *call {
	t.Helper()
	c, m := f.tryStart(t, key, callID, agentID)
	if m["type"] != "started" {
		t.Fatalf("start %s: %v", callID, m)
	}
	return c
}

// tryStart connects and sends start; it returns the first message, or a
// map holding "close" with the close code.
func (f *fixture) tryStart(t *testing.T, key, callID, agentID string) (*call, map[string]any) {
	t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial("ws://"+f.addr+"/ws/native", http.Header{"Authorization": {"Bearer " + key}})
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	c := &call{ws: ws, msgs: make(chan map[string]any, 1024), closed: make(chan *websocket.CloseError, 1)}
	go func() {
		defer close(c.msgs)
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				var ce *websocket.CloseError
				errors.As(err, &ce)
				c.closed <- ce
				return
			}
			var m map[string]any
			json.Unmarshal(data, &m)
			c.msgs <- m
		}
	}()
	t.Cleanup(func() { ws.Close() })
	ws.WriteJSON(map[string]any{"type": "start", "call_id": callID, "agent_id": agentID, "codec": "pcmu", "sample_rate": 8000, "channels": []string{"caller", "agent"}})
	select {
	case m, ok := <-c.msgs:
		if ok {
			return c, m
		}
		ce := <-c.closed
		if ce == nil {
			return c, map[string]any{"close": 0}
		}
		return c, map[string]any{"close": ce.Code, "reason": ce.Text}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer to start")
	}
	return nil, nil
}

// tryStart2 connects and sends a start with the given fields (over the
// defaults); it returns the first message, as tryStart does.
func (f *fixture) tryStart2(t *testing.T, key string, fields map[string]any) (*call, map[string]any) {
	t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial("ws://"+f.addr+"/ws/native", http.Header{"Authorization": {"Bearer " + key}})
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	c := &call{ws: ws, msgs: make(chan map[string]any, 1024), closed: make(chan *websocket.CloseError, 1)}
	go func() {
		defer close(c.msgs)
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				var ce *websocket.CloseError
				errors.As(err, &ce)
				c.closed <- ce
				return
			}
			var m map[string]any
			json.Unmarshal(data, &m)
			c.msgs <- m
		}
	}()
	t.Cleanup(func() { ws.Close() })
	start := map[string]any{"type": "start", "codec": "pcmu", "sample_rate": 8000, "channels": []string{"caller", "agent"}}
	for k, v := range fields {
		start[k] = v
	}
	ws.WriteJSON(start)
	select {
	case m, ok := <-c.msgs:
		if ok {
			return c, m
		}
		ce := <-c.closed
		if ce == nil {
			return c, map[string]any{"close": 0}
		}
		return c, map[string]any{"close": ce.Code, "reason": ce.Text}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer to start")
	}
	return nil, nil
}

// tryStartMsg is tryStart2 that also reports a refusal before the upgrade
// as "status".
func (f *fixture) tryStartMsg(t *testing.T, key string, fields map[string]any) map[string]any {
	t.Helper()
	if code, reason := f.dialStatus(t, key); code != http.StatusSwitchingProtocols {
		return map[string]any{"status": code, "code": reason}
	}
	_, m := f.tryStart2(t, key, fields)
	return m
}

// audio sends frames of 20 ms stereo μ-law silence.
func (c *call) audio(t *testing.T, frames int) {
	t.Helper()
	frame := make([]byte, 320)
	for range frames {
		if err := c.ws.WriteMessage(websocket.BinaryMessage, frame); err != nil {
			t.Fatal(err)
		}
	}
}

// finish reads until the server closes; it returns the last message and
// the close code.
func (c *call) finish(t *testing.T) (map[string]any, int) {
	t.Helper()
	var last map[string]any
	timeout := time.After(15 * time.Second)
	for {
		select {
		case m, ok := <-c.msgs:
			if !ok {
				ce := <-c.closed
				if ce == nil {
					return last, 0
				}
				return last, ce.Code
			}
			last = m
		case <-timeout:
			t.Fatal("the server did not close the call")
		}
	}
}

// stop hangs up and returns the stopped message and the close code.
func (c *call) stop(t *testing.T) (map[string]any, int) {
	t.Helper()
	c.ws.WriteJSON(map[string]string{"type": "stop"})
	return c.finish(t)
}

// feedClient reads the live feed.
type feedClient struct {
	events chan feedEvent
	cancel context.CancelFunc
	done   chan struct{}
}

type feedEvent struct {
	typ  string
	data map[string]any
}

// subscribe opens the live feed; it returns the refusal status instead
// when the gateway refuses.
func (f *fixture) subscribe(t *testing.T, key, query string) (*feedClient, int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+f.addr+"/api/v1/live"+query, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel()
		return nil, resp.StatusCode
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("live feed Content-Type %q", ct)
	}
	fc := &feedClient{events: make(chan feedEvent, 1024), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(fc.done)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		var typ string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				typ = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				var m map[string]any
				if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &m); err != nil {
					t.Errorf("feed data %q: %v", line, err)
				}
				if m["type"] != typ {
					t.Errorf("event %q carries data of type %v", typ, m["type"])
				}
				fc.events <- feedEvent{typ, m}
			}
		}
	}()
	t.Cleanup(fc.close)
	return fc, http.StatusOK
}

func (fc *feedClient) close() {
	fc.cancel()
	<-fc.done
}

// until returns the events received up to and including the first one of
// type typ for callID.
func (fc *feedClient) until(t *testing.T, typ, callID string) []feedEvent {
	t.Helper()
	var got []feedEvent
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev := <-fc.events:
			got = append(got, ev)
			if ev.typ == typ && ev.data["call_id"] == callID {
				return got
			}
		case <-timeout:
			t.Fatalf("no %s event for %s on the feed; got %v", typ, callID, got)
		}
	}
}
