/*
 * The optimizers of the book's common/optimizer.py as plain C kernels: one pass over one
 * parameter, its gradient and its state arrays, all updated in place.
 *
 * Same contract as fnn_kernels.h: no Python.h, no allocation, no error paths.  The Python layer
 * (fastnn/optim.py) has checked that every array is C-contiguous, of the parameter's dtype and
 * of `size` elements, and that no two of them overlap (so they are declared restrict).
 * Hyper-parameters arrive as the Python floats the book uses; each kernel derives the book's
 * scalars from them in double, as Python does, and rounds them to the array dtype once, as
 * NumPy does for a Python float times a float32 array.  Every kernel exists as _f32 and _f64,
 * generated from one body in fnn_optim_impl.h.
 */
#ifndef FNN_OPTIM_H
#define FNN_OPTIM_H

#include "fnn_kernels.h" /* fnn_index */

#define FNN_DECLARE_OPTIM(REAL, SFX)                                                           \
    /* param -= lr * grad */                                                                    \
    void fnn_sgd_update_##SFX(REAL *param, const REAL *grad, fnn_index size, double lr);       \
    /* v = momentum * v - lr * grad;  param += v */                                             \
    void fnn_momentum_update_##SFX(REAL *param, const REAL *grad, REAL *v, fnn_index size,     \
                                   double lr, double momentum);                                 \
    /* v = momentum * v - lr * grad;                                                           \
       param += momentum^2 * v;  param -= (1 + momentum) * lr * grad */                        \
    void fnn_nesterov_update_##SFX(REAL *param, const REAL *grad, REAL *v, fnn_index size,     \
                                   double lr, double momentum);                                 \
    /* h += grad^2;  param -= lr * grad / (sqrt(h) + 1e-7) */                                   \
    void fnn_adagrad_update_##SFX(REAL *param, const REAL *grad, REAL *h, fnn_index size,      \
                                  double lr);                                                   \
    /* h = decay_rate * h + (1 - decay_rate) * grad^2;                                         \
       param -= lr * grad / (sqrt(h) + 1e-7) */                                                 \
    void fnn_rmsprop_update_##SFX(REAL *param, const REAL *grad, REAL *h, fnn_index size,      \
                                  double lr, double decay_rate);                                \
    /* m += (1 - beta1) (grad - m);  v += (1 - beta2) (grad^2 - v);                            \
       param -= lr_t * m / (sqrt(v) + 1e-7), lr_t the bias-corrected rate of this step */      \
    void fnn_adam_update_##SFX(REAL *param, const REAL *grad, REAL *m, REAL *v,                \
                               fnn_index size, double lr_t, double beta1, double beta2);

FNN_DECLARE_OPTIM(float, f32)
FNN_DECLARE_OPTIM(double, f64)

#endif
