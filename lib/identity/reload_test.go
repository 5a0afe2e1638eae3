package identity

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// TestFailedReloadIsLoggedOnceAndCounted: a bad edit of the secret file
// keeps the old secrets, and is logged at ERROR and counted once per edit
// (not at every check), without any secret material; a good edit is
// taken again.
func TestFailedReloadIsLoggedOnceAndCounted(t *testing.T) {
	path := filepath.Join(t.TempDir(), SecretFileName)
	good := NewSecret()
	mtime := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		mtime = mtime.Add(time.Minute) // a new edit, whatever the file system's resolution
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	write(good)
	k, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	k.now = func() time.Time { return clock }
	var logs bytes.Buffer
	reader := sdkmetric.NewManualReader()
	if err := k.ReportReloadErrors(slog.New(slog.NewTextHandler(&logs, nil)), sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))); err != nil {
		t.Fatal(err)
	}
	goodMAC := mac(mustParse(t, good), "realtime")
	check := func(step string) {
		t.Helper()
		clock = clock.Add(reloadEvery)
		if !k.Verify("realtime", goodMAC) {
			t.Fatalf("%s: the old secret is no longer accepted", step)
		}
	}

	// A secret too short (valid base64): the most secret-like bad edit.
	short := "c2VjcmV0LXRoYXQtaXMtdG9vLXNob3J0"
	write(short)
	check("bad edit")
	check("bad edit, checked again")
	check("bad edit, checked a third time")
	write("bad!edit!Qx7")
	check("second bad edit")
	write(good + "\n" + NewSecret() + "\n" + NewSecret())
	check("third bad edit")

	out := logs.String()
	if n := strings.Count(out, "level=ERROR"); n != 3 {
		t.Errorf("%d ERROR lines for 3 bad edits checked 5 times; want 3:\n%s", n, out)
	}
	if !strings.Contains(out, "path="+path) {
		t.Errorf("the log does not name the file:\n%s", out)
	}
	for _, secret := range []string{good, short, "bad!edit!Qx7"} {
		if strings.Contains(out, secret) {
			t.Errorf("the log shows secret material %q:\n%s", secret, out)
		}
	}
	if got := reloadErrors(t, reader); got != 3 {
		t.Errorf("calmline.identity.secret_reload_errors = %d; want 3", got)
	}

	// A good edit is taken, and said so.
	next := NewSecret()
	write(next)
	clock = clock.Add(reloadEvery)
	if !k.Verify("realtime", mac(mustParse(t, next), "realtime")) {
		t.Error("a good edit after bad ones was not taken")
	}
	if !strings.Contains(logs.String(), "secret file reloaded") {
		t.Errorf("the recovery is not logged:\n%s", logs.String())
	}
	// A file that disappears is one more failure, logged once.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	check2 := func() { clock = clock.Add(reloadEvery); k.Verify("realtime", nil) }
	check2()
	check2()
	if got := reloadErrors(t, reader); got != 4 {
		t.Errorf("after the file was removed: %d reload errors; want 4", got)
	}
}

func mustParse(t *testing.T, s string) []byte {
	t.Helper()
	b, err := ParseSecrets(s)
	if err != nil {
		t.Fatal(err)
	}
	return b[0]
}

func reloadErrors(t *testing.T, r *sdkmetric.ManualReader) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == "calmline.identity.secret_reload_errors" {
				var n int64
				for _, p := range m.Data.(metricdata.Sum[int64]).DataPoints {
					n += p.Value
				}
				return n
			}
		}
	}
	return 0
}
