package fullcall

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/calmline/calmline/fullcall/store"
	"github.com/calmline/calmline/lib/analysis"
	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/wire"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// ReportVersion is the version of the report schema this code writes.
const ReportVersion = 1

// Bounds on what one call may accumulate, so that a misbehaving client
// cannot grow a call's memory or its report without limit. Past them
// entries are merged or counted, never silently lost.
const (
	maxGaps     = 1000
	maxAlerts   = 1000
	maxTimeline = 24 * 3600 // a day of seconds
)

// segmentSeconds is the length of a stored timeline segment. A live call
// keeps at most the current segment in memory; complete segments are in
// the store.
const segmentSeconds = 60

// aggregate turns one call's audio, as it arrives, into a report. Its state
// is the running aggregates and the analyser; for a live call the timeline
// is kept in the store a segment at a time (see checkpoint), so that memory
// does not grow with the call.
type aggregate struct {
	call   *callv1.Call
	format audio.Format
	// an analyses all the call's audio; cov, instead, builds a live call's
	// measures from realtime's per-second analysis where it has it
	// (coverage.go). Exactly one is set.
	an  *analysis.Analyzer
	cov *coverage

	// timeline holds the seconds from segStart on; earlier seconds are in
	// stored segments.
	timeline []point
	segStart uint64

	gaps        []*callv1.Gap
	gapsMerged  int
	liveGaps    []*callv1.Gap
	alerts      []*callv1.AlertEvent
	alertSeen   map[string]bool
	chunks      uint64
	bytes       uint64
	truncatedTL bool

	// keepAudio is the tenant's policy; audio holds what arrived since the
	// last checkpoint, as contiguous runs on the timeline.
	keepAudio bool
	audio     []store.Segment
}

// point is one second of scores; NaN-free: ok flags say what is set. The
// talk shares are in hundredths of the second; talkOK is false for points
// decoded from segments stored before they were kept.
type point struct {
	agent, caller     float32
	agentOK, callerOK bool
	talkOK            bool
	callerTalk        uint8
	agentTalk         uint8
	overlap           uint8
}

func pct(share float64) uint8 { return uint8(math.Round(min(max(share, 0), 1) * 100)) }

func newAggregate(call *callv1.Call) (*aggregate, error) {
	an, f, err := analysis.New(call)
	if err != nil {
		return nil, err
	}
	return &aggregate{call: call, format: f, an: an, alertSeen: map[string]bool{}, keepAudio: call.GetPolicy().GetStoreAudio()}, nil
}

// newLiveAggregate returns the aggregate of a live call whose gateway
// forwards realtime's per-second analysis: it holds up to wait of audio
// for it before analysing the audio itself.
func newLiveAggregate(call *callv1.Call, wait time.Duration) (*aggregate, error) {
	roles, f, err := analysis.Roles(call)
	if err != nil {
		return nil, err
	}
	a := &aggregate{call: call, format: f, alertSeen: map[string]bool{}, keepAudio: call.GetPolicy().GetStoreAudio()}
	a.cov = newCoverage(roles, f.SampleRate, f.FrameBytes(), uint64(wait.Seconds()*float64(f.SampleRate)))
	return a, nil
}

// position is the timeline position received.
func (a *aggregate) position() uint64 {
	if a.cov != nil {
		return a.cov.recv
	}
	return a.an.Timeline()
}

// durable is the timeline position a checkpoint now would cover.
func (a *aggregate) durable() uint64 {
	if a.cov != nil {
		return a.cov.covered
	}
	return a.an.Timeline()
}

// checkpointDue reports whether a checkpoint is due, the last one having
// covered the timeline up to at.
func (a *aggregate) checkpointDue(at, every uint64) bool {
	since := a.durable() - min(at, a.durable())
	if a.cov != nil {
		return since >= every
	}
	// As soon as the analysis has made every second the audio completes
	// (at most a second later).
	return since >= every && (a.complete() || since >= every+uint64(a.format.SampleRate))
}

