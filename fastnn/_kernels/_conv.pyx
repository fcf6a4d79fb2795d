# Design: convolution and max-pooling (the book's Convolution, Pooling, im2col, col2im), NCHW.
#
# Why the kernels are shaped as they are (measured on the development machine, AMD EPYC with
# AVX2 + FMA, one thread, float32, batch 100, CPU time of the process while other jobs loaded
# the machine: for direction, not for quotation):
#
# * NCHW inside, as at the API.  Per sample, the transposed im2col matrix colT (C*FH*FW,
#   OH*OW) makes W (FN, C*FH*FW) @ colT the sample's NCHW output itself: no transpose before
#   or after the GEMM (the book transposes the whole output twice, and copies the im2col
#   matrix into float64).  A channels-last or blocked layout would need a conversion at every
#   layer boundary of the book's networks (Affine flattens NCHW), for GEMMs that run at the
#   same speed: OpenBLAS's sgemm ran 43-56 GFLOP/s at these shapes (30 x 576 x 25 for
#   SimpleConvNet's layer, 64 x 192 x 576 for DeepConvNet's last ones).
# * Blocks that stay in L2: colT is built for BLOCK elements at a time (whole samples, several
#   side by side when they are small, so that one GEMM covers them and W is packed once per
#   block; or equal bands of output rows when one sample is larger), consumed by the GEMM at
#   once, and never exists for the whole batch.  Bias and ReLU are added to each output block
#   while it is still in cache (the GEMM's epilogue).  The backward rebuilds colT per block
#   rather than keeping the forward's (a 5.8 MB matrix for SimpleConvNet's layer, 45 MB for
#   DeepConvNet's second one); dx, when wanted, goes through dcolT = W.T @ dout per block,
#   scattered back (col2im) while in cache.
# * Convolution + ReLU + pooling fused (conv_relu_pool_*): each block's ReLU'd output is pooled
#   from the cache, so the full-size convolution output (7 MB at SimpleConvNet's shape) is
#   never written nor read back, and the backward routes the pooled gradient to the argmax in
#   a cache-resident buffer.  SimpleConvNet's conv + ReLU + pool, forward and backward without
#   dx: 11.6 ms as separate kernels, 9.5 ms fused; PyTorch's conv2d + relu + max_pool2d with
#   autograd 42 ms in the same run.
# * Max pooling with its argmax in one pass, the book's 2x2 stride 2 written out so that GCC
#   vectorises it (the index of the maximum carried as a float so that all selects have one
#   vector type): 100x30x24x24 forward 12.1 ms as a general loop, 1.4 ms vectorised (PyTorch
#   12.2 ms); its backward writes each pixel of dx once instead of zeroing and scattering
#   (2.2 -> 0.9 ms).  The argmax is kept as int32 window indices in NCHW; the book's arg_max
#   array is derived from it on request.
# * Short copies as inline loops: a memcpy call per im2col row of 24 values cost 9% of the
#   SimpleConvNet layer.
# * Where PyTorch (oneDNN's direct convolutions in blocked layouts) stays ahead: DeepConvNet's
#   many-channel layers, e.g. 32 -> 32 channels on 14x14 (pad 2) forward 13 ms here against
#   7.9 ms, fwd + bwd 35 against 32 ms; the im2col copies (about 3 ms there) and GEMMs at
#   50 GFLOP/s against its 60 bound them.  What would move it: a register-blocked direct
#   kernel (intrinsics or vector extensions, which the portable-C kernels here avoid), and,
#   for stride 1, dx as a convolution of the padded dout with the flipped filters (a GEMM of
#   inner size FN*FH*FW instead of FN, and no col2im).
# * SimpleConvNet's first layer (1 channel, K = 25) stays on the GEMM path (its GEMMs ran at
#   34-52 GFLOP/s; the forward with im2col and epilogue about 3.4 ms).  Direct convolution in
#   portable C, accumulators of 2 filters x one output row in L1, measured 2.6 ms with every
#   size a compile-time constant (5x5 on 28x28) but 8.0 ms with the sizes as arguments: a
#   gain only for one shape compiled in, on a third of the layer's time, so not taken.
# * One thread per call, the GIL released: the BLAS calls are small blocks that a second BLAS
#   thread would not speed up; two layers (or two halves of a batch) may run on two threads.
#
# The kernel API (stable; fastnn.layers and fastnn.nets call it, every array a plain
# C-contiguous ndarray of one dtype, float32 or float64, checked by fastnn/_kernels/_arrays.pxd):
#
#   conv_work_size(C, H, W, FN, FH, FW, stride, pad) -> int
#       elements of the scratch array that conv_forward / conv_backward take as ``work``
#       (one array serves both; without it each call allocates its own).
#   conv_gemm_size(C, H, W, FN, FH, FW, stride, pad) -> int
#       multiply-adds of the largest GEMM of one call (for fastnn.threads.for_work).
#   conv_forward(x, W, b, out, stride, pad, relu=False, work=None)
#       x (N, C, H, W), W (FN, C, FH, FW), b (FN,)  ->  out (N, FN, OH, OW) = conv(x, W) + b,
#       then ReLU in the same pass if ``relu`` (the book's Relu: 0 where the sum is <= 0).
#   conv_backward(dout, x, W, dW_out, db_out, dx_out, stride, pad, relu_out=None, work=None)
#       dW_out (FN, C, FH, FW), db_out (FN,), and dx_out (N, C, H, W) unless it is None (the
#       input gradient skipped: a network's first layer).  With ``relu_out`` (the output of
#       conv_forward(..., relu=True)), dout is first masked by ReLU's backward (dout where
#       relu_out > 0, else 0), without modifying dout.
#   conv_relu_pool_forward(x, W, b, out, argmax_out, stride, pad, pool_h, pool_w,
#                          pool_stride, pool_pad, work=None)
#       the book's Convolution -> Relu -> Pooling: out (N, FN, POH, POW) the pooled ReLU of the
#       convolution, argmax_out int32 as maxpool_forward's; the full-size convolution output is
#       never written (each block of samples is pooled while it is in cache).
#   conv_relu_pool_backward(dout, argmax, out, x, W, dW_out, db_out, dx_out, stride, pad,
#                           pool_h, pool_w, pool_stride, pool_pad, work=None)
#       its gradients from the pooled output's (``out`` is the pooled output, whose sign
#       gives ReLU's mask); dx_out None skips the input gradient.
#   maxpool_forward(x, out, argmax_out, pool_h, pool_w, stride, pad)
#       x (N, C, H, W) -> out (N, C, OH, OW), argmax_out int32 (N, C, OH, OW): the index
#       ky * pool_w + kx of the maximum in its window (the book's np.argmax: first maximum,
#       a NaN wins; padding counts as zeros, as the book's im2col pads).
#   maxpool_backward(dout, argmax, dx_out, pool_h, pool_w, stride, pad)
#       dx_out (N, C, H, W): dout routed to each window's argmax (added where windows overlap).
#   im2col(x, col_out, FH, FW, stride, pad), col2im(col, x_out, FH, FW, stride, pad)
#       the book's matrices: col (N*OH*OW, C*FH*FW), rows (n, oh, ow), columns (c, ky, kx).
#
# OH = (H + 2 pad - FH) // stride + 1 and OW likewise.  Every function checks its arrays'
# dtypes, layouts and sizes against that geometry and raises ValueError/TypeError before any
# pointer reaches C; all of them release the GIL around their loops.  The internal layout is
# the API's, NCHW, so there are no layout conversions to call.
#
# Twins: fastnn.reference.conv.im2col / col2im / Convolution / Pooling.
import numpy as np

