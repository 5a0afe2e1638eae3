package sqldb

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
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
