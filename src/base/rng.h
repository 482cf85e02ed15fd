/* rng.h: counter-based random numbers (Philox4x32-10, Salmon et al. 2011).
 *
 * Every number is a pure function of (seed, stream, index): no state to carry, split or save. A user of
 * randomness picks a stream (for example one per sample and step, see diffusion/) and indexes elements
 * within it, so results do not depend on batch size, thread count or the order of evaluation.
 */
#ifndef DF_RNG_H
#define DF_RNG_H

#include <stddef.h>
#include <stdint.h>

/* The raw generator: 10 rounds of Philox on a 128-bit counter with a 64-bit key. out may alias ctr. */
void philox4x32_10(uint32_t out[4], const uint32_t ctr[4], const uint32_t key[2]);

/* out[i] = uniform in the open interval (0, 1) for element (offset + i) of (seed, stream). */
void df_rng_uniform(float *out, size_t n, uint64_t seed, uint64_t stream, uint64_t offset);

/* out[i] = standard normal (Box-Muller) for element (offset + i) of (seed, stream). */
void df_rng_normal(float *out, size_t n, uint64_t seed, uint64_t stream, uint64_t offset);

/* Bit i % 32 of keep[i / 32] = whether df_rng_uniform's element (offset + i) of (seed, stream) is >= p (a
 * dropout mask: element kept), the same bits as comparing those floats, made from the raw words and a threshold
 * instead; offset a multiple of 32, and the last word's unused bits 0. */
void df_rng_keep_bits(uint32_t *keep, size_t n, float p, uint64_t seed, uint64_t stream, uint64_t offset);
/* Its threshold: element x (a raw 32-bit word) is kept exactly when x >> 8 >= df_rng_keep_threshold(p). */
uint32_t df_rng_keep_threshold(float p);

/* One uniform in (0, 1) and one raw 64-bit value for element `index` of (seed, stream). */
float df_rng_uniform1(uint64_t seed, uint64_t stream, uint64_t index);
uint64_t df_rng_u64(uint64_t seed, uint64_t stream, uint64_t index);

/* Stream tags: the purpose of a stream, one table so that no two purposes ever share one. */
enum {
    DF_STREAM_INIT = 0x01,    /* weight initialisation (a = parameter index) */
    DF_STREAM_DROPOUT = 0x0d, /* dropout masks (a = the dropout's place among the graph's dropouts, b = training step) */
    DF_STREAM_XT = 0x20,      /* sampler: initial noise x_T (a = sample index) */
    DF_STREAM_STEP = 0x21,    /* sampler: per-step noise z (a = sample index, b = step) */
    DF_STREAM_T = 0x30,       /* training: timesteps of step b */
    DF_STREAM_EPS = 0x31,     /* training: noise of step b */
    DF_STREAM_SHUFFLE = 0x40, /* data order of epoch a */
    DF_STREAM_FLIP = 0x41,    /* flips of epoch a */
    DF_STREAM_TOY_DATA = 0x50, /* 2-D toy points (a = split, b = dataset) */
    DF_STREAM_TOY_FIT = 0x51,  /* toy: samples of the Gaussian fitted to the data */
    DF_STREAM_TOY_PROJ = 0x52, /* toy: the sliced Wasserstein directions */
    DF_STREAM_TOY_FWD = 0x53,  /* toy: the noise of the forward-process figure */
    DF_STREAM_TEST = 0x7e,    /* tests */
};

/* A stream number from up to three small integers (a purpose tag, then e.g. sample index and step). */
static inline uint64_t df_stream(uint32_t tag, uint32_t a, uint32_t b) {
    return ((uint64_t)tag << 56) ^ ((uint64_t)(a & 0xffffffu) << 32) ^ (uint64_t)b;
}

#endif
