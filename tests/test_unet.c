/* test_unet.c: the U-Net against its PyTorch twin (tests/ref/unet_twin.py, diffusers' UNet2DModel written in
 * plain torch): forward output and every parameter gradient, relative error <= 1e-4 in FP32. Also the
 * parameter count of the DDPM CIFAR-10 model, config errors, and loading errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "base/rng.h"
#include "diffuse.h"
#include "io/file.h"
#include "io/safetensors.h"
#include "nn/unet.h"
#include "test.h"

#define TWIN "tests/ref/unet_twin.py"

/* Perturbs every parameter a little so that group-norm scales and shifts are not exactly 1 and 0 (a test
 * that swapped gamma and beta would otherwise pass). */
static void perturb(df_unet *m, uint64_t seed) {
    size_t n = df_unet_num_params(m);
    float *w = df_unet_weights(m), *z = df_malloc(n * sizeof(float));
    df_rng_normal(z, n, seed, 99, 0);
    for (size_t i = 0; i < n; i++) w[i] += 0.05f * z[i];
    df_free(z);
}

/* Saves m's weights, optionally with the old attention names, through st_write. */
static int save_weights(df_unet *m, const char *path, int old_names) {
    if (!old_names) return df_unet_save(m, path);
    df_params *ps = &m->params;
    st_entry *e = df_calloc(ps->n, sizeof *e);
    char (*names)[DF_PARAM_NAME] = df_calloc(ps->n, DF_PARAM_NAME);
    for (size_t i = 0; i < ps->n; i++) {
        const char *o = df_unet_old_attention_name(ps->p[i].name, names[i], DF_PARAM_NAME);
        if (!o) snprintf(names[i], DF_PARAM_NAME, "%s", ps->p[i].name);
        e[i] = st_entry_f32(names[i], ps->data + ps->p[i].offset, ps->p[i].ndim, ps->p[i].shape);
    }
    int rc = st_write(path, e, ps->n, NULL, 0);
    df_free(names);
    df_free(e);
    return rc;
}

