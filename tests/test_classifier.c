/* test_classifier.c: the FID feature network and FID over it: cross-entropy's gradient, the network's
 * gradient through the graph, folder round trip, labels, the shipped network's accuracy, FID bounds on real
 * data, the statistics cache, and the fid / sample --fid commands. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/base.h"
#include "data/dataset.h"
#include "eval/classifier.h"
#include "eval/fid_features.h"
#include "io/file.h"
#include "io/npy.h"
#include "kernels/kernels.h"
#include "test.h"

/* Bounds recorded from the shipped network (models/fid-fashion-mnist); see fid_bounds_fashion_mnist. */
#define FID_TEST_MAX 2.5   /* measured 1.752 */
#define FID_BLUR_MIN 40.0   /* measured 88.4 on 5000 images */
#define FID_NOISE_MIN 500.0 /* measured 1334 on 5000 images */

/* ---- cross-entropy ---- */

typedef struct {
    float *z;
    const int *y;
    size_t N, K;
} xent_case;

static double xent_loss(void *ctx) {
    xent_case *c = ctx;
    return xent_forward(NULL, c->z, c->y, c->N, c->K);
}

TEST(xent_forward_backward) {
    enum { N = 5, K = 7 };
    float z[N * K], probs[N * K], dz[N * K] = {0};
    int y[N] = {0, 6, 3, 3, 1};
    df_test_fill(z, N * K, 11, -3, 3);
    /* the loss by hand, in double: log-sum-exp minus the label's logit */
    double want = 0;
    for (int n = 0; n < N; n++) {
        double s = 0;
        for (int k = 0; k < K; k++) s += exp(z[n * K + k]);
        want += log(s) - z[n * K + y[n]];
    }
    want /= N;
    float got = xent_forward(probs, z, y, N, K);
    EXPECT(fabs(got - want) < 1e-6 * fabs(want), "xent %.9g, by hand %.9g", got, want);
    for (int n = 0; n < N; n++) {
        double s = 0;
        for (int k = 0; k < K; k++) s += probs[n * K + k];
        EXPECT(fabs(s - 1) < 1e-6, "softmax row %d sums to %.9g", n, s);
    }
    /* large logits stay finite (the max is subtracted) */
    float big[2] = {1000, -1000};
    int lab = 1;
    EXPECT(fabsf(xent_forward(NULL, big, &lab, 1, 2) - 2000) < 1e-3, "xent of large logits");
    xent_backward(dz, probs, y, N, K, 1.0f);
    xent_case c = {z, y, N, K};
    EXPECT_GRAD("xent dlogits", z, dz, N * K, xent_loss, &c, 1e-2, 1e-3, 1e-5, N * K);
}

/* ---- the network ---- */

static df_clf_config small_config(void) {
    df_clf_config c = df_clf_default_config(1, 8, 3);
    c.c1 = 3, c.c2 = 4, c.c3 = 5, c.hidden = 6;
    return c;
}

typedef struct {
    df_classifier *m;
    float *x;
    int *y;
    size_t B;
} net_case;

/* the training graph's loss at the current weights */
static double net_loss(void *ctx) {
    net_case *c = ctx;
    df_classifier *m = c->m;
    df_graph *g = &m->graph;
    memcpy(g->t[m->x_in].data, c->x, g->t[m->x_in].numel * sizeof(float));
    df_graph_forward(g);
    return xent_forward(NULL, g->t[m->logits].data, c->y, c->B, (size_t)m->cfg.num_classes);
}

TEST(classifier_gradient_matches_finite_differences) {
    df_clf_config cfg = small_config();
    df_classifier *m = df_classifier_create(&cfg, 3);
    enum { B = 4 };
    float x[B * 64];
    int y[B] = {0, 2, 1, 2};
    df_test_fill(x, B * 64, 5, -1, 1);
    df_params_alloc_grad(&m->params);
    df_classifier_graph(m, B, 1);
    net_case c = {m, x, y, B};
    net_loss(&c);
    float probs[B * 3], dz[B * 3] = {0};
    xent_forward(probs, m->graph.t[m->logits].data, y, B, 3);
    xent_backward(dz, probs, y, B, 3, 1.0f);
    df_params_zero_grad(&m->params);
    df_graph_backward(&m->graph, dz);
    EXPECT_GRAD("classifier parameters", m->params.data, m->params.grad, m->params.total, net_loss, &c, 1e-3, 2e-2,
                3e-4, 300);
    df_classifier_free(m);
}