// analysis adds realtime's analysis of a second (a live call's coverage
// takes it; an aggregate analysing all the audio has no use for it).
func (a *aggregate) analysis(sa *callv1.SecondAnalysis) {
	if a.cov != nil {
		a.covResult(sa)
	}
}

// chunkDone records that chunk seq was added.
func (a *aggregate) chunkDone(seq uint64) {
	if a.cov != nil {
		a.covChunk(seq)
	}
}

// addAudio adds interleaved audio starting at a timeline position. Audio
// that starts after the current position leaves an unexplained hole,
// recorded as a client-loss gap; audio that overlaps what was analysed is
// trimmed.
func (a *aggregate) addAudio(start uint64, data []byte) error {
	fb := uint64(a.format.FrameBytes())
	if uint64(len(data))%fb != 0 {
		return fmt.Errorf("%d bytes is not a whole number of %d-byte sample frames", len(data), fb)
	}
	pos := a.position()
	if start > pos {
		a.gap(&callv1.Gap{StartSample: pos, Samples: start - pos, Reason: callv1.GapReason_GAP_REASON_CLIENT_LOSS})
		pos = a.position()
	} else if start < pos {
		skip := (pos - start) * fb
		if skip >= uint64(len(data)) {
			return nil
		}
		data = data[skip:]
	}
	a.chunks++
	a.bytes += uint64(len(data))
	if a.keepAudio {
		if n := len(a.audio); n > 0 && a.audio[n-1].First+uint64(len(a.audio[n-1].Data))/fb == pos {
			a.audio[n-1].Data = append(a.audio[n-1].Data, data...)
		} else {
			a.audio = append(a.audio, store.Segment{First: pos, Data: append([]byte(nil), data...)})
		}
	}
	if a.cov != nil {
		a.covAudio(data)
		return nil
	}
	a.an.Write(data)
	a.take(a.an.Seconds())
	return nil
}

// addRecording analyses a whole recording (the batch paths), a piece at a
// time so that a cancelled job stops promptly.
func (a *aggregate) addRecording(ctx context.Context, data []byte) error {
	piece := a.format.BytesPerSecond() * 10
	for off := 0; off < len(data); off += piece {
		if err := ctx.Err(); err != nil {
			return err
		}
		a.an.Write(data[off:min(off+piece, len(data))])
		a.take(a.an.Seconds())
	}
	a.chunks, a.bytes = 1, uint64(len(data))
	return nil
}

// gap records a stretch without audio and advances the timeline over it.
// A gap the timeline already covers and the report already lists is a
// replay (the gateway resends what followed the last checkpoint) and is
// ignored.
func (a *aggregate) gap(g *callv1.Gap) {
	pos := a.position()
	end := g.StartSample + g.Samples
	if end > pos {
		if a.cov != nil {
			a.covGap(end - pos)
		} else {
			a.an.Gap(end - pos)
			a.take(a.an.Seconds())
		}
	}
	if a.listed(g) {
		return
	}
	if n := len(a.gaps); n > 0 && a.gaps[n-1].Reason == g.Reason && a.gaps[n-1].StartSample+a.gaps[n-1].Samples == g.StartSample {
		a.gaps[n-1].Samples += g.Samples // contiguous: one gap
		return
	}
	if len(a.gaps) >= maxGaps {
		last := a.gaps[len(a.gaps)-1]
		last.Samples = max(last.Samples, end-last.StartSample)
		a.gapsMerged++
		last.Detail = fmt.Sprintf("%d further gaps merged into this one", a.gapsMerged)
		return
	}
	a.gaps = append(a.gaps, g)
}

// listed reports whether a gap of the same reason already covers g.
func (a *aggregate) listed(g *callv1.Gap) bool {
	for i := len(a.gaps) - 1; i >= 0; i-- {
		h := a.gaps[i]
		if h.StartSample+h.Samples <= g.StartSample {
			return false // gaps are in timeline order
		}
		if h.Reason == g.Reason && h.StartSample <= g.StartSample && g.StartSample+g.Samples <= h.StartSample+h.Samples {
			return true
		}
	}
	return false
}

