/* test_sampler.c: the samplers (src/diffusion/sampler.h).
 *
 * Against diffusers (the oracle tests/ref/sampler_twin.py writes diffusers' formulas out in torch): timestep
 * sequences of every spacing rule, the beta schedules, and single DDPM and DDIM steps over prediction types,
 * clipping, thresholding, variances, eta and set_alpha_to_one. Against mathematics: DDIM with eta = 1 is DDPM;
 * on Gaussian data N(m, s^2 I), whose exact epsilon is known in closed form, deterministic DDIM converges (first
 * order) to the exact probability-flow ODE solution and DDPM samples have the data's mean and variance; DDIM
 * inversion followed by decoding reconstructs x_0 with an error that falls with S. And the contracts of
 * df_sample: images independent of batch layout and thread count (bitwise), trajectory recording, sigma-hat,
 * fresh noise at every noisy step, slerp. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "base/rng.h"
#include "diffuse.h"
#include "diffusion/sampler.h"
#include "diffusion/schedule.h"
#include "io/safetensors.h"
#include "test.h"

#define TWIN "/usr/bin/python3 tests/ref/sampler_twin.py"

/* ---- helpers ---- */

static int sched_make(df_schedule *s, const char *name, double b0, double b1, int T) {
    df_schedule_defaults(s);
    snprintf(s->beta_schedule, sizeof s->beta_schedule, "%s", name);
    s->beta_start = b0, s->beta_end = b1, s->T = T;
    int rc = df_schedule_init(s);
    EXPECT(rc == 0, "df_schedule_init(%s): %s", name, df_errmsg());
    return rc;
}

static void normal_fill(float *x, size_t n, uint64_t seed, uint32_t a, float scale) {
    df_rng_normal(x, n, seed, df_stream(DF_STREAM_TEST, a, 0), 0);
    for (size_t i = 0; i < n; i++) x[i] *= scale;
}

static double max_rel_elem(const float *got, const float *want, size_t n) {
    double w = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]) / fmax(fabs((double)want[i]), 1e-30);
        if (!(d <= w)) w = d; /* NaN propagates */
    }
    return w;
}

/* ==== timestep sequences ==== */

static const char *const spacing_names[] = {"uniform", "quad", "leading", "trailing", "linspace"};

TEST(sampler_timesteps_match_rules) {
    /* names */
    for (int k = 0; k < 5; k++) {
        df_spacing sp;
        EXPECT(df_spacing_parse(&sp, spacing_names[k]) == 0, "df_spacing_parse(%s): %s", spacing_names[k],
               df_errmsg());
        EXPECT(!strcmp(df_spacing_name(sp), spacing_names[k]), "df_spacing_name round trip of %s gave %s",
               spacing_names[k], df_spacing_name(sp));
    }
    df_spacing bad;
    EXPECT(df_spacing_parse(&bad, "cosine") != 0, "df_spacing_parse accepted 'cosine'");

    /* sequences: every rule, against the Python (numpy rounding half to even, float arange and linspace...) */
    const int Ss[] = {1, 2, 3, 7, 10, 16, 20, 26, 30, 48, 50, 80, 96, 100, 112, 144, 200, 333, 500, 999, 1000};
    const int nS = (int)(sizeof Ss / sizeof Ss[0]);
    const struct { int T, offset; } runs[] = {{1000, 0}, {1000, 1}, {999, 0}, {500, 0}};
    int cap = 4096, *taus = df_malloc((size_t)cap * sizeof(int));
    int compared = 0, mismatched = 0, per_spacing[5] = {0};
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        int T = runs[r].T, K = runs[r].offset;
        char list[512] = "", cmd[1024];
        for (int i = 0; i < nS; i++)
            if (Ss[i] <= T) snprintf(list + strlen(list), sizeof list - strlen(list), "%s%d", *list ? "," : "", Ss[i]);
        snprintf(cmd, sizeof cmd, TWIN " --timesteps %s --spacing uniform,quad,leading,trailing,linspace "
                                  "--steps-offset %d --T %d", list, K, T);
        char *text = df_test_capture(cmd);
        EXPECT(text != NULL, "the twin failed: %s", cmd);
        if (!text) continue;
        for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
            char name[32];
            int S, used;
            if (sscanf(line, "%31s %d:%n", name, &S, &used) != 2) {
                EXPECT(0, "unreadable twin line: %s", line);
                continue;
            }
            int want[4096], nw = 0, v, u;
            for (const char *q = line + used; sscanf(q, "%d%n", &v, &u) == 1; q += u) want[nw++] = v;
            /* leading with an offset can run past T - 1 (diffusers then fails at the lookup): not a sequence */
            if (K && !strcmp(name, "leading") && want[0] > T - 1) continue;
            df_spacing sp;
            EXPECT(df_spacing_parse(&sp, name) == 0, "%s", df_errmsg());
            int n = df_timesteps(taus, cap, S, T, sp, K);
            /* numpy's float arange can end the trailing rule at -1 (T = 999, S = 30): not a valid sequence, which
             * diffuse may refuse; it must not return a negative timestep */
            if (want[nw - 1] < 0) {
                int neg = 0;
                for (int i = 0; i < n; i++) neg |= taus[i] < 0;
                EXPECT(!neg, "%s S=%d T=%d: a negative timestep returned", name, S, T);
                printf("    %s S=%d T=%d: the rule gives timestep %d; df_timesteps returns %d%s\n", name, S, T,
                       want[nw - 1], n, n < 0 ? " (refused)" : "");
                continue;
            }
            int same = n == nw;
            for (int i = 0; same && i < n; i++) same = taus[i] == want[i];
            compared++;
            int si = 0;
            while (si < 4 && strcmp(spacing_names[si], name)) si++;
            if (!same) per_spacing[si]++;
            if (!same && per_spacing[si] > 3) {
                mismatched++;
            } else if (!same) {
                mismatched++;
                char got[160] = "", exp[160] = "";
                for (int i = 0; i < n && i < 12; i++) snprintf(got + strlen(got), sizeof got - strlen(got), " %d", taus[i]);
                for (int i = 0; i < nw && i < 12; i++) snprintf(exp + strlen(exp), sizeof exp - strlen(exp), " %d", want[i]);
                int first = -1;
                for (int i = 0; i < n && i < nw; i++)
                    if (taus[i] != want[i]) { first = i; break; }
                EXPECT(0, "%s S=%d T=%d offset=%d: length %d (want %d), first difference at %d (%d vs %d); got%s.. want%s..",
                       name, S, T, K, n, nw, first, first >= 0 ? taus[first] : 0, first >= 0 ? want[first] : 0, got, exp);
            }
        }
        free(text);
    }
    printf("    %d sequences compared with the twin, %d mismatched (", compared, mismatched);
    for (int k = 0; k < 5; k++) printf("%s%s %d", k ? ", " : "", spacing_names[k], per_spacing[k]);
    printf("; at most 3 shown per rule)\n");
    EXPECT(mismatched == 0, "%d timestep sequences differ from the rules", mismatched);
    EXPECT(compared >= 5 * nS * 3, "only %d sequences compared", compared);

    /* S out of range */
    for (int k = 0; k < 5; k++) {
        df_spacing sp;
        df_spacing_parse(&sp, spacing_names[k]);
        EXPECT(df_timesteps(taus, cap, 0, 1000, sp, 0) < 0, "%s: S = 0 accepted", spacing_names[k]);
        EXPECT(df_timesteps(taus, cap, 1001, 1000, sp, 0) < 0, "%s: S = 1001 > T accepted", spacing_names[k]);
    }
    df_free(taus);
}

/* ==== schedules ==== */

