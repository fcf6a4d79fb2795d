/*
 * Dropout and batch normalization (the book's common/layers.py Dropout, BatchNormalization)
 * as plain C kernels: no Python.h, no allocation, no error paths.
 *
 * The Python layer (fastnn/layers.py, fastnn/nets.py) has checked every array: C-contiguous,
 * of the kernel's dtype, of the sizes given, outputs not overlapping inputs unless a kernel
 * says it works in place.  Batches are (n, d) row-major: n samples of d features (a 4-D
 * input is flattened per sample first, as the book does).  Statistics are taken in double,
 * also for float32 data; every kernel exists as _f32 and _f64, generated from one body in
 * fnn_normalization_impl.h.
 */
#ifndef FNN_NORMALIZATION_H
#define FNN_NORMALIZATION_H

#include "fnn_kernels.h" /* fnn_index, the activation codes */

/* The book's epsilon inside the square root of BatchNormalization: np.sqrt(var + 10e-7). */
#define FNN_BN_EPS 10e-7

/* mask[i] = (u_i > ratio) for i < size, u_i the next doubles of a random bit generator
   (NumPy's bitgen_t: `next_double(state)`), drawn in order: the book's
   np.random.rand(*x.shape) > ratio, value for value, when state is NumPy's global generator. */
void fnn_dropout_mask(uint8_t *mask, fnn_index size, double ratio,
                      double (*next_double)(void *), void *state);

/* As fnn_dropout_mask for NumPy's MT19937 (the global generator of np.random.seed), on its
   state (the 624 words and position of numpy/random/src/mt19937/mt19937.h) directly: the
   same values, with the state regenerated in vectorised passes instead of one call per word.
   Leaves the state where NumPy's own draws would. */
typedef struct fnn_mt19937_state {
    uint32_t key[624];
    int pos;
} fnn_mt19937_state;
void fnn_dropout_mask_mt19937(uint8_t *mask, fnn_index size, double ratio,
                              fnn_mt19937_state *state);

#define FNN_DECLARE_NORMALIZATION(REAL, SFX)                                                   \
    /* out = x * mask (the book's Dropout forward in training, and its backward) */            \
    void fnn_mask_multiply_##SFX(const REAL *x, const uint8_t *mask, REAL *out,                \
                                 fnn_index size);                                               \
    /* out = x * scale (Dropout at test time: x * (1 - ratio)) */                               \
    void fnn_scale_##SFX(const REAL *x, REAL scale, REAL *out, fnn_index size);                \
    /* Training forward.  v = x + bias (bias may be NULL); per column: mean, biased variance   \
       var, std = sqrt(var + eps), inv_std = 1 / std (double); xn = (v - mean) / std;           \
       out = act(gamma xn + beta) * mask (mask may be NULL; activation FNN_IDENTITY for the     \
       plain layer).  running_mean/var (may be NULL) become                                     \
       momentum * running + (1 - momentum) * batch, as the book updates them.  Two passes      \
       over x: the sums (around the first row, so that no digits cancel), then the rest. */    \
    void fnn_batchnorm_forward_train_##SFX(                                                     \
        const REAL *x, const REAL *bias, const REAL *gamma, const REAL *beta, fnn_index n,     \
        fnn_index d, double eps, double momentum, double *running_mean, double *running_var,   \
        double *mean, double *inv_std, REAL *std, REAL *xn, REAL *out, int activation,         \
        const uint8_t *mask);                                                                   \
    /* Test forward: v = x + bias (bias may be NULL);                                         \
       out = act(gamma (v - running_mean) / sqrt(running_var + eps) + beta) * scale;           \
       inv_std gets 1 / sqrt(running_var + eps) (a workspace of d doubles). */                  \
    void fnn_batchnorm_forward_test_##SFX(                                                      \
        const REAL *x, const REAL *bias, const REAL *gamma, const REAL *beta, fnn_index n,     \
        fnn_index d,                                                                            \
        double eps, const double *running_mean, const double *running_var, double *inv_std,    \
        REAL *out, int activation, REAL scale);                                                 \
    /* Backward of fnn_batchnorm_forward_train.  g = dout * mask (mask may be NULL), then the  \
       activation's derivative from a, the forward's output (relu: a > 0; sigmoid: (1 - a) a;  \
       a may be NULL for FNN_IDENTITY); dbeta = sum g, dgamma = sum xn g (summed in double,    \
       `work` holds 2 d doubles); dx = gamma inv_std (g - dbeta / n - xn dgamma / n), the      \
       book's chain of derivatives in closed form.  Two passes; dx may be dout (in place). */  \
    void fnn_batchnorm_backward_##SFX(                                                          \
        const REAL *dout, const REAL *xn, const REAL *gamma, const double *inv_std,            \
        fnn_index n, fnn_index d, REAL *dx, REAL *dgamma, REAL *dbeta, double *work,           \
        int activation, const REAL *a, const uint8_t *mask);

FNN_DECLARE_NORMALIZATION(float, f32)
FNN_DECLARE_NORMALIZATION(double, f64)

#endif