// event records something that happened during the call, once.
func (a *aggregate) event(e *fullcallv1.CallEvent) {
	switch ev := e.Event.(type) {
	case *fullcallv1.CallEvent_Alert:
		key := ev.Alert.AlertId + "/" + ev.Alert.State.String()
		if a.alertSeen[key] || len(a.alerts) >= maxAlerts {
			return
		}
		a.alertSeen[key] = true
		a.alerts = append(a.alerts, ev.Alert)
	case *fullcallv1.CallEvent_LiveScoringGap:
		g := ev.LiveScoringGap
		for _, h := range a.liveGaps {
			if h.StartSample == g.StartSample && h.Samples == g.Samples && h.Reason == g.Reason {
				return // a replay
			}
		}
		if len(a.liveGaps) < maxGaps {
			a.liveGaps = append(a.liveGaps, g)
		}
	}
}

// take appends analysed seconds to the timeline, by their index: a second
// the analysis could not make (lost in a takeover, see analysis.Resume) is
// recorded as abstained, a second already taken is not taken again.
func (a *aggregate) take(secs []analysis.Second) {
	for _, s := range secs {
		for a.seconds() < uint64(s.Index) && !a.truncatedTL {
			a.appendPoint(point{})
		}
		if uint64(s.Index) < a.seconds() {
			continue
		}
		a.appendPoint(point{
			agent: float32(s.AgentStress.Value), agentOK: s.AgentStress.OK,
			caller: float32(s.CallerPressure.Value), callerOK: s.CallerPressure.OK,
			talkOK: true, callerTalk: pct(s.CallerTalk), agentTalk: pct(s.AgentTalk), overlap: pct(s.Overlap),
		})
	}
}

func (a *aggregate) appendPoint(p point) {
	if a.seconds() >= maxTimeline {
		a.truncatedTL = true
		return
	}
	a.timeline = append(a.timeline, p)
}

// complete reports whether the analysis has made every second that the
// audio so far completes: the best moment for a checkpoint (a takeover
// then loses no second).
func (a *aggregate) complete() bool {
	return a.seconds() >= a.an.Timeline()/uint64(a.format.SampleRate)
}

// seconds is the number of timeline points so far.
func (a *aggregate) seconds() uint64 { return a.segStart + uint64(len(a.timeline)) }

// checkpoint returns the call's durable state at chunk seq, the timeline
// segments to store with it (the complete ones not stored yet and the one
// in progress) and the audio since the last checkpoint; commit, called once
// the checkpoint is stored, lets go of what is now in the store.
func (a *aggregate) checkpoint(cp *store.Checkpoint, seq uint64) (timeline, audio []store.Segment, commit func(), err error) {
	chunks, bytes := a.chunks, a.bytes
	var st []byte
	var later []store.Segment
	audio = a.audio
	if a.cov != nil {
		// The checkpoint covers the seconds taken; the audio still waiting
		// for realtime's analysis is replayed to a resume.
		var m chunkMark
		if st, m, err = a.covState(); err != nil {
			return nil, nil, nil, err
		}
		seq, chunks, bytes = m.seq, m.chunks, m.bytes
		audio, later = a.covAudioBefore(a.audio)
	} else if st, err = a.an.Snapshot(); err != nil {
		return nil, nil, nil, err
	}
	cp.Seq = seq
	cp.Call = a.call
	cp.Analyzer = st
	cp.TimelineLen = a.seconds()
	cp.Partial = &fullcallv1.Report{
		Gaps:            a.gaps,
		Alerts:          a.alerts,
		LiveScoringGaps: a.liveGaps,
		Chunks:          chunks,
		AudioBytes:      bytes,
		Incomplete:      a.truncatedTL,
	}
	for i := 0; i < len(a.timeline); i += segmentSeconds {
		pts := a.timeline[i:min(i+segmentSeconds, len(a.timeline))]
		timeline = append(timeline, store.Segment{First: a.segStart + uint64(i), Data: encodePoints(pts)})
	}
	commit = func() {
		if done := len(a.timeline) / segmentSeconds * segmentSeconds; done > 0 {
			a.timeline = append(a.timeline[:0], a.timeline[done:]...)
			a.segStart += uint64(done)
		}
		a.audio = later
	}
	return timeline, audio, commit, nil
}

