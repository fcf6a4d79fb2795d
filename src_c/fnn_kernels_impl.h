/*
 * Body of every kernel of fnn_kernels.h, written once for a floating type REAL with name
 * suffix SFX, and included twice by fnn_kernels.c (float/f32 and double/f64).
 *
 * Sums are accumulated in double, also for float32 data: the row sums of softmax and the
 * losses then do not lose digits on wide rows, and cost nothing extra on this memory-bound work.
 */
#define FNN_CAT2(a, b) a##_##b
#define FNN_CAT(a, b) FNN_CAT2(a, b)
#define FNN(name) FNN_CAT(name, SFX)

/* The book's -log(y + 1e-7), with the sum rounded in the data's own precision as NumPy rounds
   it (in float32, 1 + 1e-7 is 1 + 2^-23), then the log taken in double. */
#define FNN_BOOK_LOG(y) log((double)((y) + (REAL)FNN_BOOK_EPS))

void FNN(fnn_relu_forward)(const REAL *restrict x, REAL *restrict out, uint8_t *restrict mask,
                           fnn_index size)
{
    for (fnn_index i = 0; i < size; i++) {
        /* x <= 0 is false for NaN, so NaN passes through as in the book's out[mask] = 0 */
        const uint8_t m = x[i] <= 0;
        mask[i] = m;
        out[i] = m ? (REAL)0 : x[i];
    }
}

void FNN(fnn_relu_backward)(const REAL *restrict dout, const uint8_t *restrict mask,
                            REAL *restrict dx, fnn_index size)
{
    for (fnn_index i = 0; i < size; i++)
        dx[i] = mask[i] ? (REAL)0 : dout[i];
}

static inline REAL FNN(sigmoid_point)(REAL x)
{
    /* exp of -|x| never overflows: 1/(1+e) for x >= 0 and e/(1+e) for x < 0 are both exact
       forms of 1/(1+exp(-x)), without the overflow warning of the book's form at x < -709. */
    const REAL e = EXP(-FABS(x));
    const REAL r = (REAL)1 / ((REAL)1 + e);
    return x >= 0 ? r : e * r;
}

void FNN(fnn_sigmoid_forward)(const REAL *restrict x, REAL *restrict out, fnn_index size)
{
    for (fnn_index i = 0; i < size; i++)
        out[i] = FNN(sigmoid_point)(x[i]);
}

void FNN(fnn_sigmoid_backward)(const REAL *restrict dout, const REAL *restrict out,
                               REAL *restrict dx, fnn_index size)
{
    /* the book's order of operations, dout * (1 - out) * out, so results agree bit for bit */
    for (fnn_index i = 0; i < size; i++)
        dx[i] = dout[i] * ((REAL)1 - out[i]) * out[i];
}

void FNN(fnn_bias_activation)(REAL *restrict z, const REAL *restrict b, fnn_index n,
                              fnn_index k, int activation)
{
    for (fnn_index i = 0; i < n; i++) {
        REAL *restrict row = z + i * k;
        switch (activation) {
        case FNN_RELU:
            for (fnn_index j = 0; j < k; j++) {
                const REAL v = row[j] + b[j];
                row[j] = v <= 0 ? (REAL)0 : v;
            }
            break;
        case FNN_SIGMOID:
            for (fnn_index j = 0; j < k; j++)
                row[j] = FNN(sigmoid_point)(row[j] + b[j]);
            break;
        default:
            for (fnn_index j = 0; j < k; j++)
                row[j] += b[j];
        }
    }
}

void FNN(fnn_column_sum)(const REAL *restrict dout, REAL *restrict db, fnn_index n, fnn_index k)
{
    /* row after row, as NumPy reduces axis 0 of a C-ordered array: the inner loop is a
       contiguous vector add */
    for (fnn_index j = 0; j < k; j++)
        db[j] = 0;
    for (fnn_index i = 0; i < n; i++) {
        const REAL *restrict row = dout + i * k;
        for (fnn_index j = 0; j < k; j++)
            db[j] += row[j];
    }
}

