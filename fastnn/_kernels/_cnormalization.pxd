# Declarations of the dropout and batch-normalization kernels in src_c/fnn_normalization.h
# (one body per kernel, _f32 and _f64).
from libc.stdint cimport uint8_t, uint32_t

cdef extern from "fnn_normalization.h" nogil:
    ctypedef Py_ssize_t fnn_index
    double FNN_BN_EPS

    ctypedef struct fnn_mt19937_state:
        uint32_t key[624]
        int pos

    void fnn_dropout_mask(uint8_t *mask, fnn_index size, double ratio,
                          double (*next_double)(void *) noexcept nogil, void *state)
    void fnn_dropout_mask_mt19937(uint8_t *mask, fnn_index size, double ratio,
                                  fnn_mt19937_state *state)

    void fnn_mask_multiply_f32(const float *x, const uint8_t *mask, float *out, fnn_index size)
    void fnn_mask_multiply_f64(const double *x, const uint8_t *mask, double *out, fnn_index size)
    void fnn_scale_f32(const float *x, float scale, float *out, fnn_index size)
    void fnn_scale_f64(const double *x, double scale, double *out, fnn_index size)

    void fnn_batchnorm_forward_train_f32(
        const float *x, const float *bias, const float *gamma, const float *beta, fnn_index n,
        fnn_index d, double eps, double momentum, double *running_mean, double *running_var,
        double *mean, double *inv_std, float *std, float *xn, float *out, int activation,
        const uint8_t *mask)
    void fnn_batchnorm_forward_train_f64(
        const double *x, const double *bias, const double *gamma, const double *beta,
        fnn_index n, fnn_index d, double eps, double momentum, double *running_mean,
        double *running_var, double *mean, double *inv_std, double *std, double *xn,
        double *out, int activation, const uint8_t *mask)
    void fnn_batchnorm_forward_test_f32(
        const float *x, const float *bias, const float *gamma, const float *beta, fnn_index n, fnn_index d,
        double eps, const double *running_mean, const double *running_var, double *inv_std,
        float *out, int activation, float scale)
    void fnn_batchnorm_forward_test_f64(
        const double *x, const double *bias, const double *gamma, const double *beta, fnn_index n, fnn_index d,
        double eps, const double *running_mean, const double *running_var, double *inv_std,
        double *out, int activation, double scale)
    void fnn_batchnorm_backward_f32(
        const float *dout, const float *xn, const float *gamma, const double *inv_std,
        fnn_index n, fnn_index d, float *dx, float *dgamma, float *dbeta, double *work,
        int activation, const float *a, const uint8_t *mask)
    void fnn_batchnorm_backward_f64(
        const double *dout, const double *xn, const double *gamma, const double *inv_std,
        fnn_index n, fnn_index d, double *dx, double *dgamma, double *dbeta, double *work,
        int activation, const double *a, const uint8_t *mask)
