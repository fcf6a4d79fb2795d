# Design: the numerical gradient of a network, every parameter perturbed alone, without
# evaluating the network once per parameter.
#
# The book's brute force computes (loss(p + h) - loss(p - h)) / 2h with two full forward
# passes per parameter.  Perturbing W_l[i, j] by delta moves only column j of layer l's
# pre-activations, and only in rows r where a_{l-1}[r, i] != 0 (by delta * a_{l-1}[r, i]); the
# loss is a mean of per-row losses, so the difference is a sum, over those rows, of per-row
# loss changes, each computed from the forward pass cached once (rows with a zero input, e.g.
# MNIST's blank pixels, are skipped exactly; a bias is the weight of an input of ones).  Each
# change is evaluated at the perturbed point, not linearised: exp(u) - 1 and log(1 + u) of the
# small changes come from their power series cut where the remainder is below 2^-56 of the
# largest argument, i.e. to double rounding, and steps too large for that are recomputed
# directly (fnn_numgrad.h).  Three sweeps, by the layer of the parameter:
#   output layer   moves one logit: O(1) per row and parameter, a couple of short series.
#   last hidden    moves the row's logits along W_L[j, :] by the activation change s; the
#                  softmax sum changes by the factor 1 + sum_m s^m mu_m[r, j] / m!, with the
#                  moments mu_m[r, j] = sum_c p[r, c] W_L[j, c]^m tabled once by GEMMs, so a
#                  row costs ~20-40 flops per unit, independent of the number of classes, in
#                  passes over all units of the row that vectorise (a ReLU that stays off
#                  costs its lane and adds exactly 0).
#   deeper layers  rows whose unit changes (a ReLU that stays off is skipped) are collected
#                  in chunks; their activation *changes* go through the remaining layers as
#                  GEMMs (fastnn._kernels._blas.gemm): per perturbed row, one row's forward
#                  pass from layer l + 1 on, where the brute force runs the whole batch
#                  through every layer.
# Point kernels are C (src_c/fnn_numgrad.c); this module builds the cached forward pass and
# the tables (NumPy and the same BLAS wrapper), then runs the sweeps without the GIL.
# Everything is float64: the quantities are loss differences of size ~h * gradient, and
# float32 parameters enter only through the steps they are moved by, computed in
# perturbation_steps exactly as the book stores them.
#
# The sweeps check for signals between columns (every SIGNAL_EVERY of the output and last
# hidden layers' cheap columns, every unit of a deeper layer), so that Ctrl-C stops even a
# sweep of many seconds within a fraction of one.
#
# Twin: fastnn.reference.gradient.network_numerical_gradient (the book's brute force).
from cpython.exc cimport PyErr_CheckSignals
from cython cimport floating
from libc.stdlib cimport free, malloc

import numpy as np

from fastnn._kernels._blas cimport gemm
from fastnn._kernels._cfnn cimport *


cdef enum:
    SIGNAL_EVERY = 16  # columns between two checks for Ctrl-C in the cheap sweeps


cdef int _check_signals() except -1 nogil:
    """-1 with the exception set (KeyboardInterrupt) when a signal handler raised."""
    with gil:
        return PyErr_CheckSignals()


