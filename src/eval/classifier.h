/* classifier.h: the small CNN whose penultimate features FID is computed over for 28x28 grey images
 * (Fashion-MNIST, MNIST), trained by diffuse itself.
 *
 * Network (PyTorch names; every conv 3x3 with padding 1):
 *   conv1  Conv2d(C, c1)            ReLU     R x R
 *   conv2  Conv2d(c1, c2, stride 2) ReLU     R/2
 *   conv3  Conv2d(c2, c2)           ReLU     R/2
 *   conv4  Conv2d(c2, c3, stride 2) ReLU     R/4
 *   fc1    Linear(c3 (R/4)^2, hidden) ReLU   -> the features (hidden of them)
 *   fc2    Linear(hidden, classes)           -> logits
 * A model folder holds config.json (these sizes, and what it was trained on and scored) and
 * model.safetensors. Input images are floats in [-1, 1], NCHW. */
#ifndef DF_EVAL_CLASSIFIER_H
#define DF_EVAL_CLASSIFIER_H

#include <stddef.h>
#include <stdint.h>

#include "data/dataset.h"
#include "nn/graph.h"
#include "nn/params.h"

typedef struct {
    int in_channels, resolution, num_classes;
    int c1, c2, c3, hidden;
    char trained_on[512];   /* dataset name, "" if not trained */
    double test_accuracy;   /* measured after training, -1 if unknown */
} df_clf_config;

typedef struct df_classifier_s {
    df_clf_config cfg;
    df_params params;
    df_graph graph; /* for the last (batch, train, features-only) asked for */
    int have_graph, graph_features;
    int x_in, feat, logits;
} df_classifier;

/* The default configuration for R x R images of C channels and K classes (c 32, 64, 64; hidden 256). */
df_clf_config df_clf_default_config(int channels, int resolution, int classes);

/* Creates a model with PyTorch's default initialisation from seed; NULL with df_error on a bad config
 * (resolution not a multiple of 4, non-positive sizes). Free with df_classifier_free. */
df_classifier *df_classifier_create(const df_clf_config *c, uint64_t seed);
void df_classifier_free(df_classifier *m);

/* Loads DIR/config.json and DIR/model.safetensors; NULL with df_error naming what is wrong. */
df_classifier *df_classifier_load(const char *dir);
/* Writes DIR/config.json and DIR/model.safetensors (atomically each; DIR is created). */
int df_classifier_save(const df_classifier *m, const char *dir);

/* The whole network's graph for batch B (train: with backward); m->x_in is its input, m->logits its
 * output. Rebuilt only when B or train change; owned by m. */
df_graph *df_classifier_graph(df_classifier *m, size_t B, int train);
/* feat (B, hidden) = the ReLU'd fc1 activations of images x (B, C, R, R). Inference; any batch. */
void df_classifier_features(df_classifier *m, float *feat, const float *x, size_t B);
/* Predicted classes of the dataset's images (n of them, in order), batch by batch; pred (n). */
void df_classifier_predict(df_classifier *m, int *pred, const df_dataset *d, size_t batch);
/* Fraction of the dataset's images (it must have labels) classified correctly. */
double df_classifier_accuracy(df_classifier *m, const df_dataset *d);

/* ---- training ---- */

typedef struct {
    int epochs;
    size_t batch;
    double lr, weight_decay; /* AdamW; the learning rate decays by a cosine to 0 over the run */
    uint64_t seed;
    int flip; /* random horizontal flips */
} df_clf_train_opts;

/* Trains m on `train` (with labels) by softmax cross-entropy with AdamW, printing a progress bar and, after
 * every epoch, the mean loss and, if `test` is not NULL, the test accuracy. Sets m->cfg.trained_on to name
 * and m->cfg.test_accuracy. A non-finite loss stops it with an error. */
int df_classifier_train(df_classifier *m, const df_dataset *train, const df_dataset *test, const char *name,
                        const df_clf_train_opts *o);

#endif
