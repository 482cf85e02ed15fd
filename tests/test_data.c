/* test_data.c: the data layer. Every format is tested on small files the test writes itself (IDX gzip and
 * raw, CIFAR-10 batches, .npy, a nested folder of PNG/JPEG images with a corrupt one), corrupt inputs are
 * refused with a message, images survive a PNG round trip exactly, resizing and grids are checked on
 * synthetic images, .npy is cross-checked with numpy, the loader's order is checked for being a
 * permutation per epoch and for exact resume, and the real Fashion-MNIST is loaded and checked against
 * numpy (/usr/bin/python3). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include <jpeglib.h>
#include <png.h>

#include "../src/base/base.h"
#include "../src/data/dataset.h"
#include "../src/io/file.h"
#include "../src/io/image.h"
#include "../src/io/npy.h"
#include "test.h"

/* ---- helpers ---- */

static const char *subdir(const char *name) {
    static char buf[16][512];
    static int k;
    char *b = buf[k++ % 16];
    snprintf(b, 512, "%s/%s", df_test_tmpdir(), name);
    DF_CHECK(df_mkdirs(b) == 0, "%s", df_errmsg());
    return b;
}

static const char *join(const char *dir, const char *name) {
    static char buf[8][600];
    static int k;
    char *b = buf[k++ % 8];
    snprintf(b, 600, "%s/%s", dir, name);
    return b;
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *fp = fopen(path, "wb");
    DF_CHECK(fp && fwrite(data, 1, n, fp) == n && fclose(fp) == 0, "cannot write %s", path);
}

static void write_gz(const char *path, const void *data, size_t n) {
    gzFile gz = gzopen(path, "wb");
    DF_CHECK(gz && gzwrite(gz, data, (unsigned)n) == (int)n && gzclose(gz) == Z_OK, "cannot write %s", path);
}

/* An IDX image file of n images rows x cols, gzip'd or raw; `keep` bytes of pixels (truncation). */
static void write_idx(const char *path, const uint8_t *pix, size_t n, size_t rows, size_t cols, int gz,
                      size_t keep) {
    size_t size = 16 + keep;
    uint8_t *buf = malloc(size);
    uint32_t hd[4] = {0x00000803u, (uint32_t)n, (uint32_t)rows, (uint32_t)cols};
    for (int i = 0; i < 4; i++)
        for (int b = 0; b < 4; b++) buf[4 * i + b] = (uint8_t)(hd[i] >> (24 - 8 * b));
    memcpy(buf + 16, pix, keep);
    if (gz) write_gz(path, buf, size);
    else write_bytes(path, buf, size);
    free(buf);
}

/* Runs a Python script with /usr/bin/python3 and returns its stdout (static buffer). */
static const char *python(const char *script) {
    static char out[4096];
    const char *path = join(df_test_tmpdir(), "script.py");
    write_bytes(path, script, strlen(script));
    char cmd[700];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s", path);
    FILE *p = popen(cmd, "r");
    size_t n = p ? fread(out, 1, sizeof out - 1, p) : 0;
    out[n] = 0;
    int rc = p ? pclose(p) : -1;
    EXPECT(rc == 0, "python failed (%d): %s", rc, out);
    return out;
}

static int contains(const char *s, const char *part) { return strstr(s, part) != NULL; }

/* A PNG written with libpng directly: rows packed as libpng expects for this colour type and depth. */
static void write_png_raw(const char *path, size_t w, size_t h, int type, int depth, const uint8_t *data,
                          size_t rowbytes, const png_color *pal, int npal, const png_byte *trns, int ntrns,
                          int interlace) {
    FILE *fp = fopen(path, "wb");
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    DF_CHECK(fp && png && info && !setjmp(png_jmpbuf(png)), "libpng write failed for %s", path);
    png_init_io(png, fp);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, type,
                 interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (pal) png_set_PLTE(png, info, pal, npal);
    if (trns) png_set_tRNS(png, info, trns, ntrns, NULL);
    png_bytep rows[64];
    for (size_t y = 0; y < h; y++) rows[y] = (png_bytep)data + y * rowbytes;
    png_write_info(png, info);
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    fclose(fp);
}

static void write_jpeg(const char *path, const uint8_t *pix, size_t w, size_t h, int comps) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr err;
    FILE *fp = fopen(path, "wb");
    DF_CHECK(fp, "cannot write %s", path);
    c.err = jpeg_std_error(&err);
    jpeg_create_compress(&c);
    jpeg_stdio_dest(&c, fp);
    c.image_width = (JDIMENSION)w, c.image_height = (JDIMENSION)h, c.input_components = comps;
    c.in_color_space = comps == 4 ? JCS_CMYK : comps == 3 ? JCS_RGB : JCS_GRAYSCALE;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 95, TRUE);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)pix + c.next_scanline * w * (size_t)comps;
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    fclose(fp);
}

/* Truncates the file at `path` to `keep` bytes (kept in a copy at `to`). */
static void truncate_copy(const char *path, const char *to, size_t keep) {
    unsigned char *data;
    size_t size;
    DF_CHECK(df_read_file(path, &data, &size) == 0, "%s", df_errmsg());
    write_bytes(to, data, keep < size ? keep : size);
    df_free(data);
}

/* ---- IDX ---- */

