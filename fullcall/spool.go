package fullcall

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/calmline/calmline/fullcall/store"
	"github.com/calmline/calmline/lib/field"
	"github.com/calmline/calmline/lib/tenant"
	"github.com/calmline/calmline/lib/wire"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// A spool is a source of recordings for the batch path: a directory per
// tenant, DIR/TENANT/incoming, where customer systems drop WAV files
// (written elsewhere, or under a name starting with ".", and renamed into
// place), each optionally preceded by NAME.json saying what it is:
//
//	{"call_id": "...", "agent_id": "...", "roles": ["caller", "agent"],
//	 "started_at": "2026-11-24T10:00:00Z", "labels": {"queue": "billing"}}
//
// Each file is queued as a job in the store (once: the job's ref is the
// file's path, size and modification time, unique per source), analysed by
// any worker that reads this spool, and then moved to DIR/TENANT/done, or
// to DIR/TENANT/failed with NAME.error.json beside it saying why. Every
// step is idempotent and the job's state in the store is the truth, so a
// crash anywhere — mid-analysis (the lease runs out and another worker
// takes the job), after the report was stored but before the move (the
// next scan moves the file), after the move (the next scan settles the job)
// — leaves each file analysed and moved exactly once.
//
// The job queue is the seam for other sources: object storage would list
// and read objects the same way.
type spoolDir struct {
	tr      tracing // the root span of each file queued
	dir     string
	id      string
	tenants *tenant.Registry
	store   *store.Store
	log     *slog.Logger
	m       *metrics
	// settleAge is how long a file must be left unmodified to be taken.
	settleAge time.Duration
	maxSize   int64
	every     time.Duration
	// maxPending bounds a tenant's queued jobs; past it files wait.
	maxPending int
	// stuck remembers the non-regular entries that could not be moved
	// aside, so that each is logged once, not at every scan.
	stuckMu sync.Mutex
	stuck   map[string]bool
}

var _ source = (*spoolDir)(nil)

// Spool subdirectories.
const (
	spoolIncoming = "incoming"
	spoolDone     = "done"
	spoolFailed   = "failed"
)

func newSpoolDir(dir, name string, tenants *tenant.Registry, st *store.Store, log *slog.Logger, m *metrics, settle, every time.Duration, maxSize int64, maxPending int) (*spoolDir, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	return &spoolDir{tr: newTracing(nil, nil), dir: dir, id: name, tenants: tenants, store: st, log: log.With("spool", name), m: m, settleAge: settle, maxSize: maxSize, every: every, maxPending: maxPending}, nil
}

func (d *spoolDir) name() string            { return d.id }
func (d *spoolDir) kind() fullcallv1.Source { return fullcallv1.Source_SOURCE_SPOOL }

