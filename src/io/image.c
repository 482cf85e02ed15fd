/* image.c: PNG (libpng) and JPEG (libjpeg-turbo) decoding, PNG writing, resize + centre crop, grids.
 *
 * libpng and libjpeg report errors by longjmp (libjpeg's default even calls exit()), so every decoder and
 * the writer install their own error handler that records the library's message and jumps back to a
 * setjmp in the function, which frees what it allocated and returns df_error. Pointers assigned after the
 * setjmp and used in its error branch are volatile. */
#include "io/image.h"

#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <jerror.h>
#include <jpeglib.h>
#include <png.h>

#include "base/base.h"
#include "io/file.h"

/* ---- PNG ---- */

/* The state shared with libpng's callbacks: the bytes being read, and the last error message. */
typedef struct {
    const uint8_t *data;
    size_t size, pos;
    char msg[256];
} png_ctx;

static void png_on_error(png_structp png, png_const_charp msg) {
    png_ctx *s = png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) { (void)png, (void)msg; }

static void png_read_mem(png_structp png, png_bytep out, size_t n) {
    png_ctx *s = png_get_io_ptr(png);
    if (n > s->size - s->pos) png_error(png, "the file is truncated");
    memcpy(out, s->data + s->pos, n);
    s->pos += n;
}

static int decode_png(const char *path, const uint8_t *data, size_t size, uint8_t **pixels, size_t *w,
                      size_t *h, size_t *channels) {
    png_ctx ctx = {data, size, 0, "unknown error"};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return df_error("cannot read PNG '%s': libpng could not allocate its state", path);
    }
    uint8_t *volatile pix = NULL;
    png_bytep *volatile rows = NULL;
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        df_free(pix);
        df_free(rows);
        return df_error("cannot read PNG '%s': %s", path, ctx.msg);
    }
    png_set_read_fn(png, &ctx, png_read_mem);
    png_read_info(png, info);
    size_t pw = png_get_image_width(png, info), ph = png_get_image_height(png, info);
    int depth = png_get_bit_depth(png, info), type = png_get_color_type(png, info);
    if (pw * ph > DF_IMAGE_MAX_PIXELS) {
        snprintf(ctx.msg, sizeof ctx.msg, "%zux%zu pixels is more than the %zu accepted", pw, ph,
                 DF_IMAGE_MAX_PIXELS);
        png_longjmp(png, 1);
    }
    if (type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16) png_set_scale_16(png);
    png_set_strip_alpha(png); /* also the alpha that palette expansion makes from a tRNS chunk */
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    size_t c = png_get_channels(png, info), rowbytes = png_get_rowbytes(png, info);
    if ((c != 1 && c != 3) || rowbytes != pw * c) {
        snprintf(ctx.msg, sizeof ctx.msg, "unexpected layout after conversion (%zu channels)", c);
        png_longjmp(png, 1);
    }
    pix = df_malloc(ph * rowbytes);
    rows = df_malloc(ph * sizeof *rows);
    for (size_t y = 0; y < ph; y++) rows[y] = pix + y * rowbytes;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    df_free(rows);
    *pixels = pix, *w = pw, *h = ph, *channels = c;
    return 0;
}

int df_png_write(const char *path, const uint8_t *pixels, size_t w, size_t h, size_t channels) {
    static const int types[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB,
                                 PNG_COLOR_TYPE_RGB_ALPHA};
    if (channels < 1 || channels > 4) return df_error("cannot write PNG '%s': %zu channels (1 to 4)", path, channels);
    if (w == 0 || h == 0 || w > 0x7fffffff || h > 0x7fffffff)
        return df_error("cannot write PNG '%s': bad size %zux%zu", path, w, h);
    df_atomic_file af;
    if (df_atomic_open(&af, path) != 0) return -1;
    png_ctx ctx = {NULL, 0, 0, "unknown error"};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        df_atomic_abort(&af);
        return df_error("cannot write PNG '%s': libpng could not allocate its state", path);
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        df_atomic_abort(&af);
        return df_error("cannot write PNG '%s': %s", path, ctx.msg);
    }
    png_init_io(png, af.fp);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, types[channels], PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (size_t y = 0; y < h; y++) png_write_row(png, pixels + y * w * channels);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return df_atomic_commit(&af);
}

