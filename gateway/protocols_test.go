package gateway

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/calmline/calmline/gateway/asterisk"
	"github.com/calmline/calmline/gateway/audiohook"
	"github.com/calmline/calmline/gateway/twilio"
	"github.com/calmline/calmline/lib/audio"
)

// Every protocol has its path on the gateway, and a call over each
// reaches the backends.
func TestEveryProtocolIsServed(t *testing.T) {
	s, addr, key, served := startGateway(t, time.Second)
	rec := &audio.Recording{Format: audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 2}, Data: make([]byte, 1600)}
	ctx := context.Background()
	if _, err := (&twilio.Client{URL: "ws://" + addr + "/ws/twilio", APIKey: key}).Stream(ctx, rec, twilio.StreamOptions{CallID: "t"}); err != nil {
		t.Errorf("twilio: %v", err)
	}
	if _, err := (&asterisk.Client{URL: "ws://" + addr + "/ws/asterisk", APIKey: key}).Stream(ctx, rec, asterisk.StreamOptions{CallID: "a", Roles: []string{asterisk.RoleCaller}}); err != nil {
		t.Errorf("asterisk: %v", err)
	}
	// The test tenant has no AudioHook client secret: refused, as the
	// protocol's signatures cannot be checked.
	_, err := (&audiohook.Client{URL: "ws://" + addr + "/ws/audiohook", APIKey: key}).Open(ctx, audiohook.OpenRequest{})
	if de, ok := err.(*audiohook.DialError); !ok || de.Status != http.StatusUnauthorized || de.Code != "unsigned" {
		t.Errorf("audiohook without a client secret: %v; want 401 unsigned", err)
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown = %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve = %v", err)
	}
}
