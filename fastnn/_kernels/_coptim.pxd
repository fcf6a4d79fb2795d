# Declarations of the optimizer kernels in src_c/fnn_optim.h (one body per kernel, _f32 and _f64).
cdef extern from "fnn_optim.h" nogil:
    ctypedef Py_ssize_t fnn_index

    void fnn_sgd_update_f32(float *param, const float *grad, fnn_index size, double lr)
    void fnn_sgd_update_f64(double *param, const double *grad, fnn_index size, double lr)
    void fnn_momentum_update_f32(float *param, const float *grad, float *v, fnn_index size,
                                 double lr, double momentum)
    void fnn_momentum_update_f64(double *param, const double *grad, double *v, fnn_index size,
                                 double lr, double momentum)
    void fnn_nesterov_update_f32(float *param, const float *grad, float *v, fnn_index size,
                                 double lr, double momentum)
    void fnn_nesterov_update_f64(double *param, const double *grad, double *v, fnn_index size,
                                 double lr, double momentum)
    void fnn_adagrad_update_f32(float *param, const float *grad, float *h, fnn_index size,
                                double lr)
    void fnn_adagrad_update_f64(double *param, const double *grad, double *h, fnn_index size,
                                double lr)
    void fnn_rmsprop_update_f32(float *param, const float *grad, float *h, fnn_index size,
                                double lr, double decay_rate)
    void fnn_rmsprop_update_f64(double *param, const double *grad, double *h, fnn_index size,
                                double lr, double decay_rate)
    void fnn_adam_update_f32(float *param, const float *grad, float *m, float *v,
                             fnn_index size, double lr_t, double beta1, double beta2)
    void fnn_adam_update_f64(double *param, const double *grad, double *m, double *v,
                             fnn_index size, double lr_t, double beta1, double beta2)
