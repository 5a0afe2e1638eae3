package voicecli

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/calmline/calmline/lib/impair"
	"github.com/calmline/calmline/lib/voice"
	"github.com/calmline/calmline/lib/voice/voicetest"
)

// Eval runs "calmline eval": it measures the voice analysis against the
// corpus (shared/corpus: synthetic signals with known truth, Praat's
// measurements, EmoDB calls with segment labels) and prints every figure
// the analysis issue asks for, as a table and as one JSON object on the
// last line. The exit status is 0 when every target is met, 1 when one is
// not, 2 for bad usage or a missing corpus.
func Eval(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("eval", flag.ContinueOnError)
	fs.SetOutput(stderr)
	corpus := fs.String("corpus", "../shared/corpus", "the evaluation corpus")
	jsonOut := fs.String("json", "", "also write the JSON result to this file")
	impairSpec := fs.String("impair", "", "score the EmoDB calls under this line condition only (lib/impair form, e.g. noise=pink:15,seed=2 or bleed=-20:20) instead of the built-in set")
	linesOnly := fs.Bool("lines-only", false, "only the line-condition figures (skip the Praat and synthetic checks)")
	modelFile := fs.String("model", "", "evaluate this model file instead of the built-in model")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: calmline eval [--corpus DIR] [--json FILE] [--impair SPEC] [--lines-only] [--model FILE]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if _, err := os.Stat(filepath.Join(*corpus, "manifest.tsv")); err != nil {
		fmt.Fprintf(stderr, "eval: no corpus at %s: %v\n", *corpus, err)
		return 2
	}
	m := voice.DefaultModel()
	if *modelFile != "" {
		b, err := os.ReadFile(*modelFile)
		if err == nil {
			m, err = voice.ParseModel(b)
		}
		if err != nil {
			fmt.Fprintf(stderr, "eval: %v\n", err)
			return 2
		}
	}
	conds := impair.Conditions()
	if *impairSpec != "" {
		if _, err := impair.Parse(*impairSpec); err != nil {
			fmt.Fprintf(stderr, "eval: --impair: %v\n", err)
			return 2
		}
		conds = []impair.Condition{{Name: *impairSpec, Group: "user", Strength: "user", Spec: *impairSpec}}
	}
	res, err := Evaluate(*corpus, m, EvalOptions{Conditions: conds, LinesOnly: *linesOnly})
	if err != nil {
		fmt.Fprintf(stderr, "eval: %v\n", err)
		return 2
	}
	res.writeTable(stdout)
	b, _ := json.Marshal(res)
	fmt.Fprintf(stdout, "%s\n", b)
	if *jsonOut != "" {
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintf(stderr, "eval: %v\n", err)
			return 2
		}
	}
	if !res.Pass {
		return 1
	}
	return 0
}

// Check is one figure with its target.
type Check struct {
	Name   string    `json:"name"`
	Value  voice.Num `json:"value"`
	Target string    `json:"target"`
	Pass   bool      `json:"pass"`
	Detail string    `json:"detail,omitempty"`
}

// Result is everything Eval measures.
type Result struct {
	Corpus string  `json:"corpus"`
	Model  string  `json:"model"`
	Split  string  `json:"split"`
	Pass   bool    `json:"pass"`
	Checks []Check `json:"checks"`

	SynthF0  []SynthF0Row           `json:"synth_f0"`
	F0Praat  map[string]F0Agreement `json:"f0_vs_praat"`
	Pearson  map[string]PearsonRow  `json:"pearson_vs_praat"`
	Series   []SeriesRow            `json:"synthetic_series"`
	Calls    []CallRow              `json:"calls"`
	Stressed []StressedRow          `json:"stressed_vs_calm"`
	Abstain  []AbstainRow           `json:"abstention"`
	Calib    *Calibration           `json:"calibration"`
	Lines    []LineRow              `json:"line_conditions"`
	Shout    []ShoutRow             `json:"shout_then_quiet"`
}

// EvalOptions select what Evaluate measures.
type EvalOptions struct {
	// Conditions are the line conditions the EmoDB calls are scored under
	// (besides the clean calls).
	Conditions []impair.Condition
	// LinesOnly skips everything but the EmoDB calls and line conditions.
	LinesOnly bool
}

func (r *Result) check(name string, value float64, target string, pass bool, detail string) {
	r.Checks = append(r.Checks, Check{name, voice.Num(value), target, pass, detail})
	if !pass {
		r.Pass = false
	}
}

// SynthF0Row is the F0 of one synthetic file against its known value.
type SynthF0Row struct {
	File       string    `json:"file"`
	ExpectedHz string    `json:"expected_hz"`
	MedianHz   voice.Num `json:"median_hz"`
	ErrPct     voice.Num `json:"median_err_pct"`
	GlideRMSHz voice.Num `json:"glide_rms_hz,omitempty"`
	VoicedFrac voice.Num `json:"voiced_fraction"`
}