TEST(data_idx_gzip_and_raw) {
    const char *dir = subdir("idx");
    uint8_t pix[5 * 4 * 3];
    for (size_t i = 0; i < sizeof pix; i++) pix[i] = (uint8_t)(i * 37 + 11);
    write_idx(join(dir, "a.gz"), pix, 5, 4, 3, 1, sizeof pix);
    write_idx(join(dir, "a.raw"), pix, 5, 4, 3, 0, sizeof pix);
    for (int gz = 0; gz < 2; gz++) {
        df_dataset d;
        int rc = df_dataset_load(&d, join(dir, gz ? "a.gz" : "a.raw"), NULL, 0, 0);
        EXPECT(rc == 0, "load: %s", df_errmsg());
        EXPECT(d.n == 5 && d.c == 1 && d.h == 4 && d.w == 3, "shape %zu %zu %zu %zu", d.n, d.c, d.h, d.w);
        EXPECT(rc == 0 && memcmp(d.pixels, pix, sizeof pix) == 0, "pixels differ (gz %d)", gz);
        df_dataset_free(&d);
    }
    /* a named dataset found through data_dir, and a missing one */
    const char *mdir = subdir("idx/mnist");
    write_idx(join(mdir, "train-images-idx3-ubyte.gz"), pix, 5, 4, 3, 1, sizeof pix);
    df_dataset d;
    EXPECT(df_dataset_load(&d, "mnist", mdir, 0, 0) == 0 && d.n == 5, "mnist via data_dir: %s", df_errmsg());
    EXPECT(strcmp(d.source, "mnist") == 0, "source '%s'", d.source);
    df_dataset_free(&d);
    EXPECT(df_dataset_load(&d, "mnist-test", mdir, 0, 0) != 0, "mnist-test should be missing");
    EXPECT(contains(df_errmsg(), "t10k-images-idx3-ubyte") && contains(df_errmsg(), "--data-dir") &&
               contains(df_errmsg(), mdir), "message: %s", df_errmsg());
    EXPECT(df_dataset_load(&d, "no-such-dataset", NULL, 0, 0) != 0 && contains(df_errmsg(), "fashion-mnist"),
           "unknown name: %s", df_errmsg());
}

TEST(data_idx_corrupt) {
    const char *dir = subdir("idx_bad");
    uint8_t pix[5 * 4 * 3] = {0};
    df_dataset d;
    for (int gz = 0; gz < 2; gz++) {
        const char *p = join(dir, gz ? "short.gz" : "short.raw");
        write_idx(p, pix, 5, 4, 3, gz, 3 * 12 + 5);
        EXPECT(df_dataset_load(&d, p, NULL, 0, 0) != 0, "truncated IDX accepted");
        EXPECT(contains(df_errmsg(), "truncated") && contains(df_errmsg(), p), "message: %s", df_errmsg());
        EXPECT(d.pixels == NULL && d.n == 0, "dataset not zeroed after failure");
    }
    uint8_t bad[20] = {0, 0, 8, 1, 0, 0, 0, 5};
    write_bytes(join(dir, "labels"), bad, 13);
    EXPECT(df_dataset_load_idx(&d, join(dir, "labels")) != 0 && contains(df_errmsg(), "labels"),
           "labels file: %s", df_errmsg());
    bad[0] = 0x12, bad[3] = 3;
    write_bytes(join(dir, "magic"), bad, 20);
    EXPECT(df_dataset_load_idx(&d, join(dir, "magic")) != 0 && contains(df_errmsg(), "not an IDX"),
           "wrong magic: %s", df_errmsg());
    bad[0] = 0, bad[2] = 0x0d;
    write_bytes(join(dir, "floats"), bad, 20);
    EXPECT(df_dataset_load_idx(&d, join(dir, "floats")) != 0 && contains(df_errmsg(), "0x0d"),
           "float IDX: %s", df_errmsg());
}

/* ---- CIFAR-10 ---- */

TEST(data_cifar_batches) {
    const char *dir = subdir("cifar");
    uint8_t rec[3 * 3073];
    for (size_t r = 0; r < 3; r++) {
        rec[r * 3073] = (uint8_t)(r + 7); /* label */
        for (size_t i = 0; i < 3072; i++) rec[r * 3073 + 1 + i] = (uint8_t)(i * 13 + r * 101);
    }
    write_bytes(join(dir, "data_batch_1.bin"), rec, sizeof rec);
    write_bytes(join(dir, "data_batch_2.bin"), rec, 2 * 3073);
    df_dataset d;
    EXPECT(df_dataset_load(&d, join(dir, "data_batch_1.bin"), NULL, 0, 0) == 0, "%s", df_errmsg());
    EXPECT(d.n == 3 && d.c == 3 && d.h == 32 && d.w == 32, "shape %zu %zu %zu %zu", d.n, d.c, d.h, d.w);
    int same = d.n == 3;
    for (size_t r = 0; same && r < 3; r++) same = memcmp(d.pixels + r * 3072, rec + r * 3073 + 1, 3072) == 0;
    EXPECT(same, "CIFAR pixels differ from the records");
    /* pixel (channel 1 = green, y 2, x 5) of record 2 */
    EXPECT(d.n == 3 && d.pixels[2 * 3072 + 1024 + 2 * 32 + 5] == (uint8_t)((1024 + 69) * 13 + 202), "green pixel");
    df_dataset_free(&d);
    EXPECT(df_dataset_load(&d, dir, NULL, 0, 0) == 0 && d.n == 5, "folder of batches: n %zu %s", d.n,
           df_errmsg());
    EXPECT(d.n == 5 && memcmp(d.pixels + 3 * 3072, rec + 1, 3072) == 0, "batch 2 follows batch 1");
    df_dataset_free(&d);
    /* to gray at 16x16 through the loader */
    EXPECT(df_dataset_load(&d, dir, NULL, 16, 1) == 0 && d.c == 1 && d.h == 16, "resize: %s", df_errmsg());
    df_dataset_free(&d);
    write_bytes(join(dir, "odd.bin"), rec, 3073 + 100);
    EXPECT(df_dataset_load(&d, join(dir, "odd.bin"), NULL, 0, 0) != 0 && contains(df_errmsg(), "3073"),
           "bad size: %s", df_errmsg());
}

/* ---- npy ---- */

