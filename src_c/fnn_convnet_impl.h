/*
 * Body of the kernels of fnn_convnet.h for a floating type REAL with suffix SFX, included
 * twice by fnn_convnet.c.
 */

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
                                              fnn_index P, double *restrict db)
{
    for (int f = 0; f < F; f++) {
        const REAL *restrict row = dz + f * ld;
        /* in double, as the twin's float64: a row holds a whole block of images' pixels;
           four partial sums, which the compiler keeps in one vector */
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        fnn_index p = 0;
        for (; p + 4 <= P; p += 4) {
            s0 += row[p];
            s1 += row[p + 1];
            s2 += row[p + 2];
            s3 += row[p + 3];
        }
        for (; p < P; p++)
            s0 += row[p];
        db[f] += (s0 + s1) + (s2 + s3);
    }
}

FNN_MULTIVERSION void FNN(fnn_cn_mul)(REAL *restrict z, const REAL *restrict m, fnn_index size)
{
    for (fnn_index i = 0; i < size; i++)
        z[i] *= m[i];
}

FNN_MULTIVERSION void FNN(fnn_cn_add)(REAL *restrict z, const REAL *restrict a, fnn_index size)
{
    for (fnn_index i = 0; i < size; i++)
        z[i] += a[i];
}

void FNN(fnn_cn_scale)(REAL *z, REAL s, fnn_index size)
{
    for (fnn_index i = 0; i < size; i++)
        z[i] *= s;
}

/* ---- the direct path: channels-last (NHWC) images, no column matrix ------------------------
 *
 * An image is (H, W, C), channels innermost; a padded image xp is (H + 2 pad, W + 2 pad, C)
 * with zeros around.  Filters are packed as Wk[k*F + f], k = (i*FW + j)*C + c, so that the F
 * weights of one tap are contiguous: the kernels keep a tile of FNN_CN_PT pixels x 2 vectors of
 * filters (12 accumulators in float32 and float64 alike) in registers and, per tap, load 2
 * weight vectors and broadcast one input value per pixel, 12 fused multiply-adds for 8 loads.
 * The kernels' F (and, for the input gradient, C) is a multiple of the 2 vectors: a layer of
 * other filter counts stores its packed filters, its outputs z and its gradients dz with ldf,
 * its count rounded up, filters apart, the extra filters zero (the Plan allocates them so). */

#define FNN_CN_VL ((int)(32 / sizeof(REAL)))
#define FNN_CN_PT 6
typedef REAL FNN(cn_vec) __attribute__((vector_size(32)));
/* the integer lanes of a vector of REAL: comparison results and blend masks */
typedef FNN_CN_IREAL FNN(cn_ivec) __attribute__((vector_size(32)));
typedef REAL FNN(cn_vecu) __attribute__((vector_size(32), aligned(sizeof(REAL)), may_alias));
#define FNN_CN_LOAD(p) (*(const FNN(cn_vecu) *)(p))
#define FNN_CN_STORE(p, v) (*(FNN(cn_vecu) *)(p) = (v))

/* the fused multiply-adds of the tiles: a * b + c in one rounding (C11 mode contracts none) */
#pragma GCC push_options
#pragma GCC optimize("fp-contract=fast")

FNN_INLINE void FNN(cn_conv_tile)(const REAL *restrict xp, int Wp, int C, int FH, int FW,
                                  const REAL *restrict Wk, int F, int f0, fnn_index p0, int OW,
                                  REAL *restrict z, const int np)
{
    FNN(cn_vec) a0[FNN_CN_PT], a1[FNN_CN_PT];
    fnn_index base[FNN_CN_PT];
    for (int t = 0; t < np; t++) {
        const fnn_index p = p0 + t, oh = p / OW, ow = p - oh * OW;
        base[t] = (oh * Wp + ow) * C;
        a0[t] = (FNN(cn_vec)){0};
        a1[t] = (FNN(cn_vec)){0};
    }
    for (int i = 0; i < FH; i++)
        for (int j = 0; j < FW; j++) {
            const REAL *restrict xr = xp + ((fnn_index)i * Wp + j) * C;
            const REAL *restrict wr = Wk + (fnn_index)(i * FW + j) * C * F + f0;
            for (int c = 0; c < C; c++) {
                const FNN(cn_vec) w0 = FNN_CN_LOAD(wr + (fnn_index)c * F);
                const FNN(cn_vec) w1 = FNN_CN_LOAD(wr + (fnn_index)c * F + FNN_CN_VL);
                for (int t = 0; t < np; t++) {
                    const REAL xv = xr[base[t] + c];
                    a0[t] += w0 * xv;
                    a1[t] += w1 * xv;
                }
            }
        }
    for (int t = 0; t < np; t++) {
        REAL *restrict zo = z + (p0 + t) * F + f0;
        FNN_CN_STORE(zo, a0[t]);
        FNN_CN_STORE(zo + FNN_CN_VL, a1[t]);
    }
}