// restoreAggregate rebuilds a live call's aggregate from its checkpoint and
// the timeline segments stored with it.
func restoreAggregate(cp *store.Checkpoint, segs []store.Segment, wait time.Duration) (*aggregate, error) {
	var an *analysis.Analyzer
	var cov *coverage
	var f audio.Format
	st, err := analysis.DecodeState(cp.Analyzer)
	if err != nil {
		return nil, err
	}
	if st.Sums != nil {
		// A live call built from realtime's analysis continues so.
		if st.Model != analysis.ModelID() {
			return nil, fmt.Errorf("resume: %w (%s; this is %s)", analysis.ErrModelChanged, st.Model, analysis.ModelID())
		}
		roles, pf, err := analysis.Roles(cp.Call)
		if err != nil {
			return nil, err
		}
		f = pf
		cov = restoreCoverage(st, roles, f.SampleRate, f.FrameBytes(), uint64(wait.Seconds()*float64(f.SampleRate)), cp.Seq, cp.Partial.GetChunks(), cp.Partial.GetAudioBytes())
	} else if an, f, err = analysis.Resume(cp.Call, cp.Analyzer); err != nil {
		return nil, err
	}
	p := cp.Partial
	a := &aggregate{
		call: cp.Call, format: f, an: an, cov: cov, alertSeen: map[string]bool{},
		gaps: p.Gaps, liveGaps: p.LiveScoringGaps, alerts: p.Alerts,
		chunks: p.Chunks, bytes: p.AudioBytes, truncatedTL: p.Incomplete,
		keepAudio: cp.Call.GetPolicy().GetStoreAudio(),
	}
	for _, al := range a.alerts {
		a.alertSeen[al.AlertId+"/"+al.State.String()] = true
	}
	if n := len(a.gaps); n > 0 {
		fmt.Sscanf(a.gaps[n-1].Detail, "%d further gaps merged", &a.gapsMerged)
	}
	// The segment in progress comes back into memory.
	a.segStart = cp.TimelineLen - cp.TimelineLen%segmentSeconds
	for _, s := range segs {
		if s.First == a.segStart {
			pts, err := decodePoints(s.Data)
			if err != nil {
				return nil, err
			}
			a.timeline = pts
		}
	}
	if a.seconds() != cp.TimelineLen {
		return nil, fmt.Errorf("checkpoint covers %d seconds of timeline, the store has %d", cp.TimelineLen, a.seconds())
	}
	return a, nil
}

// A timeline segment is the encoded points of up to segmentSeconds
// seconds. Version 1 (pointBytes each): flags, then each score as a
// float32. Version 2 starts with the byte segmentV2 (never a version-1
// flags byte, which is at most 3) and has point2Bytes each: the version-1
// point (its flags with bit 4 set when the talk shares are known), then the
// caller's talk, the agent's talk and the overlap in hundredths of the
// second. Segments of either version decode, so that
// calls checkpointed by an older instance resume on a newer one.
const (
	pointBytes  = 9
	point2Bytes = 12
	segmentV2   = 0x82
)

func encodePoints(pts []point) []byte {
	b := make([]byte, 0, 1+len(pts)*point2Bytes)
	b = append(b, segmentV2)
	for _, p := range pts {
		var flags byte
		if p.agentOK {
			flags |= 1
		}
		if p.callerOK {
			flags |= 2
		}
		if p.talkOK {
			flags |= 4
		}
		b = append(b, flags)
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(p.agent))
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(p.caller))
		b = append(b, p.callerTalk, p.agentTalk, p.overlap)
	}
	return b
}

