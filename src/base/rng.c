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
