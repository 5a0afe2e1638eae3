// Package escalation is calmline's escalation service, modelled on
// Prometheus Alertmanager's notification pipeline. It takes alerts from
// live scoring and records each durably before acknowledging it, so that an
// alert accepted is never lost; repeats are de-duplicated before anything
// is sent; an episode opens at most one escalation per call, which runs
// the tenant's ladder (notify the on-call team, ask the PBX to warn the
// caller, ask the intervention team to take the call over) through a
// durable outbox of signed HTTP requests (Standard Webhooks) retried with
// backoff until they succeed or are dead-lettered. People list,
// acknowledge and resolve escalations and re-drive dead letters over gRPC
// and REST; every change is an event and an entry of a per-tenant,
// hash-chained audit trail. Finished calls feed each agent's exposure
// record, and the tenant's care rules recommend a break or a counsellor.
package escalation

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/calmline/calmline/lib/identity"
	"github.com/calmline/calmline/lib/service"
	"github.com/calmline/calmline/lib/sqldb"
	"github.com/calmline/calmline/lib/tenant"
	"github.com/calmline/calmline/lib/webhook"
	escalationv1 "github.com/calmline/calmline/proto/calmline/escalation/v1"
)

// Options configures an escalation Server.
type Options struct {
	Logger         *slog.Logger
	MeterProvider  metric.MeterProvider
	TracerProvider trace.TracerProvider
	Propagator     propagation.TextMapPropagator
	// Metrics serves /metrics on the service's port; none when nil.
	Metrics http.Handler
	// AdminToken, when set, serves /debug/pprof/* on the service's port to
	// callers sending it as a bearer token; none when empty.
	AdminToken string
	// TLS, when set, makes the listener TLS-only (gRPC and HTTP split by
	// ALPN; see service.Options.TLS).
	TLS *tls.Config
	// Identity is the deployment secret proving this service to the
	// others and verifying who calls its internal methods (lib/identity).
	// Without it only mTLS client certificates naming a service prove an
	// identity: internal methods refuse every other caller.
	Identity *identity.Keyring
	// Tenants authenticates people's requests.
	Tenants *tenant.Registry
	// Database is "sqlite:PATH" or "postgres://..."; defaults to
	// DataDir/escalation.db.
	Database string
	DataDir  string
	// ShutdownGrace bounds a stop triggered by Serve's context.
	ShutdownGrace time.Duration
	// DeliveryWorkers bounds the delivery attempts in flight.
	DeliveryWorkers int
	// PollInterval is how often the outbox is checked when nothing woke
	// it (another instance's work, clock-driven retries are timed
	// exactly).
	PollInterval time.Duration
	// DeliveryDrain is how long attempts in flight may finish when the
	// service stops; the rest are cut and retried after the restart.
	DeliveryDrain time.Duration
	// MaxBacklog bounds each tenant's unfinished deliveries: past it
	// PostAlerts refuses with RESOURCE_EXHAUSTED (realtime retries).
	MaxBacklog int
	// Transport carries outbound requests (default: a dedicated
	// http.Transport).
	Transport http.RoundTripper
	// Now returns the time (tests set it).
	Now func() time.Time
}

// DefaultOptions returns the defaults.
func DefaultOptions() Options {
	return Options{DataDir: "data", ShutdownGrace: 10 * time.Second, DeliveryWorkers: 16, PollInterval: time.Second,
		DeliveryDrain: 5 * time.Second, MaxBacklog: 100_000, Now: time.Now}
}

func (o *Options) validate() error {
	switch {
	case o.Tenants == nil:
		return errors.New("escalation: Tenants is required")
	case o.Database == "" && o.DataDir == "":
		return errors.New("escalation: Database or DataDir is required")
	case o.ShutdownGrace <= 0:
		return fmt.Errorf("escalation: ShutdownGrace %v must be positive", o.ShutdownGrace)
	case o.DeliveryWorkers <= 0:
		return fmt.Errorf("escalation: DeliveryWorkers %d must be positive", o.DeliveryWorkers)
	case o.PollInterval <= 0:
		return fmt.Errorf("escalation: PollInterval %v must be positive", o.PollInterval)
	case o.DeliveryDrain < 0 || o.MaxBacklog < 0:
		return errors.New("escalation: DeliveryDrain and MaxBacklog must not be negative")
	}
	return nil
}

