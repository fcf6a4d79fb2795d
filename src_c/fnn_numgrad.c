/*
 * Loss changes of single-parameter perturbations, from a cached forward pass (fnn_numgrad.h).
 *
 * The softmax sum of a perturbed row is S' = S (1 + D) with D = sum_c p_c (exp(dz_c) - 1),
 * so each row's loss change is, without cancellation against the unperturbed loss:
 *   exact (log-softmax):  t_sum log1p(D) - sum_c t_c dz_c
 *   book, -log(y + 1e-7): -sum_c t_c log1p(R_c),  R_c = rho_c (exp(dz_c) - 1 - D) / (1 + D),
 * since y_c' - y_c = y_c (exp(dz_c) - 1 - D) / (1 + D) and rho_c = y_c / (y_c + 1e-7).
 * Computed this way the difference carries ~1e-16 of its own size as error, where the book's
 * loss(p + h) - loss(p - h) carries ~1e-16 of the loss; the results agree to that rounding.
 *
 * Loops over units keep each step a separate pass over a short array (no calls, no branches
 * that cannot be turned into selects), so that the compiler vectorises them.
 */
#include <math.h>

#include "fnn_numgrad.h"

/* The sweeps are loops of short vectorisable passes, built per CPU (FNN_MULTIVERSION in
   fnn_common.h); the helpers they call are FNN_INLINE so that they are compiled for the same
   target. */
/* 1 / m!, m = 0 .. FNN_NUMGRAD_MAX_TERMS + 1 */
static const double INV_FACT[FNN_NUMGRAD_MAX_TERMS + 2] = {
    1.0, 1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040, 1.0 / 40320,
    1.0 / 362880, 1.0 / 3628800, 1.0 / 39916800, 1.0 / 479001600, 1.0 / 6227020800.0,
    1.0 / 87178291200.0, 1.0 / 1307674368000.0, 1.0 / 20922789888000.0,
    1.0 / 355687428096000.0,
};

/* (-1)^(m+1) / m, the coefficients of log(1 + u), m = 0 .. FNN_NUMGRAD_MAX_TERMS */
static const double LOG_COEF[FNN_NUMGRAD_MAX_TERMS + 1] = {
    0.0, 1.0, -1.0 / 2, 1.0 / 3, -1.0 / 4, 1.0 / 5, -1.0 / 6, 1.0 / 7, -1.0 / 8, 1.0 / 9,
    -1.0 / 10, 1.0 / 11, -1.0 / 12, 1.0 / 13, -1.0 / 14, 1.0 / 15, -1.0 / 16,
};

/* Truncation allowed, relative to the largest argument: below half an ulp of it. */
#define FNN_SERIES_TOL 0x1p-56

int fnn_numgrad_exp_terms(double u_max)
{
    /* The rest after m terms of sum u^i / i! is at most |u|^(m+1) e^|u| / (m+1)!. */
    if (!(u_max >= 0 && u_max <= 1))
        return 0;
    for (int m = 1; m <= FNN_NUMGRAD_MAX_TERMS; m++)
        if (pow(u_max, m) * exp(u_max) * INV_FACT[m + 1] <= FNN_SERIES_TOL)
            return m;
    return 0;
}

int fnn_numgrad_log_terms(double u_max)
{
    /* The rest after m terms of sum (-1)^(i+1) u^i / i is at most |u|^(m+1) / ((m+1)(1-|u|)). */
    if (!(u_max >= 0 && u_max <= 0.5))
        return 0;
    for (int m = 1; m <= FNN_NUMGRAD_MAX_TERMS; m++)
        if (pow(u_max, m) / ((m + 1) * (1 - u_max)) <= FNN_SERIES_TOL)
            return m;
    return 0;
}

double fnn_numgrad_log_bound(double u_max)
{
    /* |D| <= e^u - 1 and 1 + D >= e^-u, so |R_c| <= 2 (e^u - 1) e^u, which also bounds |D|. */
    return 2 * expm1(u_max) * exp(u_max);
}

/* exp(u) - 1 by m >= 1 terms of its series */
FNN_INLINE double em1(double u, int m)
{
    double s = INV_FACT[m];
    for (int i = m - 1; i >= 1; i--)
        s = s * u + INV_FACT[i];
    return s * u;
}

/* log(1 + u) by m terms of its series, or libm's log1p for m = 0 */
FNN_INLINE double lg1p(double u, int m)
{
    if (m == 0)
        return log1p(u);
    double s = LOG_COEF[m];
    for (int i = m - 1; i >= 1; i--)
        s = s * u + LOG_COEF[i];
    return s * u;
}

