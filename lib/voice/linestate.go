package voice

import (
	"fmt"
	"math"
)

// LineState is what a channel has learned about its line — not about its
// speaker — that decides how the audio to come is read: the voice-activity
// floor and peak trackers, the noise's spread and mean power, the
// syllable and pulse detectors' loudest levels so far, the bleed coupling
// from the other channel and the running level it is measured against,
// and the voiced level the other party's loudness_vs_other is taken
// against. A Call analysing a call taken over from a checkpoint starts
// from it (CallConfig.LineStates) instead of learning the line again: a
// fresh channel starts its floor 20 dB under its first frame and its
// coupling at -30 dB, and for seconds after a takeover judged speech,
// overlap and bleed differently from the analysis that never stopped.
//
// It holds no audio and no speech content: a few levels (dB), powers and
// counts, a fixed size whatever the call's length. The fields are exported
// for encoding (gob, JSON); treat them as opaque. Call.LineState exports
// it; NewCall checks it (finite, in range) and refuses an invalid one.
type LineState struct {
	// Heard counts the channel's non-silent frames, up to the floor's
	// fast start (0: the line has not been heard; the rest is unset).
	Heard int32 `json:"heard"`
	// FloorDB and PeakDB are the voice-activity noise floor and decaying
	// peak (dB); FloorTouched says the floor has reached the line's noise.
	FloorDB      float32 `json:"floor_db"`
	PeakDB       float32 `json:"peak_db"`
	FloorTouched bool    `json:"floor_touched"`
	// Spread is the unvoiced frames' mean level above the floor (dB) and
	// SpreadW the weight its exponential mean has reached; SpreadN counts
	// its frames up to its time constant. SpreadE, SpreadEW and SpreadEN
	// are the same measured only since the floor touched the noise.
	Spread   float32 `json:"spread"`
	SpreadW  float32 `json:"spread_w"`
	SpreadN  int32   `json:"spread_n"`
	SpreadE  float32 `json:"spread_e"`
	SpreadEW float32 `json:"spread_ew"`
	SpreadEN int32   `json:"spread_en"`
	// NoiseKnown says NoisePower, NoiseHi and NoiseLo (the noise's mean
	// power overall, above and below 1 kHz; linear) are set.
	NoiseKnown bool    `json:"noise_known"`
	NoisePower float32 `json:"noise_power"`
	NoiseHi    float32 `json:"noise_hi"`
	NoiseLo    float32 `json:"noise_lo"`
	// SyllableMaxDB is the loudest smooth intensity so far (dB), the
	// reference of syllable-nucleus peaks.
	SyllableMaxDB float32 `json:"syllable_max_db"`
	// BlockPeak is the held running peak of the sub-block amplitude and
	// BlockPeakAge the sub-blocks since it was set; BlockMax is the
	// loudest sub-block peak so far (linear, scaled to ±1).
	BlockPeak    float32 `json:"block_peak"`
	BlockPeakAge int32   `json:"block_peak_age"`
	BlockMax     float32 `json:"block_max"`
	// CouplingDB is the estimated coupling from the other channel into
	// this one (dB) and LevelDB this channel's running level (dB) that
	// bleed rejection measures against. Stereo calls only.
	CouplingDB float32 `json:"coupling_db"`
	LevelDB    float32 `json:"level_db"`
	// VoicedDBSum is the sum of the intensities (dB) of the VoicedFrames
	// voiced frames scored so far.
	VoicedDBSum  float64 `json:"voiced_db_sum"`
	VoicedFrames int64   `json:"voiced_frames"`
}

