package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestGroupCommitIsolatesFailures(t *testing.T) {
	// Many writers at once, some of them fenced: each fenced write undoes
	// only itself, every other write is committed.
	both(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		withClock(s, t0)
		const n = 60
		cps := make([]*Checkpoint, n)
		for i := range n {
			cps[i] = checkpoint("acme", fmt.Sprint("c", i), "me")
			if err := s.StartCall(ctx, cps[i]); err != nil {
				t.Fatal(err)
			}
			if i%3 == 0 {
				cps[i].Epoch = 99 // someone else's epoch: fenced
			}
		}
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cps[i].Seq = 7
				errs[i] = s.SaveCheckpoint(ctx, cps[i], []Segment{{First: 0, Data: []byte("pt")}}, nil)
			}()
		}
		wg.Wait()
		for i := range n {
			cp, err := s.ResumeCall(ctx, "acme", fmt.Sprint("c", i), "other", time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			segs, _ := s.Timeline(ctx, "acme", fmt.Sprint("c", i))
			fencedWant := i%3 == 0
			if fencedWant != errors.Is(errs[i], ErrFenced) || fencedWant != (cp.Seq == 0) || fencedWant != (len(segs) == 0) {
				t.Errorf("call %d: err %v, seq %d, %d segments; fenced should be %v", i, errs[i], cp.Seq, len(segs), fencedWant)
			}
		}
	})
}

func TestWritesAfterCloseFail(t *testing.T) {
	s, err := Open(context.Background(), "sqlite:"+t.TempDir()+"/x.db")
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := s.PutReport(context.Background(), report("acme", "c", "a", 0, 1, false)); err == nil {
		t.Error("a write after Close succeeded")
	}
}