FNN_MULTIVERSION void FNN(fnn_cn_direct_conv)(const REAL *restrict xp, int Wp, int C, int FH,
                                              int FW, const REAL *restrict Wk, int F, int OH,
                                              int OW, REAL *restrict z)
{
    const fnn_index P = (fnn_index)OH * OW;
    for (int f0 = 0; f0 < F; f0 += 2 * FNN_CN_VL)
        for (fnn_index p0 = 0; p0 < P; p0 += FNN_CN_PT) {
            /* constant tile sizes, so that the accumulators stay in registers */
            switch (P - p0 < FNN_CN_PT ? (int)(P - p0) : FNN_CN_PT) {
            case 6: FNN(cn_conv_tile)(xp, Wp, C, FH, FW, Wk, F, f0, p0, OW, z, 6); break;
            case 5: FNN(cn_conv_tile)(xp, Wp, C, FH, FW, Wk, F, f0, p0, OW, z, 5); break;
            case 4: FNN(cn_conv_tile)(xp, Wp, C, FH, FW, Wk, F, f0, p0, OW, z, 4); break;
            case 3: FNN(cn_conv_tile)(xp, Wp, C, FH, FW, Wk, F, f0, p0, OW, z, 3); break;
            case 2: FNN(cn_conv_tile)(xp, Wp, C, FH, FW, Wk, F, f0, p0, OW, z, 2); break;
            default: FNN(cn_conv_tile)(xp, Wp, C, FH, FW, Wk, F, f0, p0, OW, z, 1); break;
            }
        }
}

FNN_INLINE void FNN(cn_dw_tile)(const REAL *restrict xp, int Wp, int C, int FW,
                                const REAL *restrict dz, fnn_index ldr, int F, int f0,
                                int k0, int OH, int OW, REAL *restrict dWk, const int nk)
{
    FNN(cn_vec) a0[FNN_CN_PT], a1[FNN_CN_PT];
    fnn_index off[FNN_CN_PT];
    for (int t = 0; t < nk; t++) {
        const int k = k0 + t, c = k % C, ij = k / C, i = ij / FW, j = ij - i * FW;
        off[t] = ((fnn_index)i * Wp + j) * C + c;
        a0[t] = (FNN(cn_vec)){0};
        a1[t] = (FNN(cn_vec)){0};
    }
    for (int oh = 0; oh < OH; oh++) {
        const REAL *restrict xrow = xp + (fnn_index)oh * Wp * C;
        const REAL *restrict drow = dz + (fnn_index)oh * ldr + f0;
        for (int ow = 0; ow < OW; ow++) {
            const FNN(cn_vec) d0 = FNN_CN_LOAD(drow + (fnn_index)ow * F);
            const FNN(cn_vec) d1 = FNN_CN_LOAD(drow + (fnn_index)ow * F + FNN_CN_VL);
            const REAL *restrict xo = xrow + (fnn_index)ow * C;
            for (int t = 0; t < nk; t++) {
                const REAL xv = xo[off[t]];
                a0[t] += d0 * xv;
                a1[t] += d1 * xv;
            }
        }
    }
    for (int t = 0; t < nk; t++) {
        REAL *restrict o = dWk + (fnn_index)(k0 + t) * F + f0;
        FNN_CN_STORE(o, FNN_CN_LOAD(o) + a0[t]);
        FNN_CN_STORE(o + FNN_CN_VL, FNN_CN_LOAD(o + FNN_CN_VL) + a1[t]);
    }
}

