// Package fullcall is calmline's whole-call service. Gateways stream every
// call's audio to it losslessly while the call runs (IngestService.Record);
// it keeps running aggregates, checkpointed to the store every few seconds
// of audio (10 by default) so that another instance can take a call over, and at
// hang-up it only finalises the report, which it stores and serves over
// gRPC (ReportService) and REST. The same analysis serves the batch paths:
// recordings uploaded through the Web API (synchronously, or as jobs with a
// signed callback) and files dropped into per-tenant spool directories, both
// queued in the store so that workers on several instances share them.
// After each live call it tells escalation's care record; a periodic job
// enforces each tenant's retention.
package fullcall

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/calmline/calmline/fullcall/store"
	"github.com/calmline/calmline/lib/identity"
	"github.com/calmline/calmline/lib/rpc"
	"github.com/calmline/calmline/lib/service"
	"github.com/calmline/calmline/lib/telemetry"
	"github.com/calmline/calmline/lib/tenant"
	"github.com/calmline/calmline/lib/webhook"
	escalationv1 "github.com/calmline/calmline/proto/calmline/escalation/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// Options configures a fullcall Server.
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
	// BackendTLS, when set, is the TLS (and mTLS) configuration of
	// outgoing gRPC connections to the other services.
	BackendTLS *tls.Config
	// Identity is the deployment secret proving this service to the
	// others and verifying who calls its internal methods (lib/identity).
	// Without it only mTLS client certificates naming a service prove an
	// identity: internal methods refuse every other caller.
	Identity *identity.Keyring
	// Tenants authenticates report queries and uploads, and gives each
	// tenant's retention.
	Tenants *tenant.Registry
	// Database is the store: "sqlite:PATH" or "postgres://...". Defaults
	// to DataDir/fullcall.db. Instances that share it share live calls
	// (any of them can resume a call) and the batch queue.
	Database string
	// DataDir holds the SQLite file when Database is empty.
	DataDir string
	// MaxUploadBytes bounds a recording analysed synchronously; larger
	// uploads (up to MaxJobBytes) become jobs.
	MaxUploadBytes int64
	// MaxJobBytes bounds a recording queued as a job (upload or spool).
	MaxJobBytes int64
	// CheckpointEvery is how much audio a live call receives between
	// durable checkpoints (and acknowledgements). The gateway keeps what is
	// not acknowledged (30 s by default), so this must stay well below it.
	// Default 10 s: at 2 s the checkpoints (state encoding, SQLite's
	// commit) cost a live call as much as the rest of fullcall's work; a
	// takeover replays at most this much more audio.
	CheckpointEvery time.Duration
	// RealtimeWait is how much of a live call's audio fullcall holds, not
	// analysed, waiting for realtime's analysis of it (when the gateway
	// forwards it: OpenCall.realtime_analysis); past it fullcall analyses
	// the oldest audio itself. At least a second; realtime's results
	// normally follow their audio within a second.
	RealtimeWait time.Duration
	// OrphanAfter is how long a live call's checkpoint may go untouched
	// (no instance holds it, no gateway resumed it) before an instance
	// stores what arrived as an incomplete report.
	OrphanAfter time.Duration
	// MaxCalls bounds the live calls of this instance.
	MaxCalls int
	// ShutdownGrace bounds a stop triggered by Serve's context.
	ShutdownGrace time.Duration
	// EscalationAddr is escalation's gRPC address: each live call's report
	// is sent to its CareService. Empty: no care record.
	EscalationAddr string
	// Workers is the number of batch jobs analysed at once.
	Workers int
	// JobLease is how long a worker holds a job without renewing it; a job
	// whose worker died is taken over after it.
	JobLease time.Duration
	// MaxJobAttempts gives up on a job whose analysis was cut short this
	// many times.
	MaxJobAttempts int
	// MaxPendingJobs bounds a tenant's queued and running jobs: past it
	// uploads are refused (429 queue_full) and spool files wait in their
	// directory until the queue has room.
	MaxPendingJobs int
	// SpoolDir, when set, is watched for recordings: SpoolDir/TENANT/incoming.
	SpoolDir string
	// SpoolName names the spool as a job source. Instances sharing the
	// directory (one host, or a shared mount) must use the same name;
	// instances with their own directory, different names.
	SpoolName string
	// SpoolScanEvery is how often the spool is scanned.
	SpoolScanEvery time.Duration
	// SpoolSettle is how long a file must be left unmodified before it is
	// taken (writers should still write elsewhere and rename into place).
	SpoolSettle time.Duration
	// RetentionEvery is how often the retention job runs.
	RetentionEvery time.Duration
	// CallbackClient delivers job callbacks; it must not follow redirects.
	// Defaults to a client with a 10 s timeout that does not.
	CallbackClient *http.Client
	// CallbackAttempts bounds the delivery attempts of one callback.
	CallbackAttempts int
	// CallbackRetry is the wait before a callback's first retry; each
	// further retry waits three times longer, up to an hour.
	CallbackRetry time.Duration
	// PublicURL, when set, is the base of the status and report URLs in
	// callbacks ("https://fullcall.example.com"); else they are paths.
	PublicURL string
}