/* y = exp(x - max x) of one row; returns the row's max and (through *sum) the sum of y. */
static inline REAL FNN(exp_row)(const REAL *restrict x, REAL *restrict y, fnn_index k,
                                double *sum)
{
    REAL m = x[0];
    for (fnn_index j = 1; j < k; j++)
        if (x[j] > m)
            m = x[j];
    double s = 0;
    for (fnn_index j = 0; j < k; j++) {
        y[j] = EXP(x[j] - m);
        s += y[j];
    }
    *sum = s;
    return m;
}

static inline void FNN(normalize_row)(REAL *restrict y, fnn_index k, double s)
{
    for (fnn_index j = 0; j < k; j++)
        y[j] = (REAL)(y[j] / s);
}

void FNN(fnn_softmax)(const REAL *restrict x, REAL *restrict y, fnn_index n, fnn_index k)
{
    for (fnn_index i = 0; i < n; i++) {
        double s;
        FNN(exp_row)(x + i * k, y + i * k, k, &s);
        FNN(normalize_row)(y + i * k, k, s);
    }
}

void FNN(fnn_softmax_xent_labels)(const REAL *restrict x, const int64_t *restrict labels,
                                  REAL *restrict y, double *restrict row_loss, fnn_index n,
                                  fnn_index k, int exact)
{
    for (fnn_index i = 0; i < n; i++) {
        const REAL *xi = x + i * k;
        REAL *yi = y + i * k;
        double s;
        const REAL m = FNN(exp_row)(xi, yi, k, &s);
        FNN(normalize_row)(yi, k, s);
        const int64_t c = labels[i];
        row_loss[i] = exact ? -((double)(xi[c] - m) - log(s)) : -FNN_BOOK_LOG(yi[c]);
    }
}

void FNN(fnn_softmax_xent_targets)(const REAL *restrict x, const REAL *restrict t,
                                   REAL *restrict y, double *restrict row_loss, fnn_index n,
                                   fnn_index k, int exact)
{
    for (fnn_index i = 0; i < n; i++) {
        const REAL *xi = x + i * k, *ti = t + i * k;
        REAL *yi = y + i * k;
        double s;
        const REAL m = FNN(exp_row)(xi, yi, k, &s);
        FNN(normalize_row)(yi, k, s);
        double loss = 0;
        if (exact) {
            const double log_s = log(s);
            for (fnn_index j = 0; j < k; j++)
                loss -= (double)ti[j] * ((double)(xi[j] - m) - log_s);
        } else {
            for (fnn_index j = 0; j < k; j++)
                loss -= (double)ti[j] * FNN_BOOK_LOG(yi[j]);
        }
        row_loss[i] = loss;
    }
}

void FNN(fnn_softmax_xent_backward_labels)(const REAL *restrict y,
                                           const int64_t *restrict labels, REAL *restrict dx,
                                           fnn_index n, fnn_index k, REAL dout)
{
    const REAL batch = (REAL)n;
    for (fnn_index i = 0; i < n; i++) {
        const REAL *yi = y + i * k;
        REAL *dxi = dx + i * k;
        for (fnn_index j = 0; j < k; j++)
            dxi[j] = yi[j] * dout / batch;
        const int64_t c = labels[i];
        dxi[c] = (yi[c] - (REAL)1) * dout / batch;
    }
}

void FNN(fnn_softmax_xent_backward_targets)(const REAL *restrict y, const REAL *restrict t,
                                            REAL *restrict dx, fnn_index n, fnn_index k,
                                            REAL dout)
{
    const REAL batch = (REAL)n;
    const fnn_index size = n * k;
    for (fnn_index i = 0; i < size; i++)
        dx[i] = (y[i] - t[i]) * dout / batch;
}

