package fullcall

import (
	"fmt"

	"github.com/calmline/calmline/fullcall/store"
	"github.com/calmline/calmline/lib/analysis"
	"github.com/calmline/calmline/lib/voice"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
)

// Analysing each second once. realtime analyses every live call second by
// second and sends, beside each score, the second's analysis
// (callv1.SecondAnalysis: the scores, talk shares and the sums of every
// measure the report holds); the gateway forwards it on the call's Record
// stream, through its replay log, after the audio it covers. When the
// gateway says it does so (OpenCall.realtime_analysis), a live call's
// report is built from those results (a coverage) and fullcall analyses
// audio itself only where they are missing:
//
//   - Audio waits, not analysed, until a result covers it. A result is
//     taken for its second when fullcall holds all of that second's audio
//     and realtime analysed as much of it as audio (not gaps) as fullcall
//     received; its audio is then let go.
//   - Seconds no result covers (realtime down, late or moved to another
//     instance, chunks it dropped, the last ones at hang-up) are analysed
//     by fullcall: when the audio waiting exceeds Options.RealtimeWait,
//     when a result arrives for a later second, and when the call ends.
//     Its analyser starts at the first such second and goes on until a
//     result is taken again; nothing is dropped.
//   - The report's measures are the Sums of all seconds, whichever side
//     analysed them; calmline_fullcall_seconds_analysed_total counts the
//     seconds by source.
//
// A checkpoint covers the seconds taken (results or fullcall's own), and
// acknowledges the chunks entirely before them: the audio still waiting is
// not acknowledged, so the gateway keeps it, with the results after it, and
// replays both to whichever instance resumes the call.
type coverage struct {
	roles []voice.Role
	rate  uint64
	fb    uint64 // bytes per sample frame
	wait  uint64 // samples of audio held for realtime's results

	// covered: every second before it is on the timeline and in sums.
	// claimed: own has been given the audio [covered, claimed). recv: the
	// timeline received. pend holds [claimed, recv).
	covered, claimed, recv uint64
	pend                   []piece
	own                    *analysis.Analyzer
	// agent is the agent's baseline for a new own analyser: the last one's.
	agent *voice.Baseline
	sums  *analysis.Sums

	// marks are the chunks not yet covered; acked is the last one covered.
	marks []chunkMark
	acked chunkMark
	// chunkStart is where the audio of the chunk being added starts
	// (chunkAudio: it had some).
	chunkStart uint64
	chunkAudio bool

	// Seconds taken from realtime's results and analysed here, and results
	// not taken, not yet added to the metrics.
	fromRealtime, fromSelf int64
	// notTaken counts realtime's analyses not taken, by reason (see
	// notTakenReasons), not yet added to the metrics.
	notTaken [3]int64
}

// Why realtime's analysis of a second was not taken: fullcall had that
// second already (it analysed it itself, or the analysis is a replay); it
// was of other audio than fullcall holds (chunks realtime's queue dropped,
// the second a realtime instance took the call over in, audio fullcall
// does not have yet); or it was malformed or of another model.
const (
	notTakenLate = iota
	notTakenOtherAudio
	notTakenInvalid
)

var notTakenReasons = [...]string{"late", "other_audio", "invalid"}

// piece is a stretch of the timeline waiting: audio, or a gap of gap
// samples when data is nil.
type piece struct {
	start uint64
	data  []byte
	gap   uint64
}

func (p *piece) samples(fb uint64) uint64 {
	if p.data == nil {
		return p.gap
	}
	return uint64(len(p.data)) / fb
}

// chunkMark is where a chunk started and ended on the timeline and the
// counts after it.
type chunkMark struct {
	seq, start, end uint64
	chunks, bytes   uint64
}

func newCoverage(roles []voice.Role, rate, fb int, wait uint64) *coverage {
	return &coverage{roles: roles, rate: uint64(rate), fb: uint64(fb), wait: max(wait, uint64(rate)), sums: analysis.NewSums(len(roles))}
}

// covAudio adds audio at the end of the timeline received.
func (a *aggregate) covAudio(data []byte) {
	c := a.cov
	c.chunkStart, c.chunkAudio = c.recv, true
	c.pend = append(c.pend, piece{start: c.recv, data: data})
	c.recv += uint64(len(data)) / c.fb
	a.covSpill()
}

// covGap adds a gap at the end of the timeline received.
func (a *aggregate) covGap(samples uint64) {
	c := a.cov
	if n := len(c.pend); n > 0 && c.pend[n-1].data == nil {
		c.pend[n-1].gap += samples
	} else {
		c.pend = append(c.pend, piece{start: c.recv, gap: samples})
	}
	c.recv += samples
	a.covSpill()
}

// covChunk records that chunk seq ended at the timeline received.
func (a *aggregate) covChunk(seq uint64) {
	c := a.cov
	start := c.recv // nothing of it was new
	if c.chunkAudio {
		start, c.chunkAudio = c.chunkStart, false
	}
	c.marks = append(c.marks, chunkMark{seq: seq, start: start, end: c.recv, chunks: a.chunks, bytes: a.bytes})
	a.covAcked()
}