/* out[j] = exp(u[j]) - 1, m >= 1 terms: Horner's rule as m passes over the array (each
   one vectorises). */
FNN_INLINE void em1_vec(const double *restrict u, double *restrict out, fnn_index len, int m)
{
    for (fnn_index j = 0; j < len; j++)
        out[j] = INV_FACT[m];
    for (int i = m - 1; i >= 1; i--) {
        const double c = INV_FACT[i];
        for (fnn_index j = 0; j < len; j++)
            out[j] = out[j] * u[j] + c;
    }
    for (fnn_index j = 0; j < len; j++)
        out[j] *= u[j];
}

/* out[j] = log(1 + u[j]), as em1_vec, or by libm for m = 0. */
FNN_INLINE void lg1p_vec(const double *restrict u, double *restrict out, fnn_index len, int m)
{
    if (m == 0) {
        for (fnn_index j = 0; j < len; j++)
            out[j] = log1p(u[j]);
        return;
    }
    for (fnn_index j = 0; j < len; j++)
        out[j] = LOG_COEF[m];
    for (int i = m - 1; i >= 1; i--) {
        const double c = LOG_COEF[i];
        for (fnn_index j = 0; j < len; j++)
            out[j] = out[j] * u[j] + c;
    }
    for (fnn_index j = 0; j < len; j++)
        out[j] *= u[j];
}

FNN_INLINE double relu_delta(double z, double delta)
{
    /* relu(z + delta) - relu(z); for z >= 0 it is max(delta, -z), free of rounding */
    const double up = z + delta;
    return z >= 0 ? (delta > -z ? delta : -z) : (up > 0 ? up : 0);
}

FNN_INLINE double sigmoid_delta(double slope, double cosig, double em)
{
    /* sigmoid(z + delta) - sigmoid(z) with em = exp(-delta) - 1, slope = s(z) s(-z) and
       cosig = s(-z): s(z) s(-z) (-em) / (1 + s(-z) em), exact algebra without cancellation */
    return slope * -em / (1 + cosig * em);
}

/* The same difference for steps too large for the series: two sigmoids subtracted. */
static double sigmoid_delta_direct(double z, double delta)
{
    const double in[2] = {z + delta, z};
    double out[2];
    fnn_sigmoid_forward_f64(in, out, 2);
    return out[0] - out[1];
}

double fnn_numgrad_act_delta(const fnn_numgrad_hidden *layer, fnn_index r, fnn_index j,
                             double delta, int m_act)
{
    const fnn_index at = r * layer->d + j;
    switch (layer->activation) {
    case FNN_RELU:
        return relu_delta(layer->z[at], delta);
    case FNN_SIGMOID:
        if (m_act == 0)
            return sigmoid_delta_direct(layer->z[at], delta);
        return sigmoid_delta(layer->slope[at], layer->cosig[at], em1(-delta, m_act));
    default:
        return delta;
    }
}

/* dz (d,) of row r: pre-activation changes in, activation changes out.  scratch: d doubles. */
FNN_INLINE void act_delta_vec(const fnn_numgrad_hidden *layer, fnn_index r, double *restrict dz,
                          int m_act, double *restrict scratch)
{
    const fnn_index d = layer->d;
    const double *restrict z = layer->z + r * d;
    switch (layer->activation) {
    case FNN_RELU:
        for (fnn_index j = 0; j < d; j++)
            dz[j] = relu_delta(z[j], dz[j]);
        break;
    case FNN_SIGMOID: {
        const double *restrict slope = layer->slope + r * d, *restrict cosig = layer->cosig + r * d;
        if (m_act == 0) {
            for (fnn_index j = 0; j < d; j++)
                dz[j] = sigmoid_delta_direct(z[j], dz[j]);
            break;
        }
        for (fnn_index j = 0; j < d; j++)
            scratch[j] = -dz[j];
        em1_vec(scratch, dz, d, m_act);
        for (fnn_index j = 0; j < d; j++)
            dz[j] = sigmoid_delta(slope[j], cosig[j], dz[j]);
        break;
    }
    default:
        break;
    }
}

/* max |x[i]|, i < len (NaN ignored: it propagates through the values anyway) */
FNN_INLINE double max_abs(const double *restrict x, fnn_index len)
{
    double u = 0;
    for (fnn_index i = 0; i < len; i++)
        u = fabs(x[i]) > u ? fabs(x[i]) : u;
    return u;
}

FNN_MULTIVERSION void fnn_numgrad_act_delta_rows(const fnn_numgrad_hidden *layer,
                                          const fnn_index *rows, double *dz, fnn_index q,
                                          double *scratch)
{
    const fnn_index d = layer->d;
    const int m_act =
        layer->activation == FNN_SIGMOID ? fnn_numgrad_exp_terms(max_abs(dz, q * d)) : 0;
    for (fnn_index i = 0; i < q; i++)
        act_delta_vec(layer, rows[i], dz + i * d, m_act, scratch);
}

