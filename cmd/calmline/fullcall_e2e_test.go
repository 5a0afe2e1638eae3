package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/calmline/calmline/gateway/session"
	"github.com/calmline/calmline/lib/sqldb/sqldbtest"
)

// serveWith starts `calmline serve` with the given services and waits
// for each of them to announce its listener.
func serveWith(t *testing.T, services []string, args ...string) *running {
	t.Helper()
	args = append([]string{"serve", "--services", strings.Join(services, ","), "--drain-timeout", "2s"}, args...)
	for _, s := range services {
		args = append(args, "--"+s+"-addr", "127.0.0.1:0")
	}
	cmd := inDeployment(exec.Command(binary, args...))
	cmd.Stderr = &testLog{t: t}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &running{cmd: cmd, addrs: map[string]string{}, exit: make(chan error, 1), more: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		addrs := map[string]string{}
		for sc.Scan() {
			line := sc.Text()
			r.mu.Lock()
			r.lines = append(r.lines, line)
			close(r.more)
			r.more = make(chan struct{})
			r.mu.Unlock()
			if rest, ok := strings.CutPrefix(line, "calmline: ready service="); ok {
				name, addr, _ := strings.Cut(rest, " addr=")
				addrs[name] = addr
				if len(addrs) == len(services) {
					r.addrs = addrs // read only after ready is closed
					close(ready)
				}
			}
		}
		r.exit <- cmd.Wait()
	}()
	t.Cleanup(func() { cmd.Process.Kill() })
	select {
	case <-ready:
	case err := <-r.exit:
		t.Fatalf("calmline serve exited before it was ready: %v\n%s", err, strings.Join(r.output(), "\n"))
	case <-time.After(60 * time.Second):
		t.Fatalf("calmline serve not ready after 60 s:\n%s", strings.Join(r.output(), "\n"))
	}
	return r
}

// metric sums the samples of a Prometheus metric (all its label sets)
// that a service exposes on /metrics.
func metric(addr, name string) (float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		metric, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		base, _, _ := strings.Cut(metric, "{")
		if base != name {
			continue
		}
		v, err := strconv.ParseFloat(strings.Fields(value)[0], 64)
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, sc.Err()
}

type streamedReport struct {
	CallID     string  `json:"call_id"`
	DurationS  float64 `json:"duration_s"`
	Chunks     string  `json:"chunks"` // uint64 in proto JSON
	Incomplete bool    `json:"incomplete"`
	Gaps       []any   `json:"gaps"`
	Source     string  `json:"source"`
	Channels   []json.RawMessage
	Timeline   []json.RawMessage
}

