/* rng.c: Philox4x32-10 and the uniform / normal streams built on it. */
#include "rng.h"

#include "base/base.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void philox4x32_10(uint32_t out[4], const uint32_t ctr[4], const uint32_t key[2]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

/* The four 32-bit words of block `block` of (seed, stream). */
static void block4(uint32_t out[4], uint64_t seed, uint64_t stream, uint64_t block) {
    uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), (uint32_t)stream, (uint32_t)(stream >> 32)};
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    philox4x32_10(out, ctr, key);
}

/* 24 random bits to the open interval (0, 1). */
static inline double u01(uint32_t x) { return ((double)(x >> 8) + 0.5) * (1.0 / 16777216.0); }

float df_rng_uniform1(uint64_t seed, uint64_t stream, uint64_t index) {
    uint32_t w[4];
    block4(w, seed, stream, index / 4);
    return (float)u01(w[index % 4]);
}

uint64_t df_rng_u64(uint64_t seed, uint64_t stream, uint64_t index) {
    uint32_t w[4];
    block4(w, seed, stream, index / 2);
    return index % 2 ? ((uint64_t)w[2] << 32 | w[3]) : ((uint64_t)w[0] << 32 | w[1]);
}

/* Blocks [block, block + nb) of (seed, stream) as uniforms, four per block, 16 blocks per vector pass: the
 * same Philox rounds and the same conversion as block4 and u01, lane by lane. */
DF_CLONES static void uniform_blocks(float *out, uint64_t block, size_t nb, uint64_t seed, uint64_t stream) {
    const uint32_t s0 = (uint32_t)stream, s1 = (uint32_t)(stream >> 32);
    const uint32_t key0 = (uint32_t)seed, key1 = (uint32_t)(seed >> 32);
    for (size_t b = 0; b < nb; b += 16) {
        float f[4][16];
#pragma omp simd
        for (uint32_t l = 0; l < 16; l++) {
            uint64_t blk = block + b + l;
            uint32_t c0 = (uint32_t)blk, c1 = (uint32_t)(blk >> 32), c2 = s0, c3 = s1, k0 = key0, k1 = key1;
            for (int r = 0; r < 10; r++) {
                uint64_t p0 = (uint64_t)PHILOX_M0 * c0, p1 = (uint64_t)PHILOX_M1 * c2;
                uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
                c1 = (uint32_t)p1, c3 = (uint32_t)p0, c0 = n0, c2 = n2;
                k0 += PHILOX_W0, k1 += PHILOX_W1;
            }
            f[0][l] = (float)u01(c0), f[1][l] = (float)u01(c1), f[2][l] = (float)u01(c2), f[3][l] = (float)u01(c3);
        }
        size_t m = nb - b < 16 ? nb - b : 16;
        for (size_t l = 0; l < m; l++)
            for (int k = 0; k < 4; k++) out[4 * (b + l) + k] = f[k][l];
    }
}

/* Element j is lane j % 4 of block j / 4: one Philox call serves four elements. */
void df_rng_uniform(float *out, size_t n, uint64_t seed, uint64_t stream, uint64_t offset) {
    size_t i = 0;
    while (i < n && (offset + i) % 4) { /* a partial first block */
        uint64_t j = offset + i;
        uint32_t w[4];
        block4(w, seed, stream, j / 4);
        for (unsigned lane = (unsigned)(j % 4); lane < 4 && i < n; lane++, i++) out[i] = (float)u01(w[lane]);
    }
    size_t nb = (n - i) / 4;
    uniform_blocks(out + i, (offset + i) / 4, nb, seed, stream);
    i += 4 * nb;
    if (i < n) { /* a partial last block */
        uint32_t w[4];
        block4(w, seed, stream, (offset + i) / 4);
        for (unsigned lane = 0; i < n; lane++, i++) out[i] = (float)u01(w[lane]);
    }
}

/* ---- dropout masks ---- */

/* The smallest k (of 2^24) with (float)u01(x) >= p for x >> 8 = k, or 2^24 for none: u01 rounded to float does not
 * decrease with x, so element x is kept exactly when x >> 8 >= the threshold. */
