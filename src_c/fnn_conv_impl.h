/*
 * Body of every kernel of fnn_conv.h, written once for a floating type REAL with name suffix
 * SFX, and included twice by fnn_conv.c (float/f32 and double/f64).
 *
 * Index arithmetic is in fnn_index (ptrdiff_t) throughout; an input index is formed only once
 * it is known to lie inside the array (no pointer is ever moved before an array's start).
 */

void FNN(fnn_im2col)(const REAL *restrict x, fnn_index N, fnn_index C, fnn_index H, fnn_index W,
                     fnn_index FH, fnn_index FW, fnn_index stride, fnn_index pad, fnn_index OH,
                     fnn_index OW, REAL *restrict col)
{
    const fnn_index K = C * FH * FW;
    for (fnn_index n = 0; n < N; n++)
        for (fnn_index oh = 0; oh < OH; oh++)
            for (fnn_index ow = 0; ow < OW; ow++) {
                REAL *row = col + ((n * OH + oh) * OW + ow) * K;
                const fnn_index ix0 = ow * stride - pad;
                for (fnn_index c = 0; c < C; c++)
                    for (fnn_index ky = 0; ky < FH; ky++) {
                        REAL *dst = row + (c * FH + ky) * FW;
                        const fnn_index iy = oh * stride - pad + ky;
                        if (iy < 0 || iy >= H) {
                            for (fnn_index kx = 0; kx < FW; kx++)
                                dst[kx] = 0;
                            continue;
                        }
                        const fnn_index base = ((n * C + c) * H + iy) * W;
                        for (fnn_index kx = 0; kx < FW; kx++) {
                            const fnn_index ix = ix0 + kx;
                            dst[kx] = (ix >= 0 && ix < W) ? x[base + ix] : (REAL)0;
                        }
                    }
            }
}

void FNN(fnn_col2im)(const REAL *restrict col, fnn_index N, fnn_index C, fnn_index H,
                     fnn_index W, fnn_index FH, fnn_index FW, fnn_index stride, fnn_index pad,
                     fnn_index OH, fnn_index OW, REAL *restrict x)
{
    const fnn_index K = C * FH * FW;
    memset(x, 0, (size_t)(N * C * H * W) * sizeof(REAL));
    /* the book's order of additions, (ky, kx) outermost for each pixel, so that float64
       results are the book's to the bit */
    for (fnn_index n = 0; n < N; n++)
        for (fnn_index c = 0; c < C; c++)
            for (fnn_index ky = 0; ky < FH; ky++)
                for (fnn_index kx = 0; kx < FW; kx++) {
                    const fnn_index k = (c * FH + ky) * FW + kx;
                    fnn_index lo, hi;
                    fnn_valid_range(W, kx, stride, pad, OW, &lo, &hi);
                    for (fnn_index oh = 0; oh < OH; oh++) {
                        const fnn_index iy = oh * stride - pad + ky;
                        if (iy < 0 || iy >= H)
                            continue;
                        REAL *xrow = x + ((n * C + c) * H + iy) * W;
                        const REAL *src = col + ((n * OH + oh) * OW) * K + k;
                        for (fnn_index ow = lo; ow < hi; ow++)
                            xrow[ow * stride - pad + kx] += src[ow * K];
                    }
                }
}

void FNN(fnn_im2col_t)(const REAL *restrict x, fnn_index C, fnn_index H, fnn_index W,
                       fnn_index FH, fnn_index FW, fnn_index stride, fnn_index pad,
                       fnn_index OW, fnn_index oh0, fnn_index oh1, REAL *restrict colT)
{
    const fnn_index Pb = (oh1 - oh0) * OW;
    for (fnn_index c = 0; c < C; c++)
        for (fnn_index ky = 0; ky < FH; ky++)
            for (fnn_index kx = 0; kx < FW; kx++) {
                REAL *row = colT + ((c * FH + ky) * FW + kx) * Pb;
                fnn_index lo, hi;
                fnn_valid_range(W, kx, stride, pad, OW, &lo, &hi);
                for (fnn_index oh = oh0; oh < oh1; oh++) {
                    REAL *restrict dst = row + (oh - oh0) * OW;
                    const fnn_index iy = oh * stride - pad + ky;
                    if (iy < 0 || iy >= H) {
                        memset(dst, 0, (size_t)OW * sizeof(REAL));
                        continue;
                    }
                    for (fnn_index ow = 0; ow < lo; ow++)
                        dst[ow] = 0;
                    /* the valid middle: one contiguous run (a memcpy) at stride 1 */
                    const REAL *restrict src = x + (c * H + iy) * W + (lo * stride - pad + kx);
                    if (stride == 1)
                        memcpy(dst + lo, src, (size_t)(hi - lo) * sizeof(REAL));
                    else
                        for (fnn_index ow = lo; ow < hi; ow++)
                            dst[ow] = src[(ow - lo) * stride];
                    for (fnn_index ow = hi; ow < OW; ow++)
                        dst[ow] = 0;
                }
            }
}