cdef extern from "fnn_numgrad.h" nogil:
    ctypedef struct fnn_numgrad_head:
        fnn_index n
        fnn_index k
        const double *z
        const double *t
        const double *loss
        const double *p
        const double *rho
        const double *t_sum
        const fnn_index *t_ptr
        const fnn_index *t_cls
        const double *t_val
        int exact

    ctypedef struct fnn_numgrad_hidden:
        fnn_index d
        int activation
        const double *z
        const double *slope
        const double *cosig

    ctypedef struct fnn_numgrad_ray:
        fnn_numgrad_hidden hidden
        const double *w
        const double *wt
        const double *mu
        const double *tau
        int m_act
        int m_exp
        int m_log

    int fnn_numgrad_exp_terms(double u_max)
    int fnn_numgrad_log_terms(double u_max)
    double fnn_numgrad_log_bound(double u_max)
    double fnn_numgrad_act_delta(const fnn_numgrad_hidden *layer, fnn_index r, fnn_index j,
                                 double delta, int m_act)
    void fnn_numgrad_act_delta_rows(const fnn_numgrad_hidden *layer, const fnn_index *rows,
                                    double *dz, fnn_index q, double *scratch)
    void fnn_numgrad_loss_rows(const fnn_numgrad_head *head, const fnn_index *rows,
                               const double *dz, double *dloss_out, fnn_index q,
                               double *scratch)
    void fnn_numgrad_output_column(const fnn_numgrad_head *head, const double *a,
                                   const double *plus, const double *minus, double *acc_out,
                                   int m_exp, int m_log, double *scratch)
    void fnn_numgrad_ray_column(const fnn_numgrad_head *head, const fnn_numgrad_ray *ray,
                                const double *a, const double *plus, const double *minus,
                                double *acc_out, double *scratch)


# Perturbed rows propagated per GEMM in the deep sweep: two buffers of CHUNK_DOUBLES doubles
# (1 MiB) each bound the memory, with at least CHUNK_MIN rows to keep BLAS efficient.
cdef enum:
    CHUNK_DOUBLES = 1 << 17
    CHUNK_MIN = 64
    CHUNK_MAX = 4096

from fastnn._kernels._network import ACTIVATION_CODES


def perturbation_steps(const floating[::1] p,  # IN  (size,) a parameter, flattened
                       double h,
                       double[::1] plus_out,   # OUT (size,)
                       double[::1] minus_out): # OUT (size,)
    """The steps by which the book's ``numerical_gradient`` moves each entry of ``p``.

    It stores ``float(p) + h`` (a double sum rounded to p's dtype) and then ``p - h``
    (NumPy scalar arithmetic in p's dtype, h rounded to it first), so
    ``plus = stored(p + h) - p`` and ``minus = stored(p - h) - p``, exactly, in float64.
    For float64 they are h to ~1e-12; for float32 they differ from h by up to half an ulp
    of p, which the finite difference then sees as the book's does.
    """
    cdef Py_ssize_t i
    cdef floating hh = <floating> h
    with nogil:
        for i in range(p.shape[0]):
            plus_out[i] = <double> (<floating> (<double> p[i] + h)) - p[i]
            minus_out[i] = <double> (p[i] - hh) - p[i]


cdef inline double *_ptr(double[::1] a) noexcept:
    return &a[0]


cdef inline const double *_cptr(const double[::1] a) noexcept:
    """The data of an input, which may be a read-only array."""
    return &a[0]


def _matmul(a, b, bint trans_b=False):
    """a @ b, or a @ b.T, of non-empty C-contiguous float64 matrices, through fastnn's BLAS
    door (_blas), as the sweep's other GEMMs."""
    cdef const double[:, ::1] av = a, bv = b
    cdef int m = av.shape[0], kk = av.shape[1], n = bv.shape[0] if trans_b else bv.shape[1]
    out = np.empty((m, n))
    cdef double[:, ::1] ov = out
    with nogil:
        gemm(False, trans_b, m, n, kk, 1.0, &av[0, 0], kk, &bv[0, 0], <int> bv.shape[1],
             0.0, &ov[0, 0], n)
    return out


cdef inline fnn_index *_iptr(fnn_index[::1] a) noexcept:
    return &a[0]


def _sigmoid(z):
    out = np.empty_like(z)
    cdef double[::1] zf = z.reshape(-1), of = out.reshape(-1)
    fnn_sigmoid_forward_f64(&zf[0], &of[0], zf.shape[0])
    return out


def _hidden_tables(z, activation):
    """(z, slope, cosig) of a hidden layer and its activations a."""
    if activation == FNN_RELU:
        return (z, z, z), np.maximum(z, 0)
    if activation == FNN_SIGMOID:
        a, cosig = _sigmoid(z), _sigmoid(-z)
        return (z, a * cosig, cosig), a
    return (z, z, z), z


