/* gemm.c: C = alpha * op(A) op(B) + beta * C on row-major float matrices.
 *
 * The fast version is a BLIS-style loop nest: C is cut into MC x NC tiles that OpenMP threads take
 * independently; for each KC-deep slice a thread packs its slice of op(A) into MR-row panels and of op(B)
 * into NR-column panels (zero-padded at the edges, transposes resolved here), and a branch-free micro-kernel
 * multiplies one MR x NR block from contiguous panels with fixed loop bounds, which gcc vectorises at -O2.
 * Every element of C is summed by one thread in a fixed order, so results do not depend on thread count.
 *
 * Scratch: the packed panels live in df_scratch slots 2 (A, with its BF16 copy in BF16 mode) and 3 (B) of the
 * calling thread, and B's BF16 pairs in slot 9. Callers that hold their own scratch across a gemm call (conv2d,
 * attention) use slots 0 and 1.
 *
 * BF16 mode (gemm_set_bf16): the packed panels are rounded to BF16 (nearest even) in pairs along k, and the
 * micro-kernel multiplies pairs with FP32 accumulation (AVX-512 BF16's vdpbf16ps: acc += a[2p+1] b[2p+1],
 * then += a[2p] b[2p], products exact); a portable C kernel does the same arithmetic where the CPU lacks it.
 * Packing, blocking and the write to C are the FP32 path's, so only the products change.
 */
#include "kernels.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "diffuse.h"

/* ---- blocking constants ---- */

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

/* ---- reference ---- */

static float round_bf16(float x);

/* The definition, one dot product per element accumulated in double, of the operands as given or rounded to
 * BF16. */
static void reference(int transA, int transB, size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
                      const float *B, size_t ldb, float beta, float *C, size_t ldc, int bf16) {
    /* C (M, N) = alpha * op(A) (M, K) op(B) (K, N) + beta * C */
    for (size_t i = 0; i < M; i++) {
        for (size_t j = 0; j < N; j++) {
            double s = 0;
            for (size_t k = 0; k < K; k++) {
                float a = transA ? A[k * lda + i] : A[i * lda + k], b = transB ? B[j * ldb + k] : B[k * ldb + j];
                s += bf16 ? (double)round_bf16(a) * round_bf16(b) : (double)a * b;
            }
            double c = (double)alpha * s;
            if (beta != 0) c += (double)beta * C[i * ldc + j];
            C[i * ldc + j] = (float)c;
        }
    }
}

/* gemm_ref: the definition. Same contract as gemm. */
void gemm_ref(int transA, int transB, size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
              const float *B, size_t ldb, float beta, float *C, size_t ldc) {
    reference(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, 0);
}

/* gemm_bf16_ref: the definition over the operands rounded to BF16 (nearest even). */
void gemm_bf16_ref(int transA, int transB, size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
                   const float *B, size_t ldb, float beta, float *C, size_t ldc) {
    reference(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, 1);
}

/* ---- packing ---- */

/* Packs rows [i0, i0 + mc) and depth [p0, p0 + kc) of op(A) into panels of MR rows: panel r holds, for each
 * k, the MR values op(A)[i0 + r*MR + 0..MR-1][p0 + k] contiguously. Rows past mc are zero. */
/* A full 12-row panel of a row-major A, packed (pack_a's layout) by AVX-512 where that kernel runs. */
static void pack_a12(float *d, const float *src, size_t lda, size_t kc);
/* A full panel of B^T (16 source rows, read from k0 on) transposed into d: d[k * NR + j] = src_j[k0 + k] for
 * k < 16. Set with the micro-kernel: the AVX-512 one where that kernel runs, else NULL (scalar loops). */
typedef void (*transpose_fn)(float *d, const float *B, size_t ldb, size_t k0);
static transpose_fn transpose16 = NULL;

static void pack_a(float *dst, int transA, const float *A, size_t lda, size_t i0, size_t mc, size_t p0,
                   size_t kc) {
    /* dst (ceil(mc/MR), kc, MR); each source row (or column of A^T) is read contiguously */
    for (size_t r = 0; r < mc; r += GEMM_MR) {
        size_t mr = mc - r < GEMM_MR ? mc - r : GEMM_MR;
        float *d = dst + r * kc;
        if (transA) {
            for (size_t k = 0; k < kc; k++) {
                const float *src = A + (p0 + k) * lda + i0 + r;
                size_t i = 0;
                for (; i < mr; i++) d[k * GEMM_MR + i] = src[i];
                for (; i < GEMM_MR; i++) d[k * GEMM_MR + i] = 0;
            }
        } else if (mr == GEMM_MR && transpose16) { /* the AVX-512 kernels are in use */
            pack_a12(d, A + (i0 + r) * lda + p0, lda, kc);
        } else {
            for (size_t i = 0; i < GEMM_MR; i++) {
                if (i < mr) {
                    const float *src = A + (i0 + r + i) * lda + p0;
                    for (size_t k = 0; k < kc; k++) d[k * GEMM_MR + i] = src[k];
                } else {
                    for (size_t k = 0; k < kc; k++) d[k * GEMM_MR + i] = 0;
                }
            }
        }
    }
}

/* Packs depth [p0, p0 + kc) and columns [j0, j0 + nc) of op(B) into panels of NR columns: panel c holds,
 * for each k, the NR values op(B)[p0 + k][j0 + c*NR + 0..NR-1] contiguously. Columns past nc are zero. */
static void pack_b(float *dst, int transB, const float *B, size_t ldb, size_t p0, size_t kc, size_t j0,
                   size_t nc) {
    /* dst (ceil(nc/NR), kc, NR); each source row (or column of B^T) is read contiguously */
    for (size_t c = 0; c < nc; c += GEMM_NR) {
        size_t nr = nc - c < GEMM_NR ? nc - c : GEMM_NR;
        float *d = dst + c * kc;
        if (transB && nr == GEMM_NR && transpose16) { /* 16 x 16 blocks by vector shuffles */
            const float *src = B + (j0 + c) * ldb + p0;
            size_t k = 0;
            for (; k + 16 <= kc; k += 16) transpose16(d + k * GEMM_NR, src, ldb, k);
            for (; k < kc; k++)
                for (size_t j = 0; j < GEMM_NR; j++) d[k * GEMM_NR + j] = src[j * ldb + k];
        } else if (transB) {
            for (size_t j = 0; j < GEMM_NR; j++) {
                if (j < nr) {
                    const float *src = B + (j0 + c + j) * ldb + p0;
                    for (size_t k = 0; k < kc; k++) d[k * GEMM_NR + j] = src[k];
                } else {
                    for (size_t k = 0; k < kc; k++) d[k * GEMM_NR + j] = 0;
                }
            }
        } else {
            for (size_t k = 0; k < kc; k++) {
                const float *src = B + (p0 + k) * ldb + j0 + c;
                size_t j = 0;
                if (nr == GEMM_NR) {
                    memcpy(d + k * GEMM_NR, src, GEMM_NR * sizeof(float));
                    continue;
                }
                for (; j < nr; j++) d[k * GEMM_NR + j] = src[j];
                for (; j < GEMM_NR; j++) d[k * GEMM_NR + j] = 0;
            }
        }
    }
}