FNN_MULTIVERSION
void FNN(fnn_col2im_t_add)(const REAL *restrict colT, fnn_index C, fnn_index H, fnn_index W,
                           fnn_index FH, fnn_index FW, fnn_index stride, fnn_index pad,
                           fnn_index OW, fnn_index oh0, fnn_index oh1, REAL *restrict x)
{
    const fnn_index Pb = (oh1 - oh0) * OW;
    for (fnn_index c = 0; c < C; c++)
        for (fnn_index ky = 0; ky < FH; ky++)
            for (fnn_index kx = 0; kx < FW; kx++) {
                const REAL *row = colT + ((c * FH + ky) * FW + kx) * Pb;
                fnn_index lo, hi;
                fnn_valid_range(W, kx, stride, pad, OW, &lo, &hi);
                for (fnn_index oh = oh0; oh < oh1; oh++) {
                    const fnn_index iy = oh * stride - pad + ky;
                    if (iy < 0 || iy >= H || lo >= hi)
                        continue;
                    const REAL *restrict src = row + (oh - oh0) * OW;
                    REAL *restrict dst = x + (c * H + iy) * W + (lo * stride - pad + kx);
                    if (stride == 1) /* a vector add along the row */
                        for (fnn_index ow = lo; ow < hi; ow++)
                            dst[ow - lo] += src[ow];
                    else
                        for (fnn_index ow = lo; ow < hi; ow++)
                            dst[(ow - lo) * stride] += src[ow];
                }
            }
}

FNN_MULTIVERSION
void FNN(fnn_bias_act)(REAL *restrict out, fnn_index FN, fnn_index ld, fnn_index cols,
                       const REAL *restrict b, int relu)
{
    for (fnn_index f = 0; f < FN; f++) {
        REAL *restrict o = out + f * ld;
        const REAL bf = b[f];
        if (relu)
            for (fnn_index j = 0; j < cols; j++) {
                const REAL v = o[j] + bf;
                o[j] = v <= 0 ? (REAL)0 : v;
            }
        else
            for (fnn_index j = 0; j < cols; j++)
                o[j] += bf;
    }
}

FNN_MULTIVERSION
void FNN(fnn_relu_grad_from_out)(const REAL *restrict dout, const REAL *restrict out,
                                 fnn_index size, REAL *restrict dst)
{
    for (fnn_index i = 0; i < size; i++)
        dst[i] = out[i] <= 0 ? (REAL)0 : dout[i];
}

FNN_MULTIVERSION
void FNN(fnn_row_sums_add)(const REAL *restrict a, fnn_index rows, fnn_index cols,
                           REAL *restrict sums)
{
    for (fnn_index r = 0; r < rows; r++) {
        const REAL *restrict p = a + r * cols;
        /* eight partial sums: one vector of independent additions instead of a chain of
           dependent ones (a sum in order runs at one add per 4 cycles, the adder's latency) */
        REAL acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        fnn_index j = 0;
        for (; j + 8 <= cols; j += 8)
            for (int q = 0; q < 8; q++)
                acc[q] += p[j + q];
        REAL s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
        for (; j < cols; j++)
            s += p[j];
        sums[r] += s;
    }
}

FNN_MULTIVERSION
void FNN(fnn_maxpool_forward)(const REAL *restrict x, fnn_index NC, fnn_index H, fnn_index W,
                              fnn_index PH, fnn_index PW, fnn_index stride, fnn_index pad,
                              fnn_index OH, fnn_index OW, REAL *restrict out,
                              int32_t *restrict argmax)
{
    for (fnn_index p = 0; p < NC; p++) {
        const REAL *restrict xp = x + p * H * W;
        REAL *restrict op = out + p * OH * OW;
        int32_t *restrict ap = argmax + p * OH * OW;
        for (fnn_index oh = 0; oh < OH; oh++)
            for (fnn_index ow = 0; ow < OW; ow++) {
                const fnn_index iy0 = oh * stride - pad, ix0 = ow * stride - pad;
                REAL best = 0;
                int32_t arg = 0;
                int32_t k = 0;
                for (fnn_index ky = 0; ky < PH; ky++) {
                    const fnn_index iy = iy0 + ky;
                    const int row_in = iy >= 0 && iy < H;
                    for (fnn_index kx = 0; kx < PW; kx++, k++) {
                        const fnn_index ix = ix0 + kx;
                        const REAL v = (row_in && ix >= 0 && ix < W) ? xp[iy * W + ix] : (REAL)0;
                        /* np.argmax: the first maximum, and a NaN beats everything */
                        if (k == 0 || v > best || (v != v && best == best)) {
                            best = v;
                            arg = k;
                        }
                    }
                }
                op[oh * OW + ow] = best;
                ap[oh * OW + ow] = arg;
            }
    }
}

void FNN(fnn_maxpool_backward)(const REAL *restrict dout, const int32_t *restrict argmax,
                               fnn_index NC, fnn_index H, fnn_index W, fnn_index PW,
                               fnn_index stride, fnn_index pad, fnn_index OH, fnn_index OW,
                               REAL *restrict dx)
{
    memset(dx, 0, (size_t)(NC * H * W) * sizeof(REAL));
    for (fnn_index p = 0; p < NC; p++) {
        const REAL *restrict dp = dout + p * OH * OW;
        const int32_t *restrict ap = argmax + p * OH * OW;
        REAL *restrict xp = dx + p * H * W;
        for (fnn_index oh = 0; oh < OH; oh++)
            for (fnn_index ow = 0; ow < OW; ow++) {
                const fnn_index k = ap[oh * OW + ow];
                const fnn_index ky = k / PW, kx = k - ky * PW;
                const fnn_index iy = oh * stride - pad + ky, ix = ow * stride - pad + kx;
                /* any argmax value stays inside dx: positions outside the plane are the
                   padding, whose gradient the book's col2im crops away */
                if (k >= 0 && iy >= 0 && iy < H && ix >= 0 && ix < W)
                    xp[iy * W + ix] += dp[oh * OW + ow];
            }
    }
}