// DefaultOptions returns the defaults.
func DefaultOptions() Options {
	return Options{
		DataDir:          "data",
		MaxUploadBytes:   32 << 20,
		MaxJobBytes:      256 << 20,
		CheckpointEvery:  10 * time.Second,
		RealtimeWait:     3 * time.Second,
		OrphanAfter:      2 * time.Minute,
		MaxCalls:         5000,
		ShutdownGrace:    10 * time.Second,
		Workers:          2,
		JobLease:         30 * time.Second,
		MaxJobAttempts:   3,
		MaxPendingJobs:   1000,
		SpoolName:        "spool",
		SpoolScanEvery:   2 * time.Second,
		SpoolSettle:      2 * time.Second,
		RetentionEvery:   time.Hour,
		CallbackAttempts: 10,
		CallbackRetry:    5 * time.Second,
	}
}

func (o *Options) validate() error {
	switch {
	case o.Tenants == nil:
		return errors.New("fullcall: Tenants is required")
	case o.Database == "" && o.DataDir == "":
		return errors.New("fullcall: Database or DataDir is required")
	case o.MaxUploadBytes <= 0:
		return fmt.Errorf("fullcall: MaxUploadBytes %d must be positive", o.MaxUploadBytes)
	case o.MaxJobBytes < o.MaxUploadBytes:
		return fmt.Errorf("fullcall: MaxJobBytes %d must be at least MaxUploadBytes %d", o.MaxJobBytes, o.MaxUploadBytes)
	case o.CheckpointEvery <= 0 || o.CheckpointEvery > 20*time.Second:
		return fmt.Errorf("fullcall: CheckpointEvery %v must be in (0, 20s]: the gateway keeps 30 s of unacknowledged audio", o.CheckpointEvery)
	case o.RealtimeWait < time.Second || o.RealtimeWait > 20*time.Second:
		return fmt.Errorf("fullcall: RealtimeWait %v must be in [1s, 20s]: the gateway keeps 30 s of unacknowledged audio", o.RealtimeWait)
	case o.OrphanAfter < time.Second:
		return fmt.Errorf("fullcall: OrphanAfter %v must be at least 1s", o.OrphanAfter)
	case o.MaxCalls <= 0:
		return fmt.Errorf("fullcall: MaxCalls %d must be positive", o.MaxCalls)
	case o.ShutdownGrace <= 0:
		return fmt.Errorf("fullcall: ShutdownGrace %v must be positive", o.ShutdownGrace)
	case o.Workers < 0:
		return fmt.Errorf("fullcall: Workers %d must not be negative", o.Workers)
	case o.JobLease < 100*time.Millisecond:
		return fmt.Errorf("fullcall: JobLease %v is too short", o.JobLease)
	case o.MaxJobAttempts <= 0:
		return fmt.Errorf("fullcall: MaxJobAttempts %d must be positive", o.MaxJobAttempts)
	case o.MaxPendingJobs <= 0:
		return fmt.Errorf("fullcall: MaxPendingJobs %d must be positive", o.MaxPendingJobs)
	case o.SpoolDir != "" && (o.SpoolName == "" || o.SpoolName == store.SourceUpload):
		return fmt.Errorf("fullcall: SpoolName %q: want a name other than %q", o.SpoolName, store.SourceUpload)
	case o.SpoolDir != "" && o.SpoolScanEvery <= 0:
		return fmt.Errorf("fullcall: SpoolScanEvery %v must be positive", o.SpoolScanEvery)
	case o.RetentionEvery <= 0:
		return fmt.Errorf("fullcall: RetentionEvery %v must be positive", o.RetentionEvery)
	case o.CallbackAttempts <= 0:
		return fmt.Errorf("fullcall: CallbackAttempts %d must be positive", o.CallbackAttempts)
	case o.CallbackRetry <= 0:
		return fmt.Errorf("fullcall: CallbackRetry %v must be positive", o.CallbackRetry)
	}
	return nil
}

