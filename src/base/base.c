/* base.c: errors, checked allocation, timers, scratch memory. */
#include "base.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* ---- errors ---- */

void df_fatal(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "diffuse: internal check failed at %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    exit(2);
}

static _Thread_local char errbuf[2048];

int df_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, sizeof errbuf, fmt, ap);
    va_end(ap);
    return -1;
}

int df_error_wrap(const char *fmt, ...) {
    char prefix[1024], old[sizeof errbuf];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, errbuf, sizeof old);
    size_t n = strlen(prefix);
    if (n > sizeof errbuf - 3) n = sizeof errbuf - 3;
    memcpy(errbuf, prefix, n);
    errbuf[n] = ':', errbuf[n + 1] = ' ';
    size_t m = strlen(old);
    if (m > sizeof errbuf - n - 3) m = sizeof errbuf - n - 3;
    memcpy(errbuf + n + 2, old, m);
    errbuf[n + 2 + m] = 0;
    return -1;
}

const char *df_errmsg(void) { return errbuf; }

/* ---- memory ---- */

void *df_malloc(size_t bytes) {
    void *p = NULL;
    if (bytes == 0) bytes = 1;
    if (posix_memalign(&p, 64, bytes) != 0 || !p)
        df_fatal(__FILE__, __LINE__, "out of memory allocating %zu bytes (%.2f GB)", bytes, bytes / 1e9);
    return p;
}

void *df_calloc(size_t count, size_t size) {
    DF_CHECK(size == 0 || count <= SIZE_MAX / size, "allocation of %zu x %zu bytes overflows", count, size);
    void *p = df_malloc(count * size);
    memset(p, 0, count * size);
    return p;
}

void df_free(void *p) { free(p); }

double df_time(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- scratch ---- */

#define DF_SCRATCH_SLOTS 4
static _Thread_local float *scratch_ptr[DF_SCRATCH_SLOTS];
static _Thread_local size_t scratch_cap[DF_SCRATCH_SLOTS];

float *df_scratch(int slot, size_t floats) {
    DF_CHECK(slot >= 0 && slot < DF_SCRATCH_SLOTS, "scratch slot %d out of range", slot);
    if (floats > scratch_cap[slot]) {
        df_free(scratch_ptr[slot]);
        scratch_ptr[slot] = df_malloc(floats * sizeof(float));
        scratch_cap[slot] = floats;
    }
    return scratch_ptr[slot];
}

/* ---- threads ---- */

void df_set_threads(int n) {
#ifdef _OPENMP
    if (n <= 0) n = omp_get_num_procs();
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

int df_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
