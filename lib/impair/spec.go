package impair

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/calmline/calmline/lib/audio"
)

// Parse reads a Spec from its text form: comma-separated settings, each
// key=value —
//
//	noise=KIND:SNR       pink, hum or babble at SNR dB (babble needs a source)
//	bleed=DB:DELAY       the other channel DB dB (≤ 0) below, DELAY ms (0–60) late
//	gain=DB0:DB1         gain of channel 0 and 1, dB
//	loss=RATE[:CONCEAL]  fraction (0.03) or percent (3%) of 20 ms packets lost; zero or repeat
//	codec=alaw|ulaw      G.711 transcoding
//	band=LO:HI           band-limit, Hz
//	seed=N               random seed
//
// for example "noise=pink:15,seed=2" or "bleed=-20:20". "clean" or "" is the
// zero Spec.
func Parse(text string) (Spec, error) {
	var s Spec
	text = strings.TrimSpace(text)
	if text == "" || text == "clean" {
		return s, nil
	}
	seen := map[string]bool{}
	for _, part := range strings.Split(text, ",") {
		key, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return Spec{}, fmt.Errorf("impair: %q: want key=value", part)
		}
		if seen[key] {
			return Spec{}, fmt.Errorf("impair: %s given twice", key)
		}
		seen[key] = true
		a, b, two := strings.Cut(val, ":")
		var err error
		switch key {
		case "noise":
			if !two {
				return Spec{}, fmt.Errorf("impair: noise=%q: want KIND:SNR", val)
			}
			s.NoiseKind = a
			s.NoiseSNRDB, err = num(b)
		case "bleed":
			if !two {
				return Spec{}, fmt.Errorf("impair: bleed=%q: want DB:DELAY_MS", val)
			}
			if s.BleedDB, err = num(a); err == nil {
				s.BleedDelayMS, err = num(b)
			}
		case "gain":
			if !two {
				return Spec{}, fmt.Errorf("impair: gain=%q: want DB0:DB1", val)
			}
			if s.GainDB[0], err = num(a); err == nil {
				s.GainDB[1], err = num(b)
			}
		case "loss":
			if pct, ok := strings.CutSuffix(a, "%"); ok {
				s.LossRate, err = num(pct)
				s.LossRate /= 100
			} else {
				s.LossRate, err = num(a)
			}
			s.Conceal = ConcealZero
			if two {
				s.Conceal = b
			}
		case "codec":
			switch val {
			case "alaw", "pcma":
				s.Codec = audio.CodecPCMA
			case "ulaw", "mulaw", "pcmu":
				s.Codec = audio.CodecPCMU
			default:
				return Spec{}, fmt.Errorf("impair: codec %q (want alaw or ulaw)", val)
			}
		case "band":
			if !two {
				return Spec{}, fmt.Errorf("impair: band=%q: want LO:HI", val)
			}
			if s.BandLowHz, err = num(a); err == nil {
				s.BandHighHz, err = num(b)
			}
		case "seed":
			s.Seed, err = strconv.ParseUint(val, 10, 64)
		default:
			return Spec{}, fmt.Errorf("impair: unknown setting %q", key)
		}
		if err != nil {
			return Spec{}, fmt.Errorf("impair: %s=%q: %v", key, val, err)
		}
	}
	// Babble's source is supplied by the caller; check the rest now.
	v := s
	if v.NoiseKind == NoiseBabble {
		v.BabbleSource = make([]int16, SampleRate)
	}
	if err := v.Validate(); err != nil {
		return Spec{}, err
	}
	return s, nil
}

func num(s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		return 0, fmt.Errorf("not a number")
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("not a finite number")
	}
	return v, nil
}

// Condition is a named line condition at a strength.
type Condition struct {
	Name     string // e.g. "noise pink 15 dB"
	Group    string // noise-pink, noise-babble, bleed, gain-agent, …
	Strength string // mild, middle, strong, check
	Spec     string // Parse form
}

// Conditions returns the line conditions calmline eval measures, each at
// three strengths (mild, middle, strong), plus "check" conditions at
// strengths and seeds that were not used for tuning. Channel 0 is the
// caller and channel 1 the agent (AudioHook's order).
func Conditions() []Condition {
	var out []Condition
	add := func(group, strength, name, spec string) {
		out = append(out, Condition{Name: name, Group: group, Strength: strength, Spec: spec})
	}
	for _, k := range []string{NoisePink, NoiseBabble, NoiseHum} {
		for i, snr := range []int{20, 15, 10} {
			add("noise-"+k, strengths[i], fmt.Sprintf("noise %s %d dB", k, snr), fmt.Sprintf("noise=%s:%d,seed=1", k, snr))
		}
	}
	for i, b := range [][2]int{{-26, 10}, {-20, 20}, {-12, 40}} {
		add("bleed", strengths[i], fmt.Sprintf("bleed %d dB at %d ms", b[0], b[1]), fmt.Sprintf("bleed=%d:%d", b[0], b[1]))
	}
	for i, g := range []int{6, 12, 18} {
		add("gain-agent-quieter", strengths[i], fmt.Sprintf("agent %d dB quieter", g), fmt.Sprintf("gain=0:-%d", g))
		add("gain-caller-quieter", strengths[i], fmt.Sprintf("caller %d dB quieter", g), fmt.Sprintf("gain=-%d:0", g))
	}
	for i, p := range []int{1, 3, 6} {
		add("loss-zero", strengths[i], fmt.Sprintf("loss %d%% zeroed", p), fmt.Sprintf("loss=%d%%:zero,seed=1", p))
		add("loss-repeat", strengths[i], fmt.Sprintf("loss %d%% concealed", p), fmt.Sprintf("loss=%d%%:repeat,seed=1", p))
	}
	add("codec", "mild", "A-law", "codec=alaw")
	add("codec", "middle", "A-law + 3% loss concealed", "codec=alaw,loss=3%:repeat,seed=1")
	for i, b := range [][2]int{{300, 3400}, {400, 3000}, {500, 2500}} {
		add("band", strengths[i], fmt.Sprintf("band %d–%d Hz", b[0], b[1]), fmt.Sprintf("band=%d:%d", b[0], b[1]))
	}
	// Held back from tuning: other strengths, delays and seeds, and
	// combinations.
	add("check", "check", "noise pink 12 dB, seed 7", "noise=pink:12,seed=7")
	add("check", "check", "noise babble 13 dB, seed 9", "noise=babble:13,seed=9")
	add("check", "check", "noise babble 17 dB, seed 23", "noise=babble:17,seed=23")
	add("check", "check", "bleed -16 dB at 55 ms", "bleed=-16:55")
	add("check", "check", "bleed -22 dB at 0 ms", "bleed=-22:0")
	add("check", "check", "agent 9 dB quieter + pink 18 dB", "gain=0:-9,noise=pink:18,seed=5")
	add("check", "check", "bleed -20 dB at 30 ms + hum 15 dB + A-law", "bleed=-20:30,noise=hum:15,codec=alaw,seed=3")
	return out
}

var strengths = []string{"mild", "middle", "strong"}
