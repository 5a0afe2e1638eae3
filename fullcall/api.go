package fullcall

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/calmline/calmline/fullcall/store"
	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/service"
	"github.com/calmline/calmline/lib/tenant"
	"github.com/calmline/calmline/lib/wire"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// Errors of the recording path, classified for the API boundary.
var (
	errNoSpeech = errors.New("the recording contains no speech")
	errBadRoles = errors.New("bad roles")
)

func (s *Server) routes(mux *http.ServeMux) {
	auth := s.o.Tenants.RequireKey
	mux.Handle("GET /api/v1/reports/{call_id}", auth(http.HandlerFunc(s.httpGetReport)))
	mux.Handle("GET /api/v1/reports", auth(http.HandlerFunc(s.httpListReports)))
	mux.Handle("POST /api/v1/recordings", auth(http.HandlerFunc(s.httpPostRecording)))
}

func mustTenant(ctx context.Context) *tenant.Tenant {
	t, ok := tenant.FromContext(ctx)
	if !ok {
		panic("fullcall: handler reached without an authenticated tenant")
	}
	return t
}

// GetReport implements ReportService.GetReport.
func (s *Server) GetReport(ctx context.Context, req *fullcallv1.GetReportRequest) (*fullcallv1.GetReportResponse, error) {
	t := mustTenant(ctx)
	r, err := s.store.GetReport(ctx, t.ID, req.CallId)
	if errors.Is(err, store.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "no report for call %q", req.CallId)
	}
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return &fullcallv1.GetReportResponse{Report: r}, nil
}

func (s *Server) httpGetReport(w http.ResponseWriter, r *http.Request) {
	t := mustTenant(r.Context())
	callID := r.PathValue("call_id")
	rep, err := s.store.GetReport(r.Context(), t.ID, callID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		service.WriteError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no report for call %q", callID))
	case err != nil:
		service.WriteError(w, http.StatusServiceUnavailable, "unavailable", "the report store is unavailable")
	default:
		service.WriteJSON(w, http.StatusOK, rep)
	}
}

// ListReports implements ReportService.ListReports.
func (s *Server) ListReports(ctx context.Context, req *fullcallv1.ListReportsRequest) (*fullcallv1.ListReportsResponse, error) {
	t := mustTenant(ctx)
	q := store.Query{
		AgentID:   req.AgentId,
		MinPeak:   req.MinPeak,
		Escalated: req.Escalated,
		PageSize:  int(req.PageSize),
		PageToken: req.PageToken,
	}
	if req.StartedAfter != nil {
		q.StartedAfter = req.StartedAfter.AsTime()
	}
	if req.StartedBefore != nil {
		q.StartedBefore = req.StartedBefore.AsTime()
	}
	rs, next, err := s.store.ListReports(ctx, t.ID, q)
	if errors.Is(err, store.ErrBadPageToken) {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return &fullcallv1.ListReportsResponse{Reports: rs, NextPageToken: next}, nil
}

func (s *Server) httpListReports(w http.ResponseWriter, r *http.Request) {
	t := mustTenant(r.Context())
	v := r.URL.Query()
	q := store.Query{AgentID: v.Get("agent_id"), PageToken: v.Get("page_token")}
	var err error
	parseTime := func(name string) time.Time {
		s := v.Get(name)
		if s == "" || err != nil {
			return time.Time{}
		}
		tm, perr := time.Parse(time.RFC3339, s)
		if perr != nil {
			err = fmt.Errorf("%s: want an RFC 3339 time, got %q", name, s)
		}
		return tm
	}
	q.StartedAfter = parseTime("from")
	q.StartedBefore = parseTime("to")
	if s := v.Get("min_peak"); s != "" && err == nil {
		if q.MinPeak, err = strconv.ParseFloat(s, 64); err != nil {
			err = fmt.Errorf("min_peak: want a number, got %q", s)
		}
	}
	if s := v.Get("escalated"); s != "" && err == nil {
		b, perr := strconv.ParseBool(s)
		if perr != nil {
			err = fmt.Errorf("escalated: want true or false, got %q", s)
		}
		q.Escalated = &b
	}
	if s := v.Get("page_size"); s != "" && err == nil {
		if q.PageSize, err = strconv.Atoi(s); err != nil || q.PageSize < 0 {
			err = fmt.Errorf("page_size: want a positive number, got %q", s)
		}
	}
	if err != nil {
		service.WriteError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	rs, next, err := s.store.ListReports(r.Context(), t.ID, q)
	if errors.Is(err, store.ErrBadPageToken) {
		service.WriteError(w, http.StatusBadRequest, "bad_request", "page_token: "+err.Error())
		return
	}
	if err != nil {
		service.WriteError(w, http.StatusServiceUnavailable, "unavailable", "the report store is unavailable")
		return
	}
	service.WriteJSON(w, http.StatusOK, &fullcallv1.ListReportsResponse{Reports: rs, NextPageToken: next})
}

// AnalyzeRecording implements RecordingService.AnalyzeRecording.
func (s *Server) AnalyzeRecording(ctx context.Context, req *fullcallv1.AnalyzeRecordingRequest) (*fullcallv1.AnalyzeRecordingResponse, error) {
	t := mustTenant(ctx)
	rec := req.GetRecording()
	if int64(len(rec.GetWav())) > s.o.MaxUploadBytes {
		return nil, status.Errorf(codes.ResourceExhausted, "recording of %d bytes exceeds the %d-byte limit", len(rec.GetWav()), s.o.MaxUploadBytes)
	}
	r, err := s.analyzeRecording(ctx, t, rec)
	if err != nil {
		code := codes.InvalidArgument
		if errors.Is(err, errStore) {
			code = codes.Unavailable
		}
		return nil, status.Error(code, err.Error())
	}
	return &fullcallv1.AnalyzeRecordingResponse{Report: r}, nil
}

var errStore = errors.New("report store unavailable")

// analyzeRecording runs the whole-call analysis over an uploaded WAV file
// and stores the report.
func (s *Server) analyzeRecording(ctx context.Context, t *tenant.Tenant, rec *fullcallv1.Recording) (*fullcallv1.Report, error) {
	wav, err := audio.ParseWAV(rec.GetWav())
	if err != nil {
		s.m.uploads.Add(ctx, 1, metric.WithAttributes(reasonAttr.String("bad_wav")))
		return nil, err
	}
	roles := rec.GetRoles()
	if len(roles) == 0 {
		roles = []callv1.ChannelRole{callv1.ChannelRole_CHANNEL_ROLE_AGENT}
		if wav.Format.Channels == 2 {
			roles = []callv1.ChannelRole{callv1.ChannelRole_CHANNEL_ROLE_CALLER, callv1.ChannelRole_CHANNEL_ROLE_AGENT}
		}
	}
	if len(roles) != wav.Format.Channels {
		return nil, fmt.Errorf("%w: %d roles for a %d-channel recording", errBadRoles, len(roles), wav.Format.Channels)
	}
	callID := rec.GetCallId()
	if callID == "" {
		callID = "rec-" + randomID()
	}
	call := &callv1.Call{
		TenantId:  t.ID,
		CallId:    callID,
		AgentId:   rec.GetAgentId(),
		StartedAt: rec.GetStartedAt(),
		Format:    &callv1.MediaFormat{Codec: wire.CodecOf(wav.Format.Codec), SampleRateHz: uint32(wav.Format.SampleRate), Channels: roles},
		Protocol:  "upload",
		Labels:    rec.GetLabels(),
		Policy:    wire.Policy(t),
	}
	if call.StartedAt == nil {
		call.StartedAt = timestamppb.Now()
	}
	agg, err := newAggregate(call)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadRoles, err)
	}
	if err := agg.audio(0, wav.Data); err != nil {
		return nil, err
	}
	r := agg.report(0, fullcallv1.EndReason_END_REASON_HANGUP, false, fullcallv1.Source_SOURCE_UPLOAD)
	var talk float64
	for _, c := range r.Channels {
		talk += c.TalkS
	}
	if talk == 0 {
		s.m.uploads.Add(ctx, 1, metric.WithAttributes(reasonAttr.String("no_speech")))
		return nil, errNoSpeech
	}
	if err := s.store.PutReport(ctx, r); err != nil {
		s.m.storeErrors.Add(ctx, 1)
		return nil, fmt.Errorf("%w: %v", errStore, err)
	}
	s.m.uploads.Add(ctx, 1, metric.WithAttributes(reasonAttr.String("ok")))
	s.m.reports.Add(ctx, 1, metric.WithAttributes(sourceAttr.String("upload")))
	return r, nil
}

