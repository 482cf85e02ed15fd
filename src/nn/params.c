/* params.c: the named parameter table. */
#include "params.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/base.h"

int df_params_add(df_params *ps, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    int64_t shape[4] = {d0, d1, d2, d3};
    DF_CHECK(ndim >= 1 && ndim <= 4, "parameter %s: ndim %d", name, ndim);
    DF_CHECK(strlen(name) < DF_PARAM_NAME, "parameter name too long: %s", name);
    if (ps->data) { /* frozen: must match */
        int i = df_params_find(ps, name);
        DF_CHECK(i >= 0, "parameter %s is not in the table", name);
        DF_CHECK(ps->p[i].ndim == ndim && memcmp(ps->p[i].shape, shape, sizeof(int64_t) * ndim) == 0,
                 "parameter %s registered with another shape", name);
        return i;
    }
    DF_CHECK(df_params_find(ps, name) < 0, "parameter %s registered twice", name);
    if (ps->n == ps->cap) {
        size_t cap = ps->cap ? 2 * ps->cap : 64;
        df_param *np = df_malloc(cap * sizeof *np);
        if (ps->n) memcpy(np, ps->p, ps->n * sizeof *np);
        df_free(ps->p);
        ps->p = np, ps->cap = cap;
    }
    df_param *p = &ps->p[ps->n];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    p->numel = 1;
    for (int d = 0; d < ndim; d++) {
        DF_CHECK(shape[d] > 0, "parameter %s: dim %d is %lld", name, d, (long long)shape[d]);
        p->shape[d] = shape[d];
        p->numel *= (size_t)shape[d];
    }
    p->offset = ps->total;
    ps->total += p->numel;
    return (int)ps->n++;
}

void df_params_alloc(df_params *ps) {
    DF_CHECK(!ps->data, "parameter table allocated twice");
    ps->data = df_calloc(ps->total, sizeof(float));
}

void df_params_alloc_grad(df_params *ps) {
    if (!ps->grad) ps->grad = df_calloc(ps->total, sizeof(float));
}

void df_params_zero_grad(df_params *ps) {
    if (ps->grad) memset(ps->grad, 0, ps->total * sizeof(float));
}

int df_params_find(const df_params *ps, const char *name) {
    for (size_t i = 0; i < ps->n; i++)
        if (strcmp(ps->p[i].name, name) == 0) return (int)i;
    return -1;
}

const char *df_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < ndim && k < cap; d++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
    return buf;
}

void df_params_free(df_params *ps) {
    df_free(ps->p);
    df_free(ps->data);
    df_free(ps->grad);
    memset(ps, 0, sizeof *ps);
}

int df_params_addf(df_params *ps, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3, const char *fmt, ...) {
    char name[DF_PARAM_NAME];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    DF_CHECK(n >= 0 && n < DF_PARAM_NAME, "parameter name too long: %s...", name);
    return df_params_add(ps, name, ndim, d0, d1, d2, d3);
}
