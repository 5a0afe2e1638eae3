package fullcall

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/calmline/calmline/fullcall/store"
	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/field"
	"github.com/calmline/calmline/lib/service"
	"github.com/calmline/calmline/lib/tenant"
	"github.com/calmline/calmline/lib/wire"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// grpcActions names the role-table action of every tenant-facing gRPC
// method (lib/tenant roles.go).
var grpcActions = map[string]tenant.Action{
	fullcallv1.ReportService_GetReport_FullMethodName:           tenant.ActionReadReports,
	fullcallv1.ReportService_ListReports_FullMethodName:         tenant.ActionReadReports,
	fullcallv1.ReportService_GetAgentSummary_FullMethodName:     tenant.ActionReadAgentSummary,
	fullcallv1.RecordingService_AnalyzeRecording_FullMethodName: tenant.ActionSubmitRecordings,
	fullcallv1.RecordingService_SubmitRecording_FullMethodName:  tenant.ActionSubmitRecordings,
	fullcallv1.RecordingService_GetJob_FullMethodName:           tenant.ActionReadJobs,
}

func (s *Server) routes(mux *http.ServeMux) {
	for _, r := range restRoutes(s) {
		mux.Handle(r.pattern, s.o.Tenants.Require(r.action, r.h))
	}
}

// route is one REST endpoint and the role-table action it needs.
type route struct {
	pattern string
	action  tenant.Action
	h       http.HandlerFunc
}

func restRoutes(s *Server) []route {
	return []route{
		{"GET /api/v1/reports/{call_id}", tenant.ActionReadReports, s.httpGetReport},
		{"GET /api/v1/reports/{call_id}/audio", tenant.ActionReadReportAudio, s.httpGetAudio},
		{"GET /api/v1/reports", tenant.ActionReadReports, s.httpListReports},
		{"GET /api/v1/agents/{agent_id}/summary", tenant.ActionReadAgentSummary, s.httpAgentSummary},
		{"POST /api/v1/recordings", tenant.ActionSubmitRecordings, s.httpPostRecording},
		{"GET /api/v1/jobs/{job_id}", tenant.ActionReadJobs, s.httpGetJob},
	}
}

// mustKey returns the authenticated key of a request.
func mustKey(ctx context.Context) *tenant.APIKey {
	k, ok := tenant.KeyFromContext(ctx)
	if !ok {
		panic("fullcall: handler reached without an authenticated key")
	}
	return k
}

// errOtherAgent refuses an agent key's request about another agent.
const errOtherAgent = "an agent key sees only its own agent's calls"

// visible reports whether the request's key may see rep (its agent's
// scope), and strips agent-side scores the key may not see (private mode).
func visible(ctx context.Context, t *tenant.Tenant, rep *fullcallv1.Report) bool {
	k := mustKey(ctx)
	if !k.MaySee(tenant.ActionReadReports, rep.AgentId) {
		return false
	}
	hideScores(ctx, t, rep)
	return true
}

// hideScores removes the agent-side scores from rep when the request's
// key may not see them (private mode); rep may be nil.
func hideScores(ctx context.Context, t *tenant.Tenant, rep *fullcallv1.Report) {
	if rep == nil || mustKey(ctx).SeesAgentScores(t) {
		return
	}
	rep.AgentStress = nil
	for _, p := range rep.Timeline {
		p.AgentStress = nil
	}
	// An alert on agent_stress (stored while the tenant's mode was "on")
	// would carry the score's value.
	rep.Alerts = slices.DeleteFunc(rep.Alerts, func(a *callv1.AlertEvent) bool {
		return a.GetScore() == callv1.ScoreKind_SCORE_KIND_AGENT_STRESS
	})
}

// peakFilter sets how q's min_peak applies for the request's key: on
// both peaks for keys that see agent-side scores, on caller_pressure
// alone for the others (privacy mode "private" or "off"), so that the
// filter cannot reveal an agent_stress peak they may not see.
func peakFilter(ctx context.Context, t *tenant.Tenant, q *store.Query) {
	q.CallerPeakOnly = !mustKey(ctx).SeesAgentScores(t)
}

