package escalation

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/calmline/calmline/lib/sqldb"
	escalationv1 "github.com/calmline/calmline/proto/calmline/escalation/v1"
)

func TestEntryHashIsTheDocumentedForm(t *testing.T) {
	// docs/escalation.md gives this example; keep them in step.
	r := AuditRecord{TenantID: "acme", Seq: 1, AtUnixMs: 1795953600000, Kind: "escalation.opened", EscalationID: "esc_1",
		CallID: "c1", Actor: "calmline", Detail: `{"alert_id":"acme/c1/cp/1"}`}
	const canonical = "\n4:acme\n1:1\n13:1795953600000\n17:escalation.opened\n5:esc_1\n2:c1\n8:calmline\n27:{\"alert_id\":\"acme/c1/cp/1\"}\n"
	sum := sha256Hex(canonical)
	if got := EntryHash(r); got != sum {
		t.Errorf("EntryHash = %s; want sha256 of the documented form %s", got, sum)
	}
	// Fields cannot run into each other.
	r2 := r
	r2.CallID, r2.Actor = "c1\n8:calmline", ""
	if EntryHash(r2) == EntryHash(r) {
		t.Error("moving bytes between fields keeps the hash")
	}
}

// TestAuditDetectsEditsAndRemovals builds a trail through the API, checks
// that it verifies, then tampers with copies of the database file as
// someone with access to it would, and checks that each change is found at
// the right entry, by the API, by VerifyDatabase (the command) and against
// an anchor an event receiver kept.
func TestAuditDetectsEditsAndRemovals(t *testing.T) {
	rcv := newReceiver(t, nil)
	st := startStack(t, `    escalation:
      endpoints: [{name: on-call, url: '`+rcv.srv.URL+`', events: ["*"]}]
      ladder: [{name: notify, action: notify, endpoint: on-call}]
`, nil)
	ec := escalationv1.NewEscalationServiceClient(st.cc)
	for _, c := range []string{"c1", "c2", "c3"} {
		id := st.post(t, firing(c, 1))[0]
		ec.AcknowledgeEscalation(st.ctx(), &escalationv1.AcknowledgeEscalationRequest{Id: id, By: "sup-ana"})
		ec.ResolveEscalation(st.ctx(), &escalationv1.ResolveEscalationRequest{Id: id, By: "sup-ana", Resolution: "ok"})
	}
	msgs := rcv.collect(t, 9, 5*time.Second)
	anchor := msgs[4].Data["audit"].(map[string]any)
	anchorSeq, anchorHash := uint64(anchor["seq"].(float64)), anchor["hash"].(string)

	ac := escalationv1.NewAuditServiceClient(st.cc)
	v, err := ac.VerifyAudit(st.ctx(), &escalationv1.VerifyAuditRequest{})
	if err != nil || !v.Ok || v.Entries != v.HeadSeq || v.Entries < 15 {
		t.Fatalf("VerifyAudit on an untouched trail = %v, %v", v, err)
	}
	var rest struct {
		OK       bool   `json:"ok"`
		Entries  string `json:"entries"`
		Problems []struct {
			Seq     string `json:"seq"`
			Problem string `json:"problem"`
		} `json:"problems"`
	}
	if code := st.rest(t, "GET", "/api/v1/audit/verify", "", &rest); code != 200 || !rest.OK {
		t.Fatalf("REST verify: %d %+v", code, rest)
	}
	// The entries as listed verify on the client's side too.
	list, err := ac.ListAuditEntries(st.ctx(), &escalationv1.ListAuditEntriesRequest{PageSize: 5})
	if err != nil || len(list.Entries) != 5 || list.HeadSeq != v.HeadSeq {
		t.Fatalf("ListAuditEntries = %v, %v", list, err)
	}
	cv := NewChainVerifier()
	for after := uint64(0); ; {
		page, err := ac.ListAuditEntries(st.ctx(), &escalationv1.ListAuditEntriesRequest{AfterSeq: after, PageSize: 4})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Entries) == 0 {
			break
		}
		for _, e := range page.Entries {
			cv.Add(AuditRecordFromProto(e))
			after = e.Seq
		}
	}
	if p := cv.Finish(v.HeadSeq, v.HeadHash); len(p) != 0 {
		t.Fatalf("client-side verification of the listed entries: %v", p)
	}
	n := v.HeadSeq
	st.stop()

	// The database refuses edits of the trail outright ...
	db := openCopy(t, st.dbPath)
	if _, err := db.Exec(`UPDATE audit_entries SET actor = 'x' WHERE seq = 1`); err == nil || !strings.Contains(err.Error(), "append-only") {
		t.Errorf("editing an entry: %v; want the append-only trigger to refuse", err)
	}
	if _, err := db.Exec(`DELETE FROM audit_entries WHERE seq = 1`); err == nil {
		t.Error("deleting an entry succeeded despite the trigger")
	}
	db.Close()

	// ... so a tamperer drops the triggers first; the chain still tells.
	for _, c := range []struct {
		name    string
		sql     []string
		wantSeq uint64
		want    string
	}{
		{"edited detail", []string{`UPDATE audit_entries SET detail = '{"resolution":"nothing happened"}' WHERE seq = 6`}, 6, "the entry was edited"},
		{"edited actor, hash recomputed", []string{`UPDATE audit_entries SET actor = 'someone-else', hash = '` + rehash(t, st.dbPath, 7, "someone-else") + `' WHERE seq = 7`}, 8, "an earlier entry was edited or removed"},
		{"removed in the middle", []string{`DELETE FROM audit_entries WHERE seq = 9`}, 9, "missing"},
		{"removed at the end", []string{`DELETE FROM audit_entries WHERE seq = ` + itoa(n)}, n, "entries at the end were removed"},
		{"head removed with the last entry", []string{`DELETE FROM audit_entries WHERE seq = ` + itoa(n), `UPDATE audit_heads SET seq = seq - 1`}, n - 1, "the last entry's hash is not the head's"},
	} {
		path := copyDB(t, st.dbPath)
		db := openCopy(t, path)
		for _, q := range append([]string{`DROP TRIGGER audit_entries_append_only_update`, `DROP TRIGGER audit_entries_append_only_delete`}, c.sql...) {
			if _, err := db.Exec(q); err != nil {
				t.Fatalf("%s: %s: %v", c.name, q, err)
			}
		}
		db.Close()
		reps, err := VerifyDatabase(context.Background(), "sqlite:"+path, "", nil)
		if err != nil || len(reps) != 1 {
			t.Fatalf("%s: VerifyDatabase = %v, %v", c.name, reps, err)
		}
		found := false
		for _, p := range reps[0].Problems {
			if p.Seq == c.wantSeq && strings.Contains(p.Problem, c.want) {
				found = true
			}
		}
		if reps[0].OK() || !found {
			t.Errorf("%s: problems %v; want %q at entry %d", c.name, reps[0].Problems, c.want, c.wantSeq)
		}
	}

	// A rewrite that recomputes every hash after the edited entry (and the
	// head) is consistent again; only an anchor kept outside shows it.
	path := copyDB(t, st.dbPath)
	rewriteFrom(t, path, anchorSeq-1)
	if reps, _ := VerifyDatabase(context.Background(), "sqlite:"+path, "acme", nil); !reps[0].OK() {
		t.Fatalf("a consistent rewrite: %v", reps[0].Problems)
	}
	reps, err := VerifyDatabase(context.Background(), "sqlite:"+path, "acme", map[uint64]string{anchorSeq: anchorHash})
	if err != nil || reps[0].OK() || reps[0].Problems[0].Seq != anchorSeq {
		t.Errorf("rewrite against the anchor %d: %v, %v", anchorSeq, reps, err)
	}
	// The service reports a tampered trail over its API as well.
	path = copyDB(t, st.dbPath)
	db = openCopy(t, path)
	db.Exec(`DROP TRIGGER audit_entries_append_only_update`)
	db.Exec(`UPDATE audit_entries SET kind = 'nothing' WHERE seq = 2`)
	db.Close()
	o := st.s.o
	o.Database = "sqlite:" + path
	again := serveOptions(t, o)
	again.key = st.key
	v, err = escalationv1.NewAuditServiceClient(again.cc).VerifyAudit(again.ctx(), &escalationv1.VerifyAuditRequest{})
	if err != nil || v.Ok || len(v.Problems) == 0 || v.Problems[0].Seq != 2 {
		t.Errorf("VerifyAudit on a tampered trail = %v, %v", v, err)
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func copyDB(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy.db")
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	return dst
}

func openCopy(t *testing.T, path string) *sqldb.DB {
	t.Helper()
	db, err := sqldb.OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// rehash returns the hash entry seq would have with another actor.
func rehash(t *testing.T, path string, seq uint64, actor string) string {
	t.Helper()
	db := openCopy(t, path)
	defer db.Close()
	r, err := scanAudit(db.QueryRow(`SELECT `+auditColumns+` FROM audit_entries WHERE seq = ?`, seq))
	if err != nil {
		t.Fatal(err)
	}
	r.Actor = actor
	return EntryHash(r)
}

// rewriteFrom edits entry seq and recomputes the chain and the head after
// it, as a tamperer who knows the scheme would.
func rewriteFrom(t *testing.T, path string, seq uint64) {
	t.Helper()
	db := openCopy(t, path)
	defer db.Close()
	db.Exec(`DROP TRIGGER audit_entries_append_only_update`)
	rows, err := db.Query(`SELECT ` + auditColumns + ` FROM audit_entries ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	var all []AuditRecord
	for rows.Next() {
		r, err := scanAudit(rows)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, r)
	}
	rows.Close()
	prev := ""
	for _, r := range all {
		if r.Seq == seq {
			r.Detail = `{"rewritten":true}`
		}
		r.PrevHash = prev
		if r.Seq >= seq {
			r.Hash = EntryHash(r)
			if _, err := db.Exec(`UPDATE audit_entries SET detail = ?, prev_hash = ?, hash = ? WHERE seq = ?`, r.Detail, r.PrevHash, r.Hash, r.Seq); err != nil {
				t.Fatal(err)
			}
		}
		prev = r.Hash
	}
	if _, err := db.Exec(`UPDATE audit_heads SET hash = ?`, prev); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkEntryHash(b *testing.B) {
	r := AuditRecord{TenantID: "acme", Seq: 123456, AtUnixMs: 1795953600000, Kind: "step.started", EscalationID: "esc_0123456789abcdef0123",
		CallID: "call-0001", Actor: "calmline", Detail: `{"action":"transfer","delivery_id":"dlv_0123456789abcdef01234567","endpoint":"intervention","step":"transfer"}`,
		PrevHash: strings.Repeat("ab", 32)}
	b.ReportAllocs()
	for b.Loop() {
		EntryHash(r)
	}
}
