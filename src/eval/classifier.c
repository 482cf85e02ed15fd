/* classifier.c: the FID feature network (see classifier.h): builder, folder I/O, features, accuracy and its
 * training loop. */
#include "eval/classifier.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "base/progress.h"
#include "io/file.h"
#include "kernels/kernels.h"
#include "nn/optim.h"

df_clf_config df_clf_default_config(int channels, int resolution, int classes) {
    df_clf_config c = {.in_channels = channels, .resolution = resolution, .num_classes = classes,
                       .c1 = 32, .c2 = 64, .c3 = 64, .hidden = 256, .test_accuracy = -1};
    return c;
}

/* ---- the network ---- */

static int conv(df_classifier *m, df_graph *g, int x, const char *name, int cin, int cout, int stride) {
    int w = df_params_addf(&m->params, 4, cout, cin, 3, 3, "%s.weight", name);
    int b = df_params_addf(&m->params, 1, cout, 0, 0, 0, "%s.bias", name);
    return g ? g_relu(g, g_conv(g, x, w, b, (size_t)stride, 1, 1, 1, 1)) : -1;
}

static int linear(df_classifier *m, df_graph *g, int x, const char *name, int cin, int cout) {
    int w = df_params_addf(&m->params, 2, cout, cin, 0, 0, "%s.weight", name);
    int b = df_params_addf(&m->params, 1, cout, 0, 0, 0, "%s.bias", name);
    return g ? g_linear(g, x, w, b) : -1;
}

/* Registers the parameters (g == NULL) or records the graph; features_only stops after fc1's ReLU. */
static void build(df_classifier *m, df_graph *g, size_t B, int features_only) {
    const df_clf_config *c = &m->cfg;
    int R = c->resolution;
    int x = g ? g_input(g, B, (size_t)c->in_channels, (size_t)R, (size_t)R) : -1;
    m->x_in = x;
    x = conv(m, g, x, "conv1", c->in_channels, c->c1, 1);
    x = conv(m, g, x, "conv2", c->c1, c->c2, 2);
    x = conv(m, g, x, "conv3", c->c2, c->c2, 1);
    x = conv(m, g, x, "conv4", c->c2, c->c3, 2);
    x = linear(m, g, x, "fc1", c->c3 * (R / 4) * (R / 4), c->hidden);
    m->feat = x = g ? g_relu(g, x) : -1;
    if (!(g && features_only)) x = linear(m, g, x, "fc2", c->hidden, c->num_classes);
    m->logits = features_only ? -1 : x;
    if (g) g->output = x;
}

static df_graph *graph_for(df_classifier *m, size_t B, int train, int features_only) {
    if (m->have_graph && m->graph.batch == B && m->graph.train == train && m->graph_features == features_only)
        return &m->graph;
    if (m->have_graph) df_graph_free(&m->graph);
    df_graph_init(&m->graph, &m->params, B, train);
    build(m, &m->graph, B, features_only);
    df_graph_plan(&m->graph);
    m->have_graph = 1, m->graph_features = features_only;
    return &m->graph;
}

df_graph *df_classifier_graph(df_classifier *m, size_t B, int train) { return graph_for(m, B, train, 0); }

static int check_config(const df_clf_config *c) {
    if (c->in_channels < 1 || c->num_classes < 2 || c->c1 < 1 || c->c2 < 1 || c->c3 < 1 || c->hidden < 1)
        return df_error("classifier config: sizes must be positive (channels %d, classes %d, widths %d %d %d, "
                        "hidden %d)", c->in_channels, c->num_classes, c->c1, c->c2, c->c3, c->hidden);
    if (c->resolution < 4 || c->resolution % 4)
        return df_error("classifier config: resolution %d is not a positive multiple of 4", c->resolution);
    return 0;
}

df_classifier *df_classifier_create(const df_clf_config *c, uint64_t seed) {
    if (check_config(c)) return NULL;
    df_classifier *m = df_calloc(1, sizeof *m);
    m->cfg = *c;
    build(m, NULL, 0, 0);
    df_params_alloc(&m->params);
    df_params_init_torch(&m->params, seed);
    return m;
}

void df_classifier_free(df_classifier *m) {
    if (!m) return;
    if (m->have_graph) df_graph_free(&m->graph);
    df_params_free(&m->params);
    df_free(m);
}

/* ---- the folder ---- */

static const char *const INT_KEYS[] = {"in_channels", "resolution", "num_classes", "c1", "c2", "c3", "hidden"};

static int *int_field(df_clf_config *c, size_t k) {
    int *f[] = {&c->in_channels, &c->resolution, &c->num_classes, &c->c1, &c->c2, &c->c3, &c->hidden};
    return f[k];
}

