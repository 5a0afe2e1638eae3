package fullcall

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/calmline/calmline/lib/analysis"
	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/impair"
	"github.com/calmline/calmline/lib/sqldb/sqldbtest"
	"github.com/calmline/calmline/lib/tenant"
	"github.com/calmline/calmline/lib/voice/voicetest"
	"github.com/calmline/calmline/lib/wire"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// conversation returns stereo μ-law of two parties taking turns that
// overlap a little, speech in every second.
func conversation(seconds int) []byte {
	n := seconds * 8000
	c := make([]int16, n)
	a := make([]int16, n)
	for i, start := 0, 0; start < seconds; i, start = i+1, start+4 {
		dst := c
		v := voicetest.Voice{F0: 205, Range: 3, Rate: 4.5, Level: -16, Dur: 4.6, Seed: uint64(i)}
		if i%2 == 1 {
			dst = a
			v = voicetest.Voice{F0: 125, Range: 2, Rate: 4, Level: -20, Dur: 4.6, Seed: uint64(i)}
		}
		copy(dst[start*8000:], v.Generate())
	}
	return audio.Encode(nil, audio.Interleave(nil, c, a), audio.CodecPCMU)
}

// live is a call as a gateway that forwards realtime's analysis sends it:
// 100 ms chunks, and after chunk seq the analyses realtime made from the
// chunks up to seq−lag (its answer trails the audio), then at the close the
// analyses of realtime's flush.
type live struct {
	data    []byte
	chunks  int
	after   map[int][]*callv1.SecondAnalysis
	atClose []*callv1.SecondAnalysis
	// pause, if set, follows chunk pauseAfter: the client paused the call
	// (a gap both realtime and fullcall are told of).
	pause      *callv1.Gap
	pauseAfter int
}

const lag = 2

// start is chunk seq's position on the timeline.
func (l live) start(seq int) uint64 {
	st := uint64(seq-1) * chunkSamples
	if l.pause != nil && seq > l.pauseAfter {
		st += l.pause.Samples
	}
	return st
}

// withPause returns newLive's call with a pause of samples after chunk
// after.
func withPause(after int, samples uint64) live {
	return live{pauseAfter: after, pause: &callv1.Gap{StartSample: uint64(after) * chunkSamples, Samples: samples, Reason: callv1.GapReason_GAP_REASON_PAUSED}}
}

// newLive runs realtime's analysis over data as realtime would: chunks for
// which lost is true never reach it (its queue dropped them), and the
// analyses of the seconds for which drop is true are not sent (realtime was
// down); edit, if set, changes each analysis sent.
func newLive(t testing.TB, call *callv1.Call, data []byte, lost func(seq int) bool, drop func(second uint32) bool, edit func(*callv1.SecondAnalysis), opts ...live) live {
	t.Helper()
	an, _, err := analysis.New(call)
	if err != nil {
		t.Fatal(err)
	}
	l := live{data: data, chunks: len(data) / chunkBytes, after: map[int][]*callv1.SecondAnalysis{}}
	for _, o := range opts {
		l.pause, l.pauseAfter = o.pause, o.pauseAfter
	}
	keep := func(secs []analysis.Second) []*callv1.SecondAnalysis {
		var out []*callv1.SecondAnalysis
		for _, s := range secs {
			sa := analysis.SecondAnalysis(s)
			if sa == nil || drop != nil && drop(sa.Second) {
				continue
			}
			if edit != nil {
				edit(sa)
			}
			out = append(out, sa)
		}
		return out
	}
	for seq := 1; seq <= l.chunks; seq++ {
		if seq-1 == l.pauseAfter && l.pause != nil {
			an.Gap(l.pause.Samples) // realtime is told of the pause too
		}
		if lost != nil && lost(seq) {
			continue
		}
		if start := l.start(seq); start > an.Timeline() {
			an.Gap(start - an.Timeline())
		}
		an.Write(data[(seq-1)*chunkBytes : seq*chunkBytes])
		l.after[seq+lag] = append(l.after[seq+lag], keep(an.Seconds())...)
	}
	for seq := l.chunks + 1; seq <= l.chunks+lag; seq++ {
		l.atClose = append(l.atClose, l.after[seq]...)
	}
	l.atClose = append(l.atClose, keep(an.Flush())...)
	return l
}