/* Runs the C U-Net and the PyTorch twin on the same weights and inputs and compares output and gradients. */
static void compare_with_torch(const df_unet_config *c, size_t B, int old_names, const char *tag) {
    const char *dir = df_test_tmpdir();
    char cfg_path[512], w_path[512], in_path[512], out_path[512], cmd[2560];
    snprintf(cfg_path, sizeof cfg_path, "%s/%s-config.json", dir, tag);
    snprintf(w_path, sizeof w_path, "%s/%s-weights.safetensors", dir, tag);
    snprintf(in_path, sizeof in_path, "%s/%s-inputs.safetensors", dir, tag);
    snprintf(out_path, sizeof out_path, "%s/%s-torch.safetensors", dir, tag);

    df_unet *m = df_unet_create(c);
    EXPECT(m != NULL, "create: %s", df_errmsg());
    if (!m) return;
    df_unet_init_weights(m, 1234);
    perturb(m, 5);
    char *json = df_unet_config_json(c);
    df_test_write_text(cfg_path, json);
    free(json);
    EXPECT(save_weights(m, w_path, old_names) == 0, "save: %s", df_errmsg());

    /* inputs: x ~ N(0, 1), fractional timesteps spread over [0, 1000), a random upstream gradient */
    size_t S = (size_t)c->sample_size, nx = B * (size_t)c->in_channels * S * S, ny = B * (size_t)c->out_channels * S * S;
    float *x = df_malloc(nx * sizeof(float)), *t = df_malloc(B * sizeof(float)), *gy = df_malloc(ny * sizeof(float));
    df_rng_normal(x, nx, 7, 1, 0);
    df_rng_normal(gy, ny, 7, 2, 0);
    df_rng_uniform(t, B, 7, 3, 0);
    for (size_t i = 0; i < B; i++) t[i] = floorf(999.0f * t[i]) + (i % 2 ? 0.5f : 0.0f);
    int64_t xs[4] = {(int64_t)B, c->in_channels, (int64_t)S, (int64_t)S}, ys[4] = {(int64_t)B, c->out_channels,
                                                                                (int64_t)S, (int64_t)S};
    int64_t ts[1] = {(int64_t)B};
    st_entry in[3] = {st_entry_f32("sample", x, 4, xs), st_entry_f32("timestep", t, 1, ts),
                      st_entry_f32("grad_out", gy, 4, ys)};
    EXPECT(st_write(in_path, in, 3, NULL, 0) == 0, "write inputs: %s", df_errmsg());

    snprintf(cmd, sizeof cmd, "/usr/bin/python3 " TWIN " %s %s %s %s", cfg_path, w_path, in_path, out_path);
    int rc = system(cmd);
    EXPECT(rc == 0, "the PyTorch twin failed (%s); is python3-torch installed? (make deps)", cmd);

    /* C: the loaded weights must equal the saved ones, whichever naming was used */
    df_unet *m2 = df_unet_create(c);
    EXPECT(df_unet_load(m2, w_path) == 0, "load: %s", df_errmsg());
    EXPECT(memcmp(df_unet_weights(m2), df_unet_weights(m), df_unet_num_params(m) * sizeof(float)) == 0,
           "weights changed in a save/load round trip");

    float *y_inf = df_malloc(ny * sizeof(float));
    df_unet_forward(m2, y_inf, x, t, B);
    const float *y = df_unet_forward_train(m2, x, t, B);
    df_unet_zero_grads(m2);
    df_unet_backward(m2, gy);

    st_file f;
    if (rc == 0 && st_open(&f, out_path) == 0) {
        float *want = df_malloc(ny * sizeof(float));
        char name[DF_PARAM_NAME + 8];
        EXPECT(st_read_f32(&f, "output", want, 4, ys) == 0, "%s", df_errmsg());
        EXPECT_CLOSE("output (training graph)", y, want, ny, 1e-4);
        EXPECT_CLOSE("output (inference graph)", y_inf, want, ny, 1e-4);
        df_free(want);
        /* Some gradients are exactly zero in exact arithmetic: a key bias (softmax ignores a constant per
         * query) and a bias right before a group norm of one channel per group. Both sides then hold float
         * noise, and a relative error means nothing: such a tensor (reference RMS below 1e-5 of the RMS of all
         * gradients) must instead be as small in C. Every other tensor must agree to 1e-4. */
        const df_params *ps = &m2->params;
        float **ref = df_calloc(ps->n, sizeof *ref);
        double all = 0;
        for (size_t i = 0; i < ps->n; i++) {
            const df_param *p = &ps->p[i];
            char old[DF_PARAM_NAME];
            const char *pn = old_names && df_unet_old_attention_name(p->name, old, sizeof old) ? old : p->name;
            snprintf(name, sizeof name, "grad.%s", pn);
            ref[i] = df_malloc(p->numel * sizeof(float));
            if (st_read_f32(&f, name, ref[i], p->ndim, p->shape)) EXPECT(0, "%s", df_errmsg());
            for (size_t k = 0; k < p->numel; k++) all += (double)ref[i][k] * ref[i][k];
        }
        double rms_all = sqrt(all / (double)ps->total), worst = 0;
        const char *worst_name = "";
        int nzero = 0;
        for (size_t i = 0; i < ps->n; i++) {
            const df_param *p = &ps->p[i];
            const float *got = ps->grad + p->offset;
            double rw = 0, rg = 0;
            for (size_t k = 0; k < p->numel; k++) rw += (double)ref[i][k] * ref[i][k], rg += (double)got[k] * got[k];
            rw = sqrt(rw / (double)p->numel), rg = sqrt(rg / (double)p->numel);
            snprintf(name, sizeof name, "grad.%s", p->name);
            if (rw < 1e-5 * rms_all) {
                nzero++;
                EXPECT(rg < 1e-5 * rms_all, "%s: PyTorch's gradient is zero (rms %.2e) but C's has rms %.2e", name, rw,
                       rg);
                continue;
            }
            double r = df_rel_err(got, ref[i], p->numel);
            if (!(r <= 1e-4)) EXPECT_CLOSE(name, got, ref[i], p->numel, 1e-4);
            if (r > worst || isnan(r)) worst = r, worst_name = p->name;
        }
        for (size_t i = 0; i < ps->n; i++) df_free(ref[i]);
        df_free(ref);
        printf("    %zu parameter gradients: worst relative error %.2e (%s); %d structurally zero, zero in both\n",
               ps->n - (size_t)nzero, worst, worst_name, nzero);
        st_close(&f);
    } else {
        EXPECT(0, "no PyTorch output: %s", df_errmsg());
    }
    df_free(y_inf);
    df_free(x), df_free(t), df_free(gy);
    df_unet_destroy(m);
    df_unet_destroy(m2);
}