df_classifier *df_classifier_load(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    unsigned char *text;
    size_t len;
    if (df_read_file(path, &text, &len)) return NULL;
    cJSON *j = cJSON_ParseWithLength((const char *)text, len);
    df_free(text);
    if (!j) {
        df_error("%s: not valid JSON", path);
        return NULL;
    }
    df_clf_config c = df_clf_default_config(1, 28, 10);
    int rc = 0;
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(j, "architecture");
    if (!cJSON_IsString(arch) || strcmp(arch->valuestring, "diffuse-fid-cnn") != 0)
        rc = df_error("%s: \"architecture\" is not \"diffuse-fid-cnn\"; is this a classifier folder?", path);
    for (size_t k = 0; k < sizeof INT_KEYS / sizeof INT_KEYS[0] && rc == 0; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, INT_KEYS[k]);
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || fabs(v->valuedouble) > 1e6)
            rc = df_error("%s: \"%s\" must be an integer", path, INT_KEYS[k]);
        else
            *int_field(&c, k) = (int)v->valuedouble;
    }
    const cJSON *on = cJSON_GetObjectItemCaseSensitive(j, "trained_on");
    if (cJSON_IsString(on)) snprintf(c.trained_on, sizeof c.trained_on, "%s", on->valuestring);
    const cJSON *acc = cJSON_GetObjectItemCaseSensitive(j, "test_accuracy");
    if (cJSON_IsNumber(acc)) c.test_accuracy = acc->valuedouble;
    cJSON_Delete(j);
    if (rc || check_config(&c)) {
        df_error_wrap("%s", path);
        return NULL;
    }
    df_classifier *m = df_classifier_create(&c, 0);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (df_params_load(&m->params, path, NULL)) {
        df_classifier_free(m);
        return NULL;
    }
    return m;
}

int df_classifier_save(const df_classifier *m, const char *dir) {
    if (df_mkdirs(dir)) return -1;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "architecture", "diffuse-fid-cnn");
    for (size_t k = 0; k < sizeof INT_KEYS / sizeof INT_KEYS[0]; k++)
        cJSON_AddNumberToObject(j, INT_KEYS[k], *int_field((df_clf_config *)&m->cfg, k));
    cJSON_AddStringToObject(j, "trained_on", m->cfg.trained_on);
    if (m->cfg.test_accuracy >= 0) cJSON_AddNumberToObject(j, "test_accuracy", m->cfg.test_accuracy);
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    int rc = df_write_file_atomic(path, text, strlen(text));
    free(text);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    return rc ? rc : df_params_save(&m->params, path);
}

/* ---- inference ---- */

#define INFER_BATCH 256

void df_classifier_features(df_classifier *m, float *feat, const float *x, size_t B) {
    const df_clf_config *c = &m->cfg;
    size_t per = (size_t)c->in_channels * (size_t)c->resolution * (size_t)c->resolution;
    for (size_t i = 0; i < B; i += INFER_BATCH) {
        size_t b = B - i < INFER_BATCH ? B - i : INFER_BATCH;
        df_graph *g = graph_for(m, b, 0, 1);
        memcpy(g->t[m->x_in].data, x + i * per, b * per * sizeof(float));
        df_graph_forward(g);
        memcpy(feat + i * (size_t)c->hidden, g->t[m->feat].data, b * (size_t)c->hidden * sizeof(float));
    }
}

/* images [i, i + b) of d as floats in [-1, 1] */
static void to_float(float *x, const df_dataset *d, size_t i, size_t b) {
    size_t per = d->c * d->h * d->w;
    const uint8_t *p = d->pixels + i * per;
    for (size_t k = 0; k < b * per; k++) x[k] = (float)p[k] / 127.5f - 1.0f;
}

static size_t argmax(const float *z, size_t K) {
    size_t best = 0;
    for (size_t k = 1; k < K; k++)
        if (z[k] > z[best]) best = k;
    return best;
}

void df_classifier_predict(df_classifier *m, int *pred, const df_dataset *d, size_t batch) {
    size_t K = (size_t)m->cfg.num_classes;
    float *x = df_malloc(batch * d->c * d->h * d->w * sizeof(float));
    for (size_t i = 0; i < d->n; i += batch) {
        size_t b = d->n - i < batch ? d->n - i : batch;
        to_float(x, d, i, b);
        df_graph *g = graph_for(m, b, 0, 0);
        memcpy(g->t[m->x_in].data, x, g->t[m->x_in].numel * sizeof(float));
        df_graph_forward(g);
        for (size_t k = 0; k < b; k++) pred[i + k] = (int)argmax(g->t[m->logits].data + k * K, K);
    }
    df_free(x);
}