// agentScope narrows a query about agent to what the key may see: an
// agent key's own agent only. It returns the agent to query, or false
// when the key asked about another agent.
func agentScope(ctx context.Context, a tenant.Action, agent string) (string, bool) {
	k := mustKey(ctx)
	if k.Access(a) != tenant.ScopeOwnAgent {
		return agent, true
	}
	if agent != "" && agent != k.AgentID {
		return "", false
	}
	return k.AgentID, true
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
	if err := field.ID("call_id", req.CallId); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	r, err := s.store.GetReport(ctx, t.ID, req.CallId)
	if err == nil && !visible(ctx, t, r) {
		err = store.ErrNotFound
	}
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
	if err := field.ID("call_id", callID); err != nil {
		service.WriteError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	rep, err := s.store.GetReport(r.Context(), t.ID, callID)
	if err == nil && !visible(r.Context(), t, rep) {
		err = store.ErrNotFound
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		service.WriteError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no report for call %q", callID))
	case err != nil:
		service.WriteError(w, http.StatusServiceUnavailable, "unavailable", "the report store is unavailable")
	default:
		service.WriteJSON(w, http.StatusOK, rep)
	}
}

// httpGetAudio serves a call's stored audio as a WAV file in the call's
// format, with silence where the timeline has no audio (gaps).
func (s *Server) httpGetAudio(w http.ResponseWriter, r *http.Request) {
	t := mustTenant(r.Context())
	callID := r.PathValue("call_id")
	if err := field.ID("call_id", callID); err != nil {
		service.WriteError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	rep, err := s.store.GetReport(r.Context(), t.ID, callID)
	if errors.Is(err, store.ErrNotFound) || err == nil && !rep.AudioStored {
		service.WriteError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no stored audio for call %q", callID))
		return
	}
	if err != nil {
		service.WriteError(w, http.StatusServiceUnavailable, "unavailable", "the report store is unavailable")
		return
	}
	f, err := wire.Format(rep.Format)
	if err != nil {
		service.WriteError(w, http.StatusInternalServerError, "internal", "the report's media format is not readable")
		return
	}
	fill := audio.Encode(nil, make([]int16, f.Channels), f.Codec)
	end := int64(rep.DurationS*float64(f.SampleRate)+0.5) * int64(f.FrameBytes())
	// The header says how much follows; the body is streamed from the store.
	hdr := audio.EncodeWAV(f, nil)
	pad := end & 1
	binary.LittleEndian.PutUint32(hdr[4:], uint32(int64(len(hdr))-8+end+pad))
	binary.LittleEndian.PutUint32(hdr[len(hdr)-4:], uint32(end))
	w.Header().Set("Content-Type", "audio/wav")
	w.Header().Set("Content-Length", strconv.FormatInt(int64(len(hdr))+end+pad, 10))
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", callID+".wav"))
	w.Write(hdr)
	if err := s.store.WriteAudio(r.Context(), w, t.ID, callID, f.FrameBytes(), fill, end); err != nil {
		// Headers are sent: the client sees a short body.
		s.log.Warn("serving stored audio failed", "tenant", t.ID, "call_id", callID, "err", err)
		return
	}
	if pad == 1 {
		w.Write([]byte{0})
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
	if err := errors.Join(field.OptionalID("agent_id", req.AgentId), field.Finite("min_peak", req.MinPeak)); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	var ok bool
	if q.AgentID, ok = agentScope(ctx, tenant.ActionReadReports, q.AgentID); !ok {
		return nil, status.Error(codes.PermissionDenied, errOtherAgent)
	}
	peakFilter(ctx, t, &q)
	rs, next, err := s.store.ListReports(ctx, t.ID, q)
	if errors.Is(err, store.ErrBadPageToken) {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	for _, r := range rs {
		visible(ctx, t, r)
	}
	return &fullcallv1.ListReportsResponse{Reports: rs, NextPageToken: next}, nil
}

func (s *Server) httpListReports(w http.ResponseWriter, r *http.Request) {
	t := mustTenant(r.Context())
	v := r.URL.Query()
	q := store.Query{AgentID: v.Get("agent_id"), PageToken: v.Get("page_token")}
	var err error
	q.StartedAfter = parseTime(v.Get("from"), "from", &err)
	q.StartedBefore = parseTime(v.Get("to"), "to", &err)
	if s := v.Get("min_peak"); s != "" && err == nil {
		if q.MinPeak, err = strconv.ParseFloat(s, 64); err != nil {
			err = fmt.Errorf("min_peak: want a number, got %q", s)
		} else {
			err = field.Finite("min_peak", q.MinPeak)
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
	if err == nil {
		err = field.OptionalID("agent_id", q.AgentID)
	}
	if err != nil {
		service.WriteError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	var ok bool
	if q.AgentID, ok = agentScope(r.Context(), tenant.ActionReadReports, q.AgentID); !ok {
		service.WriteError(w, http.StatusForbidden, "forbidden", errOtherAgent)
		return
	}
	peakFilter(r.Context(), t, &q)
	rs, next, err := s.store.ListReports(r.Context(), t.ID, q)
	for _, rep := range rs {
		visible(r.Context(), t, rep)
	}
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

// parseTime reads an optional RFC 3339 parameter; the first problem sticks
// in *err.
func parseTime(s, name string, err *error) time.Time {
	if s == "" || *err != nil {
		return time.Time{}
	}
	tm, perr := time.Parse(time.RFC3339, s)
	if perr != nil {
		*err = fmt.Errorf("%s: want an RFC 3339 time, got %q", name, s)
	}
	return tm
}

// Agent summaries cover at most a year; without from/to, the last 7 days.
const (
	maxSummaryPeriod     = 366 * 24 * time.Hour
	defaultSummaryPeriod = 7 * 24 * time.Hour
)

func summaryPeriod(from, to time.Time, now time.Time) (time.Time, time.Time, error) {
	if to.IsZero() {
		to = now
	}
	if from.IsZero() {
		from = to.Add(-defaultSummaryPeriod)
	}
	switch {
	case !from.Before(to):
		return from, to, fmt.Errorf("from (%s) must be before to (%s)", from.Format(time.RFC3339), to.Format(time.RFC3339))
	case to.Sub(from) > maxSummaryPeriod:
		return from, to, fmt.Errorf("the period is longer than %d days", int(maxSummaryPeriod.Hours()/24))
	}
	return from, to, nil
}

// GetAgentSummary implements ReportService.GetAgentSummary.
func (s *Server) GetAgentSummary(ctx context.Context, req *fullcallv1.GetAgentSummaryRequest) (*fullcallv1.GetAgentSummaryResponse, error) {
	t := mustTenant(ctx)
	if err := field.ID("agent_id", req.AgentId); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	var from, to time.Time
	if req.From != nil {
		from = req.From.AsTime()
	}
	if req.To != nil {
		to = req.To.AsTime()
	}
	from, to, err := summaryPeriod(from, to, time.Now())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if _, ok := agentScope(ctx, tenant.ActionReadAgentSummary, req.AgentId); !ok {
		return nil, status.Error(codes.PermissionDenied, errOtherAgent)
	}
	sum, err := s.store.AgentSummary(ctx, t.ID, req.AgentId, from, to)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return &fullcallv1.GetAgentSummaryResponse{Summary: sum}, nil
}

func (s *Server) httpAgentSummary(w http.ResponseWriter, r *http.Request) {
	t := mustTenant(r.Context())
	agent := r.PathValue("agent_id")
	v := r.URL.Query()
	err := field.ID("agent_id", agent)
	from := parseTime(v.Get("from"), "from", &err)
	to := parseTime(v.Get("to"), "to", &err)
	if err == nil {
		from, to, err = summaryPeriod(from, to, time.Now())
	}
	if err != nil {
		service.WriteError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	if _, ok := agentScope(r.Context(), tenant.ActionReadAgentSummary, agent); !ok {
		service.WriteError(w, http.StatusForbidden, "forbidden", errOtherAgent)
		return
	}
	sum, err := s.store.AgentSummary(r.Context(), t.ID, agent, from, to)
	if err != nil {
		service.WriteError(w, http.StatusServiceUnavailable, "unavailable", "the report store is unavailable")
		return
	}
	service.WriteJSON(w, http.StatusOK, sum)
}

// AnalyzeRecording implements RecordingService.AnalyzeRecording.
func (s *Server) AnalyzeRecording(ctx context.Context, req *fullcallv1.AnalyzeRecordingRequest) (*fullcallv1.AnalyzeRecordingResponse, error) {
	t := mustTenant(ctx)
	rec := req.GetRecording()
	if n := int64(len(rec.GetWav())); n > s.o.MaxUploadBytes {
		return nil, status.Errorf(codes.ResourceExhausted, "recording of %d bytes exceeds the %d-byte limit of synchronous analysis; use SubmitRecording", n, s.o.MaxUploadBytes)
	}
	r, err := s.analyzeNow(ctx, t, rec)
	if err != nil {
		return nil, grpcError(err)
	}
	hideScores(ctx, t, r)
	return &fullcallv1.AnalyzeRecordingResponse{Report: r}, nil
}

// analyzeNow analyses an uploaded recording synchronously and stores its
// report.
func (s *Server) analyzeNow(ctx context.Context, t *tenant.Tenant, rec *fullcallv1.Recording) (_ *fullcallv1.Report, err error) {
	if rec == nil {
		rec = &fullcallv1.Recording{} // a request without one: refused below as no WAV, not a panic
	}
	if rec.GetCallId() == "" {
		rec.CallId = "rec-" + randomID() // chosen here, as prepare would, so that the trace names it
	}
	ctx, span := s.tr.root(ctx, spanRecording, spanCallID(rec))
	defer func() {
		if err != nil {
			span.SetStatus(otelcodes.Error, err.Error())
		}
		span.End()
	}()
	r, keep, err := s.analyse(ctx, t, rec, fullcallv1.Source_SOURCE_UPLOAD)
	if err != nil {
		s.m.uploads.Add(ctx, 1, metric.WithAttributes(reasonAttr.String(errorCode(err))))
		return nil, err
	}
	wctx, end := s.tr.child(ctx, spanWrite)
	err = s.store.PutReportAudio(wctx, r, keep)
	end(err)
	if err != nil {
		s.m.storeErrors.Add(ctx, 1)
		return nil, fmt.Errorf("%w: %v", errStore, err)
	}
	s.m.uploads.Add(ctx, 1, metric.WithAttributes(reasonAttr.String("ok")))
	s.m.reports.Add(ctx, 1, metric.WithAttributes(sourceAttr.String("upload")))
	return r, nil
}

// analyse runs the whole-call analysis over a recording (the same code as
// live calls) and returns its report, not yet stored, and the audio to
// store with it when the tenant's policy keeps audio.
func (s *Server) analyse(ctx context.Context, t *tenant.Tenant, rec *fullcallv1.Recording, source fullcallv1.Source) (_ *fullcallv1.Report, _ []byte, err error) {
	ctx, end := s.tr.child(ctx, spanAnalysis)
	defer func() { end(err) }()
	wav, call, err := prepare(t, rec)
	if err != nil {
		return nil, nil, err
	}
	agg, err := newAggregate(call)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", errBadRoles, err)
	}
	if err := agg.addRecording(ctx, wav.Data); err != nil {
		return nil, nil, err
	}
	r, err := agg.report(nil, 0, fullcallv1.EndReason_END_REASON_HANGUP, false, source)
	if err != nil {
		return nil, nil, err
	}
	var talk float64
	for _, c := range r.Channels {
		talk += c.TalkS
	}
	if talk == 0 {
		return nil, nil, errNoSpeech
	}
	var keep []byte
	if r.AudioStored {
		keep = wav.Data
	}
	return r, keep, nil
}

// prepare checks a recording and describes it as a call.
func prepare(t *tenant.Tenant, rec *fullcallv1.Recording) (*audio.Recording, *callv1.Call, error) {
	wav, err := audio.ParseWAV(rec.GetWav())
	if err != nil {
		return nil, nil, err
	}
	roles := rec.GetRoles()
	if len(roles) == 0 {
		roles = []callv1.ChannelRole{callv1.ChannelRole_CHANNEL_ROLE_AGENT}
		if wav.Format.Channels == 2 {
			roles = []callv1.ChannelRole{callv1.ChannelRole_CHANNEL_ROLE_CALLER, callv1.ChannelRole_CHANNEL_ROLE_AGENT}
		}
	}
	if len(roles) != wav.Format.Channels {
		return nil, nil, fmt.Errorf("%w: %d roles for a %d-channel recording", errBadRoles, len(roles), wav.Format.Channels)
	}
	callID := rec.GetCallId()
	if err := errors.Join(field.OptionalID("call_id", callID), field.OptionalID("agent_id", rec.GetAgentId())); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", errBadField, err)
	}
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
	if _, err := wire.Format(call.Format); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", errBadRoles, err)
	}
	return wav, call, nil
}

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
	var err error
	if st := parseTime(q.Get("started_at"), "started_at", &err); !st.IsZero() {
		rec.StartedAt = timestamppb.New(st)
	}
	async := false
	if a := q.Get("async"); a != "" && err == nil {
		if async, err = strconv.ParseBool(a); err != nil {
			err = fmt.Errorf("async: want true or false, got %q", a)
		}
	}
	if err != nil {
		service.WriteError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	callback := q.Get("callback_url")
	if err := checkCallback(t, callback); err != nil {
		writeRecordingError(w, err)
		return
	}
	if r.ContentLength > s.o.MaxJobBytes {
		writeRecordingError(w, fmt.Errorf("%w: recording of %d bytes exceeds the %d-byte limit", errTooLarge, r.ContentLength, s.o.MaxJobBytes))
		return
	}
	body, err := readBody(w, r, s.o.MaxJobBytes)
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		writeRecordingError(w, fmt.Errorf("%w: recording exceeds the %d-byte limit", errTooLarge, s.o.MaxJobBytes))
		return
	}
	if err != nil {
		service.WriteError(w, http.StatusBadRequest, "bad_request", "reading the body: "+err.Error())
		return
	}
	rec.Wav = body
	if int64(len(body)) <= s.o.MaxUploadBytes && !async && callback == "" {
		rep, err := s.analyzeNow(r.Context(), t, rec)
		if err != nil {
			writeRecordingError(w, err)
			return
		}
		hideScores(r.Context(), t, rep)
		service.WriteJSON(w, http.StatusOK, rep)
		return
	}
	resp, err := s.submit(r.Context(), t, rec, callback)
	if err != nil {
		writeRecordingError(w, err)
		return
	}
	w.Header().Set("Location", resp.StatusUrl)
	service.WriteJSON(w, http.StatusAccepted, resp)
}

// readBody reads a request body of at most limit bytes, in one allocation
// when the client said how long it is.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	body := http.MaxBytesReader(w, r.Body, limit)
	if n := r.ContentLength; n > 0 && n <= limit {
		buf := make([]byte, n)
		if _, err := io.ReadFull(body, buf); err != nil {
			return nil, err
		}
		return buf, nil
	}
	return io.ReadAll(body)
}

// checkCallback accepts an empty callback URL or one the tenant allows.
func checkCallback(t *tenant.Tenant, url string) error {
	if url == "" {
		return nil
	}
	if !t.JobCallbacks.Enabled() {
		return fmt.Errorf("%w: this tenant has no job_callbacks configured", errBadCallback)
	}
	if _, err := t.JobCallbacks.Check(url); err != nil {
		return fmt.Errorf("%w: %w", errBadCallback, err)
	}
	return nil
}

// normalCallback returns the URL a checked callback is sent to: the
// normalised one (tenant.ParseCallbackURL), never the raw text.
func normalCallback(t *tenant.Tenant, raw string) string {
	if raw == "" {
		return ""
	}
	u, err := t.JobCallbacks.Check(raw)
	if err != nil {
		return raw // refused again when it is sent
	}
	return u.String()
}

// submit checks a recording and queues it as a job.
func (s *Server) submit(ctx context.Context, t *tenant.Tenant, rec *fullcallv1.Recording, callback string) (*fullcallv1.SubmitRecordingResponse, error) {
	// The call id is chosen now, so that the job shows it from the start
	// (a client polling the job can open the report's URL as soon as the
	// job is done, and find it in the live feed and escalations meanwhile).
	if rec == nil {
		rec = &fullcallv1.Recording{} // a request without one: refused below as no WAV, not a panic
	}
	if rec.GetCallId() == "" {
		rec.CallId = "rec-" + randomID()
	}
	// The content is checked now, so that a file calmline cannot read is
	// refused here rather than failing later as a job.
	if _, _, err := prepare(t, rec); err != nil {
		s.m.uploads.Add(ctx, 1, metric.WithAttributes(reasonAttr.String(errorCode(err))))
		return nil, err
	}
	// Overflow policy of a tenant's job queue: refuse (the client may
	// retry later), counted.
	if n, err := s.store.PendingJobs(ctx, t.ID); err != nil {
		return nil, fmt.Errorf("%w: %v", errStore, err)
	} else if n >= s.o.MaxPendingJobs {
		s.m.uploads.Add(ctx, 1, metric.WithAttributes(reasonAttr.String("queue_full")))
		return nil, fmt.Errorf("%w: %d jobs are already queued or running for this tenant", errQueueFull, n)
	}
	j := &store.Job{ID: store.NewJobID(), TenantID: t.ID, Source: store.SourceUpload, Recording: rec, Payload: rec.Wav, CallbackURL: normalCallback(t, callback)}
	j.Ref = j.ID
	// The upload is the root of its call's trace; the job continues it.
	rctx, span := s.tr.root(ctx, spanRecording, spanCallID(rec), attribute.String("calmline.job_id", j.ID))
	defer span.End()
	j.TraceContext = s.tr.inject(rctx)
	if _, err := s.store.EnqueueJob(ctx, j); err != nil {
		s.m.storeErrors.Add(ctx, 1)
		return nil, fmt.Errorf("%w: %v", errStore, err)
	}
	s.m.uploads.Add(ctx, 1, metric.WithAttributes(reasonAttr.String("queued")))
	s.signalWorkers()
	return &fullcallv1.SubmitRecordingResponse{Job: store.JobProto(j, nil), StatusUrl: s.o.PublicURL + "/api/v1/jobs/" + j.ID}, nil
}

// SubmitRecording implements RecordingService.SubmitRecording.
func (s *Server) SubmitRecording(ctx context.Context, req *fullcallv1.SubmitRecordingRequest) (*fullcallv1.SubmitRecordingResponse, error) {
	t := mustTenant(ctx)
	rec := req.GetRecording()
	if n := int64(len(rec.GetWav())); n > s.o.MaxJobBytes {
		return nil, grpcError(fmt.Errorf("%w: recording of %d bytes exceeds the %d-byte limit", errTooLarge, n, s.o.MaxJobBytes))
	}
	if err := checkCallback(t, req.CallbackUrl); err != nil {
		return nil, grpcError(err)
	}
	resp, err := s.submit(ctx, t, rec, req.CallbackUrl)
	if err != nil {
		return nil, grpcError(err)
	}
	return resp, nil
}

// job returns a tenant's job with its report once done.
func (s *Server) job(ctx context.Context, tenantID, id string) (*fullcallv1.Job, error) {
	j, err := s.store.GetJob(ctx, tenantID, id)
	if err != nil {
		return nil, err
	}
	var rep *fullcallv1.Report
	if j.State == fullcallv1.JobState_JOB_STATE_DONE {
		rep, err = s.store.GetReport(ctx, tenantID, j.CallID)
		if err != nil && !errors.Is(err, store.ErrNotFound) { // deleted by retention since
			return nil, err
		}
	}
	return store.JobProto(j, rep), nil
}

// GetJob implements RecordingService.GetJob.
func (s *Server) GetJob(ctx context.Context, req *fullcallv1.GetJobRequest) (*fullcallv1.GetJobResponse, error) {
	t := mustTenant(ctx)
	if err := field.ID("job_id", req.JobId); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	j, err := s.job(ctx, t.ID, req.JobId)
	if errors.Is(err, store.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "no job %q", req.JobId)
	}
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	hideScores(ctx, t, j.GetReport())
	return &fullcallv1.GetJobResponse{Job: j}, nil
}

func (s *Server) httpGetJob(w http.ResponseWriter, r *http.Request) {
	t := mustTenant(r.Context())
	id := r.PathValue("job_id")
	if err := field.ID("job_id", id); err != nil {
		service.WriteError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	j, err := s.job(r.Context(), t.ID, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		service.WriteError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no job %q", id))
	case err != nil:
		service.WriteError(w, http.StatusServiceUnavailable, "unavailable", "the store is unavailable")
	default:
		hideScores(r.Context(), t, j.GetReport())
		service.WriteJSON(w, http.StatusOK, j)
	}
}

// spanCallID is a recording's call id for its spans: "" when the client's
// id is not one (the request is refused for it).
func spanCallID(rec *fullcallv1.Recording) string {
	if field.OptionalID("call_id", rec.GetCallId()) != nil {
		return ""
	}
	return rec.GetCallId()
}