// F0Agreement compares F0 tracks with Praat's frame by frame.
type F0Agreement struct {
	Files          int       `json:"files"`
	Frames         int       `json:"frames"`
	BothVoiced     int       `json:"both_voiced"`
	MedianRelErr   voice.Num `json:"median_rel_err_pct"`
	GrossErrPct    voice.Num `json:"gross_err_pct"`
	OctaveDown     int       `json:"octave_down_frames"`
	OctaveUp       int       `json:"octave_up_frames"`
	VoicingAgree   voice.Num `json:"voicing_agreement_pct"`
	VoicedOnlyUs   int       `json:"voiced_only_by_us"`
	VoicedOnlyThem int       `json:"voiced_only_by_praat"`
}

// PearsonRow is the per-file correlation of one measure with Praat's.
type PearsonRow struct {
	Set      string    `json:"set"`
	Key      string    `json:"key"`
	Files    int       `json:"files"`
	R        voice.Num `json:"r"`
	MeanOurs voice.Num `json:"mean_ours"`
	MeanPrat voice.Num `json:"mean_praat"`
}

// SeriesRow is one file of a synthetic jitter, shimmer or SNR series.
type SeriesRow struct {
	Series string    `json:"series"`
	File   string    `json:"file"`
	Key    string    `json:"key"`
	Level  float64   `json:"level"`
	Ours   voice.Num `json:"ours"`
	Praat  voice.Num `json:"praat"`
	DevPct voice.Num `json:"dev_pct"`
}

// CallRow is one EmoDB call's scores by segment label.
type CallRow struct {
	Call              string    `json:"call"`
	AgentEmotional    voice.Num `json:"agent_stress_emotional"`
	AgentNeutral      voice.Num `json:"agent_stress_neutral"`
	CallerAnger       voice.Num `json:"caller_pressure_anger"`
	CallerNeutral     voice.Num `json:"caller_pressure_neutral"`
	AgentSeconds      [2]int    `json:"agent_seconds_emotional_neutral"`
	CallerSeconds     [2]int    `json:"caller_seconds_anger_neutral"`
	AbstainedLabelled int       `json:"labelled_seconds_abstained"`
}

// StressedRow compares a voice/sentence's stressed and calm versions
// scored against the calm one as the stored baseline.
type StressedRow struct {
	Pair     string    `json:"pair"`
	Calm     voice.Num `json:"calm_mean_agent_stress"`
	Stressed voice.Num `json:"stressed_mean_agent_stress"`
}

// AbstainRow is a non-speech signal and how many of its seconds scored.
type AbstainRow struct {
	Signal  string `json:"signal"`
	Seconds int    `json:"seconds"`
	Scored  int    `json:"scored"`
	Reasons string `json:"reasons"`
}

// Evaluate runs every measurement on the corpus at dir.
func Evaluate(dir string, m *voice.Model, opt EvalOptions) (*Result, error) {
	r := &Result{Corpus: dir, Model: m.ID(), Pass: true, F0Praat: map[string]F0Agreement{}, Pearson: map[string]PearsonRow{}}
	praat, err := readPraatFeatures(filepath.Join(dir, "praat", "features.jsonl"))
	if err != nil {
		return nil, err
	}
	split, err := splitNote(dir)
	if err != nil {
		return nil, err
	}
	r.Split = split
	if r.Lines, r.Shout, err = LineConditions(dir, m, opt.Conditions); err != nil {
		return nil, err
	}
	r.lineChecks()
	if opt.LinesOnly {
		return r, r.calls(dir, m)
	}
	if err := r.synthF0(dir); err != nil {
		return nil, err
	}
	if err := r.f0VsPraat(dir); err != nil {
		return nil, err
	}
	if err := r.featuresVsPraat(dir, praat); err != nil {
		return nil, err
	}
	if err := r.calls(dir, m); err != nil {
		return nil, err
	}
	if err := r.stressed(dir, m); err != nil {
		return nil, err
	}
	r.abstention(dir, m)
	if r.Calib, err = Calibrate(dir, m); err != nil {
		return nil, err
	}
	return r, nil
}

// splitNote reads the split columns of the EmoDB labels and segments.
func splitNote(dir string) (string, error) {
	count := map[string]int{}
	for _, f := range []string{"emodb/labels.csv", "emodb/calls/segments.csv"} {
		rows, err := readCSV(filepath.Join(dir, f))
		if err != nil {
			return "", err
		}
		for _, row := range rows {
			count[f+":"+row["split"]]++
		}
	}
	keys := make([]string, 0, len(count))
	for k := range count {
		keys = append(keys, fmt.Sprintf("%s=%d", k, count[k]))
	}
	sort.Strings(keys)
	return strings.Join(keys, " "), nil
}

