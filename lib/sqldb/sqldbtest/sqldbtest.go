// Package sqldbtest gives tests real databases: a fresh SQLite file, or a
// fresh database on a real PostgreSQL server. The server is the one named by
// $CALMLINE_TEST_POSTGRES (a DSN), else a throwaway cluster that the
// project's scripts/postgres.sh starts on a free loopback port the first
// time a test asks for one; call Stop from TestMain to stop it.
//
// PostgreSQL tests are skipped only when no server can be started (the
// package is not installed and cannot be); with $CALMLINE_REQUIRE_POSTGRES=1,
// as .ci/run sets it, that is a failure instead.
package sqldbtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calmline/calmline/lib/sqldb"
)

// SQLite returns the DSN of a new SQLite file in t's temporary directory.
func SQLite(t testing.TB) string {
	t.Helper()
	return "sqlite:" + filepath.Join(t.TempDir(), "test.db")
}

// Each runs f as a subtest on each store, "sqlite" and "postgres", with
// a fresh database: the way one suite proves both stores behave alike.
func Each(t *testing.T, f func(t *testing.T, dsn string)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) { f(t, SQLite(t)) })
	t.Run("postgres", func(t *testing.T) { f(t, Postgres(t)) })
}

var (
	mu      sync.Mutex
	started bool
	baseDSN string
	dir     string
	script  string
	failure error
)

// Postgres returns the DSN of a new, empty database on the test server; the
// database is dropped when t ends.
func Postgres(t testing.TB) string {
	t.Helper()
	base, err := server()
	if err != nil {
		if os.Getenv("CALMLINE_REQUIRE_POSTGRES") == "1" {
			t.Fatalf("PostgreSQL is required ($CALMLINE_REQUIRE_POSTGRES=1) but did not start: %v", err)
		}
		t.Skipf("PostgreSQL not available: %v", err)
	}
	name := "t_" + randomHex(8)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := sqldb.Open(ctx, base)
	if err != nil {
		t.Fatalf("connecting to the test server: %v", err)
	}
	defer admin.Close()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("creating database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		admin, err := sqldb.Open(ctx, base)
		if err != nil {
			t.Logf("dropping database %s: %v", name, err)
			return
		}
		defer admin.Close()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("dropping database %s: %v", name, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// server returns the DSN of the test server, starting it once.
func server() (string, error) {
	mu.Lock()
	defer mu.Unlock()
	if started {
		return baseDSN, failure
	}
	started = true
	if dsn := os.Getenv("CALMLINE_TEST_POSTGRES"); dsn != "" {
		baseDSN = dsn
		return baseDSN, nil
	}
	script, failure = findScript()
	if failure != nil {
		return "", failure
	}
	if out, err := exec.Command(script, "install").CombinedOutput(); err != nil {
		failure = fmt.Errorf("%s install: %v: %s", script, err, strings.TrimSpace(string(out)))
		return "", failure
	}
	// Not t.TempDir: the server runs as another user when the tests run
	// as root, and must be able to reach its directory.
	d, err := os.MkdirTemp("", "calmline-pg-")
	if err != nil {
		failure = err
		return "", failure
	}
	out, err := exec.Command(script, "start", d).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		exec.Command(script, "stop", d).Run()
		failure = fmt.Errorf("%s start: %v: %s", script, err, strings.TrimSpace(stderr))
		return "", failure
	}
	dir = d
	baseDSN = strings.TrimSpace(string(out))
	return baseDSN, nil
}

// Stop stops the cluster this package started, if any. Call it from
// TestMain after m.Run.
func Stop() {
	mu.Lock()
	defer mu.Unlock()
	if dir != "" {
		exec.Command(script, "stop", dir).Run()
		dir = ""
	}
}

// findScript looks for scripts/postgres.sh in the working directory and its
// parents (tests run in their package's directory inside the repository).
func findScript() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		p := filepath.Join(d, "scripts", "postgres.sh")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("scripts/postgres.sh not found above %s", wd)
		}
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