/* ---- JPEG ---- */

typedef struct {
    struct jpeg_error_mgr pub; /* first, so a j_common_ptr's err can be cast to this */
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
} jpeg_err;

static void jpeg_on_error(j_common_ptr cinfo) {
    jpeg_err *e = (jpeg_err *)cinfo->err;
    cinfo->err->format_message(cinfo, e->msg);
    longjmp(e->jump, 1);
}

/* Warnings are silent (real photographs often carry harmless ones), except that a file that ends early
 * (libjpeg would pad it with gray) is refused at once: a damaged header can claim a huge image. */
static void jpeg_on_message(j_common_ptr cinfo, int level) {
    if (level >= 0) return;
    cinfo->err->num_warnings++;
    if (cinfo->err->msg_code == JWRN_JPEG_EOF) {
        jpeg_err *e = (jpeg_err *)cinfo->err;
        snprintf(e->msg, sizeof e->msg, "the file is truncated");
        longjmp(e->jump, 1);
    }
}

static int decode_jpeg(const char *path, const uint8_t *data, size_t size, uint8_t **pixels, size_t *w,
                       size_t *h, size_t *channels) {
    struct jpeg_decompress_struct cinfo;
    jpeg_err err;
    memset(&cinfo, 0, sizeof cinfo);
    memset(&err, 0, sizeof err);
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = jpeg_on_error;
    err.pub.emit_message = jpeg_on_message;
    uint8_t *volatile pix = NULL, *volatile row4 = NULL;
    if (setjmp(err.jump)) {
        jpeg_destroy_decompress(&cinfo);
        df_free(pix);
        df_free(row4);
        return df_error("cannot read JPEG '%s': %s", path, err.msg);
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);
    int cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
    cinfo.out_color_space = cinfo.jpeg_color_space == JCS_GRAYSCALE ? JCS_GRAYSCALE : cmyk ? JCS_CMYK : JCS_RGB;
    jpeg_start_decompress(&cinfo);
    size_t jw = cinfo.output_width, jh = cinfo.output_height, c = cmyk ? 3 : (size_t)cinfo.output_components;
    if (jw * jh > DF_IMAGE_MAX_PIXELS || (c != 1 && c != 3)) {
        snprintf(err.msg, sizeof err.msg, "unsupported image (%zux%zu pixels, %d components)", jw, jh,
                 cinfo.output_components);
        longjmp(err.jump, 1);
    }
    pix = df_malloc(jw * jh * c);
    if (cmyk) row4 = df_malloc(jw * 4);
    while (cinfo.output_scanline < cinfo.output_height) {
        size_t y = cinfo.output_scanline;
        JSAMPROW row = cmyk ? row4 : pix + y * jw * c;
        jpeg_read_scanlines(&cinfo, &row, 1);
        if (!cmyk) continue;
        /* Adobe's CMYK JPEGs store inverted values; others store plain CMYK. */
        int inverted = cinfo.saw_Adobe_marker;
        for (size_t x = 0; x < jw; x++) {
            unsigned k = row4[4 * x + 3];
            if (!inverted) k = 255 - k;
            for (int ch = 0; ch < 3; ch++) {
                unsigned v = inverted ? row4[4 * x + ch] : 255u - row4[4 * x + ch];
                pix[(y * jw + x) * 3 + ch] = (uint8_t)((v * k + 127) / 255);
            }
        }
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    df_free(row4);
    *pixels = pix, *w = jw, *h = jh, *channels = c;
    return 0;
}

/* ---- decoding by magic bytes ---- */

int df_image_read(const char *path, uint8_t **pixels, size_t *w, size_t *h, size_t *channels) {
    *pixels = NULL, *w = *h = *channels = 0;
    unsigned char *data;
    size_t size;
    if (df_read_file(path, &data, &size) != 0) return -1;
    static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    int rc;
    if (size >= 8 && memcmp(data, png_magic, 8) == 0)
        rc = decode_png(path, data, size, pixels, w, h, channels);
    else if (size >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff)
        rc = decode_jpeg(path, data, size, pixels, w, h, channels);
    else
        rc = df_error("cannot read image '%s': not a PNG or JPEG file (%s)", path,
                      size == 0 ? "it is empty" : "its first bytes are neither format's signature");
    df_free(data);
    return rc;
}

/* ---- resize and centre crop ---- */

/* Resampling weights along one axis: output o reads source indices start[o] .. start[o] + count[o] - 1
 * (relative to the crop) with weights wt[o * stride + k]. */
typedef struct {
    size_t *start, *count, stride;
    float *wt;
} taps;

static taps make_taps(size_t res, size_t side) {
    double s = (double)side / (double)res; /* source pixels per output pixel */
    taps t;
    t.stride = s >= 1 ? (size_t)ceil(s) + 1 : 2;
    t.start = df_malloc(res * sizeof(size_t));
    t.count = df_malloc(res * sizeof(size_t));
    t.wt = df_calloc(res * t.stride, sizeof(float));
    for (size_t o = 0; o < res; o++) {
        float *wt = t.wt + o * t.stride;
        if (s >= 1) { /* area averaging: the overlap of each source pixel with [o s, (o + 1) s) */
            double a = o * s, b = (o + 1) * s;
            size_t i0 = (size_t)floor(a), i1 = (size_t)ceil(b - 1e-9);
            if (i1 > side) i1 = side;
            t.start[o] = i0, t.count[o] = i1 - i0;
            for (size_t i = i0; i < i1; i++)
                wt[i - i0] = (float)((fmin(b, (double)i + 1) - fmax(a, (double)i)) / s);
        } else { /* bilinear between the two nearest pixel centres */
            double x = ((double)o + 0.5) * s - 0.5;
            if (x < 0) x = 0;
            if (x > (double)(side - 1)) x = (double)(side - 1);
            size_t i0 = (size_t)floor(x);
            double f = x - (double)i0;
            t.start[o] = i0, t.count[o] = i0 + 1 < side ? 2 : 1;
            wt[0] = (float)(1 - f), wt[1] = (float)f;
        }
    }
    return t;
}

static void free_taps(taps *t) {
    df_free(t->start), df_free(t->count), df_free(t->wt);
}

static uint8_t round_u8(float v) {
    if (!(v > 0)) return 0;
    if (v >= 255) return 255;
    return (uint8_t)(v + 0.5f);
}

void df_image_resize_crop(uint8_t *out, size_t res, size_t out_channels, const uint8_t *in, size_t w,
                          size_t h, size_t channels) {
    DF_CHECK((channels == 1 || channels == 3) && (out_channels == 1 || out_channels == 3),
             "df_image_resize_crop: channels %zu -> %zu (1 or 3 expected)", channels, out_channels);
    DF_CHECK(res > 0 && w > 0 && h > 0, "df_image_resize_crop: empty image (%zux%zu -> %zu)", w, h, res);
    size_t C = channels, side = w < h ? w : h, x0 = (w - side) / 2, y0 = (h - side) / 2;
    if (w == res && h == res && channels == out_channels) {
        memcpy(out, in, res * res * C);
        return;
    }
    taps t = make_taps(res, side);
    /* horizontal pass over the rows of the crop: tmp (side, res, C) */
    float *tmp = df_malloc(side * res * C * sizeof(float));
    for (size_t y = 0; y < side; y++) {
        const uint8_t *src = in + ((y0 + y) * w + x0) * C;
        for (size_t o = 0; o < res; o++) {
            const float *wt = t.wt + o * t.stride;
            for (size_t c = 0; c < C; c++) {
                float acc = 0;
                for (size_t k = 0; k < t.count[o]; k++) acc += wt[k] * src[(t.start[o] + k) * C + c];
                tmp[(y * res + o) * C + c] = acc;
            }
        }
    }
    /* vertical pass, then the channel conversion, rounding once */
    for (size_t oy = 0; oy < res; oy++) {
        const float *wt = t.wt + oy * t.stride;
        for (size_t ox = 0; ox < res; ox++) {
            float v[3] = {0, 0, 0};
            for (size_t c = 0; c < C; c++)
                for (size_t k = 0; k < t.count[oy]; k++) v[c] += wt[k] * tmp[((t.start[oy] + k) * res + ox) * C + c];
            uint8_t *dst = out + (oy * res + ox) * out_channels;
            if (out_channels == C) {
                for (size_t c = 0; c < C; c++) dst[c] = round_u8(v[c]);
            } else if (out_channels == 1) {
                dst[0] = round_u8(0.299f * v[0] + 0.587f * v[1] + 0.114f * v[2]);
            } else {
                dst[0] = dst[1] = dst[2] = round_u8(v[0]);
            }
        }
    }
    df_free(tmp);
    free_taps(&t);
}

/* ---- conversions and grids ---- */

void df_float_to_u8(uint8_t *out, const float *in, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = in[i];
        if (!(v > -1.0f)) v = -1.0f; /* also NaN */
        if (v > 1.0f) v = 1.0f;
        out[i] = (uint8_t)((v + 1.0f) * 127.5f + 0.5f);
    }
}

