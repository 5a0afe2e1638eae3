package gateway

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/calmline/calmline/gateway/edge"
	"github.com/calmline/calmline/lib/audio"

	"github.com/calmline/calmline/gateway/twilio"
	"github.com/calmline/calmline/lib/tenant"
)

// lockedBuffer collects log output from many goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Senders that cannot set headers send the key as ?api_key=: a wrong one
// is refused before the upgrade, a right one authenticates before it, and
// no key — right or wrong, in the URL or a start — reaches a log line;
// refusals after the upgrade are logged at INFO with their reason.
func TestKeysInTheQueryAreCheckedBeforeTheUpgradeAndNeverLogged(t *testing.T) {
	key, tiny := tenant.NewKey(), tenant.NewKey()
	wrong := "clk_" + strings.Repeat("W", 43)
	wrongInStart := "clk_" + strings.Repeat("S", 43)
	logs := &lockedBuffer{}
	f := newFixture(t, tenantsYAML(
		tenantDef{id: "acme", max: 5, keys: []keyDef{{id: "a", key: key}}},
		tenantDef{id: "tiny", max: 1, keys: []keyDef{{id: "t", key: tiny}}},
	), func(o *Options) {
		o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	for _, path := range []string{"/ws/twilio?api_key=", "/ws/asterisk?call_id=q1&role=caller&api_key="} {
		if _, code, reason := f.dialWS(t, path+wrong, nil); code != http.StatusUnauthorized || reason != "unauthenticated" {
			t.Errorf("%s with a wrong key: %d %s; want 401 before the upgrade", path, code, reason)
		}
	}
	// The right key in the query: the tenant's quota is checked before the
	// upgrade too.
	live := f.start(t, tiny, "tiny-1", "")
	if _, code, _ := f.dialWS(t, "/ws/twilio?api_key="+tiny, nil); code != http.StatusTooManyRequests {
		t.Errorf("a tenant at its quota with ?api_key=: %d; want 429 before the upgrade", code)
	}
	live.stop(t)
	ctx := context.Background()
	rec := twilioRecording()
	if _, err := (&twilio.Client{URL: "ws://" + f.addr + "/ws/twilio?api_key=" + key}).Stream(ctx, rec, twilio.StreamOptions{CallID: "CAquery"}); err != nil {
		t.Errorf("a stream with ?api_key=: %v", err)
	}
	if f.fc.Report("CAquery") == nil {
		t.Error("no report for the stream authenticated by ?api_key=")
	}
	// A wrong key in the start is refused after the upgrade, and logged.
	ws, _, _ := f.dialWS(t, "/ws/twilio", nil)
	ws.WriteMessage(websocket.TextMessage, []byte(`{"event":"start","sequenceNumber":"1","start":{"callSid":"CAbad","customParameters":{"api_key":"`+wrongInStart+`"}},"streamSid":"s"}`))
	ws.SetReadDeadline(deadline())
	if _, _, err := ws.ReadMessage(); !websocket.IsCloseError(err, edge.CloseUnauthenticated) {
		t.Errorf("a wrong key in the start: %v; want close %d", err, edge.CloseUnauthenticated)
	}
	f.s.Shutdown(ctx)
	out := logs.String()
	for _, secret := range []string{key, tiny, wrong, wrongInStart} {
		if strings.Contains(out, secret) {
			t.Errorf("a key reached the log:\n%s", out)
		}
	}
	if !strings.Contains(out, "level=INFO msg=\"call refused after the upgrade\"") || !strings.Contains(out, "code=4401") {
		t.Errorf("the refusal after the upgrade is not logged at INFO with its code:\n%s", out)
	}
}

func twilioRecording() *audio.Recording {
	return &audio.Recording{Format: audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 2}, Data: make([]byte, 1600)}
}

func deadline() time.Time { return time.Now().Add(10 * time.Second) }
