/* loss.c: the training losses, means over n elements summed in double, and their gradients. */
#include "kernels.h"

#include <math.h>

/* ---- mean squared error ---- */

/* mse_forward: mean over i of (pred[i] - target[i])^2. Returns 0 for n == 0. */
float mse_forward(const float *pred, const float *target, size_t n) {
    /* scalar <- pred (n), target (n) */
    if (n == 0) return 0;
    double s = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)pred[i] - target[i];
        s += d * d;
    }
    return (float)(s / (double)n);
}

/* mse_backward: dpred[i] += scale * 2 (pred[i] - target[i]) / n. */
void mse_backward(float *dpred, const float *pred, const float *target, size_t n, float scale) {
    /* dpred (n) += scale * d mse / d pred */
    if (n == 0) return;
    float c = (float)(2.0 * scale / (double)n);
    for (size_t i = 0; i < n; i++) dpred[i] += c * (pred[i] - target[i]);
}

/* ---- mean absolute error ---- */

/* l1_forward: mean over i of |pred[i] - target[i]|. Returns 0 for n == 0. */
float l1_forward(const float *pred, const float *target, size_t n) {
    /* scalar <- pred (n), target (n) */
    if (n == 0) return 0;
    double s = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)pred[i] - target[i];
        s += d < 0 ? -d : d;
    }
    return (float)(s / (double)n);
}

/* l1_backward: dpred[i] += scale * sign(pred[i] - target[i]) / n, with sign(0) = 0 as torch. */
void l1_backward(float *dpred, const float *pred, const float *target, size_t n, float scale) {
    /* dpred (n) += scale * d l1 / d pred */
    if (n == 0) return;
    float c = (float)((double)scale / (double)n);
    for (size_t i = 0; i < n; i++) {
        float d = pred[i] - target[i];
        dpred[i] += d > 0 ? c : d < 0 ? -c : 0.0f;
    }
}

/* ---- softmax cross-entropy ---- */

/* xent_forward: mean over the N rows of -log softmax(logits[n])[labels[n]], computed stably (max
 * subtracted) in double; probs (N, K) receives the softmax for backward (may be NULL). */
float xent_forward(float *probs, const float *logits, const int *labels, size_t N, size_t K) {
    /* scalar <- logits (N, K), labels (N) in [0, K) */
    if (N == 0) return 0;
    double total = 0;
    for (size_t n = 0; n < N; n++) {
        const float *z = logits + n * K;
        double m = z[0], s = 0;
        for (size_t k = 1; k < K; k++) m = z[k] > m ? z[k] : m;
        for (size_t k = 0; k < K; k++) s += exp((double)z[k] - m);
        if (probs)
            for (size_t k = 0; k < K; k++) probs[n * K + k] = (float)(exp((double)z[k] - m) / s);
        total += log(s) + m - z[labels[n]];
    }
    return (float)(total / (double)N);
}

/* xent_backward: dlogits[n, k] += scale (probs[n, k] - [k == labels[n]]) / N. */
void xent_backward(float *dlogits, const float *probs, const int *labels, size_t N, size_t K, float scale) {
    /* dlogits (N, K) += scale * d xent / d logits */
    if (N == 0) return;
    float c = (float)((double)scale / (double)N);
    for (size_t n = 0; n < N; n++)
        for (size_t k = 0; k < K; k++)
            dlogits[n * K + k] += c * (probs[n * K + k] - (k == (size_t)labels[n] ? 1.0f : 0.0f));
}
