/*
 * Body of the kernels of fnn_convnet.h for a floating type REAL with suffix SFX, included
 * twice by fnn_convnet.c.
 */

/* The output columns ow whose input column ow*stride - pad + j lies inside [0, W):
   [*lo, *hi). */
FNN_INLINE void FNN(cn_valid_range)(int W, int j, int stride, int pad, int OW, int *lo, int *hi)
{
    const int first = pad - j;  /* ow*stride >= pad - j */
    int l = first > 0 ? (first + stride - 1) / stride : 0;
    const int last = W - 1 + pad - j;  /* ow*stride <= W - 1 + pad - j */
    int h = last >= 0 ? last / stride + 1 : 0;
    if (h > OW)
        h = OW;
    if (l > h)
        l = h;
    *lo = l;
    *hi = h;
}

FNN_MULTIVERSION void FNN(fnn_cn_im2col)(const REAL *restrict x, int C, int H, int W, int FH,
                                         int FW, int stride, int pad, int OH, int OW,
                                         REAL *restrict col, fnn_index ld)
{
    for (int c = 0; c < C; c++)
        for (int i = 0; i < FH; i++)
            for (int j = 0; j < FW; j++) {
                REAL *restrict row = col + ((fnn_index)(c * FH + i) * FW + j) * ld;
                int lo, hi;
                FNN(cn_valid_range)(W, j, stride, pad, OW, &lo, &hi);
                for (int oh = 0; oh < OH; oh++) {
                    REAL *restrict dst = row + (fnn_index)oh * OW;
                    const int ih = oh * stride - pad + i;
                    if (ih < 0 || ih >= H) {
                        memset(dst, 0, sizeof(REAL) * (size_t)OW);
                        continue;
                    }
                    const REAL *restrict src = x + ((fnn_index)c * H + ih) * W + (j - pad);
                    for (int ow = 0; ow < lo; ow++)
                        dst[ow] = 0;
                    if (stride == 1) {
                        /* a contiguous copy: the common case, vectorised */
                        for (int ow = lo; ow < hi; ow++)
                            dst[ow] = src[ow];
                    } else {
                        for (int ow = lo; ow < hi; ow++)
                            dst[ow] = src[(fnn_index)ow * stride];
                    }
                    for (int ow = hi; ow < OW; ow++)
                        dst[ow] = 0;
                }
            }
}

FNN_MULTIVERSION void FNN(fnn_cn_col2im)(const REAL *restrict col, fnn_index ld, int C, int H,
                                         int W, int FH, int FW, int stride, int pad, int OH,
                                         int OW, REAL *restrict dx)
{
    memset(dx, 0, sizeof(REAL) * (size_t)C * (size_t)H * (size_t)W);
    /* per pixel, the filter offsets (i, j) are summed in the book's order */
    for (int c = 0; c < C; c++)
        for (int i = 0; i < FH; i++)
            for (int j = 0; j < FW; j++) {
                const REAL *restrict row = col + ((fnn_index)(c * FH + i) * FW + j) * ld;
                int lo, hi;
                FNN(cn_valid_range)(W, j, stride, pad, OW, &lo, &hi);
                for (int oh = 0; oh < OH; oh++) {
                    const int ih = oh * stride - pad + i;
                    if (ih < 0 || ih >= H)
                        continue;
                    const REAL *restrict src = row + (fnn_index)oh * OW;
                    REAL *restrict dst = dx + ((fnn_index)c * H + ih) * W + (j - pad);
                    if (stride == 1) {
                        for (int ow = lo; ow < hi; ow++)
                            dst[ow] += src[ow];
                    } else {
                        for (int ow = lo; ow < hi; ow++)
                            dst[(fnn_index)ow * stride] += src[ow];
                    }
                }
            }
}

FNN_MULTIVERSION void FNN(fnn_cn_bias_relu)(const REAL *restrict z, fnn_index ld,
                                            const REAL *restrict b, int F, fnn_index P,
                                            REAL *restrict out)
{
    for (int f = 0; f < F; f++) {
        const REAL *restrict row = z + f * ld;
        REAL *restrict o = out + f * P;
        const REAL bf = b[f];
        for (fnn_index p = 0; p < P; p++) {
            const REAL y = row[p] + bf;
            o[p] = y <= 0 ? (REAL)0 : y;  /* NaN passes, as in the book's Relu */
        }
    }
}

