package loadgen

import (
	"encoding/binary"
	"math/rand/v2"
)

// appendFrame appends to dst one final, masked client WebSocket frame
// (RFC 6455 §5.2) of the given opcode carrying payload, masked with key.
// The native protocol's audio is written this way rather than through
// gorilla's writer, which allocates and resets the connection's write
// deadline on every frame, and so that several frames can go out in one
// write (see Flusher).
func appendFrame(dst []byte, opcode byte, payload []byte, key uint32) []byte {
	const fin, masked = 0x80, 0x80
	dst = append(dst, fin|opcode)
	switch n := len(payload); {
	case n <= 125:
		dst = append(dst, masked|byte(n))
	case n <= 0xffff:
		dst = append(dst, masked|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, masked|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	dst = binary.LittleEndian.AppendUint32(dst, key)
	start := len(dst)
	dst = append(dst, payload...)
	maskBytes(dst[start:], key)
	return dst
}

// maskBytes XORs b with the masking key, its bytes in little-endian order
// (so key's lowest byte masks b[0]), eight bytes at a time.
func maskBytes(b []byte, key uint32) {
	k8 := uint64(key) | uint64(key)<<32
	i := 0
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], binary.LittleEndian.Uint64(b[i:])^k8)
	}
	for j := 0; i < len(b); i, j = i+1, j+1 {
		b[i] ^= byte(key >> (8 * (j % 4)))
	}
}

// newMaskKey returns a masking key; RFC 6455 asks for one per frame that
// a proxy cannot predict from the earlier ones (a load simulator on a
// trusted network needs no cryptographic strength).
func newMaskKey() uint32 { return rand.Uint32() }
