/* test_safetensors.c: the safetensors reader and writer (round trips, F16/BF16, every corrupt case refused
 * with a message naming the problem), the atomic file writer, a cross-check with Python (tests/ref), and a
 * small fuzz loop (flipped bytes, truncations, mangled numbers) that must never crash. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../src/base/base.h"
#include "../src/io/file.h"
#include "../src/io/safetensors.h"
#include "test.h"

#ifndef ST_FUZZ_ITERS
#define ST_FUZZ_ITERS 2000
#endif

/* ---- helpers ---- */

/* A fresh subdirectory of the test temp dir. */
static const char *subdir(const char *name) {
    static char buf[512];
    snprintf(buf, sizeof buf, "%s/%s", df_test_tmpdir(), name);
    DF_CHECK(df_mkdirs(buf) == 0, "%s", df_errmsg());
    return buf;
}

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static int same_float(float a, float b) { return (isnan(a) && isnan(b)) || bits(a) == bits(b); }

static int count_tmp_files(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    if (!d) return -1;
    for (struct dirent *e; (e = readdir(d));)
        if (strstr(e->d_name, ".tmp-")) n++;
    closedir(d);
    return n;
}

/* Must match SPECIAL in tests/ref/st_check.py. */
static const float SPECIAL[] = {0.0f,   -0.0f,  1.0f,     -2.0f, 0.1f,     3.14159265f,    65504.0f,
                                65519.0f, 65520.0f, 1e-5f, 6e-8f, 2.9e-8f, 1e-9f,        INFINITY,
                                -INFINITY, NAN,    1.00048828125f, 1.00146484375f, -7.5e-5f, 1e30f};
#define NSPECIAL (sizeof SPECIAL / sizeof SPECIAL[0])

/* ---- round trips ---- */

TEST(st_roundtrip_f32_and_metadata) {
    const char *dir = subdir("st_roundtrip");
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    float a[4 * 3 * 3 * 3], b[7], c = -1.25f, e[2];
    df_test_fill(a, 108, 1, -2, 2);
    df_test_fill(b, 7, 2, -1e6f, 1e6f);
    df_test_fill(e, 2, 3, -1, 1);
    b[3] = -0.0f, b[4] = INFINITY, b[5] = 1e-42f; /* a float32 subnormal */
    st_entry ents[5] = {
        st_entry_f32("conv_in.weight", a, 4, (int64_t[]){4, 3, 3, 3}),
        st_entry_f32("conv_in.bias", b, 1, (int64_t[]){7}),
        st_entry_f32("scalar", &c, 0, NULL),
        st_entry_f32("empty", NULL, 3, (int64_t[]){2, 0, 5}),
        st_entry_f32("eight.dims", e, 8, (int64_t[]){1, 1, 1, 1, 1, 1, 1, 2}),
    };
    const char *kv[] = {"format", "pt", "note", "h\xc3\xa9llo \"quoted\"\n"};
    EXPECT(st_write(path, ents, 5, kv, 2) == 0, "st_write: %s", df_errmsg());
    EXPECT(count_tmp_files(dir) == 0, "a temporary file was left behind");

    st_file f;
    if (st_open(&f, path) != 0) {
        EXPECT(0, "st_open: %s", df_errmsg());
        return;
    }
    EXPECT(f.n == 5, "expected 5 tensors, found %zu", f.n);
    EXPECT(f.data_start % 8 == 0, "data section starts at %zu, not 8-byte aligned", f.data_start);
    EXPECT(f.buf[f.data_start - 1] == ' ' || f.buf[f.data_start - 1] == '}', "header padding is not spaces");
    size_t off = 0;
    for (size_t i = 0; i < 5; i++) {
        const st_tensor *t = st_find(&f, ents[i].name);
        EXPECT(t && t->dtype == ST_F32 && t->ndim == ents[i].ndim, "tensor %s: wrong entry", ents[i].name);
        if (!t) continue;
        EXPECT(memcmp(t->shape, ents[i].shape, sizeof t->shape) == 0, "tensor %s: shape differs", ents[i].name);
        EXPECT(t->begin == off, "tensor %s begins at %zu, expected %zu (contiguous, in order)", t->name, t->begin,
               off);
        off = t->end;
        EXPECT(&f.tensors[i] == t, "tensors[] should be in data order");
        float got[108];
        EXPECT(st_read_f32(&f, ents[i].name, got, ents[i].ndim, ents[i].shape) == 0, "%s", df_errmsg());
        EXPECT(t->numel == 0 || memcmp(got, ents[i].data, t->numel * 4) == 0, "tensor %s: values differ",
               ents[i].name);
        memset(got, 0, sizeof got);
        EXPECT(st_read_f32(&f, ents[i].name, got, -1, NULL) == 0, "%s", df_errmsg());
        EXPECT(t->numel == 0 || memcmp(got, st_data(&f, t), t->numel * 4) == 0, "ndim -1 read differs");
    }
    EXPECT(f.data_start + off == f.size, "data section should end at the file end");
    EXPECT(st_find(&f, "conv_in") == NULL, "a prefix must not match");
    const char *fmt = st_metadata(&f, "format"), *note = st_metadata(&f, "note");
    EXPECT(fmt && strcmp(fmt, "pt") == 0, "metadata format = %s", fmt ? fmt : "(null)");
    EXPECT(note && strcmp(note, kv[3]) == 0, "metadata note = %s", note ? note : "(null)");
    EXPECT(st_metadata(&f, "absent") == NULL, "absent key must give NULL");
    st_close(&f);
    EXPECT(f.buf == NULL && f.n == 0, "st_close must zero the struct");
    st_close(&f); /* harmless twice */

    /* No metadata at all, no tensors at all. */
    EXPECT(st_write(path, NULL, 0, NULL, 0) == 0, "empty file: %s", df_errmsg());
    EXPECT(st_open(&f, path) == 0 && f.n == 0 && st_metadata(&f, "format") == NULL, "empty file: %s",
           df_errmsg());
    st_close(&f);
}

