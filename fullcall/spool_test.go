package fullcall

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/calmline/calmline/fullcall/store"
	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/sqldb/sqldbtest"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

func spoolOpts(dir string) func(*Options) {
	return func(o *Options) {
		o.SpoolDir = dir
		o.SpoolSettle = 0
		o.SpoolScanEvery = 50 * time.Millisecond
		o.JobLease = time.Second
	}
}

// drop writes a file into a tenant's incoming directory the way a writer
// should: under a hidden name, then renamed into place.
func drop(t *testing.T, spool, tenantID, name string, data []byte) {
	t.Helper()
	in := filepath.Join(spool, tenantID, "incoming")
	if err := os.MkdirAll(in, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(in, "."+name+".part")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(in, name)); err != nil {
		t.Fatal(err)
	}
}

func ls(t *testing.T, dir string) []string {
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

// waitFiles waits until a directory holds exactly want (sorted).
func waitFiles(t *testing.T, dir string, want ...string) {
	t.Helper()
	sort.Strings(want)
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		got := ls(t, dir)
		if strings.Join(got, "\n") == strings.Join(want, "\n") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %q; want %q", dir, got, want)
		}
		<-tick.C
	}
}

func stereoWAV(seconds float64) []byte {
	return audio.EncodeWAV(audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 2}, turns(seconds))
}

func TestSpoolAnalysesEachFileOnce(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, dsn string) {
		spool := t.TempDir()
		tt := newTenants(t, nil)
		// Two instances share the store and the directory, two workers each.
		a := startWith(t, tt, dsn, spoolOpts(spool))
		startWith(t, tt, dsn, spoolOpts(spool))

		silent := audio.EncodeWAV(audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 1}, bytes.Repeat([]byte{0xff}, 16000))
		drop(t, spool, "acme", "c2.json", []byte(`{"call_id": "crm-42", "agent_id": "ana", "roles": ["agent", "caller"], "labels": {"queue": "billing"}}`))
		for i, name := range []string{"c1.wav", "c2.wav", "c3.WAV", "c4.wav"} {
			drop(t, spool, "acme", name, stereoWAV(float64(2+i)))
		}
		drop(t, spool, "acme", "silent.wav", silent)
		drop(t, spool, "acme", "notes.wav", []byte("these are not audio"))
		drop(t, spool, "acme", "readme.txt", []byte("ignored: not a .wav"))
		drop(t, spool, "globex", "g1.wav", stereoWAV(2))

		base := filepath.Join(spool, "acme")
		waitFiles(t, filepath.Join(base, "done"), "c1.wav", "c2.wav", "c2.json", "c3.WAV", "c4.wav")
		waitFiles(t, filepath.Join(base, "failed"), "notes.wav", "notes.wav.error.json", "silent.wav", "silent.wav.error.json")
		waitFiles(t, filepath.Join(base, "incoming"), "readme.txt")
		waitFiles(t, filepath.Join(spool, "globex", "done"), "g1.wav")

		for file, code := range map[string]string{"notes.wav": "unsupported_format", "silent.wav": "no_speech"} {
			b, err := os.ReadFile(filepath.Join(base, "failed", file+".error.json"))
			var e struct{ Code, Error string }
			if err != nil || json.Unmarshal(b, &e) != nil || e.Code != code || e.Error == "" {
				t.Errorf("%s: reason %s (%v); want code %s", file, b, err, code)
			}
		}
		ctx := context.Background()
		for _, c := range []struct {
			call, agent string
			dur         float64
		}{{"c1", "", 2}, {"crm-42", "ana", 3}, {"c3", "", 4}, {"c4", "", 5}} {
			r, err := a.s.store.GetReport(ctx, "acme", c.call)
			if err != nil {
				t.Errorf("report of %s: %v", c.call, err)
				continue
			}
			if r.Source != fullcallv1.Source_SOURCE_SPOOL || r.DurationS != c.dur || r.AgentId != c.agent {
				t.Errorf("report of %s: source %v, %.1f s, agent %q", c.call, r.Source, r.DurationS, r.AgentId)
			}
		}
		r, _ := a.s.store.GetReport(ctx, "acme", "crm-42")
		if r.GetLabels()["queue"] != "billing" || r.GetChannels()[0].GetRole().String() != "CHANNEL_ROLE_AGENT" {
			t.Errorf("the sidecar was not applied: labels %v, channels %v", r.GetLabels(), r.GetChannels())
		}
		// Seven files, seven jobs, each claimed once.
		states, claims, err := a.s.store.JobStats(ctx, "spool")
		if err != nil || states[fullcallv1.JobState_JOB_STATE_DONE] != 5 || states[fullcallv1.JobState_JOB_STATE_FAILED] != 2 || claims != 7 {
			t.Errorf("jobs by state %v, %d claims, %v; want 5 done, 2 failed, 7 claims", states, claims, err)
		}

		// The same file put back (same name, size and time) is not analysed
		// again: it goes to failed/ as a duplicate.
		done := filepath.Join(base, "done", "c1.wav")
		info, _ := os.Stat(done)
		back := filepath.Join(base, "incoming", "c1.wav")
		if err := os.Rename(done, back); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(back, info.ModTime(), info.ModTime())
		waitFiles(t, filepath.Join(base, "failed"), "c1.wav", "c1.wav.error.json", "notes.wav", "notes.wav.error.json", "silent.wav", "silent.wav.error.json")
		if _, claims, _ := a.s.store.JobStats(ctx, "spool"); claims != 7 {
			t.Errorf("%d claims after a duplicate; want still 7", claims)
		}
	})
}