/* Loss of row r at logits z[r] + dz minus its unperturbed loss, by the forward pass's own
   kernel: for changes too large for the series, where the difference does not cancel.
   scratch: 2 k doubles. */
static double dloss_direct(const fnn_numgrad_head *head, fnn_index r, const double *dz,
                           double *scratch)
{
    const fnn_index k = head->k;
    double *z = scratch, *y = scratch + k, loss;
    for (fnn_index c = 0; c < k; c++)
        z[c] = head->z[r * k + c] + dz[c];
    fnn_softmax_xent_targets_f64(z, head->t + r * k, y, &loss, 1, k, head->exact);
    return loss - head->loss[r];
}

/* Loss change of row r when its logits change by dz (k,).  scratch: 2 k doubles. */
FNN_INLINE double dloss_vec(const fnn_numgrad_head *head, fnn_index r, const double *restrict dz,
                            double *restrict scratch, int m_exp, int m_log)
{
    if (m_exp == 0)
        return dloss_direct(head, r, dz, scratch);
    const fnn_index k = head->k;
    const double *restrict p = head->p + r * k;
    double *restrict e = scratch;
    double D = 0;
    for (fnn_index c = 0; c < k; c++) {
        e[c] = em1(dz[c], m_exp);
        D += p[c] * e[c];
    }
    double out = 0;
    if (head->exact) {
        out = head->t_sum[r] * lg1p(D, m_log);
        for (fnn_index i = head->t_ptr[r]; i < head->t_ptr[r + 1]; i++)
            out -= head->t_val[i] * dz[head->t_cls[i]];
    } else {
        for (fnn_index i = head->t_ptr[r]; i < head->t_ptr[r + 1]; i++) {
            const fnn_index c = head->t_cls[i];
            const double R = head->rho[r * k + c] * (e[c] - D) / (1 + D);
            out -= head->t_val[i] * lg1p(R, m_log);
        }
    }
    return out;
}

/* Loss change of row r when its logit j alone changes by delta.  scratch: 3 k doubles. */
FNN_INLINE double dloss_axis(const fnn_numgrad_head *head, fnn_index r, fnn_index j,
                             double delta, int m_exp, int m_log, double *scratch)
{
    const fnn_index k = head->k;
    if (m_exp == 0) {
        double *dz = scratch + 2 * k;
        for (fnn_index c = 0; c < k; c++)
            dz[c] = c == j ? delta : 0;
        return dloss_direct(head, r, dz, scratch);
    }
    const double E = em1(delta, m_exp);
    const double D = head->p[r * k + j] * E;
    double out = 0;
    if (head->exact) {
        out = head->t_sum[r] * lg1p(D, m_log);
        for (fnn_index i = head->t_ptr[r]; i < head->t_ptr[r + 1]; i++)
            if (head->t_cls[i] == j)
                out -= head->t_val[i] * delta;
    } else {
        for (fnn_index i = head->t_ptr[r]; i < head->t_ptr[r + 1]; i++) {
            const fnn_index c = head->t_cls[i];
            const double R = head->rho[r * k + c] * ((c == j ? E : 0) - D) / (1 + D);
            out -= head->t_val[i] * lg1p(R, m_log);
        }
    }
    return out;
}

FNN_MULTIVERSION void fnn_numgrad_loss_rows(const fnn_numgrad_head *head, const fnn_index *rows,
                                     const double *dz, double *dloss_out, fnn_index q,
                                     double *scratch)
{
    const fnn_index k = head->k;
    const double u = max_abs(dz, q * k);
    const int m_exp = fnn_numgrad_exp_terms(u);
    const int m_log = fnn_numgrad_log_terms(fnn_numgrad_log_bound(u));
    for (fnn_index i = 0; i < q; i++)
        dloss_out[i] = dloss_vec(head, rows[i], dz + i * k, scratch, m_exp, m_log);
}

FNN_MULTIVERSION void fnn_numgrad_output_column(const fnn_numgrad_head *head, const double *a,
                                         const double *plus, const double *minus,
                                         double *acc_out, int m_exp, int m_log,
                                         double *scratch)
{
    const fnn_index n = head->n, k = head->k;
    for (fnn_index r = 0; r < n; r++) {
        const double av = a[r];
        if (av == 0)
            continue;  /* no logit of this row moves */
        for (fnn_index j = 0; j < k; j++)
            acc_out[j] += dloss_axis(head, r, j, plus[j] * av, m_exp, m_log, scratch)
                        - dloss_axis(head, r, j, minus[j] * av, m_exp, m_log, scratch);
    }
}

