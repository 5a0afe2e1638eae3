package voice

import (
	"os"
	"testing"

	"github.com/calmline/calmline/lib/audio"
)

// loadTestdata decodes a mono WAV file from testdata.
func loadTestdata(tb testing.TB, name string) []int16 {
	tb.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		tb.Fatal(err)
	}
	r, err := audio.ParseWAV(b)
	if err != nil {
		tb.Fatal(err)
	}
	return r.Channels()[0]
}

// BenchmarkAnalyzer measures the per-frame feature extraction of one
// channel on real (synthetic-voice) telephone speech, pushed in 100 ms
// chunks as the realtime service does. One op is one chunk (10 frames);
// allocs/op must be 0.
func BenchmarkAnalyzer(b *testing.B) {
	speech := loadTestdata(b, "en_en1_calm.ulaw.wav")
	a := NewAnalyzer(nil, nil)
	const chunk = 800
	pos := 0
	b.ReportAllocs()
	for b.Loop() {
		if pos+chunk > len(speech) {
			pos = 0
		}
		a.Push(speech[pos : pos+chunk])
		pos += chunk
	}
	b.ReportMetric(float64(b.N)*0.1/b.Elapsed().Seconds(), "x_realtime")
}
