/* winograd_internal.h: what the two Winograd forwards share, F(2x2, 3x3) in winograd.c and F(4x4, 3x3) in
 * winograd4.c: their scratch slots, how they cut the batch's tiles into chunks, and the CPU test of their
 * AVX-512 row kernels. Not part of kernels.h. */
#ifndef DF_WINOGRAD_INTERNAL_H
#define DF_WINOGRAD_INTERNAL_H

#include <stddef.h>

#include "kernels.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* Scratch slots (conv2d's own 0 and 1, gemm's 2 and 3, conv2d backward's 4 are not live in them): 0 the
 * transformed weights (packed), 1 each thread's V, 4 its M, 5 its row buffers in the transforms. */
#define WG_SLOT_U 0
#define WG_SLOT_V 1
#define WG_SLOT_M 4
#define WG_SLOT_BUF 5

/* Chunks of whole tile rows (rows in all, tw tiles each) of about `tiles` tiles, so that a chunk's V and M stay
 * in cache: *per rows each, *chunks of them. Returns 1 when there are fewer chunks than threads (a batch of
 * one): the team then does each chunk together (the transforms split by channel, the GEMMs by position, so
 * that each thread reads half the transformed weights), else 0: a chunk per thread at a time. Giving each
 * thread its own chunk of rows instead, where the rows split evenly, was slower at batch 1 on 2 threads:
 * F(4x4, 3x3) 128->128 at 32x32 (8 rows) 386-414 against 443-467 us, 256->128 743-780 against 808-849 us,
 * cifar10-ddpm's forward (F(2x2, 3x3) at 16x16) 1.045x and 1.056x in favour of the team (n = 7 and 5), and at
 * 28x28's 7 rows (4 + 3) fmnist-m's forward 0.863x. The values are the same either way: each tile's column of
 * every GEMM is summed alike whatever the chunk. */
static inline int winograd_chunks(size_t rows, size_t tw, size_t tiles, size_t *per, size_t *chunks) {
    *per = tiles / tw ? tiles / tw : 1;
    for (size_t p = *per; p > *per / 2 && p * tw >= 32; p--) /* whole pairs of 16-column panels if it can */
        if (p * tw % 32 == 0) {
            *per = p;
            break;
        }
    *chunks = (rows + *per - 1) / *per;
    size_t threads = 1;
#ifdef _OPENMP
    threads = omp_in_parallel() ? 1 : (size_t)omp_get_max_threads();
#endif
    return threads > 1 && *chunks < threads;
}

/* Prefetches (into L2) the input rows that channel i's transform reads for tile rows [row0, row0 + nrows) of a
 * (B, Ci, H, W) input, tiles of `step` rows reading rows step ty - 1 .. step ty + step. */
static inline void winograd_prefetch_channel(const float *in, size_t Ci, size_t H, size_t W, size_t th, size_t step,
                                             size_t row0, size_t nrows, size_t i) {
    size_t first = row0, last = row0 + nrows - 1;
    for (size_t b = first / th; b <= last / th; b++) {
        size_t t0 = b == first / th ? first % th : 0, t1 = b == last / th ? last % th : th - 1;
        size_t y0 = t0 > 0 ? step * t0 - 1 : 0, y1 = step * t1 + step < H ? step * t1 + step : H - 1;
        const float *plane = in + (b * Ci + i) * H * W;
        const char *p = (const char *)(plane + y0 * W), *e = (const char *)(plane + (y1 + 1) * W);
        for (; p < e; p += 64) __builtin_prefetch(p, 0, 2);
    }
}

/* Called as a transform starts channel i of [i0, i1): the rows of channel i + 2 (and at i0 of i0 + 1 too), so
 * that they are in L2 when it gets there. At batch 64 the activations come from memory and the transform
 * stalled on each channel's first rows; measured on F(2x2, 3x3) 64->64 at 28x28, batch 64, 2 threads:
 * 13.8-14.2 -> 12.5-12.9 ms, one channel ahead 12.7-13.1. */
static inline void winograd_prefetch_ahead(const float *in, size_t Ci, size_t H, size_t W, size_t th, size_t step,
                                           size_t row0, size_t nrows, size_t i, size_t i0, size_t i1) {
    if (i == i0 && i + 1 < i1) winograd_prefetch_channel(in, Ci, H, W, th, step, row0, nrows, i + 1);
    if (i + 2 < i1) winograd_prefetch_channel(in, Ci, H, W, th, step, row0, nrows, i + 2);
}

/* M[xi] (Co x n) = U[xi] V[xi] for one position xi of a chunk's n tiles, U packed by gemm_pack_a's layout at Up
 * + xi * gemm_packed_a_size(Co, Ci) (serial inside a parallel region). Both forwards' GEMMs. */
static inline void winograd_position_gemm(float *M, const float *V, const float *Up, int xi, size_t Co,
                                          size_t Ci, size_t n) {
    gemm_plain_b_ctx vb = {0, V + (size_t)xi * Ci * n, n};
    gemm_prepacked(Co, n, Ci, 1.0f, Up + (size_t)xi * gemm_packed_a_size(Co, Ci), gemm_plain_b, &vb, 0.0f,
                   M + (size_t)xi * Co * n, n);
}

/* A finished output row (conv values, bias included) plus the addend's value *c (NULL: none) and row r (NULL:
 * none), in that order: the bits of add_channel_forward and add_forward run after the convolution. */
static inline void winograd_add_row(float *orow, const float *c, const float *r, size_t W) {
    if (c) {
        float cv = *c;
#pragma omp simd
        for (size_t x = 0; x < W; x++) orow[x] = orow[x] + cv;
    }
    if (r) {
#pragma omp simd
        for (size_t x = 0; x < W; x++) orow[x] = orow[x] + r[x];
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

static inline int winograd_have_avx512(void) {
    static int known = -1;
    if (known < 0) known = __builtin_cpu_supports("avx512f") ? 1 : 0;
    return known;
}

/* The masks of a row of W <= 32 floats held in two registers: pixels 0-15 and 16-31. */
__attribute__((target("avx512f"))) static inline void winograd_row_masks(size_t W, __mmask16 *m0, __mmask16 *m1) {
    *m0 = (__mmask16)(W >= 16 ? 0xffffu : (1u << W) - 1);
    *m1 = (__mmask16)(W <= 16 ? 0 : W >= 32 ? 0xffffu : (1u << (W - 16)) - 1);
}

/* Stores a finished output row of W <= 32 pixels (v0: 0-15, v1: 16-31), + *cadd and + rrow first (either
 * NULL), as winograd_add_row adds them. */
__attribute__((target("avx512f"))) static inline void winograd_store_row32(float *orow, __m512 v0, __m512 v1, size_t W,
                                                                            const float *cadd, const float *rrow) {
    __mmask16 m0, m1;
    winograd_row_masks(W, &m0, &m1);
    if (cadd) {
        __m512 c = _mm512_set1_ps(*cadd);
        v0 = _mm512_add_ps(v0, c), v1 = _mm512_add_ps(v1, c);
    }
    if (rrow) {
        v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, rrow));
        v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, rrow + 16));
    }
    _mm512_mask_storeu_ps(orow, m0, v0);
    _mm512_mask_storeu_ps(orow + 16, m1, v1);
}
#else
static inline int winograd_have_avx512(void) { return 0; }
#endif

#endif
