/* vmath.h: elementwise math that the compiler can vectorise (internal to src/kernels).
 *
 * df_vexpf: exp(x) for float, Cody-Waite reduction by ln 2 and Cephes' degree-6 polynomial, branch-free
 * (clamped to [-87.3, 88], so no overflow; exp(-87.3) ~ 1e-38 stands in for 0), scaled by 2^n through the
 * exponent bits. Within 2 ulp of the correctly rounded result over the clamped range (tests/test_kernels.c
 * checks it against double-precision exp). libm's expf is a call per element and does not vectorise.
 * (DF_CLONES, which compiles a function for several instruction sets, is in base/base.h.) */
#ifndef DF_VMATH_H
#define DF_VMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "base/base.h"

static inline float df_vexpf(float x) {
    x = x > -87.3f ? x : -87.3f;
    x = x < 88.0f ? x : 88.0f; /* n <= 127: 2^n stays finite */
    /* n = round(x / ln 2) by adding and subtracting 1.5 * 2^23 (no call, so it vectorises) */
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f; /* ln 2 in two parts: x - n ln2 exactly enough */
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float e = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) * (1 << 23);
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return e * scale;
}

/* The sum of x[0..n) in 16 float lanes (x[p] into lane p mod 16), then the lanes pairwise: a fixed order that
 * vectorises, where a plain running sum is a chain of dependent adds (4 cycles each) that the compiler may not
 * reorder. */
static inline float df_sum16(const float *x, size_t n) {
    float l[16] = {0};
    size_t p = 0;
    for (; p + 16 <= n; p += 16)
        for (int k = 0; k < 16; k++) l[k] += x[p + k];
    for (int k = 0; p < n; p++, k++) l[k] += x[p];
    for (int w = 8; w > 0; w /= 2)
        for (int k = 0; k < w; k++) l[k] += l[k + w];
    return l[0];
}

#endif