/* ---- micro-kernels ---- */

/* Contract of every micro-kernel: acc (MR, NR) = sum over k < kc of a[k] (MR) outer b[k] (NR), from packed
 * panels (a: kc x MR, b: kc x NR, contiguous). acc is overwritten, never read. Three versions: portable C,
 * AVX2+FMA (two 6 x 16 halves: 12 ymm accumulators each) and AVX-512 (12 zmm accumulators, b in one zmm, a
 * broadcast from memory). The vector ones use FMA, so they differ from the C one by rounding only. */
static void kernel_c(size_t kc, const float *restrict a, const float *restrict b, float *restrict acc) {
    /* acc (MR, NR) = a^T b */
    for (int x = 0; x < GEMM_MR * GEMM_NR; x++) acc[x] = 0;
    for (size_t k = 0; k < kc; k++)
        for (int i = 0; i < GEMM_MR; i++) {
            float ai = a[k * GEMM_MR + i];
            for (int j = 0; j < GEMM_NR; j++) acc[i * GEMM_NR + j] += ai * b[k * GEMM_NR + j];
        }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

__attribute__((target("avx2,fma"))) static void kernel_avx2(size_t kc, const float *restrict a,
                                                            const float *restrict b, float *restrict acc) {
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

/* The first mr rows and nr columns of a 12 x 16 block of accumulators into C (row stride ldc): stored, or
 * added to what is there when accumulate (write_block's arithmetic for alpha 1, beta 0 or 1). */
__attribute__((target("avx512f"), always_inline)) static inline void store_rows(const __m512 c[GEMM_MR], float *C,
                                                                                size_t ldc, int accumulate,
                                                                                size_t mr, size_t nr) {
    __mmask16 cols = (__mmask16)(nr >= 16 ? 0xffffu : (1u << nr) - 1);
#pragma GCC unroll 12
    for (int i = 0; i < GEMM_MR; i++) {
        if ((size_t)i >= mr) break;
        float *row = C + i * ldc;
        __m512 v = accumulate ? _mm512_add_ps(_mm512_maskz_loadu_ps(cols, row), c[i]) : c[i];
        _mm512_mask_storeu_ps(row, cols, v);
    }
}

/* kernel_avx512 for a block with alpha 1, straight into C (row stride ldc; its first mr rows and nr columns):
 * C = a^T b, or C += a^T b when accumulate (the same sums as the kernel, then write_block's, in the same order). */
__attribute__((target("avx512f"))) static void kernel_avx512_c(size_t kc, const float *restrict a,
                                                               const float *restrict b, float *restrict C,
                                                               size_t ldc, int accumulate, size_t mr, size_t nr) {
    __m512 c[GEMM_MR];
#pragma GCC unroll 12
    for (int i = 0; i < GEMM_MR; i++) c[i] = _mm512_setzero_ps();
    for (size_t k = 0; k < kc; k++) {
        __m512 bk = _mm512_loadu_ps(b + k * GEMM_NR);
        const float *ak = a + k * GEMM_MR;
#pragma GCC unroll 12
        for (int i = 0; i < GEMM_MR; i++) c[i] = _mm512_fmadd_ps(_mm512_set1_ps(ak[i]), bk, c[i]);
    }
    store_rows(c, C, ldc, accumulate, mr, nr);
}

/* The micro-kernel contract (acc = a^T b, 12 x 16) by kernel_avx512_c into acc. */
__attribute__((target("avx512f"))) static void kernel_avx512(size_t kc, const float *restrict a,
                                                             const float *restrict b, float *restrict acc) {
    kernel_avx512_c(kc, a, b, acc, GEMM_NR, 0, GEMM_MR, GEMM_NR);
}

/* kernel_avx512_c over two adjacent B panels (32 columns) at once: 24 accumulators, each broadcast of a serves
 * two FMAs, so a step of k loads 14 values for 24 FMAs instead of 13 for 12. Same sums, same order. */
__attribute__((target("avx512f"))) static void kernel_avx512_c2(size_t kc, const float *restrict a,
                                                                const float *restrict b0, const float *restrict b1,
                                                                float *restrict C, size_t ldc, int accumulate,
                                                                size_t mr) {
    __m512 c0[GEMM_MR], c1[GEMM_MR];
#pragma GCC unroll 12
    for (int i = 0; i < GEMM_MR; i++) c0[i] = _mm512_setzero_ps(), c1[i] = _mm512_setzero_ps();
    for (size_t k = 0; k < kc; k++) {
        __m512 x0 = _mm512_loadu_ps(b0 + k * GEMM_NR), x1 = _mm512_loadu_ps(b1 + k * GEMM_NR);
        const float *ak = a + k * GEMM_MR;
#pragma GCC unroll 12
        for (int i = 0; i < GEMM_MR; i++) {
            __m512 ai = _mm512_set1_ps(ak[i]);
            c0[i] = _mm512_fmadd_ps(ai, x0, c0[i]);
            c1[i] = _mm512_fmadd_ps(ai, x1, c1[i]);
        }
    }
#pragma GCC unroll 12
    for (int i = 0; i < GEMM_MR; i++) {
        if ((size_t)i >= mr) break;
        float *row = C + i * ldc;
        _mm512_storeu_ps(row, accumulate ? _mm512_add_ps(_mm512_loadu_ps(row), c0[i]) : c0[i]);
        _mm512_storeu_ps(row + 16, accumulate ? _mm512_add_ps(_mm512_loadu_ps(row + 16), c1[i]) : c1[i]);
    }
}

/* 16 x 16 transpose in registers: o[k] lane j = r[j] lane k. Unpacks of 32- then 64-bit pairs within 128-bit
 * lanes, then two rounds of 128-bit lane shuffles. */
__attribute__((target("avx512f"), always_inline)) static inline void transpose16_regs(const __m512 r[16],
                                                                                     __m512 o[16]) {
    __m512 t[16], u[16];
    for (int p = 0; p < 8; p++) {
        t[2 * p] = _mm512_unpacklo_ps(r[2 * p], r[2 * p + 1]);
        t[2 * p + 1] = _mm512_unpackhi_ps(r[2 * p], r[2 * p + 1]);
    }
    for (int m = 0; m < 4; m++) {
        __m512d a = _mm512_castps_pd(t[4 * m]), b = _mm512_castps_pd(t[4 * m + 1]);
        __m512d c = _mm512_castps_pd(t[4 * m + 2]), e = _mm512_castps_pd(t[4 * m + 3]);
        u[4 * m] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        u[4 * m + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        u[4 * m + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, e));
        u[4 * m + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, e));
    }
    for (int g = 0; g < 4; g++) {
        __m512 v0 = _mm512_shuffle_f32x4(u[g], u[4 + g], 0x88), v1 = _mm512_shuffle_f32x4(u[g], u[4 + g], 0xdd);
        __m512 w0 = _mm512_shuffle_f32x4(u[8 + g], u[12 + g], 0x88);
        __m512 w1 = _mm512_shuffle_f32x4(u[8 + g], u[12 + g], 0xdd);
        o[g] = _mm512_shuffle_f32x4(v0, w0, 0x88), o[g + 8] = _mm512_shuffle_f32x4(v0, w0, 0xdd);
        o[g + 4] = _mm512_shuffle_f32x4(v1, w1, 0x88), o[g + 12] = _mm512_shuffle_f32x4(v1, w1, 0xdd);
    }
}

/* A full panel of B^T: rows r_j = B[j * ldb + k0 ..] (j < 16) become d[k * 16 + j]. */
__attribute__((target("avx512f"))) static void transpose16_avx512(float *d, const float *B, size_t ldb,
                                                                  size_t k0) {
    __m512 r[16], o[16];
    for (int j = 0; j < 16; j++) r[j] = _mm512_loadu_ps(B + (size_t)j * ldb + k0);
    transpose16_regs(r, o);
    for (int k = 0; k < 16; k++) _mm512_storeu_ps(d + (size_t)k * 16, o[k]);
}

/* A full panel of op(A) = A (12 rows from src, row stride lda) over depth kc, as pack_a lays it out
 * (d[k * 12 + i] = src_i[k]): 16 columns at a time, transposed in registers (rows 12..15 zero) and stored 12
 * lanes per row. */
__attribute__((target("avx512f"))) static void pack_a12_avx512(float *d, const float *src, size_t lda, size_t kc) {
    size_t k0 = 0;
    for (; k0 + 16 <= kc; k0 += 16) {
        __m512 r[16], o[16];
        for (int j = 0; j < 12; j++) r[j] = _mm512_loadu_ps(src + (size_t)j * lda + k0);
        for (int j = 12; j < 16; j++) r[j] = _mm512_setzero_ps();
        transpose16_regs(r, o);
        for (int k = 0; k < 16; k++) _mm512_mask_storeu_ps(d + (k0 + (size_t)k) * GEMM_MR, 0x0fff, o[k]);
    }
    for (; k0 < kc; k0++)
        for (int i = 0; i < GEMM_MR; i++) d[k0 * GEMM_MR + (size_t)i] = src[(size_t)i * lda + k0];
}
#endif

static void pack_a12(float *d, const float *src, size_t lda, size_t kc) {
#if defined(__x86_64__) && defined(__GNUC__)
    pack_a12_avx512(d, src, lda, kc);
#else
    (void)d, (void)src, (void)lda, (void)kc;
    DF_CHECK(0, "pack_a12 without AVX-512");
#endif
}

/* ---- BF16 ---- */

/* x rounded to BF16, nearest even (NaN stays NaN) */
static inline uint32_t bf16_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

static inline float bf16_float(uint32_t h) {
    uint32_t u = h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static float round_bf16(float x) { return bf16_float(bf16_bits(x)); }

/* Packed panels (n values per k, rows k of stride n) as BF16 pairs: dst[p * n + j] holds rows 2p (low half)
 * and 2p + 1 (high half) of column j; a missing last odd row, and pair rows from ceil(kc / 2) to kpad, are
 * zero. */
static void to_pairs(uint32_t *restrict dst, const float *restrict src, size_t kc, size_t n, size_t kpad) {
    size_t p = 0;
    for (; 2 * p + 1 < kc; p++)
        for (size_t j = 0; j < n; j++)
            dst[p * n + j] = bf16_bits(src[2 * p * n + j]) | bf16_bits(src[(2 * p + 1) * n + j]) << 16;
    if (kc % 2)
        for (size_t j = 0; j < n; j++) dst[p * n + j] = bf16_bits(src[2 * p * n + j]);
    for (p = (kc + 1) / 2; p < kpad; p++) memset(dst + p * n, 0, n * sizeof *dst);
}

/* Same contract as the FP32 micro-kernels over kp = ceil(kc / 2) pairs of BF16 panels (a: kp x MR, b: kp x NR
 * pairs): the pair's odd product is added first, then the even one, as vdpbf16ps does. */
static void kernel_bf16_c(size_t kp, const uint32_t *restrict a, const uint32_t *restrict b, float *restrict acc) {
    /* acc (MR, NR) = a^T b over pairs */
    for (int x = 0; x < GEMM_MR * GEMM_NR; x++) acc[x] = 0;
    for (size_t k = 0; k < kp; k++)
        for (int i = 0; i < GEMM_MR; i++) {
            float a0 = bf16_float(a[k * GEMM_MR + i] & 0xffffu), a1 = bf16_float(a[k * GEMM_MR + i] >> 16);
            for (int j = 0; j < GEMM_NR; j++) {
                float *c = &acc[i * GEMM_NR + j];
                *c += a1 * bf16_float(b[k * GEMM_NR + j] >> 16);
                *c += a0 * bf16_float(b[k * GEMM_NR + j] & 0xffffu);
            }
        }
}

#if defined(__x86_64__) && defined(__GNUC__)
/* kernel_bf16_avx512 for a block with alpha 1, straight into C (row stride ldc; its first mr rows and nr
 * columns): C = a^T b, or C += a^T b when accumulate (the kernel's sums, then write_block's, in the same order). */
__attribute__((target("avx512f,avx512bf16"))) static void kernel_bf16_avx512_c(size_t kp, const uint32_t *restrict a,
                                                                              const uint32_t *restrict b,
                                                                              float *restrict C, size_t ldc,
                                                                              int accumulate, size_t mr, size_t nr) {
    /* C (mr, nr) (+)= a^T b over pairs: 12 zmm accumulators, a pair of b in each lane, a's pair broadcast */
    __m512 c[GEMM_MR];
#pragma GCC unroll 12
    for (int i = 0; i < GEMM_MR; i++) c[i] = _mm512_setzero_ps();
    for (size_t k = 0; k < kp; k++) {
        __m512bh bk = (__m512bh)_mm512_loadu_si512(b + k * GEMM_NR);
        const uint32_t *ak = a + k * GEMM_MR;
#pragma GCC unroll 12
        for (int i = 0; i < GEMM_MR; i++) c[i] = _mm512_dpbf16_ps(c[i], (__m512bh)_mm512_set1_epi32((int)ak[i]), bk);
    }
    store_rows(c, C, ldc, accumulate, mr, nr);
}

/* The micro-kernel contract (acc = a^T b over pairs, 12 x 16) by kernel_bf16_avx512_c into acc. */
__attribute__((target("avx512f,avx512bf16"))) static void kernel_bf16_avx512(size_t kp, const uint32_t *restrict a,
                                                                            const uint32_t *restrict b,
                                                                            float *restrict acc) {
    kernel_bf16_avx512_c(kp, a, b, acc, GEMM_NR, 0, GEMM_MR, GEMM_NR);
}

/* kernel_bf16_avx512_c over two adjacent B pair panels (32 columns): 24 accumulators, each broadcast of a's
 * pair serves two vdpbf16ps (14 loads for 24 products instead of 13 for 12). Same sums, same order. */
__attribute__((target("avx512f,avx512bf16"))) static void kernel_bf16_avx512_c2(size_t kp, const uint32_t *restrict a,
                                                                               const uint32_t *restrict b0,
                                                                               const uint32_t *restrict b1,
                                                                               float *restrict C, size_t ldc,
                                                                               int accumulate, size_t mr) {
    __m512 c0[GEMM_MR], c1[GEMM_MR];
#pragma GCC unroll 12
    for (int i = 0; i < GEMM_MR; i++) c0[i] = _mm512_setzero_ps(), c1[i] = _mm512_setzero_ps();
    for (size_t k = 0; k < kp; k++) {
        __m512bh x0 = (__m512bh)_mm512_loadu_si512(b0 + k * GEMM_NR), x1 = (__m512bh)_mm512_loadu_si512(b1 + k * GEMM_NR);
        const uint32_t *ak = a + k * GEMM_MR;
#pragma GCC unroll 12
        for (int i = 0; i < GEMM_MR; i++) {
            __m512bh ai = (__m512bh)_mm512_set1_epi32((int)ak[i]);
            c0[i] = _mm512_dpbf16_ps(c0[i], ai, x0);
            c1[i] = _mm512_dpbf16_ps(c1[i], ai, x1);
        }
    }
#pragma GCC unroll 12
    for (int i = 0; i < GEMM_MR; i++) {
        if ((size_t)i >= mr) break;
        float *row = C + i * ldc;
        _mm512_storeu_ps(row, accumulate ? _mm512_add_ps(_mm512_loadu_ps(row), c0[i]) : c0[i]);
        _mm512_storeu_ps(row + 16, accumulate ? _mm512_add_ps(_mm512_loadu_ps(row + 16), c1[i]) : c1[i]);
    }
}
#endif

/* ---- AMX (Intel's tile unit) in BF16 mode ----
 * A tile multiply (TDPBF16PS) takes a 16 x 32 BF16 tile of A (16 rows of 16 pairs along k), a 16 x 16 tile of
 * B pairs (16 pair rows of 16 columns: exactly one k-block of a packed B panel's pairs) and accumulates a
 * 16 x 16 FP32 tile of C. A is laid out for it as blocks of 16 rows: [row block][k-block of 32][16 rows][16
 * pairs], k padded with zeros to a multiple of 32 (so are B's pair rows). The kernel keeps a 32 x 32 block of
 * C in four tiles (fewer at the edges) and loads each A and B tile once per k-block. */
#define AMX_K 32 /* depth of one tile multiply */
static int have_amx = 0;

#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The CPU has AMX-BF16 and Linux lets this process use the tile registers. */
static int amx_usable(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    if (!(d & (1u << 22)) || !(d & (1u << 24))) return 0; /* AMX-BF16, AMX-TILE */
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
}

/* The tile configuration (palette 1): tiles 0-3 C (16 x 16 FP32), 4, 5 A, 6, 7 B, all 16 rows of 64 bytes.
 * Static data, not a local: gcc drops stores to a local that only ldtilecfg reads. */
static const struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((packed, aligned(64))) amx_config = {
    .palette = 1, .colsb = {64, 64, 64, 64, 64, 64, 64, 64}, .rows = {16, 16, 16, 16, 16, 16, 16, 16}};

__attribute__((target("amx-tile"))) static void amx_configure(void) { _tile_loadconfig(&amx_config); }

/* C tiles (ra row blocks x cb column panels, each 1 or 2) += A tiles * B tiles over nk k-blocks. a: the first
 * row block's first k-block (the next row block is ablock uint32s on); b: the first panel's first k-block
 * (the next panel is bpanel on). C tile (r, c) is at ct[2 r + c] with a row stride of cs[2 r + c] bytes; it
 * starts from those values where bit 2 r + c of load is set, else from zero. */
__attribute__((target("amx-tile,amx-bf16"))) static void kernel_amx(size_t nk, const uint32_t *a, size_t ablock,
                                                                    const uint32_t *b, size_t bpanel, int ra, int cb,
                                                                    float *const ct[4], const size_t cs[4], int load) {
#define AMX_START(t)                                                                                         \
    do {                                                                                                     \
        if (load >> t & 1)                                                                                   \
            _tile_loadd(t, ct[t], cs[t]);                                                                    \
        else                                                                                                 \
            _tile_zero(t);                                                                                   \
    } while (0)
    AMX_START(0);
    if (cb > 1) AMX_START(1);
    if (ra > 1) AMX_START(2);
    if (ra > 1 && cb > 1) AMX_START(3);
#undef AMX_START
    for (size_t k = 0; k < nk; k++) {
        const uint32_t *ak = a + k * 256, *bk = b + k * 256;
        _tile_loadd(4, ak, 64);
        _tile_loadd(6, bk, 64);
        _tile_dpbf16ps(0, 4, 6);
        if (cb > 1) {
            _tile_loadd(7, bk + bpanel, 64);
            _tile_dpbf16ps(1, 4, 7);
        }
        if (ra > 1) {
            _tile_loadd(5, ak + ablock, 64);
            _tile_dpbf16ps(2, 5, 6);
            if (cb > 1) _tile_dpbf16ps(3, 5, 7);
        }
    }
    _tile_stored(0, ct[0], cs[0]);
    if (cb > 1) _tile_stored(1, ct[1], cs[1]);
    if (ra > 1) _tile_stored(2, ct[2], cs[2]);
    if (ra > 1 && cb > 1) _tile_stored(3, ct[3], cs[3]);
}

/* Packed B panels of 16 columns as BF16 pairs for AMX (to_pairs' layout, n = 16), 32 values at a time by
 * AVX-512 BF16 (rounding to nearest even, NaN kept). */
__attribute__((target("avx512f,avx512bw,avx512bf16"))) static void to_pairs16_avx512(uint32_t *dst, const float *src,
                                                                                    size_t kc, size_t kpad) {
    const __m512i ilv = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                         21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    size_t p = 0;
    for (; 2 * p + 1 < kc; p++) {
        __m512i v = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + (2 * p + 1) * 16), _mm512_loadu_ps(src + 2 * p * 16));
        _mm512_storeu_si512(dst + p * 16, _mm512_permutexvar_epi16(ilv, v));
    }
    if (kc % 2) {
        __m512i v = (__m512i)_mm512_cvtne2ps_pbh(_mm512_setzero_ps(), _mm512_loadu_ps(src + 2 * p * 16));
        _mm512_storeu_si512(dst + p * 16, _mm512_permutexvar_epi16(ilv, v));
        p++;
    }
    for (; p < kpad; p++) _mm512_storeu_si512(dst + p * 16, _mm512_setzero_si512());
}

