package console

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"time"

	"github.com/calmline/calmline/lib/field"
	"github.com/calmline/calmline/lib/service"
)

// sessionFunc handles a request of a signed-in browser.
type sessionFunc func(w http.ResponseWriter, r *http.Request, se *session, a Access)

// maxBody bounds the JSON bodies the console accepts.
const maxBody = 8 << 10

// sameOrigin refuses a request whose Origin (when the browser sends one)
// is not the console's own: a second line against cross-site requests.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

// jsonBody reads a JSON request body. Requiring application/json keeps
// plain HTML forms (which other sites could post without a preflight) out.
func jsonBody(w http.ResponseWriter, r *http.Request, v any) bool {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/json" {
		service.WriteError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "send application/json")
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		service.WriteError(w, http.StatusBadRequest, "bad_request", "malformed JSON body: "+err.Error())
		return false
	}
	return true
}

func (s *Server) secure() bool { return s.o.TLS != nil }

// withSession authenticates a request by its session cookie, checks the key
// is still valid (it may have been disabled since sign-in) and, for
// state-changing requests, the CSRF token and the origin.
func (s *Server) withSession(mutates bool, h sessionFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(cookieName)
		var se *session
		ok := false
		if err == nil {
			se, ok = s.sessions.get(c.Value)
		}
		if !ok {
			service.WriteError(w, http.StatusUnauthorized, "unauthenticated", "sign in first")
			return
		}
		t, k, ok := s.o.Tenants.AuthenticateKey(se.key)
		if !ok {
			s.sessions.delete(c.Value)
			http.SetCookie(w, clearCookie(s.secure()))
			service.WriteError(w, http.StatusUnauthorized, "unauthenticated", "the key of this session is no longer valid; sign in again")
			return
		}
		a, ok := AccessFor(t, k)
		if !ok {
			service.WriteError(w, http.StatusForbidden, "forbidden", "this key's role has no access to the console")
			return
		}
		if mutates && (!sameOrigin(r) || !csrfOK(r, se)) {
			service.WriteError(w, http.StatusForbidden, "csrf", "missing or wrong X-CSRF-Token, or a request from another origin")
			return
		}
		h(w, r, se, a)
	})
}

type sessionJSON struct {
	Tenant      string `json:"tenant"`
	TenantName  string `json:"tenant_name"`
	KeyID       string `json:"key_id"`
	Role        string `json:"role"`
	AgentID     string `json:"agent_id,omitempty"`
	CSRF        string `json:"csrf"`
	AgentScores bool   `json:"agent_scores"`
	Act         bool   `json:"act"`
	Escalations bool   `json:"escalations"`
	Deliveries  bool   `json:"deliveries"`
	Audit       bool   `json:"audit"`
	Care        bool   `json:"care"`
	Expires     string `json:"expires"`
}

func (s *Server) sessionJSON(se *session, a Access) sessionJSON {
	name := a.TenantID
	if t, ok := s.o.Tenants.Tenant(a.TenantID); ok {
		name = t.Name
	}
	return sessionJSON{Tenant: a.TenantID, TenantName: name, KeyID: a.KeyID, Role: a.Role, AgentID: a.AgentID, CSRF: se.csrf,
		AgentScores: a.AgentScores, Act: a.Act, Escalations: a.Escalations, Deliveries: a.Deliveries, Audit: a.Audit, Care: a.Care,
		Expires: se.expires.UTC().Format(time.RFC3339)}
}

