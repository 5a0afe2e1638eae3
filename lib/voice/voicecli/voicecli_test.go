package voicecli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/impair"
	"github.com/calmline/calmline/lib/voice"
	"github.com/calmline/calmline/lib/voice/voicetest"
)

// writeWAV writes channels as a μ-law WAV file and returns its path.
func writeWAV(t *testing.T, name string, chans ...[]int16) string {
	t.Helper()
	pcm := chans[0]
	if len(chans) == 2 {
		pcm = audio.Interleave(nil, chans...)
	}
	f := audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: len(chans)}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, audio.EncodeWAV(f, audio.Encode(nil, pcm, audio.CodecPCMU)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func keys(m map[string]any) []string {
	var k []string
	for key := range m {
		k = append(k, key)
	}
	slices.Sort(k)
	return k
}

func run(t *testing.T, args ...string) (int, []map[string]any, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	status := Analyze(args, &out, &errOut)
	var objs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("output line is not JSON: %v: %s", err, line)
		}
		objs = append(objs, m)
	}
	return status, objs, errOut.String()
}

func TestAnalyzeStereoKeys(t *testing.T) {
	caller := voicetest.Voice{F0: 210, Range: 3, Rate: 5, Level: -16, Dur: 3, Seed: 1}.Generate()
	agent := voicetest.Voice{F0: 115, Range: 2, Rate: 4, Level: -20, Dur: 3, Seed: 2}.Generate()
	path := writeWAV(t, "call.wav", caller, agent)
	status, objs, stderr := run(t, "--frames", path)
	if status != 0 || len(objs) != 1 {
		t.Fatalf("status %d, %d objects, stderr %q", status, len(objs), stderr)
	}
	o := objs[0]
	if got, want := keys(o), []string{"channels", "codec", "duration_s", "file", "model", "sample_rate_hz"}; !slices.Equal(got, want) {
		t.Errorf("top-level keys %v; want %v", got, want)
	}
	if o["codec"] != "pcmu" || o["sample_rate_hz"] != 8000.0 || o["duration_s"] != 3.0 || o["model"] != voice.DefaultModel().ID() {
		t.Errorf("file fields: %v", o)
	}
	chans := o["channels"].([]any)
	wantKeys := []string{"f0_mean_hz", "f0_median_hz", "f0_p05_hz", "f0_p95_hz", "f0_sd_hz", "frames", "hnr_mean_db", "index",
		"intensity_mean_db", "jitter_local_pct", "jitter_rap_pct", "role", "shimmer_apq3_pct", "shimmer_local_pct",
		"speech_rate_syl_per_s", "timeline", "voiced_fraction"}
	for i, role := range []string{"caller", "agent"} {
		ch := chans[i].(map[string]any)
		if got := keys(ch); !slices.Equal(got, wantKeys) {
			t.Errorf("channel %d keys %v; want %v", i, got, wantKeys)
		}
		if ch["role"] != role || ch["index"] != float64(i) {
			t.Errorf("channel %d: role %v index %v; want %s", i, ch["role"], ch["index"], role)
		}
		score := map[string]string{"caller": "caller_pressure", "agent": "agent_stress"}[role]
		tl := ch["timeline"].([]any)
		if len(tl) != 3 {
			t.Fatalf("channel %d: %d timeline points for 3 s", i, len(tl))
		}
		for s, p := range tl {
			pt := p.(map[string]any)
			if got := keys(pt); !slices.Equal(got, []string{score, "t_s"}) || pt["t_s"] != float64(s) {
				t.Errorf("channel %d timeline point %v", i, pt)
			}
		}
		frames := ch["frames"].([]any)
		if len(frames) != 300 {
			t.Fatalf("channel %d: %d frames for 3 s; want 300", i, len(frames))
		}
		f := frames[150].(map[string]any)
		if got := keys(f); !slices.Equal(got, []string{"f0_hz", "intensity_db", "t_s", "voiced"}) || f["t_s"] != 1.505 {
			t.Errorf("frame %v", f)
		}
	}
	if m := chans[0].(map[string]any)["f0_median_hz"].(float64); m < 190 || m > 230 {
		t.Errorf("caller F0 median %.1f Hz; want about 210", m)
	}
}

