package voicecli

import (
	"fmt"
	"io"
	"math"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/calmline/calmline/lib/impair"
	"github.com/calmline/calmline/lib/voice"
)

// Line conditions: the EmoDB calls passed through telephone-line
// impairments (lib/impair), scored, and summarised per condition.

// LineRow is the scores on the EmoDB calls under one line condition.
type LineRow struct {
	Condition string `json:"condition"`
	Group     string `json:"group"`
	Strength  string `json:"strength"`
	Spec      string `json:"spec"`
	LineFigures
	Female LineFigures `json:"female"`
	Male   LineFigures `json:"male"`
}

// LineFigures are the per-second figures of one condition (or one sex).
type LineFigures struct {
	AgentAUC  voice.Num `json:"agent_stress_auc"`
	CallerAUC voice.Num `json:"caller_pressure_auc"`
	// Shares of scored calm (neutral) seconds at or above the alert level
	// (70), and of scored emotional seconds, per score.
	AgentCalmHigh  voice.Num `json:"agent_calm_ge70"`
	CallerCalmHigh voice.Num `json:"caller_calm_ge70"`
	AgentHits      voice.Num `json:"agent_emotional_ge70"`
	CallerHits     voice.Num `json:"caller_emotional_ge70"`
	// Abstain is the share of labelled speech seconds (either party; the
	// party's segments cover at least half the second) whose score was
	// withheld.
	Abstain voice.Num `json:"abstain"`
	// Leak: agent_stress in seconds where only the caller speaks — the
	// share scored, the share ≥ 70, and the AUC of caller anger against
	// caller neutral as agent_stress sees it (0.5: no leak).
	LeakScored voice.Num `json:"leak_scored"`
	LeakHigh   voice.Num `json:"leak_ge70"`
	LeakAUC    voice.Num `json:"leak_auc"`
	// Calm callers' mean caller_pressure.
	CallerCalmMean voice.Num `json:"caller_calm_mean"`
	Seconds        int       `json:"labelled_seconds"`
}

// ShoutRow: a caller who shouts, then speaks 25 dB more quietly.
type ShoutRow struct {
	Condition    string    `json:"condition"`
	QuietSeconds int       `json:"quiet_seconds"`
	QuietScored  voice.Num `json:"quiet_scored"`
	LoudScored   voice.Num `json:"loud_scored"`
}

// evalCall is one EmoDB call, decoded once.
type evalCall struct {
	name     string
	chans    [][]int16
	segs     []segment
	gender   [2]string // caller, agent
	speakers [2]string
	babble   []int16 // other speakers' speech
}

// secondRec is one labelled second of a scored call.
type secondRec struct {
	agentLabel, callerLabel string
	// The party's segment covers at least half of the second (abstention
	// is counted on these: a second with 0.3 s of speech at a turn edge
	// may rightly have too little voiced speech).
	agentMostly, callerMostly bool
	agentSex, callerSex       string
	agent, caller             voice.Score
}