// analyzeMono runs one mono file through the analysis and returns its
// frames and stats.
func analyzeMono(path string) ([]voice.Frame, voice.ChannelStats, error) {
	rec, err := readRecording(path)
	if err != nil {
		return nil, voice.ChannelStats{}, err
	}
	var frames []voice.Frame
	a := voice.NewAnalyzer(func(f *voice.Frame) { frames = append(frames, *f) }, nil)
	a.Push(rec.Channels()[0])
	a.Flush()
	return frames, a.Stats(), nil
}

// synthF0 checks the median F0 of every synthetic file against the truth,
// and the glide's track.
func (r *Result) synthF0(dir string) error {
	rows, err := readTSV(filepath.Join(dir, "manifest.tsv"))
	if err != nil {
		return err
	}
	worst, worstFile := 0.0, ""
	glideWorst := 0.0
	n := 0
	for _, row := range rows {
		if row["kind"] != "synth" {
			continue
		}
		for _, codec := range []string{"pcm16", "ulaw"} {
			name := "synth/" + row["name"] + "." + codec + ".wav"
			frames, st, err := analyzeMono(filepath.Join(dir, name))
			if err != nil {
				return err
			}
			dur := float64(len(frames)) / voice.FrameRate
			exp := row["expected_f0_hz"]
			out := SynthF0Row{File: name, ExpectedHz: exp, VoicedFrac: st.VoicedFraction, GlideRMSHz: voice.Num(math.NaN())}
			var f0s []float64
			var se float64
			var nse int
			glide := strings.Contains(exp, "t")
			for _, f := range frames {
				// Frames whose analysis windows lie inside the file.
				if !f.Voiced || f.Time < 0.02 || f.Time > dur-0.02 {
					continue
				}
				f0s = append(f0s, float64(f.F0))
				if glide {
					d := float64(f.F0) - (100 + 40*f.Time)
					se += d * d
					nse++
				}
			}
			med := median(f0s)
			out.MedianHz = voice.Num(med)
			if glide {
				rms := math.Sqrt(se / float64(nse))
				out.GlideRMSHz = voice.Num(rms)
				out.ErrPct = voice.Num(math.NaN())
				glideWorst = max(glideWorst, rms)
			} else {
				want, _ := strconv.ParseFloat(exp, 64)
				e := 100 * math.Abs(med-want) / want
				if math.IsNaN(e) {
					e = math.Inf(1)
				}
				out.ErrPct = voice.Num(e)
				if e > worst {
					worst, worstFile = e, name
				}
			}
			n++
			r.SynthF0 = append(r.SynthF0, out)
		}
	}
	r.check("F0 vs truth, synth: worst median error (%)", worst, "≤ 0.5 on every file", worst <= 0.5,
		fmt.Sprintf("%d files; worst %s", n, worstFile))
	r.check("F0 vs truth, glide 100+40t Hz: RMS error (Hz)", glideWorst, "≤ 1", glideWorst <= 1, "pcm16 and ulaw, worse of the two")
	return nil
}

// praatFrame is one row of Praat's frame track.
type praatFrame struct {
	t, f0  float64
	voiced bool
}

func readPraatFrames(path string) ([]praatFrame, error) {
	rows, err := readCSV(path)
	if err != nil {
		return nil, err
	}
	out := make([]praatFrame, 0, len(rows))
	for _, row := range rows {
		t, _ := strconv.ParseFloat(row["time_s"], 64)
		f0, _ := strconv.ParseFloat(row["f0_hz"], 64)
		out = append(out, praatFrame{t, f0, row["voiced"] == "1"})
	}
	return out, nil
}

// agreement accumulates the frame-by-frame comparison with Praat.
type agreement struct {
	rel                                         []float64
	files, frames, both, gross, down, up, agree int
	onlyUs, onlyThem                            int
}

// add compares our frames with Praat's: each Praat frame against our
// frame track at the same time (voicing from the nearest frame, F0
// interpolated between the two neighbouring frames when both are voiced).
func (a *agreement) add(ours []voice.Frame, pr []praatFrame) {
	a.files++
	for _, p := range pr {
		x := p.t*voice.FrameRate - 0.5
		i := int(math.Floor(x))
		if i < 0 || i+1 >= len(ours) {
			continue
		}
		w := x - float64(i)
		near := ours[i]
		if w > 0.5 {
			near = ours[i+1]
		}
		a.frames++
		switch {
		case near.Voiced == p.voiced:
			a.agree++
		case near.Voiced:
			a.onlyUs++
		default:
			a.onlyThem++
		}
		if !near.Voiced || !p.voiced {
			continue
		}
		f := float64(near.F0)
		if ours[i].Voiced && ours[i+1].Voiced {
			f = float64(ours[i].F0)*(1-w) + float64(ours[i+1].F0)*w
		}
		a.both++
		e := math.Abs(f-p.f0) / p.f0
		a.rel = append(a.rel, e)
		if e > 0.2 {
			a.gross++
			if f < p.f0 {
				a.down++
			} else {
				a.up++
			}
		}
	}
}