// Server is an escalation instance.
type Server struct {
	escalationv1.UnimplementedAlertServiceServer
	escalationv1.UnimplementedEscalationServiceServer
	escalationv1.UnimplementedCareServiceServer
	escalationv1.UnimplementedDeliveryServiceServer
	escalationv1.UnimplementedAuditServiceServer
	escalationv1.UnimplementedSilenceServiceServer

	o      Options
	log    *slog.Logger
	host   *service.Host
	store  *store
	m      *metrics
	disp   *dispatcher
	client *webhook.Client
}

// New opens the store and returns a Server; Serve starts it.
func New(ctx context.Context, o Options) (*Server, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Database == "" {
		o.Database = "sqlite:" + filepath.Join(o.DataDir, "escalation.db")
	}
	st, err := openStore(ctx, o.Database, o.Tenants, o.Now)
	if err != nil {
		return nil, fmt.Errorf("escalation: %w", err)
	}
	st.maxBacklog = o.MaxBacklog
	st.trace = newTracing(o.TracerProvider, o.Propagator)
	m, err := newMetrics(o.MeterProvider)
	if err != nil {
		st.db.Close()
		return nil, err
	}
	s := &Server{o: o, log: o.Logger.With("service", "escalation"), store: st, m: m}
	s.client = webhook.NewClient(webhook.ClientOptions{Transport: o.Transport, UserAgent: "calmline-escalation/1"})
	s.disp = &dispatcher{st: st, send: s.client, log: s.log, m: m, workers: o.DeliveryWorkers, poll: o.PollInterval,
		drain: o.DeliveryDrain, wake: make(chan struct{}, 1), slots: make(chan struct{}, o.DeliveryWorkers),
		results: make(chan attemptResult, o.DeliveryWorkers), rand: uniform}
	st.onWork = s.disp.notify
	if o.MeterProvider != nil {
		if _, err := m.meter.Int64ObservableGauge("calmline.escalation.deliveries",
			metric.WithDescription("Deliveries in the outbox, by state (pending, in_flight, dead); succeeded ones are not counted."),
			metric.WithInt64Callback(s.observeOutbox)); err != nil {
			st.db.Close()
			return nil, err
		}
	}
	verifier, err := identity.NewVerifier(identity.VerifierOptions{Keyring: o.Identity, Logger: s.log, MeterProvider: o.MeterProvider})
	if err != nil {
		return nil, err
	}
	s.host = service.NewHost(service.Options{
		Name:           "escalation",
		Logger:         s.log,
		MeterProvider:  o.MeterProvider,
		TracerProvider: o.TracerProvider,
		Propagator:     o.Propagator,
		Metrics:        o.Metrics,
		AdminToken:     o.AdminToken,
		ShutdownGrace:  o.ShutdownGrace,
		TLS:            o.TLS,
		// AlertService (only realtime) and CareService (only fullcall) are
		// internal; the others are tenant-facing and authenticate API keys.
		UnaryInterceptors: []grpc.UnaryServerInterceptor{
			verifier.UnaryServerInterceptor(),
			o.Tenants.UnaryServerInterceptorActions(grpcActions),
		},
		StreamInterceptors: []grpc.StreamServerInterceptor{verifier.StreamServerInterceptor()},
	})
	escalationv1.RegisterAlertServiceServer(s.host.GRPC, s)
	escalationv1.RegisterEscalationServiceServer(s.host.GRPC, s)
	escalationv1.RegisterCareServiceServer(s.host.GRPC, s)
	escalationv1.RegisterDeliveryServiceServer(s.host.GRPC, s)
	escalationv1.RegisterAuditServiceServer(s.host.GRPC, s)
	escalationv1.RegisterSilenceServiceServer(s.host.GRPC, s)
	for _, r := range restRoutes(s) {
		s.host.Mux.Handle(r.pattern, o.Tenants.Require(r.action, r.h))
	}
	s.host.AddReadyCheck(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := st.db.PingContext(ctx); err != nil {
			return fmt.Errorf("escalation store: %w", err)
		}
		return nil
	})
	return s, nil
}