TEST(classifier_folder_round_trip_and_errors) {
    df_clf_config cfg = small_config();
    snprintf(cfg.trained_on, sizeof cfg.trained_on, "unit-test");
    cfg.test_accuracy = 0.5;
    df_classifier *m = df_classifier_create(&cfg, 9);
    char dir[600], path[700];
    snprintf(dir, sizeof dir, "%s/clf", df_test_tmpdir());
    EXPECT(df_classifier_save(m, dir) == 0, "save: %s", df_errmsg());
    df_classifier *r = df_classifier_load(dir);
    EXPECT(r != NULL, "load: %s", df_errmsg());
    if (r) {
        EXPECT(r->cfg.hidden == 6 && r->cfg.c3 == 5 && r->cfg.resolution == 8 && r->cfg.test_accuracy == 0.5 &&
                   !strcmp(r->cfg.trained_on, "unit-test"), "config fields after the round trip");
        float x[2 * 64], f1[2 * 6], f2[2 * 6];
        df_test_fill(x, 2 * 64, 1, -1, 1);
        df_classifier_features(m, f1, x, 2);
        df_classifier_features(r, f2, x, 2);
        EXPECT(memcmp(f1, f2, sizeof f1) == 0, "features differ after save and load");
        df_classifier_free(r);
    }
    /* a config that is not ours, and weights of another shape */
    snprintf(path, sizeof path, "%s/config.json", dir);
    df_test_write_text(path, "{\"architecture\": \"resnet\"}");
    EXPECT(df_classifier_load(dir) == NULL && strstr(df_errmsg(), "diffuse-fid-cnn"), "%s", df_errmsg());
    df_test_write_text(path, "{\"architecture\": \"diffuse-fid-cnn\", \"in_channels\": 1, \"resolution\": 8, "
                             "\"num_classes\": 3, \"c1\": 3, \"c2\": 4, \"c3\": 5, \"hidden\": 7}");
    EXPECT(df_classifier_load(dir) == NULL && strstr(df_errmsg(), "fc1"), "%s", df_errmsg());
    df_test_write_text(path, "{\"architecture\": \"diffuse-fid-cnn\", \"in_channels\": 1, \"resolution\": 10, "
                             "\"num_classes\": 3, \"c1\": 3, \"c2\": 4, \"c3\": 5, \"hidden\": 6}");
    EXPECT(df_classifier_load(dir) == NULL && strstr(df_errmsg(), "multiple of 4"), "%s", df_errmsg());
    df_classifier_free(m);
}

TEST(dataset_labels) {
    df_dataset d = {0};
    EXPECT(df_dataset_load(&d, "fashion-mnist-test", NULL, 0, 0) == 0, "%s", df_errmsg());
    EXPECT(d.n == 10000 && d.labels, "fashion-mnist-test: %zu images, labels %p", d.n, (void *)d.labels);
    size_t count[10] = {0}, bad = 0;
    for (size_t i = 0; d.labels && i < d.n; i++) d.labels[i] < 10 ? count[d.labels[i]]++ : bad++;
    EXPECT(bad == 0, "%zu labels out of 0..9", bad);
    for (int k = 0; k < 10; k++) EXPECT(count[k] == 1000, "class %d has %zu test images (1000 expected)", k, count[k]);
    /* the labeled loader hands out the labels of the images it hands out */
    df_loader l;
    df_loader_init(&l, &d, 4, 0);
    float x[3 * 784];
    int y[3];
    df_loader_next_labeled(&l, x, y, 3);
    for (int b = 0; b < 3; b++) {
        uint32_t idx = l.perm[b];
        EXPECT(y[b] == d.labels[idx] && fabsf(x[b * 784 + 400] - (d.pixels[idx * 784 + 400] / 127.5f - 1)) < 1e-6,
               "batch item %d is not image %u with its label", b, idx);
    }
    df_loader_free(&l);
    df_dataset_free(&d);
    /* a labels file that does not belong to the images */
    char dir[600], path[700];
    snprintf(dir, sizeof dir, "%s/idx", df_test_tmpdir());
    df_mkdirs(dir);
    unsigned char img[16 + 2 * 4] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2};
    unsigned char lab[8 + 3] = {0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3};
    snprintf(path, sizeof path, "%s/t10k-images-idx3-ubyte", dir);
    df_write_file_atomic(path, img, sizeof img);
    snprintf(path, sizeof path, "%s/t10k-labels-idx1-ubyte", dir);
    df_write_file_atomic(path, lab, sizeof lab);
    EXPECT(df_dataset_load(&d, "fashion-mnist-test", dir, 0, 0) != 0 && strstr(df_errmsg(), "3 labels for 2 images"),
           "%s", df_errmsg());
    lab[7] = 2;
    df_write_file_atomic(path, lab, 9); /* promises 2, holds 1 */
    EXPECT(df_dataset_load(&d, "fashion-mnist-test", dir, 0, 0) != 0 && strstr(df_errmsg(), "truncated"), "%s",
           df_errmsg());
    df_dataset_free(&d);
}

