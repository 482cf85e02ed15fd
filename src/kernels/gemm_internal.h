/* gemm_internal.h: what gemm.c (the driver), gemm_kernels.c (the FP32 micro-kernels) and gemm_bf16.c (the BF16
 * pair kernels and AMX) share: the blocking constants, the descriptor of a packed op(A), the FP32 micro-kernels
 * and the two ways a block of accumulators reaches C. Not part of the kernels' interface (kernels.h). */
#ifndef DF_GEMM_INTERNAL_H
#define DF_GEMM_INTERNAL_H
#include <stddef.h>
#include <stdint.h>

#include "kernels.h"


enum {
    GEMM_MR = GEMM_MR_PUBLIC, /* rows of the micro-kernel block */
    GEMM_NR = GEMM_NR_PUBLIC, /* columns of the micro-kernel block (contiguous in a packed B panel) */
    GEMM_MC = 96,  /* rows of a C tile (multiple of MR); MC x KC of packed A stays in L2 */
    GEMM_KC = 256, /* depth of one packed slice */
    GEMM_NC = 128, /* columns of a C tile (multiple of NR) */
};

#define GEMM_SLOT_A 2
#define GEMM_SLOT_B 3
#define GEMM_SLOT_B16 9
#define AMX_K 32 /* depth of one AMX tile multiply (gemm_bf16.c) */

/* All of op(A), packed once: FP32 panels (MR rows over the full depth K, panel stride MR * K) and, in BF16 mode,
 * their pairs (panel stride MR * K2, K2 = ceil(K / 2)); a16 is NULL in FP32 mode. */
typedef struct {
    const float *a;
    const uint32_t *a16;
    size_t K, K2; /* K2: pairs per row of a16 (ceil(K / 2), or with AMX ceil(K / AMX_K) * AMX_K / 2) */
    int amx;      /* a16 in AMX's layout */
} packed_a;

/* C (mr x nr, the valid part of one block) = alpha * acc + beta * C; beta == 0 never reads C. */
void gemm_write_block(const float *restrict acc, float alpha, float beta, float *restrict C, size_t ldc, size_t mr,
                      size_t nr);

/* ---- gemm_kernels.c: the FP32 micro-kernels ---- */
/* acc (MR, NR) = a^T b from packed panels (a: kc x MR, b: kc x NR); the portable one, and AVX2's and AVX-512's */
void gemm_kernel_c(size_t kc, const float *restrict a, const float *restrict b, float *restrict acc);
#if defined(__x86_64__) && defined(__GNUC__)
void gemm_kernel_avx2(size_t kc, const float *restrict a, const float *restrict b, float *restrict acc);
void gemm_kernel_avx512(size_t kc, const float *restrict a, const float *restrict b, float *restrict acc);
/* AVX-512 straight into C (first mr rows, nr columns, row stride ldc): C = alpha a^T b (+ bias[i] on row i), or
 * C += a^T b when accumulate (alpha 1); B's rows bs apart (16 packed, its own stride in place). _c: one panel,
 * _c2: two adjacent panels (b0, b1), _narrow: an edge of nr <= GEMM_NR_NARROW columns over all mr rows (a's row
 * panels astride apart). */
#define GEMM_NR_NARROW 4
void gemm_avx512_c(size_t kc, const float *restrict a, const float *restrict b, size_t bs, float *restrict C,
                   size_t ldc, float alpha, int accumulate, const float *bias, size_t mr, size_t nr);
void gemm_avx512_c2(size_t kc, const float *restrict a, const float *restrict b0, const float *restrict b1,
                    size_t bs, float *restrict C, size_t ldc, float alpha, int accumulate, const float *bias,
                    size_t mr);
void gemm_avx512_narrow(size_t kc, const float *restrict a, size_t astride, const float *restrict b, size_t bs,
                        float *restrict C, size_t ldc, float alpha, int accumulate, const float *bias, size_t mr,
                        size_t nr);
