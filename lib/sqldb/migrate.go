package sqldb

import (
	"context"
	"fmt"
	"time"
)

// Migration is one schema change. Versions start at 1 and increase by one;
// a migration, once released, is never edited — add the next one instead.
type Migration struct {
	Version int
	// SQL is run as is; write it in the common subset of SQLite and
	// PostgreSQL, or give Postgres its own text.
	SQL      string
	Postgres string
}

// Migrate applies the migrations of one component (a service's tables) that
// the database does not have yet, each in its own transaction, and records
// them in schema_migrations. Several components share one database.
func Migrate(ctx context.Context, db *DB, component string, ms []Migration) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		component TEXT NOT NULL,
		version INTEGER NOT NULL,
		applied_at TEXT NOT NULL,
		PRIMARY KEY (component, version))`); err != nil {
		return fmt.Errorf("migrate %s: %w", component, err)
	}
	var have int
	if err := db.QueryRowContext(ctx, db.Rebind(`SELECT COALESCE(MAX(version), 0) FROM schema_migrations WHERE component = ?`), component).Scan(&have); err != nil {
		return fmt.Errorf("migrate %s: %w", component, err)
	}
	for i, m := range ms {
		if m.Version != i+1 {
			return fmt.Errorf("migrate %s: migration #%d has version %d", component, i+1, m.Version)
		}
	}
	if have > len(ms) {
		return fmt.Errorf("migrate %s: the database is at version %d, newer than this binary's %d", component, have, len(ms))
	}
	for _, m := range ms[have:] {
		text := m.SQL
		if db.Dialect == Postgres && m.Postgres != "" {
			text = m.Postgres
		}
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("migrate %s to %d: %w", component, m.Version, err)
		}
		if _, err := tx.ExecContext(ctx, text); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate %s to %d: %w", component, m.Version, err)
		}
		if _, err := tx.ExecContext(ctx, db.Rebind(`INSERT INTO schema_migrations (component, version, applied_at) VALUES (?, ?, ?)`),
			component, m.Version, time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate %s to %d: %w", component, m.Version, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migrate %s to %d: %w", component, m.Version, err)
		}
	}
	return nil
}