TEST(sampler_schedules_match_diffusers) {
    const struct { const char *name; double b0, b1; int T; } cases[] = {
        {"linear", 1e-4, 0.02, 1000},          {"scaled_linear", 0.00085, 0.012, 1000},
        {"squaredcos_cap_v2", 1e-4, 0.02, 1000}, {"sigmoid", 1e-4, 0.02, 1000},
        {"quad", 1e-4, 0.02, 1000},            {"linear", 2e-4, 0.03, 500},
        {"squaredcos_cap_v2", 1e-4, 0.02, 250}, {"sigmoid", 1e-3, 0.05, 300},
    };
    const int nc = (int)(sizeof cases / sizeof cases[0]);
    char names[512] = "", b0s[512] = "", b1s[512] = "", Ts[512] = "", out[512], cmd[3000];
    for (int i = 0; i < nc; i++) {
        const char *sep = i ? "," : "";
        snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", sep, cases[i].name);
        snprintf(b0s + strlen(b0s), sizeof b0s - strlen(b0s), "%s%.17g", sep, cases[i].b0);
        snprintf(b1s + strlen(b1s), sizeof b1s - strlen(b1s), "%s%.17g", sep, cases[i].b1);
        snprintf(Ts + strlen(Ts), sizeof Ts - strlen(Ts), "%s%d", sep, cases[i].T);
    }
    snprintf(out, sizeof out, "%s/schedules.safetensors", df_test_tmpdir());
    snprintf(cmd, sizeof cmd, TWIN " --schedule %s --beta-schedule %s --beta-start %s --beta-end %s --T %s", out,
             names, b0s, b1s, Ts);
    EXPECT(system(cmd) == 0, "the twin failed: %s", cmd);
    st_file f;
    if (st_open(&f, out) != 0) {
        EXPECT(0, "%s", df_errmsg());
        return;
    }
    for (int i = 0; i < nc; i++) {
        df_schedule s;
        if (sched_make(&s, cases[i].name, cases[i].b0, cases[i].b1, cases[i].T)) continue;
        int T = cases[i].T;
        float *wb = df_malloc(T * sizeof(float)), *wa = df_malloc(T * sizeof(float));
        float *gb = df_malloc(T * sizeof(float)), *ga = df_malloc(T * sizeof(float));
        char key[64];
        int64_t shape[1] = {T};
        snprintf(key, sizeof key, "%d.betas", i);
        EXPECT(st_read_f32(&f, key, wb, 1, shape) == 0, "%s", df_errmsg());
        snprintf(key, sizeof key, "%d.alphas_cumprod", i);
        EXPECT(st_read_f32(&f, key, wa, 1, shape) == 0, "%s", df_errmsg());
        for (int t = 0; t < T; t++) gb[t] = (float)s.betas[t], ga[t] = (float)s.abar[t];
        double eb = max_rel_elem(gb, wb, T), ea = max_rel_elem(ga, wa, T);
        printf("    %-18s %.5g..%.5g T=%4d  betas max elementwise rel %.2e  alphas_cumprod %.2e\n", cases[i].name,
               cases[i].b0, cases[i].b1, T, eb, ea);
        EXPECT(eb <= 1e-6, "%s T=%d: betas differ from diffusers by %.3e (elementwise relative)", cases[i].name, T, eb);
        EXPECT(ea <= 1e-6, "%s T=%d: alphas_cumprod differ from diffusers by %.3e (elementwise relative)",
               cases[i].name, T, ea);
        /* df_abar_at */
        EXPECT(df_abar_at(&s, 0, 1) == s.abar[0] && df_abar_at(&s, T - 1, 0) == s.abar[T - 1],
               "df_abar_at(t >= 0) is not abar[t]");
        EXPECT(df_abar_at(&s, -1, 1) == 1.0, "df_abar_at(-1, final_is_one) = %g", df_abar_at(&s, -1, 1));
        EXPECT(df_abar_at(&s, -1, 0) == s.abar[0], "df_abar_at(-1, !final_is_one) = %g, abar_0 = %g",
               df_abar_at(&s, -1, 0), s.abar[0]);
        df_free(wb), df_free(wa), df_free(gb), df_free(ga);
        df_schedule_free(&s);
    }
    st_close(&f);
}

/* ==== single steps against diffusers ==== */

typedef struct {
    int t, tp;
    df_prediction pred;
    int mode;        /* x0 processing: 0 none, 1 clip +-1, 2 clip +-1.7, 3 threshold (0.995, max 2.5), 4 threshold (0.9, max 1e9) */
    int var_large;   /* DDPM */
    double eta;      /* DDIM */
    int sato;        /* DDIM set_alpha_to_one */
    const char *sched;
    double b0, b1;
} step_case;

static const int step_pairs[][2] = {{999, 998}, {999, 979}, {500, 480}, {321, 0}, {10, 9}, {1, 0}, {0, -1}, {37, -1}};
#define NPAIRS ((int)(sizeof step_pairs / sizeof step_pairs[0]))
static const char *const pred_names[] = {"epsilon", "sample", "v_prediction"};

static void apply_mode(df_schedule *s, int mode, int *clip) {
    s->thresholding = mode >= 3;
    *clip = mode == 1 || mode == 2;
    s->clip_sample_range = mode == 2 ? 1.7 : 1.0;
    s->dynamic_thresholding_ratio = mode == 4 ? 0.9 : 0.995;
    s->sample_max_value = mode == 3 ? 2.5 : mode == 4 ? 1e9 : 1.0;
}

static void mode_flags(char *buf, size_t cap, int mode) {
    snprintf(buf, cap, "--clip %d --clip-range %g --thresholding %d --ratio %g --max-value %g",
             mode == 1 || mode == 2, mode == 2 ? 1.7 : 1.0, mode >= 3, mode == 4 ? 0.9 : 0.995,
             mode == 3 ? 2.5 : mode == 4 ? 1e9 : 1.0);
}