TEST(data_npy_formats) {
    const char *dir = subdir("npy");
    char script[2048];
    snprintf(script, sizeof script,
             "import numpy as np\n"
             "d = '%s'\n"
             "a = (np.arange(2*3*4) * 7 %% 256).astype(np.uint8).reshape(2, 3, 4)\n"
             "np.save(d + '/u8_3d.npy', a)\n"
             "np.save(d + '/u8_4d.npy', (np.arange(2*3*4*3) %% 256).astype(np.uint8).reshape(2, 3, 4, 3))\n"
             "np.save(d + '/f32.npy', (a.astype(np.float32) / 127.5 - 1))\n"
             "np.save(d + '/f64.npy', (a.astype(np.float64) / 127.5 - 1))\n"
             "np.save(d + '/i64.npy', a.astype(np.int64))\n"
             "np.save(d + '/nchw.npy', (np.arange(2*3*5*6) %% 256).astype(np.uint8).reshape(2, 3, 5, 6))\n"
             "np.save(d + '/range.npy', np.array([[[0.5, 1.2]]], np.float32))\n"
             "np.save(d + '/fortran.npy', np.asfortranarray(np.zeros((2, 3, 4), np.float32)))\n"
             "with open(d + '/v2.npy', 'wb') as f:\n"
             "    np.lib.format.write_array(f, a, version=(2, 0))\n",
             dir);
    python(script);
    uint8_t want[24];
    for (int i = 0; i < 24; i++) want[i] = (uint8_t)(i * 7 % 256);
    const char *same[] = {"u8_3d.npy", "f32.npy", "f64.npy", "i64.npy", "v2.npy"};
    for (int k = 0; k < 5; k++) {
        df_dataset d;
        int rc = df_dataset_load(&d, join(dir, same[k]), NULL, 0, 0);
        EXPECT(rc == 0 && d.n == 2 && d.c == 1 && d.h == 3 && d.w == 4, "%s: %s", same[k], df_errmsg());
        EXPECT(rc == 0 && memcmp(d.pixels, want, 24) == 0, "%s: pixels differ", same[k]);
        df_dataset_free(&d);
    }
    df_dataset d;
    EXPECT(df_dataset_load(&d, join(dir, "u8_4d.npy"), NULL, 0, 0) == 0 && d.c == 3 && d.h == 3 && d.w == 4,
           "4-D: %s", df_errmsg());
    /* NHWC -> NCHW: image 1, channel 2, y 1, x 3 came from element ((1*3 + 1)*4 + 3)*3 + 2 */
    EXPECT(d.pixels && d.pixels[((1 * 3 + 2) * 3 + 1) * 4 + 3] == (((1 * 3 + 1) * 4 + 3) * 3 + 2) % 256, "NHWC");
    df_dataset_free(&d);
    EXPECT(df_dataset_load(&d, join(dir, "nchw.npy"), NULL, 0, 0) == 0 && d.c == 3 && d.h == 5 && d.w == 6 &&
               d.pixels[100] == 100, "NCHW: %s", df_errmsg());
    df_dataset_free(&d);
    EXPECT(df_dataset_load(&d, join(dir, "range.npy"), NULL, 0, 0) != 0 && contains(df_errmsg(), "[-1, 1]") &&
               contains(df_errmsg(), "1.2"), "range: %s", df_errmsg());
    EXPECT(df_dataset_load(&d, join(dir, "fortran.npy"), NULL, 0, 0) != 0 && contains(df_errmsg(), "Fortran"),
           "fortran: %s", df_errmsg());
    truncate_copy(join(dir, "f32.npy"), join(dir, "short.npy"), 128 + 50);
    EXPECT(df_dataset_load(&d, join(dir, "short.npy"), NULL, 0, 0) != 0 && contains(df_errmsg(), "truncated"),
           "truncated data: %s", df_errmsg());
    truncate_copy(join(dir, "f32.npy"), join(dir, "short2.npy"), 40);
    EXPECT(df_dataset_load(&d, join(dir, "short2.npy"), NULL, 0, 0) != 0 && contains(df_errmsg(), "truncated"),
           "truncated header: %s", df_errmsg());
    /* every prefix of a file is refused without a crash */
    for (size_t keep = 0; keep < 128 + 96; keep += 7) {
        truncate_copy(join(dir, "f32.npy"), join(dir, "cut.npy"), keep);
        df_npy a;
        EXPECT(df_npy_read(join(dir, "cut.npy"), &a) != 0, "prefix of %zu bytes accepted", keep);
    }
    /* damaged headers are read or refused, never a crash */
    unsigned char *orig;
    size_t osize;
    DF_CHECK(df_read_file(join(dir, "f32.npy"), &orig, &osize) == 0, "%s", df_errmsg());
    for (unsigned it = 0; it < 120; it++) {
        unsigned char *copy = malloc(osize);
        memcpy(copy, orig, osize);
        copy[(it * 37u) % 128] = (unsigned char)(" ()',:{}0123456789\x00\xff"[it % 21]);
        write_bytes(join(dir, "fuzz.npy"), copy, osize);
        df_npy a;
        if (df_npy_read(join(dir, "fuzz.npy"), &a) == 0) {
            EXPECT(a.count * a.itemsize <= osize, "read %zu bytes from a %zu-byte file", a.count * a.itemsize, osize);
            df_npy_free(&a);
        }
        free(copy);
    }
    df_free(orig);
    /* a gray 3x4 dataset resized to 8x8 RGB */
    EXPECT(df_dataset_load(&d, join(dir, "u8_3d.npy"), NULL, 8, 3) == 0 && d.c == 3 && d.h == 8 && d.w == 8,
           "conform: %s", df_errmsg());
    df_dataset_free(&d);
}

