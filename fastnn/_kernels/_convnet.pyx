# Design: a whole convnet's forward pass, or its loss and gradient, in one call without the GIL.
#
# The networks are the book's SimpleConvNet (ch. 7) and DeepConvNet (ch. 8): a stack of
# convolutions, each followed by ReLU and optionally by the book's 2x2 max pooling of stride 2,
# then dense layers (ReLU between them, optional dropout after each), then softmax-with-loss.
# A Plan holds the geometry and every buffer for batches of n images, so a training step
# allocates nothing after the first; fastnn/nets.py keeps one Plan per batch size.
#
# Two paths, chosen per Plan (Plan.direct):
#
# The direct path (stride-1 convolutions with pad < filter size, and the input channels of
# every layer but the first multiples of two 32-byte vectors: 16 in float32, 8 in float64;
# SimpleConvNet and DeepConvNet are such nets).  Images are channels-last (NHWC) inside: a
# layer's stored output is (OH', OW', F) per image, the first layer reads the book's NCHW
# images, and the last convolution's epilogue writes the book's (c, h, w) order, the dense
# layers' input (its backward reads their gradient in that order: no transposes).  Per image,
# the layer's input is copied into a zero-padded (H + 2 pad, W + 2 pad, C) image and
# convolved directly, with no column matrix: a register tile of 6 output pixels x 16 filters
# (float32; 8 in float64) sums over the taps (i, j, c) with the filters packed as (i, j, c) x
# F, so that per tap two weight vectors are loaded and one input value per pixel is
# broadcast: 12 fused multiply-adds for 8 loads, and no packing pass as a BLAS GEMM makes.  A
# filter count that is not a multiple of the tile's (SimpleConvNet's 30) is rounded up inside
# (Fp): the packed filters, the output z and its gradient carry Fp filters, the extra ones
# zero, while the stores and the biases keep the layer's own.  Measured on DeepConvNet (batch
# 100, one thread, float32), the im2col + GEMM path below spent 101 ms in sgemm (51 GFLOP/s at
# K = 9..576, M = F = 16..64) and 79 ms in the column matrices' memory passes (im2col forward
# and again backward, col2im, the epilogue, the bias sums); the direct path does the whole
# step in about half that time (SimpleConvNet's float64 step, 1.3x faster than on im2col).
# The epilogue (bias, ReLU, 2x2 max pool with its argmax in one pass) runs over each image's
# output while it is in cache, vectorised over the filters.  Backward, per image: the pooled
# gradient is routed to the window's maximum (where ReLU let it through) into a zero-padded
# (OH + 2 (FH-1-pad), OW + 2 (FW-1-pad), F) gradient image (unpadded for the first layer,
# whose input gradient is not needed), the bias gradient summed on the way (in double); dW
# (packed like the filters) accumulates a tile of 6 taps x 16 filters over the pixels; and the
# input's gradient is the convolution of the padded gradient image with the flipped filters,
# (FH-1-i, FW-1-j, f) -> c, by the same kernel as the forward pass: one pass that writes dx
# once, where GEMM + col2im writes a K-row matrix and scatters it.  The first layer's input
# gradient, which nobody uses, is never computed.  Both cores: the images of a
# batch are independent up to the weight gradients, so the direct path splits the batch into
# contiguous shares, one thread each (pthreads, started per pass: no OpenMP runtime, and no
# thread spins between calls as BLAS threads do), each with its own workspace and its own dW and
# db accumulators, added in share order afterwards: results depend on the share count only,
# which fastnn.threads.for_split chooses by the work.  Forward, a share runs every convolution
# of its images; backward, every layer's gradients down, its images' rows of the ping-pong
# buffers n * widest apart.  Measured (DeepConvNet float32, a 2-core machine under a load
# average of 3-4.5 from other work, see fastnn.threads.for_split): two threads gained up to
# 1.7x at batch 1000 and 1.5x at batch 100, and in some runs nothing.
#
# The im2col + GEMM path (any stride, padding and filter count; the networks take it where the
# direct path does not apply, and tests compare the two).
# The book's NCHW all the way through (the flattened pooled output is then exactly the book's
# Affine input, and W1..W6 are used as they are stored: (F, C*FH*FW) matrices).  Per
# convolution, blocks of B images are unfolded (im2col) into one column matrix of K = C*FH*FW
# rows and B*OH*OW columns, the images side by side, and multiplied by W in one GEMM: z (F,
# B*OH*OW) = W (F, K) @ col.  B is chosen so that the column matrix stays in the L2 cache
# (about COL_BUDGET elements), where the book's im2col builds one matrix for the whole batch
# (5.8 MB for SimpleConvNet, in float64) and transposes the output twice.  The epilogue, one
# pass over z, adds the bias, applies ReLU and, for a pooled layer, pools: max_i relu(z_i + b)
# = relu(max_i z_i + b), so only the pooled value and the index of the maximum (one byte) are
# written; a pooled layer's full-size output is never stored.  Backward, per convolution and
# block: the pooled gradient is routed to each window's maximum (where the pooled value is
# positive, which is ReLU's mask) or masked by the stored ReLU output, into z's buffer; db is
# its row sums (in double, across blocks too); the block's columns are unfolded again (cheaper
# than keeping every layer's column matrix: they are rebuilt in cache from the layer's input)
# and dW += dz @ col^T; for every layer but the first, dcol = W^T @ dz (into the column
# buffer) and col2im gives the input's gradient.
#
# Both paths: dropout masks are drawn by the caller from np.random.rand, as the book's Dropout
# draws them, so fastnn and the book drop the same units under one seed; bias gradients are
# summed in double and rounded once, so float32 sums stay within the twin's tolerance at any
# batch size.
#
# precision="bf16" (float32 Plans): every product of a convolution (forward, dW, dx) and of a
# dense layer takes bfloat16-rounded operands and sums in float32, as the dense bf16 networks
# (fastnn/_kernels/_bf16.pyx) do; weights, gradients and activations stay float32.  The dense
# layers and the im2col path's convolutions are GEMMs: their operands (the column matrix, W,
# dz; a layer's input, its weights, its delta) go through _bf16.round_operand and _bf16.gemm,
# each rounded once per call where a pass reads it twice (the weights, a dense layer's input,
# a delta).  The direct path's convolution is fastnn's own float32 kernel: its operands (the
# padded input image, the filters before they are packed, the padded gradient image) are
# rounded to bfloat16 values in float32 storage (_bf16.round_values), and since a product of
# two bfloat16 values is exact in float32, the unchanged kernel computes the bf16 products with
# float32 sums.  The rounded buffers are the Plan's, sized once: a step allocates nothing.
#
# Every array's dtype, layout and exact dimensions are checked (fastnn/_kernels/_arrays.pxd)
# before the GIL is released; the nogil code walks only buffers the Plan sized itself.
#
# Twins: fastnn.reference.convnets.SimpleConvNet / DeepConvNet.
cimport numpy as cnp
from cython cimport floating
from libc.stdint cimport int64_t, uint8_t
from libc.string cimport memcpy, memset

import numpy as np

from fastnn._validation import check_precision