/* ---- conversions ---- */

/* Round to nearest even, the long way: the nearer of the two neighbouring bfloat16 values. */
static uint16_t bf16_reference(float x) {
    uint32_t u = bits(x), lo = u & 0xffff0000u, hi = lo + 0x10000u;
    double dl = fabs((double)from_bits(lo) - x), dh = fabs((double)from_bits(hi) - x);
    if ((hi & 0x7f800000u) == 0x7f800000u) dh = fabs(0x1p128 - fabs((double)x)); /* round up overflows */
    if (dl < dh || (dl == dh && !((lo >> 16) & 1))) return (uint16_t)(lo >> 16);
    return (uint16_t)(hi >> 16);
}

TEST(st_half_conversions) {
    /* Every half: widening is exact and narrowing brings it back. */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = st_f16_to_f32((uint16_t)h);
        int nan = ((h >> 10) & 0x1f) == 0x1f && (h & 0x3ff);
        if (nan) {
            if (!isnan(f) || !!signbit(f) != !!(h & 0x8000)) bad++;
            if (!(st_f32_to_f16(f) & 0x200) || (st_f32_to_f16(f) & 0x7c00) != 0x7c00) bad++; /* quiet NaN */
        } else if (st_f32_to_f16(f) != h) {
            if (bad++ < 3) printf("    half %04x -> %.9g -> %04x\n", h, f, st_f32_to_f16(f));
        }
    }
    EXPECT(bad == 0, "%d halves do not round trip", bad);
    EXPECT(st_f16_to_f32(0x0001) == 0x1p-24f, "smallest subnormal");
    EXPECT(st_f16_to_f32(0x03ff) == 1023 * 0x1p-24f, "largest subnormal");
    EXPECT(st_f16_to_f32(0x0400) == 0x1p-14f, "smallest normal");
    EXPECT(st_f16_to_f32(0x7bff) == 65504.0f, "largest finite");
    EXPECT(st_f16_to_f32(0x7c00) == INFINITY && st_f16_to_f32(0xfc00) == -INFINITY, "infinities");
    EXPECT(st_f16_to_f32(0x8000) == 0 && signbit(st_f16_to_f32(0x8000)), "negative zero");
    EXPECT(isnan(st_f16_to_f32(0x7e00)), "NaN");
    EXPECT(st_f16_to_f32(0x3555) == 0x1.554p-2f, "0x3555");
    /* Narrowing: overflow, underflow and ties to even. */
    EXPECT(st_f32_to_f16(65519.0f) == 0x7bff, "65519 rounds down to 65504");
    EXPECT(st_f32_to_f16(65520.0f) == 0x7c00, "65520 rounds to infinity");
    EXPECT(st_f32_to_f16(1e30f) == 0x7c00 && st_f32_to_f16(-1e30f) == 0xfc00, "overflow to infinity");
    EXPECT(st_f32_to_f16(0x1p-25f) == 0, "2^-25 ties to zero");
    EXPECT(st_f32_to_f16(0x1.002p-25f) == 1, "just above 2^-25 rounds to the smallest subnormal");
    EXPECT(st_f32_to_f16(-0x1p-26f) == 0x8000, "tiny negative gives negative zero");
    EXPECT(st_f32_to_f16(1.5f * 0x1p-24f) == 2 && st_f32_to_f16(2.5f * 0x1p-24f) == 2, "subnormal ties to even");
    EXPECT(st_f32_to_f16(1.00048828125f) == 0x3c00 && st_f32_to_f16(1.00146484375f) == 0x3c02, "normal ties");
    EXPECT(st_f32_to_f16(0x1.ffcp-15f) == 0x0400, "rounding up from the largest subnormal to the smallest normal");
    EXPECT(st_f32_to_f16(-0.0f) == 0x8000, "-0");
#ifdef __FLT16_MAX__
    /* The compiler's own conversion (correctly rounded) on random float bit patterns. */
    uint32_t s = 12345;
    bad = 0;
    for (int i = 0; i < 200000; i++) {
        s ^= s << 13, s ^= s >> 17, s ^= s << 5;
        float x = from_bits(i & 1 ? s : (s & 0x8fffffffu) | 0x30000000u); /* half the draws near half range */
        if (isnan(x)) continue;
        _Float16 y = (_Float16)x;
        uint16_t yb;
        memcpy(&yb, &y, 2);
        if (st_f32_to_f16(x) != yb && bad++ < 3) printf("    %a: ours %04x, compiler %04x\n", x, st_f32_to_f16(x), yb);
    }
    EXPECT(bad == 0, "%d conversions differ from _Float16", bad);
