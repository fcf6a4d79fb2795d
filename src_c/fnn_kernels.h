/*
 * fastnn's plain C kernels: no Python.h, no allocation, no error paths.
 *
 * The Python layer has validated every argument (shapes, dtypes, label ranges) before a
 * kernel is reached, so kernels trust their input.  Every kernel exists as _f32 and _f64,
 * generated from one body in fnn_kernels_impl.h.  Arrays are C-contiguous; `n` is the number
 * of rows (samples) and `k` the number of columns (classes or units).
 */
#ifndef FNN_KERNELS_H
#define FNN_KERNELS_H

#include "fnn_common.h"

/* The book's cross_entropy_error adds this inside the log: -log(y + 1e-7). */
#define FNN_BOOK_EPS 1e-7

/* Activation codes shared with the Cython layer (fastnn/_kernels/_cfnn.pxd). */
enum fnn_activation { FNN_IDENTITY = 0, FNN_RELU = 1, FNN_SIGMOID = 2 };

#define FNN_DECLARE_KERNELS(REAL, SFX)                                                          \
    /* out = max-masked x; mask[i] = (x[i] <= 0), the book's Relu.mask */                      \
    void fnn_relu_forward_##SFX(const REAL *x, REAL *out, uint8_t *mask, fnn_index size);      \
    void fnn_relu_backward_##SFX(const REAL *dout, const uint8_t *mask, REAL *dx,              \
                                 fnn_index size);                                               \
    void fnn_sigmoid_forward_##SFX(const REAL *x, REAL *out, fnn_index size);                  \
    void fnn_sigmoid_backward_##SFX(const REAL *dout, const REAL *out, REAL *dx,               \
                                    fnn_index size);                                            \
    /* z[i, j] += b[j], then the activation in place (one pass after the GEMM) */              \
    void fnn_bias_activation_##SFX(REAL *z, const REAL *b, fnn_index n, fnn_index k,           \
                                   int activation);                                             \
    /* db[j] = sum_i dout[i, j] */                                                              \
    void fnn_column_sum_##SFX(const REAL *dout, REAL *db, fnn_index n, fnn_index k);           \
    void fnn_softmax_##SFX(const REAL *x, REAL *y, fnn_index n, fnn_index k);                  \
    /* Fused softmax + cross-entropy: y = softmax(x) and the loss of every row.               \
       exact = 0: the book's -log(y + 1e-7); exact = 1: the log-softmax -(x - logsumexp x). */ \
    void fnn_softmax_xent_labels_##SFX(const REAL *x, const int64_t *labels, REAL *y,          \
                                       double *row_loss, fnn_index n, fnn_index k, int exact); \
    void fnn_softmax_xent_targets_##SFX(const REAL *x, const REAL *t, REAL *y,                 \
                                        double *row_loss, fnn_index n, fnn_index k,            \
                                        int exact);                                             \
    /* dx = (y - t) * dout / n, t given as labels or as targets of y's shape */                \
    void fnn_softmax_xent_backward_labels_##SFX(const REAL *y, const int64_t *labels,          \
                                                REAL *dx, fnn_index n, fnn_index k,            \
                                                REAL dout);                                     \
    void fnn_softmax_xent_backward_targets_##SFX(const REAL *y, const REAL *t, REAL *dx,       \
                                                 fnn_index n, fnn_index k, REAL dout);         \
    /* Softmax-with-loss forward and backward in one pass: row_loss gets each row's loss and  \
       dx = (softmax(x) - t) * dout / n.  dx may be x (the training step works in place). */  \
    void fnn_softmax_xent_grad_labels_##SFX(const REAL *x, const int64_t *labels, REAL *dx,    \
                                            double *row_loss, fnn_index n, fnn_index k,        \
                                            int exact, REAL dout);                             \
    void fnn_softmax_xent_grad_targets_##SFX(const REAL *x, const REAL *t, REAL *dx,           \
                                             double *row_loss, fnn_index n, fnn_index k,       \
                                             int exact, REAL dout);                            \
    /* delta *= activation'(a), a the activation's output (relu: a > 0; sigmoid: (1-a) a) */  \
    void fnn_activation_backward_##SFX(REAL *delta, const REAL *a, fnn_index size,            \
                                       int activation);                                         \
    /* y += alpha * x (the weight decay term of a gradient) */                                 \
    void fnn_add_scaled_##SFX(REAL *y, const REAL *x, REAL alpha, fnn_index size);             \
    /* The book's cross_entropy_error on probabilities: row_loss = -sum t log(y + 1e-7) */     \
    void fnn_xent_labels_##SFX(const REAL *y, const int64_t *labels, double *row_loss,         \
                               fnn_index n, fnn_index k);                                       \
    void fnn_xent_targets_##SFX(const REAL *y, const REAL *t, double *row_loss, fnn_index n,   \
                                fnn_index k);

/* The mean of the per-row losses, summed in row order: the same for every caller. */
double fnn_mean_row_loss(const double *row_loss, fnn_index n);

/* The first i with labels[i] outside [0, k), or -1: the range check of integer targets, one
   vectorised pass instead of NumPy's min and max. */
fnn_index fnn_first_bad_label(const int64_t *labels, fnn_index n, int64_t k);

FNN_DECLARE_KERNELS(float, f32)
FNN_DECLARE_KERNELS(double, f64)

#endif
