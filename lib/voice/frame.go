package voice

// Frame is the analysis of one 10 ms hop of one channel.
type Frame struct {
	// Index is the frame number; the frame is centred at Time seconds,
	// (Index + 0.5) / 100.
	Index int64
	Time  float64
	// Speech is the voice-activity decision.
	Speech bool
	// Voiced is the voicing decision; F0 is in Hz when voiced, else 0.
	Voiced bool
	F0     float32
	// Periodicity is the peak normalised autocorrelation at the period
	// (0..1); HNR is the harmonics-to-noise ratio in dB derived from it,
	// defined for voiced frames only (else 0).
	Periodicity float32
	HNR         float32
	// Intensity is in dB re 2·10⁻⁵ (Praat's convention: a full-scale sine
	// reads about 91 dB); silence reads -100.
	Intensity float32
	// Balance is the energy above 1 kHz relative to the energy below it,
	// in dB: vocal effort raises it; gain does not change it.
	Balance float32
	// SNR is the frame's intensity above the channel's tracked noise
	// floor, in dB (0 for digital silence).
	SNR float32
	// Nucleus marks a syllable nucleus (an intensity peak of voiced
	// speech) at this frame.
	Nucleus bool
}