func (l live) end() uint64 { return l.start(l.chunks) + chunkSamples }

// play sends chunks from..to with the analyses that follow them.
func (l live) play(c *recClient, from, to int) {
	for seq := from; seq <= to; seq++ {
		c.chunk(uint64(seq), l.start(seq), l.data[(seq-1)*chunkBytes:seq*chunkBytes])
		if seq == l.pauseAfter && l.pause != nil {
			c.gap(l.pause)
		}
		for _, sa := range l.after[seq] {
			c.send(&fullcallv1.RecordRequest{Msg: &fullcallv1.RecordRequest_Analysis{Analysis: sa}})
		}
	}
}

// finish sends the analyses of realtime's close and closes the call.
func (l live) finish(t *testing.T, c *recClient) *fullcallv1.Report {
	t.Helper()
	for _, sa := range l.atClose {
		c.send(&fullcallv1.RecordRequest{Msg: &fullcallv1.RecordRequest_Analysis{Analysis: sa}})
	}
	r, err := c.finish(uint64(l.chunks), l.end())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// wholeReport streams data to fullcall without realtime's analysis:
// fullcall analyses all of it, as before.
func wholeReport(t *testing.T, cc *grpc.ClientConn, call *callv1.Call, data []byte, opts ...live) *fullcallv1.Report {
	t.Helper()
	c, _, err := openRecord(t, cc, call, false)
	if err != nil {
		t.Fatal(err)
	}
	l := live{data: data, chunks: len(data) / chunkBytes}
	for _, o := range opts {
		l.pause, l.pauseAfter = o.pause, o.pauseAfter
	}
	l.play(c, 1, l.chunks)
	return l.finish(t, c)
}

func liveReport(t *testing.T, cc *grpc.ClientConn, call *callv1.Call, l live) *fullcallv1.Report {
	t.Helper()
	c, _, err := openStream(t, cc, &fullcallv1.OpenCall{Call: call, RealtimeAnalysis: true})
	if err != nil {
		t.Fatal(err)
	}
	l.play(c, 1, l.chunks)
	return l.finish(t, c)
}

// marker is an agent_stress no analysis of these calls makes: seconds that
// carry it came from realtime's analysis.
const marker = 99.9

func markRealtime(sa *callv1.SecondAnalysis) {
	v := marker
	sa.AgentStress = &v
}

// realtimeSeconds lists which seconds of a report carry the marker.
func realtimeSeconds(r *fullcallv1.Report) []bool {
	out := make([]bool, len(r.Timeline))
	for i, p := range r.Timeline {
		out[i] = p.AgentStress != nil && *p.AgentStress == marker
	}
	return out
}

// sameMeasures compares the channels and overlap of a report built from
// per-second analyses with one from the analysis of all the audio, within
// the tolerance of lib/analysis's Sums (or tol, looser, where fullcall
// restarted its own analysis).
func sameMeasures(t *testing.T, got, want *fullcallv1.Report, loose bool) {
	t.Helper()
	if len(got.Channels) != len(want.Channels) {
		t.Fatalf("%d channels; want %d", len(got.Channels), len(want.Channels))
	}
	for i, w := range want.Channels {
		g := got.Channels[i]
		for _, m := range channelFields(g, w) {
			tol := m.tol
			if loose {
				tol = m.loose
			}
			if d := math.Abs(m.got - m.want); d > tol {
				t.Errorf("channel %d %s: %v; want %v ± %g", i, m.name, m.got, m.want, tol)
			}
		}
	}
	ov := 1e-9
	if loose {
		ov = 0.35
	}
	if math.Abs(got.Overlap.OverlapS-want.Overlap.OverlapS) > ov {
		t.Errorf("overlap %v s; want %v", got.Overlap.OverlapS, want.Overlap.OverlapS)
	}
}

type fieldDiff struct {
	name       string
	got, want  float64
	tol, loose float64
}

// channelFields pairs a channel's measures with their tolerances: tol
// where the analysis state was the same (Sums against Stats), loose where
// fullcall's analysis restarted (a cold start's voice activity and
// baselines).
func channelFields(g, w *fullcallv1.ChannelSummary) []fieldDiff {
	rel := func(v, r float64) float64 { return math.Abs(v) * r }
	return []fieldDiff{
		{"talk_s", g.TalkS, w.TalkS, 1e-9, 0.35},
		{"silence_s", g.SilenceS, w.SilenceS, 1e-9, 0.35},
		{"voiced_fraction", g.VoicedFraction, w.VoicedFraction, 1e-9, 0.05},
		{"speech_rate", g.SpeechRateSylPerS, w.SpeechRateSylPerS, 1e-9, 0.3},
		{"intensity_db", g.IntensityMeanDb, w.IntensityMeanDb, 1e-4, 1.5},
		{"f0_mean_hz", g.F0MeanHz, w.F0MeanHz, rel(w.F0MeanHz, 1e-9), 5},
		{"f0_sd_hz", g.F0SdHz, w.F0SdHz, rel(w.F0SdHz, 1e-6), 5},
		{"f0_median_hz", g.F0MedianHz, w.F0MedianHz, rel(w.F0MedianHz, 0.006), 5},
		{"f0_p05_hz", g.F0P05Hz, w.F0P05Hz, rel(w.F0P05Hz, 0.006), 5},
		{"f0_p95_hz", g.F0P95Hz, w.F0P95Hz, rel(w.F0P95Hz, 0.006), 5},
		{"jitter_local_pct", g.JitterLocalPct, w.JitterLocalPct, rel(w.JitterLocalPct, 1e-6), 0.3},
		{"jitter_rap_pct", g.JitterRapPct, w.JitterRapPct, rel(w.JitterRapPct, 1e-6), 0.3},
		{"shimmer_local_pct", g.ShimmerLocalPct, w.ShimmerLocalPct, rel(w.ShimmerLocalPct, 5e-3), 1},
		{"shimmer_apq3_pct", g.ShimmerApq3Pct, w.ShimmerApq3Pct, rel(w.ShimmerApq3Pct, 5e-3), 1},
		{"hnr_db", g.HnrMeanDb, w.HnrMeanDb, rel(w.HnrMeanDb, 1e-9), 1},
	}
}

// sameReport checks what must not depend on who analysed the seconds:
// duration, every second present, counts, gaps and events.
func sameReport(t *testing.T, got, want *fullcallv1.Report) {
	t.Helper()
	if got.DurationS != want.DurationS || len(got.Timeline) != len(want.Timeline) || got.Chunks != want.Chunks ||
		got.AudioBytes != want.AudioBytes || got.Incomplete != want.Incomplete || len(got.Gaps) != len(want.Gaps) {
		t.Fatalf("%.2f s, %d seconds, %d chunks, %d bytes, incomplete %v, %d gaps; want %.2f, %d, %d, %d, %v, %d",
			got.DurationS, len(got.Timeline), got.Chunks, got.AudioBytes, got.Incomplete, len(got.Gaps),
			want.DurationS, len(want.Timeline), want.Chunks, want.AudioBytes, want.Incomplete, len(want.Gaps))
	}
	for i, p := range got.Timeline {
		if p.CallerTalk == nil || p.AgentTalk == nil || p.Overlap == nil {
			t.Errorf("second %d has no talk shares: %v", i, p)
		}
	}
}

func TestReportFromRealtimeAnalysis(t *testing.T) {
	f := start(t)
	data := conversation(12)
	want := wholeReport(t, f.cc, f.call("acme", "whole"), data)

	// realtime covers every second: the report is made of its analyses,
	// and agrees with fullcall's own analysis of the same audio.
	call := f.call("acme", "live")
	got := liveReport(t, f.cc, call, newLive(t, call, data, nil, nil, nil))
	sameReport(t, got, want)
	for i := range want.Timeline {
		if !proto.Equal(got.Timeline[i], want.Timeline[i]) {
			t.Errorf("second %d: %v from realtime's analysis; %v from fullcall's", i, got.Timeline[i], want.Timeline[i])
		}
	}
	sameMeasures(t, got, want, false)
	for _, s := range []*fullcallv1.ScoreSummary{got.AgentStress, got.CallerPressure} {
		if !s.Scored {
			t.Errorf("score summary %v: nothing scored", s)
		}
	}
	if !proto.Equal(got.CallerPressure, want.CallerPressure) || !proto.Equal(got.AgentStress, want.AgentStress) {
		t.Errorf("score summaries %v, %v; want %v, %v", got.AgentStress, got.CallerPressure, want.AgentStress, want.CallerPressure)
	}

	// And it is made of them: marked analyses show in every second.
	call = f.call("acme", "marked")
	marked := liveReport(t, f.cc, call, newLive(t, call, data, nil, nil, markRealtime))
	for i, rt := range realtimeSeconds(marked) {
		if !rt {
			t.Errorf("second %d: %v; want realtime's analysis", i, marked.Timeline[i])
		}
	}
}

func TestSecondsRealtimeMissedAreAnalysedHere(t *testing.T) {
	f := start(t)
	data := conversation(16)
	want := wholeReport(t, f.cc, f.call("acme", "whole"), data)
	call := f.call("acme", "gaps")
	// realtime's queue dropped chunks 35 and 36 (in second 3); it was down
	// for seconds 6 to 8; its last second never came.
	l := newLive(t, call, data, func(seq int) bool { return seq == 35 || seq == 36 },
		func(s uint32) bool { return s >= 6 && s <= 8 || s == 15 }, markRealtime)
	got := liveReport(t, f.cc, call, l)
	sameReport(t, got, want)
	for i, rt := range realtimeSeconds(got) {
		mine := i == 3 || i >= 6 && i <= 8 || i == 15
		if rt == mine {
			t.Errorf("second %d: from realtime %v; want %v (%v)", i, rt, !mine, got.Timeline[i])
		}
	}
	sameMeasures(t, got, want, true)
}

func TestAudioWaitingForRealtimeIsBounded(t *testing.T) {
	f := start(t, func(o *Options) { o.CheckpointEvery = time.Second; o.RealtimeWait = 2 * time.Second })
	data := conversation(10)
	want := wholeReport(t, f.cc, f.call("acme", "whole"), data)

	// No analysis comes from realtime: fullcall holds 2 s of audio, then
	// analyses the oldest itself, and acknowledges what it analysed.
	call := f.call("acme", "alone")
	c, _, err := openStream(t, f.cc, &fullcallv1.OpenCall{Call: call, RealtimeAnalysis: true})
	if err != nil {
		t.Fatal(err)
	}
	l := live{data: data, chunks: len(data) / chunkBytes}
	l.play(c, 1, 60)
	c.waitAck(30) // 6 s sent, 2 s waiting, 4 s analysed
	if c.acked > 40 {
		t.Errorf("acknowledged chunk %d of 60 with 2 s waiting for realtime; want at most 40", c.acked)
	}
	l.play(c, 61, l.chunks)
	got := l.finish(t, c)
	sameReport(t, got, want)
	for i := range want.Timeline {
		if !proto.Equal(got.Timeline[i], want.Timeline[i]) {
			t.Errorf("second %d: %v; want %v", i, got.Timeline[i], want.Timeline[i])
		}
	}
	sameMeasures(t, got, want, false)
}

func TestResumeWithRealtimeAnalysis(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, dsn string) {
		tt := newTenants(t, nil)
		fast := func(o *Options) { o.CheckpointEvery = time.Second }
		a := startWith(t, tt, dsn, fast)
		b := startWith(t, tt, dsn, fast)
		data := conversation(12)
		pause := withPause(45, 8000) // replayed to B, or in A's checkpoint: listed once either way
		ref := a.call("acme", "ref")
		want := liveReport(t, a.cc, ref, newLive(t, ref, data, nil, nil, nil, pause))
		if len(want.Gaps) != 1 {
			t.Fatalf("reference gaps %v; want the pause", want.Gaps)
		}

		// Instance A has the call up to chunk 64 and has acknowledged what
		// realtime's analyses cover; then the gateway loses it.
		call := a.call("acme", "c")
		l := newLive(t, call, data, nil, nil, nil, pause)
		onA, _, err := openStream(t, a.cc, &fullcallv1.OpenCall{Call: call, RealtimeAnalysis: true})
		if err != nil {
			t.Fatal(err)
		}
		l.play(onA, 1, 64)
		onA.waitAck(40)
		onA.cancel()
		if err := onA.ended(); err == nil {
			t.Fatal("A's stream ended without an error")
		}

		// B resumes from A's checkpoint; the gateway replays its log from
		// the acknowledgement: chunks and analyses.
		onB, opened, err := openStream(t, b.cc, &fullcallv1.OpenCall{Call: call, Resume: true, RealtimeAnalysis: true})
		if err != nil {
			t.Fatal(err)
		}
		if opened.AckedSeq < 40 || opened.AckedSeq > 64 {
			t.Fatalf("resumed at chunk %d; want A's checkpoint, 40 to 64", opened.AckedSeq)
		}
		// (From further back than the checkpoint, as a gateway that missed
		// A's last acknowledgements would: chunks, the pause and analyses
		// B has already are recognised.)
		l.play(onB, 30, l.chunks)
		got := l.finish(t, onB)
		sameReport(t, got, want)
		// Every second comes from realtime's analyses as in the reference,
		// but those A had not covered when its stream broke: A analysed
		// them itself (to its last whole second) before its last
		// checkpoint, so that a call nobody resumes still has them.
		broke := opened.TimelineSample / 8000
		mine := 0
		for i := range want.Timeline {
			if proto.Equal(got.Timeline[i], want.Timeline[i]) {
				continue
			}
			mine++
			if uint64(i) >= broke || uint64(i)+4 < broke {
				t.Errorf("second %d: %v; want %v (A's stream broke in second %d)", i, got.Timeline[i], want.Timeline[i], broke)
			}
		}
		t.Logf("the stream broke at %d s; %d seconds analysed by A before that differ from realtime's", broke, mine)
		sameMeasures(t, got, want, mine > 0)
	})
}