/* to_amx_a's inner step for AVX-512: 16 rows of one k-block, gathered from the FP32 panels. */
__attribute__((target("avx512f,avx512bw,avx512bf16"))) static void amx_a_block_avx512(uint32_t *t, const float *ap,
                                                                                     size_t M, size_t K, size_t row0,
                                                                                     size_t k0) {
    const __m512i ilv = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                         21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i even = _mm512_set_epi32(30 * 12, 28 * 12, 26 * 12, 24 * 12, 22 * 12, 20 * 12, 18 * 12, 16 * 12,
                                          14 * 12, 12 * 12, 10 * 12, 8 * 12, 6 * 12, 4 * 12, 2 * 12, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(12));
    size_t kn = K - k0 < AMX_K ? K - k0 : AMX_K; /* valid depth in this block */
    __mmask16 me = (__mmask16)((1u << ((kn + 1) / 2)) - 1), mo = (__mmask16)((1u << (kn / 2)) - 1);
    for (size_t i = 0; i < 16; i++) {
        size_t row = row0 + i;
        if (row >= M) {
            _mm512_storeu_si512(t + i * 16, _mm512_setzero_si512());
            continue;
        }
        const float *src = ap + row / GEMM_MR * GEMM_MR * K + row % GEMM_MR + k0 * GEMM_MR;
        __m512 e = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), me, even, src, 4);
        __m512 o = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mo, odd, src, 4);
        _mm512_storeu_si512(t + i * 16, _mm512_permutexvar_epi16(ilv, (__m512i)_mm512_cvtne2ps_pbh(o, e)));
    }
}
#else
static int amx_usable(void) { return 0; }
static void amx_configure(void) {}
static void kernel_amx(size_t nk, const uint32_t *a, size_t ablock, const uint32_t *b, size_t bpanel, int ra, int cb,
                       float *const ct[4], const size_t cs[4], int load) {
    (void)nk, (void)a, (void)ablock, (void)b, (void)bpanel, (void)ra, (void)cb, (void)ct, (void)cs, (void)load;
    DF_CHECK(0, "AMX kernel on a build without AMX");
}
static void to_pairs16_avx512(uint32_t *dst, const float *src, size_t kc, size_t kpad) {
    to_pairs(dst, src, kc, 16, kpad); /* the same bits, portably */
}
static void amx_a_block_avx512(uint32_t *t, const float *ap, size_t M, size_t K, size_t row0, size_t k0) {
    (void)t, (void)ap, (void)M, (void)K, (void)row0, (void)k0;
}
#endif