/* Row r of the ray sweep where the series for D does not apply: each moved row's loss
   recomputed.  scratch: 3 k doubles. */
FNN_INLINE void ray_row_direct(const fnn_numgrad_head *head, const fnn_numgrad_ray *ray,
                               fnn_index r, const double *restrict sp,
                               const double *restrict sm, double *restrict acc_out,
                               double *restrict scratch)
{
    const fnn_index k = head->k, d = ray->hidden.d;
    for (fnn_index j = 0; j < d; j++) {
        if (sp[j] == 0 && sm[j] == 0)
            continue;
        const double *w = ray->w + j * k;
        double *dz = scratch + 2 * k;
        for (fnn_index c = 0; c < k; c++)
            dz[c] = sp[j] * w[c];
        const double lp = dloss_direct(head, r, dz, scratch);
        for (fnn_index c = 0; c < k; c++)
            dz[c] = sm[j] * w[c];
        acc_out[j] += lp - dloss_direct(head, r, dz, scratch);
    }
}

FNN_MULTIVERSION void fnn_numgrad_ray_column(const fnn_numgrad_head *head, const fnn_numgrad_ray *ray,
                            const double *a, const double *plus, const double *minus,
                            double *acc_out, double *scratch)
{
    const fnn_index n = head->n, k = head->k, d = ray->hidden.d;
    const int me = ray->m_exp, ml = ray->m_log;
    /* s = activation changes, D = relative changes of the softmax sum, x/y temporaries;
       p/m: the perturbation upwards / downwards */
    double *restrict sp = scratch, *restrict sm = sp + d, *restrict dp = sm + d,
           *restrict dm = dp + d, *restrict xp = dm + d, *restrict xm = xp + d,
           *restrict yp = xm + d, *restrict ym = yp + d;
    double *restrict acc = acc_out;

    for (fnn_index r = 0; r < n; r++) {
        const double av = a[r];
        if (av == 0)
            continue;  /* the pre-activations of this row do not move */
        for (fnn_index j = 0; j < d; j++) {
            sp[j] = plus[j] * av;
            sm[j] = minus[j] * av;
        }
        act_delta_vec(&ray->hidden, r, sp, ray->m_act, xp);
        act_delta_vec(&ray->hidden, r, sm, ray->m_act, xp);
        if (me == 0) {
            ray_row_direct(head, ray, r, sp, sm, acc, ym + d);
            continue;
        }

        /* D(s) = s (mu_1 + s (mu_2 / 2! + ...)) for every unit at once */
        const double *restrict mu = ray->mu + r * me * d;
        for (fnn_index j = 0; j < d; j++)
            dp[j] = dm[j] = mu[(me - 1) * d + j];
        for (int m = me - 2; m >= 0; m--) {
            const double *restrict c = mu + m * d;
            for (fnn_index j = 0; j < d; j++) {
                dp[j] = dp[j] * sp[j] + c[j];
                dm[j] = dm[j] * sm[j] + c[j];
            }
        }
        for (fnn_index j = 0; j < d; j++) {
            dp[j] *= sp[j];
            dm[j] *= sm[j];
        }

        if (head->exact) {
            const double ts = head->t_sum[r];
            const double *restrict tau = ray->tau + r * d;
            lg1p_vec(dp, xp, d, ml);
            lg1p_vec(dm, xm, d, ml);
            for (fnn_index j = 0; j < d; j++)
                acc[j] += ts * (xp[j] - xm[j]) - (sp[j] - sm[j]) * tau[j];
            continue;
        }
        for (fnn_index i = head->t_ptr[r]; i < head->t_ptr[r + 1]; i++) {
            const fnn_index c = head->t_cls[i];
            const double tv = head->t_val[i], rho = head->rho[r * k + c];
            const double *restrict wt = ray->wt + c * d;
            for (fnn_index j = 0; j < d; j++) {
                xp[j] = sp[j] * wt[j];
                xm[j] = sm[j] * wt[j];
            }
            em1_vec(xp, yp, d, me);
            em1_vec(xm, ym, d, me);
            for (fnn_index j = 0; j < d; j++) {
                xp[j] = rho * (yp[j] - dp[j]) / (1 + dp[j]);
                xm[j] = rho * (ym[j] - dm[j]) / (1 + dm[j]);
            }
            lg1p_vec(xp, yp, d, ml);
            lg1p_vec(xm, ym, d, ml);
            for (fnn_index j = 0; j < d; j++)
                acc[j] -= tv * (yp[j] - ym[j]);
        }
    }
}
