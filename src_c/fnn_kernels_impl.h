/*
 * Body of every kernel of fnn_kernels.h, written once for a floating type REAL with name
 * suffix SFX, and included twice by fnn_kernels.c (float/f32 and double/f64).
 *
 * Sums are accumulated in double, also for float32 data: the row sums of softmax and the
 * losses then do not lose digits on wide rows, and cost nothing extra on this memory-bound work.
 */

/* The book's -log(y + 1e-7), with the sum rounded in the data's own precision as NumPy rounds
   it (in float32, 1 + 1e-7 is 1 + 2^-23), then the log taken in double. */
#define FNN_BOOK_LOG(y) fnn_log_f64((double)((y) + (REAL)FNN_BOOK_EPS))

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

FNN_INLINE REAL FNN(sigmoid_point)(REAL x)
{
    /* exp of -|x| never overflows: 1/(1+e) for x >= 0 and e/(1+e) for x < 0 are both exact
       forms of 1/(1+exp(-x)), without the overflow warning of the book's form at x < -709. */
    const REAL e = EXP(-FABS(x));
    const REAL r = (REAL)1 / ((REAL)1 + e);
    return x >= 0 ? r : e * r;
}

FNN_MULTIVERSION void FNN(fnn_sigmoid_forward)(const REAL *restrict x, REAL *restrict out, fnn_index size)
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