void FNN(fnn_softmax_xent_grad_labels)(REAL *restrict z, const int64_t *restrict labels,
                                       double *restrict row_loss, fnn_index n, fnn_index k,
                                       int exact, REAL dout)
{
    const REAL batch = (REAL)n;
    for (fnn_index i = 0; i < n; i++) {
        REAL *zi = z + i * k;
        const int64_t c = labels[i];
        REAL m = zi[0];
        for (fnn_index j = 1; j < k; j++)
            if (zi[j] > m)
                m = zi[j];
        const REAL zc = zi[c] - m;
        double s = 0;
        for (fnn_index j = 0; j < k; j++) {
            zi[j] = EXP(zi[j] - m);
            s += zi[j];
        }
        FNN(normalize_row)(zi, k, s);
        const REAL yc = zi[c];
        row_loss[i] = exact ? -((double)zc - log(s)) : -FNN_BOOK_LOG(yc);
        /* the same operations as SoftmaxWithLoss.backward: (y - t) * dout / n */
        for (fnn_index j = 0; j < k; j++)
            zi[j] = zi[j] * dout / batch;
        zi[c] = (yc - (REAL)1) * dout / batch;
    }
}

void FNN(fnn_softmax_xent_grad_targets)(REAL *restrict z, const REAL *restrict t,
                                        double *restrict row_loss, fnn_index n, fnn_index k,
                                        int exact, REAL dout)
{
    const REAL batch = (REAL)n;
    for (fnn_index i = 0; i < n; i++) {
        REAL *zi = z + i * k;
        const REAL *ti = t + i * k;
        REAL m = zi[0];
        for (fnn_index j = 1; j < k; j++)
            if (zi[j] > m)
                m = zi[j];
        double tz = 0, tsum = 0; /* sum t (z - m) and sum t, for the exact loss */
        double s = 0;
        for (fnn_index j = 0; j < k; j++) {
            tz += (double)ti[j] * (double)(zi[j] - m);
            tsum += ti[j];
            zi[j] = EXP(zi[j] - m);
            s += zi[j];
        }
        FNN(normalize_row)(zi, k, s);
        double loss = 0;
        if (exact) {
            loss = -(tz - tsum * log(s));
        } else {
            for (fnn_index j = 0; j < k; j++)
                loss -= (double)ti[j] * FNN_BOOK_LOG(zi[j]);
        }
        row_loss[i] = loss;
        for (fnn_index j = 0; j < k; j++)
            zi[j] = (zi[j] - ti[j]) * dout / batch;
    }
}

void FNN(fnn_activation_backward)(REAL *restrict delta, const REAL *restrict a, fnn_index size,
                                  int activation)
{
    if (activation == FNN_RELU) {
        /* a <= 0 exactly where the book's mask x <= 0 holds (a = x passes NaN through) */
        for (fnn_index i = 0; i < size; i++)
            delta[i] = a[i] <= 0 ? (REAL)0 : delta[i];
    } else if (activation == FNN_SIGMOID) {
        for (fnn_index i = 0; i < size; i++)
            delta[i] = delta[i] * ((REAL)1 - a[i]) * a[i];
    }
}

void FNN(fnn_add_scaled)(REAL *restrict y, const REAL *restrict x, REAL alpha, fnn_index size)
{
    for (fnn_index i = 0; i < size; i++)
        y[i] += alpha * x[i];
}

void FNN(fnn_xent_labels)(const REAL *restrict y, const int64_t *restrict labels,
                          double *restrict row_loss, fnn_index n, fnn_index k)
{
    for (fnn_index i = 0; i < n; i++)
        row_loss[i] = -FNN_BOOK_LOG(y[i * k + labels[i]]);
}

void FNN(fnn_xent_targets)(const REAL *restrict y, const REAL *restrict t,
                           double *restrict row_loss, fnn_index n, fnn_index k)
{
    for (fnn_index i = 0; i < n; i++) {
        double loss = 0;
        for (fnn_index j = 0; j < k; j++)
            loss -= (double)t[i * k + j] * FNN_BOOK_LOG(y[i * k + j]);
        row_loss[i] = loss;
    }
}

#undef FNN_BOOK_LOG
#undef FNN
#undef FNN_CAT
#undef FNN_CAT2
