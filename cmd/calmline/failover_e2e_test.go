package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/calmline/calmline/lib/audio"
)

// startSubset starts `calmline serve` with args and waits for want
// services to announce their listeners.
func startSubset(t *testing.T, want int, args ...string) *running {
	t.Helper()
	cmd := inDeployment(exec.Command(binary, append([]string{"serve"}, args...)...))
	cmd.Stderr = &testLog{t: t}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &running{cmd: cmd, addrs: map[string]string{}, exit: make(chan error, 1), more: make(chan struct{})}
	ready := make(chan map[string]string, 1)
	go func() {
		addrs := map[string]string{}
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "calmline: ready service="); ok {
				name, addr, _ := strings.Cut(rest, " addr=")
				addrs[name] = addr
				if len(addrs) == want {
					ready <- addrs
				}
			}
		}
		r.exit <- cmd.Wait()
	}()
	t.Cleanup(func() { cmd.Process.Kill() })
	select {
	case r.addrs = <-ready:
	case err := <-r.exit:
		t.Fatalf("calmline serve %v exited before it was ready: %v", args, err)
	case <-time.After(60 * time.Second):
		t.Fatalf("calmline serve %v not ready after 60 s", args)
	}
	return r
}

var secondsAnalysedRE = regexp.MustCompile(`(?m)^calmline_fullcall_seconds_analysed_total\{[^}]*source="(realtime|fullcall)"[^}]*\} (\d+)`)

