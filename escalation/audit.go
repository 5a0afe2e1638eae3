package escalation

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/calmline/calmline/lib/sqldb"
	escalationv1 "github.com/calmline/calmline/proto/calmline/escalation/v1"
)

// auditEntry is an entry to append.
type auditEntry struct {
	TenantID     string
	Kind         string
	EscalationID string
	CallID       string
	// Actor is who acted; the service when empty.
	Actor  string
	Detail map[string]any
}

// auditRef points at an audit entry; events carry the ref of the entry
// that recorded them, so that receivers hold anchors of the chain.
type auditRef struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

// ServiceActor is the actor of entries the service writes by itself.
const ServiceActor = "calmline"

// audit appends an entry to the tenant's trail. The tenant's head row
// serialises appends (its update locks it until the transaction ends), so
// the chain has no forks even with several instances on PostgreSQL.
func (t *txn) audit(e auditEntry) (auditRef, error) {
	if e.Actor == "" {
		e.Actor = ServiceActor
	}
	detail := "{}"
	if len(e.Detail) > 0 {
		b, err := json.Marshal(e.Detail) // map keys come out sorted
		if err != nil {
			return auditRef{}, fmt.Errorf("audit detail: %w", err)
		}
		detail = string(b)
	}
	if _, err := t.exec(`INSERT INTO audit_heads (tenant_id, seq, hash) VALUES (?, 0, '') ON CONFLICT (tenant_id) DO NOTHING`, e.TenantID); err != nil {
		return auditRef{}, fmt.Errorf("audit head: %w", err)
	}
	var r AuditRecord
	if err := t.row(`UPDATE audit_heads SET seq = seq + 1 WHERE tenant_id = ? RETURNING seq, hash`, e.TenantID).Scan(&r.Seq, &r.PrevHash); err != nil {
		return auditRef{}, fmt.Errorf("audit head: %w", err)
	}
	r.TenantID, r.AtUnixMs, r.Kind, r.EscalationID, r.CallID, r.Actor, r.Detail = e.TenantID, t.nowMs(), e.Kind, e.EscalationID, e.CallID, e.Actor, detail
	r.Hash = EntryHash(r)
	if _, err := t.exec(`INSERT INTO audit_entries (tenant_id, seq, at, kind, escalation_id, call_id, actor, detail, prev_hash, hash)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, r.TenantID, r.Seq, r.AtUnixMs, r.Kind, r.EscalationID, r.CallID, r.Actor, r.Detail, r.PrevHash, r.Hash); err != nil {
		return auditRef{}, fmt.Errorf("audit entry: %w", err)
	}
	if _, err := t.exec(`UPDATE audit_heads SET hash = ? WHERE tenant_id = ?`, r.Hash, e.TenantID); err != nil {
		return auditRef{}, fmt.Errorf("audit head: %w", err)
	}
	return auditRef{Seq: r.Seq, Hash: r.Hash}, nil
}

// AuditRecord is an audit entry as it is hashed.
type AuditRecord struct {
	TenantID     string
	Seq          uint64
	AtUnixMs     int64
	Kind         string
	EscalationID string
	CallID       string
	Actor        string
	// Detail is a JSON object, hashed as stored.
	Detail   string
	PrevHash string
	Hash     string
}

// EntryHash returns an entry's hash: the hex SHA-256 of
//
//	prev_hash "\n" then, for each of tenant_id, seq, at (unix
//	milliseconds), kind, escalation_id, call_id, actor, detail:
//	its length in bytes, ":", the field, "\n"
//
// with seq and at in decimal and prev_hash empty for the first entry.
// Length prefixes make the form unambiguous whatever the fields hold, and
// easy to reproduce in any language.
func EntryHash(r AuditRecord) string {
	h := sha256.New()
	h.Write([]byte(r.PrevHash))
	h.Write([]byte{'\n'})
	for _, f := range []string{r.TenantID, strconv.FormatUint(r.Seq, 10), strconv.FormatInt(r.AtUnixMs, 10), r.Kind,
		r.EscalationID, r.CallID, r.Actor, r.Detail} {
		h.Write([]byte(strconv.Itoa(len(f))))
		h.Write([]byte{':'})
		h.Write([]byte(f))
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// AuditProblem is a place where a trail's chain is broken.
type AuditProblem struct {
	Seq     uint64
	Problem string
}

// ChainVerifier checks a trail entry by entry, in sequence order, without
// holding it in memory.
type ChainVerifier struct {
	prev     string
	next     uint64
	count    uint64
	anchors  map[uint64]string
	problems []AuditProblem
}

// AddAnchor makes the verification also check that the trail holds an
// entry with the given sequence number and hash, as an event receiver
// recorded it (events carry "audit": {"seq", "hash"}): a trail rewritten
// from before that entry fails even if its chain was made consistent
// again.
func (v *ChainVerifier) AddAnchor(seq uint64, hash string) {
	if v.anchors == nil {
		v.anchors = map[uint64]string{}
	}
	v.anchors[seq] = hash
}

// NewChainVerifier starts a verification from the first entry.
func NewChainVerifier() *ChainVerifier { return &ChainVerifier{next: 1} }

// Add checks the next entry.
func (v *ChainVerifier) Add(r AuditRecord) {
	v.count++
	switch {
	case r.Seq > v.next:
		v.report(v.next, fmt.Sprintf("entries %d to %d are missing: removed", v.next, r.Seq-1))
	case r.Seq < v.next:
		v.report(r.Seq, "out of order or listed twice")
	}
	if r.PrevHash != v.prev {
		v.report(r.Seq, "prev_hash is not the hash of the entry before: an earlier entry was edited or removed")
	}
	if EntryHash(r) != r.Hash {
		v.report(r.Seq, "hash does not match the entry's content: the entry was edited")
	}
	if want, ok := v.anchors[r.Seq]; ok {
		if want != r.Hash {
			v.report(r.Seq, "the entry's hash differs from the anchor recorded outside: the trail was rewritten")
		}
		delete(v.anchors, r.Seq)
	}
	v.prev, v.next = r.Hash, r.Seq+1
}

func (v *ChainVerifier) report(seq uint64, p string) {
	if len(v.problems) < 100 {
		v.problems = append(v.problems, AuditProblem{Seq: seq, Problem: p})
	}
}

// Finish checks that the chain ends at the recorded head and returns the
// problems found (none: the trail is intact).
func (v *ChainVerifier) Finish(headSeq uint64, headHash string) []AuditProblem {
	last := v.next - 1
	switch {
	case headSeq > last:
		v.report(last+1, fmt.Sprintf("the trail ends at %d but its head is %d: entries at the end were removed", last, headSeq))
	case headSeq < last:
		v.report(headSeq+1, fmt.Sprintf("the trail goes on to %d past its head %d: entries were added behind the service's back", last, headSeq))
	case headHash != v.prev:
		v.report(last, "the last entry's hash is not the head's: the entry or the head was edited")
	}
	for seq := range v.anchors {
		v.report(seq, "the anchored entry is not in the trail: it was removed")
	}
	return v.problems
}

// Count returns how many entries were checked.
func (v *ChainVerifier) Count() uint64 { return v.count }

// AuditRecordFromProto converts an entry from the API.
func AuditRecordFromProto(e *escalationv1.AuditEntry) AuditRecord {
	return AuditRecord{TenantID: e.TenantId, Seq: e.Seq, AtUnixMs: e.At.AsTime().UnixMilli(), Kind: e.Kind, EscalationID: e.EscalationId,
		CallID: e.CallId, Actor: e.Actor, Detail: e.Detail, PrevHash: e.PrevHash, Hash: e.Hash}
}

func (r AuditRecord) proto() *escalationv1.AuditEntry {
	return &escalationv1.AuditEntry{TenantId: r.TenantID, Seq: r.Seq, At: timestamppb.New(time.UnixMilli(r.AtUnixMs)), Kind: r.Kind,
		EscalationId: r.EscalationID, CallId: r.CallID, Actor: r.Actor, Detail: r.Detail, PrevHash: r.PrevHash, Hash: r.Hash}
}

const auditColumns = `tenant_id, seq, at, kind, escalation_id, call_id, actor, detail, prev_hash, hash`

func scanAudit(r scanner) (AuditRecord, error) {
	var a AuditRecord
	err := r.Scan(&a.TenantID, &a.Seq, &a.AtUnixMs, &a.Kind, &a.EscalationID, &a.CallID, &a.Actor, &a.Detail, &a.PrevHash, &a.Hash)
	return a, err
}

// auditHead returns a tenant's recorded head.
func auditHead(ctx context.Context, db *sqldb.DB, tenantID string) (uint64, string, error) {
	var seq uint64
	var hash string
	err := db.QueryRowContext(ctx, db.Rebind(`SELECT seq, hash FROM audit_heads WHERE tenant_id = ?`), tenantID).Scan(&seq, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, "", nil
	}
	return seq, hash, err
}

// listAudit returns entries after a sequence number, and the head.
func (s *store) listAudit(ctx context.Context, tenantID string, after uint64, size int) ([]*escalationv1.AuditEntry, uint64, string, error) {
	size = pageSize(size, 200, 1000)
	seq, hash, err := auditHead(ctx, s.db, tenantID)
	if err != nil {
		return nil, 0, "", fmt.Errorf("audit head: %w", err)
	}
	rows, err := s.db.QueryContext(ctx, s.db.Rebind(`SELECT `+auditColumns+` FROM audit_entries WHERE tenant_id = ? AND seq > ? ORDER BY seq LIMIT ?`),
		tenantID, after, size)
	if err != nil {
		return nil, 0, "", fmt.Errorf("list audit: %w", err)
	}
	defer rows.Close()
	var out []*escalationv1.AuditEntry
	for rows.Next() {
		r, err := scanAudit(rows)
		if err != nil {
			return nil, 0, "", fmt.Errorf("list audit: %w", err)
		}
		out = append(out, r.proto())
	}
	return out, seq, hash, rows.Err()
}

// AuditReport is the verification of one tenant's trail.
type AuditReport struct {
	TenantID string
	Entries  uint64
	HeadSeq  uint64
	HeadHash string
	Problems []AuditProblem
}

// OK reports whether the trail is intact.
func (r AuditReport) OK() bool { return len(r.Problems) == 0 }

// verifyTenant checks a tenant's whole trail in the database.
func verifyTenant(ctx context.Context, db *sqldb.DB, tenantID string, anchors map[uint64]string) (AuditReport, error) {
	rep := AuditReport{TenantID: tenantID}
	var err error
	if rep.HeadSeq, rep.HeadHash, err = auditHead(ctx, db, tenantID); err != nil {
		return rep, fmt.Errorf("audit head: %w", err)
	}
	rows, err := db.QueryContext(ctx, db.Rebind(`SELECT `+auditColumns+` FROM audit_entries WHERE tenant_id = ? ORDER BY seq`), tenantID)
	if err != nil {
		return rep, fmt.Errorf("read audit: %w", err)
	}
	defer rows.Close()
	v := NewChainVerifier()
	for seq, hash := range anchors {
		v.AddAnchor(seq, hash)
	}
	for rows.Next() {
		r, err := scanAudit(rows)
		if err != nil {
			return rep, fmt.Errorf("read audit: %w", err)
		}
		v.Add(r)
	}
	if err := rows.Err(); err != nil {
		return rep, err
	}
	rep.Problems = v.Finish(rep.HeadSeq, rep.HeadHash)
	rep.Entries = v.Count()
	return rep, nil
}

// VerifyDatabase verifies the audit trails in an escalation database (a
// DSN as the service takes it): one tenant's, or every tenant's when
// tenantID is empty. Anchors (sequence number → hash, as event receivers
// recorded them) need a tenant. It only reads; it can run beside the
// service.
func VerifyDatabase(ctx context.Context, dsn, tenantID string, anchors map[uint64]string) ([]AuditReport, error) {
	if len(anchors) > 0 && tenantID == "" {
		return nil, errors.New("anchors belong to one tenant's trail: name the tenant")
	}
	if path, ok := strings.CutPrefix(dsn, "sqlite:"); ok {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("escalation database: %w", err)
		}
	}
	db, err := sqldb.Open(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	var tenants []string
	if tenantID != "" {
		tenants = []string{tenantID}
	} else {
		// A tenant whose head row was deleted still shows by its entries.
		rows, err := db.QueryContext(ctx, `SELECT tenant_id FROM audit_heads UNION SELECT DISTINCT tenant_id FROM audit_entries`)
		if err != nil {
			return nil, fmt.Errorf("list audit trails: %w", err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, err
			}
			tenants = append(tenants, id)
		}
		rows.Close()
		sort.Strings(tenants)
	}
	var out []AuditReport
	for _, id := range tenants {
		rep, err := verifyTenant(ctx, db, id, anchors)
		if err != nil {
			return nil, fmt.Errorf("tenant %s: %w", id, err)
		}
		out = append(out, rep)
	}
	return out, nil
}
