package fullcall

import (
	"context"

	"github.com/calmline/calmline/fullcall/store"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// A source is where the batch path finds recordings besides uploads: a
// spool directory (spoolDir) today, object storage later. A source queues
// what it finds as jobs in the store under its name, each with a reference
// only the source understands; any worker of an instance that has the
// source (the same name) may analyse the job, reading the recording back
// by its reference; once the job's outcome is stored, the source moves the
// recording aside. Each step must be idempotent: the job's state in the
// store is the truth, and the source reconciles with it after a crash.
type source interface {
	// name is the source's name in the job queue.
	name() string
	// run finds recordings and queues them, and reconciles recordings of
	// finished jobs, until ctx ends; wake tells the workers a job was
	// queued.
	run(ctx context.Context, wake func())
	// read returns a queued recording and what the source knows of it.
	read(ref string) ([]byte, error)
	// settle moves a finished job's recording aside.
	settle(ctx context.Context, j *store.Job)
	// kind is the report source of its recordings.
	kind() fullcallv1.Source
}
