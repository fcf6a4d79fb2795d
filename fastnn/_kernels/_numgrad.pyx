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
# Point kernels are C (src_c/fnn_numgrad.c); fastnn/_numgrad_sweep.py builds the cached forward
# pass and the tables (NumPy); this module holds only the sweeps, which take those arrays
# (checked against the sizes they will walk, fastnn/_kernels/_arrays.pxd) and run without the
# GIL.  Everything is float64: the quantities are loss differences of size ~h * gradient, and
# float32 parameters enter only through the steps they are moved by, computed in
# perturbation_steps exactly as the book stores them.
#
# The sweeps check for signals between columns (every SIGNAL_EVERY of the output and last
# hidden layers' cheap columns, every unit of a deeper layer), so that Ctrl-C stops even a
# sweep of many seconds within a fraction of one.
#
# Twin: fastnn.reference.gradient.network_numerical_gradient (the book's brute force).
cimport numpy as cnp
from cpython.exc cimport PyErr_CheckSignals
from libc.stdlib cimport free, malloc

from fastnn._kernels._arrays cimport data_2d, dim, flat_data, float_type
from fastnn._kernels._blas cimport gemm
from fastnn._kernels._cfnn cimport *

import numpy as np

from fastnn._kernels._network import ACTIVATION_CODES

cnp.import_array()

BOOK_EPS = FNN_BOOK_EPS

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



def exp_terms(double u_max):
    """Series terms of exp(u) - 1 for |u| <= u_max (0: too large, recomputed directly)."""
    return fnn_numgrad_exp_terms(u_max)


def perturbation_steps(p,          # IN  a float32 or float64 parameter, any shape
                       double h,
                       plus_out,   # OUT p's size, float64
                       minus_out): # OUT p's size, float64
    """The steps by which the book's ``numerical_gradient`` moves each entry of ``p``.

    It stores ``float(p) + h`` (a double sum rounded to p's dtype) and then ``p - h``
    (NumPy scalar arithmetic in p's dtype, h rounded to it first), so
    ``plus = stored(p + h) - p`` and ``minus = stored(p - h) - p``, exactly, in float64.
    For float64 they are h to ~1e-12; for float32 they differ from h by up to half an ulp
    of p, which the finite difference then sees as the book's does.
    """
    cdef int typenum = float_type(p, "p")
    cdef cnp.npy_intp size = cnp.PyArray_SIZE(<cnp.ndarray> p), i
    cdef const void *pp = flat_data(p, "p", typenum, size)
    cdef double *plus = <double *> flat_data(plus_out, "plus_out", cnp.NPY_FLOAT64, size, True)
    cdef double *minus = <double *> flat_data(minus_out, "minus_out", cnp.NPY_FLOAT64, size,
                                              True)
    cdef const float *pf = <const float *> pp
    cdef const double *pd = <const double *> pp
    cdef float hf = <float> h
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            for i in range(size):
                plus[i] = <double> (<float> (<double> pf[i] + h)) - pf[i]
                minus[i] = <double> (pf[i] - hf) - pf[i]
        else:
            for i in range(size):
                plus[i] = (pd[i] + h) - pd[i]
                minus[i] = (pd[i] - h) - pd[i]


cdef inline const double *_f64(object a, str name, cnp.npy_intp rows, cnp.npy_intp cols,
                               bint out=False) except NULL:
    return <const double *> data_2d(a, name, cnp.NPY_FLOAT64, rows, cols, out)


cdef inline double *_f64_out(object a, str name, cnp.npy_intp size) except NULL:
    return <double *> flat_data(a, name, cnp.NPY_FLOAT64, size, True)