func loadCalls(dir string) ([]evalCall, error) {
	rows, err := readCSV(filepath.Join(dir, "emodb", "calls", "segments.csv"))
	if err != nil {
		return nil, err
	}
	labels, err := readCSV(filepath.Join(dir, "emodb", "labels.csv"))
	if err != nil {
		return nil, err
	}
	byName := map[string]*evalCall{}
	var names []string
	for _, row := range rows {
		ch, _ := strconv.Atoi(row["channel"])
		t0, _ := strconv.ParseFloat(row["start_s"], 64)
		t1, _ := strconv.ParseFloat(row["end_s"], 64)
		c := byName[row["call"]]
		if c == nil {
			c = &evalCall{name: row["call"]}
			byName[row["call"]] = c
			names = append(names, row["call"])
		}
		c.segs = append(c.segs, segment{ch - 1, row["emotion"], t0, t1})
		c.gender[ch-1] = row["gender"]
		c.speakers[ch-1] = row["speaker"]
	}
	sort.Strings(names)
	// Babble material: each speaker's neutral utterances.
	bySpeaker := map[string][]int16{}
	for _, l := range labels {
		if l["emotion"] != "neutral" {
			continue
		}
		rec, err := readRecording(filepath.Join(dir, "emodb", l["file"]))
		if err != nil {
			return nil, err
		}
		bySpeaker[l["speaker"]] = append(bySpeaker[l["speaker"]], rec.Channels()[0]...)
	}
	spk := make([]string, 0, len(bySpeaker))
	for s := range bySpeaker {
		spk = append(spk, s)
	}
	sort.Strings(spk)
	out := make([]evalCall, 0, len(names))
	for _, n := range names {
		c := byName[n]
		rec, err := readRecording(filepath.Join(dir, "emodb", "calls", n))
		if err != nil {
			return nil, err
		}
		c.chans = rec.Channels()
		for _, s := range spk {
			if s != c.speakers[0] && s != c.speakers[1] {
				c.babble = append(c.babble, bySpeaker[s]...)
			}
		}
		out = append(out, *c)
	}
	return out, nil
}

// scoreCall analyses one call's channels and returns its labelled seconds.
func scoreCall(m *voice.Model, c *evalCall, chans [][]int16) ([]secondRec, error) {
	var recs []secondRec
	_, err := voice.AnalyzeCall(voice.CallConfig{Model: m, Roles: []voice.Role{voice.RoleCaller, voice.RoleAgent}}, chans, func(s *voice.Second) {
		r := secondRec{
			agentLabel:  secondLabel(c.segs, 1, s.Index),
			callerLabel: secondLabel(c.segs, 0, s.Index),
			agentMostly: coverage(c.segs, 1, s.Index) >= 0.5, callerMostly: coverage(c.segs, 0, s.Index) >= 0.5,
			callerSex: c.gender[0], agentSex: c.gender[1],
			agent: s.AgentStress, caller: s.CallerPressure,
		}
		if r.agentLabel != "" || r.callerLabel != "" {
			recs = append(recs, r)
		}
	})
	return recs, err
}

// coverage returns how much of second s the channel's segments cover.
func coverage(segs []segment, ch int, s int64) float64 {
	var c float64
	t0, t1 := float64(s), float64(s+1)
	for _, g := range segs {
		if g.channel == ch {
			c += max(0, math.Min(t1, g.end)-math.Max(t0, g.start))
		}
	}
	return c
}

// figures computes the figures over labelled seconds; sex, if not empty,
// keeps only the seconds of speakers of that sex.
func figures(recs []secondRec, sex string) LineFigures {
	var ap, an, cp, cn, lp, ln []float64
	var labelled, abstained, callerOnly, leakScored int
	for _, r := range recs {
		if r.agentLabel != "" && (sex == "" || r.agentSex == sex) {
			if r.agentMostly {
				labelled++
			}
			switch {
			case !r.agent.OK:
				if r.agentMostly {
					abstained++
				}
			case r.agentLabel == "neutral":
				an = append(an, r.agent.Value)
			default:
				ap = append(ap, r.agent.Value)
			}
		}
		if r.callerLabel != "" && (sex == "" || r.callerSex == sex) {
			if r.callerMostly {
				labelled++
			}
			switch {
			case !r.caller.OK:
				if r.callerMostly {
					abstained++
				}
			case r.callerLabel == "neutral":
				cn = append(cn, r.caller.Value)
			default:
				cp = append(cp, r.caller.Value)
			}
			if r.agentLabel == "" {
				callerOnly++
				if r.agent.OK {
					leakScored++
					if r.callerLabel == "neutral" {
						ln = append(ln, r.agent.Value)
					} else {
						lp = append(lp, r.agent.Value)
					}
				}
			}
		}
	}
	return LineFigures{
		AgentAUC: voice.Num(auc(ap, an)), CallerAUC: voice.Num(auc(cp, cn)),
		AgentCalmHigh: share70(an), CallerCalmHigh: share70(cn),
		AgentHits: share70(ap), CallerHits: share70(cp),
		Abstain:    voice.Num(ratioOr(abstained, labelled)),
		LeakScored: voice.Num(ratioOr(leakScored, callerOnly)),
		LeakHigh:   share70(append(lp, ln...)),
		LeakAUC:    voice.Num(auc(lp, ln)),
		// The calm callers' mean.
		CallerCalmMean: voice.Num(mean(cn)),
		Seconds:        labelled,
	}
}