/* op(A), packed in FP32 panels of MR rows (ap, panel stride MR * K), into AMX's layout (see above): M rounded
 * up to 16, K to AMX_K, zeros in the padding. dst holds ceil(M / 16) * 16 * kpad uint32s, kpad =
 * ceil(K / AMX_K) * AMX_K / 2. */
static void to_amx_a(uint32_t *restrict dst, const float *restrict ap, size_t M, size_t K) {
    size_t kpad = (K + AMX_K - 1) / AMX_K * (AMX_K / 2);
    ptrdiff_t rb = (ptrdiff_t)((M + 15) / 16);
#pragma omp parallel for schedule(static) if (rb > 1 && M * K > (1 << 16))
    for (ptrdiff_t q = 0; q < rb; q++)
        for (size_t kb = 0; kb < kpad / 16; kb++)
            amx_a_block_avx512(dst + (size_t)q * 16 * kpad + kb * 256, ap, M, K, (size_t)q * 16, kb * AMX_K);
}

typedef void (*kernel16_fn)(size_t, const uint32_t *, const uint32_t *, float *);
static kernel16_fn micro16 = NULL;
static int use_bf16 = 0;

typedef void (*kernel_fn)(size_t, const float *, const float *, float *);
static kernel_fn micro = NULL;
static const char *micro_name = "c";

