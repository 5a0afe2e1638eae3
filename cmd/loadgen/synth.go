package loadgen

import (
	"math"
	"math/rand/v2"

	"github.com/calmline/calmline/lib/audio"
)

// Synthetic returns seconds of stereo 8 kHz μ-law that sounds enough like
// a conversation for the analysis to score it: the caller and the agent
// take turns (2 s each) with a voiced, pitch-varying tone over light
// noise, and the caller grows louder as the call goes on. Use it when no
// WAV file is at hand.
func Synthetic(seconds int) *audio.Recording {
	const rate = 8000
	rng := rand.New(rand.NewPCG(1, 2))
	n := seconds * rate
	lin := make([]int16, 2*n)
	var phase [2]float64
	for i := range n {
		t := float64(i) / rate
		turn := int(t/2) % 2 // 0: caller talks, 1: agent talks
		for ch := range 2 {
			v := 30 * rng.NormFloat64() // line noise
			if ch == turn {
				f0 := 120 + 60*float64(ch) + 25*math.Sin(2*math.Pi*0.7*t)
				phase[ch] += 2 * math.Pi * f0 / rate
				amp := 2500.0
				if ch == 0 {
					amp *= 1 + t/float64(seconds)
				}
				// A few harmonics, as a voice has, gated by syllables.
				s := math.Sin(phase[ch]) + 0.5*math.Sin(2*phase[ch]) + 0.25*math.Sin(3*phase[ch])
				v += amp * s * (0.6 + 0.4*math.Sin(2*math.Pi*4*t))
			}
			lin[2*i+ch] = int16(max(-32768, min(32767, v)))
		}
	}
	f := audio.Format{Codec: audio.CodecPCMU, SampleRate: rate, Channels: 2}
	return &audio.Recording{Format: f, Data: audio.Encode(make([]byte, 0, 2*n), lin, audio.CodecPCMU)}
}
