// Package analysis connects the voice analysis to calmline's contracts: it
// builds a call's analyser from the call as the wire describes it, and
// turns the analyser's seconds into score updates labelled with the model
// that made them. Realtime and fullcall use it; the gateway never does.
package analysis

import (
	"fmt"

	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/loudness"
	"github.com/calmline/calmline/lib/wire"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
)

// Second is one analysed second of a call.
type Second = loudness.Second

// Analyzer analyses one call as its audio arrives.
type Analyzer = loudness.Analyzer

// New returns an analyser for a call, and the call's audio format.
func New(call *callv1.Call) (*Analyzer, audio.Format, error) {
	f, err := wire.Format(call.GetFormat())
	if err != nil {
		return nil, audio.Format{}, err
	}
	roles := make([]loudness.Role, len(call.Format.Channels))
	for i, r := range call.Format.Channels {
		switch r {
		case callv1.ChannelRole_CHANNEL_ROLE_CALLER:
			roles[i] = loudness.Caller
		case callv1.ChannelRole_CHANNEL_ROLE_AGENT:
			roles[i] = loudness.Agent
		default:
			return nil, audio.Format{}, fmt.Errorf("channel %d: role %v", i, r)
		}
	}
	an, err := loudness.New(loudness.Options{Format: f, Roles: roles, AgentScoring: wire.AgentScoringEnabled(call.GetPolicy())})
	if err != nil {
		return nil, audio.Format{}, err
	}
	return an, f, nil
}

// Model is the model that produces the scores.
func Model() *callv1.ModelInfo {
	return &callv1.ModelInfo{Name: loudness.ModelName, Version: loudness.ModelVersion}
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