void df_grid_size(size_t n, size_t h, size_t w, size_t cols, size_t *gw, size_t *gh, size_t *out_cols,
                  size_t *out_rows) {
    if (cols == 0) {
        cols = (size_t)sqrt((double)n);
        while (cols * cols < n) cols++;
    }
    if (cols > n) cols = n;
    if (cols == 0) cols = 1;
    size_t rows = (n + cols - 1) / cols;
    *gw = cols * w + (cols + 1) * DF_GRID_BORDER;
    *gh = rows * h + (rows + 1) * DF_GRID_BORDER;
    if (out_cols) *out_cols = cols;
    if (out_rows) *out_rows = rows;
}

int df_write_grid_u8(const char *path, const uint8_t *images, size_t n, size_t c, size_t h, size_t w,
                     size_t cols) {
    if (n == 0 || h == 0 || w == 0) return df_error("cannot write grid '%s': no images", path);
    if (c != 1 && c != 3) return df_error("cannot write grid '%s': %zu channels (1 or 3)", path, c);
    size_t gw, gh, ncols;
    df_grid_size(n, h, w, cols, &gw, &gh, &ncols, NULL);
    uint8_t *grid = df_malloc(gw * gh * c);
    memset(grid, DF_GRID_BORDER_VALUE, gw * gh * c);
    for (size_t i = 0; i < n; i++) {
        size_t gx = DF_GRID_BORDER + (i % ncols) * (w + DF_GRID_BORDER);
        size_t gy = DF_GRID_BORDER + (i / ncols) * (h + DF_GRID_BORDER);
        const uint8_t *img = images + i * c * h * w;
        for (size_t ch = 0; ch < c; ch++)
            for (size_t y = 0; y < h; y++)
                for (size_t x = 0; x < w; x++) grid[((gy + y) * gw + gx + x) * c + ch] = img[(ch * h + y) * w + x];
    }
    int rc = df_png_write(path, grid, gw, gh, c);
    df_free(grid);
    return rc;
}

int df_write_grid(const char *path, const float *images, size_t n, size_t c, size_t h, size_t w, size_t cols) {
    uint8_t *u8 = df_malloc(n * c * h * w);
    df_float_to_u8(u8, images, n * c * h * w);
    int rc = df_write_grid_u8(path, u8, n, c, h, w, cols);
    df_free(u8);
    return rc;
}