FNN_MULTIVERSION void FNN(fnn_cn_direct_dw)(const REAL *restrict xp, int Wp, int C, int FH,
                                            int FW, const REAL *restrict dz, fnn_index ldr,
                                            int F, int OH, int OW, REAL *restrict dWk)
{
    const int K = C * FH * FW;
    for (int f0 = 0; f0 < F; f0 += 2 * FNN_CN_VL)
        for (int k0 = 0; k0 < K; k0 += FNN_CN_PT) {
            switch (K - k0 < FNN_CN_PT ? K - k0 : FNN_CN_PT) {
            case 6: FNN(cn_dw_tile)(xp, Wp, C, FW, dz, ldr, F, f0, k0, OH, OW, dWk, 6); break;
            case 5: FNN(cn_dw_tile)(xp, Wp, C, FW, dz, ldr, F, f0, k0, OH, OW, dWk, 5); break;
            case 4: FNN(cn_dw_tile)(xp, Wp, C, FW, dz, ldr, F, f0, k0, OH, OW, dWk, 4); break;
            case 3: FNN(cn_dw_tile)(xp, Wp, C, FW, dz, ldr, F, f0, k0, OH, OW, dWk, 3); break;
            case 2: FNN(cn_dw_tile)(xp, Wp, C, FW, dz, ldr, F, f0, k0, OH, OW, dWk, 2); break;
            default: FNN(cn_dw_tile)(xp, Wp, C, FW, dz, ldr, F, f0, k0, OH, OW, dWk, 1); break;
            }
        }
}

#pragma GCC pop_options
#undef FNN_CN_PT

FNN_MULTIVERSION void FNN(fnn_cn_pad_nhwc)(const REAL *restrict x, fnn_index sh, fnn_index sw,
                                           fnn_index sc, int H, int W, int C, int pad_h,
                                           int pad_w, REAL *restrict xp)
{
    const int Wp = W + 2 * pad_w;
    const fnn_index row = (fnn_index)Wp * C;
    memset(xp, 0, sizeof(REAL) * (size_t)(pad_h * row));
    for (int h = 0; h < H; h++) {
        REAL *restrict r = xp + (fnn_index)(h + pad_h) * row;
        memset(r, 0, sizeof(REAL) * (size_t)pad_w * (size_t)C);
        for (int w = 0; w < W; w++) {
            const REAL *restrict s = x + h * sh + w * sw;
            REAL *restrict d = r + (fnn_index)(w + pad_w) * C;
            for (int c = 0; c < C; c++)
                d[c] = s[c * sc];
        }
        memset(r + (fnn_index)(W + pad_w) * C, 0, sizeof(REAL) * (size_t)pad_w * (size_t)C);
    }
    memset(xp + (fnn_index)(H + pad_h) * row, 0, sizeof(REAL) * (size_t)(pad_h * row));
}

/* m, k = v, idx on the lanes where v beats the window's maximum m so far (the first maximum
   in the window's row-major order, as np.argmax; the first NaN wins too, as in np.max and
   np.argmax); GCC's vector comparisons give all-ones lanes where true.  A macro, as
   FNN_CN_RELU below: vector arguments would change the ABI of the baseline build. */
#define FNN_CN_TAKE_V(v, idx, m, k) {                                                       \
        const FNN(cn_vec) v_ = (v);                                                         \
        const FNN(cn_ivec) t_ = (v_ > (m)) | ((v_ != v_) & ((m) == (m)));                   \
        (m) = (FNN(cn_vec))(((FNN(cn_ivec))v_ & t_) | ((FNN(cn_ivec))(m) & ~t_));           \
        (k) = ((FNN_CN_IREAL)(idx) & t_) | ((k) & ~t_);                                     \
    }

/* relu(y) of a vector, NaN passing as in the book's Relu: zero where y <= 0 */
#define FNN_CN_RELU(y) ((FNN(cn_vec))((FNN(cn_ivec))(y) & ~((y) <= 0)))