#endif
    /* bfloat16: every value round trips; narrowing matches the long-hand rounding. */
    bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = st_bf16_to_f32((uint16_t)h);
        if (!isnan(f) && st_f32_to_bf16(f) != h) bad++;
    }
    uint32_t s2 = 99;
    for (int i = 0; i < 200000; i++) {
        s2 ^= s2 << 13, s2 ^= s2 >> 17, s2 ^= s2 << 5;
        float x = from_bits(s2);
        if (isnan(x)) {
            uint16_t q = st_f32_to_bf16(x);
            if ((q & 0x7f80) != 0x7f80 || !(q & 0x40)) bad++;
        } else if (st_f32_to_bf16(x) != bf16_reference(x)) {
            if (bad++ < 3) printf("    %a: ours %04x, reference %04x\n", x, st_f32_to_bf16(x), bf16_reference(x));
        }
    }
    EXPECT(bad == 0, "%d bfloat16 conversions wrong", bad);
    EXPECT(st_f32_to_bf16(1.00390625f) == 0x3f80 && st_f32_to_bf16(1.01171875f) == 0x3f82, "bf16 ties to even");
    EXPECT(st_f32_to_bf16(3.4e38f) == 0x7f80, "bf16 overflow to infinity");
}

TEST(st_f16_bf16_read) {
    const char *dir = subdir("st_half");
    char path[600];
    snprintf(path, sizeof path, "%s/half.safetensors", dir);
    uint16_t h[NSPECIAL], b[NSPECIAL];
    for (size_t i = 0; i < NSPECIAL; i++) h[i] = st_f32_to_f16(SPECIAL[i]), b[i] = st_f32_to_bf16(SPECIAL[i]);
    unsigned char pad = 7;
    float w[3] = {1.5f, -2.25f, 1e-40f};
    uint16_t w16[3] = {0x3c00, 0x0001, 0xfc00};
    /* "pad" (1 byte) puts the tensors after it at odd offsets: reads must not assume alignment. */
    st_entry ents[] = {
        {"pad", ST_U8, 1, {1}, &pad},
        {"odd.f32", ST_F32, 1, {3}, w},
        {"odd.f16", ST_F16, 2, {1, 3}, w16},
        {"h", ST_F16, 1, {NSPECIAL}, h},
        {"b", ST_BF16, 1, {NSPECIAL}, b},
    };
    EXPECT(st_write(path, ents, 5, NULL, 0) == 0, "st_write: %s", df_errmsg());
    st_file f;
    if (st_open(&f, path) != 0) {
        EXPECT(0, "st_open: %s", df_errmsg());
        return;
    }
    float got[NSPECIAL];
    EXPECT(st_find(&f, "odd.f32")->begin == 1, "odd.f32 should start at data offset 1");
    EXPECT(st_read_f32(&f, "odd.f32", got, 1, (int64_t[]){3}) == 0 && memcmp(got, w, sizeof w) == 0,
           "unaligned F32: %s", df_errmsg());
    EXPECT(st_read_f32(&f, "odd.f16", got, 2, (int64_t[]){1, 3}) == 0, "unaligned F16: %s", df_errmsg());
    EXPECT(got[0] == 1.0f && got[1] == 0x1p-24f && got[2] == -INFINITY, "unaligned F16 values %g %g %g", got[0],
           got[1], got[2]);
    EXPECT(st_read_f32(&f, "h", got, 1, (int64_t[]){NSPECIAL}) == 0, "%s", df_errmsg());
    for (size_t i = 0; i < NSPECIAL; i++)
        EXPECT(same_float(got[i], st_f16_to_f32(st_f32_to_f16(SPECIAL[i]))), "F16 [%zu] %g read as %g", i,
               SPECIAL[i], got[i]);
    EXPECT(signbit(got[1]) && got[1] == 0, "F16 -0 lost its sign");
    EXPECT(got[6] == 65504 && got[7] == 65504 && got[8] == INFINITY && got[14] == -INFINITY && isnan(got[15]),
           "F16 range: %g %g %g %g %g", got[6], got[7], got[8], got[14], got[15]);
    EXPECT(got[10] == 0x1p-24f && got[11] == 0 && got[12] == 0, "F16 subnormals: %g %g %g", got[10], got[11],
           got[12]);
    EXPECT(fabsf(got[4] - 0.1f) < 1e-4f && got[16] == 1.0f && got[17] == 1.001953125f, "F16 rounding: %g %g %g",
           got[4], got[16], got[17]);
    EXPECT(st_read_f32(&f, "b", got, 1, (int64_t[]){NSPECIAL}) == 0, "%s", df_errmsg());
    for (size_t i = 0; i < NSPECIAL; i++)
        EXPECT(same_float(got[i], st_bf16_to_f32(st_f32_to_bf16(SPECIAL[i]))), "BF16 [%zu] %g read as %g", i,
               SPECIAL[i], got[i]);
    EXPECT(got[2] == 1.0f && got[8] == 65536.0f && signbit(got[1]) && isnan(got[15]) && fabsf(got[19] - 1e30f) < 1e28f,
           "BF16 values: %g %g %g", got[2], got[8], got[19]);
    st_close(&f);
}

/* ---- corrupt files ---- */

/* An in-memory file: length prefix, `json` padded to 8 bytes, then `data_bytes` zero bytes. */
static unsigned char *make_file(const char *json, size_t data_bytes, size_t *size) {
    size_t len = strlen(json), padded = (len + 7) & ~(size_t)7;
    *size = 8 + padded + data_bytes;
    unsigned char *buf = df_calloc(*size, 1);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memcpy(buf + 8, json, len);
    memset(buf + 8 + len, ' ', padded - len);
    return buf;
}

/* Expects st_open_memory to refuse the bytes with a message naming the file and holding both phrases. */
static void refused_at(int line, const unsigned char *buf, size_t size, const char *phrase1, const char *phrase2) {
    st_file f;
    int rc = st_open_memory(&f, "bad.safetensors", buf, size);
    const char *msg = df_errmsg();
    if (rc != -1) {
        df_test_fail(__FILE__, line, "a corrupt file was accepted (expected '%s')", phrase1);
        st_close(&f);
        return;
    }
    printf("    refused: %s\n", msg);
    if (strncmp(msg, "bad.safetensors: ", 17) != 0) df_test_fail(__FILE__, line, "message does not name the file");
    if (!strstr(msg, phrase1)) df_test_fail(__FILE__, line, "message lacks '%s'", phrase1);
    if (phrase2 && !strstr(msg, phrase2)) df_test_fail(__FILE__, line, "message lacks '%s'", phrase2);
    if (f.buf || f.header || f.tensors || f.path) df_test_fail(__FILE__, line, "refused st_file not zeroed");
}