/* Runs every case through C and through the twin (one Python process for all) and compares. */
static void compare_steps(int ddim, const step_case *cases, int nc) {
    const size_t B = 3, C = 2, H = 8, W = 8, D = C * H * W, n = B * D;
    const char *dir = df_test_tmpdir();
    char inpath[512], outpath[512], cmd[1500];
    snprintf(inpath, sizeof inpath, "%s/%s-steps-in.safetensors", dir, ddim ? "ddim" : "ddpm");
    snprintf(outpath, sizeof outpath, "%s/%s-steps-out.safetensors", dir, ddim ? "ddim" : "ddpm");
    float *xs = df_malloc(nc * n * sizeof(float)), *mos = df_malloc(nc * n * sizeof(float));
    float *zs = df_malloc(nc * n * sizeof(float)), *ts = df_malloc(nc * 2 * sizeof(float));
    st_entry *e = df_malloc(nc * 5 * sizeof(st_entry));
    char (*names)[24] = df_malloc(nc * 5 * sizeof *names), (*flags)[600] = df_malloc(nc * sizeof *flags);
    char (*keys)[16] = df_malloc(nc * sizeof *keys);
    const char **kv = df_malloc((2 * nc + 2) * sizeof(char *));
    char ncases[16];
    snprintf(ncases, sizeof ncases, "%d", nc);
    kv[0] = "cases", kv[1] = ncases;
    int64_t xshape[4] = {B, C, H, W}, one[1] = {1};
    for (int k = 0; k < nc; k++) {
        const step_case *c = &cases[k];
        float *x = xs + k * n, *mo = mos + k * n, *z = zs + k * n;
        normal_fill(x, n, 1000 + k, 1, 1.0f);
        normal_fill(mo, n, 1000 + k, 2, c->pred == DF_PRED_SAMPLE ? 1.3f : 1.0f);
        normal_fill(z, n, 1000 + k, 3, 1.0f);
        ts[2 * k] = (float)c->t, ts[2 * k + 1] = (float)c->tp;
        const char *fields[5] = {"x", "model_output", "noise", "t", "t_prev"};
        for (int j = 0; j < 5; j++) snprintf(names[5 * k + j], 24, "%d.%s", k, fields[j]);
        e[5 * k] = st_entry_f32(names[5 * k], x, 4, xshape);
        e[5 * k + 1] = st_entry_f32(names[5 * k + 1], mo, 4, xshape);
        e[5 * k + 2] = st_entry_f32(names[5 * k + 2], z, 4, xshape);
        e[5 * k + 3] = st_entry_f32(names[5 * k + 3], ts + 2 * k, 1, one);
        e[5 * k + 4] = st_entry_f32(names[5 * k + 4], ts + 2 * k + 1, 1, one);
        char mf[200];
        mode_flags(mf, sizeof mf, c->mode);
        /* diffusers' DDPM adds noise when t > 0; sampler.h drops it whenever t_prev < 0 (the last step): they
         * differ only for a final step from t > 0, where the header's rule is the contract tested here. */
        snprintf(flags[k], 600,
                 "--scheduler %s --eta %.17g --prediction %s %s --variance %s --beta-schedule %s --beta-start %.17g "
                 "--beta-end %.17g --T 1000 --set-alpha-to-one %d --noise-rule %s",
                 ddim ? "ddim" : "ddpm", c->eta, pred_names[c->pred], mf, c->var_large ? "fixed_large" : "fixed_small",
                 c->sched, c->b0, c->b1, c->sato, c->t > 0 && c->tp < 0 ? "tprev" : "t");
        snprintf(keys[k], 16, "%d", k);
        kv[2 + 2 * k] = keys[k], kv[3 + 2 * k] = flags[k];
    }
    EXPECT(st_write(inpath, e, nc * 5, kv, nc + 1) == 0, "%s", df_errmsg());
    snprintf(cmd, sizeof cmd, TWIN " %s %s", inpath, outpath);
    double t0 = df_time();
    EXPECT(system(cmd) == 0, "the twin failed: %s", cmd);
    printf("    twin: %d cases in %.1fs\n", nc, df_time() - t0);
    st_file f;
    if (st_open(&f, outpath) != 0) {
        EXPECT(0, "%s", df_errmsg());
        goto done;
    }
    float *prev = df_malloc(n * sizeof(float)), *x0 = df_malloc(n * sizeof(float));
    float *w_prev = df_malloc(n * sizeof(float)), *w_x0 = df_malloc(n * sizeof(float));
    float *w_prev32 = df_malloc(n * sizeof(float)), *w_x032 = df_malloc(n * sizeof(float));
    double worst64 = 0, worst32 = 0, pair32[NPAIRS] = {0}, pair64[NPAIRS] = {0};
    int worst64_case = -1, worst32_case = -1, fails = 0;
    for (int k = 0; k < nc; k++) {
        const step_case *c = &cases[k];
        df_schedule s;
        if (sched_make(&s, c->sched, c->b0, c->b1, 1000)) continue;
        s.prediction = c->pred;
        s.variance_fixed_large = c->var_large;
        s.set_alpha_to_one = c->sato;
        int clip;
        apply_mode(&s, c->mode, &clip);
        /* the clip argument overrides the schedule's clip_sample: half the cases set the schedule the other way */
        s.clip_sample = k % 2 ? !clip : clip;
        const float *x = xs + k * n, *mo = mos + k * n, *z = zs + k * n;
        if (ddim) df_ddim_step(prev, x0, x, mo, c->t, c->tp, c->eta, c->eta == 0 ? NULL : z, B, D, &s, clip);
        else df_ddpm_step(prev, x0, x, mo, c->t, c->tp, z, B, D, &s, clip);
        char key[48];
        int64_t shape[4] = {B, C, H, W};
        int ok = 1;
        snprintf(key, sizeof key, "%d.prev_sample_f64", k);
        ok &= st_read_f32(&f, key, w_prev, 4, shape) == 0;
        snprintf(key, sizeof key, "%d.pred_original_sample_f64", k);
        ok &= st_read_f32(&f, key, w_x0, 4, shape) == 0;
        snprintf(key, sizeof key, "%d.prev_sample", k);
        ok &= st_read_f32(&f, key, w_prev32, 4, shape) == 0;
        snprintf(key, sizeof key, "%d.pred_original_sample", k);
        ok &= st_read_f32(&f, key, w_x032, 4, shape) == 0;
        EXPECT(ok, "case %d: %s", k, df_errmsg());
        double ep = df_rel_err(prev, w_prev, n), ex = df_rel_err(x0, w_x0, n);
        double ep32 = df_rel_err(prev, w_prev32, n), ex32 = df_rel_err(x0, w_x032, n);
        for (size_t i = 0; i < n; i++)
            if (!isfinite(prev[i]) || !isfinite(x0[i])) ep = INFINITY;
        double e64 = fmax(ep, ex), e32 = fmax(ep32, ex32);
        if (!(e64 <= worst64)) worst64 = e64, worst64_case = k;
        if (!(e32 <= worst32)) worst32 = e32, worst32_case = k;
        int pi = 0;
        while (pi < NPAIRS - 1 && !(step_pairs[pi][0] == c->t && step_pairs[pi][1] == c->tp)) pi++;
        if (!(e32 <= pair32[pi])) pair32[pi] = e32;
        if (!(e64 <= pair64[pi])) pair64[pi] = e64;
        /* Against diffusers' own float32 arithmetic: float32 torch rounds current_alpha_t = abar_t / abar_prev to
         * ~6e-8 and so loses ~6e-8 / beta relative in current_beta_t = 1 - current_alpha_t, and in the DDIM
         * variance, where beta = 1 - abar_t / abar_prev is small (1.2e-4 at t = 1); C computes the coefficients in
         * double. So the bound against float32 is 1e-5 plus that float32 conditioning error. */
        double a_t = s.abar[c->t], a_p = c->tp >= 0 ? s.abar[c->tp] : (!ddim || c->sato) ? 1.0 : s.abar[0];
        double beta = 1 - a_t / a_p, tol32 = 1e-5 + (beta > 0 ? 6e-8 / beta : 1);
        if (!(e64 <= 1e-5) || !(e32 <= tol32)) {
            if (fails++ < 12)
                EXPECT(0, "%s case %d: t %d -> %d, %s, mode %d, %s, eta %g, set_alpha_to_one %d, %s: relative error "
                       "prev_sample %.3e, x0 %.3e (vs float64 formulas, bound 1e-5); vs float32 torch %.3e %.3e "
                       "(bound %.2e)", ddim ? "DDIM" : "DDPM", k, c->t, c->tp, pred_names[c->pred], c->mode,
                       c->var_large ? "fixed_large" : "fixed_small", c->eta, c->sato, c->sched, ep, ex, ep32, ex32,
                       tol32);
            else EXPECT(0, "case %d fails too", k);
        }
        df_schedule_free(&s);
    }
    printf("    %d cases: worst relative error vs the float64 formulas %.2e (case %d); vs diffusers' float32 %.2e "
           "(case %d: t %d -> %d)\n", nc, worst64, worst64_case, worst32, worst32_case,
           worst32_case >= 0 ? cases[worst32_case].t : 0, worst32_case >= 0 ? cases[worst32_case].tp : 0);
    printf("    worst per (t -> t_prev), vs float64 / vs float32:");
    for (int p = 0; p < NPAIRS; p++)
        printf("%s (%d -> %d) %.1e / %.1e", p % 4 ? "," : "\n     ", step_pairs[p][0], step_pairs[p][1], pair64[p],
               pair32[p]);
    printf("\n");
    df_free(prev), df_free(x0), df_free(w_prev), df_free(w_x0), df_free(w_prev32), df_free(w_x032);
    st_close(&f);
done:
    df_free(xs), df_free(mos), df_free(zs), df_free(ts), df_free(e), df_free(names), df_free(flags), df_free(keys);
    df_free(kv);
}

static const struct { const char *name; double b0, b1; } other_scheds[] = {
    {"scaled_linear", 0.00085, 0.012}, {"squaredcos_cap_v2", 1e-4, 0.02}, {"sigmoid", 1e-4, 0.02}};

TEST(sampler_ddpm_step_matches_diffusers) {
    step_case *cases = df_malloc(1000 * sizeof(step_case));
    int nc = 0;
    for (int p = 0; p < NPAIRS; p++)
        for (int pr = 0; pr < 3; pr++)
            for (int mode = 0; mode < 5; mode++)
                for (int vl = 0; vl < 2; vl++)
                    cases[nc++] = (step_case){step_pairs[p][0], step_pairs[p][1], (df_prediction)pr, mode, vl, 0, 1,
                                              "linear", 1e-4, 0.02};
    for (int o = 0; o < 3; o++)
        for (int p = 0; p < NPAIRS; p++)
            for (int pr = 0; pr < 3; pr++)
                for (int vl = 0; vl < 2; vl++)
                    cases[nc++] = (step_case){step_pairs[p][0], step_pairs[p][1], (df_prediction)pr, pr == 1 ? 1 : 0, vl,
                                              0, 1, other_scheds[o].name, other_scheds[o].b0, other_scheds[o].b1};
    compare_steps(0, cases, nc);
    df_free(cases);
}

TEST(sampler_ddim_step_matches_diffusers) {
    step_case *cases = df_malloc(2000 * sizeof(step_case));
    int nc = 0;
    const double etas[3] = {0, 0.5, 1};
    for (int p = 0; p < NPAIRS; p++)
        for (int pr = 0; pr < 3; pr++)
            for (int mode = 0; mode < 5; mode++)
                for (int ei = 0; ei < 3; ei++)
                    for (int sato = 0; sato < 2; sato++)
                        cases[nc++] = (step_case){step_pairs[p][0], step_pairs[p][1], (df_prediction)pr, mode, 0,
                                                  etas[ei], sato, "linear", 1e-4, 0.02};
    for (int o = 0; o < 3; o++)
        for (int p = 0; p < NPAIRS; p++)
            for (int pr = 0; pr < 3; pr++)
                for (int ei = 0; ei < 3; ei += 2)
                    cases[nc++] = (step_case){step_pairs[p][0], step_pairs[p][1], (df_prediction)pr, pr == 1 ? 1 : 0, 0,
                                              etas[ei], ei == 0, other_scheds[o].name, other_scheds[o].b0,
                                              other_scheds[o].b1};
    compare_steps(1, cases, nc);
    df_free(cases);
}

/* ==== the analytic model: data N(m, sd^2 I) ==== */

typedef struct {
    const df_schedule *s;
    double m, sd;
    df_prediction pred; /* what the "network" outputs */
    size_t D;
    int calls;
} gauss_ctx;

/* The exact epsilon of x at noise level a: E[eps | x_t] = sqrt(1 - a) (x - sqrt(a) m) / (a sd^2 + 1 - a). */
static double gauss_eps(const gauss_ctx *g, double x, double a) {
    return sqrt(1 - a) * (x - sqrt(a) * g->m) / (a * g->sd * g->sd + 1 - a);
}

static void gauss_model(void *ctx, float *out, const float *x, const float *t, size_t B) {
    gauss_ctx *g = ctx;
    g->calls++;
    for (size_t b = 0; b < B; b++) {
        int ti = (int)t[b];
        if (ti < 0 || ti >= g->s->T || (float)ti != t[b]) {
            fprintf(stderr, "gauss_model: bad timestep %g\n", t[b]);
            abort();
        }
        double a = g->s->abar[ti];
        for (size_t i = 0; i < g->D; i++) {
            double xi = x[b * g->D + i], e = gauss_eps(g, xi, a), o;
            if (g->pred == DF_PRED_EPSILON) o = e;
            else if (g->pred == DF_PRED_SAMPLE) o = (xi - sqrt(1 - a) * e) / sqrt(a);
            else o = (e - sqrt(1 - a) * xi) / sqrt(a); /* v = sqrt(a) eps - sqrt(1 - a) x0 */
            out[b * g->D + i] = (float)o;
        }
    }
}

