package voice

import "fmt"

// ChannelSummary is the whole-call report of one channel.
type ChannelSummary struct {
	Index int  `json:"index"`
	Role  Role `json:"role"`
	ChannelStats
	// OverlapS is the time this channel spoke while the other did too;
	// Interruptions counts the times it started to speak (after at least
	// 200 ms of its own silence) while the other was speaking.
	OverlapS      Num `json:"overlap_s"`
	Interruptions int `json:"interruptions"`
	// Baseline is the speaker's baseline at the end of the call.
	Baseline Baseline `json:"baseline"`
}

// Summary is the whole-call report.
type Summary struct {
	Model     string           `json:"model"`
	DurationS Num              `json:"duration_s"`
	Channels  []ChannelSummary `json:"channels"`
	// OverlapS is the time both parties spoke at once; SilenceS the time
	// neither did (two-channel calls only).
	OverlapS Num `json:"overlap_s"`
	SilenceS Num `json:"silence_s"`
}

// Summary returns the report of the call so far (after Flush: the whole
// call). It allocates; call it once per call.
func (c *Call) Summary() Summary {
	s := Summary{Model: c.m.ID()}
	var dur float64
	for i, k := range c.ch {
		cs := ChannelSummary{Index: i, Role: k.role, ChannelStats: k.an.Stats(),
			OverlapS: Num(float64(k.overlap) / FrameRate), Interruptions: k.interr, Baseline: k.base.cur}
		dur = max(dur, float64(cs.DurationS))
		s.Channels = append(s.Channels, cs)
	}
	s.DurationS = Num(dur)
	s.OverlapS, s.SilenceS = Num(0), Num(0)
	if len(c.ch) == 2 {
		// Channel 0's overlap frames are the frames where both spoke.
		s.OverlapS = Num(float64(c.ch[0].overlap) / FrameRate)
		talk := float64(s.Channels[0].TalkTimeS) + float64(s.Channels[1].TalkTimeS) - float64(s.OverlapS)
		s.SilenceS = Num(max(dur-talk, 0))
	}
	return s
}

// AnalyzeCall analyses a whole recording with the streaming code: chans
// holds each channel's 8 kHz samples (as audio.Recording.Channels returns
// them). onSecond, if not nil, receives every Second in order. It returns
// the call's Summary.
func AnalyzeCall(cfg CallConfig, chans [][]int16, onSecond func(*Second)) (Summary, error) {
	if len(chans) != len(cfg.Roles) {
		return Summary{}, fmt.Errorf("analyze call: %d channels of audio for %d roles", len(chans), len(cfg.Roles))
	}
	c, err := NewCall(cfg)
	if err != nil {
		return Summary{}, fmt.Errorf("analyze call: %w", err)
	}
	var s Second
	drain := func() {
		for c.NextSecond(&s) {
			if onSecond != nil {
				onSecond(&s)
			}
		}
	}
	n := 0
	for _, ch := range chans {
		n = max(n, len(ch))
	}
	const chunk = SampleRate // one second at a time, channels in step
	for i := 0; i < n; i += chunk {
		for ch, x := range chans {
			if i < len(x) {
				c.Push(ch, x[i:min(i+chunk, len(x))])
			}
		}
		drain()
	}
	c.Flush()
	drain()
	return c.Summary(), nil
}

// BaselineFromRecording measures a speaker's baseline over all the voiced
// speech of a mono recording (8 kHz samples), as a stored per-agent
// baseline would be measured over earlier calls.
func BaselineFromRecording(m *Model, samples []int16) Baseline {
	if m == nil {
		m = DefaultModel()
	}
	var b baselineBuilder
	b.init(m, nil, 0)
	b.priorWeight = 0
	other := otherParty{loudness: nanValue()}
	var a *Analyzer
	a = NewAnalyzer(nil, func(w *Window) { b.add(w, &other, a.feat.speechLikeNoise()) })
	a.Push(samples)
	a.Flush()
	b.update()
	out := b.cur
	if b.voiced > 0 {
		out.Source = "recording"
	}
	return out
}
