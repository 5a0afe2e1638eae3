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

// BenchmarkCall measures the whole per-channel analysis — features,
// baseline and scores — as the realtime service runs it: a one-channel
// (agent) call fed 100 ms chunks, the Seconds read as they come. One op is
// one chunk; x_realtime is seconds of audio per second of CPU for one
// channel.
func BenchmarkCall(b *testing.B) {
	speech := loadTestdata(b, "en_en1_calm.ulaw.wav")
	c, err := NewCall(CallConfig{Roles: []Role{RoleAgent}})
	if err != nil {
		b.Fatal(err)
	}
	var s Second
	const chunk = 800
	pos := 0
	b.ReportAllocs()
	for b.Loop() {
		if pos+chunk > len(speech) {
			pos = 0
		}
		c.Push(0, speech[pos:pos+chunk])
		pos += chunk
		for c.NextSecond(&s) {
		}
	}
	b.ReportMetric(float64(b.N)*0.1/b.Elapsed().Seconds(), "x_realtime")
}

// BenchmarkCallStereo is BenchmarkCall for a two-channel call (caller and
// agent, each the same speech offset by half a second); x_realtime counts
// channel-seconds.
func BenchmarkCallStereo(b *testing.B) {
	speech := loadTestdata(b, "en_en1_calm.ulaw.wav")
	c, err := NewCall(CallConfig{Roles: []Role{RoleCaller, RoleAgent}})
	if err != nil {
		b.Fatal(err)
	}
	var s Second
	const chunk = 800
	pos0, pos1 := 0, 4000
	b.ReportAllocs()
	for b.Loop() {
		if pos0+chunk > len(speech) {
			pos0 = 0
		}
		if pos1+chunk > len(speech) {
			pos1 = 0
		}
		c.Push(0, speech[pos0:pos0+chunk])
		c.Push(1, speech[pos1:pos1+chunk])
		pos0 += chunk
		pos1 += chunk
		for c.NextSecond(&s) {
		}
	}
	b.ReportMetric(2*float64(b.N)*0.1/b.Elapsed().Seconds(), "x_realtime")
}

// corpusLong is the 10-minute speed-test file of the evaluation corpus,
// relative to this package (or $CORPUS/long/long_600s.ulaw.wav).
func corpusLong(b *testing.B) []int16 {
	dir := os.Getenv("CORPUS")
	if dir == "" {
		dir = "../../../shared/corpus"
	}
	raw, err := os.ReadFile(dir + "/long/long_600s.ulaw.wav")
	if err != nil {
		b.Skipf("corpus not available: %v", err)
	}
	r, err := audio.ParseWAV(raw)
	if err != nil {
		b.Fatal(err)
	}
	return r.Channels()[0]
}

// BenchmarkCallLong600 runs the whole per-channel analysis (features and
// scores, as BenchmarkCall) over the corpus's 10-minute μ-law file in
// 100 ms chunks: the figure set beside Praat's and aubio's in
// docs/performance.md. One op is the whole file; allocs/op counts the
// Call's construction only.
func BenchmarkCallLong600(b *testing.B) {
	speech := corpusLong(b)
	b.ReportAllocs()
	cpu0 := cpuSeconds()
	for b.Loop() {
		c, err := NewCall(CallConfig{Roles: []Role{RoleAgent}})
		if err != nil {
			b.Fatal(err)
		}
		var s Second
		for i := 0; i < len(speech); i += 800 {
			c.Push(0, speech[i:min(i+800, len(speech))])
			for c.NextSecond(&s) {
			}
		}
		c.Flush()
		for c.NextSecond(&s) {
		}
	}
	audioS := float64(len(speech)) / SampleRate * float64(b.N)
	b.ReportMetric(audioS/b.Elapsed().Seconds(), "x_realtime")
	// CPU time, which a busy shared machine inflates less than wall time.
	if cpu := cpuSeconds() - cpu0; cpu > 0 {
		b.ReportMetric(audioS/cpu, "x_realtime_cpu")
		b.ReportMetric(cpu*3600/audioS, "cpu_s_per_audio_hour")
	}
}

// BenchmarkCallsMany is BenchmarkCall for many live channels at once, as a
// loaded realtime or fullcall instance runs them: 1,000 one-channel calls,
// each given its next 100 ms chunk in turn, so that a channel's buffers
// are out of the CPU caches by the time its next chunk comes (at 400
// stereo calls the stack holds 1,600 such channels). One op is one chunk;
// x_realtime_cpu counts channel-seconds per CPU second.
func BenchmarkCallsMany(b *testing.B) {
	speech := loadTestdata(b, "en_en1_calm.ulaw.wav")
	const calls, chunk = 1000, 800
	cs := make([]*Call, calls)
	pos := make([]int, calls)
	for i := range cs {
		c, err := NewCall(CallConfig{Roles: []Role{RoleAgent}})
		if err != nil {
			b.Fatal(err)
		}
		cs[i] = c
		pos[i] = (i * 7 * chunk) % (len(speech) - chunk) // different places in the speech
	}
	var s Second
	b.ReportAllocs()
	cpu0 := cpuSeconds()
	i := 0
	for b.Loop() {
		c := cs[i]
		if pos[i]+chunk > len(speech) {
			pos[i] = 0
		}
		c.Push(0, speech[pos[i]:pos[i]+chunk])
		pos[i] += chunk
		for c.NextSecond(&s) {
		}
		i = (i + 1) % calls
	}
	audioS := float64(b.N) * 0.1
	b.ReportMetric(audioS/b.Elapsed().Seconds(), "x_realtime")
	if cpu := cpuSeconds() - cpu0; cpu > 0 {
		b.ReportMetric(audioS/cpu, "x_realtime_cpu")
	}
}
