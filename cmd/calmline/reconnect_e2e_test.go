package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/calmline/calmline/cmd/loadgen"
	"github.com/calmline/calmline/lib/audio"
)

// balancer is a TCP proxy standing in for nginx or an L4 load balancer in
// front of the gateways: each connection goes to the first backend that
// accepts it, so that once a backend is dead new connections land on the
// next. When either side closes, so does the other.
type balancer struct {
	lis      net.Listener
	backends []string
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]bool
}

func newBalancer(t *testing.T, backends ...string) *balancer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &balancer{lis: lis, backends: backends, conns: map[net.Conn]bool{}}
	b.wg.Add(1)
	go b.serve()
	t.Cleanup(b.close)
	return b
}

func (b *balancer) serve() {
	defer b.wg.Done()
	for {
		c, err := b.lis.Accept()
		if err != nil {
			return
		}
		b.wg.Add(1)
		go func() { defer b.wg.Done(); b.proxy(c) }()
	}
}

func (b *balancer) track(c net.Conn, on bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if on {
		b.conns[c] = true
	} else {
		delete(b.conns, c)
	}
}

func (b *balancer) proxy(client net.Conn) {
	defer client.Close()
	var up net.Conn
	for _, a := range b.backends {
		var err error
		if up, err = net.DialTimeout("tcp", a, time.Second); err == nil {
			break
		}
	}
	if up == nil {
		return
	}
	defer up.Close()
	b.track(client, true)
	b.track(up, true)
	defer b.track(client, false)
	defer b.track(up, false)
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, client); done <- struct{}{} }()
	go func() { io.Copy(client, up); done <- struct{}{} }()
	<-done
	// One side ended: end both, and wait for the other copy.
	client.Close()
	up.Close()
	<-done
}

func (b *balancer) close() {
	b.lis.Close()
	b.mu.Lock()
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// TestEndToEndGatewayKilledCallsResume runs two gateways as their own
// processes behind a balancer, with realtime, fullcall and escalation in a
// third, and loadgen (with --reconnect) streaming calls through the
// balancer. Killing the gateway carrying the calls with SIGKILL, every
// call reconnects through the balancer to the other gateway and goes on as
// the same call: one report per call id, complete, holding every byte sent
// except what was in flight to the dead gateway, with the lost stretch as a
// reconnect gap.
func TestEndToEndGatewayKilledCallsResume(t *testing.T) {
	dir := t.TempDir()
	keys := writeTenants(t, dir, "acme")
	tenants := filepath.Join(dir, "tenants.yaml")
	back := startSubset(t, 3, "--services=realtime,fullcall,escalation", "--data-dir", dir, "--tenants", tenants,
		"--realtime-addr", "127.0.0.1:0", "--fullcall-addr", "127.0.0.1:0", "--escalation-addr", "127.0.0.1:0",
		"--fullcall-spool-dir", "off")
	gw := func(name string) *running {
		return startSubset(t, 1, "--services=gateway", "--gateway-addr", "127.0.0.1:0", "--data-dir", filepath.Join(dir, name),
			"--tenants", tenants, "--realtime", back.addrs["realtime"], "--fullcall", back.addrs["fullcall"], "--drain-timeout", "1s")
	}
	gwA, gwB := gw("a"), gw("b")
	lb := newBalancer(t, gwA.addrs["gateway"], gwB.addrs["gateway"])

	b, err := os.ReadFile("testdata/call_emodb_9s.wav")
	if err != nil {
		t.Fatal(err)
	}
	rec, err := audio.ParseWAV(b)
	if err != nil {
		t.Fatal(err)
	}
	const calls = 4
	type result struct {
		s   *loadgen.Summary
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := loadgen.Run(context.Background(), loadgen.Options{
			URL: "ws://" + lb.lis.Addr().String() + "/ws/native", APIKey: keys["acme"], Calls: calls, Duration: 6 * time.Second,
			Audio: rec, CallPrefix: "resume-", Reconnect: true, ReconnectWindow: 10 * time.Second,
			Reports: &loadgen.HTTPReports{BaseURL: "http://" + back.addrs["fullcall"], APIKey: keys["acme"]},
		})
		done <- result{s, err}
	}()

	// Every call is live on gateway A (the balancer's first choice) and
	// a couple of seconds in: kill it.
	deadline := time.Now().Add(20 * time.Second)
	for {
		n, err := metric(gwA.addrs["gateway"], "calmline_gateway_calls_active")
		if err == nil && n == calls {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway A has %v live calls (err %v); want %d", n, err, calls)
		}
		time.Sleep(50 * time.Millisecond) // polling a metric, not synchronising goroutines
	}
	ready := time.Now()
	for {
		if n, _ := metric(back.addrs["fullcall"], "calmline_fullcall_checkpoints_total"); n >= calls || time.Since(ready) > 5*time.Second {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	gwA.cmd.Process.Kill()
	killedAt := time.Now()

	var res result
	select {
	case res = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("loadgen did not finish within 60 s of the kill")
	}
	if res.err != nil {
		t.Fatal(res.err)
	}
	s := res.s
	if !s.OK || s.Calls.Completed != calls || s.Reconnects.Count != calls || s.Reconnects.Failed != 0 || s.Reports == nil || s.Reports.OK != calls {
		j, _ := json.Marshal(s)
		t.Fatalf("after the kill: %s; want every call resumed once, completed, its stored report holding what was sent", j)
	}
	if p99 := s.Reconnects.Time.P99; p99 > 5000 {
		t.Errorf("reconnect p99 %.0f ms; want ≤ 5 s", p99)
	}
	t.Logf("%d calls resumed %v after the kill: p50 %.0f ms, max %.0f ms; %d bytes in flight to the dead gateway",
		calls, time.Since(killedAt).Round(time.Millisecond), s.Reconnects.Time.P50, s.Reconnects.Time.Max, s.Reconnects.LostBytes)

	// The same call ids, one report each, the lost stretch a reconnect gap.
	for i := 1; i <= calls; i++ {
		id := "resume-0000" + string(rune('0'+i))
		req, _ := http.NewRequest("GET", "http://"+back.addrs["fullcall"]+"/api/v1/reports/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+keys["acme"])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var rep struct {
			Incomplete bool   `json:"incomplete"`
			EndReason  string `json:"end_reason"`
			Gaps       []struct {
				Reason  string `json:"reason"`
				Samples string `json:"samples"`
			} `json:"gaps"`
		}
		err = json.NewDecoder(resp.Body).Decode(&rep)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		// A reconnect gap holds what was in flight to the dead gateway and
		// what fell due meanwhile; a resume within the same 20 ms frame,
		// everything sent already durable, leaves none.
		if rep.Incomplete || rep.EndReason != "END_REASON_HANGUP" || len(rep.Gaps) > 1 || len(rep.Gaps) == 1 && rep.Gaps[0].Reason != "GAP_REASON_RECONNECT" {
			t.Errorf("%s: incomplete %v, end %s, gaps %+v; want complete, hung up, at most one reconnect gap", id, rep.Incomplete, rep.EndReason, rep.Gaps)
		}
		if len(rep.Gaps) == 1 {
			t.Logf("%s: a reconnect gap of %s samples", id, rep.Gaps[0].Samples)
		}
	}
	if n, err := metric(gwB.addrs["gateway"], "calmline_gateway_calls_resumed_total"); err != nil || n != calls {
		t.Errorf("gateway B resumed %v calls (err %v); want %d", n, err, calls)
	}
	gwB.stop(t)
	back.stop(t)
}