uint32_t df_rng_keep_threshold(float p) {
    uint32_t lo = 0, hi = 1u << 24; /* the answer is in [lo, hi] */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if ((float)u01(mid << 8) >= p)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* The high 32 bits of each lane's 32 x 32-bit product with m. */
__attribute__((target("avx512f"))) static inline __m512i mulhi_epu32(__m512i c, __m512i m) {
    __m512i even = _mm512_mul_epu32(c, m), odd = _mm512_mul_epu32(_mm512_srli_epi64(c, 32), m);
    return _mm512_mask_blend_epi32((__mmask16)0xaaaa, _mm512_srli_epi64(even, 32), odd);
}

/* Words [w, w + 2 nw) of the mask: blocks (offset / 4 + 16 q + lane) of 16 lanes at a time, Philox's rounds as in
 * philox4x32_10, then each of the four words compared with the threshold, and their bits interleaved (element
 * 4 lane + k is bit k of lane's nibble) by pdep. */
__attribute__((target("avx512f,bmi2"))) static void keep_bits_avx512(uint32_t *keep, size_t pairs, uint32_t t,
                                                                     uint64_t seed, uint64_t stream, uint64_t block) {
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i m0 = _mm512_set1_epi32((int)PHILOX_M0), m1 = _mm512_set1_epi32((int)PHILOX_M1);
    const __m512i thr = _mm512_set1_epi32((int)t), one = _mm512_set1_epi32(1);
    for (size_t q = 0; q < pairs; q++, block += 16) {
        __m512i lo = _mm512_add_epi32(_mm512_set1_epi32((int)(uint32_t)block), iota);
        __mmask16 carry = _mm512_cmplt_epu32_mask(lo, _mm512_set1_epi32((int)(uint32_t)block));
        __m512i c0 = lo, c1 = _mm512_mask_add_epi32(_mm512_set1_epi32((int)(uint32_t)(block >> 32)), carry,
                                                      _mm512_set1_epi32((int)(uint32_t)(block >> 32)), one);
        __m512i c2 = _mm512_set1_epi32((int)(uint32_t)stream), c3 = _mm512_set1_epi32((int)(uint32_t)(stream >> 32));
        uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
        for (int r = 0; r < 10; r++) {
            __m512i hi0 = mulhi_epu32(c0, m0), lo0 = _mm512_mullo_epi32(c0, m0);
            __m512i hi1 = mulhi_epu32(c2, m1), lo1 = _mm512_mullo_epi32(c2, m1);
            c0 = _mm512_xor_si512(_mm512_xor_si512(hi1, c1), _mm512_set1_epi32((int)k0));
            c2 = _mm512_xor_si512(_mm512_xor_si512(hi0, c3), _mm512_set1_epi32((int)k1));
            c1 = lo1, c3 = lo0;
            k0 += PHILOX_W0, k1 += PHILOX_W1;
        }
        uint64_t b0 = _mm512_cmpge_epu32_mask(_mm512_srli_epi32(c0, 8), thr);
        uint64_t b1 = _mm512_cmpge_epu32_mask(_mm512_srli_epi32(c1, 8), thr);
        uint64_t b2 = _mm512_cmpge_epu32_mask(_mm512_srli_epi32(c2, 8), thr);
        uint64_t b3 = _mm512_cmpge_epu32_mask(_mm512_srli_epi32(c3, 8), thr);
        uint64_t bits = _pdep_u64(b0, 0x1111111111111111ull) | _pdep_u64(b1, 0x2222222222222222ull) |
                        _pdep_u64(b2, 0x4444444444444444ull) | _pdep_u64(b3, 0x8888888888888888ull);
        keep[2 * q] = (uint32_t)bits, keep[2 * q + 1] = (uint32_t)(bits >> 32);
    }
}
#endif

void df_rng_keep_bits(uint32_t *keep, size_t n, float p, uint64_t seed, uint64_t stream, uint64_t offset) {
    DF_CHECK(offset % 32 == 0, "df_rng_keep_bits: offset %llu is not a multiple of 32", (unsigned long long)offset);
    uint32_t t = df_rng_keep_threshold(p);
    size_t w = 0, words = (n + 31) / 32;
#if defined(__x86_64__) && defined(__GNUC__)
    static int avx512 = -1;
    if (avx512 < 0) avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("bmi2");
    if (avx512 && n >= 64) { /* whole pairs of words (64 elements, 16 blocks) */
        size_t pairs = n / 64;
        keep_bits_avx512(keep, pairs, t, seed, stream, offset / 4);
        w = 2 * pairs;
    }
#endif
    for (; w < words; w++) { /* one block (4 elements) at a time */
        uint32_t bits = 0;
        for (size_t e = 0; e < 32 && 32 * w + e < n; e += 4) {
            uint32_t x[4];
            block4(x, seed, stream, (offset + 32 * w + e) / 4);
            for (size_t k = 0; k < 4 && 32 * w + e + k < n; k++) bits |= (uint32_t)(x[k] >> 8 >= t) << (e + k);
        }
        keep[w] = bits;
    }
}

/* Element j of a stream: block j/4; lanes (0,1) and (2,3) each give a Box-Muller pair. */
void df_rng_normal(float *out, size_t n, uint64_t seed, uint64_t stream, uint64_t offset) {
    size_t i = 0;
    while (i < n) {
        uint64_t j = offset + i;
        uint32_t w[4];
        block4(w, seed, stream, j / 4);
        double z[4];
        for (int p = 0; p < 2; p++) {
            double r = sqrt(-2.0 * log(u01(w[2 * p]))), th = 2.0 * M_PI * u01(w[2 * p + 1]);
            z[2 * p] = r * cos(th);
            z[2 * p + 1] = r * sin(th);
        }
        for (unsigned lane = (unsigned)(j % 4); lane < 4 && i < n; lane++, i++) out[i] = (float)z[lane];
    }
}