TEST(data_npy_write_numpy_crosscheck) {
    const char *dir = subdir("npy_w");
    float f[2 * 3 * 5];
    uint8_t u[4 * 7];
    for (int i = 0; i < 30; i++) f[i] = (float)i * 0.25f - 3.0f;
    for (int i = 0; i < 28; i++) u[i] = (uint8_t)(i * 9);
    size_t sf[3] = {2, 3, 5}, su[2] = {4, 7}, s1[1] = {28};
    EXPECT(df_npy_write_f32(join(dir, "f.npy"), f, 3, sf) == 0, "%s", df_errmsg());
    EXPECT(df_npy_write_u8(join(dir, "u.npy"), u, 2, su) == 0, "%s", df_errmsg());
    EXPECT(df_npy_write_u8(join(dir, "u1.npy"), u, 1, s1) == 0, "%s", df_errmsg());
    EXPECT(df_npy_write_f32(join(dir, "s.npy"), f + 5, 0, NULL) == 0, "%s", df_errmsg());
    char script[1024];
    snprintf(script, sizeof script,
             "import numpy as np\nd = '%s'\n"
             "f = np.load(d + '/f.npy'); u = np.load(d + '/u.npy'); v = np.load(d + '/u1.npy'); s = np.load(d + "
             "'/s.npy')\n"
             "print(f.dtype, f.shape, f.sum(), f[1, 2, 3], u.dtype, u.shape, int(u.sum()), u[3, 6], v.shape, "
             "s.shape, s)\n",
             dir);
    const char *out = python(script);
    EXPECT(contains(out, "float32 (2, 3, 5) 18.75 4.0 uint8 (4, 7) 3402 243 (28,) () -1.75"), "numpy: %s", out);
    /* and back through our reader, with the header aligned as numpy aligns it */
    df_npy a;
    EXPECT(df_npy_read(join(dir, "f.npy"), &a) == 0 && a.dtype == DF_NPY_F4 && a.ndim == 3 && a.shape[2] == 5 &&
               memcmp(a.data, f, sizeof f) == 0, "f32 round trip: %s", df_errmsg());
    df_npy_free(&a);
    unsigned char *raw;
    size_t size;
    DF_CHECK(df_read_file(join(dir, "u.npy"), &raw, &size) == 0, "%s", df_errmsg());
    EXPECT((size - 28) % 64 == 0 && raw[6] == 1 && raw[size - 29] == '\n', "header not padded to 64 bytes");
    df_free(raw);
}

/* ---- images: decoding, writing, resizing ---- */

TEST(data_png_roundtrip_and_variants) {
    const char *dir = subdir("png");
    uint8_t rgb[13 * 17 * 3];
    for (size_t i = 0; i < sizeof rgb; i++) rgb[i] = (uint8_t)(i * 97 + 5);
    for (size_t c = 1; c <= 3; c += 2) {
        const char *p = join(dir, c == 1 ? "g.png" : "rgb.png");
        EXPECT(df_png_write(p, rgb, 17, 13, c) == 0, "%s", df_errmsg());
        uint8_t *px;
        size_t w, h, ch;
        EXPECT(df_image_read(p, &px, &w, &h, &ch) == 0, "%s", df_errmsg());
        EXPECT(w == 17 && h == 13 && ch == c && memcmp(px, rgb, 17 * 13 * c) == 0, "round trip (%zu ch)", c);
        df_free(px);
    }
    EXPECT(df_png_write(join(dir, "no/such/dir/x.png"), rgb, 2, 2, 3) != 0, "write into a missing folder");
    /* 16-bit RGB, gray+alpha, RGBA, 4-bit palette with tRNS, 1-bit gray, interlaced */
    uint8_t raw[8 * 6 * 8], want[8 * 6 * 3];
    for (size_t i = 0; i < 8 * 6 * 3; i++) { /* big-endian samples; 8 bits = round(v / 257), not the high byte */
        unsigned v = (unsigned)(i * 5 % 256) << 8 | 0xc0;
        raw[2 * i] = (uint8_t)(v >> 8), raw[2 * i + 1] = 0xc0, want[i] = (uint8_t)floor(v / 257.0 + 0.5);
    }
    write_png_raw(join(dir, "rgb16.png"), 8, 6, PNG_COLOR_TYPE_RGB, 16, raw, 48, NULL, 0, NULL, 0, 0);
    uint8_t ga[8 * 6 * 2], wg[8 * 6];
    for (size_t i = 0; i < 48; i++) ga[2 * i] = wg[i] = (uint8_t)(i * 3), ga[2 * i + 1] = (uint8_t)i;
    write_png_raw(join(dir, "ga.png"), 8, 6, PNG_COLOR_TYPE_GRAY_ALPHA, 8, ga, 16, NULL, 0, NULL, 0, 0);
    uint8_t rgba[8 * 6 * 4];
    for (size_t i = 0; i < 48; i++)
        for (int c = 0; c < 4; c++) rgba[4 * i + c] = c < 3 ? want[3 * i + c] : 9;
    write_png_raw(join(dir, "rgba.png"), 8, 6, PNG_COLOR_TYPE_RGB_ALPHA, 8, rgba, 32, NULL, 0, NULL, 0, 1);
    png_color pal[16];
    for (int k = 0; k < 16; k++) pal[k] = (png_color){(png_byte)(k * 16), (png_byte)(255 - k), (png_byte)(k * 3)};
    png_byte trns[2] = {0, 128};
    uint8_t p4[6 * 4], wp[48 * 3];
    for (size_t y = 0; y < 6; y++)
        for (size_t x = 0; x < 8; x += 2) {
            int a = (int)((x + y) % 16), b = (int)((x + 1 + 3 * y) % 16);
            p4[y * 4 + x / 2] = (uint8_t)(a << 4 | b);
            memcpy(wp + (y * 8 + x) * 3, &pal[a], 3);
            memcpy(wp + (y * 8 + x + 1) * 3, &pal[b], 3);
        }
    write_png_raw(join(dir, "pal4.png"), 8, 6, PNG_COLOR_TYPE_PALETTE, 4, p4, 4, pal, 16, trns, 2, 0);
    uint8_t bits[6], wb[48];
    for (size_t y = 0; y < 6; y++) {
        bits[y] = (uint8_t)(0xa5 ^ (y * 17));
        for (size_t x = 0; x < 8; x++) wb[y * 8 + x] = (bits[y] >> (7 - x)) & 1 ? 255 : 0;
    }
    write_png_raw(join(dir, "bit1.png"), 8, 6, PNG_COLOR_TYPE_GRAY, 1, bits, 1, NULL, 0, NULL, 0, 0);
    struct {
        const char *name;
        const uint8_t *want;
        size_t c;
    } cases[] = {{"rgb16.png", want, 3}, {"ga.png", wg, 1}, {"rgba.png", want, 3}, {"pal4.png", wp, 3},
                 {"bit1.png", wb, 1}};
    for (int k = 0; k < 5; k++) {
        uint8_t *px = NULL;
        size_t w, h, c;
        int rc = df_image_read(join(dir, cases[k].name), &px, &w, &h, &c);
        EXPECT(rc == 0 && w == 8 && h == 6 && c == cases[k].c, "%s: %s (%zux%zux%zu)", cases[k].name,
               df_errmsg(), w, h, c);
        EXPECT(rc == 0 && memcmp(px, cases[k].want, 48 * c) == 0, "%s: pixels differ", cases[k].name);
        df_free(px);
    }
}