// Serve serves lis and runs the outbox until ctx ends or Shutdown is
// called; then attempts in flight get DeliveryDrain to finish, and the
// store closes.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	if s.store.db.Dialect == sqldb.SQLite {
		// One process owns a SQLite file: whatever was in flight belonged
		// to a process that is gone (a crash, kill -9). Its receivers see
		// the same ids again and de-duplicate.
		if n, err := s.store.releaseAll(ctx); err != nil {
			s.store.close()
			return fmt.Errorf("escalation: %w", err)
		} else if n > 0 {
			s.log.Warn("deliveries in flight at the last stop are due again", "deliveries", n)
		}
	}
	dctx, stopDispatch := context.WithCancel(context.WithoutCancel(ctx))
	dispatched := make(chan struct{})
	go func() {
		defer close(dispatched)
		s.disp.run(dctx)
	}()
	err := s.host.Serve(ctx, lis)
	stopDispatch()
	<-dispatched
	s.client.CloseIdleConnections()
	s.store.close()
	return err
}

// observeOutbox reports the outbox's size by state.
func (s *Server) observeOutbox(ctx context.Context, ob metric.Int64Observer) error {
	rows, err := s.store.db.QueryContext(ctx, s.store.db.Rebind(`SELECT state, COUNT(*) FROM deliveries WHERE state <> ? GROUP BY state`), dlvSucceeded)
	if err != nil {
		return err
	}
	defer rows.Close()
	// Every state is observed, at zero when empty, so that the series
	// exist from the start and an alert on dead letters sees 0 → 1.
	counts := map[string]int64{"pending": 0, "in_flight": 0, "dead": 0}
	for rows.Next() {
		var st, n int
		if err := rows.Scan(&st, &n); err != nil {
			return err
		}
		name := strings.ToLower(strings.TrimPrefix(escalationv1.DeliveryState(st).String(), "DELIVERY_STATE_"))
		counts[name] += int64(n)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for name, n := range counts {
		ob.Observe(n, metric.WithAttributes(attribute.String("state", name)))
	}
	return nil
}

// Shutdown stops the server gracefully within ctx.
func (s *Server) Shutdown(ctx context.Context) error { return s.host.Shutdown(ctx) }

// Addr returns the listening address once Serve runs.
func (s *Server) Addr() net.Addr { return s.host.Addr() }

// PostAlerts implements AlertService.PostAlerts: every alert is in the
// database before the call returns.
func (s *Server) PostAlerts(ctx context.Context, req *escalationv1.PostAlertsRequest) (*escalationv1.PostAlertsResponse, error) {
	if len(req.Alerts) > 0 {
		trace.SpanFromContext(ctx).SetAttributes(attribute.String("calmline.call_id", req.Alerts[0].GetCallId()))
	}
	ids, err := s.store.accept(ctx, req.Alerts)
	if err != nil {
		if errors.Is(err, ErrOutboxFull) {
			s.m.refused.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", "outbox_full")))
			s.log.Error("alerts refused: outbox full", "err", err)
		}
		return nil, grpcError(err)
	}
	span := trace.SpanFromContext(ctx)
	for i, a := range req.Alerts {
		s.m.alerts.Add(ctx, 1)
		span.AddEvent("alert recorded", trace.WithAttributes(attribute.String("calmline.call_id", a.CallId),
			attribute.String("calmline.alert_id", a.Event.GetAlertId()), attribute.String("calmline.escalation_id", ids[i])))
		s.log.Info("alert recorded", "escalation_id", ids[i], "alert_id", a.Event.AlertId, "state", a.Event.State.String(),
			"tenant", a.TenantId, "call_id", a.CallId)
	}
	return &escalationv1.PostAlertsResponse{EscalationIds: ids}, nil
}

// RecordCall implements CareService.RecordCall.
func (s *Server) RecordCall(ctx context.Context, req *escalationv1.RecordCallRequest) (*escalationv1.RecordCallResponse, error) {
	if err := s.store.recordCall(ctx, req); err != nil {
		return nil, grpcError(err)
	}
	return &escalationv1.RecordCallResponse{}, nil
}

func tenantOf(ctx context.Context) *tenant.Tenant {
	t, ok := tenant.FromContext(ctx)
	if !ok {
		panic("escalation: handler reached without an authenticated tenant")
	}
	return t
}

// grpcError maps store errors to gRPC statuses.
func grpcError(err error) error {
	switch {
	case errors.Is(err, ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrBadState):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, ErrBadPageToken), errors.Is(err, ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrOutboxFull):
		return status.Error(codes.ResourceExhausted, err.Error())
	}
	return status.Error(codes.Unavailable, err.Error())
}

