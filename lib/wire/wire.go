// Package wire converts between calmline's protobuf contracts (package
// callv1) and the library's own types: audio formats, channel roles, tenant
// policies and model scores.
package wire

import (
	"errors"
	"fmt"

	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/tenant"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
)

// Codec maps a wire codec to an audio codec.
func Codec(c callv1.Codec) audio.Codec {
	switch c {
	case callv1.Codec_CODEC_PCMU:
		return audio.CodecPCMU
	case callv1.Codec_CODEC_PCMA:
		return audio.CodecPCMA
	case callv1.Codec_CODEC_L16:
		return audio.CodecL16
	}
	return audio.CodecUnknown
}

// CodecOf maps an audio codec to the wire.
func CodecOf(c audio.Codec) callv1.Codec {
	switch c {
	case audio.CodecPCMU:
		return callv1.Codec_CODEC_PCMU
	case audio.CodecPCMA:
		return callv1.Codec_CODEC_PCMA
	case audio.CodecL16:
		return callv1.Codec_CODEC_L16
	}
	return callv1.Codec_CODEC_UNSPECIFIED
}

// Format checks a wire media format and returns it as an audio format.
// Every channel must have a role.
func Format(m *callv1.MediaFormat) (audio.Format, error) {
	if m == nil {
		return audio.Format{}, errors.New("missing media format")
	}
	f := audio.Format{Codec: Codec(m.Codec), SampleRate: int(m.SampleRateHz), Channels: len(m.Channels)}
	if err := f.Validate(); err != nil {
		return audio.Format{}, err
	}
	for i, r := range m.Channels {
		if r != callv1.ChannelRole_CHANNEL_ROLE_CALLER && r != callv1.ChannelRole_CHANNEL_ROLE_AGENT {
			return audio.Format{}, fmt.Errorf("channel %d: role %v", i, r)
		}
	}
	return f, nil
}

// Role maps a role name ("caller", "agent") to the wire.
func Role(s string) (callv1.ChannelRole, error) {
	switch s {
	case "caller", "external", "customer", "inbound":
		return callv1.ChannelRole_CHANNEL_ROLE_CALLER, nil
	case "agent", "internal", "outbound":
		return callv1.ChannelRole_CHANNEL_ROLE_AGENT, nil
	}
	return callv1.ChannelRole_CHANNEL_ROLE_UNSPECIFIED, fmt.Errorf("unknown channel role %q (want caller or agent)", s)
}

// RoleName returns the wire role's name.
func RoleName(r callv1.ChannelRole) string {
	switch r {
	case callv1.ChannelRole_CHANNEL_ROLE_CALLER:
		return "caller"
	case callv1.ChannelRole_CHANNEL_ROLE_AGENT:
		return "agent"
	}
	return "unknown"
}

// ScoreKind maps a score name to the wire.
func ScoreKind(s string) callv1.ScoreKind {
	switch s {
	case tenant.ScoreCallerPressure:
		return callv1.ScoreKind_SCORE_KIND_CALLER_PRESSURE
	case tenant.ScoreAgentStress:
		return callv1.ScoreKind_SCORE_KIND_AGENT_STRESS
	}
	return callv1.ScoreKind_SCORE_KIND_UNSPECIFIED
}

// ScoreName returns the wire score's name.
func ScoreName(k callv1.ScoreKind) string {
	switch k {
	case callv1.ScoreKind_SCORE_KIND_CALLER_PRESSURE:
		return tenant.ScoreCallerPressure
	case callv1.ScoreKind_SCORE_KIND_AGENT_STRESS:
		return tenant.ScoreAgentStress
	}
	return "unknown"
}

// Policy snapshots a tenant's settings for one call.
func Policy(t *tenant.Tenant) *callv1.CallPolicy {
	p := &callv1.CallPolicy{
		StoreAudio:          t.Audio.Store,
		AudioRetentionDays:  uint32(t.Audio.RetentionDays),
		ExposureThreshold:   t.ExposureThreshold,
		ReportRetentionDays: uint32(t.ReportRetentionDays),
	}
	for _, r := range t.Rules() {
		ar := AlertRule(r)
		p.AlertRules = append(p.AlertRules, ar)
		if len(r.Match) == 0 && p.AlertRule == nil {
			// The rule for every call, also where older realtime
			// instances look for it.
			p.AlertRule = ar
		}
	}
	switch t.AgentScoring {
	case tenant.AgentScoringOff:
		p.AgentScoring = callv1.AgentScoring_AGENT_SCORING_OFF
	case tenant.AgentScoringPrivate:
		p.AgentScoring = callv1.AgentScoring_AGENT_SCORING_PRIVATE
	default:
		p.AgentScoring = callv1.AgentScoring_AGENT_SCORING_ON
	}
	return p
}

// AlertRule converts a tenant's rule to the wire.
func AlertRule(r tenant.LabelRule) *callv1.AlertRule {
	return &callv1.AlertRule{
		Id:              r.ID,
		Score:           ScoreKind(r.Score),
		Threshold:       r.Threshold,
		HoldSeconds:     uint32(r.HoldSeconds),
		ClearBelow:      r.ClearBelow,
		CooldownSeconds: uint32(r.CooldownSeconds),
		MatchLabels:     r.Match,
	}
}

// AgentScoringEnabled reports whether a policy lets agent_stress be
// computed.
func AgentScoringEnabled(p *callv1.CallPolicy) bool {
	return p.GetAgentScoring() != callv1.AgentScoring_AGENT_SCORING_OFF
}