// Server is a fullcall instance.
type Server struct {
	fullcallv1.UnimplementedIngestServiceServer
	fullcallv1.UnimplementedReportServiceServer
	fullcallv1.UnimplementedRecordingServiceServer

	o     Options
	id    string // this instance, as the holder of calls and jobs
	log   *slog.Logger
	host  *service.Host
	store *store.Store
	m     *metrics
	tr    tracing // spans of uploads, spool files and jobs (tracing.go)
	calls atomic.Int64

	care  *carePoster
	escCC *grpc.ClientConn
	// sources are the batch sources besides uploads, by name.
	sources map[string]source
	wake    chan struct{} // a job was queued here
	cbWake  chan struct{} // a callback became due here

	draining  chan struct{}
	drainOnce sync.Once
	bgCtx     context.Context
	stopBg    context.CancelFunc
	bg        sync.WaitGroup
	bgOnce    sync.Once
	serveMu   sync.Mutex
	started   bool

	// Test hooks.
	// stored, when set, receives every report of a live call once stored.
	stored chan<- *fullcallv1.Report
	// jobHook, when set, runs at points of a job's life ("claimed",
	// "analysed", "committed") and may block.
	jobHook func(point string, j *store.Job)
}

// New opens the store and returns a Server; Serve starts it.
func New(ctx context.Context, o Options) (*Server, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Database == "" {
		o.Database = "sqlite:" + filepath.Join(o.DataDir, "fullcall.db")
	}
	if o.CallbackClient == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.DialContext = webhook.DialContext // no link-local or metadata addresses unless the tenant allows them
		o.CallbackClient = &http.Client{
			Transport: tr,
			Timeout:   10 * time.Second,
			// Callbacks go only to the URLs the tenant allowed.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	st, err := store.Open(ctx, o.Database)
	if err != nil {
		return nil, fmt.Errorf("fullcall: %w", err)
	}
	m, err := newMetrics(o.MeterProvider)
	if err != nil {
		st.Close()
		return nil, err
	}
	s := &Server{
		o: o, id: "fc-" + randomID(), log: o.Logger.With("service", "fullcall"), store: st, m: m,
		tr:   newTracing(o.TracerProvider, o.Propagator),
		wake: make(chan struct{}, max(o.Workers, 1)), cbWake: make(chan struct{}, 1), draining: make(chan struct{}),
	}
	s.bgCtx, s.stopBg = context.WithCancel(context.Background())
	fail := func(err error) (*Server, error) {
		st.Close()
		if s.escCC != nil {
			s.escCC.Close()
		}
		return nil, err
	}
	if o.EscalationAddr != "" {
		cc, err := rpc.Dial(o.EscalationAddr, rpc.Options{TLS: o.BackendTLS, Identity: identity.Credentials(o.Identity, identity.Fullcall), MeterProvider: o.MeterProvider, TracerProvider: o.TracerProvider, Propagator: o.Propagator})
		if err != nil {
			return fail(fmt.Errorf("fullcall: escalation: %w", err))
		}
		s.escCC = cc
		s.care = newCarePoster(escalationv1.NewCareServiceClient(cc), st, s.log, m)
	}
	s.sources = map[string]source{}
	if o.SpoolDir != "" {
		sp, err := newSpoolDir(o.SpoolDir, o.SpoolName, o.Tenants, st, s.log, m, o.SpoolSettle, o.SpoolScanEvery, o.MaxJobBytes, o.MaxPendingJobs)
		if err != nil {
			return fail(fmt.Errorf("fullcall: %w", err))
		}
		sp.tr = s.tr
		s.sources[sp.name()] = sp
	}
	verifier, err := identity.NewVerifier(identity.VerifierOptions{Keyring: o.Identity, Logger: s.log, MeterProvider: o.MeterProvider})
	if err != nil {
		return fail(err)
	}
	maxMsg := max(o.MaxUploadBytes, o.MaxJobBytes)
	s.host = service.NewHost(service.Options{
		Name:           "fullcall",
		Logger:         s.log,
		MeterProvider:  o.MeterProvider,
		TracerProvider: o.TracerProvider,
		Propagator:     o.Propagator,
		Metrics:        o.Metrics,
		AdminToken:     o.AdminToken,
		ShutdownGrace:  o.ShutdownGrace,
		TLS:            o.TLS,
		// An upload travels in one message.
		MaxRecvMsgSize: int(maxMsg) + 64<<10,
		// IngestService is internal (only the gateway); the others are
		// tenant-facing and authenticate API keys.
		UnaryInterceptors:  []grpc.UnaryServerInterceptor{verifier.UnaryServerInterceptor(), o.Tenants.UnaryServerInterceptorActions(grpcActions)},
		StreamInterceptors: []grpc.StreamServerInterceptor{verifier.StreamServerInterceptor()},
	})
	fullcallv1.RegisterIngestServiceServer(s.host.GRPC, s)
	fullcallv1.RegisterReportServiceServer(s.host.GRPC, s)
	fullcallv1.RegisterRecordingServiceServer(s.host.GRPC, s)
	s.routes(s.host.Mux)
	s.host.AddReadyCheck(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := st.Ping(ctx); err != nil {
			return fmt.Errorf("store: %w", err)
		}
		return nil
	})
	if _, err := m.meter.Int64ObservableGauge("calmline.fullcall.calls.active",
		metric.WithDescription("Live calls being recorded by this instance."),
		metric.WithInt64Callback(func(_ context.Context, ob metric.Int64Observer) error {
			ob.Observe(s.calls.Load())
			return nil
		})); err != nil {
		return fail(err)
	}
	return s, nil
}

