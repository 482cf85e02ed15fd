/* winograd_internal.h: what the two Winograd forwards share, F(2x2, 3x3) in winograd.c and F(4x4, 3x3) in
 * winograd4.c: their scratch slots, how they cut the batch's tiles into chunks, and the CPU test of their
 * AVX-512 row kernels. Not part of kernels.h. */
#ifndef DF_WINOGRAD_INTERNAL_H
#define DF_WINOGRAD_INTERNAL_H

#include <stddef.h>

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
 * in cache: *per rows each, *chunks of them. Returns 1 when the team should do each chunk together (fewer
 * chunks than threads, a batch of one), else 0 for a chunk per thread at a time; with split_rows, one chunk per
 * thread instead of the team when the rows split evenly enough (at most 1/8 idle). Measured for F(2x2, 3x3),
 * batch 1 on 2 threads, packed weights: 128->64 at 28x28 (14 tile rows) 354 -> 308 us and 64->64 at 28x28
 * 207 -> 196 us by a chunk per thread, but 128->128 at 14x14 (7 rows: 4 + 3) 187 -> 208 us, so that one stays
 * with the team. F(4x4, 3x3) keeps the team: at 32x32 (8 rows: 4 + 4) 128->128 443-467 -> 386-414 us, 256->128
 * 808-849 -> 743-780 us. The values are the same either way: each tile's column of every GEMM is summed alike
 * whatever the chunk. */
static inline int winograd_chunks(size_t rows, size_t tw, size_t tiles, int split_rows, size_t *per,
                                  size_t *chunks) {
    *per = tiles / tw ? tiles / tw : 1, *chunks = (rows + *per - 1) / *per;
    size_t threads = 1;
#ifdef _OPENMP
    threads = omp_in_parallel() ? 1 : (size_t)omp_get_max_threads();
#endif
    if (threads < 2 || *chunks >= threads) return 0;
    size_t per_thread = (rows + threads - 1) / threads;
    if (!split_rows || (per_thread * threads - rows) * 8 > rows) return 1;
    *per = per_thread, *chunks = (rows + per_thread - 1) / per_thread;
    return 0;
}

#if defined(__x86_64__) && defined(__GNUC__)
static inline int winograd_have_avx512(void) {
    static int known = -1;
    if (known < 0) known = __builtin_cpu_supports("avx512f") ? 1 : 0;
    return known;
}
#else
static inline int winograd_have_avx512(void) { return 0; }
#endif

#endif
