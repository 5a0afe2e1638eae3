package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/calmline/calmline/lib/sqldb"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// Job is a queued analysis of a recording: an upload (its audio in
// Payload) or a file a source found (read back by Ref).
type Job struct {
	ID       string
	TenantID string
	// Source names where the recording is ("upload", or a spool's name);
	// Ref identifies it there. (Source, Ref) is unique: finding the same
	// file twice queues it once.
	Source, Ref string
	State       fullcallv1.JobState
	Attempts    int
	// Recording describes the recording (ids, roles, labels); its audio
	// is in Payload for uploads.
	Recording *fullcallv1.Recording
	Payload   []byte
	// CallID is the call the report is stored under, once done.
	CallID string
	// ErrorCode and Error say why a job failed.
	ErrorCode, Error string
	CallbackURL      string
	Callback         CallbackState
	CallbackAttempts int
	CallbackError    string
	// Settled is set once the source has moved the recording aside.
	Settled              bool
	CreatedAt, UpdatedAt time.Time
	// TraceContext is the stored context of the span the job's work
	// continues (fullcall's tracing.go); opaque here.
	TraceContext string
	// token is the claim this value holds; completing the job is fenced
	// on it.
	token string
}

// CallbackState is where a job's callback is.
type CallbackState int

// Callback states.
const (
	CallbackNone CallbackState = iota
	CallbackPending
	CallbackDelivered
	CallbackFailed
)

// NewJobID returns a random job id.
func NewJobID() string { return "job_" + randomHex(12) }

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

const jobColumns = `id, tenant_id, source, ref, state, attempts, lease_token, request, payload, call_id, error_code, error, settled,
	callback_url, callback_state, callback_attempts, callback_error, created_at, updated_at, trace_context`

func scanJob(row interface{ Scan(...any) error }) (*Job, error) {
	j := &Job{Recording: &fullcallv1.Recording{}}
	var state, settled, cbState int
	var created, updated int64
	var req []byte
	if err := row.Scan(&j.ID, &j.TenantID, &j.Source, &j.Ref, &state, &j.Attempts, &j.token, &req, &j.Payload, &j.CallID,
		&j.ErrorCode, &j.Error, &settled, &j.CallbackURL, &cbState, &j.CallbackAttempts, &j.CallbackError, &created, &updated, &j.TraceContext); err != nil {
		return nil, err
	}
	if err := proto.Unmarshal(req, j.Recording); err != nil {
		return nil, fmt.Errorf("job %s: %w", j.ID, err)
	}
	j.State, j.Settled, j.Callback = fullcallv1.JobState(state), settled == 1, CallbackState(cbState)
	j.CreatedAt, j.UpdatedAt = time.UnixMilli(created), time.UnixMilli(updated)
	return j, nil
}