// run scans the spool until ctx ends; wake tells the workers a job was
// queued.
func (d *spoolDir) run(ctx context.Context, wake func()) {
	t := time.NewTicker(d.every)
	defer t.Stop()
	for {
		if n, err := d.scan(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn("spool scan failed", "err", err)
		} else if n > 0 {
			wake()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// spooled is a file found in an incoming directory.
type spooled struct {
	tenant, name string
	ref          string
	settled      bool // older than the settle time
}

// scan queues new files, moves the files of finished jobs aside, and
// settles finished jobs whose files are gone; it returns how many jobs it
// queued.
func (d *spoolDir) scan(ctx context.Context) (int, error) {
	jobs, err := d.store.Unsettled(ctx, d.id)
	if err != nil {
		return 0, err
	}
	files, err := d.list()
	if err != nil {
		return 0, err
	}
	present := map[string]bool{}
	queued := 0
	pending := map[string]int{} // per tenant, counted once per scan
	full := func(tenantID string) (bool, error) {
		n, ok := pending[tenantID]
		if !ok {
			var err error
			if n, err = d.store.PendingJobs(ctx, tenantID); err != nil {
				return false, err
			}
		}
		pending[tenantID] = n
		return n >= d.maxPending, nil
	}
	for _, f := range files {
		if ctx.Err() != nil {
			return queued, ctx.Err()
		}
		present[f.ref] = true
		if j, ok := jobs[f.ref]; ok {
			if j.State == fullcallv1.JobState_JOB_STATE_DONE || j.State == fullcallv1.JobState_JOB_STATE_FAILED {
				d.settleJob(ctx, j)
			}
			continue
		}
		if !f.settled {
			continue // still being written, perhaps
		}
		if isFull, err := full(f.tenant); err != nil {
			return queued, err
		} else if isFull {
			// Overflow policy: the file waits in incoming/ until the
			// tenant's queue has room; nothing is dropped.
			d.m.spoolFiles.Add(ctx, 1, metric.WithAttributes(eventAttr.String("deferred")))
			continue
		}
		ok, err := d.enqueue(ctx, f)
		if err != nil {
			return queued, err
		}
		if ok {
			queued++
			pending[f.tenant]++
			d.m.spoolFiles.Add(ctx, 1, metric.WithAttributes(eventAttr.String("queued")))
			d.log.Info("spooled recording queued", "tenant", f.tenant, "file", f.name)
			continue
		}
		// Queued already: by another instance since this scan began, or
		// analysed and moved aside before and now put back (the same
		// name, size and time) — then it is not analysed twice.
		prev, err := d.store.JobByRef(ctx, d.id, f.ref)
		if err != nil {
			return queued, err
		}
		if !prev.Settled {
			continue
		}
		d.m.spoolFiles.Add(ctx, 1, metric.WithAttributes(eventAttr.String("duplicate")))
		d.moveAside(f.tenant, f.name, spoolFailed, &spoolError{Code: "duplicate", Error: "this file (same name, size and modification time) was already analysed; rename it to analyse it again"})
	}
	for ref, j := range jobs {
		finished := j.State == fullcallv1.JobState_JOB_STATE_DONE || j.State == fullcallv1.JobState_JOB_STATE_FAILED
		if finished && !present[ref] {
			// Moved already (by this or another instance) before the job
			// was marked settled.
			if err := d.store.Settle(ctx, j.ID); err != nil {
				return queued, err
			}
		}
	}
	return queued, nil
}

// list returns the files in every known tenant's incoming directory.
func (d *spoolDir) list() ([]spooled, error) {
	var out []spooled
	now := time.Now()
	for _, t := range d.tenants.Tenants() {
		in := filepath.Join(d.dir, t.ID, spoolIncoming)
		if err := os.MkdirAll(in, 0o755); err != nil {
			return nil, err
		}
		ents, err := os.ReadDir(in)
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			name := e.Name()
			if strings.HasPrefix(name, ".") {
				continue
			}
			if !e.Type().IsRegular() {
				d.refuseNonRegular(t.ID, name, e.Type())
				continue
			}
			if !strings.EqualFold(filepath.Ext(name), ".wav") {
				continue
			}
			info, err := e.Info()
			if err != nil {
				continue // gone meanwhile
			}
			out = append(out, spooled{
				tenant:  t.ID,
				name:    name,
				ref:     fmt.Sprintf("%s/%s|%d|%d", t.ID, name, info.Size(), info.ModTime().UnixNano()),
				settled: now.Sub(info.ModTime()) >= d.settleAge,
			})
		}
	}
	return out, nil
}

// refuseNonRegular moves a symlink, directory, FIFO, socket or device
// found in incoming/ to failed/ with an error record: nothing would ever
// take it, and a symlink could point anywhere. One that cannot be moved
// is logged once.
func (d *spoolDir) refuseNonRegular(tenantID, name string, mode fs.FileMode) {
	kind := "a non-regular file"
	switch {
	case mode&fs.ModeSymlink != 0:
		kind = "a symbolic link"
	case mode.IsDir():
		kind = "a directory"
	case mode&fs.ModeNamedPipe != 0:
		kind = "a FIFO"
	case mode&fs.ModeSocket != 0:
		kind = "a socket"
	case mode&fs.ModeDevice != 0:
		kind = "a device"
	}
	reason := &spoolError{Code: "not_regular_file", Error: fmt.Sprintf("%s is %s; the spool takes regular files only", name, kind)}
	key := filepath.Join(tenantID, name)
	if err := d.moveAside(tenantID, name, spoolFailed, reason); err != nil {
		d.stuckMu.Lock()
		first := !d.stuck[key]
		if d.stuck == nil {
			d.stuck = map[string]bool{}
		}
		d.stuck[key] = true
		d.stuckMu.Unlock()
		if first {
			d.log.Warn("a non-regular file in the spool cannot be moved aside; it is ignored", "tenant", tenantID, "file", name, "kind", kind, "err", err)
		}
		return
	}
	d.log.Warn("a non-regular file in the spool was moved to failed/", "tenant", tenantID, "file", name, "kind", kind)
	d.m.spoolFiles.Add(context.Background(), 1, metric.WithAttributes(eventAttr.String("failed")))
}

// sidecar is the optional NAME.json next to a spooled recording.
type sidecar struct {
	CallID    string            `json:"call_id"`
	AgentID   string            `json:"agent_id"`
	Roles     []string          `json:"roles"`
	StartedAt time.Time         `json:"started_at"`
	Labels    map[string]string `json:"labels"`
}

func (d *spoolDir) enqueue(ctx context.Context, f spooled) (bool, error) {
	j := &store.Job{ID: store.NewJobID(), TenantID: f.tenant, Source: d.id, Ref: f.ref, Recording: &fullcallv1.Recording{}}
	rec := j.Recording
	side := filepath.Join(d.dir, f.tenant, spoolIncoming, strings.TrimSuffix(f.name, filepath.Ext(f.name))+".json")
	if b, err := os.ReadFile(side); err == nil {
		var sc sidecar
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&sc); err != nil {
			// Queued anyway, marked so that the job fails with the reason.
			rec.Labels = map[string]string{badSidecarLabel: err.Error()}
		} else {
			rec.CallId, rec.AgentId, rec.Labels = sc.CallID, sc.AgentID, sc.Labels
			if !sc.StartedAt.IsZero() {
				rec.StartedAt = timestamppb.New(sc.StartedAt)
			}
			for _, r := range sc.Roles {
				role, err := wire.Role(r)
				if err != nil {
					rec.Labels = map[string]string{badSidecarLabel: err.Error()}
					break
				}
				rec.Roles = append(rec.Roles, role)
			}
		}
	}
	if rec.CallId == "" {
		rec.CallId = spoolCallID(f.ref)
	}
	// The file is the root of its call's trace; the job continues it.
	callID := rec.CallId
	if field.OptionalID("call_id", callID) != nil {
		callID = "" // refused when the job runs; not put on a span
	}
	sctx, span := d.tr.root(ctx, spanSpoolFile, callID, attribute.String("calmline.spool", d.id), attribute.String("calmline.job_id", j.ID))
	j.TraceContext = d.tr.inject(sctx)
	ok, err := d.store.EnqueueJob(ctx, j)
	if ok {
		span.End() // a file queued already (by another instance) has its trace already
	}
	return ok, err
}

// badSidecarLabel carries a sidecar's problem to the job, which fails with
// it.
const badSidecarLabel = "calmline.sidecar_error"

var errBadSidecar = errors.New("bad sidecar")

// spoolCallID is the call id of a spooled file without a sidecar: its name
// without the extension.
func spoolCallID(ref string) string {
	path, _, _ := strings.Cut(ref, "|")
	name := filepath.Base(path)
	return strings.TrimSuffix(name, filepath.Ext(name))
}

// parseRef splits a ref into the file's path and what it was when queued.
func (d *spoolDir) parseRef(ref string) (path string, size, mtime int64, err error) {
	parts := strings.Split(ref, "|")
	if len(parts) != 3 {
		return "", 0, 0, fmt.Errorf("bad spool ref %q", ref)
	}
	tenantID, name, ok := strings.Cut(parts[0], "/")
	if !ok || strings.Contains(name, "/") || strings.Contains(tenantID, "..") || strings.Contains(name, "..") {
		return "", 0, 0, fmt.Errorf("bad spool ref %q", ref)
	}
	size, err1 := strconv.ParseInt(parts[1], 10, 64)
	mtime, err2 := strconv.ParseInt(parts[2], 10, 64)
	if err1 != nil || err2 != nil {
		return "", 0, 0, fmt.Errorf("bad spool ref %q", ref)
	}
	return filepath.Join(d.dir, tenantID, spoolIncoming, name), size, mtime, nil
}

// read returns a queued file's contents, provided it is still the file
// that was queued.
func (d *spoolDir) read(ref string) ([]byte, error) {
	path, size, mtime, err := d.parseRef(ref)
	if err != nil {
		return nil, err
	}
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("the spooled file is gone: %w", err)
	}
	if info.Size() != size || info.ModTime().UnixNano() != mtime {
		return nil, fmt.Errorf("the spooled file changed after it was queued")
	}
	if size > d.maxSize {
		return nil, fmt.Errorf("%w: %d bytes, over the %d-byte limit", errTooLarge, size, d.maxSize)
	}
	return os.ReadFile(path)
}