/* Deterministic DDIM (Euler in sigma) on the analytic model, in double: the discrete solution. */
static void gauss_ddim_double(double *x, size_t n, const gauss_ctx *g, const int *taus, int S) {
    for (int i = 0; i < S; i++) {
        double a = g->s->abar[taus[i]], ap = i + 1 < S ? g->s->abar[taus[i + 1]] : 1.0;
        for (size_t k = 0; k < n; k++) {
            double e = gauss_eps(g, x[k], a), x0 = (x[k] - sqrt(1 - a) * e) / sqrt(a);
            x[k] = sqrt(ap) * x0 + sqrt(1 - ap) * e;
        }
    }
}

static int make_taus(int *taus, int cap, int S, const char *spacing) {
    df_spacing sp;
    EXPECT(df_spacing_parse(&sp, spacing) == 0, "%s", df_errmsg());
    int n = df_timesteps(taus, cap, S, 1000, sp, 0);
    EXPECT(n > 0, "df_timesteps(%d, %s): %s", S, spacing, df_errmsg());
    return n;
}

TEST(sampler_gaussian_analytic) {
    df_schedule s;
    if (sched_make(&s, "linear", 1e-4, 0.02, 1000)) return;
    s.clip_sample = 0;
    const double m = 0.3, sd = 0.5;
    const size_t B = 4, D = 64, n = B * D;
    int taus[1000];
    float *x = df_malloc(n * sizeof(float)), *xT = df_malloc(n * sizeof(float)), *ex = df_malloc(n * sizeof(float));
    float *eul = df_malloc(n * sizeof(float));
    double *xd = df_malloc(n * sizeof(double));

    /* 1. Deterministic DDIM -> the exact ODE solution x_0 = m + sd (x_T - sqrt(a_T) m) / sqrt(a_T sd^2 + 1 - a_T);
     * DDIM is Euler's method, so the error is first order in the step: it must halve when S doubles. */
    const int Ss[] = {50, 100, 200, 500, 1000};
    double err[5];
    printf("    DDIM eta 0 (leading) vs the exact ODE solution, relative L2 error:\n");
    for (int j = 0; j < 5; j++) {
        int S = make_taus(taus, 1000, Ss[j], "leading");
        gauss_ctx g = {&s, m, sd, DF_PRED_EPSILON, D, 0};
        df_initial_noise(xT, B, D, 11, 0);
        memcpy(x, xT, n * sizeof(float));
        df_sampler sp = {.kind = DF_SAMPLER_DDIM, .eta = 0, .clip = 0, .taus = taus, .S = S, .seed = 11};
        df_sample(x, B, D, &s, &sp, 0, gauss_model, &g);
        EXPECT(g.calls == S, "S = %d: the model was called %d times", S, g.calls);
        double aT = s.abar[taus[0]];
        for (size_t k = 0; k < n; k++) {
            ex[k] = (float)(m + sd * (xT[k] - sqrt(aT) * m) / sqrt(aT * sd * sd + 1 - aT));
            xd[k] = xT[k];
        }
        gauss_ddim_double(xd, n, &g, taus, S);
        for (size_t k = 0; k < n; k++) eul[k] = (float)xd[k];
        err[j] = df_rel_err(x, ex, n);
        double e_eul = df_rel_err(x, eul, n), e_trunc = df_rel_err(eul, ex, n);
        printf("      S = %4d: vs ODE %.3e (S * err = %.2f; Euler in double vs ODE %.3e); vs Euler in double %.2e\n", S,
               err[j], S * err[j], e_trunc, e_eul);
        EXPECT(e_eul <= 2e-5, "S = %d: DDIM differs from the same Euler steps in double by %.3e", S, e_eul);
        if (j) EXPECT(err[j] < err[j - 1], "the ODE error did not fall from S = %d to %d (%.3e -> %.3e)", Ss[j - 1], S,
                      err[j - 1], err[j]);
        /* first order: S * err is about constant (2.9 measured for this schedule and data) */
        EXPECT(S * err[j] > 2.0 && S * err[j] < 4.0, "S = %d: S * error = %.3f is not first-order convergence", S,
               S * err[j]);
    }
    EXPECT(err[4] <= 4e-3, "DDIM with S = 1000 is %.3e from the exact ODE solution", err[4]);

    /* 2. The same chain with the network predicting x_0 or v instead of epsilon (the sampler converts). */
    for (int S0 = 500; S0 <= 1000; S0 += 500) {
        int S = make_taus(taus, 1000, S0, "leading");
        df_initial_noise(xT, B, D, 11, 0);
        for (size_t k = 0; k < n; k++) xd[k] = xT[k];
        gauss_ctx g0 = {&s, m, sd, DF_PRED_EPSILON, D, 0};
        gauss_ddim_double(xd, n, &g0, taus, S);
        for (size_t k = 0; k < n; k++) eul[k] = (float)xd[k];
        for (int p = 1; p < 3; p++) {
            df_schedule sp_s = s;
            sp_s.prediction = (df_prediction)p;
            gauss_ctx g = {&s, m, sd, (df_prediction)p, D, 0};
            memcpy(x, xT, n * sizeof(float));
            df_sampler sp = {.kind = DF_SAMPLER_DDIM, .eta = 0, .clip = 0, .taus = taus, .S = S, .seed = 11};
            df_sample(x, B, D, &sp_s, &sp, 0, gauss_model, &g);
            char name[96];
            snprintf(name, sizeof name, "DDIM S=%d, %s prediction vs epsilon's Euler", S, pred_names[p]);
            EXPECT_CLOSE(name, x, eul, n, 1e-4);
        }
    }

    /* 3. DDPM (1000 steps) samples: mean m and variance sd^2. Per element the chain is linear-Gaussian, so its
     * exact output moments follow by recursion (fixed_small slightly under-disperses: 0.2461 for 0.25); the sample
     * moments of N values must match those within 5 standard errors, and the targets within 5 standard errors plus
     * that bias. */
    {
        const size_t BB = 256, NN = BB * D;
        float *xs = df_malloc(NN * sizeof(float));
        int S = make_taus(taus, 1000, 1000, "leading");
        enum { NBLK = 16 };
        double blkvar[2][NBLK], chainvar[2];
        for (int vl = 0; vl < 2; vl++) {
            df_schedule sv = s;
            sv.variance_fixed_large = vl;
            gauss_ctx g = {&s, m, sd, DF_PRED_EPSILON, D, 0};
            df_initial_noise(xs, BB, D, 21, 0);
            df_sampler sp = {.kind = DF_SAMPLER_DDPM, .clip = 0, .taus = taus, .S = S, .seed = 21};
            df_sample(xs, BB, D, &sv, &sp, 0, gauss_model, &g);
            double mu = 0, var = 0;
            for (size_t k = 0; k < NN; k++) mu += xs[k];
            mu /= NN;
            for (size_t k = 0; k < NN; k++) var += (xs[k] - mu) * (xs[k] - mu);
            var /= NN - 1;
            /* the exact chain */
            double cm = 0, cv = 1;
            for (int i = 0; i < S; i++) {
                double a = s.abar[taus[i]], ap = i + 1 < S ? s.abar[taus[i + 1]] : 1.0, beta = 1 - a / ap;
                double k = sqrt(1 - a) / (a * sd * sd + 1 - a);
                double A0 = (1 - sqrt(1 - a) * k) / sqrt(a), B0 = sqrt(1 - a) * k * m; /* x0 = A0 x + B0 */
                double c0 = sqrt(ap) * beta / (1 - a), ct = sqrt(1 - beta) * (1 - ap) / (1 - a);
                double A = c0 * A0 + ct, Bc = c0 * B0;
                double v = i + 1 < S ? (vl ? beta : (1 - ap) / (1 - a) * beta) : 0;
                cm = A * cm + Bc, cv = A * A * cv + v;
            }
            double se_m = sqrt(cv / NN), se_v = cv * sqrt(2.0 / (NN - 1));
            chainvar[vl] = cv;
            for (int q = 0; q < NBLK; q++) {
                const float *xq = xs + q * (NN / NBLK);
                double bm = 0, bv = 0;
                for (size_t k = 0; k < NN / NBLK; k++) bm += xq[k];
                bm /= NN / NBLK;
                for (size_t k = 0; k < NN / NBLK; k++) bv += (xq[k] - bm) * (xq[k] - bm);
                blkvar[vl][q] = bv / (NN / NBLK - 1);
            }
            printf("    DDPM %s, %zu values: mean %.5f (chain %.5f, target %.3f, se %.4f)  variance %.5f (chain %.5f, "
                   "target %.4f, se %.4f)\n", vl ? "fixed_large" : "fixed_small", NN, mu, cm, m, se_m, var, cv,
                   sd * sd, se_v);
            EXPECT(fabs(mu - cm) <= 5 * se_m, "DDPM mean %.5f vs the chain's %.5f (5 se = %.4f)", mu, cm, 5 * se_m);
            EXPECT(fabs(var - cv) <= 5 * se_v, "DDPM variance %.5f vs the chain's %.5f (5 se = %.4f)", var, cv,
                   5 * se_v);
            if (!vl) {
                EXPECT(fabs(mu - m) <= 5 * se_m + fabs(cm - m), "DDPM mean %.5f vs m = %.3f", mu, m);
                EXPECT(fabs(var - sd * sd) <= 5 * se_v + fabs(cv - sd * sd), "DDPM variance %.5f vs sd^2 = %.4f", var,
                       sd * sd);
                EXPECT(fabs(cv - sd * sd) < 0.01, "the fixed_small chain's variance %.5f is far from %.4f", cv, sd * sd);
            }
        }
        /* fixed_large adds 0.0046 of variance over fixed_small, under 2 se of either alone; with the same seed the two
         * runs share their noise, so the difference is measured far more precisely (its se from 16 blocks) */
        double dm = 0, dv = 0;
        for (int q = 0; q < NBLK; q++) dm += blkvar[1][q] - blkvar[0][q];
        dm /= NBLK;
        for (int q = 0; q < NBLK; q++) dv += (blkvar[1][q] - blkvar[0][q] - dm) * (blkvar[1][q] - blkvar[0][q] - dm);
        double se_d = sqrt(dv / (NBLK - 1) / NBLK), cd = chainvar[1] - chainvar[0];
        printf("    DDPM variance fixed_large - fixed_small (same seed): %.5f (chain %.5f, se %.5f)\n", dm, cd, se_d);
        EXPECT(fabs(dm - cd) <= 5 * se_d && 5 * se_d < fabs(cd) / 2,
               "variance fixed_large - fixed_small = %.5f vs the chains' %.5f (se %.5f)", dm, cd, se_d);
        df_free(xs);
    }
    df_free(x), df_free(xT), df_free(ex), df_free(eul), df_free(xd);
    df_schedule_free(&s);
}

