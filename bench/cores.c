/* cores.c: what it costs two threads to meet on this machine, the floor under every parallel region that a
 * batch-1 forward opens (about 120 of them, and some 65 barriers inside them):
 *   - an empty `omp parallel` on two threads (libgomp's fork and join),
 *   - an `omp barrier` inside one region,
 *   - a round trip of one cache line between the two cores (each waits for the other's store).
 * Not part of the build; the README quotes it:
 *   gcc -O2 -fopenmp bench/cores.c -o /tmp/cores && /tmp/cores
 * Each figure is the median of 21 runs of 20,000 repetitions. */
#include <omp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

enum { REPS = 20000, RUNS = 21 };

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double empty_region(void) {
    volatile int sink = 0;
    double t0 = omp_get_wtime();
    for (int r = 0; r < REPS; r++) {
#pragma omp parallel num_threads(2)
        { sink++; }
    }
    return (omp_get_wtime() - t0) / REPS;
}

static double barrier(void) {
    double t0 = omp_get_wtime();
#pragma omp parallel num_threads(2)
    for (int r = 0; r < REPS; r++) {
#pragma omp barrier
    }
    return (omp_get_wtime() - t0) / REPS;
}

static double round_trip(void) {
    static _Atomic int flag;
    atomic_store(&flag, 0);
    double t0 = omp_get_wtime();
#pragma omp parallel num_threads(2)
    {
        int me = omp_get_thread_num();
        for (int i = 0; i < REPS; i++) { /* thread 0 answers 2i with 2i + 1, thread 1 answers that with 2i + 2 */
            int want = 2 * i + me;
            while (atomic_load_explicit(&flag, memory_order_acquire) != want) {
            }
            atomic_store_explicit(&flag, want + 1, memory_order_release);
        }
    }
    return (omp_get_wtime() - t0) / REPS;
}

static void report(const char *what, double (*f)(void)) {
    double t[RUNS];
    for (int i = 0; i < RUNS; i++) t[i] = f();
    qsort(t, RUNS, sizeof t[0], by_value);
    printf("%-46s %6.2f us  (runs %.2f-%.2f)\n", what, t[RUNS / 2] * 1e6, t[0] * 1e6, t[RUNS - 1] * 1e6);
}

int main(void) {
    if (omp_get_num_procs() < 2) {
        fprintf(stderr, "cores: this machine has one processor; there is nothing to measure\n");
        return 1;
    }
    report("empty parallel region, 2 threads", empty_region);
    report("barrier inside a region, 2 threads", barrier);
    report("cache-line round trip between the two cores", round_trip);
    return 0;
}