// corpusCalls returns the corpus's call-like stereo files (see
// shared/corpus/README.md), cut to whole 100 ms chunks, each also through
// a telephone line's bleed and noise; it skips the test without the
// corpus.
func corpusCalls(t *testing.T) map[string][]byte {
	dir := os.Getenv("CALMLINE_CORPUS")
	if dir == "" {
		dir = filepath.Join("..", "..", "shared", "corpus")
	}
	files, _ := filepath.Glob(filepath.Join(dir, "emodb", "calls", "*.wav"))
	if len(files) == 0 {
		t.Skipf("no corpus calls in %s (set CALMLINE_CORPUS)", dir)
	}
	out := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		wav, err := audio.ParseWAV(b)
		if err != nil {
			t.Fatal(err)
		}
		if wav.Format.Codec != audio.CodecPCMU || wav.Format.SampleRate != 8000 || wav.Format.Channels != 2 {
			t.Fatalf("%s: %v; want stereo μ-law at 8 kHz", f, wav.Format)
		}
		data := wav.Data[:len(wav.Data)/chunkBytes*chunkBytes]
		out[filepath.Base(f)] = data
		// The same call on a real line: the caller's voice bleeding into
		// the agent's channel, pink noise on both.
		rec := &audio.Recording{Format: wav.Format, Data: data}
		chans, err := impair.Apply(rec.Channels(), lineSpec)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)+" (line)"] = audio.Encode(nil, audio.Interleave(nil, chans...), audio.CodecPCMU)
	}
	return out
}