/* ==== DDIM with eta = 1 is DDPM (fixed_small) ==== */

TEST(sampler_ddim_eta1_equals_ddpm) {
    df_schedule s;
    if (sched_make(&s, "linear", 1e-4, 0.02, 1000)) return;
    s.clip_sample = 0, s.variance_fixed_large = 0, s.set_alpha_to_one = 1;
    const size_t B = 4, D = 64, n = B * D;
    int taus[1000];
    float *xa = df_malloc(n * sizeof(float)), *xb = df_malloc(n * sizeof(float)), *oa = df_malloc(n * sizeof(float));
    float *ob = df_malloc(n * sizeof(float)), *z = df_malloc(n * sizeof(float)), *tf = df_malloc(B * sizeof(float));
    float *x0a = df_malloc(n * sizeof(float)), *x0b = df_malloc(n * sizeof(float));
    gauss_ctx g = {&s, 0.3, 0.5, DF_PRED_EPSILON, D, 0};
    const int Ss[2] = {1000, 50};
    for (int j = 0; j < 2; j++) {
        /* step by step, the same z for both */
        int S = make_taus(taus, 1000, Ss[j], "leading");
        df_initial_noise(xa, B, D, 5, 0);
        memcpy(xb, xa, n * sizeof(float));
        double worst = 0, worst_x0 = 0;
        int worst_i = 0;
        for (int i = 0; i < S; i++) {
            int t = taus[i], tp = i + 1 < S ? taus[i + 1] : -1;
            for (size_t b = 0; b < B; b++) tf[b] = (float)t;
            normal_fill(z, n, 55, (uint32_t)i, 1.0f);
            gauss_model(&g, oa, xa, tf, B);
            gauss_model(&g, ob, xb, tf, B);
            df_ddpm_step(xa, x0a, xa, oa, t, tp, z, B, D, &s, 0);
            df_ddim_step(xb, x0b, xb, ob, t, tp, 1.0, z, B, D, &s, 0);
            double e = df_rel_err(xb, xa, n), e0 = df_rel_err(x0b, x0a, n);
            if (!(e <= worst)) worst = e, worst_i = i;
            if (!(e0 <= worst_x0)) worst_x0 = e0;
        }
        printf("    S = %4d step by step: worst relative difference of x over all steps %.2e (step %d), of x0 %.2e\n", S,
               worst, worst_i, worst_x0);
        EXPECT(worst <= 1e-5, "S = %d: DDIM eta 1 and DDPM differ by %.3e at step %d", S, worst, worst_i);
        EXPECT(worst_x0 <= 1e-5, "S = %d: their x0 predictions differ by %.3e", S, worst_x0);

        /* df_sample with the same seed, the whole trajectory recorded */
        float *ta = df_malloc((size_t)S * n * sizeof(float)), *tb = df_malloc((size_t)S * n * sizeof(float));
        int *rec = df_malloc(S * sizeof(int));
        for (int i = 0; i < S; i++) rec[i] = i;
        df_sampler pa = {.kind = DF_SAMPLER_DDPM, .clip = 0, .taus = taus, .S = S, .seed = 9, .record = rec, .traj = ta};
        df_sampler pb = {.kind = DF_SAMPLER_DDIM, .eta = 1.0, .clip = 0, .taus = taus, .S = S, .seed = 9, .record = rec,
                         .traj = tb};
        df_initial_noise(xa, B, D, 9, 0);
        memcpy(xb, xa, n * sizeof(float));
        df_sample(xa, B, D, &s, &pa, 0, gauss_model, &g);
        df_sample(xb, B, D, &s, &pb, 0, gauss_model, &g);
        worst = 0;
        for (int i = 0; i < S; i++) {
            double e = df_rel_err(tb + (size_t)i * n, ta + (size_t)i * n, n);
            if (!(e <= worst)) worst = e, worst_i = i;
        }
        printf("    S = %4d df_sample, same seed: worst relative difference over the trajectory %.2e (step %d)\n", S,
               worst, worst_i);
        EXPECT(worst <= 1e-5, "S = %d: df_sample DDIM eta 1 and DDPM (seed 9) differ by %.3e at step %d", S, worst,
               worst_i);
        char name[64];
        snprintf(name, sizeof name, "S=%d final x, DDIM eta 1 vs DDPM", S);
        EXPECT_CLOSE(name, xb, xa, n, 1e-5);
        df_free(ta), df_free(tb), df_free(rec);
    }
    df_free(xa), df_free(xb), df_free(oa), df_free(ob), df_free(z), df_free(tf), df_free(x0a), df_free(x0b);
    df_schedule_free(&s);
}

/* ==== batch layout and threads ==== */

typedef struct { size_t D; } cheap_ctx;

/* A deterministic model where each sample depends on its own row only. */
static void cheap_model(void *ctx, float *out, const float *x, const float *t, size_t B) {
    size_t D = ((cheap_ctx *)ctx)->D;
    for (size_t b = 0; b < B; b++)
        for (size_t i = 0; i < D; i++) {
            float xi = x[b * D + i], xn = x[b * D + (i + 1) % D];
            out[b * D + i] = 0.8f * xi + 0.1f * sinf(xi + 0.001f * t[b]) + 0.05f * xn;
        }
}

static void unet_model(void *ctx, float *out, const float *x, const float *t, size_t B) {
    df_unet_forward((df_unet *)ctx, out, x, t, B);
}

/* Samples N images of seed `seed` in batches of sizes[0], sizes[1], ... (first_index following). */
static void sample_layout(float *x, size_t N, size_t D, const df_schedule *s, const df_sampler *sp, const int *sizes,
                          int nb, df_model_fn model, void *ctx) {
    size_t first = 0;
    for (int k = 0; k < nb; k++) {
        df_initial_noise(x + first * D, sizes[k], D, sp->seed, first);
        df_sample(x + first * D, sizes[k], D, s, sp, first, model, ctx);
        first += sizes[k];
    }
    EXPECT(first == N, "layout covers %zu of %zu", first, N);
}