TEST(data_image_corrupt_files) {
    const char *dir = subdir("corrupt");
    uint8_t px[32 * 32 * 3];
    for (size_t i = 0; i < sizeof px; i++) px[i] = (uint8_t)(i * 31);
    DF_CHECK(df_png_write(join(dir, "ok.png"), px, 32, 32, 3) == 0, "%s", df_errmsg());
    write_jpeg(join(dir, "ok.jpg"), px, 32, 32, 3);
    truncate_copy(join(dir, "ok.png"), join(dir, "cut.png"), 200);
    truncate_copy(join(dir, "ok.jpg"), join(dir, "cut.jpg"), 300);
    write_bytes(join(dir, "junk.png"), "\x89PNG\r\n\x1a\nthis is not a png at all", 31);
    write_bytes(join(dir, "junk.jpg"), "\xff\xd8\xff\xe0 nope nope nope", 18);
    write_bytes(join(dir, "text.png"), "hello", 5);
    const char *bad[] = {"cut.png", "cut.jpg", "junk.png", "junk.jpg", "text.png"};
    for (int k = 0; k < 5; k++) {
        uint8_t *out = (uint8_t *)1;
        size_t w, h, c;
        EXPECT(df_image_read(join(dir, bad[k]), &out, &w, &h, &c) != 0 && out == NULL, "%s accepted", bad[k]);
        EXPECT(contains(df_errmsg(), bad[k]), "message does not name the file: %s", df_errmsg());
    }
    uint8_t *out;
    size_t w, h, c;
    EXPECT(df_image_read(join(dir, "ok.jpg"), &out, &w, &h, &c) == 0 && w == 32 && c == 3, "%s", df_errmsg());
    df_free(out);
    /* CMYK with libjpeg's Adobe marker is read as Adobe-inverted: (255, 0, 255, 255) is magenta */
    uint8_t cmyk[16 * 16 * 4];
    for (size_t i = 0; i < 256 * 4; i++) cmyk[i] = i % 4 == 1 ? 0 : 255;
    write_jpeg(join(dir, "cmyk.jpg"), cmyk, 16, 16, 4);
    EXPECT(df_image_read(join(dir, "cmyk.jpg"), &out, &w, &h, &c) == 0 && c == 3, "cmyk: %s", df_errmsg());
    EXPECT(c == 3 && out[0] >= 250 && out[1] <= 5 && out[2] >= 250, "cmyk -> %d %d %d", out[0], out[1], out[2]);
    df_free(out);
    /* damaged copies (a few bytes overwritten) decode or fail, but never crash (run under ASan too) */
    for (int k = 0; k < 2; k++) {
        unsigned char *data;
        size_t size;
        DF_CHECK(df_read_file(join(dir, k ? "ok.jpg" : "ok.png"), &data, &size) == 0, "%s", df_errmsg());
        for (unsigned it = 0; it < 50; it++) {
            unsigned char *copy = malloc(size);
            memcpy(copy, data, size);
            for (unsigned j = 0; j < 4; j++) copy[(it * 7919u + j * 104729u) % size] ^= (unsigned char)(it + j + 1);
            write_bytes(join(dir, "fuzz.img"), copy, size);
            if (df_image_read(join(dir, "fuzz.img"), &out, &w, &h, &c) == 0) df_free(out);
            free(copy);
        }
        df_free(data);
    }
}

