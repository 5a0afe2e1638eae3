package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/calmline/calmline/escalation"
	escalationv1 "github.com/calmline/calmline/proto/calmline/escalation/v1"
)

func init() {
	commands["audit"] = command{
		summary: "verify the escalation audit trail (audit verify)",
		run:     audit,
	}
}

// anchors collects --anchor SEQ:HASH flags.
type anchors map[uint64]string

func (a anchors) String() string { return fmt.Sprint(map[uint64]string(a)) }

func (a anchors) Set(v string) error {
	seq, hash, ok := strings.Cut(v, ":")
	n, err := strconv.ParseUint(seq, 10, 64)
	if !ok || err != nil || len(hash) != 64 {
		return errors.New("want SEQ:HASH, the audit field of an event (a number and 64 hex digits)")
	}
	a[n] = strings.ToLower(hash)
	return nil
}

func audit(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "verify" {
		fmt.Fprintln(stderr, "usage: calmline audit verify [flags]   (calmline audit verify -h for the flags)")
		return 2
	}
	fs := flag.NewFlagSet("calmline audit verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, `usage: calmline audit verify [--data-dir DIR | --database DSN] [--tenant ID] [--anchor SEQ:HASH]...
       calmline audit verify --url http://HOST:PORT [--key-file FILE] [--anchor SEQ:HASH]...

Checks the escalation audit trail: every entry's hash, the chain of hashes,
the recorded head, and anchors (the "audit" field of events a receiver kept).
The first form reads the database (it can run beside the service); the second
fetches the tenant's trail over the REST API and checks it here, trusting
nothing the server computed. The key comes from --key-file or CALMLINE_API_KEY.
Exit status: 0 intact, 1 broken, 2 usage or access error.`)
		fs.PrintDefaults()
	}
	dataDir := fs.String("data-dir", "data", "data directory of the escalation service")
	database := fs.String("database", "", "escalation database: sqlite:PATH or postgres://... (default DATA-DIR/escalation.db)")
	tenantID := fs.String("tenant", "", "verify only this tenant's trail (default: every tenant in the database)")
	base := fs.String("url", "", "verify over the REST API of the escalation service at this URL instead of reading the database")
	keyFile := fs.String("key-file", "", "file holding the tenant's API key for --url (default: $CALMLINE_API_KEY)")
	timeout := fs.Duration("timeout", time.Minute, "give up after this long")
	as := anchors{}
	fs.Var(as, "anchor", "SEQ:HASH of an entry recorded outside (an event's audit field); repeatable")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var reps []escalation.AuditReport
	var err error
	if *base != "" {
		key := os.Getenv("CALMLINE_API_KEY")
		if *keyFile != "" {
			b, ferr := os.ReadFile(*keyFile)
			if ferr != nil {
				fmt.Fprintln(stderr, "calmline audit verify:", ferr)
				return 2
			}
			key = strings.TrimSpace(string(b))
		}
		if key == "" {
			fmt.Fprintln(stderr, "calmline audit verify: --url needs a key: --key-file or CALMLINE_API_KEY")
			return 2
		}
		var rep escalation.AuditReport
		rep, err = verifyOverAPI(ctx, *base, key, as)
		reps = []escalation.AuditReport{rep}
	} else {
		dsn := *database
		if dsn == "" {
			dsn = "sqlite:" + filepath.Join(*dataDir, "escalation.db")
		}
		reps, err = escalation.VerifyDatabase(ctx, dsn, *tenantID, as)
	}
	if err != nil {
		fmt.Fprintln(stderr, "calmline audit verify:", err)
		return 2
	}
	if len(reps) == 0 {
		fmt.Fprintln(stdout, "no audit trail in the database")
		return 0
	}
	status := 0
	for _, r := range reps {
		if r.OK() {
			fmt.Fprintf(stdout, "%s: ok, %d entries, head %d %s\n", r.TenantID, r.Entries, r.HeadSeq, r.HeadHash)
			continue
		}
		status = 1
		fmt.Fprintf(stdout, "%s: BROKEN, %d entries, head %d %s\n", r.TenantID, r.Entries, r.HeadSeq, r.HeadHash)
		for _, p := range r.Problems {
			fmt.Fprintf(stdout, "  entry %d: %s\n", p.Seq, p.Problem)
		}
	}
	return status
}

// verifyOverAPI fetches a tenant's trail page by page and checks it here.
// The head is taken from the first page: entries appended while paging
// are left for the next run.
func verifyOverAPI(ctx context.Context, base, key string, as anchors) (escalation.AuditReport, error) {
	var rep escalation.AuditReport
	u, err := url.Parse(strings.TrimRight(base, "/") + "/api/v1/audit")
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return rep, fmt.Errorf("--url %q: want http(s)://HOST:PORT", base)
	}
	v := escalation.NewChainVerifier()
	for seq, hash := range as {
		v.AddAnchor(seq, hash)
	}
	var after uint64
	first := true
	for first || after < rep.HeadSeq {
		q := url.Values{"after_seq": {strconv.FormatUint(after, 10)}, "page_size": {"1000"}}
		u.RawQuery = q.Encode()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return rep, err
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		resp.Body.Close()
		if err != nil {
			return rep, err
		}
		if resp.StatusCode != http.StatusOK {
			return rep, fmt.Errorf("GET %s: %s: %s", u.Path, resp.Status, strings.TrimSpace(string(body)))
		}
		var page escalationv1.ListAuditEntriesResponse
		if err := protojson.Unmarshal(body, &page); err != nil {
			return rep, fmt.Errorf("GET %s: %w", u.Path, err)
		}
		if first {
			rep.HeadSeq, rep.HeadHash, first = page.HeadSeq, page.HeadHash, false
		}
		if len(page.Entries) == 0 {
			break
		}
		for _, e := range page.Entries {
			if e.Seq > rep.HeadSeq {
				break
			}
			rep.TenantID = e.TenantId
			v.Add(escalation.AuditRecordFromProto(e))
			after = e.Seq
		}
	}
	rep.Problems = v.Finish(rep.HeadSeq, rep.HeadHash)
	rep.Entries = v.Count()
	if rep.TenantID == "" {
		rep.TenantID = "(empty trail)"
	}
	return rep, nil
}