// EnqueueJob queues a job (ID, TenantID, Source, Ref, Recording, Payload,
// CallbackURL). The job's call id is its recording's, known from the start. It reports false, queuing nothing, when a job with the same
// source and ref exists.
func (s *Store) EnqueueJob(ctx context.Context, j *Job) (bool, error) {
	if j.ID == "" || j.TenantID == "" || j.Source == "" || j.Ref == "" {
		return false, errors.New("enqueue job: id, tenant, source and ref are required")
	}
	rec := proto.Clone(j.Recording).(*fullcallv1.Recording)
	rec.Wav = nil
	req, err := proto.Marshal(rec)
	if err != nil {
		return false, fmt.Errorf("enqueue job: %w", err)
	}
	now := s.Now().UnixMilli()
	res, err := s.exec(ctx, `
INSERT INTO jobs (id, tenant_id, source, ref, state, request, payload, call_id, callback_url, created_at, updated_at, trace_context)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (source, ref) DO NOTHING`,
		j.ID, j.TenantID, j.Source, j.Ref, int(fullcallv1.JobState_JOB_STATE_QUEUED), req, j.Payload, rec.CallId, j.CallbackURL, now, now, j.TraceContext)
	if err != nil {
		return false, fmt.Errorf("enqueue job: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("enqueue job: %w", err)
	}
	j.State, j.CallID, j.CreatedAt, j.UpdatedAt = fullcallv1.JobState_JOB_STATE_QUEUED, rec.CallId, time.UnixMilli(now), time.UnixMilli(now)
	return n == 1, nil
}

// ClaimJob takes the oldest job of the given sources that is queued, or
// running under a lease that expired (its worker died), for owner until
// now+lease; nil when there is none. A job whose lease expired after
// maxAttempts claims is failed instead ("gave_up"): a recording that kills
// its worker every time must not kill every worker in turn. On PostgreSQL
// concurrent claimers skip each other's rows (FOR UPDATE SKIP LOCKED), so
// workers on several machines share the queue.
func (s *Store) ClaimJob(ctx context.Context, sources []string, owner string, lease time.Duration, maxAttempts int) (*Job, error) {
	if len(sources) == 0 {
		return nil, nil
	}
	now := s.Now().UnixMilli()
	in := "?" + strings.Repeat(", ?", len(sources)-1)
	// Idle workers poll: look before taking the write lock.
	args := []any{int(fullcallv1.JobState_JOB_STATE_QUEUED), int(fullcallv1.JobState_JOB_STATE_RUNNING), now}
	for _, src := range sources {
		args = append(args, src)
	}
	var one int
	err := s.db.QueryRowContext(ctx, s.db.Rebind(`SELECT 1 FROM jobs WHERE (state = ? OR (state = ? AND lease_until < ?)) AND source IN (`+in+`) LIMIT 1`), args...).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("claim job: %w", err)
	}
	var job *Job
	err = s.tx(ctx, func(tx *sql.Tx) error {
		// Give up on jobs that used up their attempts.
		args := []any{int(fullcallv1.JobState_JOB_STATE_FAILED), "gave_up",
			fmt.Sprintf("the analysis stopped (its worker died or was stopped) %d times", maxAttempts), now,
			int(fullcallv1.JobState_JOB_STATE_RUNNING), now, maxAttempts}
		for _, src := range sources {
			args = append(args, src)
		}
		if _, err := tx.ExecContext(ctx, s.db.Rebind(`
UPDATE jobs SET state = ?, error_code = ?, error = ?, payload = NULL, updated_at = ?,
	callback_state = CASE WHEN callback_url <> '' THEN 1 ELSE 0 END, callback_next_at = 0
WHERE state = ? AND lease_until < ? AND attempts >= ? AND source IN (`+in+`)`), args...); err != nil {
			return fmt.Errorf("claim job: %w", err)
		}
		pick := `SELECT id FROM jobs WHERE (state = ? OR (state = ? AND lease_until < ?)) AND source IN (` + in + `) ORDER BY created_at LIMIT 1`
		if s.db.Dialect == sqldb.Postgres {
			pick += ` FOR UPDATE SKIP LOCKED`
		}
		args = []any{owner, randomHex(8), now + lease.Milliseconds(), int(fullcallv1.JobState_JOB_STATE_RUNNING), now,
			int(fullcallv1.JobState_JOB_STATE_QUEUED), int(fullcallv1.JobState_JOB_STATE_RUNNING), now}
		for _, src := range sources {
			args = append(args, src)
		}
		row := tx.QueryRowContext(ctx, s.db.Rebind(`
UPDATE jobs SET lease_owner = ?, lease_token = ?, lease_until = ?, state = ?, attempts = attempts + 1, updated_at = ?
WHERE id = (`+pick+`)
RETURNING `+jobColumns), args...)
		j, err := scanJob(row)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("claim job: %w", err)
		}
		job = j
		return nil
	})
	return job, err
}

// RenewJob extends the lease of a claimed job; ErrFenced when the claim
// was lost (the lease expired and another worker took the job).
func (s *Store) RenewJob(ctx context.Context, j *Job, lease time.Duration) error {
	now := s.Now()
	res, err := s.exec(ctx, `UPDATE jobs SET lease_until = ? WHERE id = ? AND lease_token = ? AND state = ?`,
		now.Add(lease).UnixMilli(), j.ID, j.token, int(fullcallv1.JobState_JOB_STATE_RUNNING))
	return fenced(res, err, "renew job "+j.ID)
}

func fenced(res sql.Result, err error, op string) error {
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if n == 0 {
		return fmt.Errorf("%s: %w", op, ErrFenced)
	}
	return nil
}