from fastnn._kernels._arrays cimport _describe, dim, flat_data, float_type
from fastnn._kernels cimport _bf16
from fastnn._kernels._blas cimport gemm
from fastnn._kernels._cconv cimport (
    fnn_col2im_t_add_f32, fnn_col2im_t_add_f64, fnn_im2col_t_f32, fnn_im2col_t_f64,
)
from fastnn._kernels._cconvnet cimport *
from fastnn._kernels._cfnn cimport (
    FNN_IDENTITY, FNN_RELU, fnn_activation_backward_f32, fnn_activation_backward_f64,
    fnn_bias_activation_f32, fnn_bias_activation_f64, fnn_column_sum_f32, fnn_column_sum_f64,
    fnn_mean_row_loss, fnn_softmax_xent_grad_labels_f32, fnn_softmax_xent_grad_labels_f64,
    fnn_softmax_xent_grad_targets_f32, fnn_softmax_xent_grad_targets_f64,
)

cnp.import_array()

cdef enum:
    MAX_CONV = 8
    MAX_DENSE = 4
    MAX_SHARES = 8  # threads of the direct path, each on a contiguous share of the images

cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned long pthread_t
    int pthread_create(pthread_t *thread, const void *attr, void *(*run)(void *) noexcept nogil,
                       void *arg)
    int pthread_join(pthread_t thread, void **result)

# elements of a block's column matrix: 512 KB in float32, the L2 cache of one core
COL_BUDGET = 1 << 17


cdef struct _Share:
    # one thread's share of the direct path: images [img0, img1) and its own workspace
    void *net
    const void *x
    int img0, img1, backward
    void *xp                 # one padded input image (Hpad, Wpad, C)
    void *z                  # one convolution output (OH, OW, F)
    void *dzp                # one padded output gradient (Hdz, Wdz, F)
    void *dWk[MAX_CONV]      # this share's filter gradients, packed as the filters
    double *dbacc[MAX_CONV]  # its bias gradients, in double


cdef struct _Net:
    int n, L, D
    # per convolution: input (C, H, W), filters (F, C, FH, FW), stride, pad, output (OH, OW),
    # images per block, pooled or not; per-image sizes of the input and of what is stored
    int C[MAX_CONV]
    int H[MAX_CONV]
    int W[MAX_CONV]
    int F[MAX_CONV]
    int FH[MAX_CONV]
    int FW[MAX_CONV]
    int S[MAX_CONV]
    int PAD[MAX_CONV]
    int OH[MAX_CONV]
    int OW[MAX_CONV]
    int B[MAX_CONV]
    int pool[MAX_CONV]
    Py_ssize_t insz[MAX_CONV]
    Py_ssize_t outsz[MAX_CONV]
    int sizes[MAX_DENSE + 1]
    int dropout[MAX_DENSE]
    double keep[MAX_DENSE]
    # the Plan's buffers
    void *store[MAX_CONV]    # (n, outsz[l]): the pooled output, or the ReLU output
    uint8_t *arg[MAX_CONV]   # (n, outsz[l]): the pooled maximum's index in its window
    void *col                # column matrix of a block (then its gradient)
    void *z                  # convolution output of a block (then its gradient)
    void *dA                 # (n, widest) gradients of the stored outputs, ping-pong
    Py_ssize_t widest
    void *dB
    void *a[MAX_DENSE]       # (n, sizes[j+1]) dense outputs (after ReLU and dropout)
    void *s0                 # (n, widest hidden) dense deltas, ping-pong
    void *s1
    double *row_loss
    double *dbacc            # (widest F,) a bias gradient, summed in double
    # the direct path: NHWC stores, padded input (Hpad, Wpad, C) and padded output gradient
    # (Hdz, Wdz, F) of one image, packed filters (Wk), flipped ones for the input gradient (Wf)
    int direct
    int Fp[MAX_CONV]         # the packed filters' stride (and z's, dzp's): F rounded up
    int Hpad[MAX_CONV]
    int Wpad[MAX_CONV]
    int Hdz[MAX_CONV]
    int Wdz[MAX_CONV]
    void *Wk[MAX_CONV]
    void *Wf[MAX_CONV]
    int f64
    int shares               # the shares of this call
    _Share share[MAX_SHARES]
    # the arrays of one call
    const void *x
    void *logits
    void *Wc[MAX_CONV]
    void *bc[MAX_CONV]
    void *Wd[MAX_DENSE]
    void *bd[MAX_DENSE]
    void *dWc[MAX_CONV]
    void *dbc[MAX_CONV]
    void *dWd[MAX_DENSE]
    void *dbd[MAX_DENSE]
    void *mask[MAX_DENSE]
    # precision="bf16" (float32 only): the operands, rounded (see the design)
    int bf16
    void *Wq[MAX_CONV]       # the filters: direct path float32 values, im2col gemm operands
    void *colq               # im2col path: a block's column matrix
    void *zq                 # im2col path: a block's output gradient
    void *Wdq[MAX_DENSE]     # the dense weights
    void *inq[MAX_DENSE]     # (n, sizes[j]) the dense layers' inputs, kept for dW
    void *dq                 # (n, widest of sizes[1:]) the delta of the dense layer walked