// LineState returns what channel ch has learned about its line so far,
// for a checkpoint. It reads a few numbers and does not allocate.
func (c *Call) LineState(ch int) LineState {
	k := c.ch[ch]
	a := k.an
	s := &a.feat
	ls := LineState{
		CouplingDB:   k.coupling,
		LevelDB:      k.level,
		VoicedDBSum:  k.vdB,
		VoicedFrames: int64(k.nVoiced),
	}
	if !s.started {
		return ls
	}
	ls.Heard = int32(max(s.heard, 1))
	ls.FloorDB, ls.PeakDB, ls.FloorTouched = s.floorDB, s.peakDB, s.touched
	ls.Spread, ls.SpreadW, ls.SpreadN = s.spread, s.spreadW, int32(s.spreadN)
	ls.SpreadE, ls.SpreadEW, ls.SpreadEN = s.spreadE, s.spreadEW, int32(min(s.spreadEN, math.MaxInt32))
	ls.NoiseKnown = s.noiseInit
	ls.NoisePower, ls.NoiseHi, ls.NoiseLo = s.noiseP, s.noiseHi, s.noiseLo
	ls.SyllableMaxDB = s.sylMax
	ls.BlockPeak, ls.BlockPeakAge, ls.BlockMax = a.gPeak, a.gAge, a.gMax
	return ls
}

// check names the first field of ls out of its range.
func (ls *LineState) check() error {
	for _, f := range []struct {
		name   string
		v      float64
		lo, hi float64
	}{
		{"floor_db", float64(ls.FloorDB), -400, 400},
		{"peak_db", float64(ls.PeakDB), -400, 400},
		{"spread", float64(ls.Spread), -1000, spreadMax},
		{"spread_w", float64(ls.SpreadW), 0, 1},
		{"spread_e", float64(ls.SpreadE), -1000, spreadMax},
		{"spread_ew", float64(ls.SpreadEW), 0, 1},
		{"noise_power", float64(ls.NoisePower), 0, math.MaxFloat32},
		{"noise_hi", float64(ls.NoiseHi), 0, math.MaxFloat32},
		{"noise_lo", float64(ls.NoiseLo), 0, math.MaxFloat32},
		{"syllable_max_db", float64(ls.SyllableMaxDB), -400, 400},
		{"block_peak", float64(ls.BlockPeak), 0, math.MaxFloat32},
		{"block_max", float64(ls.BlockMax), 0, math.MaxFloat32},
		{"coupling_db", float64(ls.CouplingDB), couplingMin, couplingMax},
		{"level_db", float64(ls.LevelDB), -400, 400},
		{"voiced_db_sum", ls.VoicedDBSum, -math.MaxFloat64, math.MaxFloat64},
	} {
		if math.IsNaN(f.v) || f.v < f.lo || f.v > f.hi {
			return fmt.Errorf("%s %v out of [%v, %v]", f.name, f.v, f.lo, f.hi)
		}
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"heard", int64(ls.Heard)}, {"spread_n", int64(ls.SpreadN)}, {"spread_en", int64(ls.SpreadEN)},
		{"block_peak_age", int64(ls.BlockPeakAge)}, {"voiced_frames", ls.VoicedFrames},
	} {
		if f.v < 0 {
			return fmt.Errorf("%s %d is negative", f.name, f.v)
		}
	}
	if ls.VoicedFrames > math.MaxInt32 {
		return fmt.Errorf("voiced_frames %d out of range", ls.VoicedFrames)
	}
	return nil
}

// restore gives channel k the line state ls (checked).
func (k *channel) restore(ls *LineState) {
	k.coupling, k.level = ls.CouplingDB, ls.LevelDB
	k.vdB, k.nVoiced = ls.VoicedDBSum, int(ls.VoicedFrames)
	if ls.Heard == 0 {
		return
	}
	a := k.an
	s := &a.feat
	s.started, s.heard = true, int(min(ls.Heard, vadFastFrames))
	s.floorDB, s.peakDB, s.touched = ls.FloorDB, ls.PeakDB, ls.FloorTouched
	s.spread, s.spreadW, s.spreadN = ls.Spread, ls.SpreadW, int(min(ls.SpreadN, spreadKnown))
	s.spreadE, s.spreadEW, s.spreadEN = ls.SpreadE, ls.SpreadEW, int(ls.SpreadEN)
	s.noiseInit = ls.NoiseKnown
	s.noiseP, s.noiseHi, s.noiseLo = ls.NoisePower, ls.NoiseHi, ls.NoiseLo
	s.sylMax = ls.SyllableMaxDB
	a.gPeak, a.gAge, a.gMax = ls.BlockPeak, ls.BlockPeakAge, ls.BlockMax
}