cimport numpy as cnp
from cython cimport floating
from libc.stdint cimport int32_t
from libc.string cimport memset

from fastnn._kernels._arrays cimport dim, flat_data, float_type
from fastnn._kernels._blas cimport gemm
from fastnn._kernels._cconv cimport *

cnp.import_array()

# Elements of one block of the transposed im2col matrix (one sample's rows, or several samples
# side by side): the block, read by the GEMM right after it is written, stays in the core's L2,
# and a block of several small samples makes one GEMM of them instead of one each (each GEMM
# packs W again).
cdef fnn_index BLOCK = 32768


def _set_block(fnn_index elements):
    """Set the block size in elements (for tuning measurements); returns the previous one."""
    global BLOCK
    previous, BLOCK = BLOCK, max(1, elements)
    return previous


cdef struct Geom:
    fnn_index N, C, H, W, FN, FH, FW, stride, pad, OH, OW, K, P
    fnn_index rows  # output rows per block of one sample (OH when a sample fits a block)
    fnn_index spb   # samples per block (1 unless a whole sample fits a block several times)
    fnn_index cols  # columns of the largest block: spb * P or rows * OW


cdef int _geometry(Geom *g, fnn_index N, fnn_index C, fnn_index H, fnn_index W, fnn_index FN,
                   fnn_index FH, fnn_index FW, fnn_index stride, fnn_index pad) except -1:
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if FH < 1 or FW < 1 or FH > H + 2 * pad or FW > W + 2 * pad:
        raise ValueError(f"a {FH}x{FW} window does not fit an input of {H}x{W} padded by {pad}")
    if C < 1 or FN < 1:
        raise ValueError(f"channels and filters must be >= 1, got C={C}, FN={FN}")
    g.N, g.C, g.H, g.W, g.FN, g.FH, g.FW, g.stride, g.pad = N, C, H, W, FN, FH, FW, stride, pad
    g.OH = (H + 2 * pad - FH) // stride + 1
    g.OW = (W + 2 * pad - FW) // stride + 1
    g.K = C * FH * FW
    g.P = g.OH * g.OW
    if g.K * g.P <= BLOCK:
        g.rows = g.OH
        g.spb = BLOCK // (g.K * g.P)
        g.cols = g.spb * g.P
    else:
        # the fewest blocks that each fit, of equal height (no thin last block)
        g.spb = 1
        g.rows = max(1, min(g.OH, BLOCK // (g.K * g.OW)))
        g.rows = (g.OH + (g.OH + g.rows - 1) // g.rows - 1) // ((g.OH + g.rows - 1) // g.rows)
        g.cols = g.rows * g.OW
    if g.K > 2**31 - 1 or g.cols > 2**31 - 1 or g.P > 2**31 - 1 or FN > 2**31 - 1:
        raise ValueError("convolution dimensions exceed BLAS's 32-bit sizes")
    return 0


cdef inline fnn_index _work_size(Geom *g) noexcept nogil:
    # col and dcol (K x cols each), then three buffers of FN x max(cols, P): the GEMM's output
    # or dout gathered, and for the fused conv + ReLU + pool, the convolution's output and the
    # pooled gradient masked by ReLU
    return 2 * g.K * g.cols + 3 * g.FN * max(g.cols, g.P)


cdef void *_data_4d(object a, str name, int typenum, fnn_index d0, fnn_index d1, fnn_index d2,
                    fnn_index d3, bint out=False) except NULL:
    """Data of ``a``, which must be 4-D of shape (d0, d1, d2, d3)."""
    cdef fnn_index shape[4]
    shape[0], shape[1], shape[2], shape[3] = d0, d1, d2, d3
    for i in range(4):
        if dim(a, name, 4, i) != shape[i]:
            raise ValueError(f"{name}: expected shape {(d0, d1, d2, d3)}, got {a.shape}")
    return flat_data(a, name, typenum, d0 * d1 * d2 * d3, out)


cdef int _conv_geometry(Geom *g, object x, object W, object stride, object pad) except -1:
    cdef fnn_index C = dim(x, "x", 4, 1)
    if dim(W, "W", 4, 1) != C:
        raise ValueError(f"W {W.shape} expects {W.shape[1]} input channels, x {x.shape} has {C}")
    _geometry(g, x.shape[0], C, x.shape[2], x.shape[3], W.shape[0], W.shape[2], W.shape[3],
              stride, pad)
    return 0


def conv_work_size(fnn_index C, fnn_index H, fnn_index W, fnn_index FN, fnn_index FH,
                   fnn_index FW, fnn_index stride, fnn_index pad):
    """Elements of the ``work`` array of conv_forward and conv_backward for this geometry
    (any batch size)."""
    cdef Geom g
    _geometry(&g, 1, C, H, W, FN, FH, FW, stride, pad)
    return _work_size(&g)


def conv_gemm_size(fnn_index C, fnn_index H, fnn_index W, fnn_index FN, fnn_index FH,
                   fnn_index FW, fnn_index stride, fnn_index pad):
    """Multiply-adds of the largest GEMM that conv_forward or conv_backward makes (one block:
    FN x C*FH*FW x its columns), by which fastnn.threads chooses BLAS's thread count."""
    cdef Geom g
    _geometry(&g, 1, C, H, W, FN, FH, FW, stride, pad)
    return g.FN * g.K * g.cols


cdef object _work(object work, Geom *g, int typenum):
    """``work``, checked, or a new scratch array (which the caller keeps alive)."""
    if work is None:
        return np.empty(_work_size(g), dtype=np.float32 if typenum == cnp.NPY_FLOAT32 else np.float64)
    return work


# --- convolution --------------------------------------------------------------------------------

# the per-precision C kernels under one fused name
cdef inline void _im2col_t(const floating *x, Geom *g, fnn_index oh0, fnn_index oh1,
                           floating *col, fnn_index ld) noexcept nogil:
    if floating is float:
        fnn_im2col_t_f32(x, g.C, g.H, g.W, g.FH, g.FW, g.stride, g.pad, g.OW, oh0, oh1, col, ld)
    else:
        fnn_im2col_t_f64(x, g.C, g.H, g.W, g.FH, g.FW, g.stride, g.pad, g.OW, oh0, oh1, col, ld)


cdef inline void _col2im_t_add(const floating *col, fnn_index ld, Geom *g, fnn_index oh0,
                               fnn_index oh1, floating *x) noexcept nogil:
    if floating is float:
        fnn_col2im_t_add_f32(col, ld, g.C, g.H, g.W, g.FH, g.FW, g.stride, g.pad, g.OW, oh0,
                             oh1, x)
    else:
        fnn_col2im_t_add_f64(col, ld, g.C, g.H, g.W, g.FH, g.FW, g.stride, g.pad, g.OW, oh0,
                             oh1, x)


cdef inline void _row_sums_add(const floating *a, fnn_index rows, fnn_index cols,
                               floating *sums) noexcept nogil:
    if floating is float:
        fnn_row_sums_add_f32(a, rows, cols, sums)
    else:
        fnn_row_sums_add_f64(a, rows, cols, sums)


cdef inline void _gather_rows(const floating *src, fnn_index ld_src, const floating *out,
                              floating *dst, fnn_index ld_dst, fnn_index rows,
                              fnn_index cols) noexcept nogil:
    if floating is float:
        fnn_gather_rows_f32(src, ld_src, out, dst, ld_dst, rows, cols)
    else:
        fnn_gather_rows_f64(src, ld_src, out, dst, ld_dst, rows, cols)


cdef void _forward(const floating *x, const floating *Wt, const floating *b, floating *out,
                   floating *work, Geom *g, bint relu) noexcept nogil:
    cdef fnn_index n0, s, j, oh0, oh1, L
    cdef fnn_index xs = g.C * g.H * g.W, os = g.FN * g.P
    cdef floating *col = work
    cdef floating *tmp = work + 2 * g.K * g.cols
    cdef floating *on
    n0 = 0
    while n0 < g.N:
        s = min(g.spb, g.N - n0)
        if g.spb > 1:
            # several samples side by side: colT (K, s*P), one GEMM into tmp (FN, s*P), and
            # the epilogue copies each sample's (FN, P) into place with bias and ReLU
            L = s * g.P
            for j in range(s):
                _im2col_t(x + (n0 + j) * xs, g, 0, g.OH, col + j * g.P, L)
            gemm(False, False, g.FN, L, g.K, 1, Wt, g.K, col, L, 0, tmp, L)
            for j in range(s):
                if floating is float:
                    fnn_bias_act_copy_f32(tmp + j * g.P, L, out + (n0 + j) * os, g.P, g.FN, g.P,
                                          b, relu)
                else:
                    fnn_bias_act_copy_f64(tmp + j * g.P, L, out + (n0 + j) * os, g.P, g.FN, g.P,
                                          b, relu)
        else:
            # one sample, a block of output rows at a time, straight into its NCHW rows
            on = out + n0 * os
            oh0 = 0
            while oh0 < g.OH:
                oh1 = min(oh0 + g.rows, g.OH)
                L = (oh1 - oh0) * g.OW
                _im2col_t(x + n0 * xs, g, oh0, oh1, col, L)
                gemm(False, False, g.FN, L, g.K, 1, Wt, g.K, col, L, 0, on + oh0 * g.OW, g.P)
                if floating is float:
                    fnn_bias_act_f32(on + oh0 * g.OW, g.FN, g.P, L, b, relu)
                else:
                    fnn_bias_act_f64(on + oh0 * g.OW, g.FN, g.P, L, b, relu)
                oh0 = oh1
        n0 += s


def conv_forward(x,      # IN  (N, C, H, W)
                 W,      # IN  (FN, C, FH, FW)
                 b,      # IN  (FN,)
                 out,    # OUT (N, FN, OH, OW)
                 stride, pad, bint relu=False,
                 work=None):  # scratch of conv_work_size(...) elements, or None
    """out = conv(x, W) + b (ReLU'd if ``relu``); twin: fastnn.reference.conv.Convolution."""
    cdef Geom g
    cdef int t = float_type(x, "x")
    _conv_geometry(&g, x, W, stride, pad)
    cdef const void *px = flat_data(x, "x", t, g.N * g.C * g.H * g.W)
    cdef const void *pw = flat_data(W, "W", t, g.FN * g.K)
    cdef const void *pb = flat_data(b, "b", t, g.FN)
    cdef void *po = _data_4d(out, "out", t, g.N, g.FN, g.OH, g.OW, True)
    work = _work(work, &g, t)  # held by this frame while the kernel runs
    cdef void *pk = flat_data(work, "work", t, _work_size(&g), True)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _forward(<const float *>px, <const float *>pw, <const float *>pb, <float *>po,
                     <float *>pk, &g, relu)
        else:
            _forward(<const double *>px, <const double *>pw, <const double *>pb, <double *>po,
                     <double *>pk, &g, relu)


cdef void _backward(const floating *dout, const floating *x, const floating *Wt, floating *dW,
                    floating *db, floating *dx, const floating *relu_out, floating *work,
                    Geom *g) noexcept nogil:
    """dW += ..., db += ... (the caller zeroes them once), dx = ... for g.N samples."""
    cdef fnn_index n0, s, j, oh0, oh1, L
    cdef fnn_index xs = g.C * g.H * g.W, os = g.FN * g.P
    cdef floating *col = work
    cdef floating *dcol = work + g.K * g.cols
    cdef floating *dbuf = work + 2 * g.K * g.cols
    cdef const floating *d
    if dx != NULL:
        memset(dx, 0, g.N * xs * sizeof(floating))
    n0 = 0
    while n0 < g.N:
        s = min(g.spb, g.N - n0)
        if g.spb > 1:
            # several samples side by side: dout (masked by ReLU) gathered into (FN, s*P)
            L = s * g.P
            for j in range(s):
                _gather_rows(dout + (n0 + j) * os, g.P,
                             relu_out + (n0 + j) * os if relu_out != NULL else NULL,
                             dbuf + j * g.P, L, g.FN, g.P)
                _im2col_t(x + (n0 + j) * xs, g, 0, g.OH, col + j * g.P, L)
            _row_sums_add(dbuf, g.FN, L, db)
            # dW (FN, K) += dout (FN, L) @ colT (K, L).T
            gemm(False, True, g.FN, g.K, L, 1, dbuf, L, col, L, 1, dW, g.K)
            if dx != NULL:
                # dcolT (K, L) = W (FN, K).T @ dout (FN, L), scattered back into dx
                gemm(True, False, g.K, L, g.FN, 1, Wt, g.K, dbuf, L, 0, dcol, L)
                for j in range(s):
                    _col2im_t_add(dcol + j * g.P, L, g, 0, g.OH, dx + (n0 + j) * xs)
        else:
            d = dout + n0 * os
            if relu_out != NULL:
                _gather_rows(d, g.P, relu_out + n0 * os, dbuf, g.P, g.FN, g.P)
                d = dbuf
            _row_sums_add(d, g.FN, g.P, db)
            oh0 = 0
            while oh0 < g.OH:
                oh1 = min(oh0 + g.rows, g.OH)
                L = (oh1 - oh0) * g.OW
                _im2col_t(x + n0 * xs, g, oh0, oh1, col, L)
                gemm(False, True, g.FN, g.K, L, 1, d + oh0 * g.OW, g.P, col, L, 1, dW, g.K)
                if dx != NULL:
                    gemm(True, False, g.K, L, g.FN, 1, Wt, g.K, d + oh0 * g.OW, g.P, 0, dcol, L)
                    _col2im_t_add(dcol, L, g, oh0, oh1, dx + n0 * xs)
                oh0 = oh1
        n0 += s


def conv_backward(dout,      # IN  (N, FN, OH, OW)
                  x,         # IN  (N, C, H, W), the forward input
                  W,         # IN  (FN, C, FH, FW)
                  dW_out,    # OUT (FN, C, FH, FW)
                  db_out,    # OUT (FN,)
                  dx_out,    # OUT (N, C, H, W), or None to skip the input gradient
                  stride, pad,
                  relu_out=None,  # IN (N, FN, OH, OW): forward output after ReLU, or None
                  work=None):     # scratch of conv_work_size(...) elements, or None
    """Gradients of conv_forward; twin: fastnn.reference.conv.Convolution.backward."""
    cdef Geom g
    cdef int t = float_type(x, "x")
    _conv_geometry(&g, x, W, stride, pad)
    cdef const void *pd = _data_4d(dout, "dout", t, g.N, g.FN, g.OH, g.OW)
    cdef const void *px = flat_data(x, "x", t, g.N * g.C * g.H * g.W)
    cdef const void *pw = flat_data(W, "W", t, g.FN * g.K)
    cdef void *pdw = flat_data(dW_out, "dW_out", t, g.FN * g.K, True)
    cdef void *pdb = flat_data(db_out, "db_out", t, g.FN, True)
    cdef void *pdx = NULL
    if dx_out is not None:
        pdx = _data_4d(dx_out, "dx_out", t, g.N, g.C, g.H, g.W, True)
    cdef const void *pr = NULL
    if relu_out is not None:
        pr = _data_4d(relu_out, "relu_out", t, g.N, g.FN, g.OH, g.OW)
    work = _work(work, &g, t)  # held by this frame while the kernel runs
    cdef void *pk = flat_data(work, "work", t, _work_size(&g), True)
    cdef size_t item = 4 if t == cnp.NPY_FLOAT32 else 8
    with nogil:
        memset(pdw, 0, g.FN * g.K * item)
        memset(pdb, 0, g.FN * item)
        if t == cnp.NPY_FLOAT32:
            _backward(<const float *>pd, <const float *>px, <const float *>pw, <float *>pdw,
                      <float *>pdb, <float *>pdx, <const float *>pr, <float *>pk, &g)
        else:
            _backward(<const double *>pd, <const double *>px, <const double *>pw, <double *>pdw,
                      <double *>pdb, <double *>pdx, <const double *>pr, <double *>pk, &g)


# --- convolution + ReLU + max pooling, fused ----------------------------------------------------

cdef int _fused_geometry(Geom *g, Geom *pg, object x, object W, object stride, object pad,
                         object pool_h, object pool_w, object pool_stride,
                         object pool_pad) except -1:
    _conv_geometry(g, x, W, stride, pad)
    # the pooling of the convolution's (N * FN) planes of OH x OW
    _geometry(pg, g.N, g.FN, g.OH, g.OW, 1, pool_h, pool_w, pool_stride, pool_pad)
    return 0


cdef inline void _maxpool_forward(const floating *x, fnn_index NC, Geom *pg, floating *out,
                                  int32_t *argmax) noexcept nogil:
    if floating is float:
        fnn_maxpool_forward_f32(x, NC, pg.H, pg.W, pg.FH, pg.FW, pg.stride, pg.pad, pg.OH,
                                pg.OW, out, argmax)
    else:
        fnn_maxpool_forward_f64(x, NC, pg.H, pg.W, pg.FH, pg.FW, pg.stride, pg.pad, pg.OH,
                                pg.OW, out, argmax)


cdef void _fused_forward(const floating *x, const floating *Wt, const floating *b,
                         floating *out, int32_t *argmax, floating *work, Geom *g,
                         Geom *pg) noexcept nogil:
    # a block of samples at a time: its convolution (+ bias + ReLU) into a buffer that stays in
    # cache, pooled from there; the full-size convolution output is never written
    cdef Geom sub = g[0]
    cdef fnn_index n0 = 0, s
    cdef fnn_index big = g.FN * max(g.cols, g.P)
    cdef floating *conv = work + 2 * g.K * g.cols + big
    cdef fnn_index po = g.FN * pg.OH * pg.OW
    while n0 < g.N:
        s = min(g.spb, g.N - n0)
        sub.N = s
        _forward(x + n0 * g.C * g.H * g.W, Wt, b, conv, work, &sub, True)
        _maxpool_forward(conv, s * g.FN, pg, out + n0 * po, argmax + n0 * po)
        n0 += s


def conv_relu_pool_forward(x,           # IN  (N, C, H, W)
                           W,           # IN  (FN, C, FH, FW)
                           b,           # IN  (FN,)
                           out,         # OUT (N, FN, POH, POW): pooled ReLU(conv(x, W) + b)
                           argmax_out,  # OUT int32 (N, FN, POH, POW), as maxpool_forward's
                           stride, pad, pool_h, pool_w, pool_stride, pool_pad,
                           work=None):  # scratch of conv_work_size(...) elements, or None
    """The book's Convolution -> Relu -> Pooling forward in one pass over blocks of samples.

    Twins: fastnn.reference.conv.Convolution, fastnn.reference.layers.Relu,
    fastnn.reference.conv.Pooling, one after the other."""
    cdef Geom g, pg
    cdef int t = float_type(x, "x")
    _fused_geometry(&g, &pg, x, W, stride, pad, pool_h, pool_w, pool_stride, pool_pad)
    cdef const void *px = flat_data(x, "x", t, g.N * g.C * g.H * g.W)
    cdef const void *pw = flat_data(W, "W", t, g.FN * g.K)
    cdef const void *pb = flat_data(b, "b", t, g.FN)
    cdef void *po = _data_4d(out, "out", t, g.N, g.FN, pg.OH, pg.OW, True)
    cdef int32_t *pa = <int32_t *>_data_4d(argmax_out, "argmax_out", cnp.NPY_INT32, g.N, g.FN,
                                           pg.OH, pg.OW, True)
    work = _work(work, &g, t)  # held by this frame while the kernel runs
    cdef void *pk = flat_data(work, "work", t, _work_size(&g), True)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _fused_forward(<const float *>px, <const float *>pw, <const float *>pb,
                           <float *>po, pa, <float *>pk, &g, &pg)
        else:
            _fused_forward(<const double *>px, <const double *>pw, <const double *>pb,
                           <double *>po, pa, <double *>pk, &g, &pg)


cdef void _fused_backward(const floating *dout, const int32_t *argmax, const floating *pooled,
                          const floating *x, const floating *Wt, floating *dW, floating *db,
                          floating *dx, floating *work, Geom *g, Geom *pg) noexcept nogil:
    # per block of samples: the pooled gradient masked by ReLU (0 where the pooled output is
    # <= 0: there the window's maximum, hence the ReLU's input, was <= 0), routed to the
    # argmax into a cache-resident (s, FN, OH, OW) buffer, then the convolution's backward
    cdef Geom sub = g[0]
    cdef fnn_index n0 = 0, s
    cdef fnn_index big = g.FN * max(g.cols, g.P)
    cdef floating *dconv = work + 2 * g.K * g.cols + big
    cdef floating *dmask = dconv + big
    cdef fnn_index po = g.FN * pg.OH * pg.OW
    while n0 < g.N:
        s = min(g.spb, g.N - n0)
        sub.N = s
        if floating is float:
            fnn_relu_grad_from_out_f32(dout + n0 * po, pooled + n0 * po, s * po, dmask)
            fnn_maxpool_backward_f32(dmask, argmax + n0 * po, s * g.FN, pg.H, pg.W, pg.FH,
                                     pg.FW, pg.stride, pg.pad, pg.OH, pg.OW, dconv)
        else:
            fnn_relu_grad_from_out_f64(dout + n0 * po, pooled + n0 * po, s * po, dmask)
            fnn_maxpool_backward_f64(dmask, argmax + n0 * po, s * g.FN, pg.H, pg.W, pg.FH,
                                     pg.FW, pg.stride, pg.pad, pg.OH, pg.OW, dconv)
        _backward(dconv, x + n0 * g.C * g.H * g.W, Wt, dW, db,
                  dx + n0 * g.C * g.H * g.W if dx != NULL else NULL, NULL, work, &sub)
        n0 += s


def conv_relu_pool_backward(dout,     # IN  (N, FN, POH, POW): gradient of the pooled output
                            argmax,   # IN  int32 (N, FN, POH, POW), from conv_relu_pool_forward
                            out,      # IN  (N, FN, POH, POW), the pooled output
                            x,        # IN  (N, C, H, W), the forward input
                            W,        # IN  (FN, C, FH, FW)
                            dW_out,   # OUT (FN, C, FH, FW)
                            db_out,   # OUT (FN,)
                            dx_out,   # OUT (N, C, H, W), or None to skip the input gradient
                            stride, pad, pool_h, pool_w, pool_stride, pool_pad,
                            work=None):  # scratch of conv_work_size(...) elements, or None
    """Gradients of conv_relu_pool_forward (the book's Pooling, Relu and Convolution
    backward, one after the other, without their full-size intermediates)."""
    cdef Geom g, pg
    cdef int t = float_type(x, "x")
    _fused_geometry(&g, &pg, x, W, stride, pad, pool_h, pool_w, pool_stride, pool_pad)
    cdef const void *pd = _data_4d(dout, "dout", t, g.N, g.FN, pg.OH, pg.OW)
    cdef const int32_t *pa = <const int32_t *>_data_4d(argmax, "argmax", cnp.NPY_INT32, g.N,
                                                       g.FN, pg.OH, pg.OW)
    cdef const void *pp = _data_4d(out, "out", t, g.N, g.FN, pg.OH, pg.OW)
    cdef const void *px = flat_data(x, "x", t, g.N * g.C * g.H * g.W)
    cdef const void *pw = flat_data(W, "W", t, g.FN * g.K)
    cdef void *pdw = flat_data(dW_out, "dW_out", t, g.FN * g.K, True)
    cdef void *pdb = flat_data(db_out, "db_out", t, g.FN, True)
    cdef void *pdx = NULL
    if dx_out is not None:
        pdx = _data_4d(dx_out, "dx_out", t, g.N, g.C, g.H, g.W, True)
    work = _work(work, &g, t)  # held by this frame while the kernel runs
    cdef void *pk = flat_data(work, "work", t, _work_size(&g), True)
    cdef size_t item = 4 if t == cnp.NPY_FLOAT32 else 8
    with nogil:
        memset(pdw, 0, g.FN * g.K * item)
        memset(pdb, 0, g.FN * item)
        if t == cnp.NPY_FLOAT32:
            _fused_backward(<const float *>pd, pa, <const float *>pp, <const float *>px,
                            <const float *>pw, <float *>pdw, <float *>pdb, <float *>pdx,
                            <float *>pk, &g, &pg)
        else:
            _fused_backward(<const double *>pd, pa, <const double *>pp, <const double *>px,
                            <const double *>pw, <double *>pdw, <double *>pdb, <double *>pdx,
                            <double *>pk, &g, &pg)


# --- max pooling --------------------------------------------------------------------------------

cdef int _pool_geometry(Geom *g, object x, str name, object pool_h, object pool_w,
                        object stride, object pad) except -1:
    _geometry(g, dim(x, name, 4, 0), x.shape[1], x.shape[2], x.shape[3], 1, pool_h, pool_w,
              stride, pad)
    return 0


def maxpool_forward(x,           # IN  (N, C, H, W)
                    out,         # OUT (N, C, OH, OW)
                    argmax_out,  # OUT int32 (N, C, OH, OW): ky * pool_w + kx of the maximum
                    pool_h, pool_w, stride, pad):
    """Max pooling with its argmax in one pass; twin: fastnn.reference.conv.Pooling.forward."""
    cdef Geom g
    cdef int t = float_type(x, "x")
    _pool_geometry(&g, x, "x", pool_h, pool_w, stride, pad)
    cdef fnn_index NC = g.N * g.C
    cdef const void *px = flat_data(x, "x", t, NC * g.H * g.W)
    cdef void *po = _data_4d(out, "out", t, g.N, g.C, g.OH, g.OW, True)
    cdef int32_t *pa = <int32_t *>_data_4d(argmax_out, "argmax_out", cnp.NPY_INT32, g.N, g.C,
                                           g.OH, g.OW, True)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            fnn_maxpool_forward_f32(<const float *>px, NC, g.H, g.W, g.FH, g.FW, g.stride, g.pad,
                                    g.OH, g.OW, <float *>po, pa)
        else:
            fnn_maxpool_forward_f64(<const double *>px, NC, g.H, g.W, g.FH, g.FW, g.stride,
                                    g.pad, g.OH, g.OW, <double *>po, pa)


def maxpool_backward(dout,    # IN  (N, C, OH, OW)
                     argmax,  # IN  int32 (N, C, OH, OW), from maxpool_forward
                     dx_out,  # OUT (N, C, H, W)
                     pool_h, pool_w, stride, pad):
    """dout routed to the argmax of each window; twin: fastnn.reference.conv.Pooling.backward."""
    cdef Geom g
    cdef int t = float_type(dx_out, "dx_out")
    _pool_geometry(&g, dx_out, "dx_out", pool_h, pool_w, stride, pad)
    cdef fnn_index NC = g.N * g.C
    cdef const void *pd = _data_4d(dout, "dout", t, g.N, g.C, g.OH, g.OW)
    cdef const int32_t *pa = <const int32_t *>_data_4d(argmax, "argmax", cnp.NPY_INT32, g.N,
                                                       g.C, g.OH, g.OW)
    cdef void *px = flat_data(dx_out, "dx_out", t, NC * g.H * g.W, True)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            fnn_maxpool_backward_f32(<const float *>pd, pa, NC, g.H, g.W, g.FH, g.FW, g.stride,
                                     g.pad, g.OH, g.OW, <float *>px)
        else:
            fnn_maxpool_backward_f64(<const double *>pd, pa, NC, g.H, g.W, g.FH, g.FW, g.stride,
                                     g.pad, g.OH, g.OW, <double *>px)


# --- the book's matrices ------------------------------------------------------------------------

def im2col(x,        # IN  (N, C, H, W)
           col_out,  # OUT (N*OH*OW, C*FH*FW)
           FH, FW, stride, pad):
    """The book's im2col into ``col_out``; twin: fastnn.reference.conv.im2col."""
    cdef Geom g
    cdef int t = float_type(x, "x")
    _geometry(&g, dim(x, "x", 4, 0), x.shape[1], x.shape[2], x.shape[3], 1, FH, FW, stride, pad)
    cdef const void *px = flat_data(x, "x", t, g.N * g.C * g.H * g.W)
    if dim(col_out, "col_out", 2, 0) != g.N * g.P or col_out.shape[1] != g.K:
        raise ValueError(f"col_out: expected shape {(g.N * g.P, g.K)}, got {col_out.shape}")
    cdef void *pc = flat_data(col_out, "col_out", t, g.N * g.P * g.K, True)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            fnn_im2col_f32(<const float *>px, g.N, g.C, g.H, g.W, g.FH, g.FW, g.stride, g.pad,
                           g.OH, g.OW, <float *>pc)
        else:
            fnn_im2col_f64(<const double *>px, g.N, g.C, g.H, g.W, g.FH, g.FW, g.stride, g.pad,
                           g.OH, g.OW, <double *>pc)


def col2im(col,    # IN  (N*OH*OW, C*FH*FW)
           x_out,  # OUT (N, C, H, W)
           FH, FW, stride, pad):
    """The book's col2im into ``x_out``; twin: fastnn.reference.conv.col2im."""
    cdef Geom g
    cdef int t = float_type(x_out, "x_out")
    _geometry(&g, dim(x_out, "x_out", 4, 0), x_out.shape[1], x_out.shape[2], x_out.shape[3], 1,
              FH, FW, stride, pad)
    if dim(col, "col", 2, 0) != g.N * g.P or col.shape[1] != g.K:
        raise ValueError(f"col: expected shape {(g.N * g.P, g.K)}, got {col.shape}")
    cdef const void *pc = flat_data(col, "col", t, g.N * g.P * g.K)
    cdef void *px = flat_data(x_out, "x_out", t, g.N * g.C * g.H * g.W, True)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            fnn_col2im_f32(<const float *>pc, g.N, g.C, g.H, g.W, g.FH, g.FW, g.stride, g.pad,
                           g.OH, g.OW, <float *>px)
        else:
            fnn_col2im_f64(<const double *>pc, g.N, g.C, g.H, g.W, g.FH, g.FW, g.stride, g.pad,
                           g.OH, g.OW, <double *>px)