// secondsAnalysed reads from a fullcall instance's metrics how many seconds
// of live calls' reports came from realtime's analysis and how many
// fullcall analysed itself, once they add up to at least total (they are
// counted as each call's stream ends).
func secondsAnalysed(t *testing.T, addr string, total int) (realtime, fullcall int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		realtime, fullcall = 0, 0
		for _, m := range secondsAnalysedRE.FindAllSubmatch(b, -1) {
			n, _ := strconv.Atoi(string(m[2]))
			if string(m[1]) == "realtime" {
				realtime += n
			} else {
				fullcall += n
			}
		}
		if realtime+fullcall >= total {
			return realtime, fullcall
		}
		select {
		case <-deadline:
			t.Fatalf("fullcall counted %d seconds from realtime and %d of its own; want %d in all", realtime, fullcall, total)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

var activeCalls = regexp.MustCompile(`(?m)^calmline_realtime_calls_active(?:\{[^}]*\})? (\d+)`)

// liveCalls reads a realtime instance's live calls from its metrics.
func liveCalls(t *testing.T, addr string) int {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := activeCalls.FindSubmatch(b)
	if m == nil {
		t.Fatalf("no calmline_realtime_calls_active in %s's metrics", addr)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// TestEndToEndRealtimeFailover runs two realtime instances as their own
// processes and a gateway (with fullcall and escalation) given both; it
// kills -9 the instance scoring a live call. The call moves to the other
// instance within a couple of seconds, scoring resumes, the gap is in the
// report, and the report is complete. The same holds when the instance
// drains (SIGTERM): it reports NOT_SERVING, ends its streams, and the
// gateway moves them.
func TestEndToEndRealtimeFailover(t *testing.T) {
	for _, how := range []string{"kill", "drain"} {
		t.Run(how, func(t *testing.T) { testRealtimeFailover(t, how == "drain") })
	}
}

func testRealtimeFailover(t *testing.T, drain bool) {
	dir := t.TempDir()
	keys := writeTenants(t, dir, "acme")
	rtA := startSubset(t, 1, "--services=realtime", "--realtime-addr", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "a"))
	rtB := startSubset(t, 1, "--services=realtime", "--realtime-addr", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "b"))
	main := startSubset(t, 3, "--services=gateway,fullcall,escalation",
		"--realtime", rtA.addrs["realtime"]+","+rtB.addrs["realtime"],
		"--gateway-addr", "127.0.0.1:0", "--fullcall-addr", "127.0.0.1:0", "--escalation-addr", "127.0.0.1:0",
		"--data-dir", dir, "--tenants", filepath.Join(dir, "tenants.yaml"), "--drain-timeout", "2s")

	b, err := os.ReadFile("testdata/call_emodb_9s.wav")
	if err != nil {
		t.Fatal(err)
	}
	rec, err := audio.ParseWAV(b)
	if err != nil {
		t.Fatal(err)
	}
	ws, msgs := dialNative(t, main.addrs["gateway"], keys["acme"], "failover-1", 64)
	defer ws.Close()

	frame := rec.Format.BytesPerSecond() / 50
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var killedAt time.Time
	var drained *running
	for off := 0; off < len(rec.Data); off += frame {
		<-tick.C
		ws.WriteMessage(websocket.BinaryMessage, rec.Data[off:min(off+frame, len(rec.Data))])
		if off == 3*rec.Format.BytesPerSecond() { // 3 s into the call
			victim, survivor := rtA, rtB
			if liveCalls(t, rtA.addrs["realtime"]) == 0 {
				victim, survivor = rtB, rtA
			}
			if liveCalls(t, victim.addrs["realtime"]) != 1 || liveCalls(t, survivor.addrs["realtime"]) != 0 {
				t.Fatal("neither realtime instance, or both, scores the call")
			}
			if drain {
				victim.cmd.Process.Signal(syscall.SIGTERM)
				drained = victim
			} else {
				victim.cmd.Process.Kill() // SIGKILL: no drain, no goodbye
			}
			killedAt = time.Now()
			t.Logf("stopped the realtime instance at %s (drain %v)", victim.addrs["realtime"], drain)
		}
	}
	ws.WriteJSON(map[string]string{"type": "stop"})
	var scores []nativeMsg
	var stopped *nativeMsg
	for m := range msgs {
		switch m.Type {
		case "score":
			scores = append(scores, m)
		case "stopped":
			stopped = &m
		}
	}
	if stopped == nil || stopped.Report == nil {
		t.Fatalf("no stopped message with a report; scores %+v", scores)
	}
	// Scoring resumed on the survivor within a couple of seconds, and
	// went on to the end of the call.
	var resumed *nativeMsg
	for i, s := range scores {
		if s.at.After(killedAt) && s.Second >= 3 {
			resumed = &scores[i]
			break
		}
	}
	if resumed == nil || resumed.at.Sub(killedAt) > 3*time.Second {
		t.Fatalf("no score within 3 s of the kill: %+v", scores)
	}
	t.Logf("first score after the kill: second %d, %v after it", resumed.Second, resumed.at.Sub(killedAt))
	if last := scores[len(scores)-1]; last.Second != 8 {
		t.Errorf("last score for second %d; want 8 (the call's last)", last.Second)
	}

	req, _ := http.NewRequest("GET", "http://"+main.addrs["fullcall"]+stopped.Report.URL, nil)
	req.Header.Set("Authorization", "Bearer "+keys["acme"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rep struct {
		Incomplete      bool    `json:"incomplete"`
		DurationS       float64 `json:"duration_s"`
		AudioBytes      string  `json:"audio_bytes"`
		LiveScoringGaps []struct {
			Reason string `json:"reason"`
		} `json:"live_scoring_gaps"`
		Timeline []struct {
			CallerTalk *float64 `json:"caller_talk"`
		} `json:"timeline"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		t.Fatal(err)
	}
	if rep.Incomplete || rep.AudioBytes != strconv.Itoa(len(rec.Data)) {
		t.Errorf("report: incomplete %v, %s audio bytes; want complete with %d", rep.Incomplete, rep.AudioBytes, len(rec.Data))
	}
	// Every second is in the report, analysed once: by realtime where its
	// analysis covered the audio fullcall has, by fullcall where it did not
	// (the seconds around the failover).
	if len(rep.Timeline) != 9 {
		t.Errorf("report timeline has %d seconds; want 9", len(rep.Timeline))
	}
	for i, p := range rep.Timeline {
		if p.CallerTalk == nil {
			t.Errorf("second %d of the report has no analysis: %+v", i, p)
		}
	}
	fromRT, fromFC := secondsAnalysed(t, main.addrs["fullcall"], 9)
	t.Logf("seconds analysed: %d by realtime, %d by fullcall", fromRT, fromFC)
	if fromRT+fromFC != 9 || fromRT < 3 || fromFC < 1 {
		t.Errorf("seconds analysed: %d by realtime, %d by fullcall; want 9 in all, the seconds realtime missed by fullcall", fromRT, fromFC)
	}
	if len(rep.LiveScoringGaps) != 1 || rep.LiveScoringGaps[0].Reason != "GAP_REASON_FAILOVER" {
		t.Errorf("report's live-scoring gaps %+v; want one failover gap", rep.LiveScoringGaps)
	}
	// The gateway's metrics are there under their documented names
	// (docs/architecture.md), the failover counted.
	websocket.DefaultDialer.Dial("ws://"+main.addrs["gateway"]+"/ws/native", http.Header{"Authorization": {"Bearer clk_unknown"}})
	resp, err = http.Get("http://" + main.addrs["gateway"] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, name := range []string{
		`calmline_gateway_calls_total{`,
		`calmline_gateway_calls_refused_total{protocol="native",reason="unauthenticated"`,
		`calmline_gateway_audio_in_bytes_total{`,
		`calmline_gateway_events_out_bytes_total{`,
		`calmline_gateway_backend_out_bytes_total{backend="realtime"`,
		`calmline_gateway_backend_out_bytes_total{backend="fullcall"`,
		`calmline_gateway_call_traffic_bytes_per_second_count{direction="client_in"`,
		`calmline_gateway_backend_rtt_seconds_count{backend="fullcall"`,
		`calmline_gateway_backend_rtt_seconds_count{backend="realtime"`,
		`calmline_gateway_backend_reconnects_total{backend="realtime"`,
		`calmline_gateway_score_delay_seconds_count`,
		`calmline_gateway_call_duration_seconds_count`,
		`calmline_gateway_fullcall_unacked_bytes`,
	} {
		if !strings.Contains(string(metrics), name) {
			t.Errorf("gateway metrics lack %s", name)
		}
	}
	if drained != nil {
		select {
		case err := <-drained.exit:
			if err != nil {
				t.Errorf("the drained realtime instance exited with %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("the drained realtime instance still runs 30 s after SIGTERM")
		}
	}
	main.stop(t)
	rtA.cmd.Process.Kill()
	rtB.cmd.Process.Kill()
}

// nativeMsg is a message the gateway sent on a native call, stamped with
// its arrival.
type nativeMsg struct {
	Type   string `json:"type"`
	Second int    `json:"second"`
	Report *struct {
		URL string `json:"url"`
	} `json:"report"`
	at time.Time
}

// dialNative starts a stereo μ-law call over the native protocol and waits
// for started; the channel (buffer messages deep) then carries what the
// gateway sends, and closes when the connection ends.
func dialNative(t *testing.T, gatewayAddr, key, callID string, buffer int) (*websocket.Conn, <-chan nativeMsg) {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+gatewayAddr+"/ws/native", http.Header{"Authorization": {"Bearer " + key}})
	if err != nil {
		t.Fatal(err)
	}
	ws.WriteJSON(map[string]any{"type": "start", "call_id": callID, "agent_id": "a1", "codec": "pcmu", "sample_rate": 8000, "channels": []string{"caller", "agent"}})
	msgs := make(chan nativeMsg, buffer)
	go func() {
		defer close(msgs)
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				return
			}
			var m nativeMsg
			json.Unmarshal(data, &m)
			m.at = time.Now()
			msgs <- m
		}
	}()
	if m := <-msgs; m.Type != "started" {
		ws.Close()
		t.Fatalf("first message %+v; want started", m)
	}
	return ws, msgs
}