/* ---- the shipped network and FID over it ---- */

static df_classifier *shipped(char *dir, size_t cap) {
    snprintf(dir, cap, "%s/models/fid-fashion-mnist", df_test_root());
    df_classifier *m = df_classifier_load(dir);
    EXPECT(m != NULL, "the shipped FID network: %s", df_errmsg());
    return m;
}

TEST(classifier_shipped_accuracy_fashion_mnist) {
    char dir[4096];
    df_classifier *m = shipped(dir, sizeof dir);
    if (!m) return;
    df_dataset d = {0};
    EXPECT(df_dataset_load(&d, "fashion-mnist-test", NULL, 0, 0) == 0, "%s", df_errmsg());
    double acc = df_classifier_accuracy(m, &d);
    printf("    shipped classifier: accuracy %.2f%% on fashion-mnist-test (its config says %.2f%%)\n", 100 * acc,
           100 * m->cfg.test_accuracy);
    EXPECT(acc >= 0.91, "accuracy %.4f below 0.91", acc);
    EXPECT(fabs(acc - m->cfg.test_accuracy) < 1e-9, "config.json's test_accuracy %.6f is not what it measures (%.6f)",
           m->cfg.test_accuracy, acc);
    df_dataset_free(&d);
    df_classifier_free(m);
}

/* FID against the training set's cached statistics of: the test set (small), the test set blurred, and
 * uniform noise (large). The bounds were recorded from the shipped network (see the printed values). */
TEST(fid_bounds_fashion_mnist) {
    char dir[4096], what[4600];
    df_classifier *m = shipped(dir, sizeof dir);
    if (!m) return;
    df_fid_stats train = {0}, st = {0};
    EXPECT(df_fid_stats_source(m, dir, "fashion-mnist", NULL, &train, what, sizeof what) == 0, "%s", df_errmsg());
    EXPECT(strstr(what, "cached") != NULL, "the training set's statistics should ship with the network: %s", what);
    df_dataset d = {0};
    EXPECT(df_dataset_load(&d, "fashion-mnist-test", NULL, 0, 0) == 0, "%s", df_errmsg());
    double fid_test = -1, fid_blur = -1, fid_noise = -1;
    if (df_fid_stats_dataset(m, &d, NULL, &st) == 0) df_fid_distance(&st, &train, &fid_test);
    df_fid_stats_free(&st);
    /* 3x3 box blur of the first 5000 test images */
    size_t n = 5000;
    float *x = df_malloc(n * 784 * sizeof(float));
    for (size_t i = 0; i < n; i++)
        for (int r = 0; r < 28; r++)
            for (int c = 0; c < 28; c++) {
                int s = 0, k = 0;
                for (int dr = -1; dr <= 1; dr++)
                    for (int dc = -1; dc <= 1; dc++)
                        if (r + dr >= 0 && r + dr < 28 && c + dc >= 0 && c + dc < 28)
                            s += d.pixels[i * 784 + (size_t)(r + dr) * 28 + (size_t)(c + dc)], k++;
                x[i * 784 + (size_t)r * 28 + (size_t)c] = (float)s / (float)k / 127.5f - 1;
            }
    if (df_fid_stats_images(m, x, n, 1, 28, 28, NULL, &st) == 0) df_fid_distance(&st, &train, &fid_blur);
    df_fid_stats_free(&st);
    df_test_fill(x, n * 784, 77, -1, 1);
    if (df_fid_stats_images(m, x, n, 1, 28, 28, NULL, &st) == 0) df_fid_distance(&st, &train, &fid_noise);
    df_fid_stats_free(&st);
    printf("    FID against fashion-mnist (train): test set %.3f, test set 3x3-blurred %.2f, uniform noise %.1f\n",
           fid_test, fid_blur, fid_noise);
    EXPECT(fid_test >= 0 && fid_test < FID_TEST_MAX, "test set: FID %.3f (recorded bound %g)", fid_test, FID_TEST_MAX);
    EXPECT(fid_blur > FID_BLUR_MIN && fid_blur > 10 * fid_test, "blurred: FID %.3f (recorded bound %g)", fid_blur,
           FID_BLUR_MIN);
    EXPECT(fid_noise > FID_NOISE_MIN, "noise: FID %.3f (recorded bound %g)", fid_noise, FID_NOISE_MIN);
    df_free(x);
    df_dataset_free(&d);
    df_fid_stats_free(&train);
    df_classifier_free(m);
}

