// Package loudness is calmline's interim scoring model, "interim-loudness":
// voice activity and loudness of each channel relative to that channel's
// start of the call. It is a placeholder that keeps the services honest end
// to end until the voice analysis (F0, rate, voice quality against a
// per-speaker baseline) replaces it; every score it produces carries its
// name and version, and it claims no more than it measures: a speaker who
// gets louder than they started scores higher.
//
// The package is pure computation: no I/O, no goroutines, no allocation
// once an Analyzer is built.
package loudness

import (
	"errors"
	"fmt"
	"math"

	"github.com/calmline/calmline/lib/audio"
)

// Model identifies the scores this package produces.
const (
	ModelName    = "interim-loudness"
	ModelVersion = "0.1.0"
)

// Role says who speaks on a channel.
type Role uint8

// The channel roles.
const (
	Caller Role = iota + 1
	Agent
)

const (
	rate         = 8000 // analysis rate; 16 kHz input is halved
	frameSamples = rate / 50
	framesPerSec = 50
	// activeDB is the frame level (dBFS) above which a frame counts as
	// speech. Telephone speech sits around -30 to -10 dBFS.
	activeDB = -45.0
	// hangoverFrames keeps short pauses inside a turn counted as talk.
	hangoverFrames = 10
	// minActiveFrames below which a second's score abstains.
	minActiveFrames = 10
	// baselineFrames of speech make a speaker's baseline level.
	baselineFrames = 150
)

// Abstain reasons.
const (
	AbstainNoSpeech = "too little speech in the second"
	AbstainOff      = "agent scoring is off for this tenant"
	AbstainNoRole   = "no channel has this role"
)

// Options describes the audio an Analyzer receives.
type Options struct {
	Format audio.Format
	// Roles gives each channel's role, in interleaving order.
	Roles []Role
	// AgentScoring false makes agent_stress abstain (privacy mode "off").
	AgentScoring bool
}

// Score is one score for one second: a value in [0, 100], or an abstention
// with its reason.
type Score struct {
	Value   float64
	OK      bool
	Abstain string
}

// Second is the analysis of one second of the call's timeline.
type Second struct {
	Index int
	// EndSample is the timeline position (samples per channel at the
	// input rate) the second ends at.
	EndSample      uint64
	AgentStress    Score
	CallerPressure Score
}

// ChannelStats accumulate over the call.
type ChannelStats struct {
	Role Role
	// TalkSeconds is time with speech (pauses under 200 ms included).
	TalkSeconds float64
	// SilenceSeconds is the rest of the audio the channel carried.
	SilenceSeconds float64
	// IntensityMeanDB is the mean level of speech frames in dBFS.
	IntensityMeanDB float64
	speechFrames    int
	speechDBSum     float64
}

// Stats accumulate over the call.
type Stats struct {
	Channels []ChannelStats
	// OverlapSeconds is time in which both channels talked.
	OverlapSeconds float64
	// CallerInterruptions counts the caller starting to talk while the
	// agent talked; AgentInterruptions the other way round.
	CallerInterruptions int
	AgentInterruptions  int
}

type channel struct {
	role Role
	// current frame accumulation
	energy float64
	n      int
	// per-second accumulation
	secDBSum  float64
	secActive int
	// talk state
	hang    int
	talking bool
	// baseline
	baseSum float64
	baseN   int
	stats   ChannelStats
}

// Analyzer scores one call as its audio arrives.
type Analyzer struct {
	o         Options
	decimate  bool
	chans     []channel
	pcm       []int16
	frames    int // frames completed on the timeline
	seconds   int // seconds completed
	timeline  uint64
	out       []Second
	overlapFr int
	callerInt int
	agentInt  int
	caller    int // channel index or -1
	agent     int
	carry     []byte // partial sample frame between writes
}