/* Sets the kernels of one instruction set: "c", "avx2", "avx512" (FP32 kernels; BF16 pairs by AVX-512 BF16
 * where the CPU has it) or "amx" (AVX-512 for FP32, the tile unit for BF16). -1 if this CPU cannot. */
static int set_isa(const char *isa) {
    if (!strcmp(isa, "c")) {
        micro = kernel_c, micro_name = "c", transpose16 = NULL, micro16 = kernel_bf16_c, have_amx = 0;
        return 0;
    }
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (!strcmp(isa, "avx2") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        micro = kernel_avx2, micro_name = "avx2", transpose16 = NULL, micro16 = kernel_bf16_c, have_amx = 0;
        return 0;
    }
    int amx = !strcmp(isa, "amx");
    if ((amx || !strcmp(isa, "avx512")) && __builtin_cpu_supports("avx512f")) {
        if (amx && !amx_usable()) return -1;
        micro = kernel_avx512, micro_name = "avx512", transpose16 = transpose16_avx512, have_amx = amx;
        micro16 = __builtin_cpu_supports("avx512bf16") ? kernel_bf16_avx512 : kernel_bf16_c;
        return 0;
    }
#endif
    return -1;
}

/* Picks the kernels for this CPU once: DIFFUSE_ISA's if it names one this CPU runs, else the best. */
static void pick_kernel(void) {
    const char *env = getenv("DIFFUSE_ISA");
    if (env && *env && set_isa(env) == 0) return;
    if (set_isa("amx") && set_isa("avx512") && set_isa("avx2")) set_isa("c");
}

