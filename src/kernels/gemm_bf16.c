/* gemm_bf16.c: gemm's BF16 mode (gemm_set_bf16). The packed panels are rounded to BF16 (nearest even) in pairs
 * along k, and the micro-kernels multiply pairs with FP32 accumulation: AVX-512 BF16's vdpbf16ps (acc +=
 * a[2p+1] b[2p+1], then += a[2p] b[2p], products exact), Intel's AMX tile unit, or a portable C kernel with
 * the same arithmetic where the CPU has neither. Packing, blocking and the write to C are gemm.c's, so only
 * the products change.
 *
 * Scratch: B's pairs in df_scratch slot 9 of the calling thread (A's pairs live after its FP32 panels, in
 * gemm.c's slot 2). */
#include <string.h>

#include "base/base.h"
#include "gemm_internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif

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

float bf16_round(float x) { return bf16_float(bf16_bits(x)); }

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
 * columns): C = a^T b, or C += a^T b when accumulate (the kernel's sums, then gemm_write_block's, in the same order). */
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
    store_rows(c, C, ldc, accumulate, NULL, mr, nr);
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
    store_rows2(c0, c1, C, ldc, accumulate, NULL, mr);
}
#endif

/* ---- AMX (Intel's tile unit) in BF16 mode ----
 * A tile multiply (TDPBF16PS) takes a 16 x 32 BF16 tile of A (16 rows of 16 pairs along k), a 16 x 16 tile of
 * B pairs (16 pair rows of 16 columns: exactly one k-block of a packed B panel's pairs) and accumulates a
 * 16 x 16 FP32 tile of C. A is laid out for it as blocks of 16 rows: [row block][k-block of 32][16 rows][16
 * pairs], k padded with zeros to a multiple of 32 (so are B's pair rows). The kernel keeps a 32 x 32 block of
 * C in four tiles (fewer at the edges) and loads each A and B tile once per k-block. */
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

size_t bf16_slice_pairs(size_t kc, int amx) { return amx ? (kc + AMX_K - 1) / AMX_K * (AMX_K / 2) : (kc + 1) / 2; }

/* block() by AMX: C in blocks of 32 x 32 (kernel_amx). A whole 16 x 16 tile with alpha 1 is accumulated in C
 * itself (loaded when b_eff is 1, zeroed when 0); the others go through acc and write_block. */
static void block_amx(size_t mc, size_t nc, size_t kc, const packed_a *A, size_t i0, size_t p0, const uint32_t *b16,
                      float alpha, float b_eff, float *C, size_t ldc) {
    size_t kp = bf16_slice_pairs(kc, 1);
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
                gemm_write_block(acc + t * 256, alpha, b_eff, C + rr * ldc + cc, ldc, mc - rr < 16 ? mc - rr : 16,
                            nc - cc < 16 ? nc - cc : 16);
            }
        }
    }
}

/* The kernel for pairs without AMX: AVX-512 BF16's or the portable one. */
typedef void (*kernel16_fn)(size_t, const uint32_t *, const uint32_t *, float *);
static kernel16_fn micro16 = kernel_bf16_c;

int bf16_select(int level) {
    if (level == 2 && !amx_usable()) return -1;
    have_amx = level == 2, micro16 = kernel_bf16_c;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (level >= 1 && __builtin_cpu_supports("avx512bf16")) micro16 = kernel_bf16_avx512;
#endif
    return 0;
}

const char *bf16_isa(void) {
    if (have_amx) return "amx";
#if defined(__x86_64__) && defined(__GNUC__)
    if (micro16 == kernel_bf16_avx512) return "avx512_bf16";
#endif
    return "c";
}

int bf16_amx(void) { return have_amx; }

void bf16_pack_a(uint32_t *a16, const float *ap, size_t M, size_t K) {
    /* a16 <- ap (ceil(M/MR), K, MR) FP32 panels: AMX's blocks, or pair panels (ceil(M/MR), ceil(K/2), MR) */
    if (have_amx) {
        to_amx_a(a16, ap, M, K);
        return;
    }
    size_t panels = (M + GEMM_MR - 1) / GEMM_MR, K2 = (K + 1) / 2;
    for (size_t q = 0; q < panels; q++) to_pairs(a16 + q * GEMM_MR * K2, ap + q * GEMM_MR * K, K, GEMM_MR, K2);
}

const uint32_t *bf16_pack_slice(const float *bp, const packed_a *A, size_t kc, size_t nc) {
    size_t kp = bf16_slice_pairs(kc, A->amx);
    uint32_t *b16 = (uint32_t *)df_scratch(GEMM_SLOT_B16, (size_t)GEMM_KC / 2 * GEMM_NC);
    for (size_t c = 0; c < nc; c += GEMM_NR) {
        if (A->amx || micro16 != kernel_bf16_c) /* AVX-512 BF16 converts: the same bits */
            to_pairs16_avx512(b16 + c * kp, bp + c * kc, kc, kp);
        else
            to_pairs(b16 + c * kp, bp + c * kc, kc, GEMM_NR, kp);
    }
    return b16;
}

void bf16_block(size_t mc, size_t nc, size_t kc, const packed_a *A, size_t i0, size_t p0, const uint32_t *b16,
                float alpha, float b_eff, float *C, size_t ldc) {
    /* C (mc, nc) = alpha * A[i0:i0+mc, p0:p0+kc] B + b_eff * C, over pairs */
    if (A->amx) {
        block_amx(mc, nc, kc, A, i0, p0, b16, alpha, b_eff, C, ldc);
        return;
    }
    size_t kp = (kc + 1) / 2;
    for (size_t c = 0; c < nc; c += GEMM_NR) {
        size_t nr = nc - c < GEMM_NR ? nc - c : GEMM_NR;
#if defined(__x86_64__) && defined(__GNUC__)
        if (micro16 == kernel_bf16_avx512 && alpha == 1 && (b_eff == 0 || b_eff == 1)) {
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
#endif
        for (size_t r = 0; r < mc; r += GEMM_MR) {
            float acc[GEMM_MR * GEMM_NR] __attribute__((aligned(64)));
            micro16(kp, A->a16 + (i0 + r) * A->K2 + p0 / 2 * GEMM_MR, b16 + c * kp, acc);
            gemm_write_block(acc, alpha, b_eff, C + r * ldc + c, ldc, mc - r < GEMM_MR ? mc - r : GEMM_MR, nr);
        }
    }
}