double df_classifier_accuracy(df_classifier *m, const df_dataset *d) {
    DF_CHECK(d->labels, "accuracy of a dataset without labels");
    int *pred = df_malloc(d->n * sizeof(int));
    df_classifier_predict(m, pred, d, INFER_BATCH);
    size_t right = 0;
    for (size_t i = 0; i < d->n; i++) right += pred[i] == d->labels[i];
    df_free(pred);
    return (double)right / (double)d->n;
}

/* ---- training ---- */

int df_classifier_train(df_classifier *m, const df_dataset *train, const df_dataset *test, const char *name,
                        const df_clf_train_opts *o) {
    const df_clf_config *c = &m->cfg;
    if (!train->labels) return df_error("%s has no labels; the classifier trains on a labelled dataset", train->source);
    if ((int)train->c != c->in_channels || (int)train->h != c->resolution || (int)train->w != c->resolution)
        return df_error("%s holds %zux%zux%zu images; the classifier takes %dx%dx%d", train->source, train->h,
                        train->w, train->c, c->resolution, c->resolution, c->in_channels);
    for (size_t i = 0; i < train->n; i++)
        if (train->labels[i] >= c->num_classes)
            return df_error("%s: label %d at image %zu is not below %d classes", train->source, train->labels[i], i,
                            c->num_classes);
    size_t B = o->batch, K = (size_t)c->num_classes, per = train->c * train->h * train->w;
    uint64_t steps_per_epoch = (train->n + B - 1) / B, total = steps_per_epoch * (uint64_t)o->epochs;
    df_params_alloc_grad(&m->params);
    df_adam_config ac = {.lr = o->lr, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = o->weight_decay,
                         .decoupled = 1};
    df_adam adam;
    df_adam_init(&adam, m->params.total, &ac);
    df_loader loader;
    df_loader_init(&loader, train, o->seed, o->flip);
    float *x = df_malloc(B * per * sizeof(float)), *probs = df_malloc(B * K * sizeof(float));
    float *dlogits = df_malloc(B * K * sizeof(float));
    int *y = df_malloc(B * sizeof(int)), rc = 0;
    double smooth = 0;
    for (int epoch = 0; epoch < o->epochs && rc == 0; epoch++) {
        df_progress bar;
        char label[32], status[64] = "";
        snprintf(label, sizeof label, "epoch %d/%d", epoch + 1, o->epochs);
        df_progress_init(&bar, label, steps_per_epoch, 0, "img");
        uint64_t i;
        for (i = 0; i < steps_per_epoch; i++) {
            uint64_t step = (uint64_t)epoch * steps_per_epoch + i;
            df_loader_next_labeled(&loader, x, y, B);
            df_graph *g = graph_for(m, B, 1, 0);
            memcpy(g->t[m->x_in].data, x, B * per * sizeof(float));
            df_graph_forward(g);
            float loss = xent_forward(probs, g->t[m->logits].data, y, B, K);
            if (!isfinite(loss)) {
                rc = df_error("classifier training: the loss is %g at step %llu; lower --lr", (double)loss,
                              (unsigned long long)step + 1);
                break;
            }
            memset(dlogits, 0, B * K * sizeof(float));
            xent_backward(dlogits, probs, y, B, K, 1.0f);
            df_params_zero_grad(&m->params);
            df_graph_backward(g, dlogits);
            double lr = 0.5 * o->lr * (1 + cos(M_PI * (double)step / (double)total));
            df_adam_step(&adam, m->params.data, m->params.grad, lr);
            smooth = step == 0 ? loss : 0.98 * smooth + 0.02 * loss;
            snprintf(status, sizeof status, "loss %.4f", smooth);
            df_progress_update(&bar, i + 1, (double)(i + 1) * (double)B, status);
        }
        df_progress_end(&bar, i, (double)i * (double)B, status);
        if (rc == 0 && test) {
            m->cfg.test_accuracy = df_classifier_accuracy(m, test);
            printf("epoch %d: loss %.4f, accuracy on %s %.2f%%\n", epoch + 1, smooth, test->source,
                   100 * m->cfg.test_accuracy);
            fflush(stdout);
        }
    }
    snprintf(m->cfg.trained_on, sizeof m->cfg.trained_on, "%s", name ? name : train->source);
    df_free(x), df_free(probs), df_free(dlogits), df_free(y);
    df_loader_free(&loader);
    df_adam_free(&adam);
    return rc;
}
