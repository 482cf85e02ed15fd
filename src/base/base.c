/* base.c: errors, checked allocation, timers, scratch memory. */
#include "base.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <pthread.h>
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

/* Each thread's slots live in a heap block registered with pthread_setspecific, so they are freed when the
 * thread exits (and LeakSanitizer can see them, which it cannot through _Thread_local storage of OpenMP
 * worker threads). */
#define DF_SCRATCH_SLOTS 10
typedef struct {
    float *ptr[DF_SCRATCH_SLOTS];
    size_t cap[DF_SCRATCH_SLOTS];
} scratch_slots;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static size_t scratch_floats; /* held by all threads' slots now (atomic) */

static void scratch_release(void *p) {
    scratch_slots *s = p;
    for (int i = 0; i < DF_SCRATCH_SLOTS; i++) {
        __atomic_sub_fetch(&scratch_floats, s->cap[i], __ATOMIC_RELAXED);
        df_free(s->ptr[i]);
    }
    free(s);
}

size_t df_scratch_bytes(void) { return __atomic_load_n(&scratch_floats, __ATOMIC_RELAXED) * sizeof(float); }

static void scratch_key_init(void) { DF_CHECK(pthread_key_create(&scratch_key, scratch_release) == 0, "pthread key"); }

/* The main thread never "exits" through pthread_exit; free its slots at process exit. */
static void scratch_release_main(void) {
    scratch_slots *s = pthread_getspecific(scratch_key);
    if (s) {
        pthread_setspecific(scratch_key, NULL);
        scratch_release(s);
    }
}

float *df_scratch(int slot, size_t floats) {
    DF_CHECK(slot >= 0 && slot < DF_SCRATCH_SLOTS, "scratch slot %d out of range", slot);
    pthread_once(&scratch_once, scratch_key_init);
    scratch_slots *s = pthread_getspecific(scratch_key);
    if (!s) {
        s = calloc(1, sizeof *s);
        DF_CHECK(s && pthread_setspecific(scratch_key, s) == 0, "out of memory for scratch slots");
        static int registered;
        if (!__atomic_exchange_n(&registered, 1, __ATOMIC_SEQ_CST)) atexit(scratch_release_main);
    }
    if (floats > s->cap[slot]) {
        df_free(s->ptr[slot]);
        s->ptr[slot] = df_malloc(floats * sizeof(float));
        __atomic_add_fetch(&scratch_floats, floats - s->cap[slot], __ATOMIC_RELAXED);
        s->cap[slot] = floats;
    }
    return s->ptr[slot];
}

/* ---- threads ---- */

void df_set_threads(int n) {
#ifdef _OPENMP
    if (n > 0) omp_set_num_threads(n); /* 0: OpenMP's default (OMP_NUM_THREADS, else all cores) */
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
