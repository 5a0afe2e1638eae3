// Package voicecli implements the voice-analysis subcommands of the
// calmline binary: analyze (whole-file analysis, one JSON object per file)
// and eval (the evaluation against the corpus in shared/corpus). The
// command in cmd/calmline only registers them.
package voicecli

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strings"

	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/voice"
)

// maxFileBytes bounds the size of a file analyze reads (about 5 hours of
// stereo μ-law).
const maxFileBytes = 1 << 30

// fileReport is the JSON line analyze prints per file, with exactly the
// keys the analysis issue specifies.
type fileReport struct {
	File         string          `json:"file"`
	DurationS    voice.Num       `json:"duration_s"`
	SampleRateHz int             `json:"sample_rate_hz"`
	Codec        string          `json:"codec"`
	Model        string          `json:"model"`
	Channels     []channelReport `json:"channels"`
}

type channelReport struct {
	Index           int          `json:"index"`
	Role            voice.Role   `json:"role"`
	VoicedFraction  voice.Num    `json:"voiced_fraction"`
	F0MeanHz        voice.Num    `json:"f0_mean_hz"`
	F0MedianHz      voice.Num    `json:"f0_median_hz"`
	F0SDHz          voice.Num    `json:"f0_sd_hz"`
	F0P05Hz         voice.Num    `json:"f0_p05_hz"`
	F0P95Hz         voice.Num    `json:"f0_p95_hz"`
	JitterLocalPct  voice.Num    `json:"jitter_local_pct"`
	JitterRAPPct    voice.Num    `json:"jitter_rap_pct"`
	ShimmerLocalPct voice.Num    `json:"shimmer_local_pct"`
	ShimmerAPQ3Pct  voice.Num    `json:"shimmer_apq3_pct"`
	HNRMeanDB       voice.Num    `json:"hnr_mean_db"`
	IntensityMeanDB voice.Num    `json:"intensity_mean_db"`
	SpeechRate      voice.Num    `json:"speech_rate_syl_per_s"`
	Timeline        []timePoint  `json:"timeline"`
	Frames          []frameTrack `json:"frames,omitempty"`
}

// timePoint is one second of a channel's timeline; Key is the score's name.
type timePoint struct {
	T     int64
	Key   string
	Score voice.Score
}

func (p timePoint) MarshalJSON() ([]byte, error) {
	v := "null"
	if p.Score.OK {
		b, _ := voice.Num(math.Round(p.Score.Value*100) / 100).MarshalJSON()
		v = string(b)
	}
	return fmt.Appendf(nil, `{"t_s":%d,%q:%s}`, p.T, p.Key, v), nil
}

type frameTrack struct {
	T         float64
	F0        float32
	Voiced    bool
	Intensity float32
}

func (f frameTrack) MarshalJSON() ([]byte, error) {
	return fmt.Appendf(nil, `{"t_s":%.3f,"f0_hz":%.2f,"voiced":%t,"intensity_db":%.2f}`, f.T, f.F0, f.Voiced, f.Intensity), nil
}

// Options are analyze's settings.
type Options struct {
	Frames   bool
	Roles    []voice.Role // nil: caller,agent for stereo, agent for mono
	Baseline *voice.Baseline
	Model    *voice.Model
}

// Analyze runs "calmline analyze": it parses args, analyses each file and
// prints one JSON object per file on stdout. It returns the exit status: 0,
// 1 if any file failed, 2 for bad usage.
func Analyze(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("analyze", flag.ContinueOnError)
	fs.SetOutput(stderr)
	frames := fs.Bool("frames", false, "also print each channel's 10 ms frame track")
	roles := fs.String("roles", "", "channel roles, comma-separated (default caller,agent for stereo, agent for mono)")
	baseline := fs.String("baseline", "", "take the agent's stored baseline from this recording's voiced speech")
	model := fs.String("model", "", "score with this model file instead of the built-in one")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: calmline analyze [--frames] [--roles caller,agent] [--baseline FILE] [--model FILE] FILE...")
		fmt.Fprintln(stderr, "\nAnalyses WAV recordings (PCM16, μ-law, A-law; 8 or 16 kHz; mono or stereo) and prints")
		fmt.Fprintln(stderr, "one JSON object per file. Stereo defaults to left = caller, right = agent.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	var opt Options
	opt.Frames = *frames
	if *roles != "" {
		for _, r := range strings.Split(*roles, ",") {
			role, err := voice.ParseRole(r)
			if err != nil {
				fmt.Fprintf(stderr, "analyze: --roles: %v\n", err)
				return 2
			}
			opt.Roles = append(opt.Roles, role)
		}
	}
	opt.Model = voice.DefaultModel()
	if *model != "" {
		b, err := os.ReadFile(*model)
		if err == nil {
			opt.Model, err = voice.ParseModel(b)
		}
		if err != nil {
			fmt.Fprintf(stderr, "analyze: --model: %v\n", err)
			return 2
		}
	}
	if *baseline != "" {
		b, err := baselineFromFile(*baseline, opt.Model, opt.Roles)
		if err != nil {
			fmt.Fprintf(stderr, "analyze: --baseline: %v\n", err)
			return 2
		}
		opt.Baseline = &b
	}
	status := 0
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	for _, name := range fs.Args() {
		rep, err := AnalyzeFile(name, opt)
		if err != nil {
			status = 1
			enc.Encode(struct {
				File  string `json:"file"`
				Error string `json:"error"`
			}{name, err.Error()})
			continue
		}
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintf(stderr, "analyze: %v\n", err)
			return 1
		}
	}
	return status
}