func TestAnalyzeMonoAndRoles(t *testing.T) {
	path := writeWAV(t, "agent.wav", voicetest.Voice{F0: 120, Range: 2, Rate: 4, Level: -20, Dur: 2, Seed: 3}.Generate())
	_, objs, _ := run(t, path)
	ch := objs[0]["channels"].([]any)
	if len(ch) != 1 || ch[0].(map[string]any)["role"] != "agent" {
		t.Errorf("mono file: channels %v; want one agent channel", ch)
	}
	_, objs, _ = run(t, "--roles", "caller", path)
	if r := objs[0]["channels"].([]any)[0].(map[string]any)["role"]; r != "caller" {
		t.Errorf("--roles caller: role %v", r)
	}
	// Too many roles for a mono file is that file's error.
	status, objs, _ := run(t, "--roles", "caller,agent", path)
	if status != 1 || objs[0]["error"] == nil {
		t.Errorf("two roles for a mono file: status %d, %v", status, objs)
	}
}

func TestAnalyzeBadFilesDoNotStopTheOthers(t *testing.T) {
	good := writeWAV(t, "good.wav", voicetest.Voice{F0: 120, Range: 2, Rate: 4, Level: -20, Dur: 1, Seed: 4}.Generate())
	junk := filepath.Join(t.TempDir(), "junk.wav")
	os.WriteFile(junk, []byte("RIFF....WAVEjunk"), 0o644)
	status, objs, _ := run(t, junk, good, filepath.Join(t.TempDir(), "missing.wav"))
	if status != 1 || len(objs) != 3 {
		t.Fatalf("status %d, %d objects; want 1 and 3", status, len(objs))
	}
	for _, i := range []int{0, 2} {
		if got := keys(objs[i]); !slices.Equal(got, []string{"error", "file"}) || objs[i]["error"] == "" {
			t.Errorf("bad file %d: %v", i, objs[i])
		}
	}
	if objs[1]["error"] != nil || objs[1]["file"] != good {
		t.Errorf("good file after a bad one: %v", objs[1])
	}
}

func TestAnalyzeBaselineAndUsage(t *testing.T) {
	calm := writeWAV(t, "calm.wav", voicetest.Voice{F0: 120, Range: 2, Rate: 4, Level: -20, Dur: 6, Seed: 5}.Generate())
	raised := writeWAV(t, "raised.wav", voicetest.Voice{F0: 160, Range: 4, Rate: 5.5, Level: -12, Dur: 6, Seed: 6}.Generate())
	mean := func(o map[string]any) float64 {
		var s float64
		n := 0
		for _, p := range o["channels"].([]any)[0].(map[string]any)["timeline"].([]any) {
			if v, ok := p.(map[string]any)["agent_stress"].(float64); ok {
				s += v
				n++
			}
		}
		return s / float64(n)
	}
	status, objs, stderr := run(t, "--baseline", calm, calm, raised)
	if status != 0 {
		t.Fatalf("status %d: %s", status, stderr)
	}
	if c, r := mean(objs[0]), mean(objs[1]); r <= c+20 {
		t.Errorf("with the calm file as baseline: calm %.1f, raised %.1f; want raised clearly higher", c, r)
	}
	for _, args := range [][]string{nil, {"--roles", "supervisor", calm}, {"--baseline", "/nonexistent.wav", calm}, {"--model", "/nonexistent.json", calm}} {
		var out, errOut bytes.Buffer
		if s := Analyze(args, &out, &errOut); s != 2 {
			t.Errorf("analyze %v: status %d; want 2", args, s)
		}
	}
}

func TestEvalNeedsACorpus(t *testing.T) {
	var out, errOut bytes.Buffer
	if s := Eval([]string{"--corpus", filepath.Join(t.TempDir(), "none")}, &out, &errOut); s != 2 || !strings.Contains(errOut.String(), "no corpus") {
		t.Errorf("eval without a corpus: status %d, %q", s, errOut.String())
	}
}

