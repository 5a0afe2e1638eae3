package console

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"sync"
	"time"
)

// cookieName is the session cookie. Its value is a random token; the API
// key it stands for stays on the server.
const cookieName = "calmline_console"

// session is one signed-in browser. The key is held here only, never sent
// back to the browser, and never logged.
type session struct {
	key     string
	csrf    string
	expires time.Time
}

// sessions keeps the signed-in browsers, bounded: past max live sessions a
// sign-in is refused (counted by the caller) rather than evicting someone.
type sessions struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu sync.Mutex
	m  map[string]*session // by the SHA-256 of the cookie token
}

var errTooManySessions = errors.New("too many console sessions")

func newSessions(ttl time.Duration, max int, now func() time.Time) *sessions {
	return &sessions{ttl: ttl, max: max, now: now, m: map[string]*session{}}
}

func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func tokenID(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

// create starts a session for key and returns its cookie token.
func (s *sessions) create(key string) (string, *session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if len(s.m) >= s.max {
		for id, se := range s.m {
			if !now.Before(se.expires) {
				delete(s.m, id)
			}
		}
		if len(s.m) >= s.max {
			return "", nil, errTooManySessions
		}
	}
	tok := randomToken()
	se := &session{key: key, csrf: randomToken(), expires: now.Add(s.ttl)}
	s.m[tokenID(tok)] = se
	return tok, se, nil
}

// get returns the live session of a cookie token.
func (s *sessions) get(tok string) (*session, bool) {
	if tok == "" {
		return nil, false
	}
	id := tokenID(tok)
	s.mu.Lock()
	defer s.mu.Unlock()
	se, ok := s.m[id]
	if !ok {
		return nil, false
	}
	if !s.now().Before(se.expires) {
		delete(s.m, id)
		return nil, false
	}
	return se, true
}

func (s *sessions) delete(tok string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, tokenID(tok))
}

func (s *sessions) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// cookie builds the session cookie: HttpOnly (no script reads it),
// SameSite=Strict (no other site's page sends it), Secure when the console
// is served over TLS, and expiring with the session.
func (s *sessions) cookie(tok string, secure bool) *http.Cookie {
	return &http.Cookie{Name: cookieName, Value: tok, Path: "/", HttpOnly: true, Secure: secure,
		SameSite: http.SameSiteStrictMode, MaxAge: int(s.ttl / time.Second)}
}

func clearCookie(secure bool) *http.Cookie {
	return &http.Cookie{Name: cookieName, Value: "", Path: "/", HttpOnly: true, Secure: secure,
		SameSite: http.SameSiteStrictMode, MaxAge: -1}
}

// csrfOK reports whether a state-changing request carries the session's
// CSRF token in the X-CSRF-Token header. The cookie alone never suffices:
// SameSite=Strict keeps other sites from sending it, the token keeps a
// page that could (an old browser, a sibling host) from using it.
func csrfOK(r *http.Request, se *session) bool {
	got := r.Header.Get("X-CSRF-Token")
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(se.csrf)) == 1
}