static void refused_json_at(int line, const char *json, size_t data, const char *phrase1, const char *phrase2) {
    size_t size;
    unsigned char *buf = make_file(json, data, &size);
    refused_at(line, buf, size, phrase1, phrase2);
    df_free(buf);
}

#define REFUSED(buf, size, p1, p2) refused_at(__LINE__, buf, size, p1, p2)
#define REFUSED_JSON(json, data, p1, p2) refused_json_at(__LINE__, json, data, p1, p2)

TEST(st_refuses_corrupt_headers) {
    const char *ok = "{\"conv_in.weight\":{\"dtype\":\"F32\",\"shape\":[8,3,3,3],\"data_offsets\":[0,864]}}";
    size_t size;
    unsigned char *buf = make_file(ok, 864, &size);
    st_file f;
    EXPECT(st_open_memory(&f, "good.safetensors", buf, size) == 0, "the valid file: %s", df_errmsg());
    st_close(&f);
    /* the length prefix */
    REFUSED(buf, 0, "truncated", "0 bytes");
    REFUSED(buf, 5, "truncated", "5 bytes");
    REFUSED(buf, 30, "truncated", "header says 80 bytes");
    unsigned char big[100] = {0x00, 0x10}; /* 4096 */
    REFUSED(big, sizeof big, "header says 4096 bytes but the file has only 92", NULL);
    memset(big, 0xff, 8);
    REFUSED(big, sizeof big, "header says 18446744073709551615", NULL);
    memset(big, 0, 8);
    REFUSED(big, sizeof big, "empty", NULL);
    df_free(buf);
    /* the JSON */
    REFUSED_JSON("{\"a\":{\"dtype\":\"F32\",", 0, "not valid JSON", NULL);
    REFUSED_JSON("[1,2,3]", 0, "not a JSON object", NULL);
    REFUSED_JSON("\"just a string\"", 0, "not a JSON object", NULL);
    REFUSED_JSON("{} trailing", 0, "after its JSON", NULL);
    REFUSED_JSON("{\"a\":3}", 0, "'a' is 3", NULL);
    char nested[4100];
    memset(nested, '[', 4000);
    memset(nested + 4000, 0, 100);
    REFUSED_JSON(nested, 0, "not valid JSON", NULL);
    unsigned char zero[] = {16,  0,   0, 0,   0,   0,   0,   0,   '{', '"', 'a', 0,
                            '"', ':', '1', '}', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
    REFUSED(zero, sizeof zero, "zero byte", NULL);
    /* dtypes */
    REFUSED_JSON("{\"conv_in.weight\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "conv_in.weight",
                 "unknown dtype \"F33\"");
    REFUSED_JSON("{\"w\":{\"dtype\":32,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "'w'", "dtype 32, not a string");
    REFUSED_JSON("{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "'w'", "no dtype");
    /* data_offsets that lie */
    REFUSED_JSON("{\"conv_in.weight\":{\"dtype\":\"F32\",\"shape\":[8,3,3,3],\"data_offsets\":[0,400]}}", 864,
                 "tensor 'conv_in.weight' has data_offsets [0, 400] (400 bytes) but F32 shape [8,3,3,3] needs 864 "
                 "bytes",
                 NULL);
    REFUSED_JSON("{\"conv_in.weight\":{\"dtype\":\"F32\",\"shape\":[8,3,3,3],\"data_offsets\":[0,864]}}", 800,
                 "conv_in.weight", "beyond the end");
    REFUSED_JSON("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,8]}}", 32, "'w'", "begin after end");
    REFUSED_JSON("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 32, "'w'",
                 "non-negative integers");
    REFUSED_JSON("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0.5,8.5]}}", 32, "'w'",
                 "non-negative integers");
    REFUSED_JSON("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[\"0\",\"8\"]}}", 32, "'w'",
                 "non-negative integers");
    REFUSED_JSON("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,1e300]}}", 32, "'w'",
                 "non-negative integers");
    REFUSED_JSON("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,16]}}", 32, "'w'", "two numbers");
    REFUSED_JSON("{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", 32, "'w'", "data_offsets");
    REFUSED_JSON("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],"
                 "\"data_offsets\":[18446744073709551608,18446744073709551615]}}",
                 32, "'w'", "non-negative integers");
    /* shapes */
    REFUSED_JSON("{\"w\":{\"dtype\":\"F32\",\"shape\":[-1,3],\"data_offsets\":[0,12]}}", 32, "'w'",
                 "shape entry 0 = -1");
    REFUSED_JSON("{\"w\":{\"dtype\":\"F32\",\"shape\":[3,\"3\"],\"data_offsets\":[0,36]}}", 64, "'w'",
                 "shape entry 1 = a string");
    REFUSED_JSON("{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 32, "'w'", "shape entry 0");
    REFUSED_JSON("{\"w\":{\"dtype\":\"F32\",\"shape\":3,\"data_offsets\":[0,12]}}", 32, "'w'", "shape");
    REFUSED_JSON("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 32, "'w'",
                 "9 dimensions");
    REFUSED_JSON("{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,4]}}", 32,
                 "'w'", "overflows");
    REFUSED_JSON("{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,4]}}", 32, "'w'",
                 "shape entry 0");
    /* tensors against each other, metadata */
    REFUSED_JSON("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",
                 32, "'a' (bytes [0, 16)) and 'b' (bytes [8, 24)) overlap", NULL);
    REFUSED_JSON("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                 "\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,32]}}",
                 32, "'a' appears twice", NULL);
    REFUSED_JSON("{\"__metadata__\":{\"format\":1}}", 0, "__metadata__ entry 'format' is 1", NULL);
    REFUSED_JSON("{\"__metadata__\":[\"pt\"]}", 0, "__metadata__ is an array", NULL);
    /* what is fine: empty tensors anywhere, gaps, a scalar, unknown keys in an entry */
    buf = make_file("{\"e\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[4,4]},"
                    "\"s\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[8,16],\"extra\":true},"
                    "\"t\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}",
                    16, &size);
    EXPECT(st_open_memory(&f, "fine.safetensors", buf, size) == 0, "legal oddities refused: %s", df_errmsg());
    EXPECT(f.n == 3 && strcmp(f.tensors[0].name, "t") == 0 && strcmp(f.tensors[2].name, "s") == 0,
           "tensors should be sorted by offset");
    st_close(&f);
    df_free(buf);
}

TEST(st_refuses_truncated_files_and_bad_reads) {
    const char *dir = subdir("st_trunc");
    char path[600], cut[600];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    float a[6] = {1, 2, 3, 4, 5, 6}, b[12] = {0};
    int64_t ids[2] = {5, -7};
    st_entry ents[] = {st_entry_f32("first", a, 2, (int64_t[]){2, 3}), st_entry_f32("last", b, 2, (int64_t[]){3, 4}),
                       {"ids", ST_I64, 1, {2}, ids}};
    EXPECT(st_write(path, ents, 3, NULL, 0) == 0, "%s", df_errmsg());
    unsigned char *data;
    size_t size;
    if (df_read_file(path, &data, &size) != 0) {
        EXPECT(0, "%s", df_errmsg());
        return;
    }
    EXPECT(data[size] == 0, "df_read_file must add a zero byte");
    size_t hlen = data[0] | (size_t)data[1] << 8;
    /* cut inside the length, inside the header, inside the data of 'first', 'last' and 'ids' */
    struct {
        size_t at;
        const char *p1, *p2;
    } cuts[] = {{3, "truncated", "3 bytes"},
                {8 + hlen / 2, "truncated", "header says"},
                {8 + hlen + 10, "'first'", "beyond the end"},
                {8 + hlen + 24 + 40, "'last'", "beyond the end"},
                {size - 1, "'ids'", "beyond the end"}};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        snprintf(cut, sizeof cut, "%s/cut%zu.safetensors", dir, i);
        EXPECT(df_write_file_atomic(cut, data, cuts[i].at) == 0, "%s", df_errmsg());
        st_file f;
        EXPECT(st_open(&f, cut) == -1, "cut at %zu accepted", cuts[i].at);
        printf("    refused: %s\n", df_errmsg());
        EXPECT(strstr(df_errmsg(), cut) && strstr(df_errmsg(), cuts[i].p1) && strstr(df_errmsg(), cuts[i].p2),
               "cut at %zu: message lacks the file, '%s' or '%s'", cuts[i].at, cuts[i].p1, cuts[i].p2);
    }
    df_free(data);

    /* reads that must be refused */
    st_file f;
    if (st_open(&f, path) != 0) {
        EXPECT(0, "%s", df_errmsg());
        return;
    }
    float out[12];
    EXPECT(st_read_f32(&f, "down_blocks.0.missing", out, 1, (int64_t[]){6}) == -1 &&
               strstr(df_errmsg(), path) && strstr(df_errmsg(), "'down_blocks.0.missing' not found"),
           "missing tensor: %s", df_errmsg());
    EXPECT(st_read_f32(&f, "first", out, 2, (int64_t[]){3, 2}) == -1 &&
               strstr(df_errmsg(), "tensor 'first' has shape [2,3] but [3,2] was expected"),
           "wrong shape: %s", df_errmsg());
    EXPECT(st_read_f32(&f, "first", out, 3, (int64_t[]){2, 3, 1}) == -1 &&
               strstr(df_errmsg(), "[2,3] but [2,3,1] was expected"),
           "wrong rank: %s", df_errmsg());
    EXPECT(st_read_f32(&f, "ids", out, 1, (int64_t[]){2}) == -1 && strstr(df_errmsg(), "'ids'") &&
               strstr(df_errmsg(), "I64") && strstr(df_errmsg(), "not supported"),
           "I64 as float: %s", df_errmsg());
    const st_tensor *t = st_find(&f, "ids");
    int64_t back[2];
    memcpy(back, st_data(&f, t), sizeof back);
    EXPECT(t && t->dtype == ST_I64 && back[0] == 5 && back[1] == -7, "I64 raw bytes");
    st_close(&f);

    snprintf(cut, sizeof cut, "%s/absent.safetensors", dir);
    EXPECT(st_open(&f, cut) == -1 && strstr(df_errmsg(), cut) && strstr(df_errmsg(), "No such file"),
           "absent file: %s", df_errmsg());
    EXPECT(st_open(&f, dir) == -1 && strstr(df_errmsg(), "directory"), "a directory: %s", df_errmsg());
}

