/* dataset.h: image datasets held in memory as uint8, and the shuffling batch loader.
 *
 * A dataset is n images of c x h x w bytes (0..255), NCHW planar. Sources: Fashion-MNIST / MNIST (IDX
 * files, gzip or raw), any IDX image file, CIFAR-10 binary batches, a .npy array, a folder of PNG/JPEG
 * images (searched recursively). The loader turns them into float batches in [-1, 1] in the order of a
 * per-epoch permutation that is a pure function of (seed, epoch), so its whole state is (epoch, pos).
 * Functions that can fail return 0 on success and -1 after df_error (read df_errmsg()).
 */
#ifndef DF_DATA_DATASET_H
#define DF_DATA_DATASET_H

#include <stddef.h>
#include <stdint.h>


/* Where the named datasets live by default (Debian's dataset-fashion-mnist package for Fashion-MNIST). */
#define DF_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"
#define DF_MNIST_DIR "/usr/share/datasets/mnist"

typedef struct {
    size_t n, c, h, w;
    uint8_t *pixels;  /* n * c * h * w bytes, NCHW planar, df_malloc'd */
    char source[512]; /* what was loaded: the preset name or the path */
    size_t skipped;   /* image folders: files that could not be decoded and were left out */
    uint8_t *labels;  /* class labels (n bytes) where the source has them (the named IDX datasets), else NULL */
} df_dataset;

/* ---- loading ---- */

/* Loads the dataset named by `spec` into *d (zeroed first; on failure left zeroed, and the message says
 * what was looked for and where):
 *   "fashion-mnist", "fashion-mnist-test"  train / t10k images from data_dir, else DF_FASHION_MNIST_DIR;
 *   "mnist", "mnist-test"                  likewise from data_dir, else DF_MNIST_DIR;
 *                                          (file names train-images-idx3-ubyte[.gz], also
 *                                          train-images.idx3-ubyte[.gz]; t10k-... for the test sets)
 *   a path to an IDX image file (magic 0x00000803, gzip or raw), a .npy file ((N,H,W), (N,H,W,C) or
 *   (N,C,H,W) with C 1 or 3 (or 4, alpha dropped) of uint8 0..255 or floats in [-1, 1]), a CIFAR-10 binary
 *   batch file or a folder holding data_batch_1..5.bin (or cifar-10-batches-bin/), a folder holding IDX
 *   files by their usual names, or else a folder of .png/.jpg/.jpeg images (see df_dataset_load_folder).
 * data_dir is used only by the named datasets. resolution > 0 resizes (centre crop, df_image_resize_crop)
 * to resolution x resolution when the data differs; 0 keeps the data's own size (an image folder needs it).
 * channels 1 or 3 converts to that many channels; 0 keeps the data's own (3 for image folders). An image
 * folder with undecodable files loads the rest, sets d->skipped and prints one warning line to stderr. */
int df_dataset_load(df_dataset *d, const char *spec, const char *data_dir, int resolution, int channels);

/* Releases the pixels and zeroes *d (a zeroed dataset is fine). */
void df_dataset_free(df_dataset *d);

/* 0 if the dataset's images are model_resolution x model_resolution x model_channels; else a df_error that
 * names both shapes and the flags that change them. */
int df_dataset_check_model(const df_dataset *d, int model_channels, int model_resolution);

/* ---- the formats (used by df_dataset_load; each loads at the data's own size and sets d->source) ---- */

/* An IDX file of unsigned bytes with 3 dimensions (N, rows, cols), gzip-compressed or raw. */
int df_dataset_load_idx(df_dataset *d, const char *path);
/* An IDX labels file (magic 00 00 08 01: N unsigned bytes), gzip-compressed or raw, into d->labels; its count
 * must equal d->n. */
int df_dataset_load_idx_labels(df_dataset *d, const char *path);
/* A CIFAR-10 binary batch (records of 1 label byte + 3072 bytes of 32x32 RGB planar), or a folder holding
 * data_batch_1.bin .. data_batch_5.bin (directly or in cifar-10-batches-bin/), read in that order. */
int df_dataset_load_cifar(df_dataset *d, const char *path);
/* A .npy array, as described for df_dataset_load; floats map to round((x + 1) * 127.5). */
int df_dataset_load_npy(df_dataset *d, const char *path);
/* Every .png/.jpg/.jpeg (any case) under `dir`, recursively, in byte order of their paths; hidden files and
 * folders (a name starting with '.') and symbolic links to folders are not followed. Each image is decoded
 * (df_image_read), resized and centre-cropped to resolution (> 0) and converted to channels (0 means 3). */
int df_dataset_load_folder(df_dataset *d, const char *dir, int resolution, int channels);
/* Resizes / converts a loaded dataset in place to resolution x resolution (0: keep) and channels (0: keep). */
void df_dataset_conform(df_dataset *d, int resolution, int channels);

/* ---- the batch loader ---- */

/* Epoch e visits the images in the order of a permutation built from (seed, e) alone: Fisher-Yates, for
 * i = n-1 down to 1 swapping i with j = floor(u * (i + 1)), u = df_rng_u64(seed,
 * df_stream(DF_STREAM_SHUFFLE, e, 0), i) / 2^64. With flip on, the image at position p of epoch e is
 * mirrored left-right when df_rng_uniform1(seed, df_stream(DF_STREAM_FLIP, e, 0), p) < 0.5. The state is
 * (epoch, pos): the next image is position pos of epoch `epoch` (pos < n always). Epochs above 2^24 - 1
 * reuse the streams of epoch mod 2^24 (df_stream keeps 24 bits). */
typedef struct {
    const df_dataset *d; /* borrowed; must outlive the loader */
    uint64_t seed;
    int flip;
    uint64_t epoch, pos;
    uint32_t *perm; /* the permutation of epoch `epoch` */
} df_loader;

/* Starts at (epoch 0, pos 0). The dataset must hold at least one and fewer than 2^32 images. */
void df_loader_init(df_loader *l, const df_dataset *d, uint64_t seed, int flip);
/* Moves to (epoch, pos) (pos >= n carries into the following epochs), for an exact resume. */
void df_loader_seek(df_loader *l, uint64_t epoch, uint64_t pos);
/* Fills x (B, c, h, w) with the next B images as floats pixel / 127.5 - 1, crossing into the next epoch's
 * permutation when this one runs out, and advances the state by B. */
void df_loader_next(df_loader *l, float *x, size_t B);
/* The same, and y (B) receives the images' labels (the dataset must have labels). */
void df_loader_next_labeled(df_loader *l, float *x, int *y, size_t B);
void df_loader_free(df_loader *l);

#endif