func share70(x []float64) voice.Num {
	if len(x) == 0 {
		return voice.Num(math.NaN())
	}
	n := 0
	for _, v := range x {
		if v >= 70 {
			n++
		}
	}
	return voice.Num(float64(n) / float64(len(x)))
}

func ratioOr(a, b int) float64 {
	if b == 0 {
		return math.NaN()
	}
	return float64(a) / float64(b)
}

// LineConditions scores the EmoDB calls under every condition (the clean
// calls first), in parallel.
func LineConditions(dir string, m *voice.Model, conds []impair.Condition) ([]LineRow, []ShoutRow, error) {
	calls, err := loadCalls(dir)
	if err != nil {
		return nil, nil, err
	}
	conds = append([]impair.Condition{{Name: "clean", Group: "clean", Strength: "clean", Spec: "clean"}}, conds...)
	type job struct{ cond, call int }
	recs := make([][][]secondRec, len(conds))
	for i := range recs {
		recs[i] = make([][]secondRec, len(calls))
	}
	errs := make([]error, len(conds))
	jobs := make(chan job)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for j := range jobs {
				c := &calls[j.call]
				spec, err := impair.Parse(conds[j.cond].Spec)
				if err == nil {
					spec.BabbleSource = c.babble
					var x [][]int16
					if x, err = impair.Apply(c.chans, spec); err == nil {
						recs[j.cond][j.call], err = scoreCall(m, c, x)
					}
				}
				if err != nil {
					errs[j.cond] = fmt.Errorf("%s on %s: %w", conds[j.cond].Name, c.name, err)
				}
			}
		})
	}
	for i := range conds {
		for k := range calls {
			jobs <- job{i, k}
		}
	}
	close(jobs)
	wg.Wait()
	var rows []LineRow
	for i, cd := range conds {
		if errs[i] != nil {
			return nil, nil, errs[i]
		}
		var all []secondRec
		for _, r := range recs[i] {
			all = append(all, r...)
		}
		rows = append(rows, LineRow{Condition: cd.Name, Group: cd.Group, Strength: cd.Strength, Spec: cd.Spec,
			LineFigures: figures(all, ""), Female: figures(all, "female"), Male: figures(all, "male")})
	}
	shout, err := shoutThenQuiet(calls, m)
	return rows, shout, err
}

