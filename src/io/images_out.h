/* images_out.h: writing a batch of generated images where the user asked, chosen by the path:
 *   *.png  a near-square grid with a thin border
 *   *.npy  uint8, (N, H, W) for one channel or (N, H, W, C)
 *   DIR/   (a trailing slash, or an existing directory) one numbered PNG per image: DIR/000000.png ...
 * Images are NCHW floats in [-1, 1] (clamped). Every file is written atomically. */
#ifndef DF_IMAGES_OUT_H
#define DF_IMAGES_OUT_H

#include <stddef.h>

/* cols: grid columns for a .png (0: near-square). */
int df_write_images(const char *path, const float *x, size_t n, size_t c, size_t h, size_t w, size_t cols);
/* The same, but a folder's files are numbered from `first` (DIR/<first>.png ...): a run that makes images
 * first .. first + n - 1 of a seed writes them under their own numbers. */
int df_write_images_from(const char *path, const float *x, size_t n, size_t c, size_t h, size_t w, size_t cols,
                         size_t first);
/* Checks that `path` names a place df_write_images can write (an existing parent folder, a known kind),
 * before hours of sampling; 0 or -1 with the reason. */
int df_check_images_path(const char *path);

#endif