FNN_MULTIVERSION void FNN(fnn_cn_pool2_bias_relu)(const REAL *restrict z, fnn_index ld,
                                                  const REAL *restrict b, int F, int OH,
                                                  int OW, REAL *restrict out,
                                                  uint8_t *restrict arg)
{
    const int PH = OH / 2, PW = OW / 2;
    for (int f = 0; f < F; f++) {
        const REAL *restrict row = z + f * ld;
        const REAL bf = b[f];
        REAL *restrict o = out + (fnn_index)f * PH * PW;
        uint8_t *restrict a = arg + (fnn_index)f * PH * PW;
        for (int ph = 0; ph < PH; ph++) {
            const REAL *restrict r0 = row + (fnn_index)(2 * ph) * OW;
            const REAL *restrict r1 = r0 + OW;
            for (int pw = 0; pw < PW; pw++) {
                /* the first maximum in the window's row-major order, as np.argmax */
                /* the first NaN wins too, as in np.max and np.argmax */
                REAL m = r0[2 * pw];
                uint8_t k = 0;
#define FNN_CN_TAKE(v, idx) if ((v) > m || ((v) != (v) && m == m)) { m = (v); k = (idx); }
                FNN_CN_TAKE(r0[2 * pw + 1], 1)
                FNN_CN_TAKE(r1[2 * pw], 2)
                FNN_CN_TAKE(r1[2 * pw + 1], 3)
#undef FNN_CN_TAKE
                const REAL y = m + bf;
                o[ph * PW + pw] = y <= 0 ? (REAL)0 : y;
                a[ph * PW + pw] = k;
            }
        }
    }
}

FNN_MULTIVERSION void FNN(fnn_cn_unpool2)(const REAL *restrict dout,
                                          const uint8_t *restrict arg,
                                          const REAL *restrict out, int F, int OH, int OW,
                                          REAL *restrict dz, fnn_index ld)
{
    const int PH = OH / 2, PW = OW / 2;
    for (int f = 0; f < F; f++) {
        REAL *restrict row = dz + f * ld;
        memset(row, 0, sizeof(REAL) * (size_t)OH * (size_t)OW);
        const fnn_index base = (fnn_index)f * PH * PW;
        for (int ph = 0; ph < PH; ph++)
            for (int pw = 0; pw < PW; pw++) {
                const fnn_index q = base + ph * PW + pw;
                const int k = arg[q];
                /* the pooled value is relu(max + b): where it is 0, ReLU let nothing through */
                row[(fnn_index)(2 * ph + (k >> 1)) * OW + 2 * pw + (k & 1)] =
                    out[q] > 0 ? dout[q] : (REAL)0;
            }
    }
}

FNN_MULTIVERSION void FNN(fnn_cn_relu_mask)(const REAL *restrict d, const REAL *restrict a,
                                            int F, fnn_index P, REAL *restrict dz, fnn_index ld)
{
    for (int f = 0; f < F; f++) {
        const REAL *restrict df = d + f * P;
        const REAL *restrict af = a + f * P;
        REAL *restrict o = dz + f * ld;
        for (fnn_index p = 0; p < P; p++)
            o[p] = af[p] > 0 ? df[p] : (REAL)0;
    }
}

FNN_MULTIVERSION void FNN(fnn_cn_row_sum_add)(const REAL *restrict dz, fnn_index ld, int F,
                                              fnn_index P, REAL *restrict db)
{
    for (int f = 0; f < F; f++) {
        const REAL *restrict row = dz + f * ld;
        double s = 0;  /* in double: a row holds a whole block of images' pixels */
        for (fnn_index p = 0; p < P; p++)
            s += row[p];
        db[f] += (REAL)s;
    }
}

FNN_MULTIVERSION void FNN(fnn_cn_mul)(REAL *restrict z, const REAL *restrict m, fnn_index size)
{
    for (fnn_index i = 0; i < size; i++)
        z[i] *= m[i];
}

void FNN(fnn_cn_scale)(REAL *z, REAL s, fnn_index size)
{
    for (fnn_index i = 0; i < size; i++)
        z[i] *= s;
}