// httpError maps store errors to REST responses.
func httpError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		service.WriteError(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, ErrBadState):
		service.WriteError(w, http.StatusConflict, "bad_state", err.Error())
	case errors.Is(err, ErrBadPageToken), errors.Is(err, ErrInvalid):
		service.WriteError(w, http.StatusBadRequest, "bad_request", err.Error())
	default:
		service.WriteError(w, http.StatusServiceUnavailable, "unavailable", "the escalation store is unavailable")
	}
}

// ListEscalations implements EscalationService.ListEscalations.
func (s *Server) ListEscalations(ctx context.Context, req *escalationv1.ListEscalationsRequest) (*escalationv1.ListEscalationsResponse, error) {
	es, next, err := s.store.list(ctx, tenantOf(ctx).ID, listQuery{State: req.State, CallID: req.CallId, AgentID: req.AgentId, PageSize: int(req.PageSize), PageToken: req.PageToken})
	if err != nil {
		return nil, grpcError(err)
	}
	return &escalationv1.ListEscalationsResponse{Escalations: es, NextPageToken: next}, nil
}

// GetEscalation implements EscalationService.GetEscalation.
func (s *Server) GetEscalation(ctx context.Context, req *escalationv1.GetEscalationRequest) (*escalationv1.GetEscalationResponse, error) {
	e, err := s.store.get(ctx, tenantOf(ctx).ID, req.Id)
	if err != nil {
		return nil, grpcError(err)
	}
	return &escalationv1.GetEscalationResponse{Escalation: e}, nil
}

// AcknowledgeEscalation implements EscalationService.AcknowledgeEscalation.
func (s *Server) AcknowledgeEscalation(ctx context.Context, req *escalationv1.AcknowledgeEscalationRequest) (*escalationv1.AcknowledgeEscalationResponse, error) {
	if req.By == "" {
		return nil, status.Error(codes.InvalidArgument, "by: say who acknowledges")
	}
	e, err := s.store.acknowledge(ctx, tenantOf(ctx).ID, req.Id, req.By)
	if err != nil {
		return nil, grpcError(err)
	}
	return &escalationv1.AcknowledgeEscalationResponse{Escalation: e}, nil
}

// ResolveEscalation implements EscalationService.ResolveEscalation.
func (s *Server) ResolveEscalation(ctx context.Context, req *escalationv1.ResolveEscalationRequest) (*escalationv1.ResolveEscalationResponse, error) {
	if req.By == "" {
		return nil, status.Error(codes.InvalidArgument, "by: say who resolves")
	}
	e, err := s.store.resolve(ctx, tenantOf(ctx).ID, req.Id, req.By, req.Resolution)
	if err != nil {
		return nil, grpcError(err)
	}
	return &escalationv1.ResolveEscalationResponse{Escalation: e}, nil
}

func (s *Server) httpList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	lq := listQuery{CallID: q.Get("call_id"), AgentID: q.Get("agent_id"), PageToken: q.Get("page_token")}
	if st := q.Get("state"); st != "" {
		v, ok := escalationv1.EscalationState_value["ESCALATION_STATE_"+strings.ToUpper(st)]
		if !ok || v == 0 {
			service.WriteError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("state: want open, acknowledged or resolved, got %q", st))
			return
		}
		lq.State = escalationv1.EscalationState(v)
	}
	if ps := q.Get("page_size"); ps != "" {
		n, err := strconv.Atoi(ps)
		if err != nil || n < 0 {
			service.WriteError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("page_size: want a positive number, got %q", ps))
			return
		}
		lq.PageSize = n
	}
	es, next, err := s.store.list(r.Context(), tenantOf(r.Context()).ID, lq)
	if err != nil {
		httpError(w, err)
		return
	}
	service.WriteJSON(w, http.StatusOK, &escalationv1.ListEscalationsResponse{Escalations: es, NextPageToken: next})
}

func (s *Server) httpGet(w http.ResponseWriter, r *http.Request) {
	e, err := s.store.get(r.Context(), tenantOf(r.Context()).ID, r.PathValue("id"))
	if err != nil {
		httpError(w, err)
		return
	}
	service.WriteJSON(w, http.StatusOK, e)
}

// actionBody is the JSON body of acknowledge and resolve.
type actionBody struct {
	By         string `json:"by"`
	Resolution string `json:"resolution"`
}