// Serve serves lis until ctx ends or Shutdown is called, runs the
// background work (orphan sweep, batch workers, callbacks, spool,
// retention, care record) meanwhile, then closes the store.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	s.serveMu.Lock()
	if s.started {
		s.serveMu.Unlock()
		return errors.New("fullcall: Serve called twice")
	}
	s.started = true
	s.startBackground()
	s.serveMu.Unlock()
	stop := context.AfterFunc(ctx, s.drain)
	defer stop()
	err := s.host.Serve(ctx, lis)
	s.drain()
	s.stopBackground()
	s.store.Close()
	if s.escCC != nil {
		s.escCC.Close()
	}
	return err
}

// Shutdown stops the server: health turns NOT_SERVING, live calls are
// checkpointed and handed back to their gateways (UNAVAILABLE, so that they
// resume them on another instance), requests may finish until ctx ends,
// and the background work stops (a job in progress goes back to the
// queue).
func (s *Server) Shutdown(ctx context.Context) error {
	s.drain()
	err := s.host.Shutdown(ctx)
	s.stopBackground()
	return err
}

func (s *Server) drain() { s.drainOnce.Do(func() { close(s.draining) }) }

// Addr returns the listening address once Serve runs.
func (s *Server) Addr() net.Addr { return s.host.Addr() }

// ID returns the instance's id, as recorded against the calls and jobs it
// holds.
func (s *Server) ID() string { return s.id }

func (s *Server) startBackground() {
	s.goBg(s.keepCalls)
	s.goBg(s.retention)
	for range s.o.Workers {
		s.goBg(s.worker)
	}
	s.goBg(s.callbacks)
	for _, src := range s.sources {
		s.goBg(func(ctx context.Context) { src.run(ctx, s.signalWorkers) })
	}
	if s.care != nil {
		s.goBg(s.care.run)
	}
}

func (s *Server) goBg(f func(context.Context)) {
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		f(s.bgCtx)
	}()
}

func (s *Server) stopBackground() {
	s.bgOnce.Do(func() {
		s.stopBg()
		s.bg.Wait()
	})
}

// keepCalls keeps this instance's live calls marked as held, and stores
// the calls nobody holds any more (their instance died and no gateway
// resumed them) as incomplete reports.
func (s *Server) keepCalls(ctx context.Context) {
	beat := time.NewTicker(max(s.o.OrphanAfter/4, 250*time.Millisecond))
	defer beat.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-beat.C:
		}
		if _, err := s.store.Heartbeat(ctx, s.id); err != nil && ctx.Err() == nil {
			s.log.Warn("heartbeat of live calls failed", "err", err)
		}
		if i%2 == 1 {
			s.sweepOrphans(ctx)
		}
	}
}