cdef void _set_hidden(fnn_numgrad_hidden *layer, tables, int activation):
    z, slope, cosig = tables
    layer.d = z.shape[1]
    layer.activation = activation
    layer.z = _ptr(z.reshape(-1))
    layer.slope = _ptr(slope.reshape(-1))
    layer.cosig = _ptr(cosig.reshape(-1))


cdef double _step_bound(a_prev, wp, wm, bp, bm):
    """Largest |pre-activation change| of any single perturbation of a layer."""
    w_step = max(float(np.max(np.abs(wp))), float(np.max(np.abs(wm))))
    b_step = max(float(np.max(np.abs(bp))), float(np.max(np.abs(bm))))
    return max(w_step * float(np.max(np.abs(a_prev))), b_step)


def network_sweep(list weights,   # IN  L float64 arrays (d_l, d_{l+1}), C-contiguous
                  list biases,    # IN  L float64 arrays (d_{l+1},)
                  list w_plus,    # IN  perturbation steps of the weights (perturbation_steps)
                  list w_minus,   # IN
                  list b_plus,    # IN  ... and of the biases
                  list b_minus,   # IN
                  x,              # IN  (n, d_0) float64
                  t,              # IN  (n, k) float64 targets, one-hot rows for labels
                  int activation, bint exact, double h, double weight_decay_lambda,
                  list dW_out,    # OUT L float64 arrays, shapes of the weights
                  list db_out):   # OUT L float64 arrays, shapes of the biases
    """Central differences of the network's loss for every weight and bias.

    Writes ``(L(p + plus) - L(p + minus)) / 2h`` for every parameter p, where
    L = mean_r loss_r + 0.5 * weight_decay_lambda * sum_l sum W_l**2 and loss_r is the
    cross-entropy of softmax(logits_r) (the book's -log(y + 1e-7), or log-softmax if
    ``exact``).  Arguments are validated by fastnn.gradient.network_numerical_gradient.
    """
    cdef Py_ssize_t L = len(weights), n = x.shape[0], k = t.shape[1]
    cdef Py_ssize_t l, i, j, d, dprev, maxd, chunk
    cdef double inv = 1.0 / (n * 2.0 * h)

    # ---- the forward pass, cached: inputs of every layer and their transposes ----
    tables = []                      # per hidden layer: (z, slope, cosig)
    a = [x]                          # a[l] = input of layer l
    for l in range(L - 1):
        z = _matmul(a[l], weights[l])
        z += biases[l]
        tab, act = _hidden_tables(z, activation)
        tables.append(tab)
        a.append(act)
    logits = _matmul(a[L - 1], weights[L - 1])
    logits += biases[L - 1]
    prob = np.empty_like(logits)
    row_loss = np.empty(n)
    cdef double[:, ::1] logits_v = logits, prob_v = prob
    cdef const double[:, ::1] t_v = t
    cdef double[::1] row_loss_v = row_loss
    fnn_softmax_xent_targets_f64(&logits_v[0, 0], &t_v[0, 0], &prob_v[0, 0], &row_loss_v[0],
                                 n, k, exact)
    a_t = [np.ascontiguousarray(al.T) for al in a]
    ones = np.ones(n)
    cdef const double *one = _ptr(ones)

    # ---- the loss head: softmax, targets as sparse rows ----
    rho = prob / (prob + FNN_BOOK_EPS)   # the book's 1e-7
    t_rows, t_cls = np.nonzero(t)
    t_ptr = np.zeros(n + 1, dtype=np.intp)
    np.cumsum(np.bincount(t_rows, minlength=n), out=t_ptr[1:])
    t_cls = np.ascontiguousarray(t_cls, dtype=np.intp)
    t_val = np.ascontiguousarray(t[t_rows, t_cls]) if t_cls.size else np.zeros(1)
    if not t_cls.size:
        t_cls = np.zeros(1, dtype=np.intp)   # a valid pointer; no row has entries
    t_sum = t.sum(axis=1)
    cdef fnn_numgrad_head head
    head.n, head.k, head.exact = n, k, exact
    head.z, head.t, head.loss = &logits_v[0, 0], &t_v[0, 0], &row_loss_v[0]
    head.p, head.rho, head.t_sum = _ptr(prob.reshape(-1)), _ptr(rho.reshape(-1)), _ptr(t_sum)
    head.t_ptr, head.t_cls, head.t_val = _iptr(t_ptr), _iptr(t_cls), _ptr(t_val)

    acc_w = [np.zeros(W.shape) for W in weights]
    acc_b = [np.zeros(b.shape) for b in biases]
    cdef const double *col
    cdef double *plus
    cdef double *minus
    cdef double *acc
    cdef double *bias_plus
    cdef double *bias_minus
    cdef double *bias_acc
    cdef double *work
    cdef double u_max
    cdef int m_exp, m_log

    # ---- output layer ----
    l = L - 1
    u_max = _step_bound(a[l], w_plus[l], w_minus[l], b_plus[l], b_minus[l])
    m_exp = fnn_numgrad_exp_terms(u_max)
    m_log = fnn_numgrad_log_terms(fnn_numgrad_log_bound(u_max))
    dprev = weights[l].shape[0]
    col, plus, minus, acc = (_cptr(a_t[l].reshape(-1)), _ptr(w_plus[l].reshape(-1)),
                             _ptr(w_minus[l].reshape(-1)), _ptr(acc_w[l].reshape(-1)))
    bias_plus, bias_minus, bias_acc = _ptr(b_plus[l]), _ptr(b_minus[l]), _ptr(acc_b[l])
    scratch = np.empty(3 * k)
    work = _ptr(scratch)
    with nogil:
        for i in range(dprev):
            if i % SIGNAL_EVERY == 0:
                _check_signals()
            fnn_numgrad_output_column(&head, col + i * n, plus + i * k, minus + i * k,
                                      acc + i * k, m_exp, m_log, work)
        # the bias is the weight of an input column of ones
        fnn_numgrad_output_column(&head, one, bias_plus, bias_minus, bias_acc, m_exp, m_log,
                                  work)

    # ---- last hidden layer ----
    cdef fnn_numgrad_ray ray
    cdef double u_act
    if L >= 2:
        l = L - 2
        d, dprev = weights[l].shape[1], weights[l].shape[0]
        w_last = weights[L - 1]
        w_last_t = np.array(w_last.T, order="C")  # a copy: writable even for a read-only W
        u_act = _step_bound(a[l], w_plus[l], w_minus[l], b_plus[l], b_minus[l])
        # |activation change| <= |pre-activation change| (a quarter of it for the sigmoid)
        u_max = u_act * (0.25 if activation == FNN_SIGMOID else 1.0) * float(np.max(np.abs(w_last)))
        _set_hidden(&ray.hidden, tables[l], activation)
        ray.m_act = fnn_numgrad_exp_terms(u_act)
        ray.m_exp = fnn_numgrad_exp_terms(u_max)
        ray.m_log = fnn_numgrad_log_terms(fnn_numgrad_log_bound(u_max))
        mu = np.empty((n, max(ray.m_exp, 1), d))
        w_pow = np.ones_like(w_last)
        inv_fact = 1.0
        for i in range(1, ray.m_exp + 1):
            w_pow *= w_last
            inv_fact /= i
            mu[:, i - 1, :] = _matmul(prob, w_pow, True) * inv_fact
        tau = _matmul(t, w_last, True)
        ray.w, ray.wt = _cptr(w_last.reshape(-1)), _ptr(w_last_t.reshape(-1))
        ray.mu, ray.tau = _ptr(mu.reshape(-1)), _ptr(tau.reshape(-1))
        scratch = np.empty(8 * d + 3 * k)
        work = _ptr(scratch)
        col, plus, minus, acc = (_cptr(a_t[l].reshape(-1)), _ptr(w_plus[l].reshape(-1)),
                                 _ptr(w_minus[l].reshape(-1)), _ptr(acc_w[l].reshape(-1)))
        bias_plus, bias_minus, bias_acc = _ptr(b_plus[l]), _ptr(b_minus[l]), _ptr(acc_b[l])
        with nogil:
            for i in range(dprev):
                if i % SIGNAL_EVERY == 0:
                    _check_signals()
                fnn_numgrad_ray_column(&head, &ray, col + i * n, plus + i * d, minus + i * d,
                                       acc + i * d, work)
            fnn_numgrad_ray_column(&head, &ray, one, bias_plus, bias_minus, bias_acc, work)

    # ---- deeper layers ----
    cdef fnn_numgrad_hidden *hid = NULL
    cdef const double **wp = NULL
    cdef Py_ssize_t *dims = NULL
    cdef fnn_index *rows_p
    cdef fnn_index *cols_p
    cdef double *sgn_p
    cdef double *svals_p
    cdef double *dloss_p
    cdef double *buf0_p
    cdef double *buf1_p
    if L >= 3:
        maxd = max(W.shape[1] for W in weights)
        chunk = min(max(CHUNK_DOUBLES // maxd, CHUNK_MIN), CHUNK_MAX)
        rows = np.empty(chunk, dtype=np.intp)
        cols = np.empty(chunk, dtype=np.intp)
        sgn = np.empty(chunk)
        svals = np.empty(chunk)
        dloss = np.empty(chunk)
        buf0 = np.empty(chunk * maxd)
        buf1 = np.empty(chunk * maxd)
        scratch = np.empty(2 * maxd)
        hid = <fnn_numgrad_hidden *> malloc((L - 1) * sizeof(fnn_numgrad_hidden))
        wp = <const double **> malloc(L * sizeof(double *))
        dims = <Py_ssize_t *> malloc((L + 1) * sizeof(Py_ssize_t))
        if hid == NULL or wp == NULL or dims == NULL:
            free(hid)
            free(wp)
            free(dims)
            raise MemoryError()
        try:
            for l in range(L):
                wp[l] = _cptr(weights[l].reshape(-1))
                dims[l] = weights[l].shape[0]
                if l < L - 1:
                    _set_hidden(&hid[l], tables[l], activation)
            dims[L] = k
            rows_p, cols_p = _iptr(rows), _iptr(cols)
            sgn_p, svals_p, dloss_p = _ptr(sgn), _ptr(svals), _ptr(dloss)
            buf0_p, buf1_p, work = _ptr(buf0), _ptr(buf1), _ptr(scratch)
            for l in range(L - 2):
                m_exp = fnn_numgrad_exp_terms(
                    _step_bound(a[l], w_plus[l], w_minus[l], b_plus[l], b_minus[l]))
                col, plus, minus, acc = (_cptr(a_t[l].reshape(-1)), _ptr(w_plus[l].reshape(-1)),
                                         _ptr(w_minus[l].reshape(-1)),
                                         _ptr(acc_w[l].reshape(-1)))
                bias_plus, bias_minus, bias_acc = (_ptr(b_plus[l]), _ptr(b_minus[l]),
                                                   _ptr(acc_b[l]))
                with nogil:
                    _deep_layer(&head, hid, wp, dims, L, l, col, plus, minus, bias_plus,
                                bias_minus, acc, bias_acc, rows_p, cols_p, sgn_p, svals_p,
                                dloss_p, buf0_p, buf1_p, work, chunk, m_exp)
        finally:
            free(hid)
            free(wp)
            free(dims)

    # ---- finite differences, plus the weight decay's own (exact) difference ----
    for l in range(L):
        W = weights[l]
        dW = acc_w[l] * inv
        if weight_decay_lambda != 0:
            # 0.5 lam ((p + plus)^2 - (p + minus)^2) / 2h, factored to avoid cancellation
            dW += (0.5 * weight_decay_lambda / (2.0 * h)) * (
                (w_plus[l] - w_minus[l]) * (2.0 * W + w_plus[l] + w_minus[l]))
        dW_out[l][...] = dW
        db_out[l][...] = acc_b[l] * inv


cdef int _deep_layer(const fnn_numgrad_head *head, const fnn_numgrad_hidden *hid,
                      const double **w, const Py_ssize_t *dims, Py_ssize_t L, Py_ssize_t l,
                      const double *a_prev_t,  # IN  (dims[l], n) inputs of layer l, transposed
                      const double *w_plus, const double *w_minus,  # IN  (dims[l], dims[l+1])
                      const double *b_plus, const double *b_minus,  # IN  (dims[l+1],)
                      double *acc_w,           # OUT (dims[l], dims[l+1]) sums of loss changes
                      double *acc_b,           # OUT (dims[l+1],)
                      fnn_index *rows, fnn_index *cols, double *sgn, double *svals,
                      double *dloss, double *buf0, double *buf1, double *scratch,
                      Py_ssize_t chunk, int m_act) except -1 nogil:
    """Layer l < L - 2: collect perturbed rows whose unit j changes, propagate in chunks."""
    cdef Py_ssize_t n = head.n, dprev = dims[l], dl = dims[l + 1]
    cdef Py_ssize_t i, j, r, q
    cdef int sign
    cdef double av, step, s
    for j in range(dl):
        _check_signals()
        q = 0
        for i in range(dprev + 1):
            for r in range(n):
                av = a_prev_t[i * n + r] if i < dprev else 1.0
                if av == 0:
                    continue  # unit j of this row does not move
                for sign in range(2):
                    if i < dprev:
                        step = (w_plus if sign == 0 else w_minus)[i * dl + j]
                    else:
                        step = (b_plus if sign == 0 else b_minus)[j]
                    s = fnn_numgrad_act_delta(&hid[l], r, j, step * av, m_act)
                    if s == 0:
                        continue  # e.g. a ReLU unit that stays off
                    rows[q], cols[q], sgn[q], svals[q] = r, i, 1.0 - 2.0 * sign, s
                    q += 1
                    if q == chunk:
                        _propagate(head, hid, w, dims, L, l, j, q, rows, cols, sgn, svals,
                                   dloss, buf0, buf1, scratch, acc_w, acc_b)
                        q = 0
        if q:
            _propagate(head, hid, w, dims, L, l, j, q, rows, cols, sgn, svals, dloss, buf0,
                       buf1, scratch, acc_w, acc_b)
    return 0


cdef void _propagate(const fnn_numgrad_head *head, const fnn_numgrad_hidden *hid,
                     const double **w, const Py_ssize_t *dims, Py_ssize_t L, Py_ssize_t l,
                     Py_ssize_t j, Py_ssize_t q, const fnn_index *rows, const fnn_index *cols,
                     const double *sgn, const double *svals, double *dloss, double *buf0,
                     double *buf1, double *scratch, double *acc_w,
                     double *acc_b) noexcept nogil:
    """q rows whose unit j of layer l changes by svals: their loss changes into acc."""
    cdef Py_ssize_t m = l + 1, dn = dims[l + 2], dl = dims[l + 1], dprev = dims[l], c, i
    cdef const double *wrow = w[l + 1] + j * dn
    cdef double *cur = buf0
    cdef double *nxt = buf1
    # the next layer's pre-activation changes are rank one: s * W_{l+1}[j, :]
    for i in range(q):
        for c in range(dn):
            cur[i * dn + c] = svals[i] * wrow[c]
    while m < L - 1:
        fnn_numgrad_act_delta_rows(&hid[m], rows, cur, q, scratch)
        # changes of activations times the weights are the changes of the next layer
        gemm(False, False, <int> q, <int> dims[m + 2], <int> dims[m + 1], 1.0, cur,
             <int> dims[m + 1], w[m + 1], <int> dims[m + 2], 0.0, nxt, <int> dims[m + 2])
        cur, nxt = nxt, cur
        m += 1
    fnn_numgrad_loss_rows(head, rows, cur, dloss, q, scratch)
    for i in range(q):
        if cols[i] < dprev:
            acc_w[cols[i] * dl + j] += sgn[i] * dloss[i]
        else:
            acc_b[j] += sgn[i] * dloss[i]
