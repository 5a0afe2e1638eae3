// Package sqldb opens calmline's SQL databases and applies their versioned
// schema migrations. The embedded default is one SQLite file per service
// under the data directory, through a pure-Go driver (no cgo); the dialect
// abstraction lets the same queries run on PostgreSQL (through pgx) at
// scale. Package sqldbtest starts real databases of both kinds for tests.
package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	_ "modernc.org/sqlite"             // registers the "sqlite" driver
)

// Dialect names a SQL dialect.
type Dialect int

// The dialects calmline speaks.
const (
	SQLite Dialect = iota + 1
	Postgres
)

func (d Dialect) String() string {
	switch d {
	case SQLite:
		return "sqlite"
	case Postgres:
		return "postgres"
	}
	return "unknown"
}

// DB is a database handle that knows its dialect.
type DB struct {
	*sql.DB
	Dialect Dialect
	// kept holds the statements Keep prepared, by query; written only
	// by Keep, before the DB is shared.
	kept map[string]*sql.Stmt
}

// Keep prepares statements, written with ? placeholders, once, for ExecIn
// to run: SQLite otherwise parses and plans a statement's text on every
// Exec, which for writes repeated hundreds of times a second (live calls'
// checkpoints) costs as much as the write itself. Call it right after
// Open, before the DB is used: preparing takes a connection from the
// pool, which a writer holding one in a transaction must never wait for.
// On PostgreSQL it does nothing (pgx keeps its own statement cache).
func (db *DB) Keep(ctx context.Context, queries ...string) error {
	if db.Dialect != SQLite {
		return nil
	}
	if db.kept == nil {
		db.kept = make(map[string]*sql.Stmt, len(queries))
	}
	for _, q := range queries {
		st, err := db.PrepareContext(ctx, q)
		if err != nil {
			return fmt.Errorf("prepare %q: %w", q, err)
		}
		db.kept[q] = st
	}
	return nil
}

// ExecIn runs a statement written with ? placeholders in tx: one Keep
// prepared if it is one, prepared on tx's connection the first time
// there (database/sql keeps it per connection); otherwise as
// tx.ExecContext does.
func (db *DB) ExecIn(ctx context.Context, tx *sql.Tx, query string, args ...any) (sql.Result, error) {
	if st, ok := db.kept[query]; ok {
		return tx.StmtContext(ctx, st).ExecContext(ctx, args...)
	}
	return tx.ExecContext(ctx, db.Rebind(query), args...)
}

// Open opens the database a DSN names: "sqlite:PATH" (or a bare path ending
// in .db) for SQLite, "postgres://..." for PostgreSQL.
func Open(ctx context.Context, dsn string) (*DB, error) {
	switch {
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		return openPostgres(ctx, dsn)
	case strings.HasPrefix(dsn, "sqlite:"):
		return OpenSQLite(ctx, strings.TrimPrefix(dsn, "sqlite:"))
	case strings.HasSuffix(dsn, ".db"):
		return OpenSQLite(ctx, dsn)
	}
	return nil, fmt.Errorf("database %q: want sqlite:PATH or postgres://", redact(dsn))
}

// OpenSQLite opens (creating if needed) a SQLite file in WAL mode with a
// busy timeout, so that readers never block the single writer and writers
// wait for each other instead of failing.
func OpenSQLite(ctx context.Context, path string) (*DB, error) {
	if path == "" {
		return nil, errors.New("sqlite: empty path")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "busy_timeout(10000)", "foreign_keys(1)", "synchronous(NORMAL)", "temp_store(MEMORY)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("sqlite %s: %w", path, err)
	}
	// One writer at a time is SQLite's nature; a small pool serves readers.
	db.SetMaxOpenConns(4)
	db.SetConnMaxIdleTime(5 * time.Minute)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlite %s: %w", path, err)
	}
	return &DB{DB: db, Dialect: SQLite}, nil
}

// openPostgres opens a PostgreSQL database through pgx. The pool is sized
// for a service's concurrent writers (live calls' checkpoints, job workers)
// and readers; PostgreSQL, unlike SQLite, takes writes in parallel.
func openPostgres(ctx context.Context, dsn string) (*DB, error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres %s: %w", redact(dsn), err)
	}
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(16)
	db.SetConnMaxIdleTime(5 * time.Minute)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		// pgx errors can quote the DSN; say only where.
		return nil, fmt.Errorf("postgres %s: %w", redact(dsn), scrub(err, dsn))
	}
	return &DB{DB: db, Dialect: Postgres}, nil
}

// scrub removes a DSN's password from an error message.
func scrub(err error, dsn string) error {
	u, perr := url.Parse(dsn)
	if perr != nil || u.User == nil {
		return err
	}
	if pw, has := u.User.Password(); has && pw != "" && strings.Contains(err.Error(), pw) {
		return errors.New(strings.ReplaceAll(err.Error(), pw, "xxxxx"))
	}
	return err
}

// Rebind rewrites a query written with ? placeholders for the dialect.
func (db *DB) Rebind(query string) string {
	if db.Dialect != Postgres {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// redact hides a DSN's password.
func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		return dsn
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}
