package analysis

import (
	"math"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/voice"
	"github.com/calmline/calmline/lib/voice/voicetest"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
)

// talkOver returns 20 s of stereo μ-law: two speakers with turns that
// overlap, on noisy lines, the agent's carrying the caller's echo.
func talkOver() []byte {
	const n = 20 * 8000
	c := make([]int16, n)
	a := make([]int16, n)
	copy(c, voicetest.Voice{F0: 210, Range: 3, Rate: 5, Level: -18, Dur: 9, Seed: 3}.Generate())
	copy(a[7*8000:], voicetest.Voice{F0: 115, Range: 2, Rate: 4, Level: -20, Dur: 9, Seed: 4}.Generate())
	copy(c[15*8000:], voicetest.Voice{F0: 230, Range: 4, Rate: 6, Level: -14, Dur: 4, Seed: 5}.Generate())
	c = voicetest.WithNoise(c, 25, 1)
	a = voicetest.WithNoise(voicetest.Sum(a, voicetest.Gain(c, -28)), 20, 2)
	return audio.Encode(nil, audio.Interleave(nil, c, a), audio.CodecPCMU)
}

// measures lists a Stats' fields by name.
func measures(st Stats) map[string]float64 {
	m := map[string]float64{
		"overlap_s": st.OverlapSeconds, "caller_interruptions": float64(st.CallerInterruptions), "agent_interruptions": float64(st.AgentInterruptions),
	}
	for _, c := range st.Channels {
		p := c.Role.String() + "."
		v := c.Voice
		for k, x := range map[string]float64{
			"talk_s": c.TalkSeconds, "silence_s": c.SilenceSeconds, "intensity_db": c.IntensityMeanDB,
			"voiced_fraction": float64(v.VoicedFraction), "f0_mean_hz": float64(v.F0MeanHz), "f0_median_hz": float64(v.F0MedianHz),
			"f0_sd_hz": float64(v.F0SDHz), "f0_p05_hz": float64(v.F0P05Hz), "f0_p95_hz": float64(v.F0P95Hz),
			"jitter_local_pct": float64(v.JitterLocalPct), "jitter_rap_pct": float64(v.JitterRAPPct),
			"shimmer_local_pct": float64(v.ShimmerLocalPct), "shimmer_apq3_pct": float64(v.ShimmerAPQ3Pct),
			"hnr_db": float64(v.HNRMeanDB), "speech_rate": float64(v.SpeechRate),
		} {
			m[p+k] = x
		}
	}
	return m
}

// tolerance is how far a measure rebuilt from per-second sums may be from
// the analysis's own (see the comment at the top of sums.go): absolute,
// and relative.
func tolerance(name string) (abs, rel float64) {
	switch {
	case strings.Contains(name, "f0_median") || strings.Contains(name, "f0_p05") || strings.Contains(name, "f0_p95"):
		return 0, 0.006 // a bin of a tenth of a semitone (0.58 %)
	case strings.Contains(name, "shimmer"):
		return 0, 5e-3 // 1/(2n) of n amplitudes (see sums.go)
	case strings.Contains(name, "intensity"):
		return 1e-4, 0 // dB from a float32 mean square
	case strings.HasSuffix(name, "_s") || strings.HasSuffix(name, "interruptions") || strings.HasSuffix(name, "voiced_fraction") || strings.HasSuffix(name, "speech_rate"):
		return 1e-9, 0
	}
	return 0, 1e-9
}

// analyse streams data through an analyser in 100 ms chunks, with a gap
// after second 12, and returns its per-second analyses and Stats.
func analyse(t testing.TB, call *callv1.Call, data []byte) ([]*callv1.SecondAnalysis, Stats) {
	t.Helper()
	an, _, err := New(call)
	if err != nil {
		t.Fatal(err)
	}
	var out []*callv1.SecondAnalysis
	take := func() {
		for _, s := range an.Seconds() {
			sa := SecondAnalysis(s)
			if sa == nil {
				t.Fatalf("second %d has no analysis", s.Index)
			}
			out = append(out, sa)
		}
	}
	for off := 0; off < len(data); off += 1600 {
		an.Write(data[off:min(off+1600, len(data))])
		take()
		if off == 12*16000 {
			an.Gap(4000)
			take()
		}
	}
	for _, s := range an.Flush() {
		out = append(out, SecondAnalysis(s))
	}
	return out, an.Stats()
}

