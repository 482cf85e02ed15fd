/* base.h: errors and checks, checked allocation, timers, scratch memory.
 *
 * Two kinds of failure:
 *   - DF_CHECK(cond, fmt, ...): an always-on invariant (a programming error or an impossible state).
 *     On failure it prints file, line and the message and exits with status 2. Never compiled out.
 *   - df_error(fmt, ...): a recoverable error from bad input (a corrupt file, a bad config). It stores the
 *     message in a thread-local buffer and returns -1, so library calls can `return df_error(...)`.
 *     The caller reads it with df_errmsg(). Library functions that can fail this way return int (0 ok).
 */
#ifndef DF_BASE_H
#define DF_BASE_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define DF_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define DF_NORETURN __attribute__((noreturn))
#else
#define DF_PRINTF(a, b)
#define DF_NORETURN
#endif

/* DF_CLONES: compile a function for AVX-512, AVX2 and baseline x86-64, picked at load time by the CPU (for
 * loops the compiler vectorises: kernels, random streams). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define DF_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DF_CLONES
#endif

/* DF_PARALLEL_FOR_IF(cond, "omp parallel for ...", loop): the loop under that pragma when cond holds and no
 * region is active, else run plainly, outside any region. An `if` clause does not do this: libgomp ends a
 * region it runs on one thread (a failed if, or one inside another region) with a futex wake-up all the same,
 * 1.3 us here (100,000 `parallel for if (0)`: 100,000 futex calls), and a batch-1 forward met some 650 of
 * them (590 in gemm), about 0.85 ms at that price. */
#ifdef _OPENMP
#include <omp.h>
#define DF_IN_PARALLEL() omp_in_parallel()
#else
#define DF_IN_PARALLEL() 0
#endif
#define DF_PARALLEL_FOR_IF(cond, pragma, ...)                                                                  \
    do {                                                                                                       \
        if ((cond) && !DF_IN_PARALLEL()) {                                                                     \
            _Pragma(pragma) __VA_ARGS__                                                                        \
        } else {                                                                                               \
            __VA_ARGS__                                                                                        \
        }                                                                                                      \
    } while (0)

DF_NORETURN void df_fatal(const char *file, int line, const char *fmt, ...) DF_PRINTF(3, 4);

#define DF_CHECK(cond, ...)                                                                                  \
    do {                                                                                                     \
        if (!(cond)) df_fatal(__FILE__, __LINE__, __VA_ARGS__);                                              \
    } while (0)

/* Records a recoverable error message (printf format) and returns -1. */
int df_error(const char *fmt, ...) DF_PRINTF(1, 2);
/* The last message recorded by df_error on this thread ("" if none). */
const char *df_errmsg(void);
/* Prefixes the current error message with "prefix: " (adds context on the way up); returns -1. */
int df_error_wrap(const char *fmt, ...) DF_PRINTF(1, 2);

/* Checked allocation: on failure, a fatal error naming the size. df_malloc memory is 64-byte aligned and is
 * released with df_free. */
void *df_malloc(size_t bytes);
void *df_calloc(size_t count, size_t size);
void df_free(void *p);

/* Monotonic wall time in seconds. */
double df_time(void);

/* Per-thread scratch memory that grows and is reused: the returned pointer is valid until the next call
 * to df_scratch with the same slot on the same thread. Kernels use it for im2col buffers and the like. */
float *df_scratch(int slot, size_t floats);
/* Bytes held by all threads' scratch slots now. */
size_t df_scratch_bytes(void);

/* Number of threads the kernels use (OpenMP); df_set_threads(0) keeps OpenMP's default: OMP_NUM_THREADS if set,
 * else all cores. */
void df_set_threads(int n);
int df_threads(void);

#endif