func decodePoints(b []byte) ([]point, error) {
	size, v2 := pointBytes, len(b) > 0 && b[0] == segmentV2
	if v2 {
		b, size = b[1:], point2Bytes
	}
	if len(b)%size != 0 {
		return nil, fmt.Errorf("timeline segment of %d bytes", len(b))
	}
	pts := make([]point, len(b)/size)
	for i := range pts {
		e := b[i*size:]
		pts[i] = point{
			agentOK: e[0]&1 != 0, callerOK: e[0]&2 != 0,
			agent:  math.Float32frombits(binary.LittleEndian.Uint32(e[1:])),
			caller: math.Float32frombits(binary.LittleEndian.Uint32(e[5:])),
		}
		if v2 {
			if e[9] > 100 || e[10] > 100 || e[11] > 100 {
				return nil, fmt.Errorf("timeline segment: talk share over 100 at point %d", i)
			}
			pts[i].talkOK, pts[i].callerTalk, pts[i].agentTalk, pts[i].overlap = e[0]&4 != 0, e[9], e[10], e[11]
		}
	}
	return pts, nil
}

// talkTimeline sets each second's talk shares on the report's timeline.
func talkTimeline(tl []*fullcallv1.TimelinePoint, all []point) {
	for i, p := range all {
		if i < len(tl) && p.talkOK {
			c, a, o := float64(p.callerTalk)/100, float64(p.agentTalk)/100, float64(p.overlap)/100
			tl[i].CallerTalk, tl[i].AgentTalk, tl[i].Overlap = &c, &a, &o
		}
	}
}