int gemm_force_isa(const char *isa) { return set_isa(isa); }

const char *gemm_isa(void) {
    if (!micro) pick_kernel();
    return micro_name;
}

int gemm_bf16_on(void) { return use_bf16; }

int gemm_set_bf16(int on) {
    int was = use_bf16;
    if (!micro) pick_kernel();
    use_bf16 = on;
    return was;
}

int df_set_precision(const char *name) {
    if (!strcmp(name, "fp32") || !strcmp(name, "bf16")) {
        gemm_set_bf16(!strcmp(name, "bf16"));
        return 0;
    }
    return df_error("precision must be fp32 or bf16, got '%s'", name);
}

const char *df_precision(void) { return use_bf16 ? "bf16" : "fp32"; }

const char *gemm_bf16_isa(void) {
    if (!micro) pick_kernel();
    if (have_amx) return "amx";
#if defined(__x86_64__) && defined(__GNUC__)
    if (micro16 == kernel_bf16_avx512) return "avx512_bf16";
#endif
    return "c";
}

/* C (mr x nr, the valid part of one block) = alpha * acc + beta * C; beta == 0 never reads C. Full rows
 * (nr == NR) go through fixed-length loops that the compiler vectorises. */
static void write_block(const float *restrict acc, float alpha, float beta, float *restrict C, size_t ldc, size_t mr,
                        size_t nr) {
    for (size_t i = 0; i < mr; i++) {
        float *restrict c = C + i * ldc;
        const float *restrict r = acc + i * GEMM_NR;
        if (nr == GEMM_NR) {
            if (beta == 0)
                for (int j = 0; j < GEMM_NR; j++) c[j] = alpha * r[j];
            else if (alpha == 1 && beta == 1)
                for (int j = 0; j < GEMM_NR; j++) c[j] += r[j];
            else
                for (int j = 0; j < GEMM_NR; j++) c[j] = alpha * r[j] + beta * c[j];
        } else if (beta == 0) {
            for (size_t j = 0; j < nr; j++) c[j] = alpha * r[j];
        } else {
            for (size_t j = 0; j < nr; j++) c[j] = alpha * r[j] + beta * c[j];
        }
    }
}

/* ---- driver ---- */

/* One MC x NC tile of C at (i0, j0), all of K. ap holds all of op(A) packed once (panels of MR rows over
 * the full depth K); the tile's slices of op(B) are packed through the calling thread's scratch. */
/* The default B packer: a plain row-major matrix (transposed or not), gemm_plain_b_ctx in kernels.h. */
typedef gemm_plain_b_ctx plain_b;

static void pack_plain_b(float *dst, size_t p0, size_t kc, size_t j0, size_t nc, const void *ctx) {
    const plain_b *pb = ctx;
    pack_b(dst, pb->transB, pb->B, pb->ldb, p0, kc, j0, nc);
}

/* All of op(A), packed once: FP32 panels (MR rows over the full depth K, panel stride MR * K) and, in BF16 mode,
 * their pairs (panel stride MR * K2, K2 = ceil(K / 2)); a16 is NULL in FP32 mode. */
typedef struct {
    const float *a;
    const uint32_t *a16;
    size_t K, K2; /* K2: pairs per row of a16 (ceil(K / 2), or with AMX ceil(K / AMX_K) * AMX_K / 2) */
    int amx;      /* a16 in AMX's layout */
} packed_a;

/* Pair rows of a B slice kc deep: ceil(kc / 2), padded to whole tiles for AMX. */
static size_t slice_pairs(size_t kc, int amx) { return amx ? (kc + AMX_K - 1) / AMX_K * (AMX_K / 2) : (kc + 1) / 2; }

/* block() by AMX: C in blocks of 32 x 32 (kernel_amx). A whole 16 x 16 tile with alpha 1 is accumulated in C
 * itself (loaded when b_eff is 1, zeroed when 0); the others go through acc and write_block. */
static void block_amx(size_t mc, size_t nc, size_t kc, const packed_a *A, size_t i0, size_t p0, const uint32_t *b16,
                      float alpha, float b_eff, float *C, size_t ldc) {
    size_t kp = slice_pairs(kc, 1);
    float acc[4 * 256] __attribute__((aligned(64)));
    int direct_ok = alpha == 1 && (b_eff == 0 || b_eff == 1);
    amx_configure();
    for (size_t c = 0; c < nc; c += 32) {
        int cb = nc - c > 16 ? 2 : 1;
        for (size_t r = 0; r < mc; r += 32) {
            int ra = mc - r > 16 ? 2 : 1, load = 0, direct[4] = {0};
            float *ct[4];
            size_t cs[4];
            for (int t = 0; t < 4; t++) {
                size_t rr = r + 16 * (size_t)(t / 2), cc = c + 16 * (size_t)(t % 2);
                direct[t] = direct_ok && rr + 16 <= mc && cc + 16 <= nc;
                ct[t] = direct[t] ? C + rr * ldc + cc : acc + t * 256;
                cs[t] = direct[t] ? ldc * sizeof(float) : 64;
                if (direct[t] && b_eff == 1) load |= 1 << t;
            }
            const uint32_t *a = A->a16 + (i0 + r) / 16 * 16 * A->K2 + p0 / AMX_K * 256;
            kernel_amx(kp / 16, a, 16 * A->K2, b16 + c * kp, 16 * kp, ra, cb, ct, cs, load);
            for (int t = 0; t < 4; t++) {
                size_t rr = r + 16 * (size_t)(t / 2), cc = c + 16 * (size_t)(t % 2);
                if (direct[t] || t / 2 >= ra || t % 2 >= cb) continue;
                write_block(acc + t * 256, alpha, b_eff, C + rr * ldc + cc, ldc, mc - rr < 16 ? mc - rr : 16,
                            nc - cc < 16 ? nc - cc : 16);
            }
        }
    }
}

/* One depth slice [p0, p0 + kc) of the mc x nc block of C at row i0: C = alpha * A B + b_eff * C over
 * micro-kernel blocks, from b, the packed B slice (panel stride 16 kc), or in BF16 mode its pairs b16 (panel
 * stride 16 ceil(kc / 2)). */
