package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/calmline/calmline/lib/audio"
)

// TestNormalCallDrainAndRestartLogNoWarning runs the real `calmline serve`
// through what happens every day — a call from start to hang-up, a drain
// (SIGTERM) with a call still live, and a restart on the same data — and
// fails on any WARN or ERROR it logs: on a normal day nobody is paged. The
// drain's start and end are logged at INFO.
func TestNormalCallDrainAndRestartLogNoWarning(t *testing.T) {
	dir := t.TempDir()
	keys := writeTenants(t, dir, "acme")
	args := []string{"--data-dir", dir, "--tenants", filepath.Join(dir, "tenants.yaml")}
	srv := startServe(t, args...)
	_, _, closeErr := streamWAV(t, srv.addrs["gateway"], keys["acme"], "clean-1", "testdata/call_emodb_9s.wav")
	if closeErr == nil || closeErr.Code != websocket.CloseNormalClosure {
		t.Errorf("close = %v; want 1000 after stop", closeErr)
	}

	// A call still live when the drain starts: it is closed with 1001 at
	// the drain timeout (2 s), its report stored.
	b, err := os.ReadFile("testdata/call_emodb_9s.wav")
	if err != nil {
		t.Fatal(err)
	}
	rec, err := audio.ParseWAV(b)
	if err != nil {
		t.Fatal(err)
	}
	ws, msgs := dialNative(t, srv.addrs["gateway"], keys["acme"], "clean-2", 64)
	defer ws.Close()
	const frame = 320 // 20 ms of stereo μ-law
	for off := 0; off < 2*8000*2; off += frame {
		if err := ws.WriteMessage(websocket.BinaryMessage, rec.Data[off:off+frame]); err != nil {
			t.Fatal(err)
		}
	}
	// The first score says the call is flowing before the drain begins.
	deadline := time.After(30 * time.Second)
	for scored := false; !scored; {
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatal("call ended before its first score")
			}
			scored = m.Type == "score"
		case <-deadline:
			t.Fatal("no score in 30 s")
		}
	}
	srv.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-srv.exit:
		if err != nil {
			t.Errorf("calmline serve exited with %v after SIGTERM", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("calmline serve still running 30 s after SIGTERM")
	}

	// A restart on the same data directory, and a normal stop.
	again := startServe(t, args...)
	again.stop(t)

	for _, want := range []string{"drain started", "drain finished"} {
		if !strings.Contains(srv.logs.String(), want) {
			t.Errorf("no %q in the first run's log", want)
		}
	}
	for name, l := range map[string]*testLog{"first run": srv.logs, "restart": again.logs} {
		for _, line := range strings.Split(l.String(), "\n") {
			if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
				t.Errorf("%s logged: %s", name, line)
			}
		}
	}
}
