/*
 * The compiled sweep of a network's numerical gradient (fastnn/_kernels/_numgrad.pyx).
 *
 * A central difference perturbs one parameter; the kernels here compute how the loss of each
 * sample changes, (loss at p + delta) - (loss at p), from the cached unperturbed forward pass,
 * without evaluating the network again.  All arithmetic is in double for float32 and float64
 * networks alike: the quantities are differences of size h * gradient, and the parameter's
 * dtype only enters through the perturbation delta that the Python layer computes as the book
 * stores it.  exp(u) - 1 and log(1 + u) of small arguments are evaluated by their power
 * series, with as many terms as keep the truncation below 2^-56 of the largest argument
 * (fnn_numgrad_exp_terms / fnn_numgrad_log_terms).  A term count 0 says the steps are too
 * large for the series: log1p then comes from libm, and a changed sigmoid or row loss is
 * recomputed at the moved point and the unperturbed value subtracted (no cancellation to
 * fear at such step sizes).
 */
#ifndef FNN_NUMGRAD_H
#define FNN_NUMGRAD_H

#include "fnn_kernels.h"

/* Longest power series used; longer would be slower than libm's expm1/log1p. */
#define FNN_NUMGRAD_MAX_TERMS 16

/* The softmax-cross-entropy head at the unperturbed forward pass. */
typedef struct {
    fnn_index n, k;            /* batch rows, classes */
    const double *z;           /* (n, k) logits */
    const double *t;           /* (n, k) targets (one-hot rows for labels) */
    const double *loss;        /* (n,) each row's loss */
    const double *p;           /* (n, k) softmax of the logits */
    const double *rho;         /* (n, k) p / (p + 1e-7), for the book's loss */
    const double *t_sum;       /* (n,) sum of each row's targets */
    /* the nonzero targets, row by row: row r's are entries t_ptr[r] to t_ptr[r + 1] - 1 */
    const fnn_index *t_ptr;    /* (n + 1,) */
    const fnn_index *t_cls;    /* class of each entry */
    const double *t_val;       /* target value of each entry (1 for labels) */
    int exact;                 /* 1: log-softmax loss; 0: the book's -log(y + 1e-7) */
} fnn_numgrad_head;

/* A hidden layer at the unperturbed forward pass. */
typedef struct {
    fnn_index d;               /* units */
    int activation;            /* enum fnn_activation */
    const double *z;           /* (n, d) pre-activations */
    const double *slope;       /* (n, d) sigmoid(z) * sigmoid(-z); sigmoid only */
    const double *cosig;       /* (n, d) sigmoid(-z); sigmoid only */
} fnn_numgrad_hidden;

/* The last hidden layer seen from the loss: a change s of unit j's activation moves row r's
   logits along W[j, :], and the softmax sum by the factor 1 + D(s) with
   D(s) = sum_c p[r, c] (exp(s W[j, c]) - 1) = sum_m s^m mu_m[r, j] / m!,  the raw moments
   mu_m[r, j] = sum_c p[r, c] W[j, c]^m, so that D costs m_exp multiply-adds instead of k exps. */
typedef struct {
    fnn_numgrad_hidden hidden;
    const double *w;           /* (d, k) weights of the output layer */
    const double *wt;          /* (k, d) their transpose */
    const double *mu;          /* (n, m_exp, d): [(r * m_exp + m - 1) * d + j] = mu_m[r, j] / m! */
    const double *tau;         /* (n, d) sum_c t[r, c] W[j, c] (exact loss) */
    int m_act;                 /* series terms of exp(-delta) - 1 in the sigmoid */
    int m_exp;                 /* series terms of D; 0: rows recomputed, mu unused */
    int m_log;                 /* series terms of log1p */
} fnn_numgrad_ray;

/* Series length for exp(u) - 1 over |u| <= u_max, or 0 when the series would be too long. */
int fnn_numgrad_exp_terms(double u_max);
/* Series length for log(1 + u) over |u| <= u_max, or 0 for libm's log1p. */
int fnn_numgrad_log_terms(double u_max);
/* Bound on |log1p arguments| of the loss when every logit moves by at most u_max. */
double fnn_numgrad_log_bound(double u_max);

/* act(z[r, j] + delta) - act(z[r, j]) of one hidden unit. */
double fnn_numgrad_act_delta(const fnn_numgrad_hidden *layer, fnn_index r, fnn_index j,
                             double delta, int m_act);

/* For q perturbed copies of rows rows[0..q) of a hidden layer, turn the pre-activation
   changes dz (q, d) into activation changes, in place.  scratch: d doubles. */
void fnn_numgrad_act_delta_rows(const fnn_numgrad_hidden *layer, const fnn_index *rows,
                                double *dz, fnn_index q, double *scratch);

/* dloss_out[i] = loss change of row rows[i] when its logits change by dz[i, :] (q, k).
   scratch: 2 k doubles. */
void fnn_numgrad_loss_rows(const fnn_numgrad_head *head, const fnn_index *rows,
                           const double *dz, double *dloss_out, fnn_index q, double *scratch);

/* Output layer, one input column: for j < k, acc_out[j] += sum over rows with a[r] != 0 of
   the loss change at logit z[r, j] + plus[j] a[r] minus the one at z[r, j] + minus[j] a[r].
   scratch: 3 k doubles. */
void fnn_numgrad_output_column(const fnn_numgrad_head *head, const double *a,
                               const double *plus, const double *minus, double *acc_out,
                               int m_exp, int m_log, double *scratch);

/* Last hidden layer, one input column: for j < d, acc_out[j] += sum over rows with
   a[r] != 0 of the loss change at pre-activation z[r, j] + plus[j] a[r] minus the one at
   z[r, j] + minus[j] a[r].  scratch: 8 d + 3 k doubles. */
void fnn_numgrad_ray_column(const fnn_numgrad_head *head, const fnn_numgrad_ray *ray,
                            const double *a, const double *plus, const double *minus,
                            double *acc_out, double *scratch);

#endif
