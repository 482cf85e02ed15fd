/* gemm.c: C = alpha * op(A) op(B) + beta * C on row-major float matrices.
 *
 * The fast version is a BLIS-style loop nest: C is cut into MC x NC tiles that OpenMP threads take
 * independently; for each KC-deep slice a thread packs its slice of op(A) into MR-row panels and of op(B)
 * into NR-column panels (zero-padded at the edges, transposes resolved here), and a branch-free micro-kernel
 * multiplies one MR x NR block from contiguous panels with fixed loop bounds, which gcc vectorises at -O2.
 * Every element of C is summed by one thread in a fixed order, so results do not depend on thread count.
 *
 * The micro-kernels are in gemm_kernels.c.
 *
 * Scratch: the packed panels live in df_scratch slots 2 (A, with its BF16 copy in BF16 mode) and 3 (B) of the
 * calling thread, and B's BF16 pairs in slot 9. Callers that hold their own scratch across a gemm call (conv2d,
 * attention) use slots 0 and 1.
 *
 * BF16 mode (gemm_set_bf16): the same loop nest over panels rounded to BF16 pairs; the pair kernels and AMX
 * are in gemm_bf16.c, what both files share in gemm_internal.h.
 */
#include "gemm_internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "diffuse.h"

/* ---- reference ---- */

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
                s += bf16 ? (double)bf16_round(a) * bf16_round(b) : (double)a * b;
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

#if defined(__x86_64__) && defined(__GNUC__)
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

static int use_bf16 = 0;

typedef void (*kernel_fn)(size_t, const float *, const float *, float *);
static kernel_fn micro = NULL;
static const char *micro_name = "c";

/* Sets the kernels of one instruction set: "c", "avx2", "avx512" (FP32 kernels; BF16 pairs by AVX-512 BF16
 * where the CPU has it) or "amx" (AVX-512 for FP32, the tile unit for BF16). -1 if this CPU cannot. */
