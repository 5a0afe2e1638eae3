package voice

// ChannelStats are the whole-stream measures of one channel, named and
// defined as in Praat's voice report (see shared/tools/praat/features.praat)
// so that they compare with Praat's figures.
type ChannelStats struct {
	DurationS       Num `json:"duration_s"`
	VoicedFraction  Num `json:"voiced_fraction"`
	F0MeanHz        Num `json:"f0_mean_hz"`
	F0MedianHz      Num `json:"f0_median_hz"`
	F0SDHz          Num `json:"f0_sd_hz"`
	F0P05Hz         Num `json:"f0_p05_hz"`
	F0P95Hz         Num `json:"f0_p95_hz"`
	JitterLocalPct  Num `json:"jitter_local_pct"`
	JitterRAPPct    Num `json:"jitter_rap_pct"`
	ShimmerLocalPct Num `json:"shimmer_local_pct"`
	ShimmerAPQ3Pct  Num `json:"shimmer_apq3_pct"`
	HNRMeanDB       Num `json:"hnr_mean_db"`
	IntensityMeanDB Num `json:"intensity_mean_db"`
	SpeechRate      Num `json:"speech_rate_syl_per_s"`
	TalkTimeS       Num `json:"talk_time_s"`
}

// Stats returns the measures over all frames passed on so far (after Flush:
// the whole stream).
func (a *Analyzer) Stats() ChannelStats {
	w := a.feat.total
	w.Add(&a.feat.cur)
	h := &a.feat.f0
	p := &w.Perturbation
	return ChannelStats{
		DurationS:       Num(w.Duration()),
		VoicedFraction:  Num(w.VoicedFraction()),
		F0MeanHz:        Num(h.mean()),
		F0MedianHz:      Num(h.quantile(0.5)),
		F0SDHz:          Num(h.sd()),
		F0P05Hz:         Num(h.quantile(0.05)),
		F0P95Hz:         Num(h.quantile(0.95)),
		JitterLocalPct:  Num(p.JitterLocal()),
		JitterRAPPct:    Num(p.JitterRAP()),
		ShimmerLocalPct: Num(p.ShimmerLocal()),
		ShimmerAPQ3Pct:  Num(p.ShimmerAPQ3()),
		HNRMeanDB:       Num(w.HNR()),
		IntensityMeanDB: Num(w.IntensityDB()),
		SpeechRate:      Num(w.SyllableRate()),
		TalkTimeS:       Num(float64(w.Speech) / FrameRate),
	}
}
