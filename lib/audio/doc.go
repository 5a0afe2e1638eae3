// Package audio decodes the telephone audio calmline receives: G.711 μ-law
// and A-law, 16-bit little-endian linear PCM, and WAV files carrying any of
// them (format tags 1, 6, 7 and WAVE_FORMAT_EXTENSIBLE), mono or stereo, at
// 8 or 16 kHz. Wide-band audio is brought to the 8 kHz analysis rate by a
// half-band anti-alias FIR filter (Downsampler); Converter does decoding,
// de-interleaving and resampling of a stream in one step:
//
//	conv, err := audio.NewConverter(audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 2})
//	...
//	for chunk := range chunks {
//		chans := conv.Convert(chunk) // chans[0] = left, chans[1] = right, 8 kHz
//		...
//	}
//
// The package is pure computation: no I/O beyond the readers it is handed, no
// logging, no goroutines. Decoders write into caller-provided buffers so that
// the streaming paths allocate nothing per frame.
package audio
