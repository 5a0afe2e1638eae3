// Package analysis connects the voice analysis to calmline's contracts: it
// builds a call's analyser from the call as the wire describes it, feeds it
// the wire's interleaved encoded audio and gaps, and turns its seconds into
// score updates labelled with the model that made them. Realtime and
// fullcall use it; the gateway never does.
package analysis

import (
	"fmt"
	"math"

	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/voice"
	"github.com/calmline/calmline/lib/wire"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
)

// Score is one score for one second: a value in [0, 100], or an abstention
// with its reason.
type Score struct {
	Value   float64
	OK      bool
	Abstain string
}

// Second is one analysed second of a call.
type Second struct {
	Index int
	// EndSample is the timeline position (samples per channel at the
	// input rate) the second ends at.
	EndSample      uint64
	AgentStress    Score
	CallerPressure Score
	// CallerTalk and AgentTalk are the shares (0–1) of the second in which
	// each party talked (voice activity); Overlap the share in which both
	// did. Zero for a party the call does not carry.
	CallerTalk, AgentTalk, Overlap float64
	// StartSample is where the second starts on the timeline (Index
	// seconds); AudioSamples how many samples of [StartSample, EndSample)
	// were audio rather than gaps.
	StartSample, AudioSamples uint64
	// Sums are the second's increments of the call's measures
	// (NumChannels 0 if the voice analysis had none for it).
	// SecondAnalysis turns them into the wire form.
	Sums voice.SecondSums
}

// ChannelStats are one channel's measures over the call.
type ChannelStats struct {
	Role voice.Role
	// TalkSeconds is time with voice activity; SilenceSeconds the rest of
	// the audio the channel carried (gaps count as neither).
	TalkSeconds    float64
	SilenceSeconds float64
	// IntensityMeanDB is Praat's energy mean of the intensity, dB re
	// 2·10⁻⁵ (a full-scale sine reads 91 dB).
	IntensityMeanDB float64
	// Voice holds the voice-report measures (F0, jitter, shimmer, HNR,
	// speech rate …), NaN where undefined.
	Voice voice.ChannelStats
}

// Stats are the measures over the call so far.
type Stats struct {
	Channels []ChannelStats
	// OverlapSeconds is time in which both channels talked.
	OverlapSeconds float64
	// CallerInterruptions counts the caller starting to talk over the
	// agent; AgentInterruptions the other way round.
	CallerInterruptions int
	AgentInterruptions  int
}

// Analyzer analyses one call as its audio arrives. It is for one goroutine
// at a time and allocates nothing per write once warmed up.
type Analyzer struct {
	format  audio.Format
	conv    *audio.Converter
	call    *voice.Call
	roles   []voice.Role
	bytes   uint64 // audio written
	gap     uint64 // samples per channel (input rate) of gaps
	silence []byte // one encoded block of silence, for gaps
	out     []Second
	sec     voice.Second
	// sums holds the voice analysis's per-second sums until their seconds
	// are taken; gaps the timeline stretches [start, end) that were gaps,
	// from the oldest second not yet made on.
	sums []voice.SecondSums
	gaps []span
	// resumed is set on an analyser that continues a call from a
	// checkpoint (checkpoint.go): its timeline and seconds start there,
	// and its Stats include what came before.
	resumed *resumed
}

// New returns an analyser for a call, and the call's audio format.
func New(call *callv1.Call) (*Analyzer, audio.Format, error) { return newAnalyzer(call, nil) }

// newAnalyzer returns an analyser for a call; agentBaseline, when set, is
// the agent's baseline to start from.
func newAnalyzer(call *callv1.Call, agentBaseline *voice.Baseline) (*Analyzer, audio.Format, error) {
	roles, f, err := Roles(call)
	if err != nil {
		return nil, audio.Format{}, err
	}
	conv, err := audio.NewConverter(f)
	if err != nil {
		return nil, audio.Format{}, err
	}
	a := &Analyzer{format: f, conv: conv, roles: roles, out: make([]Second, 0, 8), sums: make([]voice.SecondSums, 0, 2)}
	vc, err := voice.NewCall(voice.CallConfig{Roles: roles, AgentBaseline: agentBaseline, DisableAgentStress: !wire.AgentScoringEnabled(call.GetPolicy()),
		OnSums: func(s *voice.SecondSums) { a.sums = append(a.sums, *s) }})
	if err != nil {
		return nil, audio.Format{}, err
	}
	a.call = vc
	// A tenth of a second of encoded silence feeds gaps.
	one := audio.Encode(nil, make([]int16, f.Channels), f.Codec)
	for range f.SampleRate / 10 {
		a.silence = append(a.silence, one...)
	}
	return a, f, nil
}