/* A named dataset's statistics are computed once, cached under the network's fingerprint, then read back. */
TEST(fid_stats_cache) {
    df_clf_config cfg = df_clf_default_config(1, 28, 10);
    cfg.c1 = cfg.c2 = cfg.c3 = 2, cfg.hidden = 4;
    df_classifier *m = df_classifier_create(&cfg, 1);
    char dir[600], what[4600], stats[700];
    snprintf(dir, sizeof dir, "%s/cachenet", df_test_tmpdir());
    EXPECT(df_classifier_save(m, dir) == 0, "%s", df_errmsg());
    df_fid_stats a = {0}, b = {0};
    EXPECT(df_fid_stats_source(m, dir, "fashion-mnist-test", NULL, &a, what, sizeof what) == 0, "%s", df_errmsg());
    EXPECT(strstr(what, "cached in") != NULL, "first use should write the cache: %s", what);
    snprintf(stats, sizeof stats, "%s/stats", dir);
    struct stat sb;
    EXPECT(stat(stats, &sb) == 0, "no %s", stats);
    EXPECT(df_fid_stats_source(m, dir, "fashion-mnist-test", NULL, &b, what, sizeof what) == 0, "%s", df_errmsg());
    EXPECT(strstr(what, "cached in") && a.n == 10000 && b.n == 10000, "second use should read the cache: %s", what);
    EXPECT(a.dim == b.dim && memcmp(a.sigma, b.sigma, a.dim * a.dim * sizeof(double)) == 0, "cached sigma differs");
    df_fid_stats_free(&b);
    /* other weights: another fingerprint, so the cache is not used */
    m->params.data[0] += 0.5f;
    EXPECT(df_fid_stats_source(m, dir, "fashion-mnist-test", NULL, &b, what, sizeof what) == 0, "%s", df_errmsg());
    EXPECT(memcmp(a.sigma, b.sigma, a.dim * a.dim * sizeof(double)) != 0, "changed weights read the old cache");
    df_fid_stats_free(&a), df_fid_stats_free(&b);
    df_classifier_free(m);
}

/* ---- the commands ---- */

/* n images of pseudo-random pixels below `top` */
static void write_images(const char *name, size_t n, size_t h, size_t c, unsigned seed, unsigned top) {
    size_t shape[4] = {n, h, h, c}, total = n * h * h * c;
    uint8_t *px = df_malloc(total);
    for (size_t i = 0; i < total; i++) px[i] = (uint8_t)((((i + seed * 7919u) * 2654435761u) >> 13) % top);
    char path[700];
    snprintf(path, sizeof path, "%s/%s", df_test_tmpdir(), name);
    EXPECT(df_npy_write_u8(path, px, c == 1 ? 3 : 4, shape) == 0, "%s", df_errmsg());
    df_free(px);
}