// sweepOrphans finalises calls nobody held for OrphanAfter.
func (s *Server) sweepOrphans(ctx context.Context) {
	cutoff := s.store.Now().Add(-s.o.OrphanAfter)
	keys, err := s.store.StaleCalls(ctx, cutoff, 50)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("listing orphaned calls failed", "err", err)
		}
		return
	}
	for _, k := range keys {
		if ctx.Err() != nil {
			return
		}
		log := s.log.With("tenant", k.TenantID, "call_id", k.CallID)
		cp, err := s.store.ResumeCall(ctx, k.TenantID, k.CallID, s.id, cutoff)
		if errors.Is(err, store.ErrFenced) || errors.Is(err, store.ErrNotFound) {
			continue // resumed or swept meanwhile
		}
		if err != nil {
			log.Warn("taking an orphaned call failed", "err", err)
			continue
		}
		if cp.Finished {
			continue
		}
		segs, err := s.store.Timeline(ctx, k.TenantID, k.CallID)
		if err != nil {
			log.Warn("reading an orphaned call failed", "err", err)
			continue
		}
		agg, err := restoreAggregate(cp, segs, s.o.RealtimeWait)
		if err != nil {
			// Cannot be restored (another model's checkpoint): store what
			// is known without the analysis of the tail.
			log.Error("orphaned call cannot be restored; storing an empty incomplete report", "err", err)
			if agg, err = newAggregate(cp.Call); err != nil {
				continue
			}
			agg.gaps, agg.alerts, agg.liveGaps, agg.chunks, agg.bytes = cp.Partial.Gaps, cp.Partial.Alerts, cp.Partial.LiveScoringGaps, cp.Partial.Chunks, cp.Partial.AudioBytes
			cp.TimelineLen = 0
		}
		r, err := s.finish(ctx, agg, cp, cp.Seq, 0, fullcallv1.EndReason_END_REASON_DISCONNECTED, true)
		if err != nil {
			log.Warn("storing an orphaned call failed", "err", err)
			continue
		}
		s.m.orphans.Add(ctx, 1)
		log.Warn("call abandoned by its gateway; stored what arrived as an incomplete report", "duration_s", r.DurationS, "chunks", r.Chunks)
	}
}

func (s *Server) signalWorkers() {
	for range cap(s.wake) {
		select {
		case s.wake <- struct{}{}:
		default:
			return
		}
	}
}

func randomID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

type metrics struct {
	mp             metric.MeterProvider
	meter          metric.Meter
	calls          metric.Int64Counter
	chunks         metric.Int64Counter
	duplicates     metric.Int64Counter
	reports        metric.Int64Counter
	finalise       metric.Float64Histogram
	checkpoints    metric.Int64Counter
	checkpointTime metric.Float64Histogram
	fenced         metric.Int64Counter
	orphans        metric.Int64Counter
	uploads        metric.Int64Counter
	audioBytes     metric.Int64Counter
	storeErrors    metric.Int64Counter
	jobs           metric.Int64Counter
	callbacks      metric.Int64Counter
	spoolFiles     metric.Int64Counter
	careSent       metric.Int64Counter
	careDropped    metric.Int64Counter
	careRetries    metric.Int64Counter
	deletions      metric.Int64Counter
	// secondsAnalysed counts live calls' seconds by where their analysis
	// came from.
	secondsAnalysed metric.Int64Counter
	// analysesNotTaken counts realtime's per-second analyses not taken.
	analysesNotTaken metric.Int64Counter
}

var (
	fromRealtime = metric.WithAttributes(sourceAttr.String("realtime"))
	fromFullcall = metric.WithAttributes(sourceAttr.String("fullcall"))
)

