# Declarations of the convnet kernels in src_c/fnn_convnet.h (one body, _f32 and _f64).
from libc.stdint cimport uint8_t

cdef extern from "fnn_convnet.h" nogil:
    ctypedef Py_ssize_t fnn_index

    void fnn_cn_bias_relu_f32(const float *z, fnn_index ld, const float *b, int F, fnn_index P,
                              float *out)
    void fnn_cn_bias_relu_f64(const double *z, fnn_index ld, const double *b, int F,
                              fnn_index P, double *out)
    void fnn_cn_pool2_bias_relu_f32(const float *z, fnn_index ld, const float *b, int F, int OH,
                                    int OW, float *out, uint8_t *arg)
    void fnn_cn_pool2_bias_relu_f64(const double *z, fnn_index ld, const double *b, int F,
                                    int OH, int OW, double *out, uint8_t *arg)
    void fnn_cn_unpool2_f32(const float *dout, const uint8_t *arg, const float *out, int F,
                            int OH, int OW, float *dz, fnn_index ld)
    void fnn_cn_unpool2_f64(const double *dout, const uint8_t *arg, const double *out, int F,
                            int OH, int OW, double *dz, fnn_index ld)
    void fnn_cn_relu_mask_f32(const float *d, const float *a, int F, fnn_index P, float *dz,
                              fnn_index ld)
    void fnn_cn_relu_mask_f64(const double *d, const double *a, int F, fnn_index P, double *dz,
                              fnn_index ld)
    void fnn_cn_row_sum_add_f32(const float *dz, fnn_index ld, int F, fnn_index P, double *db)
    void fnn_cn_row_sum_add_f64(const double *dz, fnn_index ld, int F, fnn_index P,
                                double *db)
    void fnn_cn_mul_f32(float *z, const float *m, fnn_index size)
    void fnn_cn_mul_f64(double *z, const double *m, fnn_index size)
    void fnn_cn_scale_f32(float *z, float s, fnn_index size)
    void fnn_cn_scale_f64(double *z, double s, fnn_index size)
    void fnn_cn_add_f32(float *z, const float *a, fnn_index size)
    void fnn_cn_add_f64(double *z, const double *a, fnn_index size)

    void fnn_cn_direct_conv_f32(const float *xp, int Wp, int C, int FH, int FW, const float *Wk,
                               int F, int OH, int OW, float *z)
    void fnn_cn_direct_dw_f32(const float *xp, int Wp, int C, int FH, int FW, const float *dz,
                             fnn_index ldr, int F, int OH, int OW, float *dWk)
    void fnn_cn_pad_nhwc_f32(const float *x, fnn_index sh, fnn_index sw, fnn_index sc, int H,
                            int W, int C, int pad_h, int pad_w, float *xp)
    void fnn_cn_pool2_bias_relu_nhwc_f32(const float *z, int ldf, const float *b, int OH, int OW,
                                        int F, float *out, uint8_t *arg, int nchw)
    void fnn_cn_bias_relu_nhwc_f32(const float *z, int ldf, const float *b, fnn_index P, int F,
                                  float *out, int nchw)
    void fnn_cn_unpool2_nhwc_f32(const float *dout, const uint8_t *arg, const float *out, int OH,
                                int OW, int F, float *dz, int ldf, fnn_index ldr, double *db,
                                int nchw)
    void fnn_cn_relu_mask_nhwc_f32(const float *d, const float *a, int OH, int OW, int F, float *dz,
                                  int ldf, fnn_index ldr, double *db, int nchw)
    void fnn_cn_pack_filters_f32(const float *W, int F, int C, int FH, int FW, int flip, int ldf,
                                float *Wk)
    void fnn_cn_unpack_filters_f32(const float *Wk, int ldf, int F, int C, int FH, int FW, float *W)
    void fnn_cn_db_store_f32(const double *acc, int F, float *db)
    void fnn_cn_direct_conv_f64(const double *xp, int Wp, int C, int FH, int FW, const double *Wk,
                               int F, int OH, int OW, double *z)
    void fnn_cn_direct_dw_f64(const double *xp, int Wp, int C, int FH, int FW, const double *dz,
                             fnn_index ldr, int F, int OH, int OW, double *dWk)
    void fnn_cn_pad_nhwc_f64(const double *x, fnn_index sh, fnn_index sw, fnn_index sc, int H,
                            int W, int C, int pad_h, int pad_w, double *xp)
    void fnn_cn_pool2_bias_relu_nhwc_f64(const double *z, int ldf, const double *b, int OH, int OW,
                                        int F, double *out, uint8_t *arg, int nchw)
    void fnn_cn_bias_relu_nhwc_f64(const double *z, int ldf, const double *b, fnn_index P, int F,
                                  double *out, int nchw)
    void fnn_cn_unpool2_nhwc_f64(const double *dout, const uint8_t *arg, const double *out, int OH,
                                int OW, int F, double *dz, int ldf, fnn_index ldr, double *db,
                                int nchw)
    void fnn_cn_relu_mask_nhwc_f64(const double *d, const double *a, int OH, int OW, int F, double *dz,
                                  int ldf, fnn_index ldr, double *db, int nchw)
    void fnn_cn_pack_filters_f64(const double *W, int F, int C, int FH, int FW, int flip, int ldf,
                                double *Wk)
    void fnn_cn_unpack_filters_f64(const double *Wk, int ldf, int F, int C, int FH, int FW,
                                  double *W)
    void fnn_cn_db_store_f64(const double *acc, int F, double *db)