TEST(cli_fid_and_sample_fid) {
    df_clf_config cfg = df_clf_default_config(1, 28, 10);
    cfg.c1 = cfg.c2 = cfg.c3 = 4, cfg.hidden = 16;
    df_classifier *m = df_classifier_create(&cfg, 2);
    char dir[600];
    snprintf(dir, sizeof dir, "%s/net", df_test_tmpdir());
    EXPECT(df_classifier_save(m, dir) == 0, "%s", df_errmsg());
    df_classifier_free(m);
    write_images("a.npy", 40, 28, 1, 1, 256);
    write_images("b.npy", 30, 28, 1, 2, 100);
    write_images("rgb.npy", 10, 32, 3, 3, 256);
    static char out[20000];
    int st = df_test_diffuse(out, sizeof out, "fid a.npy a.npy --features net");
    double fid = -1;
    const char *at = strstr(out, "FID ");
    if (at) fid = strtod(at + 4, NULL);
    EXPECT(st == 0 && at && fabs(fid) < 1e-6, "FID of a set with itself: %s", out);
    st = df_test_diffuse(out, sizeof out, "fid a.npy --save-stats a.npz --features net");
    EXPECT(st == 0, "%s", out);
    st = df_test_diffuse(out, sizeof out, "fid a.npz b.npy --features net");
    at = strstr(out, "FID ");
    double fid_ab = at ? strtod(at + 4, NULL) : -1;
    st |= df_test_diffuse(out, sizeof out, "fid a.npy b.npy --features net");
    at = strstr(out, "FID ");
    EXPECT(st == 0 && at && fid_ab > 0 && fabs(strtod(at + 4, NULL) - fid_ab) < 1e-3,
           "FID from saved statistics %.6f vs from images: %s", fid_ab, out);
    st = df_test_diffuse(out, sizeof out, "fid rgb.npy a.npy --features net");
    EXPECT(st != 0 && strstr(out, "32x32x3") && strstr(out, "28x28x1"), "wrong shape: %s", out);
    st = df_test_diffuse(out, sizeof out, "fid missing.npy a.npy --features net");
    EXPECT(st != 0 && strstr(out, "missing.npy"), "missing source: %s", out);
    st = df_test_diffuse(out, sizeof out, "fid a.npy --features net");
    EXPECT(st != 0 && strstr(out, "two sources"), "one source: %s", out);
    st = df_test_diffuse(out, sizeof out, "fid a.npy b.npy --features nowhere");
    EXPECT(st != 0 && strstr(out, "nowhere"), "missing network: %s", out);

    /* sample --fid on a tiny 28x28 model */
    char cfgpath[700];
    snprintf(cfgpath, sizeof cfgpath, "%s/unet.json", df_test_tmpdir());
    df_test_write_text(cfgpath, "{\"sample_size\": 28, \"in_channels\": 1, \"out_channels\": 1, "
                                "\"block_out_channels\": [8, 8], \"layers_per_block\": 1, \"norm_num_groups\": 4, "
                                "\"down_block_types\": [\"DownBlock2D\", \"DownBlock2D\"], "
                                "\"up_block_types\": [\"UpBlock2D\", \"UpBlock2D\"]}");
    st = df_test_diffuse(out, sizeof out, "train --out run28 --config unet.json --data a.npy --steps 1 --batch 4 "
                              "--sample-every 0 --threads 1");
    EXPECT(st == 0, "training the 28x28 model: %s", out);
    st = df_test_diffuse(out, sizeof out, "sample --model run28 --steps 3 --n 12 --batch 5 --fid b.npy --fid-features net "
                              "--threads 1");
    at = strstr(out, "FID ");
    EXPECT(st == 0 && at && strtod(at + 4, NULL) > 0 && strstr(out, "12 samples against b.npy"), "sample --fid: %s",
           out);
    st = df_test_diffuse(out, sizeof out, "sample --model run28 --steps 3 --n 4 --fid rgb.npy --fid-features net");
    EXPECT(st != 0 && strstr(out, "32x32x3"), "sample --fid with a wrong reference: %s", out);
}

/* The training loop end to end on a slice of Fashion-MNIST: a narrow network learns well above chance in two
 * epochs (measured 59.6% from 11.5%; chance is 10%), and refuses a dataset without labels. */
TEST(classifier_training_learns) {
    df_dataset train = {0}, test = {0};
    EXPECT(df_dataset_load(&train, "fashion-mnist", NULL, 0, 0) == 0, "%s", df_errmsg());
    EXPECT(df_dataset_load(&test, "fashion-mnist-test", NULL, 0, 0) == 0, "%s", df_errmsg());
    if (!train.labels || !test.labels) return;
    train.n = 2048, test.n = 1000; /* the first images (the loader and accuracy read only n) */
    df_clf_config cfg = df_clf_default_config(1, 28, 10);
    cfg.c1 = 8, cfg.c2 = 16, cfg.c3 = 16, cfg.hidden = 32;
    df_classifier *m = df_classifier_create(&cfg, 4);
    double before = df_classifier_accuracy(m, &test);
    df_clf_train_opts o = {.epochs = 2, .batch = 64, .lr = 3e-3, .weight_decay = 0, .seed = 1, .flip = 1};
    EXPECT(df_classifier_train(m, &train, &test, "fashion-mnist (2048 images)", &o) == 0, "%s", df_errmsg());
    printf("    accuracy on 1000 test images: %.1f%% before, %.1f%% after 2 epochs of 2048 images\n", 100 * before,
           100 * m->cfg.test_accuracy);
    EXPECT(m->cfg.test_accuracy > 0.5 && m->cfg.test_accuracy > before + 0.3, "accuracy %.3f (before %.3f)",
           m->cfg.test_accuracy, before);
    df_dataset unlabeled = train;
    unlabeled.labels = NULL;
    EXPECT(df_classifier_train(m, &unlabeled, NULL, NULL, &o) != 0 && strstr(df_errmsg(), "no labels"), "%s",
           df_errmsg());
    train.n = 60000, test.n = 10000;
    df_classifier_free(m);
    df_dataset_free(&train), df_dataset_free(&test);
}