func newMetrics(mp metric.MeterProvider) (*metrics, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	m := &metrics{mp: mp, meter: mp.Meter("github.com/calmline/calmline/fullcall")}
	var err error
	counter := func(name, desc string) metric.Int64Counter {
		if err != nil {
			return nil
		}
		var c metric.Int64Counter
		c, err = m.meter.Int64Counter(name, metric.WithDescription(desc))
		return c
	}
	histogram := func(name, desc string) metric.Float64Histogram {
		if err != nil {
			return nil
		}
		var h metric.Float64Histogram
		h, err = m.meter.Float64Histogram(name, metric.WithDescription(desc), metric.WithUnit("s"),
			metric.WithExplicitBucketBoundaries(durationBuckets...))
		return h
	}
	m.calls = counter("calmline.fullcall.calls", "Live call streams opened, by outcome (started, resumed, resumed_finished, resume_unknown, resume_failed).")
	m.chunks = counter("calmline.fullcall.chunks", "Audio chunks received.")
	m.duplicates = counter("calmline.fullcall.chunks.duplicate", "Chunks received again (replays) and ignored.")
	m.reports = counter("calmline.fullcall.reports", "Reports stored, by source.")
	m.checkpoints = counter("calmline.fullcall.checkpoints", "Durable checkpoints of live calls written.")
	m.fenced = counter("calmline.fullcall.fenced", "Writes refused because another instance took the call or job over.")
	m.orphans = counter("calmline.fullcall.orphans", "Calls nobody resumed, stored as incomplete reports by the sweep.")
	m.uploads = counter("calmline.fullcall.uploads", "Recordings uploaded, by outcome.")
	m.audioBytes = counter("calmline.fullcall.audio.bytes", "Bytes of encoded audio received.")
	m.storeErrors = counter("calmline.fullcall.store.errors", "Failed writes to the store.")
	m.jobs = counter("calmline.fullcall.jobs", "Batch jobs finished, by source and outcome.")
	m.callbacks = counter("calmline.fullcall.callbacks", "Job callback attempts, by outcome (delivered, retry, failed).")
	m.spoolFiles = counter("calmline.fullcall.spool.files", "Spool files, by event (queued, done, failed, duplicate, deferred: the tenant's queue was full).")
	m.careSent = counter("calmline.fullcall.care.sent", "Finished calls recorded by escalation's care service.")
	m.careDropped = counter("calmline.fullcall.care.dropped", "Calls not queued for the care record because the queue was full (they stay pending in the store and are sent later).")
	m.careRetries = counter("calmline.fullcall.care.retries", "Failed attempts to record a call with escalation's care service.")
	m.deletions = counter("calmline.fullcall.retention.deletions", "Reports and recordings deleted by retention, by kind.")
	m.secondsAnalysed = counter("calmline.fullcall.seconds.analysed", "Seconds of live calls' reports, by where their analysis came from: realtime (its per-second analysis, forwarded by the gateway) or fullcall (analysed here: realtime's was missing, late or for other audio).")
	m.analysesNotTaken = counter("calmline.fullcall.realtime.analyses.ignored", "realtime's per-second analyses fullcall did not take, by reason: late (fullcall had the second already), other_audio (realtime analysed other audio: dropped chunks, a takeover), invalid.")
	m.finalise = histogram("calmline.fullcall.finalise.duration", helpFinalise)
	m.checkpointTime = histogram("calmline.fullcall.checkpoint.duration", helpCheckpoint)
	if err == nil {
		m.zero()
	}
	return m, err
}

// zero makes every series whose label values are known exist at zero from
// the start, so that rate() and alerts see the first increase. Label values
// that depend on input (an upload's error code, a job's source) appear
// when first counted.
func (m *metrics) zero() {
	ctx := context.Background()
	for _, c := range []metric.Int64Counter{m.chunks, m.duplicates, m.checkpoints, m.fenced, m.orphans,
		m.audioBytes, m.storeErrors, m.careSent, m.careDropped, m.careRetries} {
		c.Add(ctx, 0)
	}
	zero := func(c metric.Int64Counter, k attribute.Key, values ...string) {
		for _, v := range values {
			c.Add(ctx, 0, metric.WithAttributes(k.String(v)))
		}
	}
	zero(m.calls, outcomeAttr, "started", "resumed", "resumed_finished", "resume_unknown", "resume_failed")
	zero(m.uploads, reasonAttr, "ok", "queued", "queue_full")
	zero(m.reports, sourceAttr, "stream", "upload")
	zero(m.secondsAnalysed, sourceAttr, "realtime", "fullcall")
	zero(m.analysesNotTaken, reasonAttr, notTakenReasons[:]...)
	zero(m.spoolFiles, eventAttr, "queued", "done", "failed", "duplicate", "deferred")
	zero(m.callbacks, outcomeAttr, "delivered", "retry", "failed")
	zero(m.deletions, kindAttr, store.KindReport, store.KindAudio)
	telemetry.DeclareHistogram(m.mp, "calmline_fullcall_finalise_duration_seconds", helpFinalise, durationBuckets)
	telemetry.DeclareHistogram(m.mp, "calmline_fullcall_checkpoint_duration_seconds", helpCheckpoint, durationBuckets)
}

// The duration histograms' buckets and help texts.
var durationBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}

const (
	helpFinalise   = "Time from close to stored report."
	helpCheckpoint = "Time to write a live call's checkpoint."
)
