package sqldb_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/calmline/calmline/lib/sqldb"
	"github.com/calmline/calmline/lib/sqldb/sqldbtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	sqldbtest.Stop()
	os.Exit(code)
}

func TestMigrateOnBothDialects(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		db, err := sqldb.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		ms := []sqldb.Migration{
			{Version: 1, SQL: `CREATE TABLE a (id BIGINT PRIMARY KEY, v TEXT NOT NULL); CREATE INDEX a_v ON a (v)`},
			{Version: 2, SQL: `ALTER TABLE a ADD COLUMN w BYTEA`},
		}
		if err := sqldb.Migrate(ctx, db, "test", ms); err != nil {
			t.Fatal(err)
		}
		if err := sqldb.Migrate(ctx, db, "test", ms); err != nil {
			t.Fatalf("second run: %v", err)
		}
		if _, err := db.ExecContext(ctx, db.Rebind(`INSERT INTO a (id, v, w) VALUES (?, ?, ?)`), 1, "x", []byte{0, 1, 2}); err != nil {
			t.Fatal(err)
		}
		var w []byte
		if err := db.QueryRowContext(ctx, db.Rebind(`SELECT w FROM a WHERE id = ?`), 1).Scan(&w); err != nil || len(w) != 3 || w[2] != 2 {
			t.Errorf("read back %v, %v", w, err)
		}
		if want := map[string]sqldb.Dialect{"sqlite": sqldb.SQLite, "postgres": sqldb.Postgres}[t.Name()[strings.LastIndex(t.Name(), "/")+1:]]; db.Dialect != want {
			t.Errorf("dialect %v; want %v", db.Dialect, want)
		}
	})
}

func TestPostgresErrorsHidePasswords(t *testing.T) {
	// Nothing listens on port 1: the connection fails, and the error must
	// not carry the password.
	_, err := sqldb.Open(context.Background(), "postgres://calm:s3cret-pw@127.0.0.1:1/x?sslmode=disable&connect_timeout=2")
	if err == nil || strings.Contains(err.Error(), "s3cret-pw") {
		t.Errorf("Open = %v; want an error without the password", err)
	}
}