// report finishes the analysis and builds the report. The timeline ends at
// end (samples per channel) when it is past what the audio covered; stored
// holds the timeline segments before segStart.
func (a *aggregate) report(stored []store.Segment, end uint64, reason fullcallv1.EndReason, incomplete bool, source fullcallv1.Source) (*fullcallv1.Report, error) {
	if pos := a.position(); end > pos {
		if a.cov != nil {
			a.covGap(end - pos)
		} else {
			a.an.Gap(end - pos)
		}
	}
	if a.cov != nil {
		a.covFinish()
	} else {
		a.take(a.an.Flush())
	}
	var all []point
	for _, s := range stored {
		if s.First >= a.segStart {
			break
		}
		pts, err := decodePoints(s.Data)
		if err != nil {
			return nil, err
		}
		if uint64(len(all)) != s.First {
			return nil, fmt.Errorf("timeline segment at second %d after %d seconds", s.First, len(all))
		}
		all = append(all, pts...)
	}
	if uint64(len(all)) != a.segStart {
		return nil, fmt.Errorf("stored timeline has %d seconds; want %d", len(all), a.segStart)
	}
	all = append(all, a.timeline...)

	rate := float64(a.format.SampleRate)
	dur := float64(a.position()) / rate
	started := a.call.GetStartedAt().AsTime()
	if a.call.GetStartedAt() == nil {
		started = time.Now().Add(-time.Duration(dur * float64(time.Second)))
	}
	policy := a.call.GetPolicy()
	thr := policy.GetExposureThreshold()
	if thr == 0 {
		thr = policy.GetAlertRule().GetThreshold()
	}
	r := &fullcallv1.Report{
		Version:         ReportVersion,
		TenantId:        a.call.TenantId,
		CallId:          a.call.CallId,
		AgentId:         a.call.AgentId,
		StartedAt:       timestamppb.New(started),
		EndedAt:         timestamppb.New(started.Add(time.Duration(dur * float64(time.Second)))),
		DurationS:       dur,
		Source:          source,
		Protocol:        a.call.Protocol,
		Format:          a.call.Format,
		Model:           analysis.Model(),
		Gaps:            a.gaps,
		LiveScoringGaps: a.liveGaps,
		Alerts:          a.alerts,
		EndReason:       reason,
		Incomplete:      incomplete || a.truncatedTL,
		Chunks:          a.chunks,
		AudioBytes:      a.bytes,
		CreatedAt:       timestamppb.Now(),
		Labels:          a.call.Labels,
	}
	if policy.GetStoreAudio() {
		r.AudioStored = true
		if days := audioDays(policy); days > 0 {
			r.AudioExpiresAt = timestamppb.New(r.EndedAt.AsTime().Add(time.Duration(days) * 24 * time.Hour))
		}
	}
	var st analysis.Stats
	if a.cov != nil {
		st = a.cov.sums.Stats(a.cov.roles, a.format.SampleRate)
	} else {
		st = a.an.Stats()
	}
	for i, c := range st.Channels {
		v := c.Voice
		r.Channels = append(r.Channels, &fullcallv1.ChannelSummary{
			Index:             uint32(i),
			Role:              a.call.Format.Channels[i],
			TalkS:             c.TalkSeconds,
			SilenceS:          c.SilenceSeconds,
			IntensityMeanDb:   defined(c.IntensityMeanDB),
			VoicedFraction:    defined(float64(v.VoicedFraction)),
			F0MeanHz:          defined(float64(v.F0MeanHz)),
			F0MedianHz:        defined(float64(v.F0MedianHz)),
			F0SdHz:            defined(float64(v.F0SDHz)),
			F0P05Hz:           defined(float64(v.F0P05Hz)),
			F0P95Hz:           defined(float64(v.F0P95Hz)),
			JitterLocalPct:    defined(float64(v.JitterLocalPct)),
			JitterRapPct:      defined(float64(v.JitterRAPPct)),
			ShimmerLocalPct:   defined(float64(v.ShimmerLocalPct)),
			ShimmerApq3Pct:    defined(float64(v.ShimmerAPQ3Pct)),
			HnrMeanDb:         defined(float64(v.HNRMeanDB)),
			SpeechRateSylPerS: defined(float64(v.SpeechRate)),
		})
	}
	r.Overlap = &fullcallv1.Overlap{
		OverlapS:            st.OverlapSeconds,
		CallerInterruptions: uint32(st.CallerInterruptions),
		AgentInterruptions:  uint32(st.AgentInterruptions),
	}
	agentOn := wire.AgentScoringEnabled(policy)
	r.AgentStress = &fullcallv1.ScoreSummary{Threshold: thr}
	r.CallerPressure = &fullcallv1.ScoreSummary{Threshold: thr}
	r.Timeline = make([]*fullcallv1.TimelinePoint, len(all))
	for i, p := range all {
		tp := &fullcallv1.TimelinePoint{Second: uint32(i)}
		if p.agentOK && agentOn {
			v := analysis.RoundScore(float64(p.agent)) // float32 storage: 70.3 reads back as 70.30000305
			tp.AgentStress = &v
		}
		if p.callerOK {
			v := analysis.RoundScore(float64(p.caller))
			tp.CallerPressure = &v
		}
		summarise(r.AgentStress, i, tp.AgentStress)
		summarise(r.CallerPressure, i, tp.CallerPressure)
		r.Timeline[i] = tp
	}
	for _, s := range []*fullcallv1.ScoreSummary{r.AgentStress, r.CallerPressure} {
		if s.ScoredSeconds > 0 {
			s.Mean = analysis.RoundScore(s.Mean / float64(s.ScoredSeconds))
		}
	}

	talkTimeline(r.Timeline, all)
	return r, nil
}

// audioDays is how long a call's audio is kept: its own retention, else the
// report's; 0 keeps it.
func audioDays(p *callv1.CallPolicy) uint32 {
	if d := p.GetAudioRetentionDays(); d > 0 {
		return d
	}
	return p.GetReportRetentionDays()
}

// defined maps an undefined measure (NaN: no voiced speech, too few
// pulses) to 0, which the report's proto3 doubles cannot tell from unset.
func defined(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

// summarise adds one second to a score summary; Mean holds the sum until
// the caller divides.
func summarise(s *fullcallv1.ScoreSummary, second int, v *float64) {
	if v == nil {
		s.AbstainedSeconds++
		return
	}
	s.Scored = true
	s.ScoredSeconds++
	s.Mean += *v
	if *v > s.Peak || s.ScoredSeconds == 1 {
		s.Peak, s.PeakSecond = *v, uint32(second)
	}
	if *v >= s.Threshold {
		s.SecondsAboveThreshold++
	}
}
