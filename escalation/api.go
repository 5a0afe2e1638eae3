package escalation

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/calmline/calmline/lib/service"
	escalationv1 "github.com/calmline/calmline/proto/calmline/escalation/v1"
)

// ListDeliveries implements DeliveryService.ListDeliveries.
func (s *Server) ListDeliveries(ctx context.Context, req *escalationv1.ListDeliveriesRequest) (*escalationv1.ListDeliveriesResponse, error) {
	ds, next, err := s.store.listDeliveries(ctx, tenantOf(ctx).ID, deliveryQuery{State: req.State, EscalationID: req.EscalationId,
		CallID: req.CallId, PageSize: int(req.PageSize), PageToken: req.PageToken})
	if err != nil {
		return nil, grpcError(err)
	}
	return &escalationv1.ListDeliveriesResponse{Deliveries: ds, NextPageToken: next}, nil
}

// GetDelivery implements DeliveryService.GetDelivery.
func (s *Server) GetDelivery(ctx context.Context, req *escalationv1.GetDeliveryRequest) (*escalationv1.GetDeliveryResponse, error) {
	d, err := s.store.getDelivery(ctx, tenantOf(ctx).ID, req.Id)
	if err != nil {
		return nil, grpcError(err)
	}
	return &escalationv1.GetDeliveryResponse{Delivery: d}, nil
}

// RedriveDelivery implements DeliveryService.RedriveDelivery.
func (s *Server) RedriveDelivery(ctx context.Context, req *escalationv1.RedriveDeliveryRequest) (*escalationv1.RedriveDeliveryResponse, error) {
	if req.By == "" {
		return nil, status.Error(codes.InvalidArgument, "by: say who re-drives")
	}
	d, err := s.store.redrive(ctx, tenantOf(ctx).ID, req.Id, req.By)
	if err != nil {
		return nil, grpcError(err)
	}
	return &escalationv1.RedriveDeliveryResponse{Delivery: d}, nil
}

// ListAuditEntries implements AuditService.ListAuditEntries.
func (s *Server) ListAuditEntries(ctx context.Context, req *escalationv1.ListAuditEntriesRequest) (*escalationv1.ListAuditEntriesResponse, error) {
	es, seq, hash, err := s.store.listAudit(ctx, tenantOf(ctx).ID, req.AfterSeq, int(req.PageSize))
	if err != nil {
		return nil, grpcError(err)
	}
	return &escalationv1.ListAuditEntriesResponse{Entries: es, HeadSeq: seq, HeadHash: hash}, nil
}

// VerifyAudit implements AuditService.VerifyAudit.
func (s *Server) VerifyAudit(ctx context.Context, _ *escalationv1.VerifyAuditRequest) (*escalationv1.VerifyAuditResponse, error) {
	rep, err := verifyTenant(ctx, s.store.db, tenantOf(ctx).ID, nil)
	if err != nil {
		return nil, grpcError(err)
	}
	return verifyResponse(rep), nil
}

func verifyResponse(rep AuditReport) *escalationv1.VerifyAuditResponse {
	out := &escalationv1.VerifyAuditResponse{Ok: rep.OK(), Entries: rep.Entries, HeadSeq: rep.HeadSeq, HeadHash: rep.HeadHash}
	for _, p := range rep.Problems {
		out.Problems = append(out.Problems, &escalationv1.AuditProblem{Seq: p.Seq, Problem: p.Problem})
	}
	return out
}

// queryInt reads a non-negative integer query parameter.
func queryInt(w http.ResponseWriter, r *http.Request, name string) (uint64, bool) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, true
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		service.WriteError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("%s: want a non-negative number, got %q", name, v))
		return 0, false
	}
	return n, true
}

func (s *Server) httpListDeliveries(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	dq := deliveryQuery{EscalationID: q.Get("escalation_id"), CallID: q.Get("call_id"), PageToken: q.Get("page_token")}
	if st := q.Get("state"); st != "" {
		v, ok := escalationv1.DeliveryState_value["DELIVERY_STATE_"+strings.ToUpper(st)]
		if !ok || v == 0 {
			service.WriteError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("state: want pending, in_flight, succeeded or dead, got %q", st))
			return
		}
		dq.State = escalationv1.DeliveryState(v)
	}
	n, ok := queryInt(w, r, "page_size")
	if !ok {
		return
	}
	dq.PageSize = int(min(n, 1000))
	ds, next, err := s.store.listDeliveries(r.Context(), tenantOf(r.Context()).ID, dq)
	if err != nil {
		httpError(w, err)
		return
	}
	service.WriteJSON(w, http.StatusOK, &escalationv1.ListDeliveriesResponse{Deliveries: ds, NextPageToken: next})
}

func (s *Server) httpGetDelivery(w http.ResponseWriter, r *http.Request) {
	d, err := s.store.getDelivery(r.Context(), tenantOf(r.Context()).ID, r.PathValue("id"))
	if err != nil {
		httpError(w, err)
		return
	}
	service.WriteJSON(w, http.StatusOK, d)
}

func (s *Server) httpRedrive(w http.ResponseWriter, r *http.Request) {
	b, ok := readAction(w, r)
	if !ok {
		return
	}
	d, err := s.store.redrive(r.Context(), tenantOf(r.Context()).ID, r.PathValue("id"), b.By)
	if err != nil {
		httpError(w, err)
		return
	}
	service.WriteJSON(w, http.StatusOK, d)
}

func (s *Server) httpListAudit(w http.ResponseWriter, r *http.Request) {
	after, ok := queryInt(w, r, "after_seq")
	if !ok {
		return
	}
	size, ok := queryInt(w, r, "page_size")
	if !ok {
		return
	}
	es, seq, hash, err := s.store.listAudit(r.Context(), tenantOf(r.Context()).ID, after, int(min(size, 1000)))
	if err != nil {
		httpError(w, err)
		return
	}
	service.WriteJSON(w, http.StatusOK, &escalationv1.ListAuditEntriesResponse{Entries: es, HeadSeq: seq, HeadHash: hash})
}

func (s *Server) httpVerifyAudit(w http.ResponseWriter, r *http.Request) {
	rep, err := verifyTenant(r.Context(), s.store.db, tenantOf(r.Context()).ID, nil)
	if err != nil {
		httpError(w, err)
		return
	}
	service.WriteJSON(w, http.StatusOK, verifyResponse(rep))
}
