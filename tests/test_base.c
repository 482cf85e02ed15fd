/* test_base.c: the Philox generator against the Random123 known-answer vectors, stream properties. */
#include <math.h>
#include <string.h>

#include "../src/base/base.h"
#include "../src/base/rng.h"
#include "test.h"

TEST(philox_known_answers) {
    /* Random123's kat_vectors for philox4x32_10. */
    static const uint32_t cases[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d, 0x41c83b0e,
         0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09, 0x94fdcceb,
         0x5001e420, 0x24126ea1},
    };
    for (int c = 0; c < 3; c++) {
        uint32_t out[4];
        philox4x32_10(out, cases[c], cases[c] + 4);
        EXPECT(memcmp(out, cases[c] + 6, sizeof out) == 0, "case %d: got %08x %08x %08x %08x", c, out[0], out[1],
               out[2], out[3]);
    }
}

/* The vectorised uniform stream equals element-by-element draws (df_rng_uniform1: one Philox block per call)
 * bit for bit, at every alignment of offset and length, and across the 2^32 block boundary of the counter. */
TEST(rng_uniform_vector_path_equals_scalar) {
    static const uint64_t offsets[] = {0, 1, 2, 3, 5, 64, 67, 4 * 0xFFFFFFF0ull + 2};
    float got[300];
    int bad = 0;
    for (size_t o = 0; o < sizeof offsets / sizeof offsets[0]; o++)
        for (size_t n = 0; n <= 300; n += n < 12 ? 1 : 37) {
            df_rng_uniform(got, n, 0x1234567890ull, 0x0d00000005ull, offsets[o]);
            for (size_t i = 0; i < n; i++) {
                float want = df_rng_uniform1(0x1234567890ull, 0x0d00000005ull, offsets[o] + i);
                if (memcmp(&got[i], &want, sizeof want) != 0 && bad++ < 5)
                    EXPECT(0, "offset %llu n %zu element %zu: %.9g, want %.9g", (unsigned long long)offsets[o], n, i,
                           got[i], want);
            }
        }
    EXPECT(bad == 0, "%d elements differ", bad);
}

/* Dropout masks from the raw words and a threshold (df_rng_keep_bits, 64 elements a vector pass where the CPU has
 * AVX-512, one block at a time for the rest) equal the uniform floats compared with p, bit for bit: p at 0, 1,
 * either side of 1/2 and of the float steps near 1, lengths that leave partial words and pairs of words, and
 * offsets across the counter's 2^32 block boundary. */
TEST(rng_keep_bits_equal_float_compare) {
    static const float ps[] = {0.0f, 1e-7f, 0.1f, 0.3f, 0.49999997f, 0.5f, 0.99999994f, 1.0f};
    static const uint64_t offsets[] = {0, 32, 4096, 4 * 0xFFFFFFE0ull};
    static const size_t ns[] = {1, 31, 32, 63, 64, 100, 1000, 1027};
    float u[1027];
    uint32_t keep[33];
    int bad = 0;
    for (size_t a = 0; a < sizeof ps / sizeof ps[0]; a++)
        for (size_t o = 0; o < sizeof offsets / sizeof offsets[0]; o++)
            for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
                size_t n = ns[k];
                memset(keep, 0xa5, sizeof keep);
                df_rng_keep_bits(keep, n, ps[a], 99, 0x0d00000003ull, offsets[o]);
                df_rng_uniform(u, n, 99, 0x0d00000003ull, offsets[o]);
                for (size_t i = 0; i < (n + 31) / 32 * 32; i++) {
                    int want = i < n && u[i] >= ps[a], got = (int)(keep[i / 32] >> (i % 32) & 1u);
                    if (got != want && bad++ < 5)
                        EXPECT(0, "p %.9g offset %llu n %zu element %zu: bit %d, want %d", (double)ps[a],
                               (unsigned long long)offsets[o], n, i, got, want);
                }
            }
    EXPECT(bad == 0, "%d mask bits differ", bad);
    /* the threshold against every one of the 2^24 uniforms (x >> 8 + 1/2) / 2^24 rounded to float */
    for (size_t a = 0; a < sizeof ps / sizeof ps[0]; a++) {
        uint32_t t = df_rng_keep_threshold(ps[a]), wrong = 0;
        for (uint32_t k = 0; k < (1u << 24); k++)
            wrong += ((float)(((double)k + 0.5) * (1.0 / 16777216.0)) >= ps[a]) != (k >= t);
        EXPECT(wrong == 0, "p %.9g: threshold %u wrong for %u of the 2^24 values", (double)ps[a], t, wrong);
    }
}

TEST(rng_streams_are_pure_functions) {
    float a[37], b[20], c[37];
    df_rng_normal(a, 37, 42, 7, 0);
    df_rng_normal(b, 20, 42, 7, 17); /* an unaligned window of the same stream */
    EXPECT(memcmp(a + 17, b, sizeof b) == 0, "a window of a stream must equal the stream's elements");
    df_rng_normal(c, 37, 42, 8, 0);
    EXPECT(memcmp(a, c, sizeof a) != 0, "different streams must differ");
    /* moments of a long normal stream */
    size_t n = 1 << 18;
    float *z = df_malloc(n * sizeof(float));
    df_rng_normal(z, n, 1, 2, 0);
    double m = 0, v = 0;
    for (size_t i = 0; i < n; i++) m += z[i];
    m /= n;
    for (size_t i = 0; i < n; i++) v += (z[i] - m) * (z[i] - m);
    v /= n;
    EXPECT(fabs(m) < 0.01 && fabs(v - 1) < 0.01, "normal stream mean %.4f var %.4f", m, v);
    df_rng_uniform(z, n, 1, 3, 0);
    double mu = 0;
    for (size_t i = 0; i < n; i++) {
        EXPECT(z[i] > 0 && z[i] < 1, "uniform out of (0,1): %g", z[i]);
        mu += z[i];
        if (!(z[i] > 0 && z[i] < 1)) break;
    }
    EXPECT(fabs(mu / n - 0.5) < 0.005, "uniform mean %.4f", mu / n);
    df_free(z);
}