TEST(st_write_refuses_bad_entries) {
    const char *dir = subdir("st_write_bad");
    char path[600];
    snprintf(path, sizeof path, "%s/x.safetensors", dir);
    float a[2] = {1, 2};
    st_entry dup[] = {st_entry_f32("w", a, 1, (int64_t[]){2}), st_entry_f32("w", a, 1, (int64_t[]){2})};
    EXPECT(st_write(path, dup, 2, NULL, 0) == -1 && strstr(df_errmsg(), "two tensors are called 'w'"), "%s",
           df_errmsg());
    st_entry reserved = st_entry_f32("__metadata__", a, 1, (int64_t[]){2});
    EXPECT(st_write(path, &reserved, 1, NULL, 0) == -1 && strstr(df_errmsg(), "reserved"), "%s", df_errmsg());
    st_entry neg = st_entry_f32("n", a, 2, (int64_t[]){2, -1});
    EXPECT(st_write(path, &neg, 1, NULL, 0) == -1 && strstr(df_errmsg(), "'n' has negative dimension"), "%s",
           df_errmsg());
    st_entry nodata = st_entry_f32("z", NULL, 1, (int64_t[]){2});
    EXPECT(st_write(path, &nodata, 1, NULL, 0) == -1 && strstr(df_errmsg(), "'z' has no data"), "%s", df_errmsg());
    st_entry baddt = {"d", 99, 1, {2}, a};
    EXPECT(st_write(path, &baddt, 1, NULL, 0) == -1 && strstr(df_errmsg(), "invalid dtype"), "%s", df_errmsg());
    const char *kv[] = {"k", "1", "k", "2"};
    EXPECT(st_write(path, dup, 1, kv, 2) == -1 && strstr(df_errmsg(), "metadata key 'k' appears twice"), "%s",
           df_errmsg());
    EXPECT(access(path, F_OK) != 0 && count_tmp_files(dir) == 0, "a refused write left a file behind");
    snprintf(path, sizeof path, "%s/no/such/dir/x.safetensors", dir);
    EXPECT(st_write(path, dup, 1, NULL, 0) == -1 && strstr(df_errmsg(), "No such file"), "%s", df_errmsg());
}