TEST(sampler_batch_and_thread_invariance) {
    df_schedule s;
    if (sched_make(&s, "linear", 1e-4, 0.02, 1000)) return;
    const size_t N = 8, D = 48;
    int taus[1000];
    int S = make_taus(taus, 1000, 20, "leading");
    cheap_ctx cc = {D};
    const int lay_one[] = {8}, lay_ones[] = {1, 1, 1, 1, 1, 1, 1, 1}, lay_35[] = {3, 5};
    float *a = df_malloc(N * D * sizeof(float)), *b = df_malloc(N * D * sizeof(float)), *c = df_malloc(N * D * sizeof(float));
    for (int kind = 0; kind < 2; kind++) {
        df_sampler sp = {.kind = kind ? DF_SAMPLER_DDIM : DF_SAMPLER_DDPM, .eta = 0.5, .clip = 1, .taus = taus, .S = S,
                         .seed = 1234};
        sample_layout(a, N, D, &s, &sp, lay_one, 1, cheap_model, &cc);
        sample_layout(b, N, D, &s, &sp, lay_ones, 8, cheap_model, &cc);
        sample_layout(c, N, D, &s, &sp, lay_35, 2, cheap_model, &cc);
        const char *kn = kind ? "DDIM eta 0.5" : "DDPM";
        EXPECT(!memcmp(a, b, N * D * sizeof(float)), "%s: 8 images as 8 batches of 1 differ from one batch of 8 (rel %.3e)",
               kn, df_rel_err(b, a, N * D));
        EXPECT(!memcmp(a, c, N * D * sizeof(float)), "%s: 8 images as 3 + 5 differ from one batch of 8 (rel %.3e)", kn,
               df_rel_err(c, a, N * D));
        int finite = 1, distinct = 1;
        for (size_t i = 0; i < N * D; i++) finite &= isfinite(a[i]) != 0;
        for (size_t i = 1; i < N; i++) distinct &= memcmp(a, a + i * D, D * sizeof(float)) != 0;
        EXPECT(finite && distinct, "%s: images not finite or not distinct", kn);
        /* a different seed gives different images */
        sp.seed = 1235;
        sample_layout(b, N, D, &s, &sp, lay_one, 1, cheap_model, &cc);
        EXPECT(memcmp(a, b, N * D * sizeof(float)) != 0, "%s: seeds 1234 and 1235 give the same images", kn);
        printf("    %s, 20 steps: 8 | 1x8 | 3+5 bitwise identical: %s\n", kn,
               !memcmp(a, c, N * D * sizeof(float)) ? "yes" : "no");
    }
    df_free(a), df_free(b), df_free(c);

    /* the real U-Net: 3 DDIM steps (eta 0.5), 4 images as 4 and as 1 + 3, on 1 and 2 threads */
    df_unet_config cfg;
    EXPECT(df_unet_preset(&cfg, "tiny") == 0, "%s", df_errmsg());
    df_unet *m = df_unet_create(&cfg);
    EXPECT(m != NULL, "%s", df_errmsg());
    if (!m) goto out;
    df_unet_init_weights(m, 3);
    {
        const size_t NU = 4, DU = (size_t)cfg.in_channels * cfg.sample_size * cfg.sample_size;
        int tu[3];
        int SU = make_taus(tu, 3, 3, "leading");
        df_sampler sp = {.kind = DF_SAMPLER_DDIM, .eta = 0.5, .clip = 1, .taus = tu, .S = SU, .seed = 77};
        const int l4[] = {4}, l13[] = {1, 3};
        float *r[4];
        for (int k = 0; k < 4; k++) r[k] = df_malloc(NU * DU * sizeof(float));
        int saved = omp_get_max_threads();
        for (int th = 1; th <= 2; th++) {
            df_set_threads(th);
            sample_layout(r[2 * (th - 1)], NU, DU, &s, &sp, l4, 1, unet_model, m);
            sample_layout(r[2 * (th - 1) + 1], NU, DU, &s, &sp, l13, 2, unet_model, m);
        }
        df_set_threads(saved);
        const char *what[4] = {"1 thread, batch 4", "1 thread, 1 + 3", "2 threads, batch 4", "2 threads, 1 + 3"};
        for (int k = 1; k < 4; k++)
            EXPECT(!memcmp(r[0], r[k], NU * DU * sizeof(float)), "U-Net DDIM: %s differs from %s (rel %.3e)", what[k],
                   what[0], df_rel_err(r[k], r[0], NU * DU));
        int finite = 1;
        for (size_t i = 0; i < NU * DU; i++) finite &= isfinite(r[0][i]) != 0;
        EXPECT(finite, "U-Net samples are not finite");
        printf("    tiny U-Net, DDIM eta 0.5, %d steps: batch 4 / 1+3 x threads 1 / 2 bitwise identical: %s\n", SU,
               !memcmp(r[0], r[1], NU * DU * 4) && !memcmp(r[0], r[2], NU * DU * 4) && !memcmp(r[0], r[3], NU * DU * 4)
                   ? "yes" : "no");
        for (int k = 0; k < 4; k++) df_free(r[k]);
    }
    df_unet_destroy(m);
out:
    df_schedule_free(&s);
}

/* ==== DDIM inversion and decoding ==== */

static void count_step(void *ctx, int i, int S) {
    int *c = ctx;
    if (i == c[0] + 1 && S == c[1]) c[0]++;
    else c[2]++; /* out of order */
}

TEST(sampler_encode_decode_error_falls) {
    df_schedule s;
    if (sched_make(&s, "linear", 1e-4, 0.02, 1000)) return;
    s.clip_sample = 0, s.set_alpha_to_one = 1;
    const double m = 0.3, sd = 0.5;
    const size_t B = 4, D = 64, n = B * D;
    float *x0 = df_malloc(n * sizeof(float)), *x = df_malloc(n * sizeof(float)), *ref = df_malloc(n * sizeof(float));
    double *xd = df_malloc(n * sizeof(double));
    normal_fill(x0, n, 31, 0, (float)sd);
    for (size_t k = 0; k < n; k++) x0[k] += (float)m;
    gauss_ctx g = {&s, m, sd, DF_PRED_EPSILON, D, 0};
    const int Ss[] = {10, 20, 50, 100};
    double prev = INFINITY;
    int taus[1000];
    for (int j = 0; j < 4; j++) {
        int S = make_taus(taus, 1000, Ss[j], "leading");
        memcpy(x, x0, n * sizeof(float));
        int cnt[3] = {0, S, 0};
        g.calls = 0;
        df_ddim_invert(x, B, D, &s, taus, S, gauss_model, &g, count_step, cnt);
        EXPECT(cnt[0] == S && cnt[2] == 0, "invert S = %d: on_step called %d times in order, %d out of order", S,
               cnt[0], cnt[2]);
        EXPECT(g.calls == S, "invert S = %d: %d model calls", S, g.calls);
        /* the contract in double: from abar = 1 up the sequence, each step with the model at its destination */
        for (size_t k = 0; k < n; k++) xd[k] = x0[k];
        double asrc = 1.0;
        for (int i = S - 1; i >= 0; i--) {
            double a = s.abar[taus[i]];
            for (size_t k = 0; k < n; k++) {
                double e = gauss_eps(&g, xd[k], a), xx0 = (xd[k] - sqrt(1 - asrc) * e) / sqrt(asrc);
                xd[k] = sqrt(a) * xx0 + sqrt(1 - a) * e;
            }
            asrc = a;
        }
        for (size_t k = 0; k < n; k++) ref[k] = (float)xd[k];
        double e_inv = df_rel_err(x, ref, n);
        EXPECT(e_inv <= 1e-5, "invert S = %d: differs from the contract's steps in double by %.3e", S, e_inv);
        /* decode */
        df_sampler sp = {.kind = DF_SAMPLER_DDIM, .eta = 0, .clip = 0, .taus = taus, .S = S, .seed = 1};
        df_sample(x, B, D, &s, &sp, 0, gauss_model, &g);
        double mse = 0;
        for (size_t k = 0; k < n; k++) mse += ((double)x[k] - x0[k]) * ((double)x[k] - x0[k]);
        mse /= n;
        printf("    S = %3d: encode vs contract in double %.2e; reconstruction MSE %.3e (S^2 MSE %.2f, rel L2 %.3e)\n", S,
               e_inv, mse, S * S * mse, df_rel_err(x, x0, n));
        EXPECT(mse < prev, "reconstruction MSE did not fall at S = %d (%.3e after %.3e)", S, mse, prev);
        /* first order in the step both ways: the MSE falls as 1 / S^2 (S^2 MSE measured 2.3..2.7) */
        EXPECT(S * S * mse > 1.5 && S * S * mse < 4, "S = %d: S^2 MSE = %.3f, not first-order convergence", S,
               S * S * mse);
        EXPECT(isfinite(mse), "S = %d: non-finite reconstruction", S);
        prev = mse;
    }
    EXPECT(prev < 4e-4, "S = 100: reconstruction MSE %.3e", prev);
    /* the network predicting x_0 or v: the sampler converts (in inversion, at the model's timestep); the round trip
     * must converge the same way */
    for (int p = 1; p < 3; p++) {
        df_schedule sp_s = s;
        sp_s.prediction = (df_prediction)p;
        gauss_ctx gp = {&s, m, sd, (df_prediction)p, D, 0};
        double last = INFINITY;
        printf("    %s prediction: reconstruction MSE", pred_names[p]);
        for (int j = 0; j < 4; j++) {
            int S = make_taus(taus, 1000, Ss[j], "leading");
            memcpy(x, x0, n * sizeof(float));
            df_ddim_invert(x, B, D, &sp_s, taus, S, gauss_model, &gp, NULL, NULL);
            df_sampler sp = {.kind = DF_SAMPLER_DDIM, .eta = 0, .clip = 0, .taus = taus, .S = S, .seed = 1};
            df_sample(x, B, D, &sp_s, &sp, 0, gauss_model, &gp);
            double mse = 0;
            for (size_t k = 0; k < n; k++) mse += ((double)x[k] - x0[k]) * ((double)x[k] - x0[k]);
            mse /= n;
            printf("%s%.3e (S=%d)", j ? ", " : " ", mse, S);
            EXPECT(mse < last && S * S * mse < 4, "%s prediction, S = %d: MSE %.3e (previous %.3e)", pred_names[p], S,
                   mse, last);
            last = mse;
        }
        printf("\n");
    }
    df_free(x0), df_free(x), df_free(ref), df_free(xd);
    df_schedule_free(&s);
}

