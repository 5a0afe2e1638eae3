package identity

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"net/url"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Policy says which services may call each internal method: keys are full
// method names ("/calmline.realtime.v1.RealtimeService/Analyze") or whole
// services ("/calmline.fullcall.v1.IngestService/"). Methods it does not
// name are not internal: they pass untouched (tenant-facing services
// authenticate API keys themselves; health and reflection are open).
type Policy map[string][]string

// Internal is calmline's policy.
var Internal = Policy{
	"/calmline.fullcall.v1.IngestService/":          {Gateway},
	"/calmline.realtime.v1.RealtimeService/Analyze": {Gateway},
	"/calmline.escalation.v1.AlertService/":         {Realtime},
	"/calmline.escalation.v1.CareService/":          {Fullcall},
}

// allowed returns who may call method, and whether it is internal.
func (p Policy) allowed(method string) ([]string, bool) {
	if who, ok := p[method]; ok {
		return who, true
	}
	if i := strings.LastIndexByte(method, '/'); i > 0 {
		who, ok := p[method[:i+1]]
		return who, ok
	}
	return nil, false
}

// Refusal reasons, the reason label of the refusal counter.
const (
	ReasonMissing      = "missing"       // no certificate naming a service, no token
	ReasonInvalid      = "invalid"       // a token that does not prove the service it names, or is malformed
	ReasonWrongService = "wrong_service" // a proven service this method does not accept
)

// VerifierOptions configures a Verifier.
type VerifierOptions struct {
	// Keyring verifies secret-derived tokens; nil: only client
	// certificates prove an identity.
	Keyring *Keyring
	// Policy defaults to Internal.
	Policy        Policy
	Logger        *slog.Logger
	MeterProvider metric.MeterProvider
}

// Verifier checks the caller of every internal method.
type Verifier struct {
	o       VerifierOptions
	refused metric.Int64Counter
}

// NewVerifier returns a Verifier.
func NewVerifier(o VerifierOptions) (*Verifier, error) {
	if o.Policy == nil {
		o.Policy = Internal
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MeterProvider == nil {
		o.MeterProvider = noop.NewMeterProvider()
	}
	c, err := o.MeterProvider.Meter("github.com/calmline/calmline/lib/identity").Int64Counter("calmline.rpc.identity.refused",
		metric.WithDescription("Internal gRPC calls refused for want of the right service identity, by method and reason."))
	if err != nil {
		return nil, err
	}
	if err := o.Keyring.ReportReloadErrors(o.Logger, o.MeterProvider); err != nil {
		return nil, err
	}
	return &Verifier{o: o, refused: c}, nil
}

// Check returns nil when the caller of method in ctx is a service the
// policy accepts for it (or method is not internal), else an
// UNAUTHENTICATED or PERMISSION_DENIED status, counted and logged.
//
// A call may carry two proofs: its connection's client certificate and a
// token. It is accepted when either proves a service the method accepts —
// so that one process running several services behind one certificate
// (calmline serve with --backend-cert) still proves each by its token.
func (v *Verifier) Check(ctx context.Context, method string) error {
	who, internal := v.o.Policy.allowed(method)
	if !internal {
		return nil
	}
	certName := ""
	if cert := clientCert(ctx); cert != nil {
		if n, err := FromCertificate(cert); err == nil {
			certName = n
		}
	}
	tokName, tokReason := v.fromToken(ctx)
	if certName != "" && contains(who, certName) || tokReason == "" && contains(who, tokName) {
		return nil
	}
	var reason, name, how string
	switch {
	case tokReason == "":
		reason, name, how = ReasonWrongService, tokName, "token"
	case certName != "":
		reason, name, how = ReasonWrongService, certName, "certificate"
	case tokReason == ReasonInvalid:
		reason, name, how = ReasonInvalid, tokName, "token"
	default:
		reason, how = ReasonMissing, "none"
	}
	v.refused.Add(ctx, 1, metric.WithAttributes(attribute.String("method", method), attribute.String("reason", reason)))
	attrs := []any{"method", method, "reason", reason, "proof", how}
	if name != "" {
		attrs = append(attrs, "service", name)
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		attrs = append(attrs, "peer", p.Addr.String())
	}
	v.o.Logger.Warn("internal call refused", attrs...)
	switch reason {
	case ReasonWrongService:
		return status.Errorf(codes.PermissionDenied, "%s accepts only %s, not %s", method, strings.Join(who, ", "), name)
	case ReasonInvalid:
		return status.Errorf(codes.Unauthenticated, "%s is internal: the service identity did not verify", method)
	}
	return status.Errorf(codes.Unauthenticated, "%s is internal: only %s may call it, with a service identity (mTLS certificate or deployment-secret token)", method, strings.Join(who, ", "))
}

// fromToken returns the service a call's token proves, or why not
// (ReasonMissing: no token at all; ReasonInvalid: one that does not
// verify).
func (v *Verifier) fromToken(ctx context.Context) (name, reason string) {
	md, _ := metadata.FromIncomingContext(ctx)
	claimed, toks := md.Get(MDService), md.Get(MDToken)
	if len(claimed) == 0 && len(toks) == 0 {
		return "", ReasonMissing
	}
	if len(claimed) != 1 || len(toks) != 1 {
		return "", ReasonInvalid
	}
	n, err := ParseService(claimed[0])
	if err != nil {
		return "", ReasonInvalid
	}
	m, err := ParseToken(toks[0])
	if err != nil || v.o.Keyring == nil || !v.o.Keyring.Verify(n, m) {
		return n, ReasonInvalid
	}
	return n, ""
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// clientCert returns the verified client certificate of the call's
// connection, or nil.
func clientCert(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	var chains [][]*x509.Certificate
	if ai, ok := p.AuthInfo.(credentials.TLSInfo); ok {
		chains = ai.State.VerifiedChains
	}
	if len(chains) == 0 || len(chains[0]) == 0 {
		return nil // no certificate, or one nobody verified
	}
	return chains[0][0]
}

// SPIFFETrustDomain is the trust domain of the URI SANs naming services:
// spiffe://calmline/gateway.
const SPIFFETrustDomain = "calmline"

// FromCertificate returns the service a client certificate names: a URI
// SAN spiffe://calmline/NAME, else a Common Name NAME; NAME must be one of
// Services. A certificate with a calmline URI SAN that names no service
// is refused rather than falling back to its CN.
func FromCertificate(cert *x509.Certificate) (string, error) {
	for _, u := range cert.URIs {
		if n, ok, err := fromURI(u); ok {
			return n, err
		}
	}
	if n, err := ParseService(cert.Subject.CommonName); err == nil {
		return n, nil
	}
	return "", errors.New("the certificate names no calmline service (URI SAN spiffe://calmline/NAME or CN NAME)")
}

// ParseSPIFFE parses a URI SAN; ok is false when it is not in calmline's
// trust domain.
func ParseSPIFFE(raw string) (name string, ok bool, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", false, nil
	}
	return fromURI(u)
}

func fromURI(u *url.URL) (string, bool, error) {
	if u.Scheme != "spiffe" || u.Host != SPIFFETrustDomain {
		return "", false, nil
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Port() != "" {
		return "", true, errors.New("spiffe id with userinfo, port, query or fragment")
	}
	n, err := ParseService(strings.TrimPrefix(u.Path, "/"))
	return n, true, err
}

// UnaryServerInterceptor checks every unary call.
func (v *Verifier) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := v.Check(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor checks every stream before its handler runs.
func (v *Verifier) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := v.Check(ss.Context(), info.FullMethod); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}
