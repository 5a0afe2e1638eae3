package voice

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// Role is a channel's party.
type Role uint8

// The parties of a call.
const (
	RoleCaller Role = iota + 1
	RoleAgent
)

// String returns "caller" or "agent".
func (r Role) String() string {
	switch r {
	case RoleCaller:
		return "caller"
	case RoleAgent:
		return "agent"
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

// MarshalText implements encoding.TextMarshaler.
func (r Role) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// ParseRole reads "caller" or "agent" (also "external"/"internal", the
// AudioHook names, and "customer").
func ParseRole(s string) (Role, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "caller", "customer", "external":
		return RoleCaller, nil
	case "agent", "internal":
		return RoleAgent, nil
	}
	return 0, fmt.Errorf("unknown role %q (want caller or agent)", s)
}

// Reason says why a score was withheld.
type Reason string

// Abstention reasons.
const (
	// ReasonTooLittleSpeech: the window holds too little voiced speech of
	// the speaker (silence, the other party talking, noise).
	ReasonTooLittleSpeech Reason = "too_little_voiced_speech"
	// ReasonSteadyTone: what is voiced is a steady tone (hold tone, DTMF,
	// test signal), not speech.
	ReasonSteadyTone Reason = "steady_tone"
	// ReasonNoChannel: the call has no channel with that role.
	ReasonNoChannel Reason = "no_channel_for_role"
	// ReasonDisabled: the score is switched off (privacy setting).
	ReasonDisabled Reason = "disabled"
)

// Score is one score for one second: a value from 0 to 100 when OK, else
// the reason it was withheld. Model is the ID of the model that made it.
type Score struct {
	Value  float64
	OK     bool
	Reason Reason
	Model  string
}

// MarshalJSON writes {"value":…,"model":…} or {"value":null,"reason":…,"model":…}.
func (s Score) MarshalJSON() ([]byte, error) {
	if s.OK {
		return fmt.Appendf(nil, `{"value":%s,"model":%q}`, numText(s.Value), s.Model), nil
	}
	return fmt.Appendf(nil, `{"value":null,"reason":%q,"model":%q}`, s.Reason, s.Model), nil
}

func numText(v float64) string {
	b, _ := Num(v).MarshalJSON()
	return string(b)
}

// SecondChannel summarises one channel's second.
type SecondChannel struct {
	Role Role
	// Frames of the second with voice activity, with voicing, and with
	// voice activity while the other party was active too.
	Speech, Voiced, Overlap int
	// F0 is the mean F0 of the voiced frames (NaN if none); Intensity the
	// mean intensity of the voiced frames, dB.
	F0, Intensity float64
}

// Second is the result for one second of a call: both scores and what the
// channels did.
type Second struct {
	// Index is the second's number from the start of the call; it covers
	// audio from Start to End seconds (End − Start is 1 except for the
	// last second of a call).
	Index      int64
	Start, End float64
	// AgentStress and CallerPressure are the scores.
	AgentStress, CallerPressure Score
	// Channels holds NumChannels entries.
	Channels    [2]SecondChannel
	NumChannels int
}

// CallConfig configures a Call.
type CallConfig struct {
	// Model scores the call; nil means DefaultModel().
	Model *Model
	// Roles gives the role of each channel (one or two channels).
	Roles []Role
	// AgentBaseline is the agent's stored baseline from earlier calls, if
	// any; the agent's first stretch of speech in this call is blended
	// with it.
	AgentBaseline *Baseline
	// LineStates, if set, holds one LineState per channel (Call.LineState
	// of the analysis this one takes over from a checkpoint): the
	// channels start from what was learned about the line instead of
	// learning it again.
	LineStates []LineState
	// DisableAgentStress withholds agent_stress (reason "disabled"), for
	// tenants whose privacy mode forbids inferring employees' emotions.
	DisableAgentStress bool
	// OnFrame, if set, receives every frame of every channel (valid only
	// during the call), e.g. to keep per-frame voice activity.
	OnFrame func(ch int, f *Frame)
}

const (
	// maxLead is how many seconds one channel may run ahead of the other
	// before its oldest seconds are scored without the other's.
	maxLead = 128
	// outQueue is the number of finished Seconds kept until read.
	outQueue = 64
	bitsRing = maxLead * FrameRate
)

// channel is the per-channel state of a Call.
type channel struct {
	role     Role
	an       *Analyzer
	speech   [bitsRing / 64]uint64 // voice activity per frame (ring)
	pending  [maxLead]Window       // finished seconds not yet scored (ring)
	pHead    int                   // ring position of the oldest
	pN       int
	base     baselineBuilder
	vdB      float64 // Σ intensity of voiced frames so far
	nVoiced  int
	talkOn   bool // speech in the previous frame (for interruptions)
	silentFr int  // frames since this channel last spoke
	barging  int  // frames of overlap since this channel started over the other (-1: not)
	interr   int  // interruptions: starts of speech over the other party
	overlap  int  // frames of speech over the other party's
	window   Window
	recent   [10]Window // the last seconds, for windows longer than one second

	// Bleed rejection: the recent frames (ring), the frames recorded so
	// far, and the estimated coupling from the other channel into this
	// one (dB: this channel's level when only the other party speaks,
	// relative to the other's).
	recs     [recRing]frameRec
	nrec     int64
	coupling float32
	level    float32 // running peak of the raw intensity (decays 5 dB/s)
	bleed    int     // frames rejected as bleed
	loudHang int     // frames left of the hangover of speech above turnSNR
}

// turnSNR is the SNR (dB, as Frame.SNR) speech must reach to count for
// overlap and turn-taking.
const turnSNR = 12

// frameRec is what bleed rejection keeps of a frame.
type frameRec struct {
	in, snr               float32 // raw intensity (dB) and SNR
	mc                    modelFrame
	speech, talk, nucleus bool // voice activity; speech above turnSNR; a nucleus
}

// Bleed rejection settings. A frame of one channel is the other party's
// bleed (echo, crosstalk) when the other party is clearly speaking (its
// loudest frame over the last bleedLag frames is bleedActiveSNR dB above
// its noise floor) and this channel's level is within bleedMargin dB of
// what the estimated coupling predicts from it. The coupling is tracked as
// the couplingQuantile of this channel's level relative to the other's
// over the frames where the other speaks loudly (within couplingNearPeak
// dB of its running peak) — bleed is always there when the other speaks,
// this party's own speech only sometimes — moving by couplingStep dB a
// frame.
const (
	recRing          = 512 // frames (5.12 s; a power of two)
	bleedLag         = 7   // frames: delays of 0–60 ms
	bleedActiveSNR   = 15  // dB
	bleedMargin      = 10  // dB
	couplingQuantile = 0.3
	couplingNearPeak = 10  // dB
	couplingStep     = 2   // dB
	couplingMin      = -80 // dB
	couplingMax      = -10 // dB
	// The coupling starts at couplingStart: until it has measured the
	// line, a frame more than 20 dB (-(couplingStart+bleedMargin)) under
	// the other party's is taken for its echo (the first words' echo used
	// to pass, with the estimate starting at -50 dB). It is measured only on
	// frames where the other party's level holds within couplingSteady dB
	// over the bleedLag window, so that the echo of any delay in it is
	// there: at a word's onset the window's loudest frame is the source
	// but its echo has not arrived yet, and such frames held the estimate
	// about 15 dB under a -20 dB echo on the dev calls.
	couplingStart  = -30 // dB
	couplingSteady = 6   // dB
)

// otherParty describes the other channel for features relative to it.
type otherParty struct {
	loudness float64 // mean intensity of its voiced frames so far (NaN if none)
	overlap  float64 // fraction of this window's speech over the other's
}

// Call analyses one call: its channels' audio in, a Second per second out,
// and a Summary at the end. Push the channels in step as the audio arrives
// (each channel's chunks in order; one channel may run up to two minutes
// ahead of the other). A Call does not allocate once constructed.
type Call struct {
	m       *Model
	cfg     CallConfig
	ch      []*channel
	next    int64 // next second to score
	out     [outQueue]Second
	oHead   int
	oN      int
	dropped int
	forced  int
	flushed bool
}

// NewCall returns a Call for the configuration.
func NewCall(cfg CallConfig) (*Call, error) {
	if len(cfg.Roles) < 1 || len(cfg.Roles) > 2 {
		return nil, fmt.Errorf("new call: %d channels (want 1 or 2)", len(cfg.Roles))
	}
	if len(cfg.Roles) == 2 && cfg.Roles[0] == cfg.Roles[1] {
		return nil, errors.New("new call: both channels have the same role")
	}
	if len(cfg.LineStates) != 0 && len(cfg.LineStates) != len(cfg.Roles) {
		return nil, fmt.Errorf("new call: %d line states for %d channels", len(cfg.LineStates), len(cfg.Roles))
	}
	for i := range cfg.LineStates {
		if err := cfg.LineStates[i].check(); err != nil {
			return nil, fmt.Errorf("new call: channel %d line state: %w", i, err)
		}
	}
	m := cfg.Model
	if m == nil {
		m = DefaultModel()
	}
	c := &Call{m: m, cfg: cfg}
	for i, r := range cfg.Roles {
		if r != RoleCaller && r != RoleAgent {
			return nil, fmt.Errorf("new call: channel %d: invalid role %v", i, r)
		}
		k := &channel{role: r, barging: -1, coupling: couplingStart}
		idx := i
		k.an = NewAnalyzer(func(f *Frame) { c.frame(idx, f) }, func(w *Window) { c.second(idx, w) })
		var stored *Baseline
		if r == RoleAgent {
			stored = cfg.AgentBaseline
		}
		if r == RoleCaller && m.CallerPressure.Reference == "caller" {
			k.base.initCaller(m)
		} else {
			k.base.init(m, stored, m.Baseline.TargetVoicedFrames)
		}
		if len(cfg.LineStates) != 0 {
			k.restore(&cfg.LineStates[i])
		}
		c.ch = append(c.ch, k)
	}
	return c, nil
}

// Model returns the model scoring the call.
func (c *Call) Model() *Model { return c.m }

// Config returns the configuration the call was built with (e.g. to build
// the call that takes it over, with LineStates).
func (c *Call) Config() CallConfig { return c.cfg }

// Push analyses more 8 kHz samples of channel ch.
func (c *Call) Push(ch int, samples []int16) { c.ch[ch].an.Push(samples) }

// Flush ends the call: the remaining audio is analysed and the last
// seconds are scored.
func (c *Call) Flush() {
	if c.flushed {
		return
	}
	c.flushed = true
	for _, k := range c.ch {
		k.an.Flush()
	}
	// Score what is left, without waiting for a channel that ended
	// earlier.
	for {
		any := false
		for _, k := range c.ch {
			any = any || k.pN > 0
		}
		if !any {
			return
		}
		if c.ch[0].head() != c.next && (len(c.ch) == 1 || c.ch[1].head() != c.next) {
			// A gap: a channel's seconds start later (cannot happen with
			// analysers started together, but keep the loop finite).
			c.next++
			continue
		}
		c.score(true)
	}
}

// NextSecond copies the oldest unread Second into s and reports whether
// there was one. Seconds not read are kept up to a bound; beyond it the
// oldest are dropped (see Dropped).
func (c *Call) NextSecond(s *Second) bool {
	if c.oN == 0 {
		return false
	}
	*s = c.out[c.oHead]
	c.oHead = (c.oHead + 1) % outQueue
	c.oN--
	return true
}

// Dropped returns the number of Seconds dropped because they were not read
// in time.
func (c *Call) Dropped() int { return c.dropped }

// Forced returns the number of times a second was scored without a channel
// that had fallen more than two minutes behind the other, plus the seconds
// of that channel that arrived too late to count.
func (c *Call) Forced() int { return c.forced }

// Baseline returns the current baseline of channel ch's speaker.
func (c *Call) Baseline(ch int) Baseline { return c.ch[ch].base.cur }

// frame receives channel idx's frames.
func (c *Call) frame(idx int, f *Frame) {
	k := c.ch[idx]
	// For overlap and turns, speech counts when it stands clearly above
	// the noise (or within a hangover of such a frame): babble and noise
	// with voiced moments are not a party talking.
	if f.Speech && f.SNR >= turnSNR {
		k.loudHang = vadHangover
	} else if k.loudHang > 0 {
		k.loudHang--
	}
	talking := f.Speech && k.loudHang > 0
	k.recs[f.Index%recRing] = frameRec{in: f.Intensity, snr: f.SNR, mc: k.an.feat.mc, speech: f.Speech, talk: talking, nucleus: f.Nucleus}
	k.nrec = f.Index + 1
	bit := f.Index % bitsRing
	if talking {
		k.speech[bit/64] |= 1 << (bit % 64)
	} else {
		k.speech[bit/64] &^= 1 << (bit % 64)
	}
	if c.cfg.OnFrame != nil {
		c.cfg.OnFrame(idx, f)
	}
}

// second receives channel idx's finished seconds.
func (c *Call) second(idx int, w *Window) {
	k := c.ch[idx]
	if k.pN == maxLead {
		// The other channel is too far behind: score without it.
		c.forced++
		c.score(true)
	}
	if w.Start/FrameRate < c.next {
		// This second was already scored without this channel.
		c.forced++
		return
	}
	k.pending[(k.pHead+k.pN)%maxLead] = *w
	k.pN++
	c.score(false)
}

// head returns the second index of channel k's oldest pending window, or -1.
func (k *channel) head() int64 {
	if k.pN == 0 {
		return -1
	}
	return k.pending[k.pHead].Start / FrameRate
}

// score scores the seconds all channels have finished; with force, it
// scores the oldest pending second even if a channel lacks it.
func (c *Call) score(force bool) {
	for {
		ready, any := true, false
		for _, k := range c.ch {
			if k.head() == c.next {
				any = true
			} else {
				ready = false
			}
		}
		if !ready && !(force && any) {
			return
		}
		c.scoreSecond()
		force = false
	}
}

func (c *Call) speechAt(k *channel, f int64) bool {
	bit := f % bitsRing
	return k.speech[bit/64]&(1<<(bit%64)) != 0
}

// scoreSecond scores second c.next from the pending windows.
func (c *Call) scoreSecond() {
	s := c.next
	c.next++
	var sec Second
	sec.Index = s
	sec.Start = float64(s)
	sec.NumChannels = len(c.ch)
	frames := 0
	for i, k := range c.ch {
		k.window.Reset()
		if k.head() == s {
			k.window = k.pending[k.pHead]
			k.pHead = (k.pHead + 1) % maxLead
			k.pN--
		}
		frames = max(frames, k.window.Frames)
		sec.Channels[i] = SecondChannel{Role: k.role, Speech: k.window.Speech, Voiced: k.window.Voiced,
			F0: math.NaN(), Intensity: k.window.VoicedIntensityDB()}
		if k.window.Voiced > 0 {
			sec.Channels[i].F0 = 100 * math.Exp2(k.window.F0MeanST()/12)
		}
	}
	sec.End = sec.Start + float64(frames)/FrameRate
	if len(c.ch) == 2 {
		c.rejectBleed(s*FrameRate, s*FrameRate+int64(frames))
		for i, k := range c.ch {
			sec.Channels[i].Speech = k.window.Speech
		}
	}
	for _, k := range c.ch {
		k.rejectBackground(s*FrameRate, s*FrameRate+int64(frames))
	}

	// Overlap and interruptions, frame by frame.
	if len(c.ch) == 2 {
		a, b := c.ch[0], c.ch[1]
		for f := s * FrameRate; f < s*FrameRate+int64(frames); f++ {
			sa := f-s*FrameRate < int64(a.window.Frames) && c.speechAt(a, f)
			sb := f-s*FrameRate < int64(b.window.Frames) && c.speechAt(b, f)
			c.turns(a, b, sa, sb)
			c.turns(b, a, sb, sa)
			if sa && sb {
				sec.Channels[0].Overlap++
				sec.Channels[1].Overlap++
			}
			a.talkOn, b.talkOn = sa, sb
		}
	}

	sec.AgentStress = Score{Reason: ReasonNoChannel, Model: c.m.ID()}
	sec.CallerPressure = Score{Reason: ReasonNoChannel, Model: c.m.ID()}
	for i, k := range c.ch {
		var other otherParty
		other.loudness = math.NaN()
		if len(c.ch) == 2 {
			o := c.ch[1-i]
			if o.nVoiced > 0 {
				other.loudness = o.vdB / float64(o.nVoiced)
			}
			if k.window.Speech > 0 {
				other.overlap = float64(sec.Channels[i].Overlap) / float64(k.window.Speech)
			}
		}
		// The scoring window: this second and the ones before it, as the
		// model says.
		copy(k.recent[1:], k.recent[:len(k.recent)-1])
		k.recent[0] = k.window
		var w Window
		for j := c.m.Window - 1; j >= 0; j-- {
			w.Add(&k.recent[j])
		}
		switch k.role {
		case RoleAgent:
			k.base.add(&k.window, &other, k.an.feat.speechLikeEarly())
			if c.cfg.DisableAgentStress {
				sec.AgentStress = Score{Reason: ReasonDisabled, Model: c.m.ID()}
			} else {
				sec.AgentStress = c.m.score(&c.m.AgentStress, &w, &k.base.cur.Reference, &other)
			}
		case RoleCaller:
			k.base.add(&k.window, &other, k.an.feat.speechLikeEarly())
			ref := &c.m.Population
			if c.m.CallerPressure.Reference == "caller" {
				ref = &k.base.cur.Reference
			}
			sec.CallerPressure = c.m.score(&c.m.CallerPressure, &w, ref, &other)

		}
		k.vdB += k.window.vdB
		k.nVoiced += k.window.Voiced
	}
	c.emit(&sec)
}

// rejectBleed removes from each channel's window the frames [from, to)
// that are the other party's bleed: their model features, speech and
// syllable nuclei. It needs both channels' frames from bleedLag before
// from; when one channel ran too far ahead for that, the second is left
// as it is.
func (c *Call) rejectBleed(from, to int64) {
	a, b := c.ch[0], c.ch[1]
	for _, k := range c.ch {
		if k.nrec < to || k.nrec-recRing > from-bleedLag {
			return
		}
	}
	for f := from; f < to; f++ {
		ra, rb := &a.recs[f%recRing], &b.recs[f%recRing]
		a.level = max(a.level-0.05, ra.in)
		b.level = max(b.level-0.05, rb.in)
		ba := c.bleedFrame(a, b, f, ra)
		bb := c.bleedFrame(b, a, f, rb)
		if ba {
			a.drop(f, ra)
		}
		if bb {
			b.drop(f, rb)
		}
	}
}

// bleedFrame updates k's coupling estimate from frame f and reports
// whether the frame is o's bleed.
func (c *Call) bleedFrame(k, o *channel, f int64, r *frameRec) bool {
	omax, osnr, omin := float32(SilenceDB), float32(0), float32(200)
	for d := int64(0); d < bleedLag && d <= f; d++ {
		q := &o.recs[(f-d)%recRing]
		omax, osnr, omin = max(omax, q.in), max(osnr, q.snr), min(omin, q.in)
	}
	if osnr < bleedActiveSNR {
		return false
	}
	// An echo is always quieter than its source: frames louder than
	// couplingMax relative to the other are this party's own (or the other
	// channel holds this party's echo) and say nothing about the coupling.
	if rel := max(r.in-omax, couplingMin); omax >= o.level-couplingNearPeak && omin >= omax-couplingSteady && rel < couplingMax {
		if rel < k.coupling {
			k.coupling = max(k.coupling-couplingStep*(1-couplingQuantile), couplingMin)
		} else {
			k.coupling = min(k.coupling+couplingStep*couplingQuantile, couplingMax)
		}
	}
	return r.in > SilenceDB && r.in < omax+k.coupling+bleedMargin
}

// rejectBackground removes from k's window the model frames of [from,
// to) that lie more than backgroundBelow dB under the loudest model frame
// of the window and less than backgroundSNR dB above the noise, on a line
// whose noise is speech-like (babble): there the
// party's own speech stands above the background voices, whose voiced
// moments clear the SNR gate now and then. A second of babble alone keeps
// its frames (nothing stands above them); see docs/voice-analysis.md §7a.
func (k *channel) rejectBackground(from, to int64) {
	if !k.an.feat.speechLikeNoise() || k.nrec < to || k.nrec-recRing > from {
		return
	}
	top, topSNR := float32(SilenceDB), float32(0)
	for f := from; f < to; f++ {
		if r := &k.recs[f%recRing]; r.mc.voiced && r.mc.raw > top {
			top, topSNR = r.mc.raw, r.mc.snr
		}
	}
	if topSNR >= backgroundTop {
		// The party's speech stands far above the noise: frames
		// backgroundBelow under it are still well above the noise,
		// and the line's noise is not the babble of other voices
		// (a clean line's spread is its speaker's consonants).
		return
	}
	for f := from; f < to; f++ {
		if r := &k.recs[f%recRing]; r.mc.voiced && r.mc.raw < top-backgroundBelow && r.mc.snr < backgroundSNR {
			r.mc.sub(&k.window)
			r.mc.voiced = false
		}
	}
}

// backgroundBelow (dB) is how far under the loudest model frame of a
// second a frame of a babble line is taken for the background. Chosen on
// the dev babble conditions (8, 12, 16, 20 dB tried); on the clean dev
// calls 12.9 % of a speaker's own voiced frames lie that far under the
// second's loudest — the weakest, which over babble are at the babble's
// level and measure it as much as the speaker.
const backgroundBelow = 16

// backgroundSNR (dB): only frames this close to the noise can be the
// background's (the SNR below which the noise-biased terms weigh
// nothing); a clean line's weak frames stand far above its noise.
const backgroundSNR = 10

// backgroundTop (dB): a second whose loudest frame stands this far above
// the noise is not over babble (backgroundBelow + backgroundSNR + 4 dB).
const backgroundTop = 30

// drop removes frame f from k's window: it is the other party's bleed.
func (k *channel) drop(f int64, r *frameRec) {
	w := &k.window
	r.mc.sub(w)
	r.mc.voiced = false
	if r.speech {
		w.Speech--
	}
	bit := f % bitsRing
	k.speech[bit/64] &^= 1 << (bit % 64)
	if r.nucleus {
		w.Nuclei--
	}
	k.bleed++
}

// turns counts, for channel k against the other channel o, the frames of
// overlap and the interruptions: k starts a turn (after interruptGap of its
// own silence) while o is speaking, and both go on for interruptHold.
func (c *Call) turns(k, o *channel, sk, so bool) {
	if sk && so {
		k.overlap++
		if !k.talkOn && k.silentFr >= interruptGap && o.talkOn {
			k.barging = 0
		}
		if k.barging >= 0 {
			k.barging++
			if k.barging == interruptHold {
				k.interr++
				k.barging = -1
			}
		}
	} else {
		k.barging = -1
	}
	if sk {
		k.silentFr = 0
	} else {
		k.silentFr++
	}
}

// An interruption is a start of speech after at least interruptGap frames
// (200 ms) of the speaker's silence, while the other party is speaking,
// with both still speaking interruptHold frames (300 ms) later: turn-taking
// with the voice-activity hangover does not count.
const (
	interruptGap  = 20
	interruptHold = 30
)

func (c *Call) emit(s *Second) {
	if c.oN == outQueue {
		c.oHead = (c.oHead + 1) % outQueue
		c.oN--
		c.dropped++
	}
	c.out[(c.oHead+c.oN)%outQueue] = *s
	c.oN++
}

// featureValue measures feature f on window w, with the other party's
// measures for the features relative to it.
func featureValue(f Feature, w *Window, other *otherParty) float64 {
	switch f {
	case LoudnessVsOther:
		return w.VoicedIntensityDB() - other.loudness
	case Overlap:
		return other.overlap
	}
	return w.Value(f)
}

// Value returns the speaker's own measure of feature f over the window
// (NaN for the features that need the other party, and where the window
// holds too little to measure).
func (w *Window) Value(f Feature) float64 {
	switch f {
	case F0Level:
		return ratio(w.mst, w.mVoiced)
	case F0Variability:
		return w.modelF0SD()
	case Loudness:
		return ratio(w.mdB, w.mVoiced)
	case VocalEffort:
		return ratio(w.mbal, w.mVoiced)
	case SpeechRate:
		if w.Speech < minRateFrames {
			return math.NaN()
		}
		return w.ArticulationRate()
	case HNRFeature:
		return ratio(w.mhnr, w.mVoiced)
	case Jitter:
		return w.Perturbation.JitterLocal()
	case Shimmer:
		return w.Perturbation.ShimmerLocal()
	}
	return math.NaN()
}

// minRateFrames is the least speech (frames) over which a speech rate is
// measured.
const minRateFrames = 30

// sum is Σ weight · clamp((value − reference) / scale, ±clip) over the
// terms that can be measured on w.
func (sm *ScoreModel) sum(w *Window, ref *Reference, other *otherParty) float64 {
	var x float64
	// Features that noise biases (rate, F0 variability, voice quality)
	// count less as the speech nears the noise.
	snrW := 1.0
	if sm.SNRFull > 0 {
		snrW = min(max((w.SNR()-sm.SNRZero)/(sm.SNRFull-sm.SNRZero), 0), 1)
	}
	for _, t := range sm.Terms {
		v := featureValue(t.Feature, w, other)
		if t.Feature.relative() {
			v -= ref.Get(t.Feature)
		}
		if math.IsNaN(v) {
			continue
		}
		wt := t.Weight
		if t.Feature.noiseBiased() {
			wt *= snrW
		}
		x += wt * min(max(v/t.Scale, -sm.Clip), sm.Clip)
	}
	return x
}

// Sum returns the score's logit without its bias for a window of one
// speaker against ref, the terms that need the other party left out (the
// calibration of the bias uses it).
func (sm *ScoreModel) Sum(w *Window, ref *Reference) float64 {
	return sm.sum(w, ref, &otherParty{loudness: math.NaN(), overlap: math.NaN()})
}

// score computes one score on window w against reference ref.
func (m *Model) score(sm *ScoreModel, w *Window, ref *Reference, other *otherParty) Score {
	s := Score{Model: m.ID()}
	// A steady tone is recognised on all voiced frames (the noise floor
	// follows a tone that goes on, so it leaves no frames above it).
	if w.Voiced >= m.Abstain.MinVoicedFrames &&
		(w.VoicedIntensitySD() < m.Abstain.ToneMaxIntensitySD || w.SteadyF0Fraction() >= m.Abstain.ToneMinSteadyF0) {
		s.Reason = ReasonSteadyTone
		return s
	}
	if w.mVoiced < m.Abstain.MinVoicedFrames {
		s.Reason = ReasonTooLittleSpeech
		return s
	}
	s.Value = 100 / (1 + math.Exp(-(sm.Bias + sm.sum(w, ref, other))))
	s.OK = true
	return s
}