TEST(unet_fmnist_s_equals_pytorch) {
    df_unet_config c;
    EXPECT(df_unet_preset(&c, "fmnist-s") == 0, "%s", df_errmsg());
    compare_with_torch(&c, 3, 0, "fmnist-s");
}

/* The google/ddpm-cifar10-32 topology (padding-0 downsampling, freq_shift 1, no flip, eps 1e-6) at reduced
 * width, with the old attention names of the google checkpoints. */
TEST(unet_cifar_topology_old_names_equals_pytorch) {
    df_unet_config c;
    EXPECT(df_unet_preset(&c, "cifar10-ddpm") == 0, "%s", df_errmsg());
    int boc[] = {32, 64, 64, 64};
    memcpy(c.block_out_channels, boc, sizeof boc);
    c.sample_size = 16;
    compare_with_torch(&c, 2, 1, "cifar-small");
}

/* Multi-head attention (attention_head_dim 8), a non-default time embedding size and mid-block scale. */
TEST(unet_multihead_equals_pytorch) {
    df_unet_config c;
    EXPECT(df_unet_preset(&c, "tiny") == 0, "%s", df_errmsg());
    c.attention_head_dim = 8;
    c.time_embedding_dim = 48;
    c.mid_block_scale_factor = 1.4142135f;
    c.layers_per_block = 1;
    c.in_channels = 3;
    c.out_channels = 2;
    compare_with_torch(&c, 2, 0, "multihead");
}

TEST(unet_parameter_counts) {
    df_unet_config c;
    EXPECT(df_unet_preset(&c, "cifar10-ddpm") == 0, "%s", df_errmsg());
    df_unet *m = df_unet_create(&c);
    EXPECT(m && df_unet_num_params(m) == 35746307, "cifar10-ddpm has %zu parameters, the paper's model 35746307",
           m ? df_unet_num_params(m) : 0);
    df_unet_destroy(m);
    /* every preset builds, and the twin agrees on its parameter count */
    for (int i = 0; df_preset_names[i]; i++) {
        EXPECT(df_unet_preset(&c, df_preset_names[i]) == 0, "%s", df_errmsg());
        m = df_unet_create(&c);
        char path[512], cmd[700];
        snprintf(path, sizeof path, "%s/%s.json", df_test_tmpdir(), df_preset_names[i]);
        char *json = df_unet_config_json(&c);
        df_test_write_text(path, json);
        free(json);
        snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s --print-params",
                 c.arch == DF_ARCH_SIMPLE_UNET ? "tests/ref/simple_unet_twin.py" : TWIN, path);
        FILE *p = popen(cmd, "r");
        size_t n = 0;
        EXPECT(p && fscanf(p, "params %zu", &n) == 1, "could not run %s", cmd);
        if (p) {
            while (fgetc(p) != EOF) {}
            pclose(p);
        }
        printf("    %-14s %10zu parameters (PyTorch twin: %zu)\n", df_preset_names[i], df_unet_num_params(m), n);
        EXPECT(n == df_unet_num_params(m), "%s: C has %zu parameters, PyTorch %zu", df_preset_names[i],
               df_unet_num_params(m), n);
        df_unet_destroy(m);
    }
}

/* ---- config errors ---- */

static void expect_config_error(const char *json, const char *phrase) {
    df_unet_config c;
    int rc = df_unet_config_parse(&c, json, "config.json");
    EXPECT(rc == -1 && strstr(df_errmsg(), phrase), "config %s: expected an error containing '%s', got rc %d '%s'",
           json, phrase, rc, df_errmsg());
}