cdef class Head:
    """The loss head of the cached forward pass (fnn_numgrad_head), its arrays checked and
    kept alive: logits z (n, k), targets t (n, k), row losses (n,), softmax p and
    rho = p / (p + 1e-7) (n, k), t_sum (n,), and the nonzero targets as sparse rows
    (t_ptr (n + 1,), t_cls and t_val of one entry each)."""
    cdef fnn_numgrad_head c
    cdef readonly object prob
    cdef tuple _keep

    def __cinit__(self, z, t, row_loss, prob, rho, t_sum, t_ptr, t_cls, t_val, bint exact):
        cdef cnp.npy_intp n = dim(z, "z", 2, 0), k = dim(z, "z", 2, 1)
        cdef cnp.npy_intp entries = dim(t_cls, "t_cls", 1, 0)
        self.c.n, self.c.k, self.c.exact = n, k, exact
        self.c.z, self.c.t = _f64(z, "z", n, k), _f64(t, "t", n, k)
        self.c.loss = <const double *> flat_data(row_loss, "row_loss", cnp.NPY_FLOAT64, n)
        self.c.p, self.c.rho = _f64(prob, "prob", n, k), _f64(rho, "rho", n, k)
        self.c.t_sum = <const double *> flat_data(t_sum, "t_sum", cnp.NPY_FLOAT64, n)
        self.c.t_ptr = <const fnn_index *> flat_data(t_ptr, "t_ptr", cnp.NPY_INTP, n + 1)
        self.c.t_cls = <const fnn_index *> flat_data(t_cls, "t_cls", cnp.NPY_INTP, entries)
        self.c.t_val = <const double *> flat_data(t_val, "t_val", cnp.NPY_FLOAT64, entries)
        if t_ptr[n] > entries:
            raise ValueError(f"t_ptr: {t_ptr[n]} target entries, t_cls holds {entries}")
        self.prob = prob
        self._keep = (z, t, row_loss, rho, t_sum, t_ptr, t_cls, t_val)


cdef class Hidden:
    """A hidden layer's point tables (fnn_numgrad_hidden): pre-activations z, slope and
    cosig, each (n, d), and its activation code."""
    cdef fnn_numgrad_hidden c
    cdef cnp.npy_intp n
    cdef tuple _keep

    def __cinit__(self, z, slope, cosig, int activation):
        self.n, self.c.d = dim(z, "z", 2, 0), dim(z, "z", 2, 1)
        self.c.activation = activation
        self.c.z = _f64(z, "z", self.n, self.c.d)
        self.c.slope = _f64(slope, "slope", self.n, self.c.d)
        self.c.cosig = _f64(cosig, "cosig", self.n, self.c.d)
        self._keep = (z, slope, cosig)


cdef class _Layer:
    """One layer's sweep arguments: inputs transposed (dprev, n), steps (dprev, d) and (d,),
    and the accumulators they sum into."""
    cdef const double *a_t
    cdef const double *w_plus
    cdef const double *w_minus
    cdef const double *b_plus
    cdef const double *b_minus
    cdef double *acc_w
    cdef double *acc_b
    cdef cnp.npy_intp dprev, d

    def __cinit__(self, cnp.npy_intp n, a_t, w_plus, w_minus, b_plus, b_minus, acc_w, acc_b):
        self.dprev, self.d = dim(w_plus, "w_plus", 2, 0), dim(w_plus, "w_plus", 2, 1)
        self.a_t = _f64(a_t, "a_t", self.dprev, n)
        self.w_plus = _f64(w_plus, "w_plus", self.dprev, self.d)
        self.w_minus = _f64(w_minus, "w_minus", self.dprev, self.d)
        self.b_plus = <const double *> flat_data(b_plus, "b_plus", cnp.NPY_FLOAT64, self.d)
        self.b_minus = <const double *> flat_data(b_minus, "b_minus", cnp.NPY_FLOAT64, self.d)
        self.acc_w = <double *> _f64(acc_w, "acc_w", self.dprev, self.d, True)
        self.acc_b = _f64_out(acc_b, "acc_b", self.d)