// covAcked moves the chunks that the covered seconds hold to acked.
func (a *aggregate) covAcked() {
	c := a.cov
	i := 0
	for i < len(c.marks) && c.marks[i].end <= c.covered {
		c.acked = c.marks[i]
		i++
	}
	if i > 0 {
		c.marks = append(c.marks[:0], c.marks[i:]...)
	}
}

// covSpill has fullcall analyse the oldest waiting audio while more than
// the wait bound of it waits, a second at a time.
func (a *aggregate) covSpill() {
	c := a.cov
	for c.recv-c.claimed > c.wait {
		a.covFeed(min((c.claimed/c.rate+1)*c.rate, c.recv))
	}
}

// covFeed gives own analyser the waiting timeline up to upTo.
func (a *aggregate) covFeed(upTo uint64) {
	c := a.cov
	if c.own == nil {
		an, _, err := analysis.NewAt(a.call, c.covered, c.agent)
		if err != nil {
			// The call's format was accepted at open; this cannot fail.
			panic(fmt.Sprintf("fullcall: analyser for an accepted call: %v", err))
		}
		c.own, c.claimed = an, c.covered
	}
	for len(c.pend) > 0 && c.pend[0].start < upTo {
		p := &c.pend[0]
		n := min(p.samples(c.fb), upTo-p.start)
		if p.data == nil {
			c.own.Gap(n)
			p.gap -= n
		} else {
			// At most a second per write, so that the channels stay
			// within what the voice analysis can pair up (its per-second
			// sums need both channels' frames).
			for off := uint64(0); off < n*c.fb; off += c.rate * c.fb {
				c.own.Write(p.data[off:min(off+c.rate*c.fb, n*c.fb)])
				a.takeOwn(c.own.Seconds())
			}
			p.data = p.data[n*c.fb:]
		}
		p.start += n
		c.claimed = p.start
		if p.samples(c.fb) == 0 {
			c.pend[0] = piece{} // let go of its audio
			c.pend = c.pend[1:]
		}
	}
	a.takeOwn(c.own.Seconds())
}

// covFlush ends own analyser: every second it was given is taken.
func (a *aggregate) covFlush() {
	c := a.cov
	if c.own == nil {
		return
	}
	a.takeOwn(c.own.Flush())
	a.covOwnBaseline()
	c.own = nil
	c.covered = max(c.covered, c.claimed)
	a.covAcked()
}

// covOwnBaseline keeps own analyser's agent baseline for the next one.
func (a *aggregate) covOwnBaseline() {
	c := a.cov
	for i, r := range c.roles {
		if r == voice.RoleAgent {
			b := c.own.Baseline(i)
			c.agent = &b
		}
	}
}

// takeOwn takes seconds fullcall analysed itself.
func (a *aggregate) takeOwn(secs []analysis.Second) {
	c := a.cov
	for _, s := range secs {
		if uint64(s.Index) < a.seconds() {
			continue // taken already (a result covered it)
		}
		sa := analysis.SecondAnalysis(s)
		if sa == nil {
			// The analysis could not pair the channels' frames (it never
			// happens with writes of a second at most); the timeline still
			// gets the second.
			sa = &callv1.SecondAnalysis{Second: uint32(s.Index), EndSample: s.EndSample, AudioSamples: s.AudioSamples}
		}
		a.take([]analysis.Second{s})
		c.sums.Add(sa, int(c.rate))
		c.covered = max(c.covered, s.EndSample)
		c.fromSelf++
	}
	a.covAcked()
}

// covResult takes realtime's analysis of a second, if it covers what
// fullcall received; otherwise fullcall analyses that second itself.
func (a *aggregate) covResult(sa *callv1.SecondAnalysis) {
	c := a.cov
	start := uint64(sa.Second) * c.rate
	if start < c.claimed || start < c.covered || uint64(sa.Second) < a.seconds() {
		c.notTaken[notTakenLate]++ // fullcall has analysed it, or a replay
		return
	}
	if err := analysis.CheckSecond(sa, len(c.roles), int(c.rate)); err != nil {
		c.notTaken[notTakenInvalid]++
		return
	}
	if sa.EndSample > c.recv || c.audioIn(start, sa.EndSample) != sa.AudioSamples {
		// realtime analysed other audio than fullcall holds (it dropped
		// chunks, or started this second on another instance).
		c.notTaken[notTakenOtherAudio]++
		return
	}
	// Seconds before it that no result covered are analysed here first.
	if c.claimed < start {
		a.covFeed(start)
	}
	a.covFlush()
	if c.covered != start {
		c.notTaken[notTakenOtherAudio]++
		return
	}
	for a.seconds() < uint64(sa.Second) && !a.truncatedTL {
		a.appendPoint(point{})
	}
	a.appendPoint(point{
		agent: float32(sa.GetAgentStress()), agentOK: sa.AgentStress != nil,
		caller: float32(sa.GetCallerPressure()), callerOK: sa.CallerPressure != nil,
		talkOK: true, callerTalk: pct(sa.CallerTalk), agentTalk: pct(sa.AgentTalk), overlap: pct(sa.Overlap),
	})
	c.sums.Add(sa, int(c.rate))
	c.fromRealtime++
	// Its audio is let go.
	for len(c.pend) > 0 && c.pend[0].start < sa.EndSample {
		p := &c.pend[0]
		n := min(p.samples(c.fb), sa.EndSample-p.start)
		if p.data == nil {
			p.gap -= n
		} else {
			p.data = p.data[n*c.fb:]
		}
		p.start += n
		if p.samples(c.fb) == 0 {
			c.pend[0] = piece{} // let go of its audio
			c.pend = c.pend[1:]
		}
	}
	c.covered, c.claimed = sa.EndSample, sa.EndSample
	a.covAcked()
}