// TestFullcallInstanceKilledMidCall streams a call through a gateway that
// knows two fullcall instances (separate `calmline serve --services=fullcall`
// processes sharing one store), kills the one holding the call with SIGKILL
// in the middle, and checks that the other completed it: every chunk counted
// once, nothing missing, and the analysis of the batch path for the same
// file, within the tolerance of a takeover (analysis.Resume).
func TestFullcallInstanceKilledMidCall(t *testing.T) {
	for _, store := range []string{"sqlite", "postgres"} {
		t.Run(store, func(t *testing.T) {
			dir := t.TempDir()
			keys := writeTenants(t, dir, "acme")
			dsn := "sqlite:" + filepath.Join(dir, "shared.db")
			if store == "postgres" {
				dsn = sqldbtest.Postgres(t)
			}
			common := []string{"--data-dir", dir, "--tenants", filepath.Join(dir, "tenants.yaml"), "--log-level", "debug"}
			// Checkpoints every 2 s: a 9 s call has several to fail over
			// between.
			fcArgs := append([]string{"--fullcall-database", dsn, "--fullcall-spool-dir", "off", "--fullcall-checkpoint-every", "2s"}, common...)
			fc := []*running{serveWith(t, []string{"fullcall"}, fcArgs...), serveWith(t, []string{"fullcall"}, fcArgs...)}
			addrs := []string{fc[0].addrs["fullcall"], fc[1].addrs["fullcall"]}
			gw := serveWith(t, []string{"realtime", "gateway"}, append([]string{"--fullcall", strings.Join(addrs, ",")}, common...)...)

			// Kill the instance holding the call once it has checkpointed
			// a few seconds of it.
			killed := make(chan int, 1)
			failed := make(chan error, 1)
			go func() {
				deadline := time.Now().Add(8 * time.Second)
				for time.Now().Before(deadline) {
					for i, a := range addrs {
						active, err1 := metric(a, "calmline_fullcall_calls_active")
						cps, err2 := metric(a, "calmline_fullcall_checkpoints_total")
						if err1 == nil && err2 == nil && active == 1 && cps >= 2 {
							// Half-way to the next checkpoint, so that the
							// gateway has unacknowledged audio to replay.
							time.Sleep(time.Second)
							fc[i].cmd.Process.Kill() // SIGKILL
							killed <- i
							return
						}
					}
					time.Sleep(50 * time.Millisecond) // polling /metrics
				}
				failed <- fmt.Errorf("no fullcall instance held the call with two checkpoints within 8 s")
			}()
			msgs, _, closeErr := streamWAV(t, gw.addrs["gateway"], keys["acme"], "failover-1", "testdata/call_emodb_9s.wav")
			var victim int
			select {
			case victim = <-killed:
			case err := <-failed:
				t.Fatal(err)
			}
			survivor := addrs[1-victim]
			t.Logf("killed fullcall %d (%s) mid-call; %s completed it", victim, addrs[victim], survivor)

			if closeErr == nil || closeErr.Code != websocket.CloseNormalClosure {
				t.Errorf("close = %v; want 1000: the call survives the loss of its fullcall instance", closeErr)
			}
			if last := msgs[len(msgs)-1]; last.Type != "stopped" || last.Report == nil || math.Abs(last.Report.DurationS-9) > 0.02 {
				t.Errorf("last message %+v; want stopped with the report of a 9 s call", last)
			}
			moved, err := metric(gw.addrs["gateway"], "calmline_gateway_backend_reconnects_total")
			if err != nil || moved < 1 {
				t.Errorf("gateway reopened %v backend streams (%v); want the fullcall stream reopened", moved, err)
			}
			replayed, _ := metric(gw.addrs["gateway"], "calmline_gateway_fullcall_replayed_total")
			t.Logf("the gateway replayed %v unacknowledged chunks to the survivor", replayed)

			get := func(path string) []byte {
				req, _ := http.NewRequest("GET", "http://"+survivor+path, nil)
				req.Header.Set("Authorization", "Bearer "+keys["acme"])
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != 200 {
					t.Fatalf("GET %s = %d %s", path, resp.StatusCode, b)
				}
				return b
			}
			var streamed streamedReport
			if err := json.Unmarshal(get("/api/v1/reports/failover-1"), &streamed); err != nil {
				t.Fatal(err)
			}
			// 9 s in the gateway's chunks, each counted once, none missing:
			// the first ends at the chunk phase, the last at the hang-up.
			after := 9*time.Second - session.DefaultChunkPhase
			want := fmt.Sprint(1 + int64((after+session.DefaultChunkDuration-1)/session.DefaultChunkDuration))
			if streamed.Chunks != want || streamed.Incomplete || len(streamed.Gaps) != 0 || math.Abs(streamed.DurationS-9) > 0.001 {
				t.Errorf("report after the failover: %s chunks, incomplete %v, gaps %v, %.3f s; want %s chunks, complete, no gaps, 9 s",
					streamed.Chunks, streamed.Incomplete, streamed.Gaps, streamed.DurationS, want)
			}

			// The batch path on the same file gives the same analysis.
			wav, err := os.ReadFile("testdata/call_emodb_9s.wav")
			if err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequest("POST", "http://"+survivor+"/api/v1/recordings?call_id=batch-1&agent_id=agent-42", bytes.NewReader(wav))
			req.Header.Set("Authorization", "Bearer "+keys["acme"])
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var batch streamedReport
			json.NewDecoder(resp.Body).Decode(&batch)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("batch analysis: %d", resp.StatusCode)
			}
			// Within analysis.Resume's tolerance: the seconds before the
			// takeover exact (the kill came after two checkpoints, so at
			// least 4 s in), the measures close.
			if len(batch.Timeline) != len(streamed.Timeline) {
				t.Fatalf("batch timeline %d points, streamed %d", len(batch.Timeline), len(streamed.Timeline))
			}
			for i := range 4 {
				if !bytes.Equal(batch.Timeline[i], streamed.Timeline[i]) {
					t.Errorf("second %d (before the takeover): streamed %s, batch %s", i, streamed.Timeline[i], batch.Timeline[i])
				}
			}
			for i := range batch.Channels {
				var b, s struct {
					TalkS    float64 `json:"talk_s"`
					SilenceS float64 `json:"silence_s"`
					F0MeanHz float64 `json:"f0_mean_hz"`
				}
				json.Unmarshal(batch.Channels[i], &b)
				json.Unmarshal(streamed.Channels[i], &s)
				if math.Abs(s.TalkS-b.TalkS) > 0.35 || math.Abs(s.SilenceS-b.SilenceS) > 0.35 || math.Abs(s.F0MeanHz-b.F0MeanHz) > 5 {
					t.Errorf("channel %d: streamed %s; batch %s", i, streamed.Channels[i], batch.Channels[i])
				}
			}
			gw.stop(t)
			fc[1-victim].stop(t)
		})
	}
}