#endif

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* The first mr rows and nr columns of a 12 x 16 block of accumulators into C (row stride ldc): stored, or
 * added to what is there when accumulate (gemm_write_block's arithmetic for alpha 1, beta 0 or 1), or else
 * with bias[i] added to row i where bias is not NULL (the bits of C filled with the bias and accumulated). */
__attribute__((target("avx512f"), always_inline)) static inline void store_rows(const __m512 c[GEMM_MR], float *C,
                                                                                size_t ldc, int accumulate,
                                                                                const float *bias, size_t mr,
                                                                                size_t nr) {
    __mmask16 cols = (__mmask16)(nr >= 16 ? 0xffffu : (1u << nr) - 1);
#pragma GCC unroll 12
    for (int i = 0; i < GEMM_MR; i++) {
        if ((size_t)i >= mr) break;
        float *row = C + i * ldc;
        __m512 v = accumulate ? _mm512_add_ps(_mm512_maskz_loadu_ps(cols, row), c[i])
                   : bias     ? _mm512_add_ps(_mm512_set1_ps(bias[i]), c[i])
                              : c[i];
        _mm512_mask_storeu_ps(row, cols, v);
    }
}

/* Two adjacent 12 x 16 blocks of accumulators (32 columns) into the first mr rows of C, as store_rows. */
__attribute__((target("avx512f"), always_inline)) static inline void store_rows2(const __m512 c0[GEMM_MR],
                                                                                 const __m512 c1[GEMM_MR], float *C,
                                                                                 size_t ldc, int accumulate,
                                                                                 const float *bias, size_t mr) {
#pragma GCC unroll 12
    for (int i = 0; i < GEMM_MR; i++) {
        if ((size_t)i >= mr) break;
        float *row = C + i * ldc;
        if (accumulate) {
            _mm512_storeu_ps(row, _mm512_add_ps(_mm512_loadu_ps(row), c0[i]));
            _mm512_storeu_ps(row + 16, _mm512_add_ps(_mm512_loadu_ps(row + 16), c1[i]));
        } else if (bias) {
            __m512 b = _mm512_set1_ps(bias[i]);
            _mm512_storeu_ps(row, _mm512_add_ps(b, c0[i]));
            _mm512_storeu_ps(row + 16, _mm512_add_ps(b, c1[i]));
        } else {
            _mm512_storeu_ps(row, c0[i]);
            _mm512_storeu_ps(row + 16, c1[i]);
        }
    }
}
#endif

/* ---- gemm_bf16.c ---- */

/* The BF16 kernels of an instruction-set level: 0 portable C, 1 AVX-512 BF16 where the CPU has it (else C),
 * 2 AMX (-1, and nothing changed, where the CPU or the kernel cannot). */
int bf16_select(int level);
/* "amx", "avx512_bf16" or "c": the kernels bf16_select chose */
const char *bf16_isa(void);
/* op(A)'s pairs are in AMX's layout */
int bf16_amx(void);
/* x rounded to BF16 (nearest even), as a float */
float bf16_round(float x);
/* Pair rows of a slice kc deep: ceil(kc / 2), padded to whole tiles for AMX. */
size_t bf16_slice_pairs(size_t kc, int amx);
/* The BF16 copy a16 of op(A)'s FP32 panels ap (M x K), in the layout of the kernels in use. */
void bf16_pack_a(uint32_t *a16, const float *ap, size_t M, size_t K);
/* The pairs of a packed B slice (bp: kc deep, nc columns in panels of NR), in the calling thread's scratch. */
const uint32_t *bf16_pack_slice(const float *bp, const packed_a *A, size_t kc, size_t nc);
/* block() of gemm.c from the slice's pairs b16 (panel stride NR * bf16_slice_pairs(kc)). */
void bf16_block(size_t mc, size_t nc, size_t kc, const packed_a *A, size_t i0, size_t p0, const uint32_t *b16,
                float alpha, float b_eff, float *C, size_t ldc);
#endif