TEST(data_resize_crop) {
    /* a constant colour stays constant, whatever the sizes */
    uint8_t in[37 * 23 * 3], out[40 * 40 * 3];
    for (size_t i = 0; i < 37 * 23; i++) in[3 * i] = 200, in[3 * i + 1] = 100, in[3 * i + 2] = 50;
    size_t sizes[3] = {16, 23, 40};
    for (int k = 0; k < 3; k++) {
        df_image_resize_crop(out, sizes[k], 3, in, 37, 23, 3);
        int ok = 1;
        for (size_t i = 0; i < sizes[k] * sizes[k]; i++)
            ok &= out[3 * i] == 200 && out[3 * i + 1] == 100 && out[3 * i + 2] == 50;
        EXPECT(ok, "constant colour changed at size %zu", sizes[k]);
    }
    df_image_resize_crop(out, 5, 1, in, 37, 23, 3);
    EXPECT(out[0] == 124 && out[24] == 124, "RGB -> gray: %d (want round(0.299*200+0.587*100+0.114*50) = 124)",
           out[0]);
    /* a 2x downscale of a 1-pixel checker averages to 127.5 -> 128 */
    uint8_t chk[8 * 8];
    for (size_t y = 0; y < 8; y++)
        for (size_t x = 0; x < 8; x++) chk[y * 8 + x] = (x + y) % 2 ? 255 : 0;
    df_image_resize_crop(out, 4, 3, chk, 8, 8, 1);
    int ok = 1;
    for (size_t i = 0; i < 4 * 4 * 3; i++) ok &= out[i] == 128;
    EXPECT(ok, "checker average %d", out[0]);
    /* 3 -> 2 area averaging: row [0, 90, 180] gives [30, 150] */
    uint8_t r3[9] = {0, 90, 180, 0, 90, 180, 0, 90, 180};
    df_image_resize_crop(out, 2, 1, r3, 3, 3, 1);
    EXPECT(out[0] == 30 && out[1] == 150 && out[2] == 30 && out[3] == 150, "3->2: %d %d %d %d", out[0], out[1],
           out[2], out[3]);
    /* enlarging 2 -> 4 is bilinear with clamped edges: [0, 100] -> [0, 25, 75, 100] */
    uint8_t r2[4] = {0, 100, 0, 100};
    df_image_resize_crop(out, 4, 1, r2, 2, 2, 1);
    EXPECT(out[0] == 0 && out[1] == 25 && out[2] == 75 && out[3] == 100 && out[12] == 0 && out[15] == 100,
           "2->4: %d %d %d %d", out[0], out[1], out[2], out[3]);
    /* centre crop of a 6x2 image: columns 2 and 3 */
    uint8_t wide[12];
    for (size_t i = 0; i < 12; i++) wide[i] = (uint8_t)(i % 6 * 10);
    df_image_resize_crop(out, 2, 1, wide, 6, 2, 1);
    EXPECT(out[0] == 20 && out[1] == 30 && out[2] == 20 && out[3] == 30, "crop: %d %d", out[0], out[1]);
    /* gray -> RGB replicates */
    df_image_resize_crop(out, 2, 3, wide, 6, 2, 1);
    EXPECT(out[0] == 20 && out[1] == 20 && out[2] == 20 && out[3] == 30, "gray->RGB");
}

TEST(data_grid_layout) {
    uint8_t u[5];
    float v[5] = {-1, 1, 0, -7, NAN};
    df_float_to_u8(u, v, 5);
    EXPECT(u[0] == 0 && u[1] == 255 && u[2] == 128 && u[3] == 0 && u[4] == 0, "float_to_u8 %d %d %d %d %d", u[0],
           u[1], u[2], u[3], u[4]);
    const char *dir = subdir("grid");
    size_t n = 5, c = 3, h = 4, w = 6;
    float img[5 * 3 * 4 * 6];
    for (size_t i = 0; i < n * c * h * w; i++) img[i] = (float)(i % 251) / 125.5f - 1.0f;
    EXPECT(df_write_grid(join(dir, "g.png"), img, n, c, h, w, 0) == 0, "%s", df_errmsg());
    uint8_t *px;
    size_t gw, gh, gc;
    EXPECT(df_image_read(join(dir, "g.png"), &px, &gw, &gh, &gc) == 0, "%s", df_errmsg());
    /* 3 columns, 2 rows, 2-pixel borders: 3*6 + 4*2 = 26 by 2*4 + 3*2 = 14 */
    EXPECT(gw == 26 && gh == 14 && gc == 3, "grid %zux%zux%zu", gw, gh, gc);
    if (gw == 26 && gh == 14 && gc == 3) {
        int border = 1, tiles = 1;
        for (size_t y = 0; y < gh; y++)
            for (size_t x = 0; x < gw; x++) {
                size_t tx = x % (w + 2), ty = y % (h + 2), col = x / (w + 2), row = y / (h + 2);
                int in_tile = tx >= 2 && ty >= 2 && col < 3 && row < 2 && row * 3 + col < n;
                for (size_t ch = 0; ch < 3; ch++) {
                    uint8_t got = px[(y * gw + x) * 3 + ch];
                    if (!in_tile) {
                        border &= got == DF_GRID_BORDER_VALUE;
                    } else {
                        uint8_t want;
                        df_float_to_u8(&want, &img[(((row * 3 + col) * c + ch) * h + ty - 2) * w + tx - 2], 1);
                        tiles &= got == want;
                    }
                }
            }
        EXPECT(border, "border or empty cell pixels are not %d", DF_GRID_BORDER_VALUE);
        EXPECT(tiles, "tile pixels differ");
    }
    df_free(px);
    size_t cols, rows;
    df_grid_size(5, 4, 6, 5, &gw, &gh, &cols, &rows);
    EXPECT(cols == 5 && rows == 1 && gw == 42 && gh == 8, "cols=5: %zux%zu", gw, gh);
    df_grid_size(16, 28, 28, 0, &gw, &gh, &cols, &rows);
    EXPECT(cols == 4 && rows == 4 && gw == 4 * 28 + 10, "16 tiles: %zu x %zu", cols, rows);
}

/* ---- image folders ---- */

