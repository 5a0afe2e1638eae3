package fullcall

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/calmline/calmline/lib/analysis"
	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/wire"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// corpusFile finds a file of the shared corpus: $CALMLINE_CORPUS, else
// ../../shared/corpus (the corpus beside the repository).
func corpusFile(b *testing.B, name string) []byte {
	dir := os.Getenv("CALMLINE_CORPUS")
	if dir == "" {
		dir = filepath.Join("..", "..", "shared", "corpus")
	}
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		b.Skipf("corpus file %s not found (set CALMLINE_CORPUS): %v", name, err)
	}
	return data
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// throughput runs f b.N times and reports seconds of audio per CPU-second
// (all of this process's CPU: the server, the client when there is one, the
// garbage collector).
func throughput(b *testing.B, audioSeconds float64, f func()) {
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime()
	for range b.N {
		f()
	}
	used := (cpuTime() - cpu).Seconds()
	b.ReportMetric(audioSeconds*float64(b.N)/used, "audio_s/cpu_s")
	b.ReportMetric(audioSeconds*float64(b.N)/b.Elapsed().Seconds(), "audio_s/s")
}

// BenchmarkBatch600s compares the batch path on the 10-minute corpus file
// with the raw analysis of the same audio: the gap is what parsing,
// building the report and storing it cost.
func BenchmarkBatch600s(b *testing.B) {
	file := corpusFile(b, "long/long_600s.ulaw.wav")
	wav, err := audio.ParseWAV(file)
	if err != nil {
		b.Fatal(err)
	}
	secs := float64(wav.Frames()) / float64(wav.Format.SampleRate)
	tt := newTenants(b, nil)
	call := &callv1.Call{TenantId: "acme", CallId: "raw", Policy: wire.Policy(tt.ts[0]),
		Format: &callv1.MediaFormat{Codec: wire.CodecOf(wav.Format.Codec), SampleRateHz: uint32(wav.Format.SampleRate),
			Channels: []callv1.ChannelRole{callv1.ChannelRole_CHANNEL_ROLE_AGENT}}}

	b.Run("raw-analysis", func(b *testing.B) { // the analysis alone, fed 10 s at a time as the batch path does
		piece := wav.Format.BytesPerSecond() * 10
		throughput(b, secs, func() {
			an, _, err := analysis.New(call)
			if err != nil {
				b.Fatal(err)
			}
			for off := 0; off < len(wav.Data); off += piece {
				an.Write(wav.Data[off:min(off+piece, len(wav.Data))])
				an.Seconds()
			}
			an.Flush()
			an.Stats()
		})
	})

	o := DefaultOptions()
	o.Tenants = tt.reg
	o.Database = "sqlite:" + filepath.Join(b.TempDir(), "bench.db")
	o.Workers = 0
	s, err := New(context.Background(), o)
	if err != nil {
		b.Fatal(err)
	}
	defer s.store.Close()
	acme, _ := tt.reg.Tenant("acme")
	ctx := context.Background()
	b.Run("analyse", func(b *testing.B) { // parse, analyse, build the report
		throughput(b, secs, func() {
			if _, _, err := s.analyse(ctx, acme, &fullcallv1.Recording{Wav: file, CallId: "a"}, fullcallv1.Source_SOURCE_UPLOAD); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run("analyse-and-store", func(b *testing.B) { // and store it in SQLite
		throughput(b, secs, func() {
			if _, err := s.analyzeNow(ctx, acme, &fullcallv1.Recording{Wav: file, CallId: "s"}); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run("http-upload", func(b *testing.B) { // POST /api/v1/recordings over loopback, client included
		f := startWith(b, tt, "sqlite:"+filepath.Join(b.TempDir(), "http.db"), func(o *Options) { o.MaxUploadBytes = 32 << 20; o.MaxJobBytes = 64 << 20 })
		throughput(b, secs, func() {
			req, _ := http.NewRequest("POST", f.base+"/api/v1/recordings?call_id=h", bytes.NewReader(file))
			req.Header.Set("Authorization", "Bearer "+tt.keys["acme"])
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatalf("upload: %d", resp.StatusCode)
			}
		})
	})
}