/* ---- atomic files ---- */

TEST(atomic_file_writer) {
    const char *dir = subdir("atomic");
    char path[600], other[600];
    snprintf(path, sizeof path, "%s/target.bin", dir);
    EXPECT(df_write_file_atomic(path, "old", 3) == 0, "%s", df_errmsg());

    df_atomic_file f;
    EXPECT(df_atomic_open(&f, path) == 0, "%s", df_errmsg());
    fputs("new contents that must never appear", f.fp);
    fflush(f.fp);
    EXPECT(count_tmp_files(dir) == 1, "the temporary file should exist while writing");
    df_atomic_abort(&f);
    df_atomic_abort(&f); /* harmless twice */
    unsigned char *data;
    size_t size;
    EXPECT(df_read_file(path, &data, &size) == 0 && size == 3 && memcmp(data, "old", 3) == 0,
           "abort must leave the target untouched");
    df_free(data);
    EXPECT(count_tmp_files(dir) == 0, "abort left a temporary file");

    EXPECT(df_atomic_open(&f, path) == 0, "%s", df_errmsg());
    fputs("brand new", f.fp);
    EXPECT(df_atomic_commit(&f) == 0, "%s", df_errmsg());
    EXPECT(f.fp == NULL && f.tmp == NULL, "commit must release the struct");
    EXPECT(df_read_file(path, &data, &size) == 0 && size == 9 && memcmp(data, "brand new", 10) == 0,
           "commit must replace the target (and read adds a zero byte)");
    df_free(data);
    EXPECT(count_tmp_files(dir) == 0, "commit left a temporary file");

    /* a commit that cannot rename (the target is a non-empty directory) fails and cleans up */
    snprintf(other, sizeof other, "%s/adir/inner", dir);
    EXPECT(df_mkdirs(other) == 0, "%s", df_errmsg());
    snprintf(other, sizeof other, "%s/adir", dir);
    EXPECT(df_atomic_open(&f, other) == 0, "%s", df_errmsg());
    fputs("x", f.fp);
    EXPECT(df_atomic_commit(&f) == -1 && strstr(df_errmsg(), "cannot rename"), "rename over a directory: %s",
           df_errmsg());
    EXPECT(count_tmp_files(dir) == 0, "a failed commit left a temporary file");

    /* empty files, mkdirs, errors */
    snprintf(other, sizeof other, "%s/empty.bin", dir);
    EXPECT(df_write_file_atomic(other, NULL, 0) == 0, "%s", df_errmsg());
    EXPECT(df_read_file(other, &data, &size) == 0 && size == 0 && data[0] == 0, "empty file");
    df_free(data);
    snprintf(other, sizeof other, "%s/a/b//c/", dir);
    EXPECT(df_mkdirs(other) == 0 && df_mkdirs(other) == 0, "mkdirs: %s", df_errmsg());
    struct stat st;
    snprintf(other, sizeof other, "%s/a/b/c", dir);
    EXPECT(stat(other, &st) == 0 && S_ISDIR(st.st_mode), "mkdirs did not create %s", other);
    snprintf(other, sizeof other, "%s/target.bin/sub", dir);
    EXPECT(df_mkdirs(other) == -1 && strstr(df_errmsg(), "target.bin"), "mkdirs through a file: %s", df_errmsg());
    snprintf(other, sizeof other, "%s/absent.bin", dir);
    EXPECT(df_read_file(other, &data, &size) == -1 && data == NULL && strstr(df_errmsg(), other) &&
               strstr(df_errmsg(), "No such file"),
           "read of an absent file: %s", df_errmsg());
}

/* ---- cross-check with Python (tests/ref/st_check.py, numpy) ---- */