// lineSpec is the line condition of the corpus calls' second version.
var lineSpec = func() impair.Spec {
	s, err := impair.Parse("bleed=-20:20,noise=pink:15,seed=3")
	if err != nil {
		panic(err)
	}
	return s
}()

// TestCorpusReportsAgree builds each corpus call's report both ways — from
// realtime's per-second analyses, and by fullcall analysing all the audio —
// and compares them field by field: the timeline must be identical, the
// measures within the tolerance of lib/analysis's Sums. It prints the
// largest differences (docs/voice-analysis.md holds the table).
func TestCorpusReportsAgree(t *testing.T) {
	calls := corpusCalls(t)
	f := start(t)
	names := slices.Sorted(maps.Keys(calls))
	maxAbs := map[string]float64{}
	maxRel := map[string]float64{}
	var order []string
	seconds := 0
	for _, name := range names {
		data := calls[name]
		want := wholeReport(t, f.cc, f.call("acme", "whole-"+name), data)
		call := f.call("acme", "live-"+name)
		got := liveReport(t, f.cc, call, newLive(t, call, data, nil, nil, nil))
		sameReport(t, got, want)
		seconds += len(got.Timeline)
		for i := range want.Timeline {
			if !proto.Equal(got.Timeline[i], want.Timeline[i]) {
				t.Errorf("%s second %d: %v from realtime's analysis; %v from fullcall's", name, i, got.Timeline[i], want.Timeline[i])
			}
		}
		if !proto.Equal(got.CallerPressure, want.CallerPressure) || !proto.Equal(got.AgentStress, want.AgentStress) {
			t.Errorf("%s: score summaries differ", name)
		}
		sameMeasures(t, got, want, false)
		for i := range want.Channels {
			for _, m := range channelFields(got.Channels[i], want.Channels[i]) {
				k := want.Channels[i].Role.String() + " " + m.name
				if _, ok := maxAbs[k]; !ok {
					order = append(order, k)
				}
				d := math.Abs(m.got - m.want)
				maxAbs[k] = max(maxAbs[k], d)
				if m.want != 0 {
					maxRel[k] = max(maxRel[k], d/math.Abs(m.want))
				}
			}
		}
		for _, k := range []string{"overlap_s", "interruptions"} {
			var d float64
			if k == "overlap_s" {
				d = math.Abs(got.Overlap.OverlapS - want.Overlap.OverlapS)
			} else {
				d = math.Abs(float64(got.Overlap.CallerInterruptions+got.Overlap.AgentInterruptions) - float64(want.Overlap.CallerInterruptions+want.Overlap.AgentInterruptions))
			}
			if _, ok := maxAbs[k]; !ok {
				order = append(order, k)
			}
			maxAbs[k] = max(maxAbs[k], d)
		}
	}
	t.Logf("%d corpus calls, %d seconds: timelines identical; largest differences of the measures:", len(calls), seconds)
	t.Logf("| field | max abs. difference | max rel. difference |")
	t.Logf("| --- | ---: | ---: |")
	for _, k := range order {
		t.Logf("| %s | %.3g | %.3g |", k, maxAbs[k], maxRel[k])
	}
}