// Roles returns the roles of a call's channels, in channel order, and its
// audio format, or why the call cannot be analysed.
func Roles(call *callv1.Call) ([]voice.Role, audio.Format, error) {
	f, err := wire.Format(call.GetFormat())
	if err != nil {
		return nil, audio.Format{}, err
	}
	roles := make([]voice.Role, len(call.Format.Channels))
	for i, r := range call.Format.Channels {
		switch r {
		case callv1.ChannelRole_CHANNEL_ROLE_CALLER:
			roles[i] = voice.RoleCaller
		case callv1.ChannelRole_CHANNEL_ROLE_AGENT:
			roles[i] = voice.RoleAgent
		default:
			return nil, audio.Format{}, fmt.Errorf("channel %d: role %v", i, r)
		}
	}
	if len(roles) != f.Channels {
		return nil, audio.Format{}, fmt.Errorf("%d roles for %d channels", len(roles), f.Channels)
	}
	if len(roles) < 1 || len(roles) > 2 || len(roles) == 2 && roles[0] == roles[1] {
		return nil, audio.Format{}, fmt.Errorf("channels %v: want one, or a caller and an agent", roles)
	}
	return roles, f, nil
}

// Model is the model that produces the scores.
func Model() *callv1.ModelInfo {
	m := voice.DefaultModel()
	return &callv1.ModelInfo{Name: m.Name, Version: m.Version}
}

// Write analyses interleaved encoded audio that continues the timeline. It
// accepts any length; a partial sample frame waits for the next write.
func (a *Analyzer) Write(data []byte) {
	a.bytes += uint64(len(data))
	a.push(a.conv.Convert(data))
}

func (a *Analyzer) push(chans [][]int16) {
	// The channels go in step, pushStep at a time: the voice analysis
	// pairs the channels' frames for bleed rejection (and their per-second
	// sums) only while one channel is less than 5 s ahead of the other, so
	// a long write (the batch paths write 10 s at a time) pushed a channel
	// at a time would be analysed without it.
	n := 0
	for _, s := range chans {
		n = max(n, len(s))
	}
	for off := 0; off < n; off += pushStep {
		for ch, s := range chans {
			if off < len(s) {
				a.call.Push(ch, s[off:min(off+pushStep, len(s))])
			}
		}
		a.drain()
	}
}

// pushStep is how many samples of each channel push gives the voice
// analysis at a time: half a second.
const pushStep = voice.SampleRate / 2

// drain takes the voice analysis's finished seconds, each with its sums.
func (a *Analyzer) drain() {
	n := len(a.out)
	for a.call.NextSecond(&a.sec) {
		a.out = append(a.out, a.second(&a.sec))
	}
	// Pair the new seconds with their sums by index (a second the voice
	// analysis dropped leaves its sums unpaired).
	j := 0
	for i := n; i < len(a.out); i++ {
		o := &a.out[i]
		for j < len(a.sums) && a.sums[j].Index+int64(a.resumed.baseSecond()) < int64(o.Index) {
			j++
		}
		if j < len(a.sums) && a.sums[j].Index+int64(a.resumed.baseSecond()) == int64(o.Index) {
			o.Sums = a.sums[j]
		}
	}
	// The sums of seconds handed on are no longer needed.
	if j > 0 && len(a.out) > n {
		a.sums = append(a.sums[:0], a.sums[j:]...)
	}
}

// second converts a voice second to the wire's terms.
func (a *Analyzer) second(s *voice.Second) Second {
	end := uint64(math.Round(s.End*float64(a.format.SampleRate))) + a.resumed.baseSamples()
	out := Second{Index: int(s.Index) + a.resumed.baseSecond(), EndSample: min(end, a.Timeline()), AgentStress: score(s.AgentStress), CallerPressure: score(s.CallerPressure)}
	out.StartSample = uint64(out.Index) * uint64(a.format.SampleRate)
	out.AudioSamples = a.audioIn(out.StartSample, out.EndSample)
	if frames := math.Round((s.End - s.Start) * voice.FrameRate); frames > 0 {
		for _, c := range s.Channels[:s.NumChannels] {
			share := min(float64(c.Speech)/frames, 1)
			switch c.Role {
			case voice.RoleCaller:
				out.CallerTalk = share
			case voice.RoleAgent:
				out.AgentTalk = share
			}
		}
		if s.NumChannels == 2 {
			out.Overlap = min(float64(s.Channels[0].Overlap)/frames, 1)
		}
	}
	return out
}