// settle moves a just-finished job's file aside (the worker calls it so
// that files do not wait for the next scan).
func (d *spoolDir) settle(ctx context.Context, j *store.Job) {
	d.settleJob(ctx, j)
}

// spoolError is the NAME.error.json written beside a failed file.
type spoolError struct {
	Job   string `json:"job_id,omitempty"`
	Code  string `json:"code"`
	Error string `json:"error"`
}

// settleJob moves a finished job's file to done/ or failed/ and marks the
// job settled.
func (d *spoolDir) settleJob(ctx context.Context, j *store.Job) {
	path, _, _, err := d.parseRef(j.Ref)
	if err != nil {
		d.log.Error("unreadable spool ref", "job_id", j.ID, "err", err)
		return
	}
	tenantID := filepath.Base(filepath.Dir(filepath.Dir(path)))
	name := filepath.Base(path)
	event, to, reason := "done", spoolDone, (*spoolError)(nil)
	if j.State == fullcallv1.JobState_JOB_STATE_FAILED {
		event, to, reason = "failed", spoolFailed, &spoolError{Job: j.ID, Code: j.ErrorCode, Error: j.Error}
	}
	if err := d.moveAside(tenantID, name, to, reason); err != nil {
		d.log.Warn("moving a spooled file aside failed; retried at the next scan", "file", name, "err", err)
		return
	}
	if err := d.store.Settle(ctx, j.ID); err != nil {
		d.log.Warn("settling a spooled job failed; retried at the next scan", "job_id", j.ID, "err", err)
		return
	}
	d.m.spoolFiles.Add(ctx, 1, metric.WithAttributes(eventAttr.String(event)))
}

