/* conv2d_pack.c: the implicit-GEMM packers of conv2d.c. Instead of writing im2col's (K, P) matrix and packing
 * it, these packers (gemm_pack_b_fn) fill each panel of 16 columns from the image: pack_col gives B = col
 * (depth K taps, columns P pixels), for the forward; pack_colT gives B = col^T (depth P, columns K), for the
 * weight gradient. Each panel value is a tap of the image or 0 in the padding, exactly im2col's; the AVX-512
 * versions read 16 at a time: at stride 1 by masked row loads from a table (pack_col_avx512,
 * pack_colT_avx512), otherwise by gathers under a mask. */
#include "conv2d_internal.h"

#include "base/base.h"

/* the image value tap k = (c, i, j) reads for output pixel p, or 0 in the padding */
static inline float col_value(const col_ctx *cc, size_t k, size_t p) {
    const conv2d_dims *d = cc->d;
    size_t c = k / (d->KH * d->KW), i = k / d->KW % d->KH, j = k % d->KW, y = p / cc->Wo, x = p % cc->Wo;
    ptrdiff_t iy = (ptrdiff_t)(y * d->stride + i) - (ptrdiff_t)d->pad_t;
    ptrdiff_t ix = (ptrdiff_t)(x * d->stride + j) - (ptrdiff_t)d->pad_l;
    if (iy < 0 || ix < 0 || iy >= (ptrdiff_t)d->H || ix >= (ptrdiff_t)d->W) return 0;
    return cc->in[(c * d->H + (size_t)iy) * d->W + (size_t)ix];
}

/* Portable packers, element by element. */
static void pack_col_c(float *dst, size_t p0, size_t kc, size_t j0, size_t nc, const void *ctx) {
    for (size_t c = 0; c < nc; c += 16)
        for (size_t k = 0; k < kc; k++)
            for (size_t l = 0; l < 16; l++)
                dst[c * kc + k * 16 + l] = c + l < nc ? col_value(ctx, p0 + k, j0 + c + l) : 0;
}

static void pack_colT_c(float *dst, size_t p0, size_t kc, size_t j0, size_t nc, const void *ctx) {
    for (size_t c = 0; c < nc; c += 16)
        for (size_t k = 0; k < kc; k++)
            for (size_t l = 0; l < 16; l++)
                dst[c * kc + k * 16 + l] = c + l < nc ? col_value(ctx, j0 + c + l, p0 + k) : 0;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* pack_col, any shape: lanes are 16 pixels (their y * stride, x * stride fixed per panel); each depth row is
 * one tap. */
__attribute__((target("avx512f"))) static void pack_col_any_avx512(float *dst, size_t p0, size_t kc, size_t j0,
                                                               size_t nc, const void *ctx) {
    const col_ctx *cc = ctx;
    const conv2d_dims *d = cc->d;
    const int H = (int)d->H, W = (int)d->W, KH = (int)d->KH, KW = (int)d->KW, s = (int)d->stride;
    for (size_t c = 0; c < nc; c += 16) {
        int ys[16], xs[16];
        for (int l = 0; l < 16; l++) {
            size_t p = j0 + c + (size_t)l;
            ys[l] = (int)(p / cc->Wo) * s, xs[l] = (int)(p % cc->Wo) * s;
        }
        __m512i vy = _mm512_loadu_si512(ys), vx = _mm512_loadu_si512(xs);
        __m512i base = _mm512_add_epi32(_mm512_mullo_epi32(vy, _mm512_set1_epi32(W)), vx);
        __mmask16 lanes = (__mmask16)(nc - c >= 16 ? 0xffffu : (1u << (nc - c)) - 1);
        /* stride 1: the panel's pixels are runs along output rows; each run is one masked load (lanes l of
         * run r read row ry[r] at x = l + sh[r]) */
        int nrun = 0, ry[16], sh[16];
        __mmask16 rm[16];
        for (int l = 0; l < 16; l++) {
            if (l == 0 || ys[l] != ys[l - 1]) ry[nrun] = ys[l], sh[nrun] = xs[l] - l, rm[nrun++] = 0;
            rm[nrun - 1] |= (__mmask16)(1u << l);
        }
        int runs = s == 1;
        int ch = (int)(p0 / (size_t)(KH * KW)), i = (int)(p0 / (size_t)KW % (size_t)KH), j = (int)(p0 % (size_t)KW);
        float *out = dst + c * kc;
        for (size_t k = 0; k < kc; k++) {
            int di = i - (int)d->pad_t, dj = j - (int)d->pad_l;
            __m512i iy = _mm512_add_epi32(vy, _mm512_set1_epi32(di)), ix = _mm512_add_epi32(vx, _mm512_set1_epi32(dj));
            __mmask16 m = lanes & _mm512_cmplt_epu32_mask(iy, _mm512_set1_epi32(H)) &
                          _mm512_cmplt_epu32_mask(ix, _mm512_set1_epi32(W));
            const float *plane = cc->in + (size_t)ch * d->H * d->W;
            __m512 v;
            if (runs) {
                v = _mm512_setzero_ps();
                for (int r = 0; r < nrun; r++)
                    v = _mm512_mask_loadu_ps(v, m & rm[r], plane + (ptrdiff_t)(ry[r] + di) * W + sh[r] + dj);
            } else {
                __m512i idx = _mm512_add_epi32(base, _mm512_set1_epi32(di * W + dj));
                v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, plane, 4);
            }
            _mm512_storeu_ps(out + k * 16, v);
            if (++j == KW) j = 0, ++i == KH ? (i = 0, ch++) : 0;
        }
    }
}