func readAction(w http.ResponseWriter, r *http.Request) (actionBody, bool) {
	var b actionBody
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		service.WriteError(w, http.StatusBadRequest, "bad_request", "body: want JSON {\"by\": ..., \"resolution\": ...}: "+err.Error())
		return b, false
	}
	if b.By == "" {
		service.WriteError(w, http.StatusBadRequest, "bad_request", "by: say who acts")
		return b, false
	}
	return b, true
}

func (s *Server) httpAcknowledge(w http.ResponseWriter, r *http.Request) {
	b, ok := readAction(w, r)
	if !ok {
		return
	}
	e, err := s.store.acknowledge(r.Context(), tenantOf(r.Context()).ID, r.PathValue("id"), b.By)
	if err != nil {
		httpError(w, err)
		return
	}
	service.WriteJSON(w, http.StatusOK, e)
}

func (s *Server) httpResolve(w http.ResponseWriter, r *http.Request) {
	b, ok := readAction(w, r)
	if !ok {
		return
	}
	e, err := s.store.resolve(r.Context(), tenantOf(r.Context()).ID, r.PathValue("id"), b.By, b.Resolution)
	if err != nil {
		httpError(w, err)
		return
	}
	service.WriteJSON(w, http.StatusOK, e)
}

// grpcActions names the role-table action of every tenant-facing gRPC
// method (lib/tenant roles.go).
var grpcActions = map[string]tenant.Action{
	escalationv1.EscalationService_ListEscalations_FullMethodName:       tenant.ActionReadEscalations,
	escalationv1.EscalationService_GetEscalation_FullMethodName:         tenant.ActionReadEscalations,
	escalationv1.EscalationService_AcknowledgeEscalation_FullMethodName: tenant.ActionAckEscalations,
	escalationv1.EscalationService_ResolveEscalation_FullMethodName:     tenant.ActionResolveEscalations,
	escalationv1.DeliveryService_ListDeliveries_FullMethodName:          tenant.ActionReadDeliveries,
	escalationv1.DeliveryService_GetDelivery_FullMethodName:             tenant.ActionReadDeliveries,
	escalationv1.DeliveryService_RedriveDelivery_FullMethodName:         tenant.ActionRedriveDeliveries,
	escalationv1.AuditService_ListAuditEntries_FullMethodName:           tenant.ActionReadAudit,
	escalationv1.AuditService_VerifyAudit_FullMethodName:                tenant.ActionReadAudit,
	escalationv1.SilenceService_CreateSilence_FullMethodName:            tenant.ActionManageSilences,
	escalationv1.SilenceService_ListSilences_FullMethodName:             tenant.ActionReadSilences,
	escalationv1.SilenceService_ExpireSilence_FullMethodName:            tenant.ActionManageSilences,
}

// route is one REST endpoint and the role-table action it needs.
type route struct {
	pattern string
	action  tenant.Action
	h       http.HandlerFunc
}

func restRoutes(s *Server) []route {
	return []route{
		{"GET /api/v1/escalations", tenant.ActionReadEscalations, s.httpList},
		{"GET /api/v1/escalations/{id}", tenant.ActionReadEscalations, s.httpGet},
		{"POST /api/v1/escalations/{id}/acknowledge", tenant.ActionAckEscalations, s.httpAcknowledge},
		{"POST /api/v1/escalations/{id}/resolve", tenant.ActionResolveEscalations, s.httpResolve},
		{"GET /api/v1/deliveries", tenant.ActionReadDeliveries, s.httpListDeliveries},
		{"GET /api/v1/deliveries/{id}", tenant.ActionReadDeliveries, s.httpGetDelivery},
		{"POST /api/v1/deliveries/{id}/redrive", tenant.ActionRedriveDeliveries, s.httpRedrive},
		{"GET /api/v1/audit", tenant.ActionReadAudit, s.httpListAudit},
		{"GET /api/v1/audit/verify", tenant.ActionReadAudit, s.httpVerifyAudit},
		{"POST /api/v1/silences", tenant.ActionManageSilences, s.httpCreateSilence},
		{"GET /api/v1/silences", tenant.ActionReadSilences, s.httpListSilences},
		{"POST /api/v1/silences/{id}/expire", tenant.ActionManageSilences, s.httpExpireSilence},
	}
}