def output_sweep(Head head not None, a_t, w_plus, w_minus, b_plus, b_minus,
                 acc_w_out, acc_b_out,   # OUT (dprev, k), (k,): sums of loss changes
                 double u_max, scratch):
    """The output layer's weights and biases: each moves one logit of every row."""
    cdef _Layer lay = _Layer(head.c.n, a_t, w_plus, w_minus, b_plus, b_minus, acc_w_out,
                             acc_b_out)
    cdef cnp.npy_intp k = head.c.k, n = head.c.n, i
    if lay.d != k:
        raise ValueError(f"w_plus: expected {k} columns, one per class, got {lay.d}")
    cdef double *work = _f64_out(scratch, "scratch", 3 * k)
    cdef int m_exp = fnn_numgrad_exp_terms(u_max)
    cdef int m_log = fnn_numgrad_log_terms(fnn_numgrad_log_bound(u_max))
    ones = np.ones(n)
    cdef const double *one = <const double *> flat_data(ones, "ones", cnp.NPY_FLOAT64, n)
    with nogil:
        for i in range(lay.dprev):
            if i % SIGNAL_EVERY == 0:
                _check_signals()
            fnn_numgrad_output_column(&head.c, lay.a_t + i * n, lay.w_plus + i * k,
                                      lay.w_minus + i * k, lay.acc_w + i * k, m_exp, m_log, work)
        # the bias is the weight of an input column of ones
        fnn_numgrad_output_column(&head.c, one, lay.b_plus, lay.b_minus, lay.acc_b, m_exp,
                                  m_log, work)


def ray_sweep(Head head not None, Hidden hidden not None,
              w_last,           # IN  (d, k) the output layer's weights
              w_last_t,         # IN  (k, d) their transpose
              mu,               # IN  (n, max(m_exp, 1), d) the moments' table / m!
              tau,              # IN  (n, d) t @ w_last.T
              double u_act, double u_max,
              a_t, w_plus, w_minus, b_plus, b_minus,
              acc_w_out, acc_b_out,  # OUT (dprev, d), (d,)
              scratch):
    """The last hidden layer's weights and biases: each moves the row's logits along a row of
    the output layer's weights (the moments' series of the design block)."""
    cdef cnp.npy_intp n = head.c.n, k = head.c.k, d = hidden.c.d, i
    cdef _Layer lay = _Layer(n, a_t, w_plus, w_minus, b_plus, b_minus, acc_w_out, acc_b_out)
    if lay.d != d or hidden.n != n:
        raise ValueError(f"hidden tables of {hidden.n} x {d} for steps of {lay.d} units and "
                         f"{n} rows")
    cdef fnn_numgrad_ray ray
    ray.hidden = hidden.c
    ray.m_act = fnn_numgrad_exp_terms(u_act)
    ray.m_exp = fnn_numgrad_exp_terms(u_max)
    ray.m_log = fnn_numgrad_log_terms(fnn_numgrad_log_bound(u_max))
    ray.w, ray.wt = _f64(w_last, "w_last", d, k), _f64(w_last_t, "w_last_t", k, d)
    ray.mu = <const double *> flat_data(mu, "mu", cnp.NPY_FLOAT64, n * max(ray.m_exp, 1) * d)
    ray.tau = _f64(tau, "tau", n, d)
    cdef double *work = _f64_out(scratch, "scratch", 8 * d + 3 * k)
    ones = np.ones(n)
    cdef const double *one = <const double *> flat_data(ones, "ones", cnp.NPY_FLOAT64, n)
    with nogil:
        for i in range(lay.dprev):
            if i % SIGNAL_EVERY == 0:
                _check_signals()
            fnn_numgrad_ray_column(&head.c, &ray, lay.a_t + i * n, lay.w_plus + i * d,
                                   lay.w_minus + i * d, lay.acc_w + i * d, work)
        fnn_numgrad_ray_column(&head.c, &ray, one, lay.b_plus, lay.b_minus, lay.acc_b, work)