TEST(unet_config_round_trip_and_errors) {
    df_unet_config a, b;
    for (int i = 0; df_preset_names[i]; i++) {
        EXPECT(df_unet_preset(&a, df_preset_names[i]) == 0, "%s", df_errmsg());
        char *json = df_unet_config_json(&a);
        EXPECT(df_unet_config_parse(&b, json, "x") == 0, "%s: %s", df_preset_names[i], df_errmsg());
        EXPECT(memcmp(&a, &b, sizeof a) == 0, "%s: config changed through JSON", df_preset_names[i]);
        free(json);
    }
    expect_config_error("{\"sample_size\": 32, \"cross_attention_dim\": 768}", "cross_attention_dim");
    expect_config_error("{\"sample_size\": 32, \"down_block_types\": [\"CrossAttnDownBlock2D\", \"DownBlock2D\","
                        "\"DownBlock2D\", \"DownBlock2D\"]}",
                        "CrossAttnDownBlock2D");
    expect_config_error("{\"sample_size\": 32, \"act_fn\": \"gelu\"}", "act_fn");
    expect_config_error("{\"sample_size\": 32, \"time_embedding_type\": \"fourier\"}", "time_embedding_type");
    expect_config_error("{\"sample_size\": 30}", "divisible");
    expect_config_error("{\"sample_size\": 32, \"block_out_channels\": [32, 64]}", "down_block_types has 4 entries");
    expect_config_error("{\"sample_size\": 32, \"norm_num_groups\": 6}", "norm_num_groups");
    expect_config_error("{\"sample_size\": 32, \"layers_per_block\": \"two\"}", "layers_per_block");
    expect_config_error("{\"_class_name\": \"UNet2DConditionModel\", \"sample_size\": 32}", "UNet2DConditionModel");
    expect_config_error("[1, 2]", "not a JSON object");
    expect_config_error("{\"sample_size\": 32,", "not a JSON object");
    /* diffusers' defaults when a field is missing */
    EXPECT(df_unet_config_parse(&a, "{\"sample_size\": 32}", "x") == 0, "%s", df_errmsg());
    EXPECT(a.attention_head_dim == 8 && a.norm_num_groups == 32 && a.levels == 4 && a.block_out_channels[3] == 896 &&
               a.flip_sin_to_cos == 1 && a.downsample_padding == 1 && a.down_attn[0] == 0 && a.up_attn[3] == 0,
           "defaults differ from diffusers' UNet2DModel");
}

/* ---- loading errors ---- */

TEST(unet_load_refuses_mismatched_weights) {
    df_unet_config c;
    EXPECT(df_unet_preset(&c, "tiny") == 0, "%s", df_errmsg());
    df_unet *m = df_unet_create(&c);
    df_unet_init_weights(m, 1);
    char path[512];
    snprintf(path, sizeof path, "%s/tiny.safetensors", df_test_tmpdir());
    EXPECT(df_unet_save(m, path) == 0, "%s", df_errmsg());

    df_unet_config c2 = c;
    c2.block_out_channels[1] = 48; /* another width: shapes differ */
    c2.norm_num_groups = 8;
    df_unet *m2 = df_unet_create(&c2);
    EXPECT(df_unet_load(m2, path) == -1 && strstr(df_errmsg(), "tensor 'down_blocks.1.resnets.0.conv1.weight' has shape"),
           "wrong shapes must be refused naming the tensor, got '%s'", df_errmsg());
    df_unet_destroy(m2);

    c2 = c;
    c2.add_attention = 0; /* no mid-block attention: the file has tensors the model lacks */
    m2 = df_unet_create(&c2);
    EXPECT(df_unet_load(m2, path) == -1 && strstr(df_errmsg(), "unexpected tensor 'mid_block.attentions.0"),
           "extra tensors must be refused naming one, got '%s'", df_errmsg());
    char path2[512];
    snprintf(path2, sizeof path2, "%s/tiny-noattn.safetensors", df_test_tmpdir());
    EXPECT(df_unet_save(m2, path2) == 0, "%s", df_errmsg());
    EXPECT(df_unet_load(m, path2) == -1 && strstr(df_errmsg(), "'mid_block.attentions.0.group_norm.weight' is missing"),
           "missing tensors must be refused naming one, got '%s'", df_errmsg());
    df_unet_destroy(m2);
    df_unet_destroy(m);
}