func (a *agreement) result() F0Agreement {
	return F0Agreement{
		Files: a.files, Frames: a.frames, BothVoiced: a.both,
		MedianRelErr:   voice.Num(100 * median(a.rel)),
		GrossErrPct:    voice.Num(100 * float64(a.gross) / float64(a.both)),
		OctaveDown:     a.down,
		OctaveUp:       a.up,
		VoicingAgree:   voice.Num(100 * float64(a.agree) / float64(a.frames)),
		VoicedOnlyUs:   a.onlyUs,
		VoicedOnlyThem: a.onlyThem,
	}
}

func (r *Result) f0VsPraat(dir string) error {
	var all agreement
	for _, set := range []string{"speech", "emodb/tel"} {
		files, err := filepath.Glob(filepath.Join(dir, set, "*.wav"))
		if err != nil {
			return err
		}
		var a agreement
		for _, f := range files {
			name := strings.TrimSuffix(filepath.Base(f), ".wav")
			pr, err := readPraatFrames(filepath.Join(dir, "praat", "frames", name+".frames.csv"))
			if err != nil {
				return err
			}
			ours, _, err := analyzeMono(f)
			if err != nil {
				return err
			}
			a.add(ours, pr)
			all.add(ours, pr)
		}
		res := a.result()
		r.F0Praat[set] = res
		r.check("F0 vs Praat, "+set+": median relative error (%)", float64(res.MedianRelErr), "≤ 1", res.MedianRelErr <= 1, fmt.Sprintf("%d files, %d frames voiced in both", res.Files, res.BothVoiced))
		r.check("F0 vs Praat, "+set+": gross errors >20% (% of frames)", float64(res.GrossErrPct), "≤ 2", res.GrossErrPct <= 2, fmt.Sprintf("%d down, %d up", res.OctaveDown, res.OctaveUp))
		r.check("F0 vs Praat, "+set+": voicing agreement (%)", float64(res.VoicingAgree), "≥ 90", res.VoicingAgree >= 90, fmt.Sprintf("%d frames; voiced only by us %d, only by Praat %d", res.Frames, res.VoicedOnlyUs, res.VoicedOnlyThem))
	}
	r.F0Praat["all"] = all.result()
	return nil
}