// moveAside moves incoming/NAME (and its sidecar) to done/ or failed/,
// writing the reason first for failed files. A file already moved (by
// another instance) is not an error.
func (d *spoolDir) moveAside(tenantID, name, to string, reason *spoolError) error {
	in := filepath.Join(d.dir, tenantID, spoolIncoming, name)
	outDir := filepath.Join(d.dir, tenantID, to)
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	if _, err := os.Lstat(in); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	dest := filepath.Join(outDir, name)
	if _, err := os.Stat(dest); err == nil {
		// An earlier file of the same name: keep both.
		ext := filepath.Ext(name)
		dest = filepath.Join(outDir, fmt.Sprintf("%s.%s%s", strings.TrimSuffix(name, ext), time.Now().UTC().Format("20060102T150405.000000000"), ext))
	}
	if reason != nil {
		b, _ := json.MarshalIndent(reason, "", "  ")
		tmp := filepath.Join(outDir, "."+filepath.Base(dest)+".error.json.tmp")
		if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, dest+".error.json"); err != nil {
			return err
		}
	}
	base := strings.TrimSuffix(name, filepath.Ext(name))
	side := filepath.Join(d.dir, tenantID, spoolIncoming, base+".json")
	if _, err := os.Stat(side); err == nil {
		os.Rename(side, strings.TrimSuffix(dest, filepath.Ext(dest))+".json")
	}
	if err := os.Rename(in, dest); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
