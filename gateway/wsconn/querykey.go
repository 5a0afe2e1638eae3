package wsconn

import (
	"net/http"
	"strings"
)

// KeyParameter is the query parameter that may carry the API key, for
// senders that can set no header before the upgrade (Twilio-style bridges,
// Asterisk dialplans).
const KeyParameter = "api_key"

// TakeQueryKey removes the api_key query parameter from r's URL, so that
// nothing after this can log it, and returns its value (trimmed; "" when
// absent). Call it for every request of a path that accepts it, even when a
// header already carried the key.
func TakeQueryKey(r *http.Request) string {
	q := r.URL.Query()
	if !q.Has(KeyParameter) {
		return ""
	}
	k := strings.TrimSpace(q.Get(KeyParameter))
	q.Del(KeyParameter)
	r.URL.RawQuery = q.Encode()
	r.RequestURI = r.URL.RequestURI()
	return k
}