var reasonAttr = attribute.Key("reason")

func (s *Server) httpPostRecording(w http.ResponseWriter, r *http.Request) {
	t := mustTenant(r.Context())
	q := r.URL.Query()
	rec := &fullcallv1.Recording{CallId: q.Get("call_id"), AgentId: q.Get("agent_id")}
	if rs := q.Get("roles"); rs != "" {
		for _, name := range strings.Split(rs, ",") {
			role, err := wire.Role(strings.TrimSpace(name))
			if err != nil {
				service.WriteError(w, http.StatusBadRequest, "bad_roles", err.Error())
				return
			}
			rec.Roles = append(rec.Roles, role)
		}
	}
	if r.ContentLength > s.o.MaxUploadBytes {
		service.WriteError(w, http.StatusRequestEntityTooLarge, "too_large",
			fmt.Sprintf("recording of %d bytes exceeds the %d-byte limit", r.ContentLength, s.o.MaxUploadBytes))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.o.MaxUploadBytes))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		service.WriteError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("recording exceeds the %d-byte limit", s.o.MaxUploadBytes))
		return
	}
	if err != nil {
		service.WriteError(w, http.StatusBadRequest, "bad_request", "reading the body: "+err.Error())
		return
	}
	rec.Wav = body
	rep, err := s.analyzeRecording(r.Context(), t, rec)
	switch {
	case err == nil:
		service.WriteJSON(w, http.StatusOK, rep)
	case errors.Is(err, audio.ErrNotWAV), errors.Is(err, audio.ErrUnsupported):
		service.WriteError(w, http.StatusUnsupportedMediaType, "unsupported_format", err.Error())
	case errors.Is(err, audio.ErrTruncated), errors.Is(err, audio.ErrBadHeader):
		service.WriteError(w, http.StatusBadRequest, "malformed_wav", err.Error())
	case errors.Is(err, audio.ErrNoAudio):
		service.WriteError(w, http.StatusUnprocessableEntity, "no_audio", err.Error())
	case errors.Is(err, errNoSpeech):
		service.WriteError(w, http.StatusUnprocessableEntity, "no_speech", err.Error())
	case errors.Is(err, errBadRoles):
		service.WriteError(w, http.StatusBadRequest, "bad_roles", err.Error())
	case errors.Is(err, errStore):
		service.WriteError(w, http.StatusServiceUnavailable, "unavailable", "the report store is unavailable")
	default:
		service.WriteError(w, http.StatusBadRequest, "bad_request", err.Error())
	}
}

func randomID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