// CompleteJob stores a job's report (and its audio, when kept) and marks
// the job done, in one transaction fenced on the claim: a worker whose
// lease was taken over stores nothing (ErrFenced). The uploaded audio is
// dropped; a callback, if asked for, becomes due.
func (s *Store) CompleteJob(ctx context.Context, j *Job, r *fullcallv1.Report, audio []byte) error {
	now := s.Now().UnixMilli()
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.db.Rebind(`
UPDATE jobs SET state = ?, call_id = ?, payload = NULL, updated_at = ?, lease_until = 0,
	callback_state = CASE WHEN callback_url <> '' THEN 1 ELSE 0 END, callback_next_at = 0
WHERE id = ? AND lease_token = ? AND state = ?`),
			int(fullcallv1.JobState_JOB_STATE_DONE), r.CallId, now, j.ID, j.token, int(fullcallv1.JobState_JOB_STATE_RUNNING))
		if err := fenced(res, err, "complete job "+j.ID); err != nil {
			return err
		}
		if audio != nil {
			if err := s.replaceAudio(ctx, tx, r.TenantId, r.CallId, audio); err != nil {
				return err
			}
		}
		j.State, j.CallID = fullcallv1.JobState_JOB_STATE_DONE, r.CallId
		return s.putReport(ctx, tx, r, false)
	})
}

// ReleaseJob puts a claimed job back in the queue without counting the
// attempt (its worker is stopping, not dying).
func (s *Store) ReleaseJob(ctx context.Context, j *Job) error {
	res, err := s.exec(ctx, `
UPDATE jobs SET state = ?, lease_until = 0, lease_token = '', attempts = attempts - 1, updated_at = ?
WHERE id = ? AND lease_token = ? AND state = ?`,
		int(fullcallv1.JobState_JOB_STATE_QUEUED), s.Now().UnixMilli(), j.ID, j.token, int(fullcallv1.JobState_JOB_STATE_RUNNING))
	return fenced(res, err, "release job "+j.ID)
}

// FailJob marks a claimed job failed with a reason (fenced like
// CompleteJob).
func (s *Store) FailJob(ctx context.Context, j *Job, code, msg string) error {
	res, err := s.exec(ctx, `
UPDATE jobs SET state = ?, error_code = ?, error = ?, payload = NULL, updated_at = ?, lease_until = 0,
	callback_state = CASE WHEN callback_url <> '' THEN 1 ELSE 0 END, callback_next_at = 0
WHERE id = ? AND lease_token = ? AND state = ?`,
		int(fullcallv1.JobState_JOB_STATE_FAILED), code, msg, s.Now().UnixMilli(), j.ID, j.token, int(fullcallv1.JobState_JOB_STATE_RUNNING))
	if err := fenced(res, err, "fail job "+j.ID); err != nil {
		return err
	}
	j.State, j.ErrorCode, j.Error = fullcallv1.JobState_JOB_STATE_FAILED, code, msg
	return nil
}

// GetJob returns a tenant's job.
func (s *Store) GetJob(ctx context.Context, tenantID, id string) (*Job, error) {
	j, err := scanJob(s.db.QueryRowContext(ctx, s.db.Rebind(`SELECT `+jobColumns+` FROM jobs WHERE tenant_id = ? AND id = ?`), tenantID, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get job: %w", err)
	}
	return j, nil
}

// Unsettled returns the finished jobs of a source whose recordings the
// source has not moved aside yet, keyed by ref.
func (s *Store) Unsettled(ctx context.Context, source string) (map[string]*Job, error) {
	rows, err := s.db.QueryContext(ctx, s.db.Rebind(`SELECT `+jobColumns+` FROM jobs WHERE source = ? AND settled = 0`), source)
	if err != nil {
		return nil, fmt.Errorf("unsettled jobs: %w", err)
	}
	defer rows.Close()
	out := map[string]*Job{}
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, fmt.Errorf("unsettled jobs: %w", err)
		}
		out[j.Ref] = j
	}
	return out, rows.Err()
}

// Settle records that the source moved a finished job's recording aside.
func (s *Store) Settle(ctx context.Context, id string) error {
	_, err := s.exec(ctx, `UPDATE jobs SET settled = 1 WHERE id = ? AND state IN (?, ?)`, id,
		int(fullcallv1.JobState_JOB_STATE_DONE), int(fullcallv1.JobState_JOB_STATE_FAILED))
	if err != nil {
		return fmt.Errorf("settle job: %w", err)
	}
	return nil
}