FNN_MULTIVERSION void FNN(fnn_bias_activation)(REAL *restrict z, const REAL *restrict b, fnn_index n,
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

/* Row reductions in FNN_LANES independent partial results, which the compiler keeps in one
   vector register: an in-order reduction over a row could not be vectorised.  The sums are
   taken in double. */
#define FNN_LANES 8

FNN_INLINE REAL FNN(row_max)(const REAL *x, fnn_index k)
{
    /* x[j] > m is false for NaN, so a NaN is skipped here; it still makes its row NaN through
       exp(NaN - m), as NumPy's max and exp would */
    REAL part[FNN_LANES];
    for (int l = 0; l < FNN_LANES; l++)
        part[l] = x[0];
    fnn_index j = 0;
    for (; j + FNN_LANES <= k; j += FNN_LANES)
        for (int l = 0; l < FNN_LANES; l++)
            part[l] = x[j + l] > part[l] ? x[j + l] : part[l];
    REAL m = part[0];
    for (int l = 1; l < FNN_LANES; l++)
        m = part[l] > m ? part[l] : m;
    for (; j < k; j++)
        m = x[j] > m ? x[j] : m;
    return m;
}

FNN_INLINE double FNN(row_sum)(const REAL *y, fnn_index k)
{
    double part[FNN_LANES] = {0};
    fnn_index j = 0;
    for (; j + FNN_LANES <= k; j += FNN_LANES)
        for (int l = 0; l < FNN_LANES; l++)
            part[l] += (double)y[j + l];
    double s = 0;
    for (; j < k; j++)
        s += (double)y[j];
    for (int l = 0; l < FNN_LANES; l++)
        s += part[l];
    return s;
}

/* Softmax works on blocks of rows small enough to stay in L1: first each row is shifted by
   its max, then one flat loop takes the exponentials of the whole block, so that short rows
   (ten classes) still fill whole vectors, then each row is summed. */
#define FNN_BLOCK 2048 /* elements of a block */

FNN_INLINE fnn_index FNN(block_rows)(fnn_index k)
{
    return k >= FNN_BLOCK ? 1 : FNN_BLOCK / k;
}

/* y[i] = x[i] - max x[i] for the rows of a block (y may be x). */
FNN_INLINE void FNN(shift_rows)(const REAL *x, REAL *y, fnn_index rows, fnn_index k)
{
    for (fnn_index i = 0; i < rows; i++) {
        const REAL mi = FNN(row_max)(x + i * k, k);
        for (fnn_index j = 0; j < k; j++)
            y[i * k + j] = x[i * k + j] - mi;
    }
}

/* y = exp(y) over a block, and the sum of each row into s. */
FNN_INLINE void FNN(exp_rows)(REAL *restrict y, fnn_index rows, fnn_index k, double *restrict s)
{
    const fnn_index size = rows * k;
    for (fnn_index j = 0; j < size; j++)
        y[j] = EXP(y[j]);
    for (fnn_index i = 0; i < rows; i++)
        s[i] = FNN(row_sum)(y + i * k, k);
}

FNN_INLINE void FNN(normalize_row)(REAL *restrict y, fnn_index k, double s)
{
    /* one division per row, then products: within an ulp of y / s, at a fraction of the cost
       of a division per element */
    const double inv = 1.0 / s;
    for (fnn_index j = 0; j < k; j++)
        y[j] = (REAL)(y[j] * inv);
}

FNN_MULTIVERSION void FNN(fnn_softmax)(const REAL *restrict x, REAL *restrict y, fnn_index n,
                                       fnn_index k)
{
    double s[FNN_BLOCK];
    const fnn_index block = FNN(block_rows)(k);
    for (fnn_index i0 = 0; i0 < n; i0 += block) {
        const fnn_index rows = n - i0 < block ? n - i0 : block;
        REAL *yb = y + i0 * k;
        FNN(shift_rows)(x + i0 * k, yb, rows, k);
        FNN(exp_rows)(yb, rows, k, s);
        for (fnn_index i = 0; i < rows; i++)
            FNN(normalize_row)(yb + i * k, k, s[i]);
    }
}

/* y = softmax(x) and the loss of each row; y may be x (the training step's in-place pass). */
FNN_MULTIVERSION void FNN(fnn_softmax_xent_labels)(const REAL *x,
                                                   const int64_t *restrict labels,
                                                   REAL *y, double *restrict row_loss,
                                                   fnn_index n, fnn_index k, int exact)
{
    double s[FNN_BLOCK];
    const fnn_index block = FNN(block_rows)(k);
    for (fnn_index i0 = 0; i0 < n; i0 += block) {
        const fnn_index rows = n - i0 < block ? n - i0 : block;
        REAL *yb = y + i0 * k;
        const int64_t *lb = labels + i0;
        FNN(shift_rows)(x + i0 * k, yb, rows, k);
        if (exact)
            for (fnn_index i = 0; i < rows; i++)
                row_loss[i0 + i] = -(double)yb[i * k + lb[i]]; /* -(x_c - max) */
        FNN(exp_rows)(yb, rows, k, s);
        for (fnn_index i = 0; i < rows; i++) {
            FNN(normalize_row)(yb + i * k, k, s[i]);
            /* s[i] becomes what the row's loss takes the log of, for one flat pass of logs */
            if (!exact)
                s[i] = (double)(yb[i * k + lb[i]] + (REAL)FNN_BOOK_EPS);
        }
        for (fnn_index i = 0; i < rows; i++)
            s[i] = fnn_log_f64(s[i]);
        for (fnn_index i = 0; i < rows; i++)
            row_loss[i0 + i] = exact ? row_loss[i0 + i] + s[i] : -s[i];
    }
}

FNN_MULTIVERSION void FNN(fnn_softmax_xent_targets)(const REAL *x,
                                                    const REAL *restrict t, REAL *y,
                                                    double *restrict row_loss, fnn_index n,
                                                    fnn_index k, int exact)
{
    double s[FNN_BLOCK], tsum[FNN_BLOCK];
    const fnn_index block = FNN(block_rows)(k);
    for (fnn_index i0 = 0; i0 < n; i0 += block) {
        const fnn_index rows = n - i0 < block ? n - i0 : block;
        REAL *yb = y + i0 * k;
        const REAL *tb = t + i0 * k;
        FNN(shift_rows)(x + i0 * k, yb, rows, k);
        if (exact)
            for (fnn_index i = 0; i < rows; i++) {
                double tz = 0, ts = 0; /* sum t (x - max), sum t */
                for (fnn_index j = 0; j < k; j++) {
                    /* a term at the row's max adds nothing, also for t = inf: inf * 0 would
                       be NaN where NumPy's t ((x - max) - log s) is inf */
                    const double d = (double)yb[i * k + j];
                    tz += d != 0 ? (double)tb[i * k + j] * d : 0;
                    ts += (double)tb[i * k + j];
                }
                row_loss[i0 + i] = -tz;
                tsum[i] = ts;
            }
        FNN(exp_rows)(yb, rows, k, s);
        for (fnn_index i = 0; i < rows; i++) {
            FNN(normalize_row)(yb + i * k, k, s[i]);
            if (exact) {
                row_loss[i0 + i] += tsum[i] * fnn_log_f64(s[i]);
            } else {
                double loss = 0;
                for (fnn_index j = 0; j < k; j++)
                    loss -= (double)tb[i * k + j] * FNN_BOOK_LOG(yb[i * k + j]);
                row_loss[i0 + i] = loss;
            }
        }
    }
}

/* dx = (y - t) * (dout / n), the backward of SoftmaxWithLoss (y may be dx): one product per
   element, within an ulp of the book's (y - t) * dout / n. */
FNN_INLINE void FNN(xent_grad_labels)(const REAL *y, const int64_t *restrict labels, REAL *dx,
                                      fnn_index n, fnn_index k, REAL dout)
{
    const REAL scale = dout / (REAL)n;
    for (fnn_index i = 0; i < n; i++) {
        const REAL yc = y[i * k + labels[i]];
        for (fnn_index j = 0; j < k; j++)
            dx[i * k + j] = y[i * k + j] * scale;
        dx[i * k + labels[i]] = (yc - (REAL)1) * scale;
    }
}

FNN_INLINE void FNN(xent_grad_targets)(const REAL *y, const REAL *restrict t, REAL *dx,
                                       fnn_index n, fnn_index k, REAL dout)
{
    const REAL scale = dout / (REAL)n;
    const fnn_index size = n * k;
    for (fnn_index i = 0; i < size; i++)
        dx[i] = (y[i] - t[i]) * scale;
}

void FNN(fnn_softmax_xent_backward_labels)(const REAL *restrict y,
                                           const int64_t *restrict labels, REAL *restrict dx,
                                           fnn_index n, fnn_index k, REAL dout)
{
    FNN(xent_grad_labels)(y, labels, dx, n, k, dout);
}

void FNN(fnn_softmax_xent_backward_targets)(const REAL *restrict y, const REAL *restrict t,
                                            REAL *restrict dx, fnn_index n, fnn_index k,
                                            REAL dout)
{
    FNN(xent_grad_targets)(y, t, dx, n, k, dout);
}

/* The loss pass, then the gradient over the softmax while it is in dx. */
FNN_MULTIVERSION void FNN(fnn_softmax_xent_grad_labels)(const REAL *x,
                                                        const int64_t *restrict labels, REAL *dx,
                                                        double *restrict row_loss, fnn_index n,
                                                        fnn_index k, int exact, REAL dout)
{
    FNN(fnn_softmax_xent_labels)(x, labels, dx, row_loss, n, k, exact);
    FNN(xent_grad_labels)(dx, labels, dx, n, k, dout);
}

FNN_MULTIVERSION void FNN(fnn_softmax_xent_grad_targets)(const REAL *x, const REAL *restrict t,
                                                         REAL *dx, double *restrict row_loss,
                                                         fnn_index n, fnn_index k, int exact,
                                                         REAL dout)
{
    FNN(fnn_softmax_xent_targets)(x, t, dx, row_loss, n, k, exact);
    FNN(xent_grad_targets)(dx, t, dx, n, k, dout);
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
#undef FNN_LANES
#undef FNN_BLOCK