// New returns an Analyzer for audio in the given format.
func New(o Options) (*Analyzer, error) {
	if err := o.Format.Validate(); err != nil {
		return nil, err
	}
	if len(o.Roles) != o.Format.Channels {
		return nil, fmt.Errorf("%d roles for %d channels", len(o.Roles), o.Format.Channels)
	}
	a := &Analyzer{o: o, decimate: o.Format.SampleRate == 16000, caller: -1, agent: -1}
	for i, r := range o.Roles {
		switch r {
		case Caller:
			if a.caller >= 0 {
				return nil, errors.New("two caller channels")
			}
			a.caller = i
		case Agent:
			if a.agent >= 0 {
				return nil, errors.New("two agent channels")
			}
			a.agent = i
		default:
			return nil, fmt.Errorf("channel %d: unknown role %d", i, r)
		}
		a.chans = append(a.chans, channel{role: r, stats: ChannelStats{Role: r}})
	}
	a.pcm = make([]int16, 4096)
	a.out = make([]Second, 0, 8)
	a.carry = make([]byte, 0, o.Format.FrameBytes())
	return a, nil
}

// Write analyses interleaved encoded audio that continues the timeline. It
// accepts any length; a partial sample frame waits for the next write.
func (a *Analyzer) Write(data []byte) {
	fb := a.o.Format.FrameBytes()
	if len(a.carry) > 0 {
		need := fb - len(a.carry)
		if len(data) < need {
			a.carry = append(a.carry, data...)
			return
		}
		a.carry = append(a.carry, data[:need]...)
		a.write(a.carry)
		a.carry = a.carry[:0]
		data = data[need:]
	}
	whole := len(data) - len(data)%fb
	a.write(data[:whole])
	a.carry = append(a.carry, data[whole:]...)
}

func (a *Analyzer) write(data []byte) {
	bps := a.o.Format.Codec.BytesPerSample()
	for len(data) > 0 {
		n := min(len(data), len(a.pcm)*bps)
		n -= n % a.o.Format.FrameBytes()
		k := audio.Decode(a.pcm, data[:n], a.o.Format.Codec)
		a.samples(a.pcm[:k])
		data = data[n:]
	}
}

// samples consumes decoded interleaved samples.
func (a *Analyzer) samples(pcm []int16) {
	nch := len(a.chans)
	step := 1
	if a.decimate {
		step = 2
	}
	for i := 0; i+nch*step <= len(pcm); i += nch * step {
		a.timeline += uint64(step)
		for c := range a.chans {
			s := float64(pcm[i+c])
			if a.decimate {
				s = (s + float64(pcm[i+nch+c])) / 2
			}
			ch := &a.chans[c]
			ch.energy += s * s
			ch.n++
		}
		if a.chans[0].n == frameSamples {
			a.endFrame()
		}
	}
}

func (a *Analyzer) endFrame() {
	var active [2]bool
	var startedTalking [2]bool
	for c := range a.chans {
		ch := &a.chans[c]
		db := -120.0
		if ch.energy > 0 {
			db = 10 * math.Log10(ch.energy/float64(ch.n)/(32768.0*32768.0))
		}
		ch.energy, ch.n = 0, 0
		isActive := db > activeDB
		if isActive {
			ch.secDBSum += db
			ch.secActive++
			ch.stats.speechFrames++
			ch.stats.speechDBSum += db
			if ch.baseN < baselineFrames {
				ch.baseSum += db
				ch.baseN++
			}
			ch.hang = hangoverFrames
			if !ch.talking {
				startedTalking[c] = true
			}
			ch.talking = true
		} else if ch.hang > 0 {
			ch.hang--
		} else {
			ch.talking = false
		}
		if ch.talking {
			ch.stats.TalkSeconds += 1.0 / framesPerSec
		} else {
			ch.stats.SilenceSeconds += 1.0 / framesPerSec
		}
		if c < 2 {
			active[c] = ch.talking
		}
	}
	if len(a.chans) == 2 && active[0] && active[1] {
		a.overlapFr++
		for c := range 2 {
			if startedTalking[c] && !startedTalking[1-c] {
				if a.chans[c].role == Caller {
					a.callerInt++
				} else {
					a.agentInt++
				}
			}
		}
	}
	a.frames++
	if a.frames%framesPerSec == 0 {
		a.endSecond()
	}
}

