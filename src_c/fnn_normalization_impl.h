/*
 * Body of every kernel of fnn_normalization.h, written once for a floating type REAL with
 * name suffix SFX, and included twice by fnn_normalization.c (float/f32 and double/f64).
 *
 * Batch normalization works column by column over row-major (n, d) data: every column sum is
 * accumulated row after row in a d-wide array of doubles, so that the inner loop runs along
 * a contiguous row and vectorises, and float32 data loses no digits in the sums.
 */

/* the sigmoid of fnn_kernels_impl.h (exp of -|x|, no overflow), for the fused activation */
FNN_INLINE REAL FNN(bn_sigmoid)(REAL x)
{
    const REAL e = EXP(-(x < 0 ? -x : x));
    const REAL r = (REAL)1 / ((REAL)1 + e);
    return x >= 0 ? r : e * r;
}

/* row = act(row) * mask (mask may be NULL) * scale, in place over one row in cache */
FNN_INLINE void FNN(bn_activate_row)(REAL *restrict row, fnn_index d, int activation,
                                     const uint8_t *restrict mask, REAL scale)
{
    switch (activation) {
    case FNN_RELU:
        for (fnn_index j = 0; j < d; j++)
            row[j] = row[j] <= 0 ? (REAL)0 : row[j];
        break;
    case FNN_SIGMOID:
        for (fnn_index j = 0; j < d; j++)
            row[j] = FNN(bn_sigmoid)(row[j]);
        break;
    default:
        break;
    }
    if (mask)
        /* a product, as the book's x * mask: NaN and inf stay NaN where they are dropped */
        for (fnn_index j = 0; j < d; j++)
            row[j] = row[j] * (REAL)mask[j];
    else if (scale != (REAL)1)
        for (fnn_index j = 0; j < d; j++)
            row[j] = row[j] * scale;
}

/* x and out may be the same array */
void FNN(fnn_mask_multiply)(const REAL *x, const uint8_t *restrict mask, REAL *out,
                            fnn_index size)
{
    for (fnn_index i = 0; i < size; i++)
        out[i] = x[i] * (REAL)mask[i];
}

void FNN(fnn_scale)(const REAL *restrict x, REAL scale, REAL *restrict out, fnn_index size)
{
    for (fnn_index i = 0; i < size; i++)
        out[i] = x[i] * scale;
}

FNN_MULTIVERSION void FNN(fnn_batchnorm_forward_train)(
    const REAL *restrict x, const REAL *restrict bias, const REAL *restrict gamma,
    const REAL *restrict beta, fnn_index n, fnn_index d, double eps, double momentum,
    double *restrict running_mean, double *restrict running_var, double *restrict mean,
    double *restrict inv_std, REAL *restrict std, REAL *restrict xn, REAL *restrict out,
    int activation, const uint8_t *restrict mask)
{
    /* Pass 1: sum (v - K) and sum (v - K)^2 with K the first row, in mean and inv_std.  One
       pass instead of the two of mean-then-variance: shifted by a sample of the column, the
       sums do not cancel where the mean is large against the spread (the error of the
       variance is about an ulp times (K - mean)^2 / var, K a sample, so about an ulp). */
    for (fnn_index j = 0; j < d; j++) {
        /* K, kept in std until the end of the pass; 0 where the first row is not finite, so
           that an infinite entry gives the infinite mean NumPy's mean gives */
        const REAL k = bias ? x[j] + bias[j] : x[j];
        std[j] = k - k == 0 ? k : (REAL)0;
        mean[j] = 0;
        inv_std[j] = 0;
    }
    for (fnn_index i = 0; i < n; i++) {
        const REAL *restrict row = x + i * d;
        for (fnn_index j = 0; j < d; j++) {
            const REAL v = bias ? row[j] + bias[j] : row[j];
            const double t = (double)v - (double)std[j];
            mean[j] += t;
            inv_std[j] += t * t;
        }
    }
    for (fnn_index j = 0; j < d; j++) {
        const double shift = mean[j] / (double)n;
        double var = inv_std[j] / (double)n - shift * shift;
        var = var > 0 ? var : 0; /* rounding may leave -0.0 or a tiny negative */
        /* an overflowing sum of squares is an infinite variance, as the book's mean of
           squares, not inf - inf; a column with inf or NaN has the book's NaN variance */
        var = inv_std[j] == (double)INFINITY ? inv_std[j] : var;
        const double mu = (double)std[j] + shift;
        var = mu - mu == 0 && inv_std[j] == inv_std[j] ? var : (double)NAN;
        const double sd = SQRT(var + eps);
        mean[j] = mu;
        inv_std[j] = 1.0 / sd;
        std[j] = (REAL)sd;
        if (running_mean) {
            running_mean[j] = momentum * running_mean[j] + (1.0 - momentum) * mu;
            running_var[j] = momentum * running_var[j] + (1.0 - momentum) * var;
        }
    }
    /* Pass 2: normalise, scale and shift, then the activation and the dropout mask while the
       row is in cache. */
    for (fnn_index i = 0; i < n; i++) {
        const REAL *restrict row = x + i * d;
        REAL *restrict xr = xn + i * d;
        REAL *restrict o = out + i * d;
        for (fnn_index j = 0; j < d; j++) {
            const REAL v = bias ? row[j] + bias[j] : row[j];
            const REAL z = (REAL)(((double)v - mean[j]) * inv_std[j]);
            xr[j] = z;
            o[j] = gamma[j] * z + beta[j];
        }
        FNN(bn_activate_row)(o, d, activation, mask ? mask + i * d : NULL, (REAL)1);
    }
}

