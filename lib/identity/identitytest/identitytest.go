// Package identitytest gives tests a deployment secret and a client that
// proves, on each internal method, the service that method accepts — so
// that a test fixture with one connection can act as the gateway on
// IngestService and as realtime on AlertService.
package identitytest

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/calmline/calmline/lib/identity"
)

// Keyring returns a keyring with a new random secret.
func Keyring(t testing.TB) *identity.Keyring {
	t.Helper()
	s, err := identity.ParseSecrets(identity.NewSecret())
	if err != nil {
		t.Fatal(err)
	}
	k, err := identity.NewKeyring(s...)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// DialOptions returns interceptors that add to every call of an internal
// method (identity.Internal) the token of the first service allowed to
// make it; other calls go unchanged.
func DialOptions(k *identity.Keyring) []grpc.DialOption {
	add := func(ctx context.Context, method string) context.Context {
		svc := caller(method)
		if svc == "" {
			return ctx
		}
		tok, err := k.Token(svc)
		if err != nil {
			panic(err)
		}
		return metadata.AppendToOutgoingContext(ctx, identity.MDService, svc, identity.MDToken, tok)
	}
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(add(ctx, method), method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(add(ctx, method), desc, cc, method, opts...)
		}),
	}
}

func caller(method string) string {
	if who, ok := identity.Internal[method]; ok && len(who) > 0 {
		return who[0]
	}
	for i := len(method) - 1; i > 0; i-- {
		if method[i] == '/' {
			if who, ok := identity.Internal[method[:i+1]]; ok && len(who) > 0 {
				return who[0]
			}
			break
		}
	}
	return ""
}