/* pack_colT, any shape: lanes are 16 taps (channel offset and kernel position fixed per panel); each depth row
 * is one pixel, gathered. */
__attribute__((target("avx512f"))) static void pack_colT_any_avx512(float *dst, size_t p0, size_t kc, size_t j0,
                                                                size_t nc, const void *ctx) {
    const col_ctx *cc = ctx;
    const conv2d_dims *d = cc->d;
    const int H = (int)d->H, W = (int)d->W, KH = (int)d->KH, KW = (int)d->KW, s = (int)d->stride;
    const int Wo = (int)cc->Wo;
    for (size_t c = 0; c < nc; c += 16) {
        int di[16], dj[16], off[16];
        for (int l = 0; l < 16; l++) {
            size_t k = j0 + c + (size_t)l;
            int ch = (int)(k / (size_t)(KH * KW)), i = (int)(k / (size_t)KW % (size_t)KH), j = (int)(k % (size_t)KW);
            di[l] = i - (int)d->pad_t, dj[l] = j - (int)d->pad_l;
            off[l] = c + (size_t)l < nc ? ch * H * W + di[l] * W + dj[l] : 0;
        }
        __m512i vdi = _mm512_loadu_si512(di), vdj = _mm512_loadu_si512(dj), voff = _mm512_loadu_si512(off);
        __mmask16 lanes = (__mmask16)(nc - c >= 16 ? 0xffffu : (1u << (nc - c)) - 1);
        int y = (int)(p0 / (size_t)Wo), x = (int)(p0 % (size_t)Wo);
        float *out = dst + c * kc;
        for (size_t k = 0; k < kc; k++) {
            __m512i iy = _mm512_add_epi32(vdi, _mm512_set1_epi32(y * s));
            __m512i ix = _mm512_add_epi32(vdj, _mm512_set1_epi32(x * s));
            __mmask16 m = lanes & _mm512_cmplt_epu32_mask(iy, _mm512_set1_epi32(H)) &
                          _mm512_cmplt_epu32_mask(ix, _mm512_set1_epi32(W));
            __m512i idx = _mm512_add_epi32(voff, _mm512_set1_epi32(y * s * W + x * s));
            _mm512_storeu_ps(out + k * 16, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, cc->in, 4));
            if (++x == Wo) x = 0, y++;
        }
    }
}

/* Stride 1 with at most COL_TAPS kernel positions: the packers below work from a table, per kernel position
 * (i, j) and per run of pixels along an output row, of the lanes that read the image (the rest are padding)
 * and the offset lane 0 of the run would read at, so that each panel row is one masked load per run. */
enum { COL_TAPS = 64 };

/* Pixels p0 .. p0 + n - 1 (n <= 16) as runs along output rows: lanes rm[u] of run u read output row ry[u] at
 * x = lane + sh[u]; xs[lane] is the lane's x (0 past n). Returns the number of runs. */
