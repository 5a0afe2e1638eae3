package fullcall

import (
	"fmt"
	"math"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/calmline/calmline/lib/analysis"
	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/wire"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// ReportVersion is the version of the report schema this code writes.
const ReportVersion = 1

// Bounds on what one call may accumulate, so that a misbehaving client
// cannot grow a call's memory without limit. Past them entries are merged
// or counted, never silently lost.
const (
	maxGaps     = 1000
	maxAlerts   = 1000
	maxTimeline = 24 * 3600 // a day of seconds
)

// aggregate turns one call's audio, as it arrives, into a report. Its state
// is the running aggregates: memory does not grow with the audio, only
// with the one-point-per-second timeline.
type aggregate struct {
	call   *callv1.Call
	format audio.Format
	an     *analysis.Analyzer

	timeline    []point
	gaps        []*callv1.Gap
	gapsMerged  int
	liveGaps    []*callv1.Gap
	alerts      []*callv1.AlertEvent
	alertSeen   map[string]bool
	chunks      uint64
	bytes       uint64
	truncatedTL bool
}

// point is one second of scores; NaN-free: ok flags say what is set.
type point struct {
	agent, caller     float32
	agentOK, callerOK bool
}

func newAggregate(call *callv1.Call) (*aggregate, error) {
	an, f, err := analysis.New(call)
	if err != nil {
		return nil, err
	}
	return &aggregate{call: call, format: f, an: an, alertSeen: map[string]bool{}}, nil
}

// audio adds interleaved audio starting at a timeline position. Audio that
// starts after the current position leaves an unexplained hole, recorded
// as a client-loss gap; audio that overlaps what was analysed is trimmed.
func (a *aggregate) audio(start uint64, data []byte) error {
	fb := uint64(a.format.FrameBytes())
	if uint64(len(data))%fb != 0 {
		return fmt.Errorf("%d bytes is not a whole number of %d-byte sample frames", len(data), fb)
	}
	pos := a.an.Timeline()
	if start > pos {
		a.gap(&callv1.Gap{StartSample: pos, Samples: start - pos, Reason: callv1.GapReason_GAP_REASON_CLIENT_LOSS})
	} else if start < pos {
		skip := (pos - start) * fb
		if skip >= uint64(len(data)) {
			return nil
		}
		data = data[skip:]
	}
	a.chunks++
	a.bytes += uint64(len(data))
	a.an.Write(data)
	a.take(a.an.Seconds())
	return nil
}

// gap records a stretch without audio and advances the timeline over it.
func (a *aggregate) gap(g *callv1.Gap) {
	pos := a.an.Timeline()
	if end := g.StartSample + g.Samples; end > pos {
		a.an.Gap(end - pos)
		a.take(a.an.Seconds())
	}
	if n := len(a.gaps); n > 0 && a.gaps[n-1].Reason == g.Reason && a.gaps[n-1].StartSample+a.gaps[n-1].Samples == g.StartSample {
		a.gaps[n-1].Samples += g.Samples // contiguous: one gap
		return
	}
	if len(a.gaps) >= maxGaps {
		last := a.gaps[len(a.gaps)-1]
		last.Samples = g.StartSample + g.Samples - last.StartSample
		last.Detail = fmt.Sprintf("%d further gaps merged into this one", a.gapsMerged+1)
		a.gapsMerged++
		return
	}
	a.gaps = append(a.gaps, g)
}

// event records something that happened during the call.
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
		if len(a.liveGaps) < maxGaps {
			a.liveGaps = append(a.liveGaps, ev.LiveScoringGap)
		}
	}
}

func (a *aggregate) take(secs []analysis.Second) {
	for _, s := range secs {
		if len(a.timeline) >= maxTimeline {
			a.truncatedTL = true
			return
		}
		a.timeline = append(a.timeline, point{
			agent: float32(s.AgentStress.Value), agentOK: s.AgentStress.OK,
			caller: float32(s.CallerPressure.Value), callerOK: s.CallerPressure.OK,
		})
	}
}

// report finishes the analysis and builds the report. The timeline ends at
// end (samples per channel) when it is past what the audio covered.
func (a *aggregate) report(end uint64, reason fullcallv1.EndReason, incomplete bool, source fullcallv1.Source) *fullcallv1.Report {
	if pos := a.an.Timeline(); end > pos {
		a.an.Gap(end - pos)
	}
	a.take(a.an.Flush())
	rate := float64(a.format.SampleRate)
	dur := float64(a.an.Timeline()) / rate
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
	st := a.an.Stats()
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
	r.Timeline = make([]*fullcallv1.TimelinePoint, len(a.timeline))
	for i, p := range a.timeline {
		tp := &fullcallv1.TimelinePoint{Second: uint32(i)}
		if p.agentOK && agentOn {
			v := float64(p.agent)
			tp.AgentStress = &v
		}
		if p.callerOK {
			v := float64(p.caller)
			tp.CallerPressure = &v
		}
		summarise(r.AgentStress, i, tp.AgentStress)
		summarise(r.CallerPressure, i, tp.CallerPressure)
		r.Timeline[i] = tp
	}
	for _, s := range []*fullcallv1.ScoreSummary{r.AgentStress, r.CallerPressure} {
		if s.ScoredSeconds > 0 {
			s.Mean /= float64(s.ScoredSeconds)
		}
	}
	return r
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