def deep_sweep(Head head not None, list hiddens, list weights, Py_ssize_t l,
               a_t, w_plus, w_minus, b_plus, b_minus,
               acc_w_out, acc_b_out,     # OUT (dims[l], dims[l+1]), (dims[l+1],)
               double u_act,
               rows, cols, sgn, svals, dloss,  # workspace: (chunk,) each
               buf0, buf1,                     # workspace: (chunk, widest layer)
               scratch):                       # workspace: (2 * widest layer,)
    """A layer l < L - 2: rows whose unit changes, propagated in chunks through the layers
    above as GEMMs."""
    cdef Py_ssize_t L = len(weights), m
    cdef cnp.npy_intp n = head.c.n, widest = 0
    if len(hiddens) != L - 1 or not 0 <= l < L - 2:
        raise ValueError(f"hiddens: expected {L - 1} tables and a layer below {L - 2}, got "
                         f"{len(hiddens)} and {l}")
    cdef _Layer lay = _Layer(n, a_t, w_plus, w_minus, b_plus, b_minus, acc_w_out, acc_b_out)
    cdef fnn_numgrad_hidden *hid = <fnn_numgrad_hidden *> malloc(
        (L - 1) * sizeof(fnn_numgrad_hidden))
    cdef const double **wp = <const double **> malloc(L * sizeof(double *))
    cdef Py_ssize_t *dims = <Py_ssize_t *> malloc((L + 1) * sizeof(Py_ssize_t))
    cdef Py_ssize_t chunk = dim(rows, "rows", 1, 0)
    cdef fnn_index *rows_p
    cdef fnn_index *cols_p
    cdef double *sgn_p
    cdef double *svals_p
    cdef double *dloss_p
    cdef double *buf0_p
    cdef double *buf1_p
    cdef double *work
    try:
        if hid == NULL or wp == NULL or dims == NULL:
            raise MemoryError()
        dims[0] = dim(weights[0], "weights[0]", 2, 0)
        for m in range(L):
            dims[m + 1] = dim(weights[m], f"weights[{m}]", 2, 1)
            wp[m] = _f64(weights[m], f"weights[{m}]", dims[m], dims[m + 1])
            widest = max(widest, dims[m + 1])
        for m in range(L - 1):
            if (<Hidden?> hiddens[m]).c.d != dims[m + 1] or (<Hidden> hiddens[m]).n != n:
                raise ValueError(f"hiddens[{m}]: tables of the wrong size")
            hid[m] = (<Hidden> hiddens[m]).c
        if dims[L] != head.c.k or lay.dprev != dims[l] or lay.d != dims[l + 1]:
            raise ValueError("deep_sweep: the weights, steps and head do not fit together")
        rows_p = <fnn_index *> flat_data(rows, "rows", cnp.NPY_INTP, chunk, True)
        cols_p = <fnn_index *> flat_data(cols, "cols", cnp.NPY_INTP, chunk, True)
        sgn_p, svals_p = _f64_out(sgn, "sgn", chunk), _f64_out(svals, "svals", chunk)
        dloss_p = _f64_out(dloss, "dloss", chunk)
        buf0_p = _f64_out(buf0, "buf0", chunk * widest)
        buf1_p = _f64_out(buf1, "buf1", chunk * widest)
        work = _f64_out(scratch, "scratch", 2 * widest)
        with nogil:
            _deep_layer(&head.c, hid, wp, dims, L, l, lay.a_t, lay.w_plus, lay.w_minus,
                        lay.b_plus, lay.b_minus, lay.acc_w, lay.acc_b, rows_p, cols_p, sgn_p,
                        svals_p, dloss_p, buf0_p, buf1_p, work, chunk,
                        fnn_numgrad_exp_terms(u_act))
    finally:
        free(hid)
        free(wp)
        free(dims)


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
