/*
 * The convolution kernels of the whole-network convnet steps (fastnn/_kernels/_convnet.pyx),
 * one image at a time.  Two sets: the im2col + GEMM path's, channels-first (C, H, W) as the
 * book's NCHW batches store it (below), and the direct path's, channels-last (H, W, C), named
 * *_direct_* and *_nhwc (their comments give the layouts; the Design block of _convnet.pyx
 * says why each exists).
 *
 * A column matrix holds one image's patches as K = C*FH*FW rows (in the book's (c, i, j)
 * order, the order of W.reshape(FN, -1)) of OH*OW pixels; rows are `ld` elements apart, so
 * that the columns of several images can sit side by side in one matrix and be multiplied
 * by one GEMM (they are built and folded back by the Convolution layer's fnn_im2col_t and
 * fnn_col2im_t_add, fnn_conv.h).  Max pooling is the book's 2x2 window of stride 2 (pad 0), fused with the
 * convolution's bias and ReLU: max_i relu(z_i + b) = relu(max_i z_i + b), so the epilogue
 * reads each convolution output once and writes only the pooled value and the index (0..3,
 * row-major in the window) of its maximum.  No allocation, no error paths.
 */
#ifndef FNN_CONVNET_H
#define FNN_CONVNET_H

#include "fnn_common.h"

/* the filter block of the direct kernels: two 32-byte vectors of REAL */
#define FNN_CN_BLOCK(REAL) ((int)(64 / sizeof(REAL)))

#define FNN_DECLARE_CONVNET(REAL, SFX)                                                          \
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
    /* db[f] += sum_p dz[f*ld + p], p < P, summed in double */                                  \
    void fnn_cn_row_sum_add_##SFX(const REAL *dz, fnn_index ld, int F, fnn_index P,            \
                                  double *db);                                                 \
    /* z[i] *= m[i] (a dropout mask of 0s and 1s), or z[i] *= s */                             \
    void fnn_cn_mul_##SFX(REAL *z, const REAL *m, fnn_index size);                             \
    void fnn_cn_scale_##SFX(REAL *z, REAL s, fnn_index size);                                  \
    /* z[i] += a[i] */                                                                         \
    void fnn_cn_add_##SFX(REAL *z, const REAL *a, fnn_index size);                             \
                                                                                               \
    /* The direct path: NHWC images, filters packed as Wk[((i*FW + j)*C + c)*F + f]; F (and C  \
       for an input gradient) a multiple of FNN_CN_BLOCK(REAL) (two 32-byte vectors).  The     \
       epilogues and the packing take a layer's own count F and the stride ldf >= F of the     \
       packed filters and of z and dz per pixel: F rounded up to the block. */                 \
    /* z[(oh*OW + ow)*F + f] = sum_{i,j,c} xp[((oh+i)*Wp + ow+j)*C + c] Wk[((i*FW+j)*C+c)*F+f] \
       (stride 1, xp padded) */                                                                \
    void fnn_cn_direct_conv_##SFX(const REAL *xp, int Wp, int C, int FH, int FW,              \
                                  const REAL *Wk, int F, int OH, int OW, REAL *z);             \
    /* dWk[((i*FW+j)*C+c)*F + f] += sum_{oh,ow} xp[((oh+i)*Wp + ow+j)*C + c]                   \
       dz[oh*ldr + ow*F + f] */                                                                \
    void fnn_cn_direct_dw_##SFX(const REAL *xp, int Wp, int C, int FH, int FW, const REAL *dz, \
                                fnn_index ldr, int F, int OH, int OW, REAL *dWk);              \
    /* xp (H + 2 pad_h, W + 2 pad_w, C) = x[h*sh + w*sw + c*sc] padded by zeros */             \
    void fnn_cn_pad_nhwc_##SFX(const REAL *x, fnn_index sh, fnn_index sw, fnn_index sc, int H, \
                               int W, int C, int pad_h, int pad_w, REAL *xp);                  \
    /* out (OH/2, OW/2, F) = relu(max of the 2x2 window of z (OH, OW, ldf) + b), arg its     \
       index; with nchw, out and arg are (F, OH/2, OW/2), the book's order */                  \
    void fnn_cn_pool2_bias_relu_nhwc_##SFX(const REAL *z, int ldf, const REAL *b, int OH,      \
                                           int OW, int F, REAL *out, uint8_t *arg, int nchw);  \
    /* out (P, F) = relu(z (P, ldf) + b); with nchw, out is (F, P) */                          \
    void fnn_cn_bias_relu_nhwc_##SFX(const REAL *z, int ldf, const REAL *b, fnn_index P,       \
                                     int F, REAL *out, int nchw);                              \
    /* dz[oh*ldr + ow*ldf + f] = dout routed to its window's maximum where out > 0, else 0,    \
       for oh < OH/2*2, ow < OW/2*2, f < ldf (0 from F on); db[f] += the routed values; dout,  \
       arg and out laid out as the pooling's */                                                \
    void fnn_cn_unpool2_nhwc_##SFX(const REAL *dout, const uint8_t *arg, const REAL *out,      \
                                   int OH, int OW, int F, REAL *dz, int ldf, fnn_index ldr,    \
                                   double *db, int nchw);                                      \
    /* dz[oh*ldr + ow*ldf + f] = a > 0 ? d : 0 over (OH, OW, ldf) (0 from F on); db[f] += the  \
       values; d and a laid out as bias_relu's out */                                          \
    void fnn_cn_relu_mask_nhwc_##SFX(const REAL *d, const REAL *a, int OH, int OW, int F,      \
                                     REAL *dz, int ldf, fnn_index ldr, double *db, int nchw);  \
    /* W (F, C, FH, FW) -> Wk[k*ldf + f] (flip: the input gradient's filters,                  \
       Wk[((FH-1-i)*FW + FW-1-j)*ldf + f)*C + c]), and back (unflipped); Wk's entries of       \
       f >= F are left as they are */                                                          \
    void fnn_cn_pack_filters_##SFX(const REAL *W, int F, int C, int FH, int FW, int flip,      \
                                   int ldf, REAL *Wk);                                         \
    void fnn_cn_unpack_filters_##SFX(const REAL *Wk, int ldf, int F, int C, int FH, int FW,    \
                                     REAL *W);                                                 \
    /* db[f] = acc[f], rounded */                                                              \
    void fnn_cn_db_store_##SFX(const double *acc, int F, REAL *db);

FNN_DECLARE_CONVNET(float, f32)
FNN_DECLARE_CONVNET(double, f64)

#endif
