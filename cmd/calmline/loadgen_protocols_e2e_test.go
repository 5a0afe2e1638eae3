package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/calmline/calmline/cmd/loadgen"
	"github.com/calmline/calmline/lib/tenant"
)

// TestLoadgenOverEveryProtocol runs the real `calmline loadgen` binary
// over AudioHook, Twilio-style streams and Asterisk against the real
// `calmline serve`, one 9 s stereo call each from the test WAV file, at
// once: each run must pass its own checks (every byte sent in the stored
// report), carry scores where the protocol does, and each stored report's
// channels, roles and duration must match the file.
func TestLoadgenOverEveryProtocol(t *testing.T) {
	dir := t.TempDir()
	key := tenant.NewKey()
	secret := make([]byte, 32)
	rand.Read(secret)
	secretFile := filepath.Join(dir, "audiohook-secret")
	if err := os.WriteFile(secretFile, []byte(base64.StdEncoding.EncodeToString(secret)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tenants := fmt.Sprintf("tenants:\n  - id: acme\n    max_concurrent_calls: 10\n    api_keys:\n      - id: acme-1\n        sha256: %s\n        client_secret_file: %s\n",
		tenant.HashKey(key), secretFile)
	if err := os.WriteFile(filepath.Join(dir, "tenants.yaml"), []byte(tenants), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := startServe(t, "--data-dir", dir, "--tenants", filepath.Join(dir, "tenants.yaml"))
	protocols := []string{"audiohook", "twilio", "asterisk"}
	type result struct {
		out  []byte
		err  error
		errs string
	}
	results := make([]result, len(protocols))
	var wg sync.WaitGroup
	for i, p := range protocols {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(binary, "loadgen", "--protocol", p, "--url", "ws://"+srv.addrs["gateway"]+"/ws/"+p,
				"--api-key", key, "--client-secret-file", secretFile, "--calls", "1", "--ramp", "0", "--duration", "9s",
				"--wav", "testdata/call_emodb_9s.wav", "--codec", "pcmu", "--call-prefix", "e2e-"+p+"-",
				"--verify-reports", "http://"+srv.addrs["fullcall"], "--json")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			results[i] = result{out, err, stderr.String()}
		}()
	}
	wg.Wait()

	truth := talkTruth(t, "testdata/call_emodb_9s.segments.csv")
	for i, p := range protocols {
		r := results[i]
		if r.err != nil {
			t.Errorf("%s: loadgen: %v\n%s\n%s", p, r.err, r.out, r.errs)
			continue
		}
		var s loadgen.Summary
		if err := json.Unmarshal(r.out, &s); err != nil {
			t.Fatalf("%s: %v\n%s", p, err, r.out)
		}
		if !s.OK || s.Calls.Completed != 1 || s.Reports == nil || s.Reports.OK != 1 || s.FramesSent != 450 {
			t.Errorf("%s: %s; want ok, 1 call of 450 frames completed, its report holding every byte", p, r.out)
		}
		if (p == "audiohook") != (s.AudioToScore != nil) || (p == "audiohook" && s.ScoresReceived != 9) {
			t.Errorf("%s: %d scores, audio→score %+v; want 9 scores over AudioHook, none and no latency otherwise", p, s.ScoresReceived, s.AudioToScore)
		}
		id := "e2e-" + p + "-00001"
		if p == "audiohook" {
			id = loadgen.ConversationID(id)
		}
		rep := waitReport(t, srv.addrs["fullcall"], key, id)
		tolerance := 0.02
		if p == "asterisk" {
			tolerance = 0.1 // the legs are placed by when each started
		}
		if rep.Protocol != p || math.Abs(rep.DurationS-9) > tolerance || len(rep.Channels) != 2 {
			t.Errorf("%s: report %+v; want protocol %s, 9 ± %.2f s, 2 channels", p, rep, p, tolerance)
			continue
		}
		for i, role := range []string{"caller", "agent"} {
			ch := rep.Channels[i]
			if !strings.HasSuffix(strings.ToLower(ch.Role), role) || math.Abs(ch.TalkS-truth[role]) > 0.5 {
				t.Errorf("%s: channel %d is %q with %.2f s of talk; want %s, %.2f s", p, i, ch.Role, ch.TalkS, role, truth[role])
			}
		}
	}
	srv.stop(t)
}