// TestEvalOnTheCorpus runs the whole evaluation when the corpus is there
// (shared/corpus next to the repository); every target must be met.
func TestEvalOnTheCorpus(t *testing.T) {
	dir := os.Getenv("CORPUS")
	if dir == "" {
		dir = "../../../../shared/corpus"
	}
	if _, err := os.Stat(filepath.Join(dir, "manifest.tsv")); err != nil {
		t.Skipf("corpus not available: %v", err)
	}
	if testing.Short() {
		t.Skip("short mode")
	}
	// The conditions the issue sets targets for (middle and strong noise,
	// bleed, gain, loss); make eval prints the full table.
	var conds []impair.Condition
	for _, c := range impair.Conditions() {
		if (c.Strength == "middle" || c.Strength == "strong") && c.Group != "band" && c.Group != "codec" {
			conds = append(conds, c)
		}
	}
	res, err := Evaluate(dir, voice.DefaultModel(), EvalOptions{Conditions: conds})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range res.Checks {
		if c.Pass {
			continue
		}
		// The targets model 2.0.0 misses, with the figure measured when
		// it was made (docs/voice-analysis.md §5): they must not get
		// worse.
		if bound, ok := knownGaps[c.Name]; ok {
			worse := float64(c.Value) > bound+5e-4
			if strings.HasPrefix(c.Target, "≥") {
				worse = float64(c.Value) < bound-5e-4
			}
			if worse {
				t.Errorf("%s: %v, worse than the known gap %v (target %s) %s", c.Name, float64(c.Value), bound, c.Target, c.Detail)
			} else {
				t.Logf("known gap: %s: %v (target %s)", c.Name, float64(c.Value), c.Target)
			}
			continue
		}
		t.Errorf("%s: %v (target %s) %s", c.Name, float64(c.Value), c.Target, c.Detail)
	}
}

// knownGaps are the issue-13 targets model 2.0.0 does not meet on the dev
// corpus, with the figure it reached (a bound the test holds it to). None
// since §7a items 16 and 17 (pink 15 dB abstention, babble 15 and 10 dB
// calm seconds ≥ 70 are asserted targets now).
var knownGaps = map[string]float64{}

func TestImpairCommand(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.wav")
	c := voicetest.Voice{F0: 200, Range: 3, Rate: 4, Level: -20, Dur: 2, Seed: 1}.Generate()
	a := voicetest.Voice{F0: 120, Range: 3, Rate: 4, Level: -20, Dur: 2, Seed: 2}.Generate()
	f := audio.Format{Codec: audio.CodecL16, SampleRate: 8000, Channels: 2}
	if err := os.WriteFile(in, audio.EncodeWAV(f, audio.Encode(nil, audio.Interleave(nil, c, a), audio.CodecL16)), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.wav")
	var so, se strings.Builder
	if code := Impair([]string{"--spec", "gain=-6:0,seed=3", in, out}, &so, &se); code != 0 {
		t.Fatalf("impair = %d: %s", code, se.String())
	}
	rec, err := readRecording(out)
	if err != nil {
		t.Fatal(err)
	}
	got := rec.Channels()
	if len(got) != 2 || len(got[0]) != len(c) {
		t.Fatalf("output: %d channels of %d samples", len(got), len(got[0]))
	}
	d := impair.ActiveLevelDB(impair.Float(got[0])) - impair.ActiveLevelDB(impair.Float(c))
	if d < -6.1 || d > -5.9 {
		t.Errorf("caller channel %+.2f dB; want -6", d)
	}
	for _, bad := range [][]string{{in, out}, {"--spec", "noise=babble:10", in, out}, {"--spec", "noise=loud:10", in, out}} {
		if code := Impair(bad, &so, &se); code != 2 {
			t.Errorf("impair %v = %d; want 2", bad, code)
		}
	}
}