// login exchanges an API key for a session cookie.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		service.WriteError(w, http.StatusForbidden, "csrf", "sign-in from another origin")
		return
	}
	var body struct {
		Key string `json:"key"`
	}
	if !jsonBody(w, r, &body) {
		return
	}
	t, k, ok := s.o.Tenants.AuthenticateKey(body.Key)
	if !ok {
		s.metrics.refusedSignIns.Add(1)
		service.WriteError(w, http.StatusUnauthorized, "unauthenticated", "unknown or disabled API key")
		return
	}
	a, ok := AccessFor(t, k)
	if !ok {
		s.metrics.refusedSignIns.Add(1)
		service.WriteError(w, http.StatusForbidden, "forbidden", "this key's role has no access to the console")
		return
	}
	tok, se, err := s.sessions.create(body.Key)
	if err != nil {
		s.metrics.refusedSignIns.Add(1)
		service.WriteError(w, http.StatusServiceUnavailable, "too_many_sessions", "the console has too many sessions; try again later")
		return
	}
	s.metrics.signIns.Add(1)
	s.log.Info("console: signed in", "tenant", a.TenantID, "key_id", a.KeyID, "role", a.Role)
	http.SetCookie(w, s.sessions.cookie(tok, s.secure()))
	service.WriteJSON(w, http.StatusOK, s.sessionJSON(se, a))
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, se *session, a Access) {
	if c, err := r.Cookie(cookieName); err == nil {
		s.sessions.delete(c.Value)
	}
	http.SetCookie(w, clearCookie(s.secure()))
	service.WriteJSON(w, http.StatusOK, map[string]bool{"signed_out": true})
}

func (s *Server) sessionInfo(w http.ResponseWriter, r *http.Request, se *session, a Access) {
	service.WriteJSON(w, http.StatusOK, s.sessionJSON(se, a))
}

// live streams the wall to a browser as Server-Sent Events: a snapshot,
// then batches of changes.
func (s *Server) live(w http.ResponseWriter, r *http.Request, se *session, a Access) {
	v, sub, snap, ok := s.hub.subscribe(r.Context(), se.key, a)
	if !ok {
		service.WriteError(w, http.StatusServiceUnavailable, "stopping", "the console is stopping; reconnect")
		return
	}
	defer v.unsubscribe(sub)
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	write := func(b []byte) bool {
		rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write(snap) {
		return
	}
	beat := time.NewTicker(15 * time.Second)
	defer beat.Stop()
	// A stream outlives no sign-out, expiry or disabled key by more than
	// RecheckEvery.
	tok := ""
	if c, err := r.Cookie(cookieName); err == nil {
		tok = c.Value
	}
	recheck := time.NewTicker(s.o.RecheckEvery)
	defer recheck.Stop()
	for {
		select {
		case b := <-sub.ch:
			if !write(b) {
				return
			}
		case <-recheck.C:
			if _, ok := s.sessions.get(tok); !ok {
				return
			}
			if _, _, ok := s.o.Tenants.AuthenticateKey(se.key); !ok {
				return
			}
		case <-beat.C:
			rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(w, ": ping\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		case <-sub.kicked:
			return
		case <-r.Context().Done():
			return
		}
	}
}

// apiError is a backend's answer other than 2xx.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s: %s", e.status, e.code, e.msg) }

// backend calls a service's REST API with the session's key and decodes
// its JSON answer into out.
func (s *Server) backend(ctx context.Context, se *session, method, base, path string, q url.Values, body any, out any) error {
	u := base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+se.key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.api.Do(req)
	if err != nil {
		return &apiError{status: http.StatusBadGateway, code: "unavailable", msg: "the service did not answer"}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return &apiError{status: http.StatusBadGateway, code: "unavailable", msg: "the service's answer broke off"}
	}
	if resp.StatusCode/100 != 2 {
		var e service.APIError
		json.Unmarshal(b, &e)
		if e.Error.Code == "" {
			e.Error.Code, e.Error.Message = "upstream", resp.Status
		}
		return &apiError{status: resp.StatusCode, code: e.Error.Code, msg: e.Error.Message}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return &apiError{status: http.StatusBadGateway, code: "upstream", msg: "unreadable answer from the service"}
	}
	return nil
}

func writeErr(w http.ResponseWriter, err error) {
	var ae *apiError
	if errors.As(err, &ae) {
		service.WriteError(w, ae.status, ae.code, ae.msg)
		return
	}
	service.WriteError(w, http.StatusBadGateway, "unavailable", "a service did not answer")
}

func checkID(w http.ResponseWriter, name, v string) bool {
	if err := field.ID(name, v); err != nil {
		service.WriteError(w, http.StatusBadRequest, "bad_request", err.Error())
		return false
	}
	return true
}
