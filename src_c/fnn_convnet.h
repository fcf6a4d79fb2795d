/*
 * The convolution kernels of the whole-network convnet steps (fastnn/_kernels/_convnet.pyx):
 * one image at a time, channels-first (C, H, W) as the book's NCHW batches store it.
 *
 * A column matrix holds one image's patches as K = C*FH*FW rows (in the book's (c, i, j)
 * order, the order of W.reshape(FN, -1)) of OH*OW pixels; rows are `ld` elements apart, so
 * that the columns of several images can sit side by side in one matrix and be multiplied
 * by one GEMM.  Max pooling is the book's 2x2 window of stride 2 (pad 0), fused with the
 * convolution's bias and ReLU: max_i relu(z_i + b) = relu(max_i z_i + b), so the epilogue
 * reads each convolution output once and writes only the pooled value and the index (0..3,
 * row-major in the window) of its maximum.  No allocation, no error paths.
 */
#ifndef FNN_CONVNET_H
#define FNN_CONVNET_H

#include "fnn_common.h"

#define FNN_DECLARE_CONVNET(REAL, SFX)                                                          \
    /* col[(c*FH + i)*FW + j, oh*OW + ow] = x[c, oh*stride - pad + i, ow*stride - pad + j]     \
       (0 outside the image); col rows ld apart */                                             \
    void fnn_cn_im2col_##SFX(const REAL *x, int C, int H, int W, int FH, int FW, int stride,   \
                             int pad, int OH, int OW, REAL *col, fnn_index ld);                \
    /* dx = the sum of every col entry into the pixel it was copied from (dx overwritten) */   \
    void fnn_cn_col2im_##SFX(const REAL *col, fnn_index ld, int C, int H, int W, int FH,       \
                             int FW, int stride, int pad, int OH, int OW, REAL *dx);            \
    /* out[f, p] = relu(z[f*ld + p] + b[f]), p < P */                                          \
    void fnn_cn_bias_relu_##SFX(const REAL *z, fnn_index ld, const REAL *b, int F,             \
                                fnn_index P, REAL *out);                                        \
    /* out[f, ph, pw] = relu(max of the 2x2 window of z + b[f]); arg = the window index */     \
    void fnn_cn_pool2_bias_relu_##SFX(const REAL *z, fnn_index ld, const REAL *b, int F,       \
                                      int OH, int OW, REAL *out, uint8_t *arg);                 \
    /* dz[f*ld + p] = dout routed to each window's maximum where out > 0, else 0 */            \
    void fnn_cn_unpool2_##SFX(const REAL *dout, const uint8_t *arg, const REAL *out, int F,    \
                              int OH, int OW, REAL *dz, fnn_index ld);                          \
    /* dz[f*ld + p] = a[f, p] > 0 ? d[f, p] : 0 (ReLU's backward from its output) */           \
    void fnn_cn_relu_mask_##SFX(const REAL *d, const REAL *a, int F, fnn_index P, REAL *dz,    \
                                fnn_index ld);                                                  \
    /* db[f] += sum_p dz[f*ld + p], p < P */                                                    \
    void fnn_cn_row_sum_add_##SFX(const REAL *dz, fnn_index ld, int F, fnn_index P, REAL *db); \
    /* z[i] *= m[i] (a dropout mask of 0s and 1s), or z[i] *= s */                             \
    void fnn_cn_mul_##SFX(REAL *z, const REAL *m, fnn_index size);                             \
    void fnn_cn_scale_##SFX(REAL *z, REAL s, fnn_index size);

FNN_DECLARE_CONVNET(float, f32)
FNN_DECLARE_CONVNET(double, f64)

#endif