TEST(st_python_crosscheck) {
    const char *script = "tests/ref/st_check.py";
    if (access(script, R_OK) != 0 || system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") != 0) {
        EXPECT(0, "needs %s (run from the repository root) and /usr/bin/python3 with numpy (make deps)", script);
        return;
    }
    const char *dir = subdir("st_python");
    char a_path[600], b_path[600], cmd[1400];
    snprintf(a_path, sizeof a_path, "%s/from_c.safetensors", dir);
    snprintf(b_path, sizeof b_path, "%s/from_python.safetensors", dir);
    float w[30], s = 2.5f;
    df_test_fill(w, 30, 7, -3, 3);
    uint16_t h[NSPECIAL], b[NSPECIAL];
    for (size_t i = 0; i < NSPECIAL; i++) h[i] = st_f32_to_f16(SPECIAL[i]), b[i] = st_f32_to_bf16(SPECIAL[i]);
    int64_t ids[4] = {-3, 0, (int64_t)1 << 40, INT64_MAX};
    unsigned char u8[6] = {0, 1, 2, 253, 254, 255};
    st_entry ents[] = {
        st_entry_f32("w.f32", w, 3, (int64_t[]){3, 5, 2}),
        {"h.f16", ST_F16, 1, {NSPECIAL}, h},
        {"b.bf16", ST_BF16, 1, {NSPECIAL}, b},
        {"i.i64", ST_I64, 1, {4}, ids},
        {"u.u8", ST_U8, 2, {2, 3}, u8},
        st_entry_f32("s.scalar", &s, 0, NULL),
        st_entry_f32("e.empty", NULL, 2, (int64_t[]){0, 4}),
    };
    const char *kv[] = {"format", "pt", "note", "h\xc3\xa9llo \"quoted\"\n"};
    EXPECT(st_write(a_path, ents, 7, kv, 2) == 0, "%s", df_errmsg());
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s '%s' '%s'", script, a_path, b_path);
    int rc = system(cmd);
    EXPECT(rc == 0, "%s failed (status %d)", cmd, rc);
    if (rc != 0) return;

    st_file f;
    if (st_open(&f, b_path) != 0) {
        EXPECT(0, "the file from Python: %s", df_errmsg());
        return;
    }
    EXPECT(f.data_start % 8 == 0, "Python's header is not padded");
    const char *from = st_metadata(&f, "from");
    EXPECT(from && strcmp(from, "python") == 0, "metadata from Python");
    float got[30], want[30];
    EXPECT(st_read_f32(&f, "w.f32", got, 3, (int64_t[]){3, 5, 2}) == 0 && memcmp(got, w, sizeof w) == 0,
           "w.f32 changed on the way through Python: %s", df_errmsg());
    EXPECT(st_read_f32(&f, "w.neg", got, 3, (int64_t[]){3, 5, 2}) == 0, "%s", df_errmsg());
    for (int i = 0; i < 30; i++) want[i] = -w[i];
    EXPECT(memcmp(got, want, sizeof w) == 0, "w.neg");
    EXPECT(st_read_f32(&f, "w.f16", got, 3, (int64_t[]){3, 5, 2}) == 0, "%s", df_errmsg());
    for (int i = 0; i < 30; i++) want[i] = st_f16_to_f32(st_f32_to_f16(w[i]));
    EXPECT(memcmp(got, want, sizeof w) == 0, "numpy's float16 of w differs from st_f32_to_f16");
    EXPECT(st_read_f32(&f, "w.bf16", got, 3, (int64_t[]){3, 5, 2}) == 0, "%s", df_errmsg());
    for (int i = 0; i < 30; i++) want[i] = st_bf16_to_f32(st_f32_to_bf16(w[i]));
    EXPECT(memcmp(got, want, sizeof w) == 0, "Python's bfloat16 of w differs from st_f32_to_bf16");
    const st_tensor *t = st_find(&f, "i.i64");
    EXPECT(t && t->dtype == ST_I64 && t->numel == 4 && memcmp(st_data(&f, t), ids, sizeof ids) == 0, "i.i64");

    /* The wide-range and tie values: numpy's float16 and our bfloat16 rounding must match ours bit for bit. */
    const st_tensor *r = st_find(&f, "r.f32"), *r16 = st_find(&f, "r.f16"), *rb = st_find(&f, "r.bf16");
    if (r && r16 && rb && r->numel == r16->numel && r->numel == rb->numel) {
        size_t n = r->numel;
        float *x = df_malloc(n * sizeof(float));
        const unsigned char *p16 = st_data(&f, r16), *pb = st_data(&f, rb);
        EXPECT(st_read_f32(&f, "r.f32", x, -1, NULL) == 0, "%s", df_errmsg());
        int bad16 = 0, badb = 0;
        for (size_t i = 0; i < n; i++) {
            uint16_t a16, ab;
            memcpy(&a16, p16 + 2 * i, 2);
            memcpy(&ab, pb + 2 * i, 2);
            if (st_f32_to_f16(x[i]) != a16 && bad16++ < 3)
                printf("    %a: numpy float16 %04x, ours %04x\n", x[i], a16, st_f32_to_f16(x[i]));
            if (st_f32_to_bf16(x[i]) != ab) badb++;
        }
        EXPECT(bad16 == 0 && badb == 0, "%d float16 and %d bfloat16 roundings of %zu differ from Python", bad16,
               badb, n);
        df_free(x);
    } else {
        EXPECT(0, "r.f32 / r.f16 / r.bf16 missing or of different sizes");
    }
    st_close(&f);
}

/* ---- fuzz ---- */

