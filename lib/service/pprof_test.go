package service

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestProfilerBehindTheAdminToken: /debug/pprof/* answers only a caller
// with the admin token; without a token configured it does not exist.
func TestProfilerBehindTheAdminToken(t *testing.T) {
	const token = "admin-token-0123456789"
	h, served := startHost(t, Options{Name: "test", AdminToken: token, ShutdownGrace: time.Second})
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		h.Shutdown(ctx)
		<-served
	}()
	base := "http://" + h.Addr().String()
	fetch := func(path, auth string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/heap", "/debug/pprof/cmdline", "/debug/pprof/symbol", "/debug/pprof/profile?seconds=1", "/debug/pprof/trace?seconds=1"} {
		for _, auth := range []string{"", "Bearer wrong-token-0123456789", "Basic " + token, token} {
			code, body, hdr := fetch(path, auth)
			if code != http.StatusUnauthorized || !strings.Contains(hdr.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("GET %s with Authorization %q: %d %q; want 401 with a Bearer challenge", path, auth, code, body)
			}
			if strings.Contains(body, "goroutine") {
				t.Errorf("GET %s with Authorization %q leaked profile data", path, auth)
			}
		}
	}
	if code, body, _ := fetch("/debug/pprof/goroutine?debug=1", "Bearer "+token); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("goroutine profile with the token: %d %.100q; want 200 and the goroutines", code, body)
	}
	if code, body, _ := fetch("/debug/pprof/heap", "Bearer "+token); code != http.StatusOK || len(body) == 0 {
		t.Errorf("heap profile with the token: %d, %d bytes; want 200 and a profile", code, len(body))
	}
}

// TestNoProfilerWithoutAdminToken: no token, no /debug/pprof.
func TestNoProfilerWithoutAdminToken(t *testing.T) {
	h, served := startHost(t, Options{Name: "test", ShutdownGrace: time.Second})
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		h.Shutdown(ctx)
		<-served
	}()
	if code, _ := get(t, "http://"+h.Addr().String()+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("GET /debug/pprof/ without an admin token configured: %d; want 404", code)
	}
}