// readRecording reads and parses a WAV file.
func readRecording(name string) (*audio.Recording, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return audio.ReadWAV(f, maxFileBytes)
}

// rolesFor returns the channel roles for a recording.
func rolesFor(given []voice.Role, channels int) ([]voice.Role, error) {
	if given == nil {
		if channels == 2 {
			return []voice.Role{voice.RoleCaller, voice.RoleAgent}, nil
		}
		return []voice.Role{voice.RoleAgent}, nil
	}
	if len(given) != channels {
		return nil, fmt.Errorf("%d roles given for %d channels", len(given), channels)
	}
	return given, nil
}

// baselineFromFile measures the agent's baseline over a recording's agent
// channel.
func baselineFromFile(name string, m *voice.Model, roles []voice.Role) (voice.Baseline, error) {
	r, err := readRecording(name)
	if err != nil {
		return voice.Baseline{}, err
	}
	rs, err := rolesFor(roles, r.Format.Channels)
	if err != nil {
		return voice.Baseline{}, err
	}
	chans := r.Channels()
	for i, role := range rs {
		if role == voice.RoleAgent {
			b := voice.BaselineFromRecording(m, chans[i])
			if b.VoicedS == 0 {
				return voice.Baseline{}, fmt.Errorf("%s: no voiced speech on the agent channel", name)
			}
			return b, nil
		}
	}
	return voice.Baseline{}, fmt.Errorf("%s: no agent channel", name)
}

// AnalyzeFile analyses one recording.
func AnalyzeFile(name string, opt Options) (*fileReport, error) {
	r, err := readRecording(name)
	if err != nil {
		return nil, err
	}
	roles, err := rolesFor(opt.Roles, r.Format.Channels)
	if err != nil {
		return nil, err
	}
	chans := r.Channels()
	cfg := voice.CallConfig{Model: opt.Model, Roles: roles, AgentBaseline: opt.Baseline}
	reps := make([]channelReport, len(chans))
	if opt.Frames {
		cfg.OnFrame = func(ch int, f *voice.Frame) {
			reps[ch].Frames = append(reps[ch].Frames, frameTrack{f.Time, f.F0, f.Voiced, f.Intensity})
		}
	}
	sum, err := voice.AnalyzeCall(cfg, chans, func(s *voice.Second) {
		for ch := range reps {
			p := timePoint{T: s.Index, Key: "agent_stress", Score: s.AgentStress}
			if roles[ch] == voice.RoleCaller {
				p = timePoint{T: s.Index, Key: "caller_pressure", Score: s.CallerPressure}
			}
			reps[ch].Timeline = append(reps[ch].Timeline, p)
		}
	})
	if err != nil {
		return nil, err
	}
	for ch, cs := range sum.Channels {
		c := &reps[ch]
		c.Index, c.Role = cs.Index, cs.Role
		c.VoicedFraction, c.F0MeanHz, c.F0MedianHz, c.F0SDHz = cs.VoicedFraction, cs.F0MeanHz, cs.F0MedianHz, cs.F0SDHz
		c.F0P05Hz, c.F0P95Hz = cs.F0P05Hz, cs.F0P95Hz
		c.JitterLocalPct, c.JitterRAPPct = cs.JitterLocalPct, cs.JitterRAPPct
		c.ShimmerLocalPct, c.ShimmerAPQ3Pct = cs.ShimmerLocalPct, cs.ShimmerAPQ3Pct
		c.HNRMeanDB, c.IntensityMeanDB, c.SpeechRate = cs.HNRMeanDB, cs.IntensityMeanDB, cs.SpeechRate
		if c.Timeline == nil {
			c.Timeline = []timePoint{}
		}
	}
	return &fileReport{
		File:         name,
		DurationS:    voice.Num(float64(r.Frames()) / float64(r.Format.SampleRate)),
		SampleRateHz: r.Format.SampleRate,
		Codec:        r.Format.Codec.String(),
		Model:        sum.Model,
		Channels:     reps,
	}, nil
}