// audioIn returns the samples of [start, end) that are audio, of what
// waits.
func (c *coverage) audioIn(start, end uint64) uint64 {
	var n uint64
	for i := range c.pend {
		p := &c.pend[i]
		if p.start >= end {
			break
		}
		if p.data == nil || p.start+p.samples(c.fb) <= start {
			continue
		}
		n += min(p.start+p.samples(c.fb), end) - max(p.start, start)
	}
	return n
}

// covFinish analyses whatever no result covered, at the end of the call.
func (a *aggregate) covFinish() {
	c := a.cov
	if c.recv > c.claimed {
		a.covFeed(c.recv)
	}
	a.covFlush()
}

// covState is the checkpoint of a coverage: the measures over the seconds
// covered (also as Stats, for instances that predate Sums), and where the
// timeline and the chunks stand.
func (a *aggregate) covState() ([]byte, chunkMark, error) {
	c := a.cov
	st := analysis.State{Model: analysis.ModelID(), Timeline: c.covered, Stats: c.sums.Stats(c.roles, int(c.rate)), Sums: c.sums}
	for i, r := range c.roles {
		b := analysis.PopulationBaseline()
		if r == voice.RoleAgent && c.agent != nil {
			b = *c.agent
		}
		if c.own != nil {
			b = c.own.Baseline(i)
		}
		st.Baselines = append(st.Baselines, b)
	}
	b, err := analysis.EncodeState(&st)
	// The checkpoint counts the audio up to where it covers: the chunk it
	// ends in is counted (replayed, or a new gateway's next chunk) but its
	// bytes before that point are counted here, since a replay of it is
	// trimmed to what follows.
	m := c.acked
	if len(c.marks) > 0 && c.marks[0].start < c.covered && c.marks[0].end > c.covered {
		m.bytes += (c.covered - max(c.marks[0].start, m.end)) * c.fb
	}
	return b, m, err
}

// covAudioBefore splits the audio kept for storage at the covered
// position: what lies before it goes with the checkpoint, the rest waits
// for the next (a resume replays it).
func (a *aggregate) covAudioBefore(segs []store.Segment) (now, later []store.Segment) {
	end := a.cov.covered
	fb := a.cov.fb
	for _, s := range segs {
		n := uint64(len(s.Data)) / fb
		switch {
		case s.First+n <= end:
			now = append(now, s)
		case s.First >= end:
			later = append(later, s)
		default:
			k := (end - s.First) * fb
			now = append(now, store.Segment{First: s.First, Data: s.Data[:k]})
			later = append(later, store.Segment{First: end, Data: append([]byte(nil), s.Data[k:]...)})
		}
	}
	return now, later
}

// restoreCoverage continues a coverage from its checkpoint state.
func restoreCoverage(st *analysis.State, roles []voice.Role, rate, fb int, wait uint64, seq uint64, chunks, bytes uint64) *coverage {
	c := &coverage{roles: roles, rate: uint64(rate), fb: uint64(fb), wait: max(wait, uint64(rate)), sums: st.Sums}
	c.covered, c.claimed, c.recv = st.Timeline, st.Timeline, st.Timeline
	c.acked = chunkMark{seq: seq, end: st.Timeline, chunks: chunks, bytes: bytes}
	for i, r := range roles {
		if r == voice.RoleAgent && i < len(st.Baselines) && st.Baselines[i].Source != "population" {
			b := st.Baselines[i]
			c.agent = &b
		}
	}
	if len(c.sums.Channels) != len(roles) {
		c.sums.Channels = append(c.sums.Channels, make([]analysis.ChannelSums, max(len(roles)-len(c.sums.Channels), 0))...)
	}
	return c
}

// settle analyses the audio still waiting for realtime's analysis, up to
// the last whole second, so that the checkpoint a broken or drained stream
// leaves holds it: no more results come on that stream, and a call nobody
// resumes is stored from its checkpoint.
func (a *aggregate) settle() {
	c := a.cov
	if c == nil {
		return
	}
	if whole := c.recv / c.rate * c.rate; whole > c.claimed {
		a.covFeed(whole)
	}
	a.covFlush()
}