FNN_MULTIVERSION void FNN(fnn_cn_pool2_bias_relu_nhwc)(const REAL *restrict z, int ldf,
                                                       const REAL *restrict b, int OH, int OW,
                                                       int F, REAL *restrict out,
                                                       uint8_t *restrict arg, int nchw)
{
    const int PH = OH / 2, PW = OW / 2;
    /* filter f of pooled pixel q at out[q * ps + f * fs] */
    const fnn_index fs = nchw ? (fnn_index)PH * PW : 1, ps = nchw ? 1 : F;
    for (int ph = 0; ph < PH; ph++)
        for (int pw = 0; pw < PW; pw++) {
            const REAL *restrict r0 = z + ((fnn_index)(2 * ph) * OW + 2 * pw) * ldf;
            const REAL *restrict r1 = r0 + (fnn_index)OW * ldf;
            REAL *restrict o = out + ((fnn_index)ph * PW + pw) * ps;
            uint8_t *restrict a = arg + ((fnn_index)ph * PW + pw) * ps;
            /* by whole vectors (the loop's mix of REAL and byte lanes defeats the
               auto-vectoriser for F below 32), then lane by lane */
            int f = 0;
            for (; f + FNN_CN_VL <= F; f += FNN_CN_VL) {
                FNN(cn_vec) m = FNN_CN_LOAD(r0 + f);
                FNN(cn_ivec) k = {0};
                FNN_CN_TAKE_V(FNN_CN_LOAD(r0 + ldf + f), 1, m, k)
                FNN_CN_TAKE_V(FNN_CN_LOAD(r1 + f), 2, m, k)
                FNN_CN_TAKE_V(FNN_CN_LOAD(r1 + ldf + f), 3, m, k)
                const FNN(cn_vec) y = m + FNN_CN_LOAD(b + f);
                const FNN(cn_vec) r = FNN_CN_RELU(y);
                if (fs == 1)
                    FNN_CN_STORE(o + f, r);
                for (int t = 0; t < FNN_CN_VL; t++) {
                    if (fs != 1)
                        o[(f + t) * fs] = r[t];
                    a[(f + t) * fs] = (uint8_t)k[t];
                }
            }
            for (; f < F; f++) {
                REAL m = r0[f];
                int k = 0;
#define FNN_CN_TAKE(v, idx) { const REAL v_ = (v); const int t_ = v_ > m || (v_ != v_ && m == m); \
                              m = t_ ? v_ : m; k = t_ ? (idx) : k; }
                FNN_CN_TAKE(r0[ldf + f], 1)
                FNN_CN_TAKE(r1[f], 2)
                FNN_CN_TAKE(r1[ldf + f], 3)
#undef FNN_CN_TAKE
                const REAL y = m + b[f];
                o[f * fs] = y <= 0 ? (REAL)0 : y;
                a[f * fs] = (uint8_t)k;
            }
        }
}

FNN_MULTIVERSION void FNN(fnn_cn_bias_relu_nhwc)(const REAL *restrict z, int ldf,
                                                 const REAL *restrict b, fnn_index P, int F,
                                                 REAL *restrict out, int nchw)
{
    const fnn_index fs = nchw ? P : 1, ps = nchw ? 1 : F;
    for (fnn_index p = 0; p < P; p++)
        for (int f = 0; f < F; f++) {
            const REAL y = z[p * ldf + f] + b[f];
            out[p * ps + f * fs] = y <= 0 ? (REAL)0 : y;  /* NaN passes, as the book's Relu */
        }
}