TEST(data_image_folder) {
    const char *root = subdir("folder");
    subdir("folder/a"), subdir("folder/b/c"), subdir("folder/empty");
    uint8_t g[10 * 10], rgb[12 * 8 * 3], p16[9 * 9 * 2], pal[7 * 7], jpg[16 * 16 * 3];
    memset(g, 40, sizeof g);
    for (size_t i = 0; i < 12 * 8; i++) rgb[3 * i] = 200, rgb[3 * i + 1] = 100, rgb[3 * i + 2] = 50;
    for (size_t i = 0; i < 81; i++) p16[2 * i] = p16[2 * i + 1] = 77;
    memset(pal, 2, sizeof pal);
    for (size_t i = 0; i < 16 * 16; i++) jpg[3 * i] = 128, jpg[3 * i + 1] = 64, jpg[3 * i + 2] = 192;
    png_color colours[3] = {{0, 0, 0}, {1, 1, 1}, {10, 20, 30}};
    DF_CHECK(df_png_write(join(root, "a/x.png"), g, 10, 10, 1) == 0, "%s", df_errmsg());
    DF_CHECK(df_png_write(join(root, "b/c/y.PNG"), rgb, 12, 8, 3) == 0, "%s", df_errmsg());
    write_png_raw(join(root, "z16.png"), 9, 9, PNG_COLOR_TYPE_GRAY, 16, p16, 18, NULL, 0, NULL, 0, 0);
    write_png_raw(join(root, "pal.png"), 7, 7, PNG_COLOR_TYPE_PALETTE, 8, pal, 7, colours, 3, NULL, 0, 0);
    write_jpeg(join(root, "photo.JPEG"), jpg, 16, 16, 3);
    write_bytes(join(root, "bad.png"), "\x89PNG\r\n\x1a\ngarbage", 15);
    write_bytes(join(root, ".hidden.png"), "junk", 4);
    write_bytes(join(root, "notes.txt"), "not an image", 12);
    df_dataset d;
    EXPECT(df_dataset_load(&d, root, NULL, 8, 0) == 0, "%s", df_errmsg());
    EXPECT(d.n == 5 && d.c == 3 && d.h == 8 && d.w == 8 && d.skipped == 1, "n %zu c %zu h %zu skipped %zu", d.n,
           d.c, d.h, d.skipped);
    /* sorted by path: a/x.png, b/c/y.PNG, (bad.png), pal.png, photo.JPEG, z16.png */
    const int want[5][3] = {{40, 40, 40}, {200, 100, 50}, {10, 20, 30}, {128, 64, 192}, {77, 77, 77}};
    for (size_t i = 0; i < d.n && i < 5; i++) {
        int worst = 0;
        for (size_t ch = 0; ch < 3; ch++)
            for (size_t p = 0; p < 64; p++) {
                int diff = abs((int)d.pixels[(i * 3 + ch) * 64 + p] - want[i][ch]);
                if (diff > worst) worst = diff;
            }
        EXPECT(worst <= (i == 3 ? 3 : 0), "image %zu differs by %d", i, worst);
    }
    df_dataset_free(&d);
    EXPECT(df_dataset_load(&d, root, NULL, 4, 1) == 0 && d.c == 1 && d.n == 5 && d.pixels[1 * 16] == 124,
           "gray: %s", df_errmsg());
    df_dataset_free(&d);
    EXPECT(df_dataset_load(&d, root, NULL, 0, 0) != 0 && contains(df_errmsg(), "--resolution"), "res 0: %s",
           df_errmsg());
    EXPECT(df_dataset_load(&d, join(root, "empty"), NULL, 8, 3) != 0 && contains(df_errmsg(), "no images") &&
               contains(df_errmsg(), "empty") && contains(df_errmsg(), ".png"), "empty: %s", df_errmsg());
    const char *only_bad = subdir("folder_bad");
    write_bytes(join(only_bad, "x.jpg"), "\xff\xd8\xff\xe0 nope", 9);
    EXPECT(df_dataset_load(&d, only_bad, NULL, 8, 3) != 0 && contains(df_errmsg(), "no usable images") &&
               contains(df_errmsg(), "x.jpg"), "all bad: %s", df_errmsg());
    EXPECT(df_dataset_load(&d, join(root, "a/x.png"), NULL, 8, 3) != 0 && contains(df_errmsg(), "single image"),
           "single image: %s", df_errmsg());
}

/* ---- the loader ---- */

static df_dataset toy(size_t n, size_t c, size_t h, size_t w) {
    df_dataset d = {.n = n, .c = c, .h = h, .w = w};
    d.pixels = df_malloc(n * c * h * w);
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < c * h * w; k++) d.pixels[i * c * h * w + k] = (uint8_t)((i * 7 + k * 29) % 256);
    return d;
}

/* Which image a loaded (unflipped) sample is: the one whose first byte matches (toy: i * 7 % 256 unique). */
static size_t which(const float *x) { return (size_t)lrintf((x[0] + 1.0f) * 127.5f) / 7; }

TEST(data_loader_order_and_resume) {
    df_dataset d = toy(30, 1, 2, 3);
    df_loader l, m;
    float x[30 * 6], y[30 * 6];
    df_loader_init(&l, &d, 42, 0);
    size_t order[3][30];
    for (int e = 0; e < 3; e++) {
        df_loader_next(&l, x, 30);
        int seen[30] = {0}, once = 1;
        for (size_t b = 0; b < 30; b++) order[e][b] = which(x + b * 6), seen[order[e][b] % 30]++;
        for (int i = 0; i < 30; i++) once &= seen[i] == 1;
        EXPECT(once, "epoch %d is not a permutation", e);
        EXPECT(l.epoch == (uint64_t)e + 1 && l.pos == 0, "state after epoch %d: %llu %llu", e,
               (unsigned long long)l.epoch, (unsigned long long)l.pos);
    }
    EXPECT(memcmp(order[0], order[1], sizeof order[0]) != 0 && memcmp(order[1], order[2], sizeof order[0]) != 0,
           "epochs repeat their order");
    EXPECT(x[0] >= -1 && x[0] <= 1 && which(x) < 30, "values");
    df_loader_free(&l);
    /* the same seed gives the same order, another seed another */
    df_loader_init(&l, &d, 42, 0), df_loader_init(&m, &d, 43, 0);
    df_loader_next(&l, x, 30), df_loader_next(&m, y, 30);
    size_t o[30];
    for (size_t b = 0; b < 30; b++) o[b] = which(x + b * 6);
    EXPECT(memcmp(o, order[0], sizeof o) == 0, "same seed, different order");
    EXPECT(memcmp(x, y, sizeof x) != 0, "different seeds, same order");
    df_loader_free(&l), df_loader_free(&m);
    /* resume: batches of 7 (crossing epochs) from a loader seeked to a saved state equal the uninterrupted run */
    df_loader_init(&l, &d, 9, 1);
    float run[12][7 * 6];
    uint64_t ep = 0, ps = 0;
    for (int k = 0; k < 12; k++) {
        if (k == 5) ep = l.epoch, ps = l.pos;
        df_loader_next(&l, run[k], 7);
    }
    df_loader_init(&m, &d, 9, 1);
    df_loader_seek(&m, ep, ps);
    int same = 1;
    for (int k = 5; k < 12; k++) {
        df_loader_next(&m, x, 7);
        same &= memcmp(x, run[k], sizeof run[k]) == 0;
    }
    EXPECT(same, "resumed loader differs from the uninterrupted one (from epoch %llu pos %llu)",
           (unsigned long long)ep, (unsigned long long)ps);
    EXPECT(m.epoch == l.epoch && m.pos == l.pos, "states differ after resuming");
    df_loader_seek(&m, 0, 30 * 2 + 3); /* pos past the end carries into epochs */
    EXPECT(m.epoch == 2 && m.pos == 3, "seek carry: %llu %llu", (unsigned long long)m.epoch,
           (unsigned long long)m.pos);
    df_loader_free(&l), df_loader_free(&m);
    /* a batch larger than the dataset */
    df_loader_init(&l, &d, 1, 0);
    float big[75 * 6];
    df_loader_next(&l, big, 75);
    EXPECT(l.epoch == 2 && l.pos == 15, "after 75 of 30: %llu %llu", (unsigned long long)l.epoch,
           (unsigned long long)l.pos);
    df_loader_free(&l);
    df_dataset_free(&d);
}

