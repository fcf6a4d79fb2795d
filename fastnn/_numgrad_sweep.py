"""The network-wide numerical gradient, orchestrated: the forward pass cached once, the tables
the sweeps read, then the three compiled sweeps of fastnn._kernels._numgrad (whose design block
explains the method).  Everything is float64 and validated by
fastnn.gradient.network_numerical_gradient before it gets here; this module only prepares
arrays (NumPy, with NumPy's own BLAS for the table GEMMs) and hands them to the sweeps, which
run without the GIL.

Twin: fastnn.reference.gradient.network_numerical_gradient (the book's brute force).
"""
import numpy as np

from fastnn import functions
from fastnn._kernels import _loss, _numgrad

ACTIVATION_CODES = _numgrad.ACTIVATION_CODES

# Perturbed rows propagated per GEMM in the deep sweep: two buffers of CHUNK_DOUBLES doubles
# (1 MiB) each bound the memory, with at least CHUNK_MIN rows to keep BLAS efficient.
CHUNK_DOUBLES = 1 << 17
CHUNK_MIN = 64
CHUNK_MAX = 4096


def _hidden_tables(z, activation):
    """(z, slope, cosig) of a hidden layer, the point tables of its activation, and its
    activations a."""
    if activation == "relu":
        return (z, z, z), np.maximum(z, 0)
    if activation == "sigmoid":
        a, cosig = functions.sigmoid(z), functions.sigmoid(-z)
        return (z, a * cosig, cosig), a
    return (z, z, z), z


def _step_bound(a_prev, wp, wm, bp, bm):
    """Largest |pre-activation change| of any single perturbation of a layer."""
    w_step = max(float(np.max(np.abs(wp))), float(np.max(np.abs(wm))))
    b_step = max(float(np.max(np.abs(bp))), float(np.max(np.abs(bm))))
    return max(w_step * float(np.max(np.abs(a_prev))), b_step)


def _head(logits, t, exact):
    """The loss head's tables: softmax, per-row losses, targets as sparse rows."""
    n, k = logits.shape
    prob, row_loss = np.empty_like(logits), np.empty(n)
    _loss.softmax_xent_forward(logits, t, False, prob, row_loss, exact)
    rho = prob / (prob + _numgrad.BOOK_EPS)  # the book's 1e-7
    t_rows, t_cls = np.nonzero(t)
    t_ptr = np.zeros(n + 1, dtype=np.intp)
    np.cumsum(np.bincount(t_rows, minlength=n), out=t_ptr[1:])
    t_val = np.ascontiguousarray(t[t_rows, t_cls]) if t_cls.size else np.zeros(1)
    # a valid pointer when no row has entries
    t_cls = np.ascontiguousarray(t_cls, dtype=np.intp) if t_cls.size else np.zeros(1, np.intp)
    return _numgrad.Head(logits, t, row_loss, prob, rho, t.sum(axis=1), t_ptr, t_cls, t_val,
                         exact)


def network_sweep(weights, biases, w_plus, w_minus, b_plus, b_minus, x, t, activation, exact,
                  h, weight_decay_lambda, dW_out, db_out):
    """Central differences of the network's loss for every weight and bias, into ``dW_out``
    and ``db_out``: ``(L(p + plus) - L(p + minus)) / 2h`` for every parameter p, where
    L = mean_r loss_r + 0.5 * weight_decay_lambda * sum_l sum W_l**2 (float64 arrays; the
    steps from ``_numgrad.perturbation_steps``; ``t`` one-hot or soft rows)."""
    L, n, k = len(weights), x.shape[0], t.shape[1]
    code = ACTIVATION_CODES[activation]
    sigmoid_scale = 0.25 if activation == "sigmoid" else 1.0  # the sigmoid's largest slope

    # the forward pass, cached: inputs of every layer (and their transposes) and the tables
    tables, a = [], [x]
    for l in range(L - 1):
        tab, act = _hidden_tables(a[l] @ weights[l] + biases[l], activation)
        tables.append(_numgrad.Hidden(*tab, code))
        a.append(act)
    head = _head(a[L - 1] @ weights[L - 1] + biases[L - 1], t, exact)
    a_t = [np.ascontiguousarray(al.T) for al in a]
    acc_w = [np.zeros(W.shape) for W in weights]
    acc_b = [np.zeros(b.shape) for b in biases]

    def steps(l):
        return a_t[l], w_plus[l], w_minus[l], b_plus[l], b_minus[l], acc_w[l], acc_b[l]

    # output layer: each weight moves one logit
    l = L - 1
    u_max = _step_bound(a[l], w_plus[l], w_minus[l], b_plus[l], b_minus[l])
    _numgrad.output_sweep(head, *steps(l), u_max, np.empty(3 * k))

    if L >= 2:
        # last hidden layer: each weight moves the row's logits along a row of W_L
        l = L - 2
        d, w_last = weights[l].shape[1], weights[L - 1]
        u_act = _step_bound(a[l], w_plus[l], w_minus[l], b_plus[l], b_minus[l])
        # |activation change| <= |pre-activation change| (a quarter of it for the sigmoid)
        u_max = u_act * sigmoid_scale * float(np.max(np.abs(w_last)))
        m_exp = _numgrad.exp_terms(u_max)
        mu = np.empty((n, max(m_exp, 1), d))
        w_pow, inv_fact = np.ones_like(w_last), 1.0
        for i in range(1, m_exp + 1):
            w_pow *= w_last
            inv_fact /= i
            mu[:, i - 1, :] = (head.prob @ w_pow.T) * inv_fact
        tau = t @ w_last.T
        _numgrad.ray_sweep(head, tables[l], w_last, np.array(w_last.T, order="C"), mu, tau,
                           u_act, u_max, *steps(l), np.empty(8 * d + 3 * k))

    if L >= 3:
        # deeper layers: perturbed rows propagated through the layers above, in chunks
        maxd = max(W.shape[1] for W in weights)
        chunk = min(max(CHUNK_DOUBLES // maxd, CHUNK_MIN), CHUNK_MAX)
        buffers = (np.empty(chunk, np.intp), np.empty(chunk, np.intp), np.empty(chunk),
                   np.empty(chunk), np.empty(chunk), np.empty((chunk, maxd)),
                   np.empty((chunk, maxd)), np.empty(2 * maxd))
        for l in range(L - 2):
            u_act = _step_bound(a[l], w_plus[l], w_minus[l], b_plus[l], b_minus[l])
            _numgrad.deep_sweep(head, tables, weights, l, *steps(l), u_act, *buffers)

    # finite differences, plus the weight decay's own (exact) difference
    inv = 1.0 / (n * 2.0 * h)
    for l, W in enumerate(weights):
        dW = acc_w[l] * inv
        if weight_decay_lambda != 0:
            # 0.5 lam ((p + plus)^2 - (p + minus)^2) / 2h, factored to avoid cancellation
            dW += (0.5 * weight_decay_lambda / (2.0 * h)) * (
                (w_plus[l] - w_minus[l]) * (2.0 * W + w_plus[l] + w_minus[l]))
        dW_out[l][...] = dW
        db_out[l][...] = acc_b[l] * inv
