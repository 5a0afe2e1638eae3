// Package audio decodes the telephone audio calmline receives: G.711 μ-law
// and A-law, 16-bit little-endian linear PCM, and WAV files carrying any of
// them.
//
// The package is pure computation: no I/O beyond the readers it is handed, no
// logging, no goroutines. Decoders write into caller-provided buffers so that
// the streaming paths allocate nothing per frame.
package audio
