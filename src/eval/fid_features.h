/* fid_features.h: FID statistics of image sources through the classifier's features (classifier.h).
 *
 * A source is a statistics file (.npz, pytorch-fid's keys), or anything df_dataset_load takes: a named
 * dataset (fashion-mnist, mnist, their -test splits), a .npy array, a folder of images, an IDX file. The
 * statistics of a NAMED dataset are cached in the classifier's folder as stats/NAME-HASH.npz, HASH a
 * fingerprint of the classifier's weights (so a retrained network never reads stale statistics); the
 * repository ships models/fid-fashion-mnist with the cache of fashion-mnist (the training set, the DDPM
 * paper's reference) filled. Functions that can fail return 0 on success and -1 after df_error. */
#ifndef DF_EVAL_FID_FEATURES_H
#define DF_EVAL_FID_FEATURES_H

#include <stddef.h>

#include "data/dataset.h"
#include "eval/classifier.h"
#include "eval/fid.h"

/* The classifier folder `diffuse fid` uses when none is given: $DIFFUSE_FID_FEATURES, else
 * models/fid-fashion-mnist beside the binary (BIN/../models/...), else in the working directory. Writes the
 * path into buf; -1 with df_error (saying how to make one) if none exists. */
int df_fid_default_features(char *buf, size_t cap);

/* Statistics of n images x (n, c, h, w) in [-1, 1] into *out (initialised here). label names the
 * progress bar (NULL: no bar). The images must match the classifier's input shape (else an error). */
int df_fid_stats_images(df_classifier *net, const float *x, size_t n, size_t c, size_t h, size_t w,
                        const char *label, df_fid_stats *out);
/* The same for a loaded dataset (uint8 pixels), batch by batch. */
int df_fid_stats_dataset(df_classifier *net, const df_dataset *d, const char *label, df_fid_stats *out);
/* The same for a source spec (see above). net_dir is the classifier's folder (for the cache; NULL: no
 * cache). what (cap bytes) receives a description such as "fashion-mnist (60000 images, cached)". */
int df_fid_stats_source(df_classifier *net, const char *net_dir, const char *spec, const char *data_dir,
                        df_fid_stats *out, char *what, size_t cap);

#endif
