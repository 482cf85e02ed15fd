/* image.h: PNG and JPEG decoding, PNG writing, resizing with centre crop, and image grids.
 *
 * Pixels are uint8, interleaved HWC (channel 1 = gray, 3 = RGB) unless a comment says planar (NCHW).
 * Functions that can fail return 0 on success and -1 after df_error (read df_errmsg()); a corrupt file is
 * always such an error, never a crash or an exit (libpng and libjpeg errors are caught with setjmp).
 */
#ifndef DF_IO_IMAGE_H
#define DF_IO_IMAGE_H

#include <stddef.h>
#include <stdint.h>

/* The colour of the borders in grids written by df_write_grid: white. */
#define DF_GRID_BORDER_VALUE 255
/* The border width in pixels, between tiles and around the grid. */
#define DF_GRID_BORDER 2
/* The largest image df_image_read accepts, in pixels (a corrupt header must not cause a huge allocation). */
#define DF_IMAGE_MAX_PIXELS ((size_t)1 << 28)

/* ---- reading and writing ---- */

/* Decodes the PNG or JPEG file at `path` (the format is told by its first bytes, not its name). PNG: any
 * bit depth and colour type; palettes are expanded, 16-bit samples scaled to 8 bits (rounded), alpha
 * dropped (the colour is kept as stored, not composited), gray+alpha gives gray. JPEG: gray stays gray,
 * YCbCr and CMYK become RGB. On success *pixels is a new df_malloc'd HWC buffer of *h x *w x *channels bytes
 * (channels 1 or 3) that the caller frees with df_free. On failure *pixels is NULL and the message names
 * the file and what is wrong with it. */
int df_image_read(const char *path, uint8_t **pixels, size_t *w, size_t *h, size_t *channels);

/* Writes an 8-bit PNG of w x h pixels from interleaved `pixels` (channels 1 = gray, 2 = gray+alpha,
 * 3 = RGB, 4 = RGBA), atomically (temporary file, then rename). */
int df_png_write(const char *path, const uint8_t *pixels, size_t w, size_t h, size_t channels);

/* ---- resizing ---- */

/* Resizes the HWC image `in` (w x h x channels, channels 1 or 3) to `out` (res x res x out_channels, HWC):
 * takes the centred square of side min(w, h) (offset floor((w - side) / 2), likewise for h), scales it to
 * res x res with area averaging (an exact box filter) when shrinking or bilinear interpolation (pixel
 * centres aligned, edges clamped) when enlarging, then converts channels: RGB -> gray as
 * 0.299 R + 0.587 G + 0.114 B, gray -> RGB by replication. Values are rounded to nearest once, at the end.
 * Same size and channels gives an exact copy. */
void df_image_resize_crop(uint8_t *out, size_t res, size_t out_channels, const uint8_t *in, size_t w,
                          size_t h, size_t channels);

/* ---- conversions and grids ---- */

/* out[i] = round((clamp(in[i], -1, 1) + 1) * 127.5): [-1, 1] floats to bytes (NaN gives 0). */
void df_float_to_u8(uint8_t *out, const float *in, size_t n);

/* The size of a grid of n tiles of h x w in `cols` columns (0: ceil(sqrt(n))): *gw x *gh pixels, with
 * DF_GRID_BORDER pixels of border between and around the tiles. *out_cols and *out_rows (may be NULL) get
 * the number of columns and rows used. */
void df_grid_size(size_t n, size_t h, size_t w, size_t cols, size_t *gw, size_t *gh, size_t *out_cols,
                  size_t *out_rows);

/* Writes n images as one PNG grid: image i sits in row i / cols, column i % cols (cols = 0 means
 * ceil(sqrt(n)); rows = ceil(n / cols)). Borders and unused cells are DF_GRID_BORDER_VALUE (white).
 * `images` is NCHW planar, c = 1 (gray PNG) or 3 (RGB PNG); the float version takes values in [-1, 1]
 * (clamped, converted as df_float_to_u8), the u8 version bytes. */
int df_write_grid(const char *path, const float *images, size_t n, size_t c, size_t h, size_t w, size_t cols);
int df_write_grid_u8(const char *path, const uint8_t *images, size_t n, size_t c, size_t h, size_t w,
                     size_t cols);

#endif