cdef class Plan:
    """Geometry and workspace of a convnet for batches of ``n`` images.

    Parameters
    ----------
    convs : list of tuple
        One ``(C, H, W, F, FH, FW, stride, pad, pool)`` per convolution, first to last.
    sizes : list of int
        Dense layer widths, from the flattened output of the last convolution to the classes.
    dropout : list of float
        Per dense layer, the dropout ratio after it (0: none).
    n : int
        Images per batch.
    dtype : numpy.dtype
        float32 or float64.
    max_shares : int
        Threads the direct path may split a batch over (each takes a contiguous share of the
        images, with a workspace of its own).
    direct : bool or None
        The direct path (NHWC inside, no column matrix) or im2col + GEMM; None: the direct
        path wherever it applies (every convolution of stride 1 with ``pad < FH, FW``, and the
        input channels of every convolution but the first multiples of 16 in float32 or 8 in
        float64).
    precision : None or 'bf16'
        None: the dtype's own; 'bf16' (float32 only): every product of the convolutions and
        the dense layers on bfloat16-rounded operands, summed in float32.
    """
    cdef _Net net
    cdef readonly int n
    cdef readonly bint direct
    cdef readonly int max_shares
    cdef readonly Py_ssize_t conv_work
    cdef readonly object dtype
    cdef readonly Py_ssize_t largest_gemm
    cdef readonly object precision
    cdef int typenum
    cdef list _buffers

    def __init__(self, list convs, list sizes, list dropout, int n, dtype, direct=None,
                 int max_shares=1, precision=None):
        cdef _Net *net = &self.net
        cdef int l, j
        cdef Py_ssize_t col_size = 1, z_size = 1, widest = 1, hidden = 1, K, P
        self.dtype = np.dtype(dtype)
        if self.dtype == np.float32:
            self.typenum = cnp.NPY_FLOAT32
        elif self.dtype == np.float64:
            self.typenum = cnp.NPY_FLOAT64
        else:
            raise TypeError(f"dtype: expected float32 or float64, got {self.dtype}")
        if not 1 <= len(convs) <= MAX_CONV:
            raise ValueError(f"convs: 1 to {MAX_CONV} convolutions, got {len(convs)}")
        if not 2 <= len(sizes) <= MAX_DENSE + 1 or len(dropout) != len(sizes) - 1:
            raise ValueError(f"sizes: 2 to {MAX_DENSE + 1} widths and one dropout ratio per "
                             f"dense layer, got {sizes} and {dropout}")
        if n < 1:
            raise ValueError(f"n: at least one image per batch, got {n}")
        self.n = net.n = n
        net.L = len(convs)
        net.D = len(sizes) - 1
        self._buffers = []
        self.largest_gemm = 0
        for l in range(net.L):
            (net.C[l], net.H[l], net.W[l], net.F[l], net.FH[l], net.FW[l], net.S[l],
             net.PAD[l], net.pool[l]) = convs[l]
            if min(net.C[l], net.H[l], net.W[l], net.F[l], net.FH[l], net.FW[l], net.S[l]) < 1 \
                    or net.PAD[l] < 0:
                raise ValueError(f"convs[{l}]: sizes and stride must be positive and pad "
                                 f">= 0, got {convs[l]}")
            net.OH[l] = (net.H[l] + 2 * net.PAD[l] - net.FH[l]) // net.S[l] + 1
            net.OW[l] = (net.W[l] + 2 * net.PAD[l] - net.FW[l]) // net.S[l] + 1
            if net.OH[l] < 1 or net.OW[l] < 1 or (net.pool[l] and min(net.OH[l], net.OW[l]) < 2):
                raise ValueError(f"convs[{l}]: a {net.FH[l]}x{net.FW[l]} filter does not fit "
                                 f"the padded {net.H[l]}x{net.W[l]} input")
            if l > 0:
                prev = (net.F[l - 1], net.OH[l - 1] // (1 + net.pool[l - 1]),
                        net.OW[l - 1] // (1 + net.pool[l - 1]))
                if prev != (net.C[l], net.H[l], net.W[l]):
                    raise ValueError(f"convs[{l}]: input {(net.C[l], net.H[l], net.W[l])} is "
                                     f"not the previous layer's output {prev}")
            K = net.C[l] * net.FH[l] * net.FW[l]
            P = net.OH[l] * net.OW[l]
            net.B[l] = max(1, min(n, COL_BUDGET // max(K * P, net.F[l] * P)))
            col_size = max(col_size, K * P * net.B[l])
            z_size = max(z_size, net.F[l] * P * net.B[l])
            net.insz[l] = net.C[l] * net.H[l] * net.W[l]
            net.outsz[l] = net.F[l] * (net.OH[l] // 2) * (net.OW[l] // 2) if net.pool[l] \
                else net.F[l] * P
            widest = max(widest, net.outsz[l], net.insz[l] if l > 0 else 1)
            self.largest_gemm = max(self.largest_gemm, net.B[l] * P * K * net.F[l])
            store = np.empty((n, net.outsz[l]), self.dtype)
            args = np.empty((n, net.outsz[l] if net.pool[l] else 1), np.uint8)
            self._buffers += [store, args]
            net.store[l] = cnp.PyArray_DATA(<cnp.ndarray> store)
            net.arg[l] = <uint8_t *> cnp.PyArray_DATA(<cnp.ndarray> args)
        if sizes[0] != net.outsz[net.L - 1]:
            raise ValueError(f"sizes[0]: the last convolution gives {net.outsz[net.L - 1]} "
                             f"features per image, got {sizes[0]}")
        for j in range(net.D + 1):
            net.sizes[j] = sizes[j]
            if net.sizes[j] < 1:
                raise ValueError(f"sizes: widths must be positive, got {sizes}")
        for j in range(net.D):
            ratio = float(dropout[j])
            if not 0 <= ratio < 1:
                raise ValueError(f"dropout: ratios in [0, 1), got {dropout}")
            net.dropout[j] = ratio > 0
            net.keep[j] = 1.0 - ratio
            a = np.empty((n, net.sizes[j + 1]), self.dtype)
            self._buffers.append(a)
            net.a[j] = cnp.PyArray_DATA(<cnp.ndarray> a)
            if j > 0:
                hidden = max(hidden, net.sizes[j])
            self.largest_gemm = max(self.largest_gemm, n * net.sizes[j] * net.sizes[j + 1])
        cdef list scratch = [np.empty(col_size, self.dtype), None,
                             np.empty(n * widest, self.dtype), np.empty(n * widest, self.dtype),
                             np.empty(n * hidden, self.dtype), np.empty(n * hidden, self.dtype),
                             np.empty(n, np.float64)]
        self._buffers += scratch
        net.col = cnp.PyArray_DATA(<cnp.ndarray> scratch[0])
        net.dA = cnp.PyArray_DATA(<cnp.ndarray> scratch[2])
        net.widest = widest
        net.dB = cnp.PyArray_DATA(<cnp.ndarray> scratch[3])
        net.s0 = cnp.PyArray_DATA(<cnp.ndarray> scratch[4])
        net.s1 = cnp.PyArray_DATA(<cnp.ndarray> scratch[5])
        net.row_loss = <double *> cnp.PyArray_DATA(<cnp.ndarray> scratch[6])
        block = 64 // self.dtype.itemsize  # FNN_CN_BLOCK: two 32-byte vectors
        can = all(net.S[l] == 1 and net.PAD[l] < min(net.FH[l], net.FW[l])
                  and (l == 0 or net.C[l] % block == 0)
                  for l in range(net.L))
        if direct and not can:
            raise ValueError("direct: the direct path needs stride 1, pad < filter size, and "
                             f"input channel counts (but the first's) that are multiples of "
                             f"{block}")
        self.direct = net.direct = can if direct is None else bool(direct)
        cdef Py_ssize_t xp_size = 1, dzp_size = 1, k_size = 0, f_size = 0
        cdef int sh, widest_f = 1
        cdef Py_ssize_t itemsize = self.dtype.itemsize
        for l in range(net.L):
            widest_f = max(widest_f, net.F[l])
        net.f64 = self.typenum == cnp.NPY_FLOAT64
        self.conv_work = 0  # the convolutions' multiply-adds, forward, for n images
        for l in range(net.L):
            self.conv_work += (n * <Py_ssize_t> net.OH[l] * net.OW[l] * net.F[l] * net.C[l]
                               * net.FH[l] * net.FW[l])
        self.max_shares = max(1, min(max_shares, MAX_SHARES, n)) if net.direct else 1
        if net.direct:
            self.largest_gemm = 0  # the convolutions call no BLAS: only the dense layers do
            for l in range(net.L):
                net.Hpad[l] = net.H[l] + 2 * net.PAD[l]
                net.Wpad[l] = net.W[l] + 2 * net.PAD[l]
                net.Hdz[l] = net.OH[l] + 2 * (net.FH[l] - 1 - net.PAD[l])
                net.Wdz[l] = net.OW[l] + 2 * (net.FW[l] - 1 - net.PAD[l])
                net.Fp[l] = -(-net.F[l] // block) * block
                K = net.C[l] * net.FH[l] * net.FW[l]
                xp_size = max(xp_size, net.Hpad[l] * net.Wpad[l] * net.C[l])
                dzp_size = max(dzp_size, net.Hdz[l] * net.Wdz[l] * net.Fp[l])
                z_size = max(z_size, net.OH[l] * net.OW[l] * net.Fp[l])
                k_size += K * net.Fp[l]
                f_size += net.F[l]
                # zeros: the packing never writes the rounded-up filters' weights
                packed = [np.zeros(K * net.Fp[l], self.dtype), np.zeros(K * net.Fp[l], self.dtype)]
                self._buffers += packed
                net.Wk[l] = cnp.PyArray_DATA(<cnp.ndarray> packed[0])
                net.Wf[l] = cnp.PyArray_DATA(<cnp.ndarray> packed[1])
            for j in range(net.D):
                self.largest_gemm = max(self.largest_gemm, n * net.sizes[j] * net.sizes[j + 1])
            for sh in range(self.max_shares):
                work = [np.empty(xp_size, self.dtype), np.empty(z_size, self.dtype),
                        np.empty(dzp_size, self.dtype), np.empty(k_size, self.dtype),
                        np.empty(f_size, np.float64)]
                self._buffers += work
                net.share[sh].net = net
                net.share[sh].xp = cnp.PyArray_DATA(<cnp.ndarray> work[0])
                net.share[sh].z = cnp.PyArray_DATA(<cnp.ndarray> work[1])
                net.share[sh].dzp = cnp.PyArray_DATA(<cnp.ndarray> work[2])
                K = 0
                P = 0
                for l in range(net.L):
                    net.share[sh].dWk[l] = (<char *> cnp.PyArray_DATA(<cnp.ndarray> work[3])
                                            + K * itemsize)
                    net.share[sh].dbacc[l] = <double *> cnp.PyArray_DATA(<cnp.ndarray> work[4]) + P
                    K += net.C[l] * net.FH[l] * net.FW[l] * net.Fp[l]
                    P += net.F[l]
        cdef list rest = [np.empty(z_size, self.dtype), np.empty(widest_f, np.float64)]
        self._buffers += rest
        net.z = cnp.PyArray_DATA(<cnp.ndarray> rest[0])
        net.dbacc = <double *> cnp.PyArray_DATA(<cnp.ndarray> rest[1])
        self._bf16_buffers(precision, col_size, z_size)

    cdef int _bf16_buffers(self, precision, Py_ssize_t col_size, Py_ssize_t z_size) except -1:
        """The rounded operands of a precision='bf16' Plan (none for None); ``col_size`` and
        ``z_size`` are the im2col path's column and output blocks."""
        cdef _Net *net = &self.net
        cdef int l, j
        cdef Py_ssize_t widest = 1
        self.precision = check_precision(precision, self.dtype)
        net.bf16 = self.precision is not None
        if not net.bf16:
            return 0
        # 4 bytes per element: enough for either representation of a gemm operand (_bf16.pxd)
        buffers = [np.empty(net.F[l] * net.C[l] * net.FH[l] * net.FW[l], np.float32)
                   for l in range(net.L)]
        buffers += [np.empty(net.sizes[j] * net.sizes[j + 1], np.float32) for j in range(net.D)]
        buffers += [np.empty(net.n * net.sizes[j], np.float32) for j in range(net.D)]
        for j in range(net.D):
            widest = max(widest, net.sizes[j + 1])
        buffers += [np.empty(net.n * widest, np.float32),
                    np.empty(1 if net.direct else col_size, np.float32),
                    np.empty(1 if net.direct else z_size, np.float32)]
        self._buffers += buffers
        for l in range(net.L):
            net.Wq[l] = cnp.PyArray_DATA(<cnp.ndarray> buffers[l])
        for j in range(net.D):
            net.Wdq[j] = cnp.PyArray_DATA(<cnp.ndarray> buffers[net.L + j])
            net.inq[j] = cnp.PyArray_DATA(<cnp.ndarray> buffers[net.L + net.D + j])
        net.dq = cnp.PyArray_DATA(<cnp.ndarray> buffers[net.L + 2 * net.D])
        net.colq = cnp.PyArray_DATA(<cnp.ndarray> buffers[net.L + 2 * net.D + 1])
        net.zq = cnp.PyArray_DATA(<cnp.ndarray> buffers[net.L + 2 * net.D + 2])
        return 0

    cdef int _take(self, list Wc, list bc, list Wd, list bd, x, list masks) except -1:
        """Check the arrays of one call and gather their pointers."""
        cdef _Net *net = &self.net
        cdef int l, j, t = self.typenum
        if len(Wc) != net.L or len(bc) != net.L:
            raise ValueError(f"Wc, bc: expected {net.L} convolution weights and biases, got "
                             f"{len(Wc)} and {len(bc)}")
        if len(Wd) != net.D or len(bd) != net.D:
            raise ValueError(f"Wd, bd: expected {net.D} dense weights and biases, got "
                             f"{len(Wd)} and {len(bd)}")
        net.x = _array_4d(x, "x", t, net.n, net.C[0], net.H[0], net.W[0], False)
        for l in range(net.L):
            net.Wc[l] = _array_4d(Wc[l], f"Wc[{l}]", t, net.F[l], net.C[l], net.FH[l],
                                  net.FW[l], False)
            net.bc[l] = flat_data(bc[l], f"bc[{l}]", t, net.F[l])
        for j in range(net.D):
            net.Wd[j] = _array_2d(Wd[j], f"Wd[{j}]", t, net.sizes[j], net.sizes[j + 1], False)
            net.bd[j] = flat_data(bd[j], f"bd[{j}]", t, net.sizes[j + 1])
            net.mask[j] = NULL
            if masks is not None and net.dropout[j]:
                net.mask[j] = _array_2d(masks[j], f"masks[{j}]", t, net.n, net.sizes[j + 1],
                                        False)
        return 0

    def forward(self,
                list Wc,     # IN  convolution weights (F, C, FH, FW)
                list bc,     # IN  convolution biases (F,)
                list Wd,     # IN  dense weights (sizes[j], sizes[j+1])
                list bd,     # IN  dense biases
                x,           # IN  (n, C, H, W) images
                out,         # OUT (n, classes) scores
                list masks=None,   # IN dropout masks (n, sizes[j+1]) of 0s and 1s, or None
                int shares=1):     # IN threads for the direct path (at most max_shares)
        """Scores of the network for ``x``; without ``masks``, dropout scales by its keep
        ratio (the book's ``train_flg=False``)."""
        self._take(Wc, bc, Wd, bd, x, masks)
        self.net.shares = max(1, min(shares, self.max_shares))
        self.net.logits = _array_2d(out, "out", self.typenum, self.n,
                                    self.net.sizes[self.net.D], True)
        with nogil:
            if self.typenum == cnp.NPY_FLOAT32:
                _forward[float](&self.net, <const float *> self.net.x, masks is not None)
            else:
                _forward[double](&self.net, <const double *> self.net.x, masks is not None)

    def gradient(self,
                 list Wc, list bc, list Wd, list bd,  # IN  as in forward
                 x,                  # IN  (n, C, H, W)
                 t,                  # IN  int64 labels (n,) or targets (n, classes) of x's dtype
                 bint labels,
                 list dWc, list dbc, list dWd, list dbd,  # OUT gradients, shaped as the weights
                 list masks=None,    # IN  dropout masks, or None
                 bint exact=False,
                 bint backward=True,
                 int shares=1):      # IN threads for the direct path (at most max_shares)
        """Mean loss of the batch and, with ``backward``, the gradients of every weight."""
        cdef _Net *net = &self.net
        cdef int l, j, typ = self.typenum
        cdef int k = net.sizes[net.D]
        cdef const void *tp
        cdef double result
        self._take(Wc, bc, Wd, bd, x, masks)
        net.shares = max(1, min(shares, self.max_shares))
        for j in range(net.D):
            if net.dropout[j] and net.mask[j] == NULL:
                raise ValueError("masks: the training step needs a dropout mask per dropout layer")
        if labels:
            dim(t, "t", 1, 0)
            tp = flat_data(t, "t", cnp.NPY_INT64, net.n)
        else:
            tp = _array_2d(t, "t", typ, net.n, k, False)
        if backward:
            if len(dWc) != net.L or len(dbc) != net.L or len(dWd) != net.D or len(dbd) != net.D:
                raise ValueError("dWc, dbc, dWd, dbd: one gradient per weight and bias")
            for l in range(net.L):
                net.dWc[l] = _array_4d(dWc[l], f"dWc[{l}]", typ, net.F[l], net.C[l],
                                       net.FH[l], net.FW[l], True)
                net.dbc[l] = flat_data(dbc[l], f"dbc[{l}]", typ, net.F[l], True)
            for j in range(net.D):
                net.dWd[j] = _array_2d(dWd[j], f"dWd[{j}]", typ, net.sizes[j],
                                       net.sizes[j + 1], True)
                net.dbd[j] = flat_data(dbd[j], f"dbd[{j}]", typ, net.sizes[j + 1], True)
        net.logits = net.a[net.D - 1]
        with nogil:
            if typ == cnp.NPY_FLOAT32:
                _forward[float](net, <const float *> net.x, True)
                result = _loss_grad[float](<float *> net.logits, tp, labels, net.row_loss,
                                           net.n, k, exact)
                if backward:
                    _backward[float](net, <const float *> net.x)
            else:
                _forward[double](net, <const double *> net.x, True)
                result = _loss_grad[double](<double *> net.logits, tp, labels, net.row_loss,
                                            net.n, k, exact)
                if backward:
                    _backward[double](net, <const double *> net.x)
        return result


cdef void *_array_4d(object a, str name, int typenum, Py_ssize_t d0, Py_ssize_t d1,
                     Py_ssize_t d2, Py_ssize_t d3, bint out) except NULL:
    if (dim(a, name, 4, 0) != d0 or dim(a, name, 4, 1) != d1 or dim(a, name, 4, 2) != d2
            or dim(a, name, 4, 3) != d3):
        raise ValueError(f"{name}: expected shape ({d0}, {d1}, {d2}, {d3}), got a "
                         f"{_describe(<cnp.ndarray> a)}")
    return flat_data(a, name, typenum, d0 * d1 * d2 * d3, out)


cdef void *_array_2d(object a, str name, int typenum, Py_ssize_t d0, Py_ssize_t d1,
                     bint out) except NULL:
    if dim(a, name, 2, 0) != d0 or dim(a, name, 2, 1) != d1:
        raise ValueError(f"{name}: expected shape ({d0}, {d1}), got a "
                         f"{_describe(<cnp.ndarray> a)}")
    return flat_data(a, name, typenum, d0 * d1, out)


# --- the nogil passes ------------------------------------------------------------------------

cdef inline void _im2col(const floating *x, _Net *net, int l, floating *col,
                         Py_ssize_t ld) noexcept nogil:
    """One image's column matrix, rows ld apart: the Convolution layer's kernel (_conv.pyx),
    over all OH output rows."""
    if floating is float:
        fnn_im2col_t_f32(x, net.C[l], net.H[l], net.W[l], net.FH[l], net.FW[l], net.S[l],
                         net.PAD[l], net.OW[l], 0, net.OH[l], col, ld)
    else:
        fnn_im2col_t_f64(x, net.C[l], net.H[l], net.W[l], net.FH[l], net.FW[l], net.S[l],
                         net.PAD[l], net.OW[l], 0, net.OH[l], col, ld)


cdef inline void _col2im(const floating *col, Py_ssize_t ld, _Net *net, int l,
                         floating *dx) noexcept nogil:
    """dx = the sum of every column entry into the pixel it came from (the Convolution
    layer's adjoint kernel, _conv.pyx, on a zeroed image)."""
    memset(dx, 0, net.insz[l] * sizeof(floating))
    if floating is float:
        fnn_col2im_t_add_f32(col, ld, net.C[l], net.H[l], net.W[l], net.FH[l], net.FW[l],
                             net.S[l], net.PAD[l], net.OW[l], 0, net.OH[l], dx)
    else:
        fnn_col2im_t_add_f64(col, ld, net.C[l], net.H[l], net.W[l], net.FH[l], net.FW[l],
                             net.S[l], net.PAD[l], net.OW[l], 0, net.OH[l], dx)


cdef void _conv_forward(_Net *net, int l, const floating *inp) noexcept nogil:
    cdef int F = net.F[l], K = net.C[l] * net.FH[l] * net.FW[l]
    cdef Py_ssize_t P = net.OH[l] * net.OW[l], ld
    cdef floating *col = <floating *> net.col
    cdef floating *z = <floating *> net.z
    cdef const floating *W = <const floating *> net.Wc[l]
    cdef const floating *b = <const floating *> net.bc[l]
    cdef floating *out = <floating *> net.store[l]
    cdef Py_ssize_t outsz = net.outsz[l], insz = net.insz[l]
    cdef int s = 0, q, bn
    while s < net.n:
        bn = min(net.B[l], net.n - s)
        ld = bn * P
        for q in range(bn):
            _im2col(inp + (s + q) * insz, net, l, col + q * P, ld)
        if floating is float and net.bf16:
            _bf16_conv_forward(net, l, col, ld, z)
        else:
            gemm(False, False, F, <int> ld, K, 1, W, K, col, <int> ld, 0, z, <int> ld)
        for q in range(bn):
            if floating is float:
                if net.pool[l]:
                    fnn_cn_pool2_bias_relu_f32(z + q * P, ld, b, F, net.OH[l], net.OW[l],
                                               out + (s + q) * outsz, net.arg[l] + (s + q) * outsz)
                else:
                    fnn_cn_bias_relu_f32(z + q * P, ld, b, F, P, out + (s + q) * outsz)
            else:
                if net.pool[l]:
                    fnn_cn_pool2_bias_relu_f64(z + q * P, ld, b, F, net.OH[l], net.OW[l],
                                               out + (s + q) * outsz, net.arg[l] + (s + q) * outsz)
                else:
                    fnn_cn_bias_relu_f64(z + q * P, ld, b, F, P, out + (s + q) * outsz)
        s += bn


cdef void _pad_input(_Net *net, _Share *w, int l, const floating *x, int img) noexcept nogil:
    """Image img of layer l's input (x itself for the first, NCHW; NHWC after), padded, into
    the share's xp."""
    cdef Py_ssize_t sh, sw, sc
    cdef const floating *src
    if l == 0:
        src = x + img * net.insz[0]
        sh, sw, sc = net.W[0], 1, net.H[0] * <Py_ssize_t> net.W[0]
    else:
        src = <const floating *> net.store[l - 1] + img * net.insz[l]
        sh, sw, sc = net.W[l] * <Py_ssize_t> net.C[l], net.C[l], 1
    if floating is float:
        fnn_cn_pad_nhwc_f32(src, sh, sw, sc, net.H[l], net.W[l], net.C[l], net.PAD[l],
                            net.PAD[l], <float *> w.xp)
        if net.bf16:  # the convolution's input operand (forward and dW)
            _bf16.round_values(<const float *> w.xp, net.Hpad[l] * <Py_ssize_t> net.Wpad[l]
                               * net.C[l], <float *> w.xp)
    else:
        fnn_cn_pad_nhwc_f64(src, sh, sw, sc, net.H[l], net.W[l], net.C[l], net.PAD[l],
                            net.PAD[l], <double *> w.xp)


cdef void _share_forward(_Share *w, const floating *x) noexcept nogil:
    """The convolutions of the share's images (the direct path)."""
    cdef _Net *net = <_Net *> w.net
    cdef int l, img, F, Fp, nchw
    cdef Py_ssize_t outsz
    cdef floating *out
    cdef floating *z = <floating *> w.z
    cdef const floating *b
    for l in range(net.L):
        F, Fp, outsz = net.F[l], net.Fp[l], net.outsz[l]
        nchw = l == net.L - 1  # the last store is the dense layers' input, in the book's order
        out = <floating *> net.store[l]
        b = <const floating *> net.bc[l]
        for img in range(w.img0, w.img1):
            _pad_input(net, w, l, x, img)
            if floating is float:
                fnn_cn_direct_conv_f32(<const float *> w.xp, net.Wpad[l], net.C[l], net.FH[l],
                                       net.FW[l], <const float *> net.Wk[l], Fp, net.OH[l],
                                       net.OW[l], z)
                if net.pool[l]:
                    fnn_cn_pool2_bias_relu_nhwc_f32(z, Fp, b, net.OH[l], net.OW[l], F,
                                                    out + img * outsz, net.arg[l] + img * outsz,
                                                    nchw)
                else:
                    fnn_cn_bias_relu_nhwc_f32(z, Fp, b, net.OH[l] * <Py_ssize_t> net.OW[l], F,
                                              out + img * outsz, nchw)
            else:
                fnn_cn_direct_conv_f64(<const double *> w.xp, net.Wpad[l], net.C[l], net.FH[l],
                                       net.FW[l], <const double *> net.Wk[l], Fp, net.OH[l],
                                       net.OW[l], z)
                if net.pool[l]:
                    fnn_cn_pool2_bias_relu_nhwc_f64(z, Fp, b, net.OH[l], net.OW[l], F,
                                                    out + img * outsz, net.arg[l] + img * outsz,
                                                    nchw)
                else:
                    fnn_cn_bias_relu_nhwc_f64(z, Fp, b, net.OH[l] * <Py_ssize_t> net.OW[l], F,
                                              out + img * outsz, nchw)


cdef void _share_backward(_Share *w, const floating *x) noexcept nogil:
    """The convolutions' gradients over the share's images (the direct path): from dB, the
    gradient of the last store (in its (c, h, w) order), layer by layer down, dW and db into
    the share's own accumulators and, but for the first layer, each layer's input gradient
    (NHWC) into the ping-pong buffers (image i in row i of net.widest elements, whatever the
    layer: the shares' images never overlap)."""
    cdef _Net *net = <_Net *> w.net
    cdef floating *dout = <floating *> net.dB
    cdef floating *dx = <floating *> net.dA
    cdef floating *tmp
    cdef floating *dzp = <floating *> w.dzp
    cdef floating *dz
    cdef floating *dWk
    cdef double *db
    cdef const floating *store
    cdef int l, img, F, Fp, C, FH, FW, OH, OW, Wd, nchw
    cdef Py_ssize_t outsz, insz, ldr, dzp_size, row = net.widest
    for l in range(net.L - 1, -1, -1):
        F, Fp, C, FH, FW = net.F[l], net.Fp[l], net.C[l], net.FH[l], net.FW[l]
        OH, OW, Wd = net.OH[l], net.OW[l], net.Wdz[l]
        outsz, insz = net.outsz[l], net.insz[l]
        nchw = l == net.L - 1
        if l > 0:
            # the input gradient convolves dz: zeros around it, the whole image cleared
            ldr = Wd * <Py_ssize_t> Fp
            dzp_size = net.Hdz[l] * ldr
            dz = dzp + ((FH - 1 - net.PAD[l]) * <Py_ssize_t> Wd + FW - 1 - net.PAD[l]) * Fp
        else:
            # dW alone reads dz: unpadded, and the epilogue writes every entry of it but for
            # the row and column a pooling of an odd side leaves out
            ldr = OW * <Py_ssize_t> Fp
            dzp_size = OH * ldr if net.pool[l] and (OH % 2 or OW % 2) else 0
            dz = dzp
        dWk = <floating *> w.dWk[l]
        db = w.dbacc[l]
        store = <const floating *> net.store[l]
        for img in range(w.img0, w.img1):
            _pad_input(net, w, l, x, img)
            if dzp_size:
                memset(dzp, 0, dzp_size * sizeof(floating))
            if floating is float:
                if net.pool[l]:
                    fnn_cn_unpool2_nhwc_f32(dout + img * row, net.arg[l] + img * outsz,
                                            store + img * outsz, OH, OW, F, dz, Fp, ldr, db,
                                            nchw)
                else:
                    fnn_cn_relu_mask_nhwc_f32(dout + img * row, store + img * outsz, OH, OW,
                                              F, dz, Fp, ldr, db, nchw)
                if net.bf16:  # the gradient operand of dW and dx (db took it unrounded)
                    _bf16.round_values(dzp, dzp_size if l > 0 else OH * ldr, dzp)
                fnn_cn_direct_dw_f32(<const float *> w.xp, net.Wpad[l], C, FH, FW, dz, ldr, Fp,
                                     OH, OW, dWk)
                if l > 0:
                    fnn_cn_direct_conv_f32(dzp, Wd, Fp, FH, FW, <const float *> net.Wf[l], C,
                                           net.H[l], net.W[l], dx + img * row)
            else:
                if net.pool[l]:
                    fnn_cn_unpool2_nhwc_f64(dout + img * row, net.arg[l] + img * outsz,
                                            store + img * outsz, OH, OW, F, dz, Fp, ldr, db,
                                            nchw)
                else:
                    fnn_cn_relu_mask_nhwc_f64(dout + img * row, store + img * outsz, OH, OW,
                                              F, dz, Fp, ldr, db, nchw)
                fnn_cn_direct_dw_f64(<const double *> w.xp, net.Wpad[l], C, FH, FW, dz, ldr, Fp,
                                     OH, OW, dWk)
                if l > 0:
                    fnn_cn_direct_conv_f64(dzp, Wd, Fp, FH, FW, <const double *> net.Wf[l], C,
                                           net.H[l], net.W[l], dx + img * row)
        tmp = dout
        dout = dx
        dx = tmp


cdef void *_share_main(void *arg) noexcept nogil:
    cdef _Share *w = <_Share *> arg
    cdef _Net *net = <_Net *> w.net
    if net.f64:
        if w.backward:
            _share_backward[double](w, <const double *> w.x)
        else:
            _share_forward[double](w, <const double *> w.x)
    else:
        if w.backward:
            _share_backward[float](w, <const float *> w.x)
        else:
            _share_forward[float](w, <const float *> w.x)
    return NULL


cdef void _run_shares(_Net *net, const void *x, int backward) noexcept nogil:
    """The direct path's convolutions, forward or backward, over net.shares threads: share s
    takes images [s n / shares, (s + 1) n / shares), the calling thread the first.  A thread
    that cannot be started leaves its share to the calling thread, so the results depend only
    on net.shares."""
    cdef pthread_t tid[MAX_SHARES]
    cdef int started[MAX_SHARES]
    cdef int s, T = net.shares
    for s in range(T):
        net.share[s].x = x
        net.share[s].backward = backward
        net.share[s].img0 = <int> ((<long long> s * net.n) // T)
        net.share[s].img1 = <int> ((<long long> (s + 1) * net.n) // T)
    for s in range(1, T):
        started[s] = pthread_create(&tid[s], NULL, _share_main, &net.share[s]) == 0
    _share_main(&net.share[0])
    for s in range(1, T):
        if started[s]:
            pthread_join(tid[s], NULL)
        else:
            _share_main(&net.share[s])


cdef void _pack_filters(_Net *net, int flip) noexcept nogil:
    cdef int l
    for l in range(1 if flip else 0, net.L):
        if net.f64:
            fnn_cn_pack_filters_f64(<const double *> net.Wc[l], net.F[l], net.C[l], net.FH[l],
                                    net.FW[l], flip, net.Fp[l],
                                    <double *> (net.Wf[l] if flip else net.Wk[l]))
        else:
            fnn_cn_pack_filters_f32(<const float *> net.Wc[l], net.F[l], net.C[l], net.FH[l],
                                    net.FW[l], flip, net.Fp[l],
                                    <float *> (net.Wf[l] if flip else net.Wk[l]))


cdef void _forward(_Net *net, const floating *x, bint train) noexcept nogil:
    cdef int l, j, n = net.n
    cdef const floating *inp = x
    cdef floating *a
    cdef Py_ssize_t size
    if floating is float:
        if net.bf16:
            _bf16_round_weights(net)
    if net.direct:
        _pack_filters(net, 0)
        _run_shares(net, x, 0)
    else:
        for l in range(net.L):
            _conv_forward(net, l, inp)
            inp = <const floating *> net.store[l]
    inp = <const floating *> net.store[net.L - 1]  # in the book's (c, h, w) order
    for j in range(net.D):
        a = <floating *> (net.logits if j == net.D - 1 else net.a[j])
        size = n * <Py_ssize_t> net.sizes[j + 1]
        if floating is float and net.bf16:
            _bf16_dense_forward(net, j, inp, a)
        else:
            gemm(False, False, n, net.sizes[j + 1], net.sizes[j], 1, inp, net.sizes[j],
                 <const floating *> net.Wd[j], net.sizes[j + 1], 0, a, net.sizes[j + 1])
        if floating is float:
            fnn_bias_activation_f32(a, <const float *> net.bd[j], n, net.sizes[j + 1],
                                    FNN_RELU if j < net.D - 1 else FNN_IDENTITY)
            if net.dropout[j]:
                if train:
                    fnn_cn_mul_f32(a, <const float *> net.mask[j], size)
                else:
                    fnn_cn_scale_f32(a, <float> net.keep[j], size)
        else:
            fnn_bias_activation_f64(a, <const double *> net.bd[j], n, net.sizes[j + 1],
                                    FNN_RELU if j < net.D - 1 else FNN_IDENTITY)
            if net.dropout[j]:
                if train:
                    fnn_cn_mul_f64(a, <const double *> net.mask[j], size)
                else:
                    fnn_cn_scale_f64(a, net.keep[j], size)
        inp = a


cdef double _loss_grad(floating *z, const void *t, bint labels, double *row_loss, int n, int k,
                       bint exact) noexcept nogil:
    if floating is float:
        if labels:
            fnn_softmax_xent_grad_labels_f32(z, <const int64_t *> t, z, row_loss, n, k, exact, 1)
        else:
            fnn_softmax_xent_grad_targets_f32(z, <const float *> t, z, row_loss, n, k, exact, 1)
    else:
        if labels:
            fnn_softmax_xent_grad_labels_f64(z, <const int64_t *> t, z, row_loss, n, k, exact, 1)
        else:
            fnn_softmax_xent_grad_targets_f64(z, <const double *> t, z, row_loss, n, k, exact, 1)
    return fnn_mean_row_loss(row_loss, n)


cdef void _backward(_Net *net, const floating *x) noexcept nogil:
    cdef int n = net.n, D = net.D, L = net.L, j, l, s, q, bn, F, K, ldx
    cdef floating *delta = <floating *> net.a[D - 1]  # d loss / d logits, from the loss pass
    cdef floating *nxt
    cdef const floating *hin
    cdef Py_ssize_t P, ld, outsz, insz
    if net.dropout[D - 1]:
        if floating is float:
            fnn_cn_mul_f32(delta, <const float *> net.mask[D - 1], n * <Py_ssize_t> net.sizes[D])
        else:
            fnn_cn_mul_f64(delta, <const double *> net.mask[D - 1], n * <Py_ssize_t> net.sizes[D])
    for j in range(D - 1, -1, -1):
        hin = <const floating *> (net.a[j - 1] if j > 0 else net.store[L - 1])
        if floating is float and net.bf16:  # hin is the forward's input: rounded there
            _bf16_dense_dw(net, j, delta, <float *> net.dWd[j])
        else:
            gemm(True, False, net.sizes[j], net.sizes[j + 1], n, 1, hin, net.sizes[j], delta,
                 net.sizes[j + 1], 0, <floating *> net.dWd[j], net.sizes[j + 1])
        if floating is float:
            fnn_column_sum_f32(delta, <float *> net.dbd[j], n, net.sizes[j + 1])
        else:
            fnn_column_sum_f64(delta, <double *> net.dbd[j], n, net.sizes[j + 1])
        # the input gradient of the dense layers: on the direct path into dB's rows of
        # net.widest, where the shares' convolutions take it (see _share_backward)
        nxt = <floating *> ((net.dB if net.direct else net.dA) if j == 0 else
                            (net.s1 if delta == <floating *> net.s0 else net.s0))
        ldx = <int> net.widest if j == 0 and net.direct else net.sizes[j]
        if floating is float and net.bf16:
            _bf16_dense_dx(net, j, nxt, ldx)
        else:
            gemm(False, True, n, net.sizes[j], net.sizes[j + 1], 1, delta, net.sizes[j + 1],
                 <const floating *> net.Wd[j], net.sizes[j + 1], 0, nxt, ldx)
        if j > 0:
            # ReLU and dropout at once: the stored output is relu(z) * mask, positive exactly
            # where both let the gradient through
            if floating is float:
                fnn_activation_backward_f32(nxt, <const float *> net.a[j - 1],
                                            n * <Py_ssize_t> net.sizes[j], FNN_RELU)
            else:
                fnn_activation_backward_f64(nxt, <const double *> net.a[j - 1],
                                            n * <Py_ssize_t> net.sizes[j], FNN_RELU)
        delta = nxt

    cdef floating *dcur = <floating *> net.dA
    cdef floating *dnext = <floating *> net.dB
    cdef floating *tmp
    cdef floating *col = <floating *> net.col
    cdef floating *z = <floating *> net.z
    cdef const floating *inp
    cdef const floating *store
    cdef const floating *W
    cdef floating *dW
    cdef floating *db
    if net.direct:
        _pack_filters(net, 1)
        for s in range(net.shares):
            for l in range(L):
                memset(net.share[s].dWk[l], 0,
                       net.C[l] * net.FH[l] * net.FW[l] * net.Fp[l] * sizeof(floating))
                memset(net.share[s].dbacc[l], 0, net.F[l] * sizeof(double))
        _run_shares(net, x, 1)
        # the shares' sums, added in share order
        for l in range(L):
            K = net.C[l] * net.FH[l] * net.FW[l]
            for s in range(1, net.shares):
                if floating is float:
                    fnn_cn_add_f32(<float *> net.share[0].dWk[l],
                                   <const float *> net.share[s].dWk[l], K * net.Fp[l])
                else:
                    fnn_cn_add_f64(<double *> net.share[0].dWk[l],
                                   <const double *> net.share[s].dWk[l], K * net.Fp[l])
                for q in range(net.F[l]):
                    net.share[0].dbacc[l][q] += net.share[s].dbacc[l][q]
            if floating is float:
                fnn_cn_unpack_filters_f32(<const float *> net.share[0].dWk[l], net.Fp[l],
                                          net.F[l], net.C[l], net.FH[l], net.FW[l],
                                          <float *> net.dWc[l])
                fnn_cn_db_store_f32(net.share[0].dbacc[l], net.F[l], <float *> net.dbc[l])
            else:
                fnn_cn_unpack_filters_f64(<const double *> net.share[0].dWk[l], net.Fp[l],
                                          net.F[l], net.C[l], net.FH[l], net.FW[l],
                                          <double *> net.dWc[l])
                fnn_cn_db_store_f64(net.share[0].dbacc[l], net.F[l], <double *> net.dbc[l])
        return
    for l in range(L - 1, -1, -1):
        F, K = net.F[l], net.C[l] * net.FH[l] * net.FW[l]
        P = net.OH[l] * net.OW[l]
        outsz, insz = net.outsz[l], net.insz[l]
        inp = x if l == 0 else <const floating *> net.store[l - 1]
        store = <const floating *> net.store[l]
        W = <const floating *> net.Wc[l]
        dW = <floating *> net.dWc[l]
        db = <floating *> net.dbc[l]
        memset(net.dbacc, 0, F * sizeof(double))
        s = 0
        while s < n:
            bn = min(net.B[l], n - s)
            ld = bn * P
            for q in range(bn):
                if floating is float:
                    if net.pool[l]:
                        fnn_cn_unpool2_f32(dcur + (s + q) * outsz, net.arg[l] + (s + q) * outsz,
                                           store + (s + q) * outsz, F, net.OH[l], net.OW[l],
                                           z + q * P, ld)
                    else:
                        fnn_cn_relu_mask_f32(dcur + (s + q) * outsz, store + (s + q) * outsz, F,
                                             P, z + q * P, ld)
                else:
                    if net.pool[l]:
                        fnn_cn_unpool2_f64(dcur + (s + q) * outsz, net.arg[l] + (s + q) * outsz,
                                           store + (s + q) * outsz, F, net.OH[l], net.OW[l],
                                           z + q * P, ld)
                    else:
                        fnn_cn_relu_mask_f64(dcur + (s + q) * outsz, store + (s + q) * outsz, F,
                                             P, z + q * P, ld)
                _im2col(inp + (s + q) * insz, net, l, col + q * P, ld)
            if floating is float:
                fnn_cn_row_sum_add_f32(z, ld, F, ld, net.dbacc)
            else:
                fnn_cn_row_sum_add_f64(z, ld, F, ld, net.dbacc)
            if floating is float and net.bf16:
                _bf16_conv_dw(net, l, z, col, ld, 0 if s == 0 else 1, dW)
            else:
                gemm(False, True, F, K, <int> ld, 1, z, <int> ld, col, <int> ld,
                     0 if s == 0 else 1, dW, K)
            if l == 0:
                s += bn
                continue  # the input's gradient: nobody needs it
            if floating is float and net.bf16:
                _bf16_conv_dcol(net, l, ld, col)
            else:
                gemm(True, False, K, <int> ld, F, 1, W, K, z, <int> ld, 0, col, <int> ld)
            for q in range(bn):
                _col2im(col + q * P, ld, net, l, dnext + (s + q) * insz)
            s += bn
        if floating is float:
            fnn_cn_db_store_f32(net.dbacc, F, db)
        else:
            fnn_cn_db_store_f64(net.dbacc, F, db)
        tmp = dcur
        dcur = dnext
        dnext = tmp


# --- precision="bf16": the rounded operands of each product (see the design) ------------------

cdef void _bf16_round_weights(_Net *net) noexcept nogil:
    """Every weight as a bf16 operand, once per call (the forward and backward passes share
    them).  The direct path's filters are rounded into float32 storage and net.Wc points at
    the rounded copies for the rest of the call, so that both packings (the forward's, the
    input gradient's flipped one) pack bfloat16 values; the im2col path's are gemm operands."""
    cdef int l, j
    cdef Py_ssize_t size
    for l in range(net.L):
        size = net.F[l] * <Py_ssize_t> net.C[l] * net.FH[l] * net.FW[l]
        if net.direct:
            _bf16.round_values(<const float *> net.Wc[l], size, <float *> net.Wq[l])
            net.Wc[l] = net.Wq[l]
        else:
            _bf16.round_operand(<const float *> net.Wc[l], size, net.Wq[l])
    for j in range(net.D):
        _bf16.round_operand(<const float *> net.Wd[j],
                            net.sizes[j] * <Py_ssize_t> net.sizes[j + 1], net.Wdq[j])


cdef void _bf16_conv_forward(_Net *net, int l, const float *col, Py_ssize_t ld,
                             float *z) noexcept nogil:
    """z (F, ld) = W (F, K) @ col (K, ld), the block's columns rounded (the im2col path)."""
    cdef int F = net.F[l], K = net.C[l] * net.FH[l] * net.FW[l]
    _bf16.round_operand(col, K * ld, net.colq)
    _bf16.gemm(False, False, F, <int> ld, K, 1, net.Wq[l], K, net.colq, <int> ld, 0, z, <int> ld)


cdef void _bf16_conv_dw(_Net *net, int l, const float *z, const float *col, Py_ssize_t ld,
                        float beta, float *dW) noexcept nogil:
    """dW (F, K) = dz (F, ld) @ col^T + beta dW, both rounded; the rounded dz stays in net.zq
    for the input gradient (the im2col path)."""
    cdef int F = net.F[l], K = net.C[l] * net.FH[l] * net.FW[l]
    _bf16.round_operand(z, F * ld, net.zq)
    _bf16.round_operand(col, K * ld, net.colq)
    _bf16.gemm(False, True, F, K, <int> ld, 1, net.zq, <int> ld, net.colq, <int> ld, beta, dW, K)


cdef void _bf16_conv_dcol(_Net *net, int l, Py_ssize_t ld, float *col) noexcept nogil:
    """The column gradient col (K, ld) = W^T @ dz on the rounded W and dz (the im2col path)."""
    cdef int F = net.F[l], K = net.C[l] * net.FH[l] * net.FW[l]
    _bf16.gemm(True, False, K, <int> ld, F, 1, net.Wq[l], K, net.zq, <int> ld, 0, col, <int> ld)


cdef void _bf16_dense_forward(_Net *net, int j, const float *inp, float *a) noexcept nogil:
    """a = inp @ Wd[j] on rounded operands; the rounded input stays in net.inq[j] for dW."""
    cdef int n = net.n, k = net.sizes[j], m = net.sizes[j + 1]
    _bf16.round_operand(inp, n * <Py_ssize_t> k, net.inq[j])
    _bf16.gemm(False, False, n, m, k, 1, net.inq[j], k, net.Wdq[j], m, 0, a, m)


cdef void _bf16_dense_dw(_Net *net, int j, const float *delta, float *dW) noexcept nogil:
    """dW = inp^T @ delta, delta rounded into net.dq (for the input gradient too)."""
    cdef int n = net.n, k = net.sizes[j], m = net.sizes[j + 1]
    _bf16.round_operand(delta, n * <Py_ssize_t> m, net.dq)
    _bf16.gemm(True, False, k, m, n, 1, net.inq[j], k, net.dq, m, 0, dW, m)


cdef void _bf16_dense_dx(_Net *net, int j, float *dx, int ldx) noexcept nogil:
    """dx (rows ldx apart) = delta @ Wd[j]^T on the rounded delta (net.dq) and weights."""
    cdef int n = net.n, k = net.sizes[j], m = net.sizes[j + 1]
    _bf16.gemm(False, True, n, k, m, 1, net.dq, m, net.Wdq[j], m, 0, dx, ldx)