// shoutThenQuiet attenuates the caller's later (neutral) segments by 25 dB
// — a caller who shouts, then speaks quietly — and reports the share of
// the quiet seconds scored (seconds the caller's segments cover at least
// half of); also with 20 dB and with pink noise 40 dB below the shouting.
func shoutThenQuiet(calls []evalCall, m *voice.Model) ([]ShoutRow, error) {
	var rows []ShoutRow
	for _, v := range []struct {
		name  string
		dB    float64
		noise string
	}{{"quiet 25 dB", 25, ""}, {"quiet 20 dB", 20, ""}, {"quiet 25 dB + pink noise 40 dB below the shouting", 25, "noise=pink:40,seed=2"}} {
		var quiet, quietOK, loud, loudOK int
		for i := range calls {
			c := &calls[i]
			x := [][]int16{append([]int16(nil), c.chans[0]...), c.chans[1]}
			g := math.Pow(10, -v.dB/20)
			for _, s := range c.segs {
				if s.channel != 0 || s.emotion != "neutral" {
					continue
				}
				for j := int(s.start * voice.SampleRate); j < min(int(s.end*voice.SampleRate)+400, len(x[0])); j++ {
					x[0][j] = int16(float64(x[0][j]) * g)
				}
			}
			if v.noise != "" {
				spec, _ := impair.Parse(v.noise)
				var err error
				if x, err = impair.Apply(x, spec); err != nil {
					return nil, err
				}
			}
			recs, err := scoreCall(m, c, x)
			if err != nil {
				return nil, err
			}
			for _, r := range recs {
				if !r.callerMostly {
					continue // a turn edge: too little speech may rightly abstain
				}
				switch r.callerLabel {
				case "":
				case "neutral":
					quiet++
					if r.caller.OK {
						quietOK++
					}
				default:
					loud++
					if r.caller.OK {
						loudOK++
					}
				}
			}
		}
		rows = append(rows, ShoutRow{v.name, quiet, voice.Num(ratioOr(quietOK, quiet)), voice.Num(ratioOr(loudOK, loud))})
	}
	return rows, nil
}

// lineChecks adds the targets for line conditions to r.
func (r *Result) lineChecks() {
	for _, row := range r.Lines {
		switch row.Strength {
		case "clean":
			r.check("clean calls: agent_stress AUC", float64(row.AgentAUC), "≥ 0.95", row.AgentAUC >= 0.95, "")
			r.check("clean calls: caller_pressure AUC", float64(row.CallerAUC), "≥ 0.95", row.CallerAUC >= 0.95, "")
			r.check("clean calls: calm agent seconds ≥ 70 (share)", float64(row.AgentCalmHigh), "≤ 0.05", row.AgentCalmHigh <= 0.05, "")
			r.check("clean calls: calm caller seconds ≥ 70 (share)", float64(row.CallerCalmHigh), "≤ 0.05", row.CallerCalmHigh <= 0.05, "")
			d := math.Abs(float64(row.Female.CallerCalmMean - row.Male.CallerCalmMean))
			r.check("clean calls: calm callers, |female − male| mean caller_pressure", d, "≤ 10", d <= 10,
				fmt.Sprintf("female %s, male %s", fmtNum(row.Female.CallerCalmMean), fmtNum(row.Male.CallerCalmMean)))
		case "middle":
			if row.Group == "band" || row.Group == "codec" {
				continue // reported, not among the middle-strength targets
			}
			n := row.Condition + ": "
			worstAUC := min(float64(row.AgentAUC), float64(row.CallerAUC))
			r.check(n+"both AUCs (worse)", worstAUC, "≥ 0.90", worstAUC >= 0.90, fmt.Sprintf("agent %s caller %s", fmtNum(row.AgentAUC), fmtNum(row.CallerAUC)))
			calm := max(float64(row.AgentCalmHigh), float64(row.CallerCalmHigh))
			r.check(n+"calm seconds ≥ 70 (worse score)", calm, "≤ 0.05", calm <= 0.05, fmt.Sprintf("agent %s caller %s", fmtNum(row.AgentCalmHigh), fmtNum(row.CallerCalmHigh)))
			hits := min(float64(row.AgentHits), float64(row.CallerHits))
			r.check(n+"emotional seconds ≥ 70 (worse score)", hits, "≥ 0.60", hits >= 0.60, fmt.Sprintf("agent %s caller %s", fmtNum(row.AgentHits), fmtNum(row.CallerHits)))
			r.check(n+"labelled speech seconds abstaining", float64(row.Abstain), "≤ 0.10", row.Abstain <= 0.10, "")
			if row.Group == "bleed" {
				ok := row.LeakScored <= 0.10 || !row.LeakAUC.Valid() || row.LeakAUC <= 0.60
				r.check(n+"agent_stress in caller-only seconds: AUC", float64(row.LeakAUC), "abstains or ≤ 0.60", ok, fmt.Sprintf("scored %s", fmtNum(row.LeakScored)))
			}
		case "strong":
			calm := max(float64(row.AgentCalmHigh), float64(row.CallerCalmHigh))
			if row.Group == "noise-pink" || row.Group == "noise-babble" || row.Group == "bleed" || strings.HasPrefix(row.Group, "gain") {
				r.check(row.Condition+": calm seconds ≥ 70 (worse score)", calm, "≤ 0.10", calm <= 0.10, fmt.Sprintf("agent %s caller %s", fmtNum(row.AgentCalmHigh), fmtNum(row.CallerCalmHigh)))
			}
		}
	}
	for _, s := range r.Shout {
		if s.Condition == "quiet 25 dB" {
			r.check("caller shouts, then speaks 25 dB quieter: quiet seconds scored", float64(s.QuietScored), "≥ 0.90", s.QuietScored >= 0.90, fmt.Sprintf("%d quiet seconds", s.QuietSeconds))
		}
	}
}

