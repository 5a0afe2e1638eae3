package sqldb

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMigrateAppliesOnceAndInOrder(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sub", "x.db")
	db, err := Open(ctx, "sqlite:"+path)
	if err != nil {
		t.Fatal(err)
	}
	ms := []Migration{
		{Version: 1, SQL: `CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT)`},
		{Version: 2, SQL: `ALTER TABLE a ADD COLUMN w TEXT`},
	}
	if err := Migrate(ctx, db, "test", ms[:1]); err != nil {
		t.Fatal(err)
	}
	if err := Migrate(ctx, db, "test", ms); err != nil {
		t.Fatal(err)
	}
	// Re-running is a no-op; another component has its own versions.
	if err := Migrate(ctx, db, "test", ms); err != nil {
		t.Fatal(err)
	}
	if err := Migrate(ctx, db, "other", []Migration{{Version: 1, SQL: `CREATE TABLE b (id INTEGER)`}}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO a (v, w) VALUES ('x', 'y')`); err != nil {
		t.Fatalf("schema not at version 2: %v", err)
	}
	db.Close()

	// A binary older than the database refuses to run rather than corrupt it.
	db, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := Migrate(ctx, db, "test", ms[:1]); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Errorf("migrating down = %v; want an error", err)
	}
	if err := Migrate(ctx, db, "bad", []Migration{{Version: 2, SQL: "SELECT 1"}}); err == nil {
		t.Error("a gap in versions was accepted")
	}
}

func TestOpenRejectsUnknownDSNAndHidesPasswords(t *testing.T) {
	_, err := Open(context.Background(), "mysql://u:hunter2@h/db")
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("Open(mysql) = %v; want an error without the password", err)
	}
	db := &DB{Dialect: Postgres}
	if got := db.Rebind("a = ? AND b = ?"); got != "a = $1 AND b = $2" {
		t.Errorf("Rebind = %q", got)
	}
}

// TestKeptStatementsRunInATransactionWithoutAnotherConnection keeps an
// INSERT and runs it, and one not kept, inside transactions while the
// pool's only connection is theirs: a statement prepared on first use
// would wait for a connection that never comes free; a kept one is
// prepared on the transaction's own. Both writes are there, and a
// rolled-back one is not.
func TestKeptStatementsRunInATransactionWithoutAnotherConnection(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	db, err := Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "k.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT)`); err != nil {
		t.Fatal(err)
	}
	const insert = `INSERT INTO a (id, v) VALUES (?, ?)`
	if err := db.Keep(ctx, insert); err != nil {
		t.Fatal(err)
	}
	if err := db.Keep(ctx, `INSERT INTO nowhere VALUES (?)`); err == nil {
		t.Error("Keep accepted a statement on a table that does not exist")
	}
	db.SetMaxOpenConns(1)
	for i, commit := range []bool{true, false, true} {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecIn(ctx, tx, insert, i, "kept"); err != nil {
			t.Fatalf("kept statement in a transaction: %v", err)
		}
		if _, err := db.ExecIn(ctx, tx, `UPDATE a SET v = ? WHERE id = ?`, "updated", i); err != nil {
			t.Fatalf("statement not kept: %v", err)
		}
		if commit {
			err = tx.Commit()
		} else {
			err = tx.Rollback()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	var n int
	var vs string
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*), group_concat(id || v, ',') FROM a`).Scan(&n, &vs); err != nil {
		t.Fatal(err)
	}
	if n != 2 || vs != "0updated,2updated" {
		t.Errorf("rows %d %q; want the two committed writes", n, vs)
	}
}
