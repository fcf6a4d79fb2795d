/*
 * Convolution and max-pooling kernels (the book's common/layers.py Convolution and Pooling,
 * common/util.py im2col and col2im) as plain C: NCHW arrays, C-contiguous, no Python.h, no
 * allocation, no error paths.  The Python layer (fastnn/layers.py, fastnn/util.py through
 * fastnn/_validation.py) and the Cython module fastnn/_kernels/_conv.pyx have checked every
 * size: 1 <= stride, 0 <= pad, kernels that fit the padded input, OH = (H + 2 pad - FH) /
 * stride + 1 and OW likewise (floor), and arrays of exactly the sizes named here.  The GEMMs
 * between these passes are called from _conv.pyx (fastnn's one door to BLAS is Cython).
 *
 * Padding is by zeros, as the book's im2col pads (np.pad 'constant'), for pooling too.
 * Every kernel exists as _f32 and _f64, from one body in fnn_conv_impl.h.
 */
#ifndef FNN_CONV_H
#define FNN_CONV_H

#include <stdint.h>

#include "fnn_common.h"

#define FNN_DECLARE_CONV(REAL, SFX)                                                             \
    /* The book's im2col: col (N*OH*OW, C*FH*FW), row (n, oh, ow), column (c, ky, kx). */      \
    void fnn_im2col_##SFX(const REAL *x, fnn_index N, fnn_index C, fnn_index H, fnn_index W,   \
                          fnn_index FH, fnn_index FW, fnn_index stride, fnn_index pad,         \
                          fnn_index OH, fnn_index OW, REAL *col);                              \
    /* The book's col2im: x (N, C, H, W) = sum of col's entries over the pixels they came     \
       from (x is overwritten), added in the book's order (c, ky, kx, oh, ow). */             \
    void fnn_col2im_##SFX(const REAL *col, fnn_index N, fnn_index C, fnn_index H, fnn_index W, \
                          fnn_index FH, fnn_index FW, fnn_index stride, fnn_index pad,         \
                          fnn_index OH, fnn_index OW, REAL *x);                                \
    /* One sample's im2col, transposed, for the output rows [oh0, oh1): colT (C*FH*FW,        \
       (oh1 - oh0) * OW) in rows of stride ld, so that W (FN, C*FH*FW) @ colT is the NCHW      \
       output block. */                                                                        \
    void fnn_im2col_t_##SFX(const REAL *x, fnn_index C, fnn_index H, fnn_index W,              \
                            fnn_index FH, fnn_index FW, fnn_index stride, fnn_index pad,       \
                            fnn_index OW, fnn_index oh0, fnn_index oh1, REAL *colT,            \
                            fnn_index ld);                                                     \
    /* Its adjoint: x (C, H, W) += the entries of colT (rows of stride ld) at the pixels they  \
       came from. */                                                                           \
    void fnn_col2im_t_add_##SFX(const REAL *colT, fnn_index ld, fnn_index C, fnn_index H,      \
                                fnn_index W, fnn_index FH, fnn_index FW, fnn_index stride,     \
                                fnn_index pad, fnn_index OW, fnn_index oh0, fnn_index oh1,     \
                                REAL *x);                                                      \
    /* dst[f, j] = src[f, j] + b[f] (then ReLU if relu), rows of strides ld_src and ld_dst. */  \
    void fnn_bias_act_copy_##SFX(const REAL *src, fnn_index ld_src, REAL *dst,                 \
                                 fnn_index ld_dst, fnn_index FN, fnn_index cols,               \
                                 const REAL *b, int relu);                                     \
    /* dst[r, j] = src[r, j], or ReLU's backward (out <= 0 ? 0 : src) where out (of src's      \
       strides) is not NULL. */                                                                \
    void fnn_gather_rows_##SFX(const REAL *src, fnn_index ld_src, const REAL *out, REAL *dst,  \
                               fnn_index ld_dst, fnn_index rows, fnn_index cols);              \
    /* GEMM epilogue: out[f, j] += b[f] for j < cols (rows of stride ld), then ReLU if relu   \
       (the book's: 0 where the sum is <= 0, NaN kept). */                                    \
    void fnn_bias_act_##SFX(REAL *out, fnn_index FN, fnn_index ld, fnn_index cols,            \
                            const REAL *b, int relu);                                          \
    /* ReLU's backward from its output: dst = out <= 0 ? 0 : dout (size elements). */         \
    void fnn_relu_grad_from_out_##SFX(const REAL *dout, const REAL *out, fnn_index size,      \
                                      REAL *dst);                                              \
    /* sums[r] += a[r, 0] + ... + a[r, cols - 1] for r < rows (a C-contiguous). */             \
    void fnn_row_sums_add_##SFX(const REAL *a, fnn_index rows, fnn_index cols, REAL *sums);   \
    /* Max pooling of NC planes (H, W) into (OH, OW), windows (PH, PW): out the maximum,      \
       argmax its index ky * PW + kx in the window (the book's np.argmax over the window in   \
       (ky, kx) order: the first maximum, or the first NaN; padding counts as zeros). */      \
    void fnn_maxpool_forward_##SFX(const REAL *x, fnn_index NC, fnn_index H, fnn_index W,      \
                                   fnn_index PH, fnn_index PW, fnn_index stride,               \
                                   fnn_index pad, fnn_index OH, fnn_index OW, REAL *out,       \
                                   int32_t *argmax);                                           \
    /* Its backward: dx (NC, H, W) = 0, then dout added at each window's argmax (a gradient   \
       routed into the padding is dropped, as the book's col2im crops it). */                 \
    void fnn_maxpool_backward_##SFX(const REAL *dout, const int32_t *argmax, fnn_index NC,     \
                                    fnn_index H, fnn_index W, fnn_index PH, fnn_index PW,      \
                                    fnn_index stride,                                          \
                                    fnn_index pad, fnn_index OH, fnn_index OW, REAL *dx);

FNN_DECLARE_CONV(float, f32)
FNN_DECLARE_CONV(double, f64)

#endif