// featuresVsPraat correlates per-file measures with Praat's, and checks the
// synthetic jitter, shimmer and SNR series.
func (r *Result) featuresVsPraat(dir string, praat map[string]map[string]float64) error {
	keys := []string{"jitter_local_pct", "shimmer_local_pct", "hnr_mean_db", "intensity_mean_db",
		"jitter_rap_pct", "shimmer_apq3_pct", "voiced_fraction", "f0_median_hz", "speech_rate_syl_per_s"}
	required := map[string]bool{"jitter_local_pct": true, "shimmer_local_pct": true, "hnr_mean_db": true, "intensity_mean_db": true}
	for _, set := range []string{"speech", "emodb/tel"} {
		files, err := filepath.Glob(filepath.Join(dir, set, "*.wav"))
		if err != nil {
			return err
		}
		ours := map[string][]float64{}
		theirs := map[string][]float64{}
		for _, f := range files {
			_, st, err := analyzeMono(f)
			if err != nil {
				return err
			}
			rel := set + "/" + filepath.Base(f)
			p, ok := praat[rel]
			if !ok {
				return fmt.Errorf("no Praat features for %s", rel)
			}
			vals := statsMap(st)
			for _, k := range keys {
				o, t := vals[k], p[k]
				if math.IsNaN(o) || math.IsNaN(t) {
					continue
				}
				ours[k] = append(ours[k], o)
				theirs[k] = append(theirs[k], t)
			}
		}
		for _, k := range keys {
			row := PearsonRow{Set: set, Key: k, Files: len(ours[k]), R: voice.Num(pearson(ours[k], theirs[k])),
				MeanOurs: voice.Num(mean(ours[k])), MeanPrat: voice.Num(mean(theirs[k]))}
			r.Pearson[set+":"+k] = row
			if set == "speech" && required[k] {
				r.check("Pearson vs Praat, speech files: "+k, float64(row.R), "≥ 0.9", row.R >= 0.9, fmt.Sprintf("%d files", row.Files))
			}
		}
	}

	// Synthetic series.
	series := []struct {
		name, prefix, key string
		levels            []float64
		increasing        bool
	}{
		{"jitter", "jitter_150_", "jitter_local_pct", []float64{0.005, 0.01, 0.02, 0.04}, true},
		{"jitter", "jitter_150_", "jitter_rap_pct", []float64{0.005, 0.01, 0.02, 0.04}, true},
		{"shimmer", "shimmer_150_", "shimmer_local_pct", []float64{0.05, 0.1, 0.2}, true},
		{"shimmer", "shimmer_150_", "shimmer_apq3_pct", []float64{0.05, 0.1, 0.2}, true},
		{"snr", "saw_150_snr", "hnr_mean_db", []float64{20, 10, 5, 0}, false},
	}
	for _, s := range series {
		for _, codec := range []string{"pcm16", "ulaw"} {
			worst := 0.0
			ordered := true
			prev := math.NaN()
			for _, lv := range s.levels {
				name := fmt.Sprintf("synth/%s%s.%s.wav", s.prefix, strconv.FormatFloat(lv, 'f', -1, 64), codec)
				_, st, err := analyzeMono(filepath.Join(dir, name))
				if err != nil {
					return err
				}
				o := statsMap(st)[s.key]
				p := praat[name][s.key]
				dev := 100 * math.Abs(o-p) / math.Abs(p)
				worst = max(worst, dev)
				r.Series = append(r.Series, SeriesRow{s.name, name, s.key, lv, voice.Num(o), voice.Num(p), voice.Num(dev)})
				// Jitter and shimmer rise with the perturbation; HNR falls
				// with the noise (the levels are listed from least noise).
				if !math.IsNaN(prev) && (o <= prev) == s.increasing {
					ordered = false
				}
				prev = o
			}
			label := fmt.Sprintf("synthetic %s series (%s), %s: worst deviation from Praat (%%)", s.name, codec, s.key)
			r.check(label, worst, "≤ 15, same ordering", worst <= 15 && ordered, fmt.Sprintf("ordering as Praat's: %v", ordered))
		}
	}
	return nil
}

func statsMap(st voice.ChannelStats) map[string]float64 {
	return map[string]float64{
		"voiced_fraction": float64(st.VoicedFraction), "f0_median_hz": float64(st.F0MedianHz),
		"jitter_local_pct": float64(st.JitterLocalPct), "jitter_rap_pct": float64(st.JitterRAPPct),
		"shimmer_local_pct": float64(st.ShimmerLocalPct), "shimmer_apq3_pct": float64(st.ShimmerAPQ3Pct),
		"hnr_mean_db": float64(st.HNRMeanDB), "intensity_mean_db": float64(st.IntensityMeanDB),
		"speech_rate_syl_per_s": float64(st.SpeechRate),
	}
}

// segment is one row of emodb/calls/segments.csv.
type segment struct {
	channel    int
	emotion    string
	start, end float64
}

// secondLabel returns the emotion of the channel's segment that overlaps
// second s the most, if it overlaps by at least 0.3 s.
func secondLabel(segs []segment, ch int, s int64) string {
	best, label := 0.3, ""
	t0, t1 := float64(s), float64(s+1)
	for _, g := range segs {
		if g.channel != ch {
			continue
		}
		if ov := math.Min(t1, g.end) - math.Max(t0, g.start); ov >= best {
			best, label = ov, g.emotion
		}
	}
	return label
}

