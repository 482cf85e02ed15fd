/* test_train.c: training. One optimizer step against a PyTorch twin (tests/ref/train_step_twin.py); the
 * loop's golden losses, exact resume, the non-finite guard and settings checks (on small data the test
 * writes itself). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/base.h"
#include "base/rng.h"
#include "diffuse.h"
#include "io/file.h"
#include "io/safetensors.h"
#include "nn/optim.h"
#include "nn/unet.h"
#include "test.h"
#include "train/train.h"

/* Two steps of C training and of the PyTorch twin from the same weights, batches, timesteps and noise:
 * the losses, gradient norms and final weights must agree to 1e-5. */
static void compare_steps(const char *tag, const char *prediction, int l1, int adamw, double wd) {
    const char *dir = df_test_tmpdir();
    char cfg[512], wpath[512], inpath[512], outpath[512], cmd[3000];
    snprintf(cfg, sizeof cfg, "%s/%s-config.json", dir, tag);
    snprintf(wpath, sizeof wpath, "%s/%s-w.safetensors", dir, tag);
    snprintf(inpath, sizeof inpath, "%s/%s-in.safetensors", dir, tag);
    snprintf(outpath, sizeof outpath, "%s/%s-out.safetensors", dir, tag);

    df_unet_config c;
    EXPECT(df_unet_preset(&c, "tiny") == 0, "%s", df_errmsg());
    df_unet *m = df_unet_create(&c);
    df_unet_init_weights(m, 11);
    { /* move group-norm scales and shifts off 1 and 0, so no parameter is made of the updates alone */
        size_t n = df_unet_num_params(m);
        float *w = df_unet_weights(m), *z = df_malloc(n * sizeof(float));
        df_rng_normal(z, n, 12, 0, 0);
        for (size_t i = 0; i < n; i++) w[i] += 0.05f * z[i];
        df_free(z);
    }
    char *json = df_unet_config_json(&c);
    df_test_write_text(cfg, json);
    free(json);
    EXPECT(df_unet_save(m, wpath) == 0, "%s", df_errmsg());
    size_t P = df_unet_num_params(m);
    float *w0 = df_malloc(P * sizeof(float));
    memcpy(w0, df_unet_weights(m), P * sizeof(float));

    const size_t B = 4, D = (size_t)c.in_channels * c.sample_size * c.sample_size;
    const int steps = 2;
    const double lr = 1e-3, clip = 1.0;
    df_schedule s;
    df_schedule_defaults(&s);
    EXPECT(df_prediction_parse(&s.prediction, prediction) == 0, "%s", df_errmsg());
    EXPECT(df_schedule_init(&s) == 0, "%s", df_errmsg());
    df_adam adam;
    df_adam_config ac = {.lr = lr, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = wd, .decoupled = adamw};
    df_adam_init(&adam, P, &ac);
    df_step_work work = {0};

    float *x0 = df_malloc(steps * B * D * sizeof(float)), *eps = df_malloc(steps * B * D * sizeof(float));
    float *tf = df_malloc(steps * B * sizeof(float));
    float *w_after[2] = {df_malloc(P * sizeof(float)), df_malloc(P * sizeof(float))};
    int t[16];
    float loss[2];
    double gn[2];
    st_entry in[6];
    char names[6][16];
    int64_t xs[4] = {(int64_t)B, c.in_channels, c.sample_size, c.sample_size}, ts[1] = {(int64_t)B};
    for (int k = 0; k < steps; k++) {
        float *xk = x0 + k * B * D, *ek = eps + k * B * D;
        df_rng_uniform(xk, B * D, 100 + k, 1, 0);
        for (size_t i = 0; i < B * D; i++) xk[i] = 2 * xk[i] - 1;
        df_rng_normal(ek, B * D, 100 + k, 2, 0);
        for (size_t b = 0; b < B; b++) {
            t[b] = (int)(df_rng_u64(100 + k, 3, b) % 1000);
            tf[k * B + b] = (float)t[b];
        }
        loss[k] = df_train_step(m, &adam, &s, l1, clip, lr, xk, t, ek, B, &gn[k], &work);
        memcpy(w_after[k], df_unet_weights(m), P * sizeof(float));
        if (getenv("DF_KEEP_TMP")) { /* for debugging: C's weights after this step */
            char wk[600];
            snprintf(wk, sizeof wk, "%s/%s-c-step%d.safetensors", dir, tag, k);
            df_unet_save(m, wk);
        }
        snprintf(names[3 * k], 16, "x0.%d", k);
        snprintf(names[3 * k + 1], 16, "t.%d", k);
        snprintf(names[3 * k + 2], 16, "noise.%d", k);
        in[3 * k] = st_entry_f32(names[3 * k], xk, 4, xs);
        in[3 * k + 1] = st_entry_f32(names[3 * k + 1], tf + k * B, 1, ts);
        in[3 * k + 2] = st_entry_f32(names[3 * k + 2], ek, 4, xs);
    }
    EXPECT(st_write(inpath, in, 3 * steps, NULL, 0) == 0, "%s", df_errmsg());
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 tests/ref/train_step_twin.py %s %s %s %s --lr=%g --clip=%g --weight-decay=%g "
             "--optimizer=%s --loss=%s --prediction=%s",
             cfg, wpath, inpath, outpath, lr, clip, wd, adamw ? "adamw" : "adam", l1 ? "l1" : "mse", prediction);
    EXPECT(system(cmd) == 0, "the PyTorch twin failed: %s", cmd);

    st_file f;
    if (st_open(&f, outpath) == 0) {
        for (int k = 0; k < steps; k++) {
            char name[32];
            float want;
            int64_t one = 1;
            snprintf(name, sizeof name, "loss.%d", k);
            EXPECT(st_read_f32(&f, name, &want, 1, &one) == 0, "%s", df_errmsg());
            EXPECT_CLOSE(name, &loss[k], &want, 1, 1e-5);
            snprintf(name, sizeof name, "grad_norm.%d", k);
            EXPECT(st_read_f32(&f, name, &want, 1, &one) == 0, "%s", df_errmsg());
            float g = (float)gn[k];
            EXPECT_CLOSE(name, &g, &want, 1, 1e-5);
        }
        /* Weights after each step: to 1e-5 after the first; after the second, whose update mixes two gradients
         * that may nearly cancel in the first moment, to 1e-4. Adam divides each gradient element by its own running size, so an
         * element whose gradient is within 100x of Adam's eps (1e-8) moves by an amount that FP32 rounding of
         * that tiny gradient decides, in any implementation (torch's own FP32 and FP64 runs differ there).
         * Such elements (|clipped gradient| < 1e-6 at any step so far, by PyTorch's gradients, plus wd w where
         * Adam adds L2 weight decay to the gradient, which can cancel it) are counted and
         * only bounded: they may differ by at most 2 lr a step. Attention key biases, whose gradient is zero in
         * exact arithmetic, fall under that rule whole. */
        const df_params *ps = &m->params;
        unsigned char *tiny = df_calloc(P, 1);
        for (int k = 0; k < steps; k++) {
            double worst = 0;
            const char *worst_name = "";
            size_t ntiny = 0;
            for (size_t i = 0; i < ps->n; i++) {
                const df_param *p = &ps->p[i];
                char name[DF_PARAM_NAME + 16];
                float *want = df_malloc(p->numel * sizeof(float)), *g = df_malloc(p->numel * sizeof(float));
                snprintf(name, sizeof name, "gradc.%d.%s", k, p->name);
                EXPECT(st_read_f32(&f, name, g, p->ndim, p->shape) == 0, "%s", df_errmsg());
                snprintf(name, sizeof name, "param.%d.%s", k, p->name);
                EXPECT(st_read_f32(&f, name, want, p->ndim, p->shape) == 0, "%s", df_errmsg());
                const float *got = w_after[k] + p->offset, *before = (k == 0 ? w0 : w_after[k - 1]) + p->offset;
                double num = 0, den = 0, maxd = 0;
                for (size_t j = 0; j < p->numel; j++) {
                    /* the gradient Adam sees: with L2 weight decay (Adam, not AdamW) it is g + wd w */
                    double geff = g[j] + (adamw ? 0.0 : wd * before[j]);
                    if (fabs(geff) < 1e-6) tiny[p->offset + j] = 1;
                    double d = (double)got[j] - want[j];
                    if (tiny[p->offset + j]) {
                        maxd = fmax(maxd, fabs(d));
                        ntiny++;
                    } else {
                        num += d * d, den += (double)want[j] * want[j];
                    }
                }
                double r = den > 0 ? sqrt(num / den) : 0, tol = k == 0 ? 1e-5 : 1e-4;
                EXPECT(r <= tol, "%s: relative error %.3e exceeds %.0e", name, r, tol);
                EXPECT(maxd <= 2 * lr * (k + 1) + 1e-7, "%s: a near-zero-gradient element differs by %g", name, maxd);
                if (r > worst) worst = r, worst_name = p->name;
                df_free(want), df_free(g);
            }
            printf("    weights after step %d: worst relative error %.2e (%s); %zu of %zu elements with |g| < 1e-6 "
                   "bounded by 2 lr/step\n", k + 1, worst, worst_name, ntiny, P);
        }
        df_free(tiny);
        st_close(&f);
    } else {
        EXPECT(0, "%s", df_errmsg());
    }
    df_step_work_free(&work);
    df_adam_free(&adam);
    df_schedule_free(&s);
    df_free(x0), df_free(eps), df_free(tf), df_free(w0), df_free(w_after[0]), df_free(w_after[1]);
    df_unet_destroy(m);
}

TEST(train_step_adamw_mse_epsilon_equals_pytorch) { compare_steps("adamw", "epsilon", 0, 1, 0.01); }
TEST(train_step_adam_l1_v_equals_pytorch) { compare_steps("adam-v", "v_prediction", 1, 0, 0.001); }
TEST(train_step_sample_prediction_equals_pytorch) { compare_steps("x0", "sample", 0, 1, 0.0); }