func score(s voice.Score) Score {
	if !s.OK {
		return Score{Abstain: string(s.Reason)}
	}
	return Score{Value: RoundScore(s.Value), OK: true}
}

// RoundScore rounds a score to one decimal, the precision calmline shows
// and keeps everywhere: the model cannot tell 70.04 from 70.0, and fifteen
// decimals in an API promise a precision that does not exist. Every
// score leaves the analysis through it (so live updates, alerts and stored
// timelines agree), and every figure derived from scores (a report's mean)
// is rounded by it again.
func RoundScore(v float64) float64 { return math.Round(v*10) / 10 }

// Gap advances the timeline over samples (per channel, input rate) that
// carry no audio. The analysis sees silence there: no score is made from a
// gap, and its time counts as neither talk nor silence in Stats.
func (a *Analyzer) Gap(samples uint64) {
	if samples == 0 {
		return
	}
	pos := a.Timeline()
	if n := len(a.gaps); n > 0 && a.gaps[n-1].end == pos {
		a.gaps[n-1].end += samples
	} else {
		a.gaps = append(a.gaps, span{pos, pos + samples})
	}
	a.gap += samples
	per := uint64(len(a.silence) / a.format.FrameBytes())
	for samples > 0 {
		n := min(samples, per)
		a.push(a.conv.Convert(a.silence[:n*uint64(a.format.FrameBytes())]))
		samples -= n
	}
}

// Seconds returns the seconds completed since the last call. The slice is
// reused by the next Write; copy what you keep.
func (a *Analyzer) Seconds() []Second {
	out := a.out
	a.out = a.out[:0]
	a.sums = a.sums[:0]
	return out
}

// span is a stretch [start, end) of the timeline.
type span struct{ start, end uint64 }

// audioIn returns how many samples of [start, end) were audio, not gaps,
// and forgets the gaps before start (seconds are made in order).
func (a *Analyzer) audioIn(start, end uint64) uint64 {
	drop := 0
	for drop < len(a.gaps) && a.gaps[drop].end <= start {
		drop++
	}
	if drop > 0 {
		a.gaps = append(a.gaps[:0], a.gaps[drop:]...)
	}
	n := end - min(start, end)
	for _, g := range a.gaps {
		if g.start >= end {
			break
		}
		n -= min(g.end, end) - max(g.start, start)
	}
	return n
}

// Flush ends the call: the rest of the audio is analysed and the seconds
// not yet taken are returned, the last one possibly partial.
func (a *Analyzer) Flush() []Second {
	a.push(a.conv.Flush())
	a.call.Flush()
	a.drain()
	return a.Seconds()
}

// Timeline returns the timeline position in samples per channel at the
// input rate.
func (a *Analyzer) Timeline() uint64 {
	return a.resumed.baseSamples() + a.bytes/uint64(a.format.FrameBytes()) + a.gap
}

// Stats returns what accumulated over the call so far (after Flush: the
// whole call). It allocates.
func (a *Analyzer) Stats() Stats {
	sum := a.call.Summary()
	gapS := float64(a.gap) / float64(a.format.SampleRate)
	st := Stats{OverlapSeconds: float64(sum.OverlapS)}
	for i, c := range sum.Channels {
		talk := float64(c.TalkTimeS)
		st.Channels = append(st.Channels, ChannelStats{
			Role:            a.roles[i],
			TalkSeconds:     talk,
			SilenceSeconds:  max(float64(c.DurationS)-talk-gapS, 0),
			IntensityMeanDB: float64(c.IntensityMeanDB),
			Voice:           c.ChannelStats,
		})
		switch a.roles[i] {
		case voice.RoleCaller:
			st.CallerInterruptions = c.Interruptions
		case voice.RoleAgent:
			st.AgentInterruptions = c.Interruptions
		}
	}
	return a.resumed.merge(st)
}

// ScoreUpdate turns an analysed second into the wire form.
func ScoreUpdate(callID string, s Second) *callv1.ScoreUpdate {
	u := &callv1.ScoreUpdate{
		CallId:    callID,
		Second:    uint32(s.Index),
		EndSample: s.EndSample,
		Model:     Model(),
	}
	if s.AgentStress.OK {
		v := s.AgentStress.Value
		u.AgentStress = &v
	} else {
		u.AgentStressAbstain = s.AgentStress.Abstain
	}
	if s.CallerPressure.OK {
		v := s.CallerPressure.Value
		u.CallerPressure = &v
	} else {
		u.CallerPressureAbstain = s.CallerPressure.Abstain
	}
	return u
}