/* Memory plans: the inference graph reuses memory, so its arena is a small fraction of all its tensors
 * laid end to end; the training graph keeps activations that backward reads and shares the rest. */
TEST(unet_memory_plans_reuse_memory) {
    df_unet_config c;
    EXPECT(df_unet_preset(&c, "fmnist-s") == 0, "%s", df_errmsg());
    df_unet *m = df_unet_create(&c);
    for (int train = 0; train <= 1; train++) {
        df_graph g;
        df_graph_init(&g, &m->params, 2, train);
        df_unet_build(m, &g, 2, train, NULL, NULL);
        df_graph_plan(&g);
        double all = 0;
        for (int i = 0; i < g.nt; i++) all += (double)g.t[i].numel * (train ? 2 : 1); /* values (+ gradients) */
        double planned = (double)g.arena_floats;
        printf("    %s: %.2f MB planned, %.2f MB without reuse (%.1fx)\n", train ? "training" : "sampling",
               planned * 4 / 1e6, all * 4 / 1e6, all / planned);
        EXPECT(planned * (train ? 1.5 : 8) < all, "the %s plan saves too little", train ? "training" : "sampling");
        df_graph_free(&g);
    }
    df_unet_destroy(m);
    df_unet_cost k = df_unet_costs(&c);
    EXPECT(k.gflops_per_image > 0.6 && k.gflops_per_image < 0.65, "fmnist-s FLOPs %g", k.gflops_per_image);
}

/* A stacked convolution (g_conv_stacked: attention's to_q, to_k, to_v as one) against the three run apart and
 * concatenated: the same output bits in a training graph and in an inference graph with packed weights, the
 * same bits of every parameter gradient, and the input gradient (one sum over the three instead of three
 * accumulations) within rounding. */
TEST(graph_conv_stacked_equals_separate) {
    df_params ps = {0};
    int w[3], b[3];
    for (int i = 0; i < 3; i++) {
        w[i] = df_params_addf(&ps, 2, 16, 24, 0, 0, "p%d.weight", i);
        b[i] = df_params_addf(&ps, 1, 16, 0, 0, 0, "p%d.bias", i);
    }
    df_params_alloc(&ps);
    df_params_alloc_grad(&ps);
    df_test_fill(ps.data, ps.total, 21, -0.5f, 0.5f);
    size_t B = 5;
    float *out[2], *dx[2], *dp[2], *gy = NULL;
    for (int stacked = 0; stacked <= 1; stacked++) {
        df_graph g;
        df_graph_init(&g, &ps, B, 1);
        g.keep_all = 1; /* the input's gradient stays readable */
        int x = g_input(&g, B, 24, 7, 9), h = g_silu(&g, x), y;
        if (stacked) {
            y = g_conv_stacked(&g, h, w, b, 3, 1, 0, 0, 0, 0);
        } else {
            int q = g_conv(&g, h, w[0], b[0], 1, 0, 0, 0, 0), k = g_conv(&g, h, w[1], b[1], 1, 0, 0, 0, 0);
            y = g_concat(&g, g_concat(&g, q, k), g_conv(&g, h, w[2], b[2], 1, 0, 0, 0, 0));
        }
        EXPECT(g.t[y].c == 48, "stacked output has %zu channels", g.t[y].c);
        df_graph_plan(&g);
        df_test_fill(g.t[x].data, g.t[x].numel, 22, -1, 1);
        size_t ny = g.t[y].numel, nx = g.t[h].numel;
        if (!gy) {
            gy = df_malloc(ny * sizeof(float));
            df_test_fill(gy, ny, 23, -1, 1);
        }
        df_graph_forward(&g);
        out[stacked] = df_malloc(ny * sizeof(float));
        memcpy(out[stacked], g.t[y].data, ny * sizeof(float));
        df_params_zero_grad(&ps);
        df_graph_backward(&g, gy);
        dx[stacked] = df_malloc(nx * sizeof(float));
        memcpy(dx[stacked], g.t[h].grad, nx * sizeof(float));
        dp[stacked] = df_malloc(ps.total * sizeof(float));
        memcpy(dp[stacked], ps.grad, ps.total * sizeof(float));
        df_graph_free(&g);
        if (stacked) { /* sampling: packed weights */
            df_graph gi;
            df_graph_init(&gi, &ps, B, 0);
            int xi = g_input(&gi, B, 24, 7, 9), yi = g_conv_stacked(&gi, g_silu(&gi, xi), w, b, 3, 1, 0, 0, 0, 0);
            df_graph_plan(&gi);
            df_graph_pack_weights(&gi);
            df_test_fill(gi.t[xi].data, gi.t[xi].numel, 22, -1, 1);
            df_graph_forward(&gi);
            EXPECT_CLOSE("stacked conv, packed weights", gi.t[yi].data, out[0], ny, 0);
            df_graph_free(&gi);
        }
        if (stacked) {
            EXPECT_CLOSE("stacked conv output", out[1], out[0], ny, 0);
            EXPECT_CLOSE("stacked conv parameter gradients", dp[1], dp[0], ps.total, 0);
            EXPECT_CLOSE("stacked conv input gradient", dx[1], dx[0], nx, 1e-6);
        }
    }
    for (int i = 0; i < 2; i++) df_free(out[i]), df_free(dx[i]), df_free(dp[i]);
    df_free(gy);
    df_params_free(&ps);
}