// ClaimCallback takes a job whose callback is due, for lease; nil when none
// is. The claim counts as an attempt; if the deliverer dies the callback is
// due again when the lease ends.
func (s *Store) ClaimCallback(ctx context.Context, lease time.Duration) (*Job, error) {
	now := s.Now().UnixMilli()
	pick := `SELECT id FROM jobs WHERE callback_state = ? AND callback_next_at <= ? ORDER BY callback_next_at LIMIT 1`
	if s.db.Dialect == sqldb.Postgres {
		pick += ` FOR UPDATE SKIP LOCKED`
	}
	var one int
	err := s.db.QueryRowContext(ctx, s.db.Rebind(`SELECT 1 FROM jobs WHERE callback_state = ? AND callback_next_at <= ? LIMIT 1`), int(CallbackPending), now).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("claim callback: %w", err)
	}
	var job *Job
	err = s.tx(ctx, func(tx *sql.Tx) error {
		j, err := scanJob(tx.QueryRowContext(ctx, s.db.Rebind(`
UPDATE jobs SET callback_next_at = ?, callback_attempts = callback_attempts + 1
WHERE id = (`+pick+`)
RETURNING `+jobColumns), now+lease.Milliseconds(), int(CallbackPending), now))
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("claim callback: %w", err)
		}
		job = j
		return nil
	})
	return job, err
}

// CallbackResult records a delivery attempt: delivered, or due again at
// retryAt, or (zero retryAt) failed for good.
func (s *Store) CallbackResult(ctx context.Context, j *Job, delivered bool, retryAt time.Time, msg string) error {
	state, next := CallbackFailed, int64(0)
	switch {
	case delivered:
		state = CallbackDelivered
	case !retryAt.IsZero():
		state, next = CallbackPending, retryAt.UnixMilli()
	}
	_, err := s.exec(ctx, `UPDATE jobs SET callback_state = ?, callback_next_at = ?, callback_error = ? WHERE id = ? AND callback_state = ?`,
		int(state), next, msg, j.ID, int(CallbackPending))
	if err != nil {
		return fmt.Errorf("callback result: %w", err)
	}
	return nil
}

// JobProto renders a job for the API, with its report when done.
func JobProto(j *Job, r *fullcallv1.Report) *fullcallv1.Job {
	out := &fullcallv1.Job{
		Id:        j.ID,
		State:     j.State,
		CallId:    j.CallID,
		CreatedAt: timestamppb.New(j.CreatedAt),
		UpdatedAt: timestamppb.New(j.UpdatedAt),
		Error:     j.Error,
		ErrorCode: j.ErrorCode,
		Report:    r,
		Source:    j.Source,
		Callback:  fullcallv1.CallbackState(j.Callback),
	}
	if j.CallbackURL != "" && j.Callback == CallbackNone {
		out.Callback = fullcallv1.CallbackState_CALLBACK_STATE_PENDING
	}
	return out
}

// JobStats counts a source's jobs by state, and the claims they took in
// all (a job analysed once took one).
func (s *Store) JobStats(ctx context.Context, source string) (map[fullcallv1.JobState]int, int, error) {
	rows, err := s.db.QueryContext(ctx, s.db.Rebind(`SELECT state, COUNT(*), COALESCE(SUM(attempts), 0) FROM jobs WHERE source = ? GROUP BY state`), source)
	if err != nil {
		return nil, 0, fmt.Errorf("job stats: %w", err)
	}
	defer rows.Close()
	out := map[fullcallv1.JobState]int{}
	claims := 0
	for rows.Next() {
		var state, n, a int
		if err := rows.Scan(&state, &n, &a); err != nil {
			return nil, 0, fmt.Errorf("job stats: %w", err)
		}
		out[fullcallv1.JobState(state)] = n
		claims += a
	}
	return out, claims, rows.Err()
}

// JobByRef returns the job of a source's ref.
func (s *Store) JobByRef(ctx context.Context, source, ref string) (*Job, error) {
	j, err := scanJob(s.db.QueryRowContext(ctx, s.db.Rebind(`SELECT `+jobColumns+` FROM jobs WHERE source = ? AND ref = ?`), source, ref))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("job by ref: %w", err)
	}
	return j, nil
}

// PendingJobs counts a tenant's jobs that are queued or running.
func (s *Store) PendingJobs(ctx context.Context, tenantID string) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, s.db.Rebind(`SELECT COUNT(*) FROM jobs WHERE tenant_id = ? AND state IN (?, ?)`),
		tenantID, int(fullcallv1.JobState_JOB_STATE_QUEUED), int(fullcallv1.JobState_JOB_STATE_RUNNING)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("pending jobs: %w", err)
	}
	return n, nil
}