// BenchmarkLiveCall is fullcall's cost of a minute-long live stereo call
// over gRPC on loopback (open, 100 ms chunks, close, the report stored):
// analysing all the audio itself, or taking realtime's per-second analyses
// (made beforehand, outside the timing). All of the process's CPU counts,
// the client's sending included.
func BenchmarkLiveCall(b *testing.B) {
	data := conversation(60)
	tt := newTenants(b, nil)
	f := startWith(b, tt, "sqlite:"+filepath.Join(b.TempDir(), "bench.db"))
	call := f.call("acme", "bench")
	l := newLive(b, call, data, nil, nil, nil)
	n := 0
	for _, realtime := range []bool{false, true} {
		// before: fullcall analyses all the audio; after: it takes
		// realtime's analyses.
		name := "analysis=fullcall"
		if realtime {
			name = "analysis=realtime"
		}
		b.Run(name, func(b *testing.B) {
			throughput(b, 60, func() {
				n++
				c := f.call("acme", fmt.Sprintf("bench-%d", n))
				rc, _, err := openStream(b, f.cc, &fullcallv1.OpenCall{Call: c, RealtimeAnalysis: realtime})
				if err != nil {
					b.Fatal(err)
				}
				run := l
				if !realtime {
					run = live{data: data, chunks: l.chunks}
				}
				run.play(rc, 1, run.chunks)
				if _, err := rc.finish(uint64(run.chunks), run.end()); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}

// BenchmarkLiveAggregate is the same call's cost inside fullcall alone: the
// aggregate's work (analysis or taking realtime's analyses, the report),
// without gRPC, the store or a client.
func BenchmarkLiveAggregate(b *testing.B) {
	data := conversation(60)
	tt := newTenants(b, nil)
	call := &callv1.Call{TenantId: "acme", CallId: "bench", Policy: wire.Policy(tt.ts[0]),
		Format: &callv1.MediaFormat{Codec: callv1.Codec_CODEC_PCMU, SampleRateHz: 8000,
			Channels: []callv1.ChannelRole{callv1.ChannelRole_CHANNEL_ROLE_CALLER, callv1.ChannelRole_CHANNEL_ROLE_AGENT}}}
	l := newLive(b, call, data, nil, nil, nil)
	for _, realtime := range []bool{false, true} {
		name := "analysis=fullcall"
		if realtime {
			name = "analysis=realtime"
		}
		b.Run(name, func(b *testing.B) {
			throughput(b, 60, func() {
				a, err := newAggregate(call)
				if realtime {
					a, err = newLiveAggregate(call, 3*time.Second)
				}
				if err != nil {
					b.Fatal(err)
				}
				for seq := 1; seq <= l.chunks; seq++ {
					if err := a.addAudio(uint64(seq-1)*chunkSamples, data[(seq-1)*chunkBytes:seq*chunkBytes]); err != nil {
						b.Fatal(err)
					}
					a.chunkDone(uint64(seq))
					if realtime {
						for _, sa := range l.after[seq] {
							a.analysis(sa)
						}
					}
				}
				if realtime {
					for _, sa := range l.atClose {
						a.analysis(sa)
					}
				}
				if _, err := a.report(nil, l.end(), fullcallv1.EndReason_END_REASON_HANGUP, false, fullcallv1.Source_SOURCE_STREAM); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}

func TestBrokenStreamWithRealtimeAnalysisKeepsWhatArrived(t *testing.T) {
	// A call built from realtime's analyses whose gateway never comes
	// back: what waited for realtime is analysed when the stream breaks,
	// so the sweep's report holds every whole second that arrived.
	f := start(t, func(o *Options) { o.CheckpointEvery = time.Second; o.OrphanAfter = time.Second })
	stored := make(chan *fullcallv1.Report, 1)
	f.s.stored = stored
	data := conversation(6)
	call := f.call("acme", "broken-live")
	l := newLive(t, call, data, nil, nil, markRealtime)
	c, _, err := openStream(t, f.cc, &fullcallv1.OpenCall{Call: call, RealtimeAnalysis: true})
	if err != nil {
		t.Fatal(err)
	}
	l.play(c, 1, 45) // 4.5 s; realtime's analyses up to about 4 s
	c.waitAck(20)
	c.cancel()
	var rep *fullcallv1.Report
	select {
	case rep = <-stored:
	case <-time.After(10 * time.Second):
		t.Fatal("no report stored after the stream broke")
	}
	// What reached fullcall before the cut (at least the 20 chunks it
	// acknowledged; the rest of the 45 sent may have been lost with the
	// stream) is in the report, to its last whole second.
	if !rep.Incomplete || rep.EndReason != fullcallv1.EndReason_END_REASON_DISCONNECTED || rep.Chunks < 20 || rep.Chunks%10 != 0 || len(rep.Timeline) != int(rep.Chunks/10) {
		t.Fatalf("report of a broken stream: incomplete=%v reason=%v chunks=%d seconds=%d; want incomplete, disconnected, the chunks of the whole seconds that arrived (20 or more)",
			rep.Incomplete, rep.EndReason, rep.Chunks, len(rep.Timeline))
	}
	for i, p := range rep.Timeline {
		if p.CallerTalk == nil {
			t.Errorf("second %d: %v; want it analysed", i, p)
		}
	}
	if rep.Channels[0].TalkS == 0 {
		t.Errorf("channel summary %v; want the caller's talk", rep.Channels[0])
	}
}

func TestStoredAudioIsWholeWithRealtimeAnalysis(t *testing.T) {
	// A tenant that keeps raw audio: letting go of the audio realtime's
	// analyses cover does not let go of what is stored, and a takeover in
	// the middle (the checkpoint stores only the audio before the seconds
	// it covers, the resume replays the rest) stores every byte once.
	tt := newTenants(t, func(tn *tenant.Tenant) { tn.Audio.Store = true })
	dsn := sqldbtest.SQLite(t)
	fast := func(o *Options) { o.CheckpointEvery = time.Second }
	a := startWith(t, tt, dsn, fast)
	b := startWith(t, tt, dsn, fast)
	data := conversation(8)
	call := a.call("acme", "kept")
	l := newLive(t, call, data, nil, nil, nil)
	onA, _, err := openStream(t, a.cc, &fullcallv1.OpenCall{Call: call, RealtimeAnalysis: true})
	if err != nil {
		t.Fatal(err)
	}
	l.play(onA, 1, 47)
	onA.waitAck(30)
	onA.cancel()
	onA.ended()
	onB, opened, err := openStream(t, b.cc, &fullcallv1.OpenCall{Call: call, Resume: true, RealtimeAnalysis: true})
	if err != nil {
		t.Fatal(err)
	}
	l.play(onB, int(opened.AckedSeq), l.chunks)
	rep := l.finish(t, onB)
	if !rep.AudioStored || rep.Incomplete {
		t.Fatalf("report: audio stored %v, incomplete %v", rep.AudioStored, rep.Incomplete)
	}
	var buf bytes.Buffer
	if err := b.s.store.WriteAudio(context.Background(), &buf, "acme", "kept", chunkBytes/chunkSamples, []byte{0xff, 0xff}, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), data) {
		t.Errorf("stored audio: %d bytes, equal %v; want the %d bytes sent", buf.Len(), bytes.Equal(buf.Bytes(), data), len(data))
	}
}

func TestPausedCallFromRealtimeAnalysis(t *testing.T) {
	// The client pauses for 1.5 s after 3.7 s: realtime and fullcall are
	// both told, realtime analyses the pause as silence, and its analyses
	// of the seconds around it say how much of them was audio — as much as
	// fullcall has — so they are taken.
	f := start(t)
	data := conversation(8)
	pause := withPause(37, 12000)
	want := wholeReport(t, f.cc, f.call("acme", "whole"), data, pause)
	call := f.call("acme", "paused")
	got := liveReport(t, f.cc, call, newLive(t, call, data, nil, nil, markRealtime, pause))
	sameReport(t, got, want)
	if len(got.Gaps) != 1 || got.Gaps[0].Reason != callv1.GapReason_GAP_REASON_PAUSED || got.Gaps[0].Samples != 12000 {
		t.Errorf("gaps %v; want the pause, once", got.Gaps)
	}
	for i, rt := range realtimeSeconds(got) {
		if !rt {
			t.Errorf("second %d: %v; want realtime's analysis", i, got.Timeline[i])
		}
	}
	// Unmarked, the analyses give what fullcall's own analysis gives.
	call = f.call("acme", "paused-2")
	got = liveReport(t, f.cc, call, newLive(t, call, data, nil, nil, nil, pause))
	for i := range want.Timeline {
		if !proto.Equal(got.Timeline[i], want.Timeline[i]) {
			t.Errorf("second %d: %v; want %v", i, got.Timeline[i], want.Timeline[i])
		}
	}
	sameMeasures(t, got, want, false)
}
