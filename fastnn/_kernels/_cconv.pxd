# Declarations of the convolution and pooling kernels in src_c/fnn_conv.h (one body per kernel,
# _f32 and _f64).
from libc.stdint cimport int32_t


cdef extern from "fnn_conv.h" nogil:
    ctypedef Py_ssize_t fnn_index

    void fnn_im2col_f32(const float *x, fnn_index N, fnn_index C, fnn_index H, fnn_index W,
                        fnn_index FH, fnn_index FW, fnn_index stride, fnn_index pad,
                        fnn_index OH, fnn_index OW, float *col)
    void fnn_im2col_f64(const double *x, fnn_index N, fnn_index C, fnn_index H, fnn_index W,
                        fnn_index FH, fnn_index FW, fnn_index stride, fnn_index pad,
                        fnn_index OH, fnn_index OW, double *col)
    void fnn_col2im_f32(const float *col, fnn_index N, fnn_index C, fnn_index H, fnn_index W,
                        fnn_index FH, fnn_index FW, fnn_index stride, fnn_index pad,
                        fnn_index OH, fnn_index OW, float *x)
    void fnn_col2im_f64(const double *col, fnn_index N, fnn_index C, fnn_index H, fnn_index W,
                        fnn_index FH, fnn_index FW, fnn_index stride, fnn_index pad,
                        fnn_index OH, fnn_index OW, double *x)
    void fnn_im2col_t_f32(const float *x, fnn_index C, fnn_index H, fnn_index W, fnn_index FH,
                          fnn_index FW, fnn_index stride, fnn_index pad, fnn_index OW,
                          fnn_index oh0, fnn_index oh1, float *colT, fnn_index ld)
    void fnn_im2col_t_f64(const double *x, fnn_index C, fnn_index H, fnn_index W, fnn_index FH,
                          fnn_index FW, fnn_index stride, fnn_index pad, fnn_index OW,
                          fnn_index oh0, fnn_index oh1, double *colT, fnn_index ld)
    void fnn_col2im_t_add_f32(const float *colT, fnn_index ld, fnn_index C, fnn_index H,
                              fnn_index W, fnn_index FH, fnn_index FW, fnn_index stride, fnn_index pad,
                              fnn_index OW, fnn_index oh0, fnn_index oh1, float *x)
    void fnn_col2im_t_add_f64(const double *colT, fnn_index ld, fnn_index C, fnn_index H,
                              fnn_index W, fnn_index FH, fnn_index FW, fnn_index stride, fnn_index pad,
                              fnn_index OW, fnn_index oh0, fnn_index oh1, double *x)
    void fnn_bias_act_f32(float *out, fnn_index FN, fnn_index ld, fnn_index cols,
                          const float *b, int relu)
    void fnn_bias_act_f64(double *out, fnn_index FN, fnn_index ld, fnn_index cols,
                          const double *b, int relu)
    void fnn_relu_grad_from_out_f32(const float *dout, const float *out, fnn_index size,
                                    float *dst)
    void fnn_relu_grad_from_out_f64(const double *dout, const double *out, fnn_index size,
                                    double *dst)
    void fnn_row_sums_add_f32(const float *a, fnn_index rows, fnn_index cols, float *sums)
    void fnn_row_sums_add_f64(const double *a, fnn_index rows, fnn_index cols, double *sums)
    void fnn_maxpool_forward_f32(const float *x, fnn_index NC, fnn_index H, fnn_index W,
                                 fnn_index PH, fnn_index PW, fnn_index stride, fnn_index pad,
                                 fnn_index OH, fnn_index OW, float *out, int32_t *argmax)
    void fnn_maxpool_forward_f64(const double *x, fnn_index NC, fnn_index H, fnn_index W,
                                 fnn_index PH, fnn_index PW, fnn_index stride, fnn_index pad,
                                 fnn_index OH, fnn_index OW, double *out, int32_t *argmax)
    void fnn_maxpool_backward_f32(const float *dout, const int32_t *argmax, fnn_index NC,
                                  fnn_index H, fnn_index W, fnn_index PH, fnn_index PW,
                                  fnn_index stride, fnn_index pad, fnn_index OH, fnn_index OW, float *dx)
    void fnn_maxpool_backward_f64(const double *dout, const int32_t *argmax, fnn_index NC,
                                  fnn_index H, fnn_index W, fnn_index PH, fnn_index PW,
                                  fnn_index stride, fnn_index pad, fnn_index OH, fnn_index OW, double *dx)
    void fnn_bias_act_copy_f32(const float *src, fnn_index ld_src, float *dst, fnn_index ld_dst,
                               fnn_index FN, fnn_index cols, const float *b, int relu)
    void fnn_gather_rows_f32(const float *src, fnn_index ld_src, const float *out, float *dst,
                             fnn_index ld_dst, fnn_index rows, fnn_index cols)
    void fnn_bias_act_copy_f64(const double *src, fnn_index ld_src, double *dst, fnn_index ld_dst,
                               fnn_index FN, fnn_index cols, const double *b, int relu)
    void fnn_gather_rows_f64(const double *src, fnn_index ld_src, const double *out, double *dst,
                             fnn_index ld_dst, fnn_index rows, fnn_index cols)
