# Declarations of the C kernels in src_c/fnn_kernels.h (one body per kernel, _f32 and _f64).
from libc.stdint cimport int64_t, uint8_t

cdef extern from "fnn_kernels.h" nogil:
    ctypedef Py_ssize_t fnn_index
    double FNN_BOOK_EPS

    enum fnn_activation:
        FNN_IDENTITY
        FNN_RELU
        FNN_SIGMOID

    double fnn_mean_row_loss(const double *row_loss, fnn_index n)
    fnn_index fnn_first_bad_label(const int64_t *labels, fnn_index n, int64_t k)

    void fnn_relu_forward_f32(const float *x, float *out, uint8_t *mask, fnn_index size)
    void fnn_relu_forward_f64(const double *x, double *out, uint8_t *mask, fnn_index size)
    void fnn_relu_backward_f32(const float *dout, const uint8_t *mask, float *dx, fnn_index size)
    void fnn_relu_backward_f64(const double *dout, const uint8_t *mask, double *dx, fnn_index size)
    void fnn_sigmoid_forward_f32(const float *x, float *out, fnn_index size)
    void fnn_sigmoid_forward_f64(const double *x, double *out, fnn_index size)
    void fnn_sigmoid_backward_f32(const float *dout, const float *out, float *dx, fnn_index size)
    void fnn_sigmoid_backward_f64(const double *dout, const double *out, double *dx, fnn_index size)

    void fnn_bias_activation_f32(float *z, const float *b, fnn_index n, fnn_index k, int activation)
    void fnn_bias_activation_f64(double *z, const double *b, fnn_index n, fnn_index k, int activation)
    void fnn_column_sum_f32(const float *dout, float *db, fnn_index n, fnn_index k)
    void fnn_column_sum_f64(const double *dout, double *db, fnn_index n, fnn_index k)

    void fnn_softmax_f32(const float *x, float *y, fnn_index n, fnn_index k)
    void fnn_softmax_f64(const double *x, double *y, fnn_index n, fnn_index k)
    void fnn_softmax_xent_labels_f32(const float *x, const int64_t *labels, float *y,
                                     double *row_loss, fnn_index n, fnn_index k, int exact)
    void fnn_softmax_xent_labels_f64(const double *x, const int64_t *labels, double *y,
                                     double *row_loss, fnn_index n, fnn_index k, int exact)
    void fnn_softmax_xent_targets_f32(const float *x, const float *t, float *y,
                                      double *row_loss, fnn_index n, fnn_index k, int exact)
    void fnn_softmax_xent_targets_f64(const double *x, const double *t, double *y,
                                      double *row_loss, fnn_index n, fnn_index k, int exact)
    void fnn_softmax_xent_backward_labels_f32(const float *y, const int64_t *labels, float *dx,
                                              fnn_index n, fnn_index k, float dout)
    void fnn_softmax_xent_backward_labels_f64(const double *y, const int64_t *labels, double *dx,
                                              fnn_index n, fnn_index k, double dout)
    void fnn_softmax_xent_backward_targets_f32(const float *y, const float *t, float *dx,
                                               fnn_index n, fnn_index k, float dout)
    void fnn_softmax_xent_backward_targets_f64(const double *y, const double *t, double *dx,
                                               fnn_index n, fnn_index k, double dout)
    void fnn_xent_labels_f32(const float *y, const int64_t *labels, double *row_loss,
                             fnn_index n, fnn_index k)
    void fnn_xent_labels_f64(const double *y, const int64_t *labels, double *row_loss,
                             fnn_index n, fnn_index k)
    void fnn_xent_targets_f32(const float *y, const float *t, double *row_loss,
                              fnn_index n, fnn_index k)
    void fnn_xent_targets_f64(const double *y, const double *t, double *row_loss,
                              fnn_index n, fnn_index k)

    void fnn_softmax_xent_grad_labels_f32(const float *x, const int64_t *labels, float *dx,
                                          double *row_loss, fnn_index n, fnn_index k, int exact,
                                          float dout)
    void fnn_softmax_xent_grad_labels_f64(const double *x, const int64_t *labels, double *dx,
                                          double *row_loss, fnn_index n, fnn_index k, int exact,
                                          double dout)
    void fnn_softmax_xent_grad_targets_f32(const float *x, const float *t, float *dx,
                                           double *row_loss, fnn_index n, fnn_index k, int exact,
                                           float dout)
    void fnn_softmax_xent_grad_targets_f64(const double *x, const double *t, double *dx,
                                           double *row_loss, fnn_index n, fnn_index k, int exact,
                                           double dout)
    void fnn_activation_backward_f32(float *delta, const float *a, fnn_index size, int activation)
    void fnn_activation_backward_f64(double *delta, const double *a, fnn_index size, int activation)
    void fnn_add_scaled_f32(float *y, const float *x, float alpha, fnn_index size)
    void fnn_add_scaled_f64(double *y, const double *x, double alpha, fnn_index size)