TEST(data_loader_flips) {
    df_dataset d = toy(1000, 2, 3, 4);
    df_loader l, m;
    df_loader_init(&l, &d, 5, 1), df_loader_init(&m, &d, 5, 0);
    float *x = df_malloc(1000 * 24 * sizeof(float)), *y = df_malloc(1000 * 24 * sizeof(float));
    df_loader_next(&l, x, 1000), df_loader_next(&m, y, 1000);
    int flipped = 0, mirror_ok = 1;
    for (size_t b = 0; b < 1000; b++) {
        const float *a = x + b * 24, *u = y + b * 24;
        if (memcmp(a, u, 24 * sizeof(float)) == 0) continue;
        flipped++;
        for (size_t r = 0; r < 6; r++) /* 2 channels x 3 rows, each of 4 reversed */
            for (size_t i = 0; i < 4; i++) mirror_ok &= a[r * 4 + i] == u[r * 4 + 3 - i];
    }
    EXPECT(flipped > 440 && flipped < 560, "%d of 1000 flipped", flipped);
    EXPECT(mirror_ok, "a flipped image is not the mirror of the original");
    float lo = 1, hi = -1;
    for (size_t i = 0; i < 1000 * 24; i++) lo = fminf(lo, y[i]), hi = fmaxf(hi, y[i]);
    EXPECT(lo == -1.0f && hi == 1.0f, "range [%g, %g]", lo, hi);
    df_free(x), df_free(y);
    df_loader_free(&l), df_loader_free(&m);
    df_dataset_free(&d);
}

TEST(data_check_model) {
    df_dataset d = {.n = 1, .c = 3, .h = 32, .w = 32};
    snprintf(d.source, sizeof d.source, "fashion-mnist");
    EXPECT(df_dataset_check_model(&d, 3, 32) == 0, "matching shapes refused");
    EXPECT(df_dataset_check_model(&d, 1, 28) != 0 && contains(df_errmsg(), "28x28x1") &&
               contains(df_errmsg(), "32x32x3") && contains(df_errmsg(), "fashion-mnist") &&
               contains(df_errmsg(), "--resolution"), "message: %s", df_errmsg());
}

/* ---- the real Fashion-MNIST ---- */

TEST(data_fashion_mnist) {
    const char *dir = DF_FASHION_MNIST_DIR;
    if (access(dir, R_OK) != 0) {
        EXPECT(0, "%s is missing: install Debian's dataset-fashion-mnist package (make deps)", dir);
        return;
    }
    char script[512];
    snprintf(script, sizeof script,
             "import gzip, numpy as np\n"
             "for f in ['train', 't10k']:\n"
             "    d = gzip.open('%s/' + f + '-images-idx3-ubyte.gz').read()\n"
             "    print(int(np.frombuffer(d, np.uint8, 784, 16).astype(np.int64).sum()), end=' ')\n",
             dir);
    unsigned long long want_train = 0, want_test = 0;
    EXPECT(sscanf(python(script), "%llu %llu", &want_train, &want_test) == 2, "python output");
    df_dataset d;
    double t0 = df_time();
    int rc = df_dataset_load(&d, "fashion-mnist", NULL, 0, 0);
    double dt = df_time() - t0;
    EXPECT(rc == 0, "%s", df_errmsg());
    printf("    fashion-mnist train: %zu x %zu x %zu x %zu in %.3f s\n", d.n, d.c, d.h, d.w, dt);
    EXPECT(d.n == 60000 && d.c == 1 && d.h == 28 && d.w == 28, "train shape");
    unsigned long long sum = 0;
    for (size_t i = 0; rc == 0 && i < 784; i++) sum += d.pixels[i];
    EXPECT(sum == want_train && sum > 0, "first image sum %llu, numpy %llu", sum, want_train);
    EXPECT(df_dataset_check_model(&d, 1, 28) == 0, "%s", df_errmsg());
    df_dataset_free(&d);
    rc = df_dataset_load(&d, "fashion-mnist-test", NULL, 32, 3);
    EXPECT(rc == 0 && d.n == 10000 && d.c == 3 && d.h == 32, "test set at 32x32x3: %s", df_errmsg());
    df_dataset_free(&d);
    rc = df_dataset_load(&d, "fashion-mnist-test", NULL, 0, 0);
    sum = 0;
    for (size_t i = 0; rc == 0 && i < 784; i++) sum += d.pixels[i];
    EXPECT(rc == 0 && d.n == 10000 && sum == want_test, "test set: sum %llu numpy %llu", sum, want_test);
    df_dataset_free(&d);
}