FNN_MULTIVERSION void FNN(fnn_batchnorm_forward_test)(
    const REAL *restrict x, const REAL *restrict bias, const REAL *restrict gamma,
    const REAL *restrict beta, fnn_index n, fnn_index d, double eps, const double *restrict running_mean,
    const double *restrict running_var, double *restrict inv_std, REAL *restrict out,
    int activation, REAL scale)
{
    for (fnn_index j = 0; j < d; j++)
        inv_std[j] = 1.0 / SQRT(running_var[j] + eps);
    for (fnn_index i = 0; i < n; i++) {
        const REAL *restrict row = x + i * d;
        REAL *restrict o = out + i * d;
        for (fnn_index j = 0; j < d; j++) {
            const REAL v = bias ? row[j] + bias[j] : row[j];
            const REAL z = (REAL)(((double)v - running_mean[j]) * inv_std[j]);
            o[j] = gamma[j] * z + beta[j];
        }
        FNN(bn_activate_row)(o, d, activation, NULL, scale);
    }
}

/* dout and dx may be the same array (the network's backward works in place) */
FNN_MULTIVERSION void FNN(fnn_batchnorm_backward)(
    const REAL *dout, const REAL *restrict xn, const REAL *restrict gamma,
    const double *restrict inv_std, fnn_index n, fnn_index d, REAL *dx, REAL *restrict dgamma,
    REAL *restrict dbeta, double *restrict work, int activation, const REAL *restrict a,
    const uint8_t *restrict mask)
{
    double *restrict sum_g = work, *restrict sum_xg = work + d;
    for (fnn_index j = 0; j < d; j++)
        sum_g[j] = sum_xg[j] = 0;
    /* Pass 1: g = the gradient at gamma xn + beta (through the dropout mask and the
       activation), kept in dx, and its two column sums. */
    for (fnn_index i = 0; i < n; i++) {
        const REAL *gi = dout + i * d;
        REAL *go = dx + i * d;
        const REAL *restrict xr = xn + i * d;
        const REAL *restrict ar = a ? a + i * d : NULL;
        const uint8_t *restrict mr = mask ? mask + i * d : NULL;
        for (fnn_index j = 0; j < d; j++) {
            REAL g = mr ? gi[j] * (REAL)mr[j] : gi[j];
            if (activation == FNN_RELU)
                g = ar[j] <= 0 ? (REAL)0 : g; /* a <= 0 exactly where the book's x <= 0 */
            else if (activation == FNN_SIGMOID)
                g = g * ((REAL)1 - ar[j]) * ar[j];
            go[j] = g;
            sum_g[j] += (double)g;
            sum_xg[j] += (double)xr[j] * (double)g;
        }
    }
    for (fnn_index j = 0; j < d; j++) {
        dbeta[j] = (REAL)sum_g[j];
        dgamma[j] = (REAL)sum_xg[j];
        /* the two terms of dx per column, scaled once */
        const double c = (double)gamma[j] * inv_std[j] / (double)n;
        sum_g[j] *= c;
        sum_xg[j] *= c;
    }
    /* Pass 2: dx = gamma inv_std g - c sum g - c sum(xn g) xn, c = gamma inv_std / n */
    for (fnn_index i = 0; i < n; i++) {
        REAL *go = dx + i * d;
        const REAL *restrict xr = xn + i * d;
        for (fnn_index j = 0; j < d; j++) {
            const double c = (double)gamma[j] * inv_std[j];
            go[j] = (REAL)(c * (double)go[j] - sum_g[j] - sum_xg[j] * (double)xr[j]);
        }
    }
}