// calls scores the EmoDB calls and computes the per-second AUCs.
func (r *Result) calls(dir string, m *voice.Model) error {
	rows, err := readCSV(filepath.Join(dir, "emodb", "calls", "segments.csv"))
	if err != nil {
		return err
	}
	byCall := map[string][]segment{}
	var names []string
	for _, row := range rows {
		ch, _ := strconv.Atoi(row["channel"])
		t0, _ := strconv.ParseFloat(row["start_s"], 64)
		t1, _ := strconv.ParseFloat(row["end_s"], 64)
		if _, ok := byCall[row["call"]]; !ok {
			names = append(names, row["call"])
		}
		byCall[row["call"]] = append(byCall[row["call"]], segment{ch - 1, row["emotion"], t0, t1})
	}
	sort.Strings(names)
	var agentPos, agentNeg, callerPos, callerNeg []float64
	allHigher := true
	for _, name := range names {
		rec, err := readRecording(filepath.Join(dir, "emodb", "calls", name))
		if err != nil {
			return err
		}
		segs := byCall[name]
		row := CallRow{Call: name}
		var ae, an, ca, cn []float64
		_, err = voice.AnalyzeCall(voice.CallConfig{Model: m, Roles: []voice.Role{voice.RoleCaller, voice.RoleAgent}}, rec.Channels(), func(s *voice.Second) {
			if l := secondLabel(segs, 1, s.Index); l != "" {
				if !s.AgentStress.OK {
					row.AbstainedLabelled++
				} else if l == "neutral" {
					an = append(an, s.AgentStress.Value)
				} else {
					ae = append(ae, s.AgentStress.Value)
				}
			}
			if l := secondLabel(segs, 0, s.Index); l != "" {
				if !s.CallerPressure.OK {
					row.AbstainedLabelled++
				} else if l == "neutral" {
					cn = append(cn, s.CallerPressure.Value)
				} else {
					ca = append(ca, s.CallerPressure.Value)
				}
			}
		})
		if err != nil {
			return err
		}
		row.AgentEmotional, row.AgentNeutral = voice.Num(mean(ae)), voice.Num(mean(an))
		row.CallerAnger, row.CallerNeutral = voice.Num(mean(ca)), voice.Num(mean(cn))
		row.AgentSeconds = [2]int{len(ae), len(an)}
		row.CallerSeconds = [2]int{len(ca), len(cn)}
		if !(row.AgentEmotional > row.AgentNeutral) {
			allHigher = false
		}
		r.Calls = append(r.Calls, row)
		agentPos, agentNeg = append(agentPos, ae...), append(agentNeg, an...)
		callerPos, callerNeg = append(callerPos, ca...), append(callerNeg, cn...)
	}
	n := 0
	for _, c := range r.Calls {
		if c.AgentEmotional > c.AgentNeutral {
			n++
		}
	}
	r.check("EmoDB calls: agent_stress higher in anger/fear than neutral (calls)", float64(n), fmt.Sprintf("all %d", len(r.Calls)), allHigher, "mean per-second score by segment label")
	a := auc(agentPos, agentNeg)
	r.check("EmoDB calls: agent_stress AUC, emotional vs neutral agent seconds", a, "≥ 0.85", a >= 0.85, fmt.Sprintf("%d emotional, %d neutral seconds pooled", len(agentPos), len(agentNeg)))
	c := auc(callerPos, callerNeg)
	r.check("EmoDB calls: caller_pressure AUC, caller anger vs neutral seconds", c, "≥ 0.85", c >= 0.85, fmt.Sprintf("%d anger, %d neutral seconds pooled", len(callerPos), len(callerNeg)))
	return nil
}

// stressed scores every speech/ voice-sentence's calm and stressed files
// against the calm file as the stored baseline.
func (r *Result) stressed(dir string, m *voice.Model) error {
	calm, err := filepath.Glob(filepath.Join(dir, "speech", "*_calm.wav"))
	if err != nil {
		return err
	}
	ok := 0
	for _, c := range calm {
		pair := strings.TrimSuffix(filepath.Base(c), "_calm.wav")
		cr, err := readRecording(c)
		if err != nil {
			return err
		}
		base := voice.BaselineFromRecording(m, cr.Channels()[0])
		meanOf := func(path string) (float64, error) {
			rec, err := readRecording(path)
			if err != nil {
				return 0, err
			}
			var v []float64
			_, err = voice.AnalyzeCall(voice.CallConfig{Model: m, Roles: []voice.Role{voice.RoleAgent}, AgentBaseline: &base}, rec.Channels(), func(s *voice.Second) {
				if s.AgentStress.OK {
					v = append(v, s.AgentStress.Value)
				}
			})
			return mean(v), err
		}
		cm, err := meanOf(c)
		if err != nil {
			return err
		}
		sm, err := meanOf(filepath.Join(dir, "speech", pair+"_stressed.wav"))
		if err != nil {
			return err
		}
		r.Stressed = append(r.Stressed, StressedRow{pair, voice.Num(cm), voice.Num(sm)})
		if sm > cm {
			ok++
		}
	}
	r.check("speech/: stressed scores above calm (calm as --baseline)", float64(ok), fmt.Sprintf("all %d pairs", len(calm)), ok == len(calm), "mean agent_stress over scored seconds")
	return nil
}

