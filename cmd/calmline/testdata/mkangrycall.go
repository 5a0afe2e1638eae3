//go:build ignore

// mkangrycall builds call_agent_turns_angry.wav from the evaluation
// corpus: a 12.4 s stereo μ-law call (left = caller, right = agent) whose
// agent speaks three neutral utterances quietly (−15 dB), then two angry
// ones loud (0 dB, as recorded), after one neutral utterance of the
// caller.
//
//	go run testdata/mkangrycall.go ../../../shared/corpus
package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/calmline/calmline/lib/audio"
)

// piece is a stretch of call_01_spk03_anger.wav (seconds, channel 0 =
// caller, 1 = agent) placed at a time of the new call with a gain.
type piece struct {
	from, to float64
	channel  int
	at       float64
	gainDB   float64
}

func main() {
	src := filepath.Join(os.Args[1], "emodb", "calls", "call_01_spk03_anger.wav")
	b, err := os.ReadFile(src)
	if err != nil {
		panic(err)
	}
	rec, err := audio.ParseWAV(b)
	if err != nil {
		panic(err)
	}
	in := make([]int16, len(rec.Data))
	audio.Decode(in, rec.Data, rec.Format.Codec)
	const rate, length = 8000, 12.4
	out := make([]int16, 2*int(length*rate))
	for _, p := range []piece{
		{2.6129, 4.2241, 1, 0.3, -15},   // agent, neutral (03a01Nc)
		{13.2836, 15.0481, 0, 2.2, -6},  // caller, neutral (08a01Na)
		{6.9151, 8.3550, 1, 4.2, -15},   // agent, neutral (03a02Nc)
		{11.2223, 12.7836, 1, 5.9, -15}, // agent, neutral (03a04Nc)
		{15.5481, 17.4260, 1, 7.8, 0},   // agent, angry (03a01Wa)
		{20.2166, 22.3403, 1, 10.0, 0},  // agent, angry (03a02Wb)
	} {
		g := math.Pow(10, p.gainDB/20)
		a, z := int(p.from*rate), int(p.to*rate)
		at := int(p.at * rate)
		for i := a; i < z; i++ {
			out[2*(at+i-a)+p.channel] = int16(float64(in[2*i+p.channel]) * g)
		}
	}
	f := audio.Format{Codec: audio.CodecPCMU, SampleRate: rate, Channels: 2}
	dst := "call_agent_turns_angry.wav"
	if err := os.WriteFile(dst, audio.EncodeWAV(f, audio.Encode(nil, out, audio.CodecPCMU)), 0o644); err != nil {
		panic(err)
	}
	fmt.Println("wrote", dst)
}