/* The training plan (activations freed once backward is done with them, gradients in their memory, fused
 * group norm + SiLU outputs recomputed for backward, dropout included) gives bit for bit the output and
 * parameter gradients of a plan that keeps every tensor apart for the whole pass. */
TEST(unet_training_plan_equals_keeping_everything) {
    df_unet_config c;
    EXPECT(df_unet_preset(&c, "tiny") == 0, "%s", df_errmsg());
    c.dropout = 0.1f;
    df_unet *m = df_unet_create(&c);
    df_unet_init_weights(m, 7);
    perturb(m, 8);
    df_params_alloc_grad(&m->params);
    size_t B = 3, P = m->params.total;
    float *grads[2], *outs[2];
    size_t planned[2];
    for (int keep = 0; keep <= 1; keep++) {
        df_graph g;
        int xi, ti;
        df_graph_init(&g, &m->params, B, 1);
        df_unet_build(m, &g, B, 1, &xi, &ti);
        g.keep_all = keep;
        df_graph_plan(&g);
        planned[keep] = g.arena_floats;
        df_rng_normal(g.t[xi].data, g.t[xi].numel, 11, 0, 0);
        for (size_t b = 0; b < B; b++) g.t[ti].data[b] = (float)(100 + 300 * b);
        g.dropout_seed = 5, g.dropout_step = 2;
        df_graph_forward(&g);
        size_t no = g.t[g.output].numel;
        float *dout = df_malloc(no * sizeof(float));
        df_rng_normal(dout, no, 12, 0, 0);
        df_params_zero_grad(&m->params);
        df_graph_backward(&g, dout);
        outs[keep] = df_malloc(no * sizeof(float));
        memcpy(outs[keep], g.t[g.output].data, no * sizeof(float));
        grads[keep] = df_malloc(P * sizeof(float));
        memcpy(grads[keep], m->params.grad, P * sizeof(float));
        df_free(dout);
        df_graph_free(&g);
    }
    printf("    arena %.2f MB planned, %.2f MB keeping everything\n", planned[0] * 4 / 1e6, planned[1] * 4 / 1e6);
    EXPECT(planned[0] * 2 < planned[1], "the plan saves too little");
    EXPECT_CLOSE("output", outs[0], outs[1], B * 256, 0);
    EXPECT_CLOSE("parameter gradients", grads[0], grads[1], P, 0);
    double norm = 0;
    for (size_t i = 0; i < P; i++) norm += (double)grads[0][i] * grads[0][i];
    EXPECT(norm > 0 && isfinite(norm), "gradient norm %g", norm);
    for (int k = 0; k < 2; k++) df_free(grads[k]), df_free(outs[k]);
    df_unet_destroy(m);
}

