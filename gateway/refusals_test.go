package gateway

import (
	"net/http"
	"testing"

	"github.com/calmline/calmline/gateway/admission"
	"github.com/calmline/calmline/gateway/session"
	"github.com/calmline/calmline/lib/tenant"
)

// One refusal metric for every protocol: a refusal is counted under the
// protocol of the path it came on — by the edge before the upgrade, and
// by the admission Guard in front of it — and under no other.
func TestRefusalsAreCountedByProtocol(t *testing.T) {
	key := tenant.NewKey()
	f := newFixture(t, tenantsYAML(tenantDef{id: "acme", max: 10, keys: []keyDef{{id: "a", key: key}}}), func(o *Options) {
		o.Admission.AllowedOrigins = []string{"https://wall.acme.example"}
	})
	audiohookKey := func(k string) http.Header { return http.Header{"X-Api-Key": {k}} }
	for _, tc := range []struct {
		protocol, path string
		h              http.Header
		status         int
		reason         string
	}{
		{"native", "/ws/native", bearer("clk_wrong"), http.StatusUnauthorized, "unauthenticated"},
		{"audiohook", "/ws/audiohook", audiohookKey("clk_wrong"), http.StatusUnauthorized, "audiohook_unauthenticated"},
		{"twilio", "/ws/twilio?api_key=clk_wrong", nil, http.StatusUnauthorized, "unauthenticated"},
		{"asterisk", "/ws/asterisk?call_id=r1&role=caller", basic("clk_wrong", ""), http.StatusUnauthorized, "unauthenticated"},
		{"asterisk", "/ws/asterisk?call_id=r2&role=singer", basic(key, ""), http.StatusBadRequest, "asterisk_bad_request"},
		// Refused by the Guard, before the protocol's handler.
		{"twilio", "/ws/twilio", basic(key, "https://evil.example"), http.StatusForbidden, admission.ReasonOrigin},
		{"asterisk", "/ws/asterisk?call_id=r3&role=caller", basic(key, "https://evil.example"), http.StatusForbidden, admission.ReasonOrigin},
	} {
		before := map[string]float64{}
		for _, p := range session.Protocols {
			before[p] = f.mt.Value("calmline.gateway.calls.refused", "protocol", p, "reason", tc.reason)
		}
		if ws, code, _ := f.dialWS(t, tc.path, tc.h); ws != nil || code != tc.status {
			t.Fatalf("%s %s: upgraded %v, status %d; want %d", tc.protocol, tc.path, ws != nil, code, tc.status)
		}
		for _, p := range session.Protocols {
			want := before[p]
			if p == tc.protocol {
				want++
			}
			if got := f.mt.Value("calmline.gateway.calls.refused", "protocol", p, "reason", tc.reason); got != want {
				t.Errorf("%s %s: refusals %s under protocol %q = %v; want %v", tc.protocol, tc.path, tc.reason, p, got, want)
			}
		}
	}
}