func (a *Analyzer) endSecond() {
	s := Second{Index: a.seconds, EndSample: a.timeline}
	a.seconds++
	s.CallerPressure = a.callerPressure()
	s.AgentStress = a.agentStress()
	for c := range a.chans {
		a.chans[c].secDBSum, a.chans[c].secActive = 0, 0
	}
	a.out = append(a.out, s)
}

func level(ch *channel) (float64, bool) {
	if ch.secActive < minActiveFrames {
		return 0, false
	}
	return ch.secDBSum / float64(ch.secActive), true
}

func baseline(ch *channel) float64 {
	if ch.baseN == 0 {
		return -25
	}
	return ch.baseSum / float64(ch.baseN)
}

func clamp(v float64) float64 { return math.Max(0, math.Min(100, v)) }

func (a *Analyzer) callerPressure() Score {
	if a.caller < 0 {
		return Score{Abstain: AbstainNoRole}
	}
	ch := &a.chans[a.caller]
	lv, ok := level(ch)
	if !ok {
		return Score{Abstain: AbstainNoSpeech}
	}
	v := 40 + 5*(lv-baseline(ch))
	if a.agent >= 0 {
		// Louder than the agent's usual level adds pressure.
		v += 2 * (lv - baseline(&a.chans[a.agent]))
	}
	return Score{Value: clamp(v), OK: true}
}

func (a *Analyzer) agentStress() Score {
	if a.agent < 0 {
		return Score{Abstain: AbstainNoRole}
	}
	if !a.o.AgentScoring {
		return Score{Abstain: AbstainOff}
	}
	ch := &a.chans[a.agent]
	lv, ok := level(ch)
	if !ok {
		return Score{Abstain: AbstainNoSpeech}
	}
	return Score{Value: clamp(40 + 6*(lv-baseline(ch))), OK: true}
}

// Gap advances the timeline over samples (per channel, input rate) that
// carry no audio: whole frames in the gap count as neither talk nor
// silence, and no score is made from them.
func (a *Analyzer) Gap(samples uint64) {
	if a.decimate {
		samples /= 2
	}
	for samples > 0 {
		if a.chans[0].n == 0 && samples >= frameSamples {
			a.timeline += frameSamples * a.step()
			a.frames++
			samples -= frameSamples
			if a.frames%framesPerSec == 0 {
				a.endSecond()
			}
			continue
		}
		// Finish a started frame with silence.
		for c := range a.chans {
			a.chans[c].n++
		}
		a.timeline += a.step()
		samples--
		if a.chans[0].n == frameSamples {
			a.endFrame()
		}
	}
}

func (a *Analyzer) step() uint64 {
	if a.decimate {
		return 2
	}
	return 1
}

// Seconds returns the seconds completed since the last call. The slice is
// reused by the next Write; copy what you keep.
func (a *Analyzer) Seconds() []Second {
	out := a.out
	a.out = a.out[:0]
	return out
}

// Flush completes the last partial second (when it holds any audio) and
// returns the seconds not yet taken.
func (a *Analyzer) Flush() []Second {
	if a.chans[0].n > 0 {
		// A partial frame is measured over the samples it has.
		a.endFrame()
	}
	if a.frames%framesPerSec != 0 {
		a.endSecond()
	}
	return a.Seconds()
}

// Timeline returns the timeline position in samples per channel at the
// input rate.
func (a *Analyzer) Timeline() uint64 { return a.timeline }

// Stats returns what accumulated over the call so far.
func (a *Analyzer) Stats() Stats {
	st := Stats{
		OverlapSeconds:      float64(a.overlapFr) / framesPerSec,
		CallerInterruptions: a.callerInt,
		AgentInterruptions:  a.agentInt,
	}
	for c := range a.chans {
		cs := a.chans[c].stats
		if cs.speechFrames > 0 {
			cs.IntensityMeanDB = cs.speechDBSum / float64(cs.speechFrames)
		}
		st.Channels = append(st.Channels, cs)
	}
	return st
}