// writeLines prints the line-condition table.
func (r *Result) writeLines(w io.Writer) {
	fmt.Fprintf(w, "\nLine conditions (EmoDB calls through lib/impair; per-second figures; ≥70 = alert level; F/M = speaker sex):\n")
	fmt.Fprintf(w, "  %-44s %-7s %6s %6s | %6s %6s | %6s %6s | %6s | %6s %6s %6s | %6s %6s\n",
		"condition", "str", "aAUC", "cAUC", "aCalm", "cCalm", "aHit", "cHit", "abst", "leakS", "leak70", "leakAUC", "cCalmF", "cCalmM")
	for _, l := range r.Lines {
		fmt.Fprintf(w, "  %-44s %-7s %6s %6s | %6s %6s | %6s %6s | %6s | %6s %6s %6s | %6s %6s\n",
			l.Condition, l.Strength, f2(l.AgentAUC), f2(l.CallerAUC), pct(l.AgentCalmHigh), pct(l.CallerCalmHigh),
			pct(l.AgentHits), pct(l.CallerHits), pct(l.Abstain), pct(l.LeakScored), pct(l.LeakHigh), f2(l.LeakAUC),
			f1(l.Female.CallerCalmMean), f1(l.Male.CallerCalmMean))
	}
	fmt.Fprintf(w, "\n  by sex (F / M): AUC agent, AUC caller, calm ≥70 agent, calm ≥70 caller, abstain\n")
	for _, l := range r.Lines {
		fmt.Fprintf(w, "  %-44s %s/%s %s/%s %s/%s %s/%s %s/%s\n", l.Condition,
			f2(l.Female.AgentAUC), f2(l.Male.AgentAUC), f2(l.Female.CallerAUC), f2(l.Male.CallerAUC),
			pct(l.Female.AgentCalmHigh), pct(l.Male.AgentCalmHigh), pct(l.Female.CallerCalmHigh), pct(l.Male.CallerCalmHigh),
			pct(l.Female.Abstain), pct(l.Male.Abstain))
	}
	fmt.Fprintf(w, "\nShout, then quiet (the caller's neutral segments attenuated):\n")
	for _, s := range r.Shout {
		fmt.Fprintf(w, "  %-52s quiet seconds %3d, scored %s; loud seconds scored %s\n", s.Condition, s.QuietSeconds, pct(s.QuietScored), pct(s.LoudScored))
	}
}

func f2(n voice.Num) string {
	if !n.Valid() {
		return "—"
	}
	return strconv.FormatFloat(float64(n), 'f', 3, 64)
}

func f1(n voice.Num) string {
	if !n.Valid() {
		return "—"
	}
	return strconv.FormatFloat(float64(n), 'f', 1, 64)
}

func pct(n voice.Num) string {
	if !n.Valid() {
		return "—"
	}
	return strconv.FormatFloat(100*float64(n), 'f', 1, 64) + "%"
}
