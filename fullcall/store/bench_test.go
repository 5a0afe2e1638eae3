package store

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
)

// BenchmarkSaveCheckpoint writes live calls' checkpoints into a SQLite
// file the way fullcall does at load: 64 calls checkpointing at once,
// their writes group-committed, each with a 4.6 kB analyser state and a
// segment of timeline. One op is one checkpoint.
func BenchmarkSaveCheckpoint(b *testing.B) {
	ctx := context.Background()
	s, err := Open(ctx, "sqlite:"+filepath.Join(b.TempDir(), "fc.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const calls = 64
	cps := make([]*Checkpoint, calls)
	for i := range cps {
		cps[i] = checkpoint("acme", fmt.Sprintf("c%d", i), "inst-a")
		cps[i].Analyzer = make([]byte, 4600)
		if err := s.StartCall(ctx, cps[i]); err != nil {
			b.Fatal(err)
		}
	}
	points := make([]byte, 2*40)
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for i, cp := range cps {
		n := b.N / calls
		if i < b.N%calls {
			n++
		}
		wg.Go(func() {
			for j := range n {
				cp.Seq++
				cp.TimelineLen = uint64(j+1) * 2
				if err := s.SaveCheckpoint(ctx, cp, []Segment{{First: uint64(j) * 2, Data: points}}, nil); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}
