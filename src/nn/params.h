/* params.h: a named parameter table. Every parameter of a model lives in ONE allocation (data), its gradient
 * in another (grad), addressed by offsets; names and shapes are PyTorch's state-dict keys and layouts, so
 * loading, saving and comparing are string matches. */
#ifndef DF_PARAMS_H
#define DF_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#define DF_PARAM_NAME 128

typedef struct {
    char name[DF_PARAM_NAME];
    int ndim;
    int64_t shape[4];
    size_t numel, offset; /* offset in floats into data / grad */
} df_param;

typedef struct {
    df_param *p;
    size_t n, cap;
    size_t total; /* floats */
    float *data;  /* total floats, NULL until df_params_alloc */
    float *grad;  /* total floats, NULL until df_params_alloc_grad */
} df_params;

/* Registers a parameter and returns its index. While the table is not yet allocated, a new name is added;
 * once allocated, the name must exist with the same shape (a DF_CHECK), so one builder function can both
 * define a model's table and, later, wire a graph to it. Unused trailing dims are 0. */
int df_params_add(df_params *ps, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3);
/* Allocates data (zeroed). */
void df_params_alloc(df_params *ps);
/* Allocates grad (zeroed); idempotent. */
void df_params_alloc_grad(df_params *ps);
void df_params_zero_grad(df_params *ps);
/* Index of a name, or -1. */
int df_params_find(const df_params *ps, const char *name);
static inline float *df_param_data(const df_params *ps, int i) { return ps->data + ps->p[i].offset; }
static inline float *df_param_grad(const df_params *ps, int i) { return ps->grad ? ps->grad + ps->p[i].offset : NULL; }
/* "[a, b, c]" into buf. */
const char *df_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape);
void df_params_free(df_params *ps);

#endif