func stereoCall() *callv1.Call {
	return &callv1.Call{TenantId: "t", CallId: "c", Format: &callv1.MediaFormat{Codec: callv1.Codec_CODEC_PCMU, SampleRateHz: 8000,
		Channels: []callv1.ChannelRole{callv1.ChannelRole_CHANNEL_ROLE_CALLER, callv1.ChannelRole_CHANNEL_ROLE_AGENT}}}
}

func TestSumsAgreeWithStats(t *testing.T) {
	call := stereoCall()
	secs, want := analyse(t, call, talkOver())
	if len(secs) != 21 {
		t.Fatalf("%d seconds; want 21 (20 s of audio and a 0.5 s gap)", len(secs))
	}
	sums := NewSums(2)
	var gapped uint64
	for i, sa := range secs {
		if err := CheckSecond(sa, 2, 8000); err != nil {
			t.Fatalf("second %d: %v", i, err)
		}
		// What travels is what arrives.
		b, err := proto.Marshal(sa)
		if err != nil {
			t.Fatal(err)
		}
		var back callv1.SecondAnalysis
		if err := proto.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		gapped += sa.EndSample - uint64(sa.Second)*8000 - sa.AudioSamples
		sums.Add(&back, 8000)
	}
	if gapped != 4000 {
		t.Errorf("the seconds say %d samples were gaps; want 4000", gapped)
	}
	got := sums.Stats([]voice.Role{voice.RoleCaller, voice.RoleAgent}, 8000)
	g, w := measures(got), measures(want)
	if want.OverlapSeconds == 0 || want.AgentInterruptions+want.CallerInterruptions == 0 {
		t.Logf("note: overlap %.2f s, interruptions %d/%d", want.OverlapSeconds, want.CallerInterruptions, want.AgentInterruptions)
	}
	for name, wv := range w {
		gv := g[name]
		abs, rel := tolerance(name)
		d := math.Abs(gv - wv)
		if math.IsNaN(wv) != math.IsNaN(gv) || d > abs+rel*math.Abs(wv) {
			t.Errorf("%s: %v from the sums, %v from the analysis (difference %.3g)", name, gv, wv, d)
		}
	}
}

func TestCheckSecondRefusesWhatCannotBeRight(t *testing.T) {
	secs, _ := analyse(t, stereoCall(), talkOver())
	good := secs[3]
	if err := CheckSecond(good, 2, 8000); err != nil {
		t.Fatal(err)
	}
	nan := math.NaN()
	big := 101.0
	for name, edit := range map[string]func(*callv1.SecondAnalysis){
		"end before the second":   func(s *callv1.SecondAnalysis) { s.EndSample = 3 * 8000 },
		"end past the second":     func(s *callv1.SecondAnalysis) { s.EndSample = 5*8000 + 1 },
		"more audio than samples": func(s *callv1.SecondAnalysis) { s.AudioSamples = 8001 },
		"another model":           func(s *callv1.SecondAnalysis) { s.Model.Version = "0.0.1" },
		"one channel":             func(s *callv1.SecondAnalysis) { s.Channels = s.Channels[:1] },
		"score over 100":          func(s *callv1.SecondAnalysis) { s.CallerPressure = &big },
		"score NaN":               func(s *callv1.SecondAnalysis) { s.AgentStress = &nan },
		"talk share over 1":       func(s *callv1.SecondAnalysis) { s.CallerTalk = 1.5 },
		"too many frames":         func(s *callv1.SecondAnalysis) { s.Channels[0].Frames = 101 },
		"speech over frames":      func(s *callv1.SecondAnalysis) { s.Channels[1].SpeechFrames = s.Channels[1].Frames + 1 },
		"power NaN":               func(s *callv1.SecondAnalysis) { s.Channels[0].PowerSum = nan },
		"negative F0 sum":         func(s *callv1.SecondAnalysis) { s.Channels[0].F0SumHz = -1 },
		"F0 bin out of range":     func(s *callv1.SecondAnalysis) { s.Channels[0].F0Bins = append(s.Channels[0].F0Bins, 480) },
		"F0 counts missing":       func(s *callv1.SecondAnalysis) { s.Channels[0].F0Counts = nil },
		"F0 histogram short":      func(s *callv1.SecondAnalysis) { s.Channels[0].VoicedFrames++ },
		"HNR infinite":            func(s *callv1.SecondAnalysis) { s.Channels[1].HnrSumDb = math.Inf(1) },
		"pulses beyond any voice": func(s *callv1.SecondAnalysis) { s.Channels[1].Perturbation = &callv1.PerturbationSums{Pulses: 20000} },
	} {
		bad := proto.Clone(good).(*callv1.SecondAnalysis)
		edit(bad)
		if err := CheckSecond(bad, 2, 8000); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := CheckSecond(nil, 2, 8000); err == nil {
		t.Error("nil: accepted")
	}
}

func FuzzCheckSecond(f *testing.F) {
	secs, _ := analyse(f, stereoCall(), talkOver()[:6*16000])
	for _, s := range secs {
		b, _ := proto.Marshal(s)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var sa callv1.SecondAnalysis
		if proto.Unmarshal(b, &sa) != nil {
			return
		}
		if CheckSecond(&sa, 2, 8000) != nil {
			return
		}
		// Whatever is accepted adds up to measures without NaN counts or
		// a panic.
		sums := NewSums(2)
		sums.Add(&sa, 8000)
		st := sums.Stats([]voice.Role{voice.RoleCaller, voice.RoleAgent}, 8000)
		for _, c := range st.Channels {
			if c.TalkSeconds < 0 || c.TalkSeconds > 1 || c.SilenceSeconds < 0 || math.IsNaN(c.TalkSeconds) {
				t.Fatalf("one second gave talk %v, silence %v", c.TalkSeconds, c.SilenceSeconds)
			}
		}
	})
}