/* --precision bf16: the fmnist-s U-Net (convolutions, attention, linears) with BF16 products stays within
 * BF16's rounding of the FP32 model: output within 2%, every parameter gradient within 5% (measured 0.9% and
 * 3.0%, the worst a query bias; not the key biases, whose exact gradient is zero), and the results do differ
 * (the mode is on). */
TEST(unet_bf16_close_to_fp32) {
    df_unet_config c;
    EXPECT(df_unet_preset(&c, "fmnist-s") == 0, "%s", df_errmsg());
    c.dropout = 0;
    df_unet *m = df_unet_create(&c);
    df_unet_init_weights(m, 3);
    perturb(m, 4);
    df_params_alloc_grad(&m->params);
    size_t B = 2, D = 28 * 28, P = m->params.total;
    float *x = df_malloc(B * D * sizeof(float)), t[2] = {10, 700}, *out[2], *grad[2];
    df_rng_normal(x, B * D, 21, 0, 0);
    float *dout = df_malloc(B * D * sizeof(float));
    df_rng_normal(dout, B * D, 22, 0, 0);
    for (int bf = 0; bf <= 1; bf++) {
        EXPECT(df_set_precision(bf ? "bf16" : "fp32") == 0, "%s", df_errmsg());
        const float *y = df_unet_forward_train(m, x, t, B);
        out[bf] = df_malloc(B * D * sizeof(float));
        memcpy(out[bf], y, B * D * sizeof(float));
        df_params_zero_grad(&m->params);
        df_unet_backward(m, dout);
        grad[bf] = df_malloc(P * sizeof(float));
        memcpy(grad[bf], m->params.grad, P * sizeof(float));
    }
    df_set_precision("fp32");
    double eo = df_rel_err(out[1], out[0], B * D), worst = 0;
    const char *worst_name = "";
    for (size_t i = 0; i < m->params.n; i++) {
        const df_param *pp = &m->params.p[i];
        if (strstr(pp->name, "to_k.bias")) continue; /* its exact gradient is 0 (softmax ignores a shift of k) */
        double e = df_rel_err(grad[1] + pp->offset, grad[0] + pp->offset, pp->numel);
        if (e > worst) worst = e, worst_name = pp->name;
    }
    printf("    bf16 vs fp32: output %.2e, worst of %zu gradients %.2e (%s)\n", eo, m->params.n, worst, worst_name);
    EXPECT(eo < 0.02 && worst < 0.05, "bf16 strays from fp32: output %.2e, gradient %s %.2e", eo, worst_name, worst);
    EXPECT(eo > 1e-5, "bf16 output equals fp32's (%.2e): the mode is not on", eo);
    for (int k = 0; k < 2; k++) df_free(out[k]), df_free(grad[k]);
    df_free(x), df_free(dout);
    df_unet_destroy(m);
}

/* Frozen weights (df_unet_freeze: convolutions packed once and reused) give the unfrozen forward's output
 * bit for bit, in FP32 and in BF16 mode (a change of precision repacks), at two batch sizes (a new graph
 * packs again), and image 0 the same bits at both; unfreezing lets new weights show. */