static int pixel_runs(size_t p0, int n, int Wo, int ry[16], int sh[16], __mmask16 rm[16], int xs[16]) {
    int nrun = 0, y = (int)(p0 / (size_t)Wo), x = (int)(p0 % (size_t)Wo);
    for (int l = 0; l < 16; l++) xs[l] = 0;
    for (int l = 0; l < n; l++) {
        if (nrun == 0 || y != ry[nrun - 1]) ry[nrun] = y, sh[nrun] = x - l, rm[nrun++] = 0;
        rm[nrun - 1] |= (__mmask16)(1u << l);
        xs[l] = x;
        if (++x == Wo) x = 0, y++;
    }
    return nrun;
}

/* The table for the runs of pixels p0 .. p0 + n - 1 (pixel_runs): for kernel position t and run u, the lanes
 * mt[t][u] that read the image and the plane offset ot[t][u] of lane 0. Runs from nrun to 1 get no lanes.
 * Returns the number of runs. */
__attribute__((target("avx512f"))) static int run_table(const col_ctx *cc, size_t p0, int n, __mmask16 mt[][16],
                                                        ptrdiff_t ot[][16]) {
    const conv2d_dims *d = cc->d;
    const int H = (int)d->H, W = (int)d->W, KW = (int)d->KW, taps = (int)(d->KH * d->KW);
    int ry[16], sh[16], xs[16];
    __mmask16 rm[16];
    int nrun = pixel_runs(p0, n, (int)cc->Wo, ry, sh, rm, xs);
    __m512i vx = _mm512_loadu_si512(xs);
    for (int t = 0; t < taps; t++) {
        int di = t / KW - (int)d->pad_t, dj = t % KW - (int)d->pad_l;
        __mmask16 mx = _mm512_cmplt_epu32_mask(_mm512_add_epi32(vx, _mm512_set1_epi32(dj)), _mm512_set1_epi32(W));
        for (int u = 0; u < (nrun < 2 ? 2 : nrun); u++) {
            int r = u < nrun ? u : 0;
            mt[t][u] = u < nrun && (unsigned)(ry[r] + di) < (unsigned)H ? mx & rm[r] : 0;
            ot[t][u] = (ptrdiff_t)(ry[r] + di) * W + sh[r] + dj;
        }
    }
    return nrun;
}

/* One tap's 16 lanes from its row of the run table: one masked load per run, zero where no lane reads. */
__attribute__((target("avx512f"), always_inline)) static inline __m512 tap_lanes(const __mmask16 *m, const ptrdiff_t *o,
                                                                  const float *plane, int nrun) {
    __m512 v = _mm512_maskz_loadu_ps(m[0], plane + o[0]);
    if (nrun == 1) return v;
    v = _mm512_mask_loadu_ps(v, m[1], plane + o[1]);
    for (int u = 2; u < nrun; u++) v = _mm512_mask_loadu_ps(v, m[u], plane + o[u]);
    return v;
}

/* The 16 x 16 block r transposed in registers: r[i] lane j becomes r[j] lane i. */
__attribute__((target("avx512f"))) static inline void transpose16x16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; i++)
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]), t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    for (int i = 0; i < 4; i++) {
        __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
        __m512d c = _mm512_castps_pd(t[4 * i + 2]), e = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c)), r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, e)), r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, e));
    }
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++) {
            __m512 a = r[8 * i + j], b = r[8 * i + 4 + j];
            t[8 * i + j] = _mm512_shuffle_f32x4(a, b, 0x88), t[8 * i + 4 + j] = _mm512_shuffle_f32x4(a, b, 0xdd);
        }
    for (int j = 0; j < 8; j++)
        r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88), r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xdd);
}

/* kc panel rows of pack_col from the run table, from kernel position t of plane on. */
__attribute__((target("avx512f"), always_inline)) static inline void col_rows(float *out, size_t kc,
                                                                              __mmask16 mt[][16], ptrdiff_t ot[][16],
                                                                              const float *plane, size_t plane_sz,
                                                                              int t, int taps, int nrun) {
    for (size_t k = 0; k < kc; k++) {
        _mm512_storeu_ps(out + k * 16, tap_lanes(mt[t], ot[t], plane, nrun));
        if (++t == taps) t = 0, plane += plane_sz;
    }
}

