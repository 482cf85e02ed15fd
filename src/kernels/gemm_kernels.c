/* gemm_kernels.c: gemm's FP32 micro-kernels (declared in gemm_internal.h), which gemm.c's driver calls for each
 * MR x NR block: the portable C one, AVX2+FMA, and AVX-512's, which also store straight into C (the two-panel
 * 12 x 32 kernel, one panel, and the narrow edge of 1-4 columns), adding a bias or scaling by alpha as they
 * store and reading B packed or in place. */
#include "gemm_internal.h"

/* ---- micro-kernels ---- */
/* Contract of every micro-kernel: acc (MR, NR) = sum over k < kc of a[k] (MR) outer b[k] (NR), from packed
 * panels (a: kc x MR, b: kc x NR, contiguous). acc is overwritten, never read. Three versions: portable C,
 * AVX2+FMA (two 6 x 16 halves: 12 ymm accumulators each) and AVX-512 (12 zmm accumulators, b in one zmm, a
 * broadcast from memory). The vector ones use FMA, so they differ from the C one by rounding only. */
void gemm_kernel_c(size_t kc, const float *restrict a, const float *restrict b, float *restrict acc) {
    /* acc (MR, NR) = a^T b */
    for (int x = 0; x < GEMM_MR * GEMM_NR; x++) acc[x] = 0;
    for (size_t k = 0; k < kc; k++)
        for (int i = 0; i < GEMM_MR; i++) {
            float ai = a[k * GEMM_MR + i];
            for (int j = 0; j < GEMM_NR; j++) acc[i * GEMM_NR + j] += ai * b[k * GEMM_NR + j];
        }
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma"))) void
gemm_kernel_avx2(size_t kc, const float *restrict a, const float *restrict b, float *restrict acc) {
    /* acc (MR, NR) = a^T b, rows 0..5 then 6..11 */
    for (int h = 0; h < GEMM_MR; h += 6) {
        __m256 c[6][2];
#pragma GCC unroll 6
        for (int i = 0; i < 6; i++) c[i][0] = c[i][1] = _mm256_setzero_ps();
        for (size_t k = 0; k < kc; k++) {
            __m256 b0 = _mm256_loadu_ps(b + k * GEMM_NR), b1 = _mm256_loadu_ps(b + k * GEMM_NR + 8);
            const float *ak = a + k * GEMM_MR + h;
#pragma GCC unroll 6
            for (int i = 0; i < 6; i++) {
                __m256 ai = _mm256_broadcast_ss(ak + i);
                c[i][0] = _mm256_fmadd_ps(ai, b0, c[i][0]);
                c[i][1] = _mm256_fmadd_ps(ai, b1, c[i][1]);
            }
        }
#pragma GCC unroll 6
        for (int i = 0; i < 6; i++) {
            _mm256_storeu_ps(acc + (h + i) * GEMM_NR, c[i][0]);
            _mm256_storeu_ps(acc + (h + i) * GEMM_NR + 8, c[i][1]);
        }
    }
}

/* gemm_kernel_avx512 for a block, straight into C (row stride ldc; its first mr rows and nr columns): C = alpha a^T b
 * (+ bias[i] on row i where bias is given), or C += a^T b when accumulate (alpha 1 then): the same sums as the
 * kernel, then gemm_write_block's, in the same order. B's rows are bs apart (16 in a packed panel, B's own row
 * stride in place), read masked past nr columns. */
__attribute__((target("avx512f"))) void
gemm_avx512_c(size_t kc, const float *restrict a, const float *restrict b, size_t bs, float *restrict C, size_t ldc,
              float alpha, int accumulate, const float *bias, size_t mr, size_t nr) {
    __m512 c[GEMM_MR];
#pragma GCC unroll 12
    for (int i = 0; i < GEMM_MR; i++) c[i] = _mm512_setzero_ps();
    __mmask16 cols = (__mmask16)(nr >= 16 ? 0xffffu : (1u << nr) - 1); /* B in place: not past its row */
    for (size_t k = 0; k < kc; k++) {
        __m512 bk = _mm512_maskz_loadu_ps(cols, b + k * bs);
        const float *ak = a + k * GEMM_MR;
#pragma GCC unroll 12
        for (int i = 0; i < GEMM_MR; i++) c[i] = _mm512_fmadd_ps(_mm512_set1_ps(ak[i]), bk, c[i]);
    }
    if (alpha != 1) /* gemm_write_block's alpha * acc (never with accumulate) */
#pragma GCC unroll 12
        for (int i = 0; i < GEMM_MR; i++) c[i] = _mm512_mul_ps(_mm512_set1_ps(alpha), c[i]);
    store_rows(c, C, ldc, accumulate, bias, mr, nr);
}

/* The micro-kernel contract (acc = a^T b, 12 x 16) by gemm_avx512_c into acc. */
__attribute__((target("avx512f"))) void
gemm_kernel_avx512(size_t kc, const float *restrict a, const float *restrict b, float *restrict acc) {
    gemm_avx512_c(kc, a, b, GEMM_NR, acc, GEMM_NR, 1.0f, 0, NULL, GEMM_MR, GEMM_NR);
}

/* gemm_avx512_c over two adjacent B panels (32 columns) at once: 24 accumulators, each broadcast of a serves
 * two FMAs, so a step of k loads 14 values for 24 FMAs instead of 13 for 12. Same sums, same order. */
__attribute__((target("avx512f"))) void
gemm_avx512_c2(size_t kc, const float *restrict a, const float *restrict b0, const float *restrict b1, size_t bs,
               float *restrict C, size_t ldc, float alpha, int accumulate, const float *bias, size_t mr) {
    __m512 c0[GEMM_MR], c1[GEMM_MR];
#pragma GCC unroll 12
    for (int i = 0; i < GEMM_MR; i++) c0[i] = _mm512_setzero_ps(), c1[i] = _mm512_setzero_ps();
    for (size_t k = 0; k < kc; k++) {
        __m512 x0 = _mm512_loadu_ps(b0 + k * bs), x1 = _mm512_loadu_ps(b1 + k * bs);
        const float *ak = a + k * GEMM_MR;
#pragma GCC unroll 12
        for (int i = 0; i < GEMM_MR; i++) {
            __m512 ai = _mm512_set1_ps(ak[i]);
            c0[i] = _mm512_fmadd_ps(ai, x0, c0[i]);
            c1[i] = _mm512_fmadd_ps(ai, x1, c1[i]);
        }
    }
    if (alpha != 1)
#pragma GCC unroll 12
        for (int i = 0; i < GEMM_MR; i++) {
            c0[i] = _mm512_mul_ps(_mm512_set1_ps(alpha), c0[i]);
            c1[i] = _mm512_mul_ps(_mm512_set1_ps(alpha), c1[i]);
        }
    store_rows2(c0, c1, C, ldc, accumulate, bias, mr);
}

/* gemm_avx512_c for a panel of at most 4 valid columns (the edge of N = 49 or 196), G row panels at once:
 * per row panel and column one accumulator, a[k] loaded as a vector of the MR rows and b[k][j] broadcast, so
 * a step of k costs NRN FMAs per row panel instead of MR, and the G x NRN independent chains hide the FMA
 * latency. Each C element gets fma(a, b, acc) over k in gemm_avx512_c's order: the same bits. */
__attribute__((target("avx512f"), always_inline)) static inline void
narrow_panels(size_t kc, const float *restrict a, size_t astride, const float *restrict b, size_t bs, float *restrict C,
              size_t ldc, float alpha, int accumulate, const float *bias, size_t mr, const int NRN, const int G) {
    /* C (mr rows in G panels, NRN columns) = or += a (G row panels, stride astride) b (its first NRN columns) */
    __m512 c[8][4];
#pragma GCC unroll 8
    for (int p = 0; p < G; p++)
#pragma GCC unroll 4
        for (int j = 0; j < NRN; j++) c[p][j] = _mm512_setzero_ps();
    const __mmask16 rows = (__mmask16)((1u << GEMM_MR) - 1);
    for (size_t k = 0; k < kc; k++) {
        __m512 bk[4];
#pragma GCC unroll 4
        for (int j = 0; j < NRN; j++) bk[j] = _mm512_set1_ps(b[k * bs + (size_t)j]);
#pragma GCC unroll 8
        for (int p = 0; p < G; p++) {
            __m512 ak = _mm512_maskz_loadu_ps(rows, a + (size_t)p * astride + k * GEMM_MR);
#pragma GCC unroll 4
            for (int j = 0; j < NRN; j++) c[p][j] = _mm512_fmadd_ps(ak, bk[j], c[p][j]);
        }
    }
    float v[16];
    for (int p = 0; p < G; p++)
        for (int j = 0; j < NRN; j++) {
            _mm512_storeu_ps(v, alpha != 1 ? _mm512_mul_ps(_mm512_set1_ps(alpha), c[p][j]) : c[p][j]);
            for (size_t i = 0; i < GEMM_MR && (size_t)p * GEMM_MR + i < mr; i++) {
                float *y = C + ((size_t)p * GEMM_MR + i) * ldc + j;
                *y = accumulate ? *y + v[i] : bias ? bias[(size_t)p * GEMM_MR + i] + v[i] : v[i];
            }
        }
}

/* The first mr rows of a block's narrow edge panel (nr <= GEMM_NR_NARROW): 8 row panels at a time (6 for 4
 * columns: at most 24 accumulators), then the rest. */
__attribute__((target("avx512f"))) void
gemm_avx512_narrow(size_t kc, const float *restrict a, size_t astride, const float *restrict b, size_t bs,
                   float *restrict C, size_t ldc, float alpha, int accumulate, const float *bias, size_t mr,
                   size_t nr) {
    size_t np = (mr + GEMM_MR - 1) / GEMM_MR, G = nr > 3 ? 6 : 8;
    for (size_t p = 0; p < np; p += G) {
        size_t g = np - p < G ? np - p : G, m = mr - p * GEMM_MR;
        const float *ap = a + p * astride;
        float *cp = C + p * GEMM_MR * ldc;
        const float *bp = bias ? bias + p * GEMM_MR : NULL;
#define NARROW_G(NRN, GG) \
    case GG: narrow_panels(kc, ap, astride, b, bs, cp, ldc, alpha, accumulate, bp, m, NRN, GG); break;
#define NARROW_NR(NRN)                                                                                           \
    case NRN:                                                                                                    \
        switch (g) { NARROW_G(NRN, 1) NARROW_G(NRN, 2) NARROW_G(NRN, 3) NARROW_G(NRN, 4) NARROW_G(NRN, 5)       \
                     NARROW_G(NRN, 6) NARROW_G(NRN, 7) NARROW_G(NRN, 8) }                                         \
        break;
        switch (nr) { NARROW_NR(1) NARROW_NR(2) NARROW_NR(3) NARROW_NR(4) }
#undef NARROW_NR
#undef NARROW_G
    }
}
#endif