TEST(unet_frozen_weights_equal_unfrozen) {
    df_unet_config c;
    EXPECT(df_unet_preset(&c, "fmnist-s") == 0, "%s", df_errmsg());
    df_unet *m = df_unet_create(&c);
    df_unet_init_weights(m, 5);
    perturb(m, 6);
    size_t D = 28 * 28, Bmax = 3;
    float *x = df_malloc(Bmax * D * sizeof(float)), t[3] = {3, 400, 999};
    float *want = df_malloc(Bmax * D * sizeof(float)), *got = df_malloc(Bmax * D * sizeof(float));
    df_rng_normal(x, Bmax * D, 31, 0, 0);
    float *want16 = df_malloc(Bmax * D * sizeof(float)), *first = df_malloc(D * sizeof(float));
    for (size_t B = 1; B <= Bmax; B += 2) {
        df_unet_freeze(m, 0);
        df_set_precision("bf16");
        df_unet_forward(m, want16, x, t, B);
        df_set_precision("fp32");
        df_unet_forward(m, want, x, t, B);
        df_unet_freeze(m, 1);
        /* frozen: packs, reuses, repacks for bf16 while still frozen, and back */
        static const char *seq[4] = {"fp32", "fp32", "bf16", "fp32"};
        for (int k = 0; k < 4; k++) {
            df_set_precision(seq[k]);
            df_unet_forward(m, got, x, t, B);
            const float *w = k == 2 ? want16 : want;
            EXPECT(!memcmp(got, w, B * D * sizeof(float)), "frozen forward differs (%s, batch %zu, pass %d)", seq[k],
                   B, k);
        }
        EXPECT(memcmp(want16, want, B * D * sizeof(float)) != 0, "bf16 output equals fp32's");
        if (B == 1) memcpy(first, want, D * sizeof(float));
        else /* 28x28: Winograd F(4x4, 3x3), by the team at batch 1 and a chunk per thread at batch 3 */
            EXPECT(!memcmp(first, want, D * sizeof(float)), "image 0 differs between batch 1 and batch %zu", B);
    }
    df_free(want16), df_free(first);
    df_set_precision("fp32");
    df_unet_freeze(m, 0);
    df_unet_forward(m, want, x, t, 1);
    perturb(m, 7); /* unfrozen: new weights are seen */
    df_unet_forward(m, got, x, t, 1);
    EXPECT(memcmp(got, want, D * sizeof(float)) != 0, "new weights did not change the unfrozen output");
    df_free(x), df_free(want), df_free(got);
    df_unet_destroy(m);
}

/* A diffusers folder (pipeline layout with unet/, and a bare UNet2DModel folder) loads, and `diffuse info`
 * reads it; a folder with pickle weights gets an error that says how to convert them. */
TEST(unet_load_folder) {
    df_unet_config c;
    EXPECT(df_unet_preset(&c, "tiny") == 0, "%s", df_errmsg());
    df_unet *m = df_unet_create(&c);
    df_unet_init_weights(m, 3);
    const char *dir = df_test_tmpdir();
    char path[600], cmd[1400];
    for (int pipeline = 0; pipeline <= 1; pipeline++) {
        char folder[512];
        snprintf(folder, sizeof folder, "%s/model%d%s", dir, pipeline, pipeline ? "/unet" : "");
        EXPECT(df_mkdirs(folder) == 0, "%s", df_errmsg());
        snprintf(path, sizeof path, "%s/config.json", folder);
        char *json = df_unet_config_json(&c);
        df_test_write_text(path, json);
        free(json);
        snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", folder);
        EXPECT(df_unet_save(m, path) == 0, "%s", df_errmsg());
        snprintf(folder, sizeof folder, "%s/model%d", dir, pipeline);
        df_unet *m2 = df_unet_load_folder(folder);
        EXPECT(m2 && memcmp(df_unet_weights(m2), df_unet_weights(m), df_unet_num_params(m) * 4) == 0,
               "load folder %s: %s", folder, m2 ? "weights differ" : df_errmsg());
        df_unet_destroy(m2);
        snprintf(cmd, sizeof cmd, "./build/diffuse info --model %s | grep -q 'parameters   252545'", folder);
        EXPECT(system(cmd) == 0, "%s", cmd);
    }
    snprintf(path, sizeof path, "%s/model1/unet/diffusion_pytorch_model.safetensors", dir);
    char bin[600];
    snprintf(bin, sizeof bin, "%s/model1/unet/diffusion_pytorch_model.bin", dir);
    EXPECT(rename(path, bin) == 0, "rename");
    snprintf(path, sizeof path, "%s/model1", dir);
    EXPECT(df_unet_load_folder(path) == NULL && strstr(df_errmsg(), "safe_serialization=True"),
           "pickle weights: got '%s'", df_errmsg());
    EXPECT(df_unet_load_folder(dir) == NULL && strstr(df_errmsg(), "not a diffusers model folder"),
           "empty folder: got '%s'", df_errmsg());
    df_unet_destroy(m);
}