static void block(size_t mc, size_t nc, size_t kc, const packed_a *A, size_t i0, size_t p0, const float *b,
                  const uint32_t *b16, float alpha, float b_eff, float *C, size_t ldc) {
    if (b16 && A->amx) {
        block_amx(mc, nc, kc, A, i0, p0, b16, alpha, b_eff, C, ldc);
        return;
    }
    size_t kp = (kc + 1) / 2;
    for (size_t c = 0; c < nc; c += GEMM_NR) {
        size_t nr = nc - c < GEMM_NR ? nc - c : GEMM_NR;
#if defined(__x86_64__) && defined(__GNUC__)
        if (b16 && micro16 == kernel_bf16_avx512 && alpha == 1 && (b_eff == 0 || b_eff == 1)) {
            const uint32_t *a16 = A->a16 + i0 * A->K2 + p0 / 2 * GEMM_MR;
            int two = c + 2 * GEMM_NR <= nc; /* two whole panels at once */
            for (size_t r = 0; r < mc; r += GEMM_MR) {
                size_t mr = mc - r < GEMM_MR ? mc - r : GEMM_MR;
                if (two)
                    kernel_bf16_avx512_c2(kp, a16 + r * A->K2, b16 + c * kp, b16 + (c + GEMM_NR) * kp,
                                          C + r * ldc + c, ldc, b_eff == 1, mr);
                else
                    kernel_bf16_avx512_c(kp, a16 + r * A->K2, b16 + c * kp, C + r * ldc + c, ldc, b_eff == 1, mr,
                                         nr);
            }
            c += two ? GEMM_NR : 0;
            continue;
        }
        if (!b16 && micro == kernel_avx512 && alpha == 1 && (b_eff == 0 || b_eff == 1) && c + 2 * GEMM_NR <= nc) {
            for (size_t r = 0; r < mc; r += GEMM_MR) /* two whole panels at once */
                kernel_avx512_c2(kc, A->a + (i0 + r) * A->K + p0 * GEMM_MR, b + c * kc, b + (c + GEMM_NR) * kc,
                                 C + r * ldc + c, ldc, b_eff == 1, mc - r < GEMM_MR ? mc - r : GEMM_MR);
            c += GEMM_NR;
            continue;
        }
#endif
        for (size_t r = 0; r < mc; r += GEMM_MR) {
            size_t mr = mc - r < GEMM_MR ? mc - r : GEMM_MR;
            float acc[GEMM_MR * GEMM_NR] __attribute__((aligned(64)));
#if defined(__x86_64__) && defined(__GNUC__)
            if (!b16 && micro == kernel_avx512 && alpha == 1 && (b_eff == 0 || b_eff == 1)) {
                kernel_avx512_c(kc, A->a + (i0 + r) * A->K + p0 * GEMM_MR, b + c * kc, C + r * ldc + c, ldc,
                                b_eff == 1, mr, nr);
                continue;
            }
#endif
            if (b16)
                micro16(kp, A->a16 + (i0 + r) * A->K2 + p0 / 2 * GEMM_MR, b16 + c * kp, acc);
            else
                micro(kc, A->a + (i0 + r) * A->K + p0 * GEMM_MR, b + c * kc, acc);
            write_block(acc, alpha, b_eff, C + r * ldc + c, ldc, mr, nr);
        }
    }
}

/* Packs a depth slice of B through packb and, in BF16 mode, makes its pairs (NULL otherwise). */
static const uint32_t *pack_slice(float *bp, const packed_a *A, size_t p0, size_t kc, size_t j0, size_t nc,
                                  gemm_pack_b_fn packb, const void *pctx) {
    packb(bp, p0, kc, j0, nc, pctx);
    if (!A->a16) return NULL;
    size_t kp = slice_pairs(kc, A->amx);
    uint32_t *b16 = (uint32_t *)df_scratch(GEMM_SLOT_B16, (size_t)GEMM_KC / 2 * GEMM_NC);
    for (size_t c = 0; c < nc; c += GEMM_NR) {
        if (A->amx || micro16 == kernel_bf16_avx512) /* AVX-512 BF16 converts: the same bits */
            to_pairs16_avx512(b16 + c * kp, bp + c * kc, kc, kp);
        else
            to_pairs(b16 + c * kp, bp + c * kc, kc, GEMM_NR, kp);
    }
    return b16;
}

static void gemm_tile(size_t M, size_t N, const packed_a *A, float alpha, gemm_pack_b_fn packb, const void *pctx,
                      float beta, float *C, size_t ldc, size_t i0, size_t j0) {
    /* C[i0:i0+mc, j0:j0+nc] = alpha * op(A)[i0:i0+mc, :] op(B)[:, j0:j0+nc] + beta * C[...] */
    size_t mc = M - i0 < GEMM_MC ? M - i0 : GEMM_MC;
    size_t nc = N - j0 < GEMM_NC ? N - j0 : GEMM_NC;
    float *bp = df_scratch(GEMM_SLOT_B, (size_t)GEMM_KC * GEMM_NC);
    for (size_t p0 = 0; p0 < A->K; p0 += GEMM_KC) {
        size_t kc = A->K - p0 < GEMM_KC ? A->K - p0 : GEMM_KC;
        float b_eff = p0 == 0 ? beta : 1.0f; /* later slices accumulate onto the first */
        const uint32_t *b16 = pack_slice(bp, A, p0, kc, j0, nc, packb, pctx);
        block(mc, nc, kc, A, i0, p0, bp, b16, alpha, b_eff, C + i0 * ldc + j0, ldc);
    }
}

/* Every row of C for the column block [j0, j0 + NC): each depth slice of B is packed once and serves all of
 * the block's MC x NC tiles (gemm_tile packs it again for each tile). Same arithmetic as gemm_tile. */
static void gemm_cols(size_t M, size_t N, const packed_a *A, float alpha, gemm_pack_b_fn packb, const void *pctx,
                      float beta, float *C, size_t ldc, size_t j0) {
    /* C[:, j0:j0+nc] = alpha * op(A) op(B)[:, j0:j0+nc] + beta * C[:, j0:j0+nc] */
    size_t nc = N - j0 < GEMM_NC ? N - j0 : GEMM_NC;
    float *bp = df_scratch(GEMM_SLOT_B, (size_t)GEMM_KC * GEMM_NC);
    for (size_t p0 = 0; p0 < A->K; p0 += GEMM_KC) {
        size_t kc = A->K - p0 < GEMM_KC ? A->K - p0 : GEMM_KC;
        float b_eff = p0 == 0 ? beta : 1.0f;
        const uint32_t *b16 = pack_slice(bp, A, p0, kc, j0, nc, packb, pctx);
        for (size_t i0 = 0; i0 < M; i0 += GEMM_MC) {
            size_t mc = M - i0 < GEMM_MC ? M - i0 : GEMM_MC;
            block(mc, nc, kc, A, i0, p0, bp, b16, alpha, b_eff, C + i0 * ldc + j0, ldc);
        }
    }
}