/* pack_col at stride 1: per panel (16 pixels) the run table, then per tap one masked load per run. */
__attribute__((target("avx512f"))) static void pack_col_avx512(float *dst, size_t p0, size_t kc, size_t j0,
                                                               size_t nc, const void *ctx) {
    const col_ctx *cc = ctx;
    const conv2d_dims *d = cc->d;
    const int taps = (int)(d->KH * d->KW);
    if (d->stride != 1 || taps > COL_TAPS) {
        pack_col_any_avx512(dst, p0, kc, j0, nc, ctx);
        return;
    }
    const size_t plane_sz = d->H * d->W;
    __mmask16 mt[COL_TAPS][16];
    ptrdiff_t ot[COL_TAPS][16];
    for (size_t c = 0; c < nc; c += 16) {
        int nrun = run_table(cc, j0 + c, nc - c < 16 ? (int)(nc - c) : 16, mt, ot);
        int t = (int)(p0 % (size_t)taps);
        const float *plane = cc->in + p0 / (size_t)taps * plane_sz;
        float *out = dst + c * kc;
        if (nrun == 1) /* the same loop, compiled for one run and for two (most panels) */
            col_rows(out, kc, mt, ot, plane, plane_sz, t, taps, 1);
        else if (nrun == 2)
            col_rows(out, kc, mt, ot, plane, plane_sz, t, taps, 2);
        else
            col_rows(out, kc, mt, ot, plane, plane_sz, t, taps, nrun);
    }
}

/* pack_colT at stride 1: per block of 16 pixels (depth rows) the run table; then for each panel, each of its
 * 16 taps as one masked load per run (the tap's values over the 16 pixels), and the 16 x 16 block transposed
 * into panel rows. No gathers. */
__attribute__((target("avx512f"))) static void pack_colT_avx512(float *dst, size_t p0, size_t kc, size_t j0,
                                                                size_t nc, const void *ctx) {
    const col_ctx *cc = ctx;
    const conv2d_dims *d = cc->d;
    const int taps = (int)(d->KH * d->KW);
    if (d->stride != 1 || taps > COL_TAPS) {
        pack_colT_any_avx512(dst, p0, kc, j0, nc, ctx);
        return;
    }
    const size_t plane_sz = d->H * d->W;
    __mmask16 mt[COL_TAPS][16];
    ptrdiff_t ot[COL_TAPS][16];
    for (size_t k = 0; k < kc; k += 16) {
        int q = kc - k < 16 ? (int)(kc - k) : 16, nrun = run_table(cc, p0 + k, q, mt, ot);
        for (size_t c = 0; c < nc; c += 16) {
            int nl = nc - c < 16 ? (int)(nc - c) : 16, t = (int)((j0 + c) % (size_t)taps);
            const float *plane = cc->in + (j0 + c) / (size_t)taps * plane_sz;
            __m512 r[16];
            for (int l = 0; l < 16; l++) {
                r[l] = l < nl ? tap_lanes(mt[t], ot[t], plane, nrun) : _mm512_setzero_ps();
                if (l < nl && ++t == taps) t = 0, plane += plane_sz;
            }
            transpose16x16(r);
            float *out = dst + c * kc + k * 16;
            for (int b = 0; b < q; b++) _mm512_storeu_ps(out + b * 16, r[b]);
        }
    }
}
#endif

/* The packers for this CPU (and a switch for tests: force the portable ones). */
static int col_portable = 0;
void conv2d_force_portable_packers(int on) { col_portable = on; }
int conv2d_use_avx512(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    return !col_portable && __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

gemm_pack_b_fn conv2d_col_packer(int transposed) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (conv2d_use_avx512()) return transposed ? pack_colT_avx512 : pack_col_avx512;
#endif
    return transposed ? pack_colT_c : pack_col_c;
}

void conv2d_pack_col(float *dst, int transposed, const float *in, const conv2d_dims *d, size_t p0, size_t kc,
                     size_t j0, size_t nc) {
    col_ctx cc = {in, d, conv2d_out_h(d), conv2d_out_w(d)};
    conv2d_col_packer(transposed)(dst, p0, kc, j0, nc, &cc);
}

