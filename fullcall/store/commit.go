package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"

	"github.com/calmline/calmline/lib/sqldb"
)

// Group commit. SQLite takes one writer at a time, and every transaction
// pays for its own commit (the WAL frames of every page it touched). When
// many calls checkpoint or hang up at once, one committer goroutine runs
// their transactions back to back inside a single SQLite transaction, each
// in its own savepoint, so that a writer's failure (a fenced checkpoint,
// say) undoes only its own work. Callers wait until the batch is committed:
// what they wrote is durable when they return, as before. The queue is
// bounded; a full queue makes writers wait (back-pressure, never a drop:
// these writes are what acknowledgements promise).
//
// PostgreSQL takes writers in parallel and does its own group commit, so
// there each transaction runs on its own.

// commitQueue bounds the writes waiting for the committer, and maxBatch
// the writes in one transaction.
const (
	commitQueue = 4096
	maxBatch    = 256
)

// The savepoint around each write of a batch (prepared once: sqldb.DB.Keep).
const (
	qSavepoint  = "SAVEPOINT w"
	qRollbackTo = "ROLLBACK TO w"
	qRelease    = "RELEASE w"
)

type writeOp struct {
	ctx  context.Context
	fn   func(tx *sql.Tx) error
	done chan error
}

type committer struct {
	db   *sqldb.DB
	ops  chan writeOp
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
	// mu makes close wait for writers in the middle of queuing, so that
	// nothing is queued after the committer stopped reading.
	mu     sync.RWMutex
	closed bool
}

func newCommitter(db *sqldb.DB) *committer {
	c := &committer{db: db, ops: make(chan writeOp, commitQueue), stop: make(chan struct{})}
	c.wg.Add(1)
	go c.run()
	return c
}

var errClosed = errors.New("store closed")

// do runs fn in the next batch and returns its outcome once the batch is
// committed.
func (c *committer) do(ctx context.Context, fn func(tx *sql.Tx) error) error {
	op := writeOp{ctx: ctx, fn: fn, done: make(chan error, 1)}
	c.mu.RLock()
	if c.closed {
		c.mu.RUnlock()
		return errClosed
	}
	select {
	case c.ops <- op:
	case <-ctx.Done():
		c.mu.RUnlock()
		return ctx.Err()
	}
	c.mu.RUnlock()
	// Once queued, the outcome is awaited whatever ctx does: the write
	// may be committed, and the caller must know.
	return <-op.done
}

func (c *committer) close() {
	c.once.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		close(c.stop)
		c.wg.Wait()
	})
}

func (c *committer) run() {
	defer c.wg.Done()
	batch := make([]writeOp, 0, maxBatch)
	for {
		batch = batch[:0]
		select {
		case op := <-c.ops:
			batch = append(batch, op)
		case <-c.stop:
			// Finish what was queued before the stop.
			for {
				select {
				case op := <-c.ops:
					c.commit([]writeOp{op})
				default:
					return
				}
			}
		}
	more:
		for len(batch) < maxBatch {
			select {
			case op := <-c.ops:
				batch = append(batch, op)
			default:
				break more
			}
		}
		c.commit(batch)
	}
}

// commit runs a batch in one transaction, each write in a savepoint.
func (c *committer) commit(batch []writeOp) {
	results := make([]error, len(batch))
	fail := func(err error) {
		for _, op := range batch {
			op.done <- err
		}
	}
	ctx := context.Background()
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		fail(err)
		return
	}
	for i, op := range batch {
		if err := op.ctx.Err(); err != nil {
			results[i] = err
			continue
		}
		if _, err := c.db.ExecIn(ctx, tx, qSavepoint); err != nil {
			tx.Rollback()
			fail(err)
			return
		}
		if err := op.fn(tx); err != nil {
			results[i] = err
			if _, rerr := c.db.ExecIn(ctx, tx, qRollbackTo); rerr != nil {
				tx.Rollback()
				fail(fmt.Errorf("%w (and undoing it: %v)", err, rerr))
				return
			}
		}
		if _, err := c.db.ExecIn(ctx, tx, qRelease); err != nil {
			tx.Rollback()
			fail(err)
			return
		}
	}
	if err := tx.Commit(); err != nil {
		fail(err)
		return
	}
	for i, op := range batch {
		op.done <- results[i]
	}
}