// abstention checks that silence and steady tones are not scored.
func (r *Result) abstention(dir string, m *voice.Model) {
	signals := []struct {
		name string
		s    []int16
	}{
		{"digital silence 10 s", voicetest.Silence(10)},
		{"low noise 10 s (-60 dBFS)", voicetest.WithNoise(voicetest.Tone(1000, 0.001, 10), -30, 1)},
		{"425 Hz hold tone 10 s", voicetest.Tone(425, 0.3, 10)},
		{"1 kHz test tone 10 s", voicetest.Tone(1000, 0.5, 10)},
		{"US dial tone 350+440 Hz 10 s", voicetest.Sum(voicetest.Tone(350, 0.25, 10), voicetest.Tone(440, 0.25, 10))},
		{"US ring-back 440+480 Hz, 2 s on 4 s off", ringBack()},
		{"EU busy tone 425 Hz, 0.5 s on/off", pulsed(425, 0.5, 0.5, 10)},
		{"DTMF digits, 100 ms on/off", voicetest.DTMF("0123456789*#0123456789*#0123456789*#0123456789*#", 0.1, 0.1)},
		{"DTMF digits, 250 ms on/off", voicetest.DTMF("5551234567890#", 0.25, 0.25)},
		{"150 Hz sawtooth (synthetic steady voice) 10 s", voicetest.Sawtooth(voicetest.Constant(150), 0.5, 10)},
	}
	total, scored := 0, 0
	for _, sig := range signals {
		for _, role := range []voice.Role{voice.RoleAgent, voice.RoleCaller} {
			row := AbstainRow{Signal: sig.name + " as " + role.String()}
			reasons := map[voice.Reason]int{}
			voice.AnalyzeCall(voice.CallConfig{Model: m, Roles: []voice.Role{role}}, [][]int16{sig.s}, func(s *voice.Second) {
				sc := s.AgentStress
				if role == voice.RoleCaller {
					sc = s.CallerPressure
				}
				row.Seconds++
				if sc.OK {
					row.Scored++
				} else {
					reasons[sc.Reason]++
				}
			})
			var rs []string
			for k, v := range reasons {
				rs = append(rs, fmt.Sprintf("%s×%d", k, v))
			}
			slices.Sort(rs)
			row.Reasons = strings.Join(rs, " ")
			total += row.Seconds
			scored += row.Scored
			r.Abstain = append(r.Abstain, row)
		}
	}
	r.check("silence and steady tones: seconds scored", float64(scored), fmt.Sprintf("0 of %d", total), scored == 0, fmt.Sprintf("%d signals, both roles", len(signals)))
}

func ringBack() []int16 {
	var s []int16
	for range 3 {
		s = append(s, voicetest.Sum(voicetest.Tone(440, 0.25, 2), voicetest.Tone(480, 0.25, 2))...)
		s = append(s, voicetest.Silence(4)...)
	}
	return s
}

func pulsed(f, on, off, dur float64) []int16 {
	var s []int16
	for t := 0.0; t < dur; t += on + off {
		s = append(s, voicetest.Tone(f, 0.3, on)...)
		s = append(s, voicetest.Silence(off)...)
	}
	return s
}

