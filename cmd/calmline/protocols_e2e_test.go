package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calmline/calmline/gateway/asterisk"
	"github.com/calmline/calmline/gateway/audiohook"
	"github.com/calmline/calmline/gateway/twilio"
	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/tenant"
)

// TestEndToEndOverEveryProtocol streams the stereo test call over
// AudioHook, a Twilio-style stream and two Asterisk legs at once, against
// the real `calmline serve`, and checks that each stored report has the
// file's channels, roles and duration.
func TestEndToEndOverEveryProtocol(t *testing.T) {
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
	b, err := os.ReadFile("testdata/call_emodb_9s.wav")
	if err != nil {
		t.Fatal(err)
	}
	rec, err := audio.ParseWAV(b)
	if err != nil {
		t.Fatal(err)
	}
	gw := "ws://" + srv.addrs["gateway"]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const conversation = "5b0a1cf8-4d0c-4a56-9ae2-0c1f1d2a3b4c"

	var wg sync.WaitGroup
	var ahScores int
	errs := make(chan error, 3)
	wg.Add(3)
	go func() {
		defer wg.Done()
		cl := &audiohook.Client{URL: gw + "/ws/audiohook", APIKey: key, ClientSecret: secret, OrganizationID: "d7934305-0972-4844-938e-9060eef73d05"}
		res, err := cl.Stream(ctx, rec, audiohook.StreamOptions{OpenRequest: audiohook.OpenRequest{ConversationID: conversation, AgentID: "agent-ah"}, RealTime: true})
		if err != nil {
			errs <- fmt.Errorf("audiohook: %w", err)
			return
		}
		ahScores = len(res.Scores())
	}()
	go func() {
		defer wg.Done()
		cl := &twilio.Client{URL: gw + "/ws/twilio", APIKey: key}
		if _, err := cl.Stream(ctx, rec, twilio.StreamOptions{CallID: "CA-e2e", AgentID: "agent-tw", RealTime: true}); err != nil {
			errs <- fmt.Errorf("twilio: %w", err)
		}
	}()
	go func() {
		defer wg.Done()
		cl := &asterisk.Client{URL: gw + "/ws/asterisk", APIKey: key, JSON: true}
		if _, err := cl.Stream(ctx, rec, asterisk.StreamOptions{CallID: "1761245643.1", AgentID: "agent-ast", RealTime: true}); err != nil {
			errs <- fmt.Errorf("asterisk: %w", err)
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if ahScores != 9 {
		t.Errorf("AudioHook carried %d score events for the 9 s call; want 9", ahScores)
	}

	truth := talkTruth(t, "testdata/call_emodb_9s.segments.csv")
	for _, c := range []struct {
		callID, protocol, agent string
		tolerance               float64
	}{
		{conversation, "audiohook", "agent-ah", 0.02},
		{"CA-e2e", "twilio", "agent-tw", 0.02},
		// Two legs are placed by when each connected: a few
		// milliseconds may separate them.
		{"1761245643.1", "asterisk", "agent-ast", 0.1},
	} {
		rep := waitReport(t, srv.addrs["fullcall"], key, c.callID)
		t.Logf("%s: %.3f s, channels %+v", c.protocol, rep.DurationS, rep.Channels)
		if rep.Protocol != c.protocol || rep.AgentID != c.agent {
			t.Errorf("%s: protocol %q agent %q", c.protocol, rep.Protocol, rep.AgentID)
		}
		if math.Abs(rep.DurationS-9) > c.tolerance {
			t.Errorf("%s: duration %.3f s; want 9 ± %.2f", c.protocol, rep.DurationS, c.tolerance)
		}
		if len(rep.Channels) != 2 {
			t.Errorf("%s: %d channels; want 2", c.protocol, len(rep.Channels))
			continue
		}
		for i, role := range []string{"caller", "agent"} {
			ch := rep.Channels[i]
			if !strings.HasSuffix(strings.ToLower(ch.Role), role) {
				t.Errorf("%s: channel %d is %q; want %s", c.protocol, i, ch.Role, role)
			}
			if math.Abs(ch.TalkS-truth[role]) > 0.5 {
				t.Errorf("%s: %s talk time %.2f s; the segments say %.2f s", c.protocol, role, ch.TalkS, truth[role])
			}
		}
	}
	srv.stop(t)
}

type e2eReport struct {
	CallID    string  `json:"call_id"`
	AgentID   string  `json:"agent_id"`
	Protocol  string  `json:"protocol"`
	DurationS float64 `json:"duration_s"`
	Channels  []struct {
		Role  string  `json:"role"`
		TalkS float64 `json:"talk_s"`
	}
}

// waitReport fetches a call's report, waiting for it briefly: a protocol
// whose client hangs up without waiting for the server (Asterisk) may
// finish before the report is stored.
func waitReport(t *testing.T, fullcall, key, callID string) e2eReport {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		req, _ := http.NewRequest("GET", "http://"+fullcall+"/api/v1/reports/"+callID, nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			var r e2eReport
			if err := json.Unmarshal(body, &r); err != nil {
				t.Fatal(err)
			}
			return r
		}
		if resp.StatusCode != http.StatusNotFound || time.Now().After(deadline) {
			t.Fatalf("GET report %s: %d %s", callID, resp.StatusCode, body)
		}
		time.Sleep(50 * time.Millisecond) // waiting for another process, which offers no notification
	}
}