func TestNewAtNumbersSecondsFromThere(t *testing.T) {
	data := talkOver()
	an, _, err := NewAt(stereoCall(), 5*8000+4000, nil)
	if err != nil {
		t.Fatal(err)
	}
	an.Write(data[(5*8000+4000)*2 : 9*16000])
	secs := an.Flush()
	if len(secs) != 4 || secs[0].Index != 5 || secs[0].AudioSamples != 4000 || secs[1].AudioSamples != 8000 || secs[3].EndSample != 9*8000 {
		for _, s := range secs {
			t.Logf("second %d [%d, %d) audio %d", s.Index, s.StartSample, s.EndSample, s.AudioSamples)
		}
		t.Fatalf("an analyser started at 5.5 s and given audio to 9 s: %d seconds; want 5 (half audio) to 8", len(secs))
	}
	if an.Timeline() != 9*8000 {
		t.Errorf("timeline %d; want %d", an.Timeline(), 9*8000)
	}
}

func TestAnalyzerWithSumsDoesNotAllocatePerWrite(t *testing.T) {
	data := talkOver()
	an, _, err := New(stereoCall())
	if err != nil {
		t.Fatal(err)
	}
	off := 0
	step := func() {
		if off+1600 > len(data) {
			off = 0
		}
		an.Write(data[off : off+1600])
		off += 1600
		for _, s := range an.Seconds() {
			if s.Sums.NumChannels != 2 {
				t.Fatalf("second %d without sums", s.Index)
			}
		}
	}
	for range 50 {
		step()
	}
	if n := testing.AllocsPerRun(200, step); n != 0 {
		t.Errorf("a 100 ms write allocates %v times", n)
	}
}

func TestWritesOfAnySizeGiveTheSameSeconds(t *testing.T) {
	// The batch paths write 10 s at a time, live calls 100 ms: the same
	// audio must give the same seconds (on a line with the other party's
	// echo, bleed rejection included) and the same sums.
	data := talkOver()
	run := func(piece int) []Second {
		an, _, err := New(stereoCall())
		if err != nil {
			t.Fatal(err)
		}
		var out []Second
		for off := 0; off < len(data); off += piece {
			an.Write(data[off:min(off+piece, len(data))])
			out = append(out, an.Seconds()...)
		}
		return append(out, an.Flush()...)
	}
	live, batch := run(1600), run(160000)
	if len(live) != 20 || len(batch) != len(live) {
		t.Fatalf("%d seconds written 100 ms at a time, %d 10 s at a time; want 20", len(live), len(batch))
	}
	for i := range live {
		if live[i] != batch[i] {
			t.Errorf("second %d: %+v written 100 ms at a time; %+v 10 s at a time", i, live[i], batch[i])
		}
	}
}

// BenchmarkSecondAnalysis is realtime's extra cost per second of a stereo
// call: the analysis message beside the score, and its encoding.
func BenchmarkSecondAnalysis(b *testing.B) {
	an, _, _ := New(stereoCall())
	data := talkOver()
	var all []Second
	for off := 0; off < len(data); off += 16000 {
		an.Write(data[off:min(off+16000, len(data))])
		all = append(all, an.Seconds()...)
	}
	if len(all) == 0 {
		b.Fatal("no seconds")
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := proto.Marshal(SecondAnalysis(all[i%len(all)])); err != nil {
			b.Fatal(err)
		}
	}
}
