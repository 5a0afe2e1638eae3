package voice

import "unsafe"

// unsafeFloats views p (its length a multiple of 4, 4-byte aligned) as
// float32s.
func unsafeFloats(p []byte) []float32 {
	return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(p))), len(p)/4)
}