// writeTable prints the checks and the detail tables.
func (r *Result) writeTable(w io.Writer) {
	fmt.Fprintf(w, "calmline voice evaluation — model %s — corpus %s\n", r.Model, r.Corpus)
	fmt.Fprintf(w, "data splits: %s (all corpus data is the dev split: figures are in-sample; see docs/voice-analysis.md)\n\n", r.Split)
	fmt.Fprintf(w, "%-4s  %-78s %10s  %-22s %s\n", "", "figure", "value", "target", "detail")
	for _, c := range r.Checks {
		mark := "PASS"
		if !c.Pass {
			mark = "FAIL"
		}
		fmt.Fprintf(w, "%-4s  %-78s %10s  %-22s %s\n", mark, c.Name, fmtNum(c.Value), c.Target, c.Detail)
	}
	fmt.Fprintf(w, "\nF0 against Praat, frame by frame:\n")
	for _, set := range []string{"speech", "emodb/tel", "all"} {
		a := r.F0Praat[set]
		fmt.Fprintf(w, "  %-10s files %3d  frames %6d  both voiced %6d  median rel err %6s%%  gross %5s%% (down %d, up %d)  voicing agreement %6s%%\n",
			set, a.Files, a.Frames, a.BothVoiced, fmtNum(a.MedianRelErr), fmtNum(a.GrossErrPct), a.OctaveDown, a.OctaveUp, fmtNum(a.VoicingAgree))
	}
	fmt.Fprintf(w, "\nPer-file Pearson correlation with Praat:\n")
	keys := make([]string, 0, len(r.Pearson))
	for k := range r.Pearson {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		p := r.Pearson[k]
		fmt.Fprintf(w, "  %-10s %-24s r %7s  (%d files; mean ours %s, Praat %s)\n", p.Set, p.Key, fmtNum(p.R), p.Files, fmtNum(p.MeanOurs), fmtNum(p.MeanPrat))
	}
	fmt.Fprintf(w, "\nSynthetic series (ours vs Praat):\n")
	for _, s := range r.Series {
		fmt.Fprintf(w, "  %-34s %-18s ours %8s  Praat %8s  dev %6s%%\n", s.File, s.Key, fmtNum(s.Ours), fmtNum(s.Praat), fmtNum(s.DevPct))
	}
	fmt.Fprintf(w, "\nSynthetic F0 against truth:\n")
	for _, s := range r.SynthF0 {
		extra := ""
		if s.GlideRMSHz.Valid() {
			extra = "  glide RMS " + fmtNum(s.GlideRMSHz) + " Hz"
		}
		fmt.Fprintf(w, "  %-40s expected %-7s median %9s  err %7s%%  voiced %s%s\n", s.File, s.ExpectedHz, fmtNum(s.MedianHz), fmtNum(s.ErrPct), fmtNum(s.VoicedFrac), extra)
	}
	fmt.Fprintf(w, "\nEmoDB calls (mean per-second score by segment label):\n")
	for _, c := range r.Calls {
		fmt.Fprintf(w, "  %-26s agent_stress emotional %6s neutral %6s (%d/%d s)   caller_pressure anger %6s neutral %6s (%d/%d s)   abstained %d\n",
			c.Call, fmtNum(c.AgentEmotional), fmtNum(c.AgentNeutral), c.AgentSeconds[0], c.AgentSeconds[1],
			fmtNum(c.CallerAnger), fmtNum(c.CallerNeutral), c.CallerSeconds[0], c.CallerSeconds[1], c.AbstainedLabelled)
	}
	fmt.Fprintf(w, "\nspeech/ stressed vs calm, calm as the stored baseline (mean agent_stress):\n")
	for _, s := range r.Stressed {
		fmt.Fprintf(w, "  %-10s calm %6s  stressed %6s\n", s.Pair, fmtNum(s.Calm), fmtNum(s.Stressed))
	}
	fmt.Fprintf(w, "\nAbstention on non-speech:\n")
	for _, a := range r.Abstain {
		fmt.Fprintf(w, "  %-58s %3d s, scored %d  (%s)\n", a.Signal, a.Seconds, a.Scored, a.Reasons)
	}
	r.writeLines(w)
	if r.Calib != nil {
		r.Calib.write(w)
	}
	verdict := "ALL TARGETS MET"
	if !r.Pass {
		verdict = "SOME TARGETS NOT MET"
	}
	fmt.Fprintf(w, "\n%s\n", verdict)
}

func fmtNum(n voice.Num) string {
	if !n.Valid() {
		return "—"
	}
	return strconv.FormatFloat(float64(n), 'f', 3, 64)
}

// Statistics.

func median(x []float64) float64 {
	if len(x) == 0 {
		return math.NaN()
	}
	s := slices.Clone(x)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func mean(x []float64) float64 {
	if len(x) == 0 {
		return math.NaN()
	}
	var s float64
	for _, v := range x {
		s += v
	}
	return s / float64(len(x))
}

func pearson(x, y []float64) float64 {
	if len(x) < 3 {
		return math.NaN()
	}
	mx, my := mean(x), mean(y)
	var sxy, sxx, syy float64
	for i := range x {
		sxy += (x[i] - mx) * (y[i] - my)
		sxx += (x[i] - mx) * (x[i] - mx)
		syy += (y[i] - my) * (y[i] - my)
	}
	return sxy / math.Sqrt(sxx*syy)
}

// auc is the probability that a random positive scores above a random
// negative (ties count half): the Mann–Whitney statistic.
func auc(pos, neg []float64) float64 {
	if len(pos) == 0 || len(neg) == 0 {
		return math.NaN()
	}
	var s float64
	for _, p := range pos {
		for _, n := range neg {
			switch {
			case p > n:
				s++
			case p == n:
				s += 0.5
			}
		}
	}
	return s / float64(len(pos)*len(neg))
}

// File formats.

func readPraatFeatures(path string) (map[string]map[string]float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]map[string]float64{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		vals := map[string]float64{}
		for k, v := range m {
			switch x := v.(type) {
			case float64:
				vals[k] = x
			case nil:
				vals[k] = math.NaN()
			}
		}
		name, _ := m["file"].(string)
		out[name] = vals
	}
	return out, sc.Err()
}

func readDelimited(path string, sep string) ([]map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) == 0 {
		return nil, fmt.Errorf("%s: empty", path)
	}
	head := strings.Split(lines[0], sep)
	var out []map[string]string
	for _, l := range lines[1:] {
		cells := strings.Split(l, sep)
		row := map[string]string{}
		for i, h := range head {
			if i < len(cells) {
				row[h] = cells[i]
			}
		}
		out = append(out, row)
	}
	return out, nil
}

func readCSV(path string) ([]map[string]string, error) { return readDelimited(path, ",") }
func readTSV(path string) ([]map[string]string, error) { return readDelimited(path, "\t") }
