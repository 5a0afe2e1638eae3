// Package identity proves which calmline service makes an internal gRPC
// call, and lets each internal method accept only the services that should
// call it: IngestService and RealtimeService.Analyze only the gateway,
// AlertService only realtime, CareService only fullcall. Reaching the port
// is never enough.
//
// A caller proves its identity in one of two ways:
//
//   - mTLS: a client certificate the server's client CAs verified, naming
//     the service in a URI SAN (spiffe://calmline/gateway) or, failing
//     that, in its Common Name (gateway).
//   - a deployment secret (without TLS: the embedded default and the
//     loopback cluster): each service sends a token derived from the
//     secret for its own name, HMAC-SHA256(secret, "calmline service
//     identity v1\x00" + name). Knowing one service's token (say, read off
//     a proxy's log) does not give another's; the server recomputes the
//     token for the name claimed and compares in constant time. The
//     secret file holds the current secret and, during a rotation, the
//     previous one: servers accept tokens of either, clients send the
//     current one, so a rotation needs no downtime (docs/security.md).
//
// Tokens and secrets are never logged; refusals are logged with the
// method, the claimed service and the reason, and counted
// (calmline_rpc_identity_refused_total{method, reason}).
package identity

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc/credentials"
)

// Service names: the identities calmline's services prove.
const (
	Gateway    = "gateway"
	Realtime   = "realtime"
	Fullcall   = "fullcall"
	Escalation = "escalation"
)

// Services lists every service identity.
var Services = []string{Gateway, Realtime, Fullcall, Escalation}

// Metadata keys of the secret-derived proof.
const (
	MDService = "calmline-service"
	MDToken   = "calmline-service-token"
)

// tokenPrefix versions the token format.
const tokenPrefix = "v1."

// Token returns the token proving service name under secret.
func Token(secret []byte, name string) string {
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(mac(secret, name))
}

func mac(secret []byte, name string) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte("calmline service identity v1\x00"))
	h.Write([]byte(name))
	return h.Sum(nil)
}

// ParseToken decodes a token into its MAC; the error says what is wrong
// without repeating the token.
func ParseToken(tok string) ([]byte, error) {
	rest, ok := strings.CutPrefix(tok, tokenPrefix)
	if !ok {
		return nil, errors.New("service token: unknown format (want v1.)")
	}
	if len(rest) != base64.RawURLEncoding.EncodedLen(sha256.Size) {
		return nil, fmt.Errorf("service token: %d characters after v1., want %d", len(rest), base64.RawURLEncoding.EncodedLen(sha256.Size))
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		return nil, errors.New("service token: not base64url")
	}
	return b, nil
}

// ParseService checks a claimed service name.
func ParseService(name string) (string, error) {
	if !slices.Contains(Services, name) {
		return "", fmt.Errorf("unknown service %q (want %s)", trunc(name), strings.Join(Services, ", "))
	}
	return name, nil
}

func trunc(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}

// Credentials sends service name's proof on every call: a
// grpc.PerRPCCredentials for rpc.Options.Identity. With a nil keyring it
// sends nothing (the client certificate proves the identity).
func Credentials(k *Keyring, name string) credentials.PerRPCCredentials {
	return perRPC{k: k, name: name}
}

type perRPC struct {
	k    *Keyring
	name string
}

func (p perRPC) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	if p.k == nil {
		return nil, nil
	}
	secret, err := p.k.current()
	if err != nil {
		return nil, fmt.Errorf("service identity: %w", err)
	}
	return map[string]string{MDService: p.name, MDToken: Token(secret, p.name)}, nil
}

// RequireTransportSecurity is false: on loopback and in the cluster
// without TLS the token is the proof; across hosts use TLS (docs/tls.md).
func (perRPC) RequireTransportSecurity() bool { return false }
