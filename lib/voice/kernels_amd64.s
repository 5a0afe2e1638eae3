//go:build amd64 && !purego

#include "textflag.h"

// AVX2 + FMA inner products for kernels_amd64.go. Each processes sixteen
// samples of a per iteration in two sets of accumulators (independent
// chains of fused multiply-adds), then at most one block of eight, then
// the last 0–7 samples with masked loads, which never touch memory past
// the slices' ends. The sets are added and each sum is reduced across its
// eight lanes at the end.

// tailmask<>+32-4r(SB) is a mask of r (0–8) leading all-ones lanes.
DATA tailmask<>+0(SB)/4, $0xffffffff
DATA tailmask<>+4(SB)/4, $0xffffffff
DATA tailmask<>+8(SB)/4, $0xffffffff
DATA tailmask<>+12(SB)/4, $0xffffffff
DATA tailmask<>+16(SB)/4, $0xffffffff
DATA tailmask<>+20(SB)/4, $0xffffffff
DATA tailmask<>+24(SB)/4, $0xffffffff
DATA tailmask<>+28(SB)/4, $0xffffffff
DATA tailmask<>+32(SB)/4, $0
DATA tailmask<>+36(SB)/4, $0
DATA tailmask<>+40(SB)/4, $0
DATA tailmask<>+44(SB)/4, $0
DATA tailmask<>+48(SB)/4, $0
DATA tailmask<>+52(SB)/4, $0
DATA tailmask<>+56(SB)/4, $0
DATA tailmask<>+60(SB)/4, $0
GLOBL tailmask<>(SB), RODATA|NOPTR, $64

// HSUM leaves the sum of Y's eight lanes in the low lane of X (Y's lower
// half), using T as scratch.
#define HSUM(Y, X, T) \
	VEXTRACTF128 $1, Y, T; \
	VADDPS       T, X, X; \
	VMOVHLPS     X, X, T; \
	VADDPS       T, X, X; \
	VMOVSHDUP    X, T; \
	VADDSS       T, X, X

// TAILMASK loads into Y15 the mask of the CX-AX samples left (1–7) and
// jumps to done if none are; it clobbers DX and BX.
#define TAILMASK(done) \
	MOVQ CX, DX; \
	SUBQ AX, DX; \
	JZ   done; \
	LEAQ tailmask<>(SB), BX; \
	NEGQ DX; \
	VMOVUPS 32(BX)(DX*4), Y15

// func dotAVX2(a, b []float32) float32
TEXT ·dotAVX2(SB), NOSPLIT, $0-52
	MOVQ   a_base+0(FP), SI
	MOVQ   a_len+8(FP), CX
	MOVQ   b_base+24(FP), DI
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	XORQ   AX, AX

d1loop32:
	LEAQ        32(AX), DX
	CMPQ        DX, CX
	JGT         d1loop8
	VMOVUPS     (SI)(AX*4), Y8
	VMOVUPS     32(SI)(AX*4), Y9
	VMOVUPS     64(SI)(AX*4), Y10
	VMOVUPS     96(SI)(AX*4), Y11
	VFMADD231PS (DI)(AX*4), Y8, Y0
	VFMADD231PS 32(DI)(AX*4), Y9, Y1
	VFMADD231PS 64(DI)(AX*4), Y10, Y2
	VFMADD231PS 96(DI)(AX*4), Y11, Y3
	MOVQ        DX, AX
	JMP         d1loop32

d1loop8:
	LEAQ        8(AX), DX
	CMPQ        DX, CX
	JGT         d1tail
	VMOVUPS     (SI)(AX*4), Y8
	VFMADD231PS (DI)(AX*4), Y8, Y0
	MOVQ        DX, AX
	JMP         d1loop8

d1tail:
	TAILMASK(d1sum)
	VMASKMOVPS  (SI)(AX*4), Y15, Y8
	VMASKMOVPS  (DI)(AX*4), Y15, Y9
	VFMADD231PS Y9, Y8, Y1

d1sum:
	VADDPS Y1, Y0, Y0
	VADDPS Y3, Y2, Y2
	VADDPS Y2, Y0, Y0
	HSUM(Y0, X0, X8)
	VMOVSS X0, ret+48(FP)
	VZEROUPPER
	RET

// func dot3AVX2(a, b []float32) (r0, r1, r2 float32)
TEXT ·dot3AVX2(SB), NOSPLIT, $0-60
	MOVQ   a_base+0(FP), SI
	MOVQ   a_len+8(FP), CX
	MOVQ   b_base+24(FP), DI
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	XORQ   AX, AX