static uint64_t fuzz_rng(uint64_t *s) {
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
    return *s;
}

TEST(st_fuzz_never_crashes) {
    /* A valid file with every kind of tensor the readers handle. */
    const char *dir = subdir("st_fuzz");
    char path[600];
    snprintf(path, sizeof path, "%s/base.safetensors", dir);
    float a[6] = {1, -2, 3, -4, 5, -6};
    uint16_t h[5] = {0x3c00, 0x7c00, 0x0001, 0xfe00, 0x8000}, bf[4] = {0x3f80, 0x4000, 0xff80, 0x7fc0};
    int64_t d[2] = {1, 2};
    unsigned char u[3] = {1, 2, 3};
    st_entry ents[] = {st_entry_f32("a", a, 2, (int64_t[]){2, 3}), {"b.half", ST_F16, 1, {5}, h},
                       {"c.bf16", ST_BF16, 2, {2, 2}, bf}, {"d", ST_I64, 1, {2}, d}, {"e", ST_U8, 1, {3}, u}};
    const char *kv[] = {"format", "pt"};
    unsigned char *base;
    size_t base_size;
    if (st_write(path, ents, 5, kv, 1) != 0 || df_read_file(path, &base, &base_size) != 0) {
        EXPECT(0, "%s", df_errmsg());
        return;
    }
    size_t hlen = base[0] | (size_t)base[1] << 8;
    static const char tokens[][24] = {"-1", "0", "1e99", "0.5", "\"7\"", "null", "[]", "{}", "18446744073709551616",
                                      "4294967296", "-0", "999999999", "[0,4]", "true", "1e-9", "3"};
    static const char chars[] = "0123456789-.eE+\"[]{},:tfn \\u";
    uint64_t s = 0x9e3779b97f4a7c15ull;
    size_t cap = base_size + 64, opened = 0, refused = 0;
    unsigned char *buf = df_malloc(cap);
    int bad_msg = 0;
    for (int it = 0; it < ST_FUZZ_ITERS; it++) {
        size_t size = base_size;
        memcpy(buf, base, base_size);
        int kind = (int)(fuzz_rng(&s) % 7);
        if (kind == 0) { /* flip random bytes anywhere */
            for (int k = 1 + (int)(fuzz_rng(&s) % 4); k > 0; k--)
                buf[fuzz_rng(&s) % size] ^= (unsigned char)(1 + fuzz_rng(&s) % 255);
        } else if (kind == 1) { /* truncate */
            size = fuzz_rng(&s) % size;
        } else if (kind == 2) { /* a strange header length */
            uint64_t choices[] = {0, 1, hlen - 1, hlen + 1, base_size, base_size - 8, UINT64_MAX, 1ull << 63,
                                  fuzz_rng(&s)};
            uint64_t v = choices[fuzz_rng(&s) % 9];
            for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(v >> (8 * i));
        } else if (kind == 3 || kind == 4) { /* JSON punctuation into the header, maybe truncated too */
            for (int k = 1 + (int)(fuzz_rng(&s) % 3); k > 0; k--)
                buf[8 + fuzz_rng(&s) % hlen] = (unsigned char)chars[fuzz_rng(&s) % (sizeof chars - 1)];
            if (kind == 4) size = 8 + hlen + fuzz_rng(&s) % (base_size - 8 - hlen);
        } else if (kind == 5) { /* random bytes in the data section: NaN patterns and the like */
            for (int k = 0; k < 8; k++)
                buf[8 + hlen + fuzz_rng(&s) % (base_size - 8 - hlen)] = (unsigned char)fuzz_rng(&s);
        } else { /* replace a number in the header by a token; the length prefix follows */
            size_t at = 8 + fuzz_rng(&s) % hlen;
            while (at < 8 + hlen && !(base[at] >= '0' && base[at] <= '9')) at++;
            if (at == 8 + hlen) continue;
            size_t endn = at;
            while (base[endn] >= '0' && base[endn] <= '9') endn++;
            const char *tok = tokens[fuzz_rng(&s) % (sizeof tokens / sizeof tokens[0])];
            size_t tl = strlen(tok), newh = hlen - (endn - at) + tl;
            memcpy(buf + at, tok, tl);
            memcpy(buf + at + tl, base + endn, base_size - endn);
            size = base_size - (endn - at) + tl;
            for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)newh >> (8 * i));
        }
        st_file f;
        if (st_open_memory(&f, "fuzz.safetensors", buf, size) != 0) {
            refused++;
            if (strncmp(df_errmsg(), "fuzz.safetensors: ", 18) != 0 && bad_msg++ < 3)
                printf("    message without the file name: %s\n", df_errmsg());
            continue;
        }
        opened++;
        for (size_t i = 0; i < f.n; i++) {
            const st_tensor *t = &f.tensors[i];
            float *out = df_malloc((t->numel ? t->numel : 1) * sizeof(float));
            st_read_f32(&f, t->name, out, -1, NULL);
            st_read_f32(&f, t->name, out, t->ndim, t->shape);
            const unsigned char *p = st_data(&f, t);
            unsigned sum = 0;
            for (size_t k = t->begin; k < t->end; k++) sum += p[k - t->begin];
            (void)sum;
            df_free(out);
        }
        st_metadata(&f, "format");
        st_close(&f);
    }
    printf("    %d iterations: %zu opened, %zu refused\n", ST_FUZZ_ITERS, opened, refused);
    EXPECT(bad_msg == 0, "%d refusals did not name the file", bad_msg);
    EXPECT(opened > 0 && refused > 0, "the fuzz loop should both open and refuse files");
    df_free(buf);
    df_free(base);
}