FNN_MULTIVERSION void FNN(fnn_cn_unpool2_nhwc)(const REAL *restrict dout,
                                               const uint8_t *restrict arg,
                                               const REAL *restrict out, int OH, int OW, int F,
                                               REAL *restrict dz, int ldf, fnn_index ldr,
                                               double *restrict db, int nchw)
{
    const int PH = OH / 2, PW = OW / 2;
    const fnn_index fs = nchw ? (fnn_index)PH * PW : 1, ps = nchw ? 1 : F;
    const FNN(cn_vec) zero = {0};
    for (int ph = 0; ph < PH; ph++)
        for (int pw = 0; pw < PW; pw++) {
            const fnn_index q = ((fnn_index)ph * PW + pw) * ps;
            REAL *restrict d0 = dz + (fnn_index)(2 * ph) * ldr + (fnn_index)(2 * pw) * ldf;
            REAL *restrict d1 = d0 + ldr;
            /* by whole vectors, as the pooling above, then lane by lane */
            int f = 0;
            for (; f + FNN_CN_VL <= F; f += FNN_CN_VL) {
                FNN(cn_vec) go, oo;
                FNN(cn_ivec) k = {0};
                if (fs == 1) {
                    go = FNN_CN_LOAD(dout + q + f);
                    oo = FNN_CN_LOAD(out + q + f);
                }
                for (int t = 0; t < FNN_CN_VL; t++) {
                    if (fs != 1) {
                        go[t] = dout[q + (f + t) * fs];
                        oo[t] = out[q + (f + t) * fs];
                    }
                    k[t] = arg[q + (f + t) * fs];
                }
                /* the pooled value is relu(max + b): where it is 0, ReLU let nothing through */
                const FNN(cn_vec) g = (FNN(cn_vec))((FNN(cn_ivec))go & (oo > zero));
                FNN_CN_STORE(d0 + f, (FNN(cn_vec))((FNN(cn_ivec))g & (k == 0)));
                FNN_CN_STORE(d0 + ldf + f, (FNN(cn_vec))((FNN(cn_ivec))g & (k == 1)));
                FNN_CN_STORE(d1 + f, (FNN(cn_vec))((FNN(cn_ivec))g & (k == 2)));
                FNN_CN_STORE(d1 + ldf + f, (FNN(cn_vec))((FNN(cn_ivec))g & (k == 3)));
                for (int t = 0; t < FNN_CN_VL; t++)
                    db[f + t] += g[t];
            }
            for (; f < F; f++) {
                const REAL g = out[q + f * fs] > 0 ? dout[q + f * fs] : (REAL)0;
                const int k = arg[q + f * fs];
                d0[f] = k == 0 ? g : (REAL)0;
                d0[ldf + f] = k == 1 ? g : (REAL)0;
                d1[f] = k == 2 ? g : (REAL)0;
                d1[ldf + f] = k == 3 ? g : (REAL)0;
                db[f] += g;
            }
            for (; f < ldf; f++)  /* the rounded-up filters' lanes */
                d0[f] = d0[ldf + f] = d1[f] = d1[ldf + f] = 0;
        }
}

FNN_MULTIVERSION void FNN(fnn_cn_relu_mask_nhwc)(const REAL *restrict d, const REAL *restrict a,
                                                 int OH, int OW, int F, REAL *restrict dz,
                                                 int ldf, fnn_index ldr, double *restrict db,
                                                 int nchw)
{
    const fnn_index P = (fnn_index)OH * OW, fs = nchw ? P : 1, ps = nchw ? 1 : F;
    for (int oh = 0; oh < OH; oh++)
        for (int ow = 0; ow < OW; ow++) {
            const fnn_index q = ((fnn_index)oh * OW + ow) * ps;
            REAL *restrict o = dz + (fnn_index)oh * ldr + (fnn_index)ow * ldf;
            int f = 0;
            for (; f < F; f++) {
                const REAL g = a[q + f * fs] > 0 ? d[q + f * fs] : (REAL)0;
                o[f] = g;
                db[f] += g;
            }
            for (; f < ldf; f++)
                o[f] = 0;
        }
}

void FNN(fnn_cn_pack_filters)(const REAL *restrict W, int F, int C, int FH, int FW, int flip,
                              int ldf, REAL *restrict Wk)
{
    for (int f = 0; f < F; f++)
        for (int c = 0; c < C; c++)
            for (int i = 0; i < FH; i++)
                for (int j = 0; j < FW; j++) {
                    const REAL w = W[(((fnn_index)f * C + c) * FH + i) * FW + j];
                    if (flip)  /* the input gradient's filters: (FH-1-i, FW-1-j, f) -> c */
                        Wk[((fnn_index)((FH - 1 - i) * FW + FW - 1 - j) * ldf + f) * C + c] = w;
                    else
                        Wk[((fnn_index)(i * FW + j) * C + c) * ldf + f] = w;
                }
}

void FNN(fnn_cn_unpack_filters)(const REAL *restrict Wk, int ldf, int F, int C, int FH, int FW,
                                REAL *restrict W)
{
    for (int f = 0; f < F; f++)
        for (int c = 0; c < C; c++)
            for (int i = 0; i < FH; i++)
                for (int j = 0; j < FW; j++)
                    W[(((fnn_index)f * C + c) * FH + i) * FW + j] =
                        Wk[((fnn_index)(i * FW + j) * C + c) * ldf + f];
}

void FNN(fnn_cn_db_store)(const double *restrict acc, int F, REAL *restrict db)
{
    for (int f = 0; f < F; f++)
        db[f] = (REAL)acc[f];
}

#undef FNN_CN_LOAD
#undef FNN_CN_STORE
#undef FNN_CN_RELU
#undef FNN_CN_TAKE_V
#undef FNN_CN_VL