/* ==== trajectories ==== */

typedef struct { size_t D; } lin_ctx;

/* A model whose x0 predictions leave [-1, 1], so clipping acts. */
static void wild_model(void *ctx, float *out, const float *x, const float *t, size_t B) {
    size_t D = ((lin_ctx *)ctx)->D;
    for (size_t i = 0; i < B * D; i++) out[i] = 1.5f * x[i] + 0.2f * cosf(0.01f * t[i / D]);
}

TEST(sampler_trajectory_recording) {
    df_schedule s;
    if (sched_make(&s, "linear", 1e-4, 0.02, 1000)) return;
    s.clip_sample = 0; /* the sampler's clip field is what counts */
    const size_t B = 3, D = 40, n = B * D;
    int taus[16];
    int S = make_taus(taus, 16, 10, "trailing");
    lin_ctx lc = {D};
    float *x = df_malloc(n * sizeof(float)), *xm = df_malloc(n * sizeof(float)), *out = df_malloc(n * sizeof(float));
    float *x0m = df_malloc((size_t)S * n * sizeof(float)), *xsm = df_malloc((size_t)S * n * sizeof(float));
    float *traj = df_malloc(4 * n * sizeof(float)), *trajx0 = df_malloc(4 * n * sizeof(float));
    float tf[3];
    /* the manual chain: deterministic DDIM with clipping, step by step */
    df_initial_noise(xm, B, D, 8, 0);
    memcpy(x, xm, n * sizeof(float));
    for (int i = 0; i < S; i++) {
        for (size_t b = 0; b < B; b++) tf[b] = (float)taus[i];
        wild_model(&lc, out, xm, tf, B);
        df_ddim_step(xm, x0m + (size_t)i * n, xm, out, taus[i], i + 1 < S ? taus[i + 1] : -1, 0.0, NULL, B, D, &s, 1);
        memcpy(xsm + (size_t)i * n, xm, n * sizeof(float));
    }
    int clipped = 0;
    for (size_t k = 0; k < (size_t)S * n; k++) clipped += fabsf(x0m[k]) == 1.0f;
    EXPECT(clipped > 0, "the test model never makes clipping act");
    /* record steps 1, 4, 7 and the last (S - 1) into slots 2, 0, 3, 1 */
    int rec[16];
    for (int i = 0; i < S; i++) rec[i] = -1;
    rec[1] = 2, rec[4] = 0, rec[7] = 3, rec[S - 1] = 1;
    const int slot_step[4] = {4, S - 1, 1, 7};
    for (int want_x0 = 0; want_x0 < 2; want_x0++) {
        float *tr = want_x0 ? trajx0 : traj;
        for (size_t k = 0; k < 4 * n; k++) tr[k] = NAN;
        int cnt[3] = {0, S, 0};
        df_sampler sp = {.kind = DF_SAMPLER_DDIM, .eta = 0, .clip = 1, .taus = taus, .S = S, .seed = 8, .record = rec,
                         .traj = want_x0 ? NULL : tr, .traj_x0 = want_x0 ? tr : NULL, .on_step = count_step,
                         .step_ctx = cnt};
        df_initial_noise(x, B, D, 8, 0);
        df_sample(x, B, D, &s, &sp, 0, wild_model, &lc);
        EXPECT(cnt[0] == S && cnt[2] == 0, "on_step: %d in-order calls of %d, %d out of order", cnt[0], S, cnt[2]);
        char name[96];
        snprintf(name, sizeof name, "final x vs the manual chain (record_x0 %d)", want_x0);
        EXPECT_CLOSE(name, x, xsm + (size_t)(S - 1) * n, n, 1e-6);
        for (int sl = 0; sl < 4; sl++) {
            int i = slot_step[sl];
            snprintf(name, sizeof name, "slot %d = %s after step %d", sl, want_x0 ? "x0" : "x", i);
            EXPECT_CLOSE(name, tr + sl * n, (want_x0 ? x0m : xsm) + (size_t)i * n, n, 1e-6);
        }
        if (!want_x0) EXPECT(!memcmp(tr + n, x, n * sizeof(float)), "the last recorded x is not the final x");
    }
    { /* both at once, in one run, equal the two separate recordings */
        float *tb = df_malloc(4 * n * sizeof(float)), *tb0 = df_malloc(4 * n * sizeof(float));
        df_sampler sp = {.kind = DF_SAMPLER_DDIM, .eta = 0, .clip = 1, .taus = taus, .S = S, .seed = 8, .record = rec,
                         .traj = tb, .traj_x0 = tb0};
        df_initial_noise(x, B, D, 8, 0);
        df_sample(x, B, D, &s, &sp, 0, wild_model, &lc);
        EXPECT(!memcmp(tb, traj, 4 * n * sizeof(float)) && !memcmp(tb0, trajx0, 4 * n * sizeof(float)),
               "recording x and x0 together differs from recording each alone");
        df_free(tb), df_free(tb0);
    }

    /* a noisy chain (DDPM): recording a subset gives the same slots as recording everything */
    {
        int S2 = make_taus(taus, 16, 12, "linspace");
        float *all = df_malloc((size_t)S2 * n * sizeof(float)), *xa = df_malloc(n * sizeof(float));
        int recall[16], recsub[16];
        for (int i = 0; i < S2; i++) recall[i] = i, recsub[i] = -1;
        recsub[0] = 0, recsub[5] = 1, recsub[S2 - 1] = 2;
        df_sampler pa = {.kind = DF_SAMPLER_DDPM, .clip = 1, .taus = taus, .S = S2, .seed = 4, .record = recall,
                         .traj = all};
        df_sampler pb = pa;
        pb.record = recsub, pb.traj = traj;
        df_initial_noise(xa, B, D, 4, 0);
        df_sample(xa, B, D, &s, &pa, 0, wild_model, &lc);
        df_initial_noise(x, B, D, 4, 0);
        df_sample(x, B, D, &s, &pb, 0, wild_model, &lc);
        EXPECT(!memcmp(x, xa, n * sizeof(float)), "DDPM: recording changed the result");
        EXPECT(!memcmp(traj, all, n * sizeof(float)) && !memcmp(traj + n, all + 5 * n, n * sizeof(float)) &&
                   !memcmp(traj + 2 * n, all + (size_t)(S2 - 1) * n, n * sizeof(float)),
               "DDPM: a subset recording differs from the full recording");
        EXPECT(!memcmp(all + (size_t)(S2 - 1) * n, xa, n * sizeof(float)), "DDPM: the last recorded x is not the final x");
        df_free(all), df_free(xa);
    }
    df_free(x), df_free(xm), df_free(out), df_free(x0m), df_free(xsm), df_free(traj), df_free(trajx0);
    df_schedule_free(&s);
}

/* ==== slerp ==== */

