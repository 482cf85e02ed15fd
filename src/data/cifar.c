/* cifar.c: CIFAR-10 binary batches (https://www.cs.toronto.edu/~kriz/cifar.html, "binary version").
 *
 * Each file is a run of 3073-byte records: 1 label byte, then 1024 red, 1024 green and 1024 blue bytes of
 * a 32x32 image, rows top to bottom. The pixels are already planar, so records are copied as they are. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "base/base.h"
#include "data/dataset.h"
#include "io/file.h"

#define CIFAR_RECORD 3073
#define CIFAR_PIXELS 3072
#define CIFAR_BATCHES 5

static int is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Appends the records of one batch file to *pix (grown), counting them in *n. */
static int read_batch(const char *path, uint8_t **pix, size_t *n) {
    unsigned char *data;
    size_t size;
    if (df_read_file(path, &data, &size) != 0) return -1;
    if (size == 0 || size % CIFAR_RECORD != 0) {
        df_free(data);
        return df_error("'%s' is not a CIFAR-10 binary batch: its size (%zu bytes) is not a multiple of %d "
                        "(1 label byte + 32x32x3 pixels per record)%s", path, size, CIFAR_RECORD,
                        size % 3074 == 0 && size ? "; CIFAR-100's 2-label records are not supported" : "");
    }
    size_t m = size / CIFAR_RECORD;
    uint8_t *grown = df_malloc((*n + m) * CIFAR_PIXELS);
    if (*n) memcpy(grown, *pix, *n * CIFAR_PIXELS);
    for (size_t r = 0; r < m; r++)
        memcpy(grown + (*n + r) * CIFAR_PIXELS, data + r * CIFAR_RECORD + 1, CIFAR_PIXELS);
    df_free(*pix);
    df_free(data);
    *pix = grown, *n += m;
    return 0;
}

/* ---- loading ---- */

int df_dataset_load_cifar(df_dataset *d, const char *path) {
    memset(d, 0, sizeof *d);
    struct stat st;
    if (stat(path, &st) != 0) return df_error("cannot find '%s'", path);
    uint8_t *pix = NULL;
    size_t n = 0;
    if (!S_ISDIR(st.st_mode)) {
        if (read_batch(path, &pix, &n) != 0) return -1;
    } else {
        char dir[4096], file[4200];
        snprintf(dir, sizeof dir, "%s", path);
        snprintf(file, sizeof file, "%s/data_batch_1.bin", dir);
        if (!is_file(file)) snprintf(dir, sizeof dir, "%s/cifar-10-batches-bin", path);
        for (int b = 1; b <= CIFAR_BATCHES; b++) {
            snprintf(file, sizeof file, "%s/data_batch_%d.bin", dir, b);
            if (!is_file(file)) continue;
            if (read_batch(file, &pix, &n) != 0) {
                df_free(pix);
                return -1;
            }
        }
        if (n == 0)
            return df_error("no CIFAR-10 batches in '%s': expected data_batch_1.bin .. data_batch_5.bin there "
                            "or in its cifar-10-batches-bin/ folder", path);
    }
    d->n = n, d->c = 3, d->h = 32, d->w = 32, d->pixels = pix;
    snprintf(d->source, sizeof d->source, "%s", path);
    return 0;
}