// TestSpoolCrashHelper is not a test: it is the process the crash tests
// start and kill. It runs a fullcall instance on the store and spool named
// in its environment and blocks forever at a point of a job's life.
func TestSpoolCrashHelper(t *testing.T) {
	at := os.Getenv("FULLCALL_CRASH_AT")
	if at == "" {
		t.Skip("helper process for the spool crash tests")
	}
	o := DefaultOptions()
	o.Tenants = newTenants(t, nil).reg
	o.Database = os.Getenv("FULLCALL_CRASH_DB")
	o.SpoolDir = os.Getenv("FULLCALL_CRASH_SPOOL")
	o.SpoolSettle, o.SpoolScanEvery, o.JobLease = 0, 50*time.Millisecond, time.Second
	s, err := New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	s.jobHook = func(point string, j *store.Job) {
		if point == at {
			fmt.Printf("AT %s %s\n", point, j.ID)
			select {} // until killed
		}
	}
	lis, err := netListen()
	if err != nil {
		t.Fatal(err)
	}
	s.Serve(context.Background(), lis)
}

func TestSpoolExactlyOnceAcrossACrash(t *testing.T) {
	for _, c := range []struct {
		at     string // where the first instance is killed
		claims int    // claims of the job in all
	}{
		// Mid-analysis: the job's lease runs out and another instance
		// analyses it; the report is stored once.
		{"claimed", 2},
		// After the report was stored, before the file was moved: the next
		// instance only moves the file; nothing is analysed twice.
		{"committed", 1},
	} {
		t.Run(c.at, func(t *testing.T) {
			dir := t.TempDir()
			spool := filepath.Join(dir, "spool")
			dsn := "sqlite:" + filepath.Join(dir, "fullcall.db")
			drop(t, spool, "acme", "call.wav", stereoWAV(3))

			cmd := exec.Command(os.Args[0], "-test.run=^TestSpoolCrashHelper$", "-test.v")
			cmd.Env = append(os.Environ(), "FULLCALL_CRASH_AT="+c.at, "FULLCALL_CRASH_DB="+dsn, "FULLCALL_CRASH_SPOOL="+spool)
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			reached := make(chan string, 1)
			go func() {
				sc := bufio.NewScanner(out)
				for sc.Scan() {
					if rest, ok := strings.CutPrefix(sc.Text(), "AT "); ok {
						reached <- rest
					}
				}
				close(reached)
			}()
			select {
			case r, ok := <-reached:
				if !ok {
					t.Fatal("the helper exited before reaching the crash point")
				}
				t.Logf("helper at %s; killing it", r)
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				t.Fatal("the helper did not reach the crash point")
			}
			cmd.Process.Kill() // SIGKILL: no cleanup of any kind
			cmd.Wait()

			f := startWith(t, newTenants(t, nil), dsn, spoolOpts(spool))
			waitFiles(t, filepath.Join(spool, "acme", "done"), "call.wav")
			waitFiles(t, filepath.Join(spool, "acme", "incoming"))
			if got := ls(t, filepath.Join(spool, "acme", "failed")); len(got) != 0 {
				t.Errorf("failed/ holds %v", got)
			}
			ctx := context.Background()
			r, err := f.s.store.GetReport(ctx, "acme", "call")
			if err != nil || r.DurationS != 3 {
				t.Fatalf("report after the crash: %v, %v", r, err)
			}
			states, claims, err := f.s.store.JobStats(ctx, "spool")
			if err != nil || len(states) != 1 || states[fullcallv1.JobState_JOB_STATE_DONE] != 1 || claims != c.claims {
				t.Errorf("jobs %v, %d claims, %v; want one job, done, %d claims", states, claims, err, c.claims)
			}
		})
	}
}

func netListen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

// TestSpoolMovesNonRegularFilesAside: a symlink (to a real WAV outside the
// spool), a directory and a FIFO in incoming/ are moved to failed/ with an
// error record saying what they are; nothing is analysed from them.
func TestSpoolMovesNonRegularFilesAside(t *testing.T) {
	spool := t.TempDir()
	in := filepath.Join(spool, "acme", "incoming")
	if err := os.MkdirAll(filepath.Join(in, "dir.wav"), 0o755); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(t.TempDir(), "secret.wav")
	if err := os.WriteFile(outside, stereoWAV(2), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(in, "link.wav")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(in, "fifo.wav"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := start(t, spoolOpts(spool))
	failed := filepath.Join(spool, "acme", "failed")
	waitFiles(t, failed, "dir.wav", "dir.wav.error.json", "fifo.wav", "fifo.wav.error.json", "link.wav", "link.wav.error.json")
	waitFiles(t, in)
	for name, kind := range map[string]string{"dir.wav": "a directory", "fifo.wav": "a FIFO", "link.wav": "a symbolic link"} {
		b, err := os.ReadFile(filepath.Join(failed, name+".error.json"))
		if err != nil {
			t.Fatal(err)
		}
		var rec spoolError
		if err := json.Unmarshal(b, &rec); err != nil || rec.Code != "not_regular_file" || !strings.Contains(rec.Error, kind) {
			t.Errorf("%s: record %s; want code not_regular_file naming %s", name, b, kind)
		}
	}
	rs, _, err := f.s.store.ListReports(context.Background(), "acme", store.Query{})
	if err != nil || len(rs) != 0 {
		t.Errorf("reports after non-regular files: %d, %v; want none", len(rs), err)
	}
}