TEST(sampler_slerp) {
    const size_t D = 4096;
    float *a = df_malloc(D * sizeof(float)), *b = df_malloc(D * sizeof(float)), *o = df_malloc(D * sizeof(float));
    float *w = df_malloc(D * sizeof(float));
    normal_fill(a, D, 71, 0, 1.0f);
    normal_fill(b, D, 72, 0, 1.0f);
    df_slerp(o, a, b, D, 0.0);
    EXPECT(!memcmp(o, a, D * sizeof(float)), "slerp(w = 0) is not a (rel %.3e)", df_rel_err(o, a, D));
    df_slerp(o, a, b, D, 1.0);
    EXPECT(!memcmp(o, b, D * sizeof(float)), "slerp(w = 1) is not b (rel %.3e)", df_rel_err(o, b, D));
    double dot = 0, na = 0, nb = 0;
    for (size_t i = 0; i < D; i++) dot += (double)a[i] * b[i], na += (double)a[i] * a[i], nb += (double)b[i] * b[i];
    double th = acos(dot / sqrt(na * nb)), worst_norm = 0, worst_formula = 0;
    for (int k = 1; k < 10; k++) {
        double wt = k / 10.0, nrm = 0;
        df_slerp(o, a, b, D, wt);
        for (size_t i = 0; i < D; i++) {
            nrm += (double)o[i] * o[i];
            w[i] = (float)(sin((1 - wt) * th) / sin(th) * a[i] + sin(wt * th) / sin(th) * b[i]);
        }
        double dev = fabs(sqrt(nrm / D) - 1);
        if (dev > worst_norm) worst_norm = dev;
        double ef = df_rel_err(o, w, D);
        if (!(ef <= worst_formula)) worst_formula = ef;
    }
    printf("    D = %zu, angle %.2f deg: |norm / sqrt(D) - 1| <= %.4f for w = 0.1..0.9 (linear at 0.5 would give %.3f); "
           "vs the formula in double %.2e\n", D, th * 180 / M_PI, worst_norm, sqrt(0.5), worst_formula);
    EXPECT(worst_norm < 0.05, "slerp of two normal vectors: norm off sqrt(D) by %.3f", worst_norm);
    EXPECT(worst_formula <= 1e-5, "slerp differs from its formula by %.3e", worst_formula);
    /* nearly parallel and identical: linear, finite */
    for (int c = 0; c < 2; c++) {
        for (size_t i = 0; i < D; i++) b[i] = c ? a[i] : a[i] * (1 + 1e-7f) + 1e-7f;
        for (int k = 0; k <= 4; k++) {
            double wt = k / 4.0;
            df_slerp(o, a, b, D, wt);
            for (size_t i = 0; i < D; i++) w[i] = (float)((1 - wt) * a[i] + wt * b[i]);
            int finite = 1;
            for (size_t i = 0; i < D; i++) finite &= isfinite(o[i]) != 0;
            double e = df_rel_err(o, w, D);
            EXPECT(finite && e <= 1e-6, "%s vectors, w = %.2f: not finite or not linear (rel %.3e)",
                   c ? "identical" : "nearly parallel", wt, e);
        }
    }
    df_free(a), df_free(b), df_free(o), df_free(w);
}

/* ==== the DDIM paper's sigma-hat ==== */

/* sigma_hat (the DDIM code's "ddpm_noisy" steps): the posterior mean of the respaced chain with the respaced beta
 * as variance, i.e. DDPM fixed_large on the same sequence: df_sample with the same seed must agree. */
TEST(sampler_ddim_sigma_hat_is_ddpm_fixed_large) {
    df_schedule s;
    if (sched_make(&s, "linear", 1e-4, 0.02, 1000)) return;
    s.clip_sample = 0, s.variance_fixed_large = 1, s.set_alpha_to_one = 1;
    const size_t B = 4, D = 64, n = B * D;
    int taus[1000];
    gauss_ctx g = {&s, 0.3, 0.5, DF_PRED_EPSILON, D, 0};
    float *xa = df_malloc(n * sizeof(float)), *xb = df_malloc(n * sizeof(float));
    for (int j = 0; j < 2; j++) {
        int S = make_taus(taus, 1000, j ? 1000 : 50, "leading");
        df_sampler pa = {.kind = DF_SAMPLER_DDPM, .clip = 0, .taus = taus, .S = S, .seed = 3};
        df_sampler pb = {.kind = DF_SAMPLER_DDIM, .eta = 1.0, .sigma_hat = 1, .clip = 0, .taus = taus, .S = S, .seed = 3};
        df_initial_noise(xa, B, D, 3, 0);
        memcpy(xb, xa, n * sizeof(float));
        df_sample(xa, B, D, &s, &pa, 0, gauss_model, &g);
        df_sample(xb, B, D, &s, &pb, 0, gauss_model, &g);
        char name[80];
        snprintf(name, sizeof name, "S=%d DDIM sigma_hat vs DDPM fixed_large", S);
        EXPECT_CLOSE(name, xb, xa, n, 1e-5);
    }
    df_free(xa), df_free(xb);
    df_schedule_free(&s);
}

/* ==== every noisy step draws fresh noise ==== */

/* From a recorded chain, the noise df_sample added at step i is z_i = (x_{i+1} - the same step without noise) /
 * sigma_i. Each z_i must look standard normal and be uncorrelated with the others: in particular the last DDIM step
 * with set_alpha_to_one = 0 (abar_prev = abar_0, sigma > 0: diffusers adds noise there) must draw its own. */
static void check_fresh_noise(const char *what, df_sampler_kind kind, const char *spacing, int S0, int sato) {
    df_schedule s;
    if (sched_make(&s, "linear", 1e-4, 0.02, 1000)) return;
    s.clip_sample = 0, s.set_alpha_to_one = sato, s.variance_fixed_large = 0;
    const size_t B = 4, D = 256, n = B * D;
    int taus[1000];
    int S = make_taus(taus, 1000, S0, spacing);
    gauss_ctx g = {&s, 0.3, 0.5, DF_PRED_EPSILON, D, 0};
    float *traj = df_malloc((size_t)(S + 1) * n * sizeof(float)), *out = df_malloc(n * sizeof(float));
    float *det = df_malloc(n * sizeof(float)), *zero = df_calloc(n, sizeof(float)), *zs = df_malloc((size_t)S * n * sizeof(float));
    float tf[4];
    int *rec = df_malloc(S * sizeof(int));
    for (int i = 0; i < S; i++) rec[i] = i + 1;
    /* garbage in the allocator's free lists, so that a read of uninitialised memory shows */
    for (int r = 0; r < 4; r++) {
        float *junk = df_malloc(n * sizeof(float));
        for (size_t k = 0; k < n; k++) junk[k] = 1e3f * (float)(k % 7);
        df_free(junk);
    }
    df_sampler sp = {.kind = kind, .eta = 1.0, .clip = 0, .taus = taus, .S = S, .seed = 17, .record = rec, .traj = traj};
    df_initial_noise(traj, B, D, 17, 0);
    memcpy(det, traj, n * sizeof(float));
    df_sample(det, B, D, &s, &sp, 0, gauss_model, &g);
    int noisy_steps = 0, bad = 0;
    for (int i = 0; i < S; i++) {
        int t = taus[i], tp = i + 1 < S ? taus[i + 1] : -1;
        const float *xi = traj + (size_t)i * n, *xn = traj + (size_t)(i + 1) * n;
        for (size_t b = 0; b < B; b++) tf[b] = (float)t;
        gauss_model(&g, out, xi, tf, B);
        double a = s.abar[t], ap = df_abar_at(&s, tp, kind == DF_SAMPLER_DDPM ? 1 : sato), sigma;
        if (kind == DF_SAMPLER_DDPM) {
            df_ddpm_step(det, NULL, xi, out, t, tp, zero, B, D, &s, 0);
            sigma = tp >= 0 ? sqrt((1 - ap) / (1 - a) * (1 - a / ap)) : 0;
        } else {
            df_ddim_step(det, NULL, xi, out, t, tp, 1.0, zero, B, D, &s, 0);
            sigma = sqrt((1 - ap) / (1 - a) * (1 - a / ap));
        }
        float *z = zs + (size_t)i * n;
        if (sigma < 1e-4) {
            double d = df_rel_err(xn, det, n);
            EXPECT(d <= 1e-6, "%s step %d (t %d -> %d): no noise expected, but x differs by %.3e", what, i, t, tp, d);
            for (size_t k = 0; k < n; k++) z[k] = NAN;
            continue;
        }
        noisy_steps++;
        double m1 = 0, m2 = 0;
        for (size_t k = 0; k < n; k++) {
            z[k] = (float)(((double)xn[k] - det[k]) / sigma);
            m1 += z[k], m2 += (double)z[k] * z[k];
        }
        m1 /= n, m2 /= n;
        /* n = 1024 values: the mean's se is 0.031, the variance's 0.044 */
        if (!(fabs(m1) < 0.2 && fabs(m2 - 1) < 0.3)) {
            if (bad++ < 4)
                EXPECT(0, "%s step %d (t %d -> %d, sigma %.4f): the noise added has mean %.3f and mean square %.3f", what,
                       i, t, tp, sigma, m1, m2);
        }
        for (int j = 0; j < i; j++) {
            const float *zj = zs + (size_t)j * n;
            if (isnan(zj[0])) continue;
            double c = 0;
            for (size_t k = 0; k < n; k++) c += (double)z[k] * zj[k];
            c /= n;
            if (!(fabs(c) < 0.2) && bad++ < 4)
                EXPECT(0, "%s: the noise of step %d (t %d -> %d) correlates %.3f with that of step %d", what, i, t, tp, c,
                       j);
        }
    }
    printf("    %-44s %2d noisy steps of %2d checked\n", what, noisy_steps, S);
    df_free(traj), df_free(out), df_free(det), df_free(zero), df_free(zs), df_free(rec);
    df_schedule_free(&s);
}

TEST(sampler_step_noise_is_fresh) {
    check_fresh_noise("DDPM leading 20", DF_SAMPLER_DDPM, "leading", 20, 1);
    check_fresh_noise("DDIM eta 1 trailing 10, set_alpha_to_one", DF_SAMPLER_DDIM, "trailing", 10, 1);
    check_fresh_noise("DDIM eta 1 trailing 10, no set_alpha_to_one", DF_SAMPLER_DDIM, "trailing", 10, 0);
    check_fresh_noise("DDIM eta 1 trailing 1, no set_alpha_to_one", DF_SAMPLER_DDIM, "trailing", 1, 0);
}
