package voicecli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/impair"
)

// Impair runs "calmline impair": it writes an impaired copy of a WAV
// recording (8 or 16 kHz, mono or stereo) as 8 kHz 16-bit PCM, with the
// line conditions of lib/impair. Exit status 0 on success, 1 when the
// input cannot be read or the output written, 2 for bad usage.
func Impair(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("impair", flag.ContinueOnError)
	fs.SetOutput(stderr)
	spec := fs.String("spec", "", "the impairments, e.g. noise=pink:15,seed=2 or bleed=-20:20,gain=0:-12 (see docs/voice-analysis.md §8)")
	babble := fs.String("babble", "", "a WAV recording of other talkers' speech, for noise=babble")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: calmline impair --spec SPEC [--babble FILE.wav] IN.wav OUT.wav")
		fmt.Fprintln(stderr, "\nWrites an impaired copy of IN.wav (8 kHz 16-bit PCM). SPEC: comma-separated noise=KIND:SNR,")
		fmt.Fprintln(stderr, "bleed=DB:DELAY_MS, gain=DB0:DB1, loss=RATE[:zero|repeat], codec=alaw|ulaw, band=LO:HI, seed=N.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 2 || *spec == "" {
		fs.Usage()
		return 2
	}
	s, err := impair.Parse(*spec)
	if err != nil {
		fmt.Fprintf(stderr, "impair: %v\n", err)
		return 2
	}
	if s.NoiseKind == impair.NoiseBabble {
		if *babble == "" {
			fmt.Fprintln(stderr, "impair: noise=babble needs --babble FILE.wav (other talkers' speech)")
			return 2
		}
		rec, err := readRecording(*babble)
		if err != nil {
			fmt.Fprintf(stderr, "impair: babble: %v\n", err)
			return 1
		}
		for _, ch := range rec.Channels() {
			s.BabbleSource = append(s.BabbleSource, ch...)
		}
	}
	rec, err := readRecording(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "impair: %v\n", err)
		return 1
	}
	out, err := impair.Apply(rec.Channels(), s)
	if err != nil {
		fmt.Fprintf(stderr, "impair: %v\n", err)
		return 2
	}
	f := audio.Format{Codec: audio.CodecL16, SampleRate: audio.AnalysisRate, Channels: len(out)}
	data := audio.Encode(nil, audio.Interleave(nil, out...), audio.CodecL16)
	if err := os.WriteFile(fs.Arg(1), audio.EncodeWAV(f, data), 0o644); err != nil {
		fmt.Fprintf(stderr, "impair: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: %s, %d channel(s), %.1f s\n", fs.Arg(1), *spec, len(out), float64(len(out[0]))/audio.AnalysisRate)
	return 0
}