d3loop16:
	LEAQ        16(AX), DX
	CMPQ        DX, CX
	JGT         d3one8
	VMOVUPS     (SI)(AX*4), Y8
	VMOVUPS     32(SI)(AX*4), Y9
	VFMADD231PS (DI)(AX*4), Y8, Y0
	VFMADD231PS 4(DI)(AX*4), Y8, Y1
	VFMADD231PS 8(DI)(AX*4), Y8, Y2
	VFMADD231PS 32(DI)(AX*4), Y9, Y4
	VFMADD231PS 36(DI)(AX*4), Y9, Y5
	VFMADD231PS 40(DI)(AX*4), Y9, Y6
	MOVQ        DX, AX
	JMP         d3loop16

d3one8:
	LEAQ        8(AX), DX
	CMPQ        DX, CX
	JGT         d3tail
	VMOVUPS     (SI)(AX*4), Y8
	VFMADD231PS (DI)(AX*4), Y8, Y0
	VFMADD231PS 4(DI)(AX*4), Y8, Y1
	VFMADD231PS 8(DI)(AX*4), Y8, Y2
	MOVQ        DX, AX

d3tail:
	TAILMASK(d3sum)
	VMASKMOVPS  (SI)(AX*4), Y15, Y8
	LEAQ        (DI)(AX*4), DI
	VMASKMOVPS  (DI), Y15, Y10
	VMASKMOVPS  4(DI), Y15, Y11
	VMASKMOVPS  8(DI), Y15, Y12
	VFMADD231PS Y10, Y8, Y4
	VFMADD231PS Y11, Y8, Y5
	VFMADD231PS Y12, Y8, Y6

d3sum:
	VADDPS Y4, Y0, Y0
	VADDPS Y5, Y1, Y1
	VADDPS Y6, Y2, Y2
	HSUM(Y0, X0, X8)
	HSUM(Y1, X1, X9)
	HSUM(Y2, X2, X10)
	VMOVSS X0, r0+48(FP)
	VMOVSS X1, r1+52(FP)
	VMOVSS X2, r2+56(FP)
	VZEROUPPER
	RET

// func dot4AVX2(a, b []float32) (r0, r1, r2, r3 float32)
TEXT ·dot4AVX2(SB), NOSPLIT, $0-64
	MOVQ   a_base+0(FP), SI
	MOVQ   a_len+8(FP), CX
	MOVQ   b_base+24(FP), DI
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	XORQ   AX, AX

d4loop16:
	LEAQ        16(AX), DX
	CMPQ        DX, CX
	JGT         d4one8
	VMOVUPS     (SI)(AX*4), Y8
	VMOVUPS     32(SI)(AX*4), Y9
	VFMADD231PS (DI)(AX*4), Y8, Y0
	VFMADD231PS 4(DI)(AX*4), Y8, Y1
	VFMADD231PS 8(DI)(AX*4), Y8, Y2
	VFMADD231PS 12(DI)(AX*4), Y8, Y3
	VFMADD231PS 32(DI)(AX*4), Y9, Y4
	VFMADD231PS 36(DI)(AX*4), Y9, Y5
	VFMADD231PS 40(DI)(AX*4), Y9, Y6
	VFMADD231PS 44(DI)(AX*4), Y9, Y7
	MOVQ        DX, AX
	JMP         d4loop16

d4one8:
	LEAQ        8(AX), DX
	CMPQ        DX, CX
	JGT         d4tail
	VMOVUPS     (SI)(AX*4), Y8
	VFMADD231PS (DI)(AX*4), Y8, Y0
	VFMADD231PS 4(DI)(AX*4), Y8, Y1
	VFMADD231PS 8(DI)(AX*4), Y8, Y2
	VFMADD231PS 12(DI)(AX*4), Y8, Y3
	MOVQ        DX, AX

d4tail:
	TAILMASK(d4sum)
	VMASKMOVPS  (SI)(AX*4), Y15, Y8
	LEAQ        (DI)(AX*4), DI
	VMASKMOVPS  (DI), Y15, Y10
	VMASKMOVPS  4(DI), Y15, Y11
	VMASKMOVPS  8(DI), Y15, Y12
	VMASKMOVPS  12(DI), Y15, Y13
	VFMADD231PS Y10, Y8, Y4
	VFMADD231PS Y11, Y8, Y5
	VFMADD231PS Y12, Y8, Y6
	VFMADD231PS Y13, Y8, Y7

d4sum:
	VADDPS Y4, Y0, Y0
	VADDPS Y5, Y1, Y1
	VADDPS Y6, Y2, Y2
	VADDPS Y7, Y3, Y3
	HSUM(Y0, X0, X8)
	HSUM(Y1, X1, X9)
	HSUM(Y2, X2, X10)
	HSUM(Y3, X3, X11)
	VMOVSS X0, r0+48(FP)
	VMOVSS X1, r1+52(FP)
	VMOVSS X2, r2+56(FP)
	VMOVSS X3, r3+60(FP)
	VZEROUPPER
	RET