static int set_isa(const char *isa) {
    if (!strcmp(isa, "c")) {
        micro = gemm_kernel_c, micro_name = "c", transpose16 = NULL, bf16_select(0);
        return 0;
    }
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (!strcmp(isa, "avx2") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        micro = gemm_kernel_avx2, micro_name = "avx2", transpose16 = NULL, bf16_select(0);
        return 0;
    }
    int amx = !strcmp(isa, "amx");
    if ((amx || !strcmp(isa, "avx512")) && __builtin_cpu_supports("avx512f")) {
        if (bf16_select(amx ? 2 : 1)) return -1;
        micro = gemm_kernel_avx512, micro_name = "avx512", transpose16 = transpose16_avx512;
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
    return bf16_isa();
}

/* C (mr x nr, the valid part of one block) = alpha * acc + beta * C; beta == 0 never reads C. Full rows
 * (nr == NR) go through fixed-length loops that the compiler vectorises. */
void gemm_write_block(const float *restrict acc, float alpha, float beta, float *restrict C, size_t ldc, size_t mr,
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


/* One depth slice [p0, p0 + kc) of the mc x nc block of C at row i0: C = alpha * A B + b_eff * C over
 * micro-kernel blocks, from b, the packed B slice (panel stride 16 kc), or in BF16 mode its pairs b16
 * (gemm_bf16.c). With bias (the block's rows', b_eff 0): C = alpha * A B + bias per row, which the AVX-512
 * kernels add as they store and the others as C filled with it and b_eff 1: the same bits either way. bs: the
 * row stride of b, GEMM_NR for packed panels (panel c / 16 at b + c kc), else B in place (b_in_place: column c
 * at b + c; a stride of 16 then means N <= 16, one panel, at b either way). */
static void block(size_t mc, size_t nc, size_t kc, const packed_a *A, size_t i0, size_t p0, const float *b,
                  size_t bs, const uint32_t *b16, float alpha, float b_eff, const float *bias, float *C,
                  size_t ldc) {
    size_t cstep = bs == GEMM_NR ? kc : 1; /* b + c * cstep: column c's panel */
    int fast = 0; /* the AVX-512 kernels store into C: alpha 1 with b_eff 0 or 1, any alpha with 0 */
#if defined(__x86_64__) && defined(__GNUC__)
    fast = micro == gemm_kernel_avx512 && (b_eff == 0 || (alpha == 1 && b_eff == 1));
#endif
    if (bias && (b16 || !fast)) {
        for (size_t i = 0; i < mc; i++)
            for (size_t j = 0; j < nc; j++) C[i * ldc + j] = bias[i];
        bias = NULL, b_eff = 1;
    }
    if (b16) {
        bf16_block(mc, nc, kc, A, i0, p0, b16, alpha, b_eff, C, ldc);
        return;
    }
    for (size_t c = 0; c < nc; c += GEMM_NR) {
        size_t nr = nc - c < GEMM_NR ? nc - c : GEMM_NR;
#if defined(__x86_64__) && defined(__GNUC__)
        if (fast && c + 2 * GEMM_NR <= nc) {
            for (size_t r = 0; r < mc; r += GEMM_MR) { /* two whole panels at once */
                if (c == 0 && nc <= 64 && r + GEMM_MR < mc) { /* few columns (batch 1), the first pass over A:
                                                                  * the next panel's slice into cache */
                    const char *next = (const char *)(A->a + (i0 + r + GEMM_MR) * A->K + p0 * GEMM_MR);
                    for (size_t q = 0; q < kc * GEMM_MR * sizeof(float); q += 64)
                        __builtin_prefetch(next + q, 0, 3);
                }
                gemm_avx512_c2(kc, A->a + (i0 + r) * A->K + p0 * GEMM_MR, b + c * cstep, b + (c + GEMM_NR) * cstep,
                               bs, C + r * ldc + c, ldc, alpha, b_eff == 1, bias ? bias + r : NULL,
                               mc - r < GEMM_MR ? mc - r : GEMM_MR);
            }
            c += GEMM_NR;
            continue;
        }
        if (fast && nr <= GEMM_NR_NARROW) {
            gemm_avx512_narrow(kc, A->a + i0 * A->K + p0 * GEMM_MR, GEMM_MR * A->K, b + c * cstep, bs, C + c, ldc,
                               alpha, b_eff == 1, bias, mc, nr);
            continue;
        }
#endif
        for (size_t r = 0; r < mc; r += GEMM_MR) {
            size_t mr = mc - r < GEMM_MR ? mc - r : GEMM_MR;
#if defined(__x86_64__) && defined(__GNUC__)
            if (fast) {
                gemm_avx512_c(kc, A->a + (i0 + r) * A->K + p0 * GEMM_MR, b + c * cstep, bs, C + r * ldc + c, ldc,
                              alpha, b_eff == 1, bias ? bias + r : NULL, mr, nr);
                continue;
            }
#endif
            float acc[GEMM_MR * GEMM_NR] __attribute__((aligned(64)));
            micro(kc, A->a + (i0 + r) * A->K + p0 * GEMM_MR, b + c * kc, acc);
            gemm_write_block(acc, alpha, b_eff, C + r * ldc + c, ldc, mr, nr);
        }
    }
}

/* Packs a depth slice of B through packb and, in BF16 mode, makes its pairs (NULL otherwise). */
static const uint32_t *pack_slice(float *bp, const packed_a *A, size_t p0, size_t kc, size_t j0, size_t nc,
                                  gemm_pack_b_fn packb, const void *pctx) {
    packb(bp, p0, kc, j0, nc, pctx);
    return A->a16 ? bf16_pack_slice(bp, A, kc, nc) : NULL;
}

#ifndef B_IN_PLACE_MAX_LD
#define B_IN_PLACE_MAX_LD 1024
#endif

/* B that the AVX-512 kernels read in place instead of packing it (its row stride, 0 where they do not): a plain
 * B, not transposed, of row stride at most B_IN_PLACE_MAX_LD, in FP32 where every block goes to those kernels
 * (alpha 1 with beta 0 or 1, or any alpha with beta 0 over one depth slice). Packing copies a slice for the
 * micro-kernels' contiguous panels; in place they read rows of a 16- or 32-column strip instead, which stay in
 * L1 over the slice. The copy was a tenth of Winograd's position GEMMs at batch 1 (64 x 49 by 64); in place,
 * F(4x4, 3x3) 64->64 at 28x28, batch 64, went 8742 -> 8392 us, a 1x1 128->64 at 28x28 3841 -> 3475. Same
 * products in the same order: the same bits. */
static size_t b_in_place(const packed_a *A, gemm_pack_b_fn packb, const void *pctx, float alpha, float beta) {
#if defined(__x86_64__) && defined(__GNUC__)
    if ((packb == gemm_plain_b || packb == pack_plain_b) && micro == gemm_kernel_avx512 && !A->a16 &&
        ((alpha == 1 && (beta == 0 || beta == 1)) || (beta == 0 && A->K <= GEMM_KC))) {
        const plain_b *pb = pctx;
        if (!pb->transB && pb->ldb <= B_IN_PLACE_MAX_LD) return pb->ldb;
    }
#else
    (void)A, (void)packb, (void)pctx, (void)alpha, (void)beta;
#endif
    return 0;
}

/* Rows [i0, i1) and columns [j0, j1) of C (i0 a multiple of MR, j0 of NR): column blocks of at most NC from j0,
 * each depth slice of B packed once (unless read in place) and serving all of the range's MC-row blocks; one
 * MC x NC tile when the range is one. Each C element gets the same micro-kernel sums whatever the range. */
static void gemm_range(const packed_a *A, float alpha, gemm_pack_b_fn packb, const void *pctx, float beta,
                       const float *bias, float *C, size_t ldc, size_t i0, size_t i1, size_t j0, size_t j1) {
    /* C[i0:i1, j0:j1] = alpha * op(A)[i0:i1, :] op(B)[:, j0:j1] + beta * C[i0:i1, j0:j1] */
    size_t ldb = b_in_place(A, packb, pctx, alpha, beta);
    float *bp = ldb ? NULL : df_scratch(GEMM_SLOT_B, (size_t)GEMM_KC * GEMM_NC);
    for (size_t j = j0; j < j1; j += GEMM_NC) {
        size_t nc = j1 - j < GEMM_NC ? j1 - j : GEMM_NC;
        for (size_t p0 = 0; p0 < A->K; p0 += GEMM_KC) {
            size_t kc = A->K - p0 < GEMM_KC ? A->K - p0 : GEMM_KC;
            float b_eff = p0 == 0 ? beta : 1.0f; /* later slices accumulate onto the first */
            const uint32_t *b16 = ldb ? NULL : pack_slice(bp, A, p0, kc, j, nc, packb, pctx);
            const float *b = ldb ? ((const plain_b *)pctx)->B + p0 * ldb + j : bp;
            for (size_t i = i0; i < i1; i += GEMM_MC) {
                size_t mc = i1 - i < GEMM_MC ? i1 - i : GEMM_MC;
                block(mc, nc, kc, A, i, p0, b, ldb ? ldb : GEMM_NR, b16, alpha, b_eff,
                      p0 == 0 && bias ? bias + i : NULL, C + i * ldc + j, ldc);
            }
        }
    }
}

/* How evenly n units split over t threads in contiguous ranges: the largest range over the mean (1 = even). */
static double split_skew(size_t n, int t) { return (double)((n + (size_t)t - 1) / (size_t)t) * (double)t / (double)n; }

/* gemm: C[M,N] = alpha * op(A) op(B) + beta * C (see kernels.h). Threads take MC x NC tiles of C, or when
 * there are few tiles one even range of panels each; small products run on the calling thread. Inside an enclosing parallel region it runs serially. */
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
    size_t amx = (M + 15) / 16 * 16 * bf16_slice_pairs(K, 1), pairs = (M + GEMM_MR - 1) / GEMM_MR * GEMM_MR * ((K + 1) / 2);
    return fp32_panels_size(M, K) + (amx > pairs ? amx : pairs);
}

void gemm_pack_a_bf16(float *ap, size_t M, size_t K) {
    /* the BF16 copy of ap's FP32 panels, after them, in the layout of the kernel in use (BF16 mode only) */
    if (!use_bf16) return;
    if (!micro) pick_kernel();
    bf16_pack_a((uint32_t *)(ap + fp32_panels_size(M, K)), ap, M, K);
}

void gemm_pack_a(float *ap, int transA, const float *A, size_t lda, size_t M, size_t K, int parallel) {
    /* ap (ceil(M/MR), K, MR): panel q holds rows [q*MR, q*MR + MR) of op(A) over the full depth K */
    ptrdiff_t panels = (ptrdiff_t)((M + GEMM_MR - 1) / GEMM_MR);
    DF_PARALLEL_FOR_IF(parallel && panels > 1, "omp parallel for schedule(static)",
                       for (ptrdiff_t q = 0; q < panels; q++) {
                           size_t r = (size_t)q * GEMM_MR;
                           pack_a(ap + r * K, transA, A, lda, r, M - r < GEMM_MR ? M - r : GEMM_MR, 0, K);
                       });
    gemm_pack_a_bf16(ap, M, K);
}

/* gemm_prepacked, or with bias (beta 0): C = alpha * A B + bias[i] on row i. */
static void prepacked(size_t M, size_t N, size_t K, float alpha, const float *ap, gemm_pack_b_fn packb,
                      const void *pctx, float beta, const float *bias, float *C, size_t ldc) {
    /* C (M, N) = alpha * A (packed by gemm_pack_a) B + (beta * C or bias) */
    if (M == 0 || N == 0) return;
    if (bias && K == 0) { /* no depth slice to add the bias on */
        for (size_t i = 0; i < M; i++)
            for (size_t j = 0; j < N; j++) C[i * ldc + j] = bias[i];
        return;
    }
    if (!micro) pick_kernel();
    packed_a A = {ap, NULL, K, bf16_slice_pairs(K, bf16_amx()), bf16_amx()};
    if (use_bf16) A.a16 = (const uint32_t *)(ap + fp32_panels_size(M, K));
    size_t tm = (M + GEMM_MC - 1) / GEMM_MC, tn = (N + GEMM_NC - 1) / GEMM_NC;
    /* units of a split: column panels, and row panels (48 rows under AMX, whose tiles start every 16 rows) */
    size_t ru = A.a16 && A.amx ? 48 : GEMM_MR, mp = (M + ru - 1) / ru, np = (N + GEMM_NR - 1) / GEMM_NR;
    ptrdiff_t tiles = (ptrdiff_t)(tm * tn);
    int big = (double)M * (double)N * (double)K > 32768.0 * 8, threads = 1;
#ifdef _OPENMP
    threads = omp_in_parallel() ? 1 : omp_get_max_threads();
    if (big && threads > 1 && tiles < 8 * threads && (mp >= (size_t)threads || np >= (size_t)threads)) {
        /* Few tiles (a small product, as at batch 1): MC x NC tiles would leave threads idle (M = 128 is a 96-row
         * and a 32-row tile), so each thread takes one contiguous range of panels, of rows or of columns. */
        double sc = np >= (size_t)threads ? split_skew(np, threads) : 1e9;
        double sr = mp >= (size_t)threads ? split_skew(mp, threads) : 1e9;
        /* Rows when A is the much larger operand: a column split has every thread stream all of A (at batch 1
         * the weights, from memory), a row split has every thread pack all of B (for a convolution, its im2col).
         * Measured at batch 1, 2 threads: the 3x3 at 7x7 (M 128, N 49) by rows 131 -> 101 us, the stride-2 3x3
         * at 28x28 (M 64, N 196) by columns 136 -> 113 us. */
        int by_rows = (M >= 2 * N && sr <= 1.15) || (sc > 1.2 && sr < sc);
#pragma omp parallel num_threads(threads)
        {
            size_t t = (size_t)omp_get_thread_num(), n = by_rows ? mp : np, T = (size_t)threads;
            size_t u0 = n * t / T, u1 = n * (t + 1) / T;
            if (by_rows)
                gemm_range(&A, alpha, packb, pctx, beta, bias, C, ldc, u0 * ru, u1 * ru < M ? u1 * ru : M, 0, N);
            else
                gemm_range(&A, alpha, packb, pctx, beta, bias, C, ldc, 0, M, u0 * GEMM_NR,
                           u1 * GEMM_NR < N ? u1 * GEMM_NR : N);
        }
        return;
    }
#endif
    /* A region only for a team (DF_PARALLEL_FOR_IF): a batch-1 forward called this some 590 times inside
     * Winograd's team or for too small a product. */
    int parallel = tiles > 1 && big && threads > 1;
    if (tm > 1 && (!parallel || tn >= 2 * (size_t)threads)) {
        /* whole column blocks (B packed once for all rows), over threads when there are enough of them */
        DF_PARALLEL_FOR_IF(parallel, "omp parallel for schedule(dynamic, 1)",
                           for (ptrdiff_t j = 0; j < (ptrdiff_t)tn; j++) {
                               size_t j0 = (size_t)j * GEMM_NC;
                               gemm_range(&A, alpha, packb, pctx, beta, bias, C, ldc, 0, M, j0,
                                          N - j0 < GEMM_NC ? N : j0 + GEMM_NC);
                           });
        return;
    }
    DF_PARALLEL_FOR_IF(parallel, "omp parallel for schedule(dynamic, 1)",
                       for (ptrdiff_t t = 0; t < tiles; t++) {
                           size_t i0 = (size_t)t / tn * GEMM_MC, j0 = (size_t)t % tn * GEMM_NC;
                           gemm_range(&A, alpha, packb, pctx, beta, bias, C, ldc, i0,
                                      M - i0 < GEMM_MC ? M : i0 + GEMM_MC, j0, N - j0 < GEMM_NC ? N : j0 + GEMM_NC);
                       });
}

void gemm_prepacked(size_t M, size_t N, size_t K, float alpha, const float *ap, gemm_pack_b_fn packb,
                    const void *pctx, float beta, float *C, size_t ldc) {
    /* C (M, N) = alpha * A (packed by gemm_pack_a) B + beta * C */
    prepacked(M, N, K, alpha, ap, packb, pctx, beta, NULL, C, ldc);
}

void gemm_prepacked_bias(size_t M, size_t N, size_t K, const float *ap, gemm_pack_b_fn packb, const void *pctx,
                         const float *bias, float *C, size_t ldc) {
    /* C (M, N) = A (packed by gemm_pack_a) B + bias (M) on every column */
    prepacked(M, N, K, 1.0f, ap, packb, pctx, 0.0f, bias, C, ldc);
}

void gemm_plain_b(float *dst, size_t p0, size_t kc, size_t j0, size_t nc, const void *ctx) {
    pack_plain_b(dst, p0, kc, j0, nc, ctx);
}
