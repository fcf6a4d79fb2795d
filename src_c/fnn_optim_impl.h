/*
 * Body of every kernel of fnn_optim.h, written once for a floating type REAL with name suffix
 * SFX, and included twice by fnn_optim.c (float/f32 and double/f64).
 *
 * Each statement is one line of the book's update, in the book's order of operations, so that
 * float64 results agree with the NumPy twin to the last bit or so: the fusion into one loop
 * removes the temporaries, not the roundings.  Without -ffast-math the compiler neither
 * reassociates nor (on baseline x86-64) contracts into FMA, and still vectorises every loop
 * (sqrt included, thanks to -fno-math-errno).
 */

/* The book's epsilon of AdaGrad, RMSprop and Adam, in the dtype of the array as in NumPy. */
#define FNN_OPTIM_EPS ((REAL)1e-7)

void FNN(fnn_sgd_update)(REAL *restrict param, const REAL *restrict grad, fnn_index size,
                         double lr)
{
    const REAL lr_ = (REAL)lr;
    for (fnn_index i = 0; i < size; i++)
        param[i] -= lr_ * grad[i];
}

void FNN(fnn_momentum_update)(REAL *restrict param, const REAL *restrict grad, REAL *restrict v,
                              fnn_index size, double lr, double momentum)
{
    const REAL lr_ = (REAL)lr, mu = (REAL)momentum;
    for (fnn_index i = 0; i < size; i++) {
        v[i] = mu * v[i] - lr_ * grad[i];
        param[i] += v[i];
    }
}

void FNN(fnn_nesterov_update)(REAL *restrict param, const REAL *restrict grad, REAL *restrict v,
                              fnn_index size, double lr, double momentum)
{
    /* the book's scalar factors, momentum * momentum and (1 + momentum) * lr, are Python
       floats: computed in double, then rounded once */
    const REAL lr_ = (REAL)lr, mu = (REAL)momentum, mu2 = (REAL)(momentum * momentum);
    const REAL step = (REAL)((1 + momentum) * lr);
    for (fnn_index i = 0; i < size; i++) {
        v[i] *= mu;
        v[i] -= lr_ * grad[i];
        param[i] += mu2 * v[i];
        param[i] -= step * grad[i];
    }
}

void FNN(fnn_adagrad_update)(REAL *restrict param, const REAL *restrict grad, REAL *restrict h,
                             fnn_index size, double lr)
{
    const REAL lr_ = (REAL)lr;
    for (fnn_index i = 0; i < size; i++) {
        h[i] += grad[i] * grad[i];
        param[i] -= lr_ * grad[i] / (SQRT(h[i]) + FNN_OPTIM_EPS);
    }
}

void FNN(fnn_rmsprop_update)(REAL *restrict param, const REAL *restrict grad, REAL *restrict h,
                             fnn_index size, double lr, double decay_rate)
{
    const REAL lr_ = (REAL)lr, decay = (REAL)decay_rate, keep = (REAL)(1 - decay_rate);
    for (fnn_index i = 0; i < size; i++) {
        h[i] *= decay;
        h[i] += keep * grad[i] * grad[i];
        param[i] -= lr_ * grad[i] / (SQRT(h[i]) + FNN_OPTIM_EPS);
    }
}

void FNN(fnn_adam_update)(REAL *restrict param, const REAL *restrict grad, REAL *restrict m,
                          REAL *restrict v, fnn_index size, double lr_t, double beta1,
                          double beta2)
{
    const REAL lr_ = (REAL)lr_t, c1 = (REAL)(1 - beta1), c2 = (REAL)(1 - beta2);
    for (fnn_index i = 0; i < size; i++) {
        m[i] += c1 * (grad[i] - m[i]);
        v[i] += c2 * (grad[i] * grad[i] - v[i]);
        param[i] -= lr_ * m[i] / (SQRT(v[i]) + FNN_OPTIM_EPS);
    }
}

#undef FNN_OPTIM_EPS