/* gemm: C[M,N] = alpha * op(A) op(B) + beta * C (see kernels.h). Threads take MC x NC tiles of C; small
 * products run on the calling thread. Inside an enclosing parallel region it runs serially. */
void gemm(int transA, int transB, size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
          const float *B, size_t ldb, float beta, float *C, size_t ldc) {
    /* C (M, N) = alpha * op(A) (M, K) op(B) (K, N) + beta * C */
    DF_CHECK(lda >= (transA ? M : K) && ldb >= (transB ? K : N) && ldc >= N,
             "gemm: leading dimensions too small (lda %zu, ldb %zu, ldc %zu for M %zu N %zu K %zu)", lda, ldb, ldc,
             M, N, K);
    plain_b pb = {transB, B, ldb};
    gemm_packed_b(transA, M, N, K, alpha, A, lda, pack_plain_b, &pb, beta, C, ldc);
}

void gemm_packed_b(int transA, size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
                   gemm_pack_b_fn packb, const void *pctx, float beta, float *C, size_t ldc) {
    /* C (M, N) = alpha * op(A) (M, K) B (K, N) + beta * C, B delivered in panels by packb */
    if (M == 0 || N == 0) return;
    if (K == 0 || alpha == 0) { /* nothing to multiply: C = beta * C */
        for (size_t i = 0; i < M; i++)
            for (size_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0 ? 0 : beta * C[i * ldc + j];
        return;
    }
    if (!micro) pick_kernel();
    int parallel = (double)M * (double)N * (double)K > 32768.0 * 8;
    float *ap = df_scratch(GEMM_SLOT_A, gemm_packed_a_size(M, K));
    gemm_pack_a(ap, transA, A, lda, M, K, parallel);
    gemm_prepacked(M, N, K, alpha, ap, packb, pctx, beta, C, ldc);
}

static size_t fp32_panels_size(size_t M, size_t K) { return (M + GEMM_MR - 1) / GEMM_MR * GEMM_MR * K; }

/* The FP32 panels, then room for their BF16 copy in either layout (AMX's or the pair kernels'). */
size_t gemm_packed_a_size(size_t M, size_t K) {
    size_t amx = (M + 15) / 16 * 16 * slice_pairs(K, 1), pairs = (M + GEMM_MR - 1) / GEMM_MR * GEMM_MR * ((K + 1) / 2);
    return fp32_panels_size(M, K) + (amx > pairs ? amx : pairs);
}

void gemm_pack_a_bf16(float *ap, size_t M, size_t K) {
    /* the BF16 copy of ap's FP32 panels, after them, in the layout of the kernel in use (BF16 mode only) */
    if (!use_bf16) return;
    if (!micro) pick_kernel();
    uint32_t *a16 = (uint32_t *)(ap + fp32_panels_size(M, K));
    if (have_amx) {
        to_amx_a(a16, ap, M, K);
        return;
    }
    size_t panels = (M + GEMM_MR - 1) / GEMM_MR, K2 = (K + 1) / 2;
    for (size_t q = 0; q < panels; q++) to_pairs(a16 + q * GEMM_MR * K2, ap + q * GEMM_MR * K, K, GEMM_MR, K2);
}

void gemm_pack_a(float *ap, int transA, const float *A, size_t lda, size_t M, size_t K, int parallel) {
    /* ap (ceil(M/MR), K, MR): panel q holds rows [q*MR, q*MR + MR) of op(A) over the full depth K */
    ptrdiff_t panels = (ptrdiff_t)((M + GEMM_MR - 1) / GEMM_MR);
#pragma omp parallel for schedule(static) if (parallel && panels > 1)
    for (ptrdiff_t q = 0; q < panels; q++) {
        size_t r = (size_t)q * GEMM_MR;
        pack_a(ap + r * K, transA, A, lda, r, M - r < GEMM_MR ? M - r : GEMM_MR, 0, K);
    }
    gemm_pack_a_bf16(ap, M, K);
}

void gemm_prepacked(size_t M, size_t N, size_t K, float alpha, const float *ap, gemm_pack_b_fn packb,
                    const void *pctx, float beta, float *C, size_t ldc) {
    /* C (M, N) = alpha * A (packed by gemm_pack_a) B + beta * C */
    if (M == 0 || N == 0) return;
    if (!micro) pick_kernel();
    packed_a A = {ap, NULL, K, slice_pairs(K, have_amx), have_amx};
    if (use_bf16) A.a16 = (const uint32_t *)(ap + fp32_panels_size(M, K));
    size_t tm = (M + GEMM_MC - 1) / GEMM_MC, tn = (N + GEMM_NC - 1) / GEMM_NC;
    ptrdiff_t tiles = (ptrdiff_t)(tm * tn);
    int parallel = tiles > 1 && (double)M * (double)N * (double)K > 32768.0 * 8, threads = 1;
#ifdef _OPENMP
    threads = omp_in_parallel() ? 1 : omp_get_max_threads();
#endif
    if (tm > 1 && (!parallel || threads == 1 || tn >= 2 * (size_t)threads)) {
        /* whole column blocks (B packed once for all rows), over threads when there are enough of them */
#pragma omp parallel for schedule(dynamic, 1) if (parallel && threads > 1)
        for (ptrdiff_t j = 0; j < (ptrdiff_t)tn; j++)
            gemm_cols(M, N, &A, alpha, packb, pctx, beta, C, ldc, (size_t)j * GEMM_NC);
        return;
    }
#pragma omp parallel for schedule(dynamic, 1) if (parallel)
    for (ptrdiff_t t = 0; t < tiles; t++) {
        size_t i0 = ((size_t)t / tn) * GEMM_MC, j0 = ((size_t)t % tn) * GEMM_NC;
        gemm_tile(M, N, &A, alpha, packb, pctx, beta, C, ldc, i0, j0);
    }
}

void gemm_plain_b(float *dst, size_t p0, size_t kc, size_t j0, size_t nc, const void *ctx) {
    pack_plain_b(dst, p0, kc, j0, nc, ctx);
}
