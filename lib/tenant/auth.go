package tenant

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

type ctxKey struct{}

// NewContext returns a context carrying the authenticated tenant.
func NewContext(ctx context.Context, t *Tenant) context.Context {
	return context.WithValue(ctx, ctxKey{}, t)
}

// FromContext returns the authenticated tenant of a request.
func FromContext(ctx context.Context) (*Tenant, bool) {
	t, ok := ctx.Value(ctxKey{}).(*Tenant)
	return t, ok && t != nil
}

// KeyFromRequest returns the API key of an HTTP request: the bearer token
// of the Authorization header, else the X-API-Key header. Query parameters
// are deliberately not read by this function: URLs end up in logs.
func KeyFromRequest(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if k, ok := strings.CutPrefix(h, "Bearer "); ok {
			return strings.TrimSpace(k)
		}
	}
	return strings.TrimSpace(r.Header.Get("X-API-Key"))
}

// KeyFromMetadata returns the API key of a gRPC call, from the
// "authorization: Bearer KEY" or "x-api-key" metadata.
func KeyFromMetadata(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if k, ok := strings.CutPrefix(v, "Bearer "); ok {
			return strings.TrimSpace(k)
		}
	}
	if v := md.Get("x-api-key"); len(v) > 0 {
		return strings.TrimSpace(v[0])
	}
	return ""
}

// RequireKey wraps an HTTP handler so that it runs only for requests with a
// valid API key, with the tenant in the request's context; others get 401.
func (r *Registry) RequireKey(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		t, k, ok := r.AuthenticateKey(KeyFromRequest(req))
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="calmline"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":{"code":"unauthenticated","message":"missing or unknown API key"}}`+"\n")
			return
		}
		h.ServeHTTP(w, req.WithContext(NewKeyContext(req.Context(), t, k)))
	})
}

// UnaryServerInterceptor authenticates the unary calls of the gRPC services
// named in services (full names, "calmline.fullcall.v1.ReportService"),
// putting the tenant in the context; other services pass untouched.
func (r *Registry) UnaryServerInterceptor(services ...string) grpc.UnaryServerInterceptor {
	guarded := map[string]bool{}
	for _, s := range services {
		guarded[s] = true
	}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		svc := strings.TrimPrefix(info.FullMethod, "/")
		if i := strings.LastIndexByte(svc, '/'); i >= 0 {
			svc = svc[:i]
		}
		if !guarded[svc] {
			return handler(ctx, req)
		}
		t, k, ok := r.AuthenticateKey(KeyFromMetadata(ctx))
		if !ok {
			return nil, status.Error(codes.Unauthenticated, "missing or unknown API key")
		}
		return handler(NewKeyContext(ctx, t, k), req)
	}
}

// Require wraps an HTTP handler so that it runs only for requests with a
// valid API key whose role may take action (the table in roles.go), with
// the tenant and the key in the request's context; unknown keys get 401,
// keys whose role may not take action 403.
func (r *Registry) Require(a Action, h http.Handler) http.Handler {
	return r.RequireKey(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		k, _ := KeyFromContext(req.Context())
		if err := k.Authorize(a); err != nil {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			b, _ := json.Marshal(map[string]any{"error": map[string]string{"code": "forbidden", "message": err.Error()}})
			w.Write(append(b, '\n'))
			return
		}
		h.ServeHTTP(w, req)
	}))
}

// UnaryServerInterceptorActions authenticates the unary calls of the
// methods in actions (full method names, "/calmline.fullcall.v1.ReportService/GetReport")
// and of every other method of their services, and lets each run only for
// a key whose role may take its action: unknown keys get UNAUTHENTICATED,
// refused roles PERMISSION_DENIED, and a method of a guarded service
// missing from actions is refused to every key (a new method is closed
// until the table names its action). Other services pass untouched.
func (r *Registry) UnaryServerInterceptorActions(actions map[string]Action) grpc.UnaryServerInterceptor {
	guarded := map[string]bool{}
	for m := range actions {
		if i := strings.LastIndexByte(m, '/'); i > 0 {
			guarded[m[:i]] = true
		}
	}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		svc := info.FullMethod
		if i := strings.LastIndexByte(svc, '/'); i > 0 {
			svc = svc[:i]
		}
		if !guarded[svc] {
			return handler(ctx, req)
		}
		t, k, ok := r.AuthenticateKey(KeyFromMetadata(ctx))
		if !ok {
			return nil, status.Error(codes.Unauthenticated, "missing or unknown API key")
		}
		a, known := actions[info.FullMethod]
		if !known {
			return nil, status.Errorf(codes.PermissionDenied, "%s is not in the role table", info.FullMethod)
		}
		if err := k.Authorize(a); err != nil {
			return nil, status.Error(codes.PermissionDenied, err.Error())
		}
		return handler(NewKeyContext(ctx, t, k), req)
	}
}
