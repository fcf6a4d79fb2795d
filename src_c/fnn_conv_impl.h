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

FNN_MULTIVERSION FNN_SHORT_COPIES
void FNN(fnn_im2col_t)(const REAL *restrict x, fnn_index C, fnn_index H, fnn_index W,
                       fnn_index FH, fnn_index FW, fnn_index stride, fnn_index pad,
                       fnn_index OW, fnn_index oh0, fnn_index oh1, REAL *restrict colT,
                       fnn_index Pb)
{
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
                        for (fnn_index ow = 0; ow < OW; ow++)
                            dst[ow] = 0;
                        continue;
                    }
                    for (fnn_index ow = 0; ow < lo; ow++)
                        dst[ow] = 0;
                    /* the valid middle: one contiguous run at stride 1, copied by a loop
                       the compiler vectorises inline (a memcpy call per run of the book's 24
                       or 28 values cost more than the copy: 9% of a SimpleConvNet layer;
                       FNN_SHORT_COPIES keeps GCC from making the loop a memcpy again) */
                    const REAL *restrict src = x + (c * H + iy) * W + (lo * stride - pad + kx);
                    if (stride == 1)
                        for (fnn_index ow = lo; ow < hi; ow++)
                            dst[ow] = src[ow - lo];
                    else
                        for (fnn_index ow = lo; ow < hi; ow++)
                            dst[ow] = src[(ow - lo) * stride];
                    for (fnn_index ow = hi; ow < OW; ow++)
                        dst[ow] = 0;
                }
            }
}

FNN_MULTIVERSION
void FNN(fnn_col2im_t_add)(const REAL *restrict colT, fnn_index Pb, fnn_index C, fnn_index H,
                           fnn_index W, fnn_index FH, fnn_index FW, fnn_index stride,
                           fnn_index pad, fnn_index OW, fnn_index oh0, fnn_index oh1,
                           REAL *restrict x)
{
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
void FNN(fnn_bias_act_copy)(const REAL *restrict src, fnn_index ld_src, REAL *restrict dst,
                            fnn_index ld_dst, fnn_index FN, fnn_index cols,
                            const REAL *restrict b, int relu)
{
    for (fnn_index f = 0; f < FN; f++) {
        const REAL *restrict s = src + f * ld_src;
        REAL *restrict o = dst + f * ld_dst;
        const REAL bf = b[f];
        if (relu)
            for (fnn_index j = 0; j < cols; j++) {
                const REAL v = s[j] + bf;
                o[j] = v <= 0 ? (REAL)0 : v;
            }
        else
            for (fnn_index j = 0; j < cols; j++)
                o[j] = s[j] + bf;
    }
}

FNN_MULTIVERSION
void FNN(fnn_gather_rows)(const REAL *restrict src, fnn_index ld_src, const REAL *restrict out,
                          REAL *restrict dst, fnn_index ld_dst, fnn_index rows, fnn_index cols)
{
    for (fnn_index r = 0; r < rows; r++) {
        const REAL *restrict s = src + r * ld_src;
        REAL *restrict d = dst + r * ld_dst;
        if (out == NULL) {
            memcpy(d, s, (size_t)cols * sizeof(REAL));
            continue;
        }
        const REAL *restrict o = out + r * ld_src;
        for (fnn_index j = 0; j < cols; j++)
            d[j] = o[j] <= 0 ? (REAL)0 : s[j];
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

/* One output row's windows that lie wholly inside the input, [ow0, ow1): no bounds checks, and
   the choice of the maximum made by selects. */
FNN_INLINE void FNN(fnn_pool_row_interior)(const REAL *restrict xr, fnn_index W, fnn_index PH,
                                           fnn_index PW, fnn_index stride, fnn_index pad,
                                           fnn_index ow0, fnn_index ow1, REAL *restrict o,
                                           int32_t *restrict a)
{
    for (fnn_index ow = ow0; ow < ow1; ow++) {
        const REAL *restrict p = xr + (ow * stride - pad);
        REAL best = p[0];
        int32_t arg = 0;
        for (fnn_index ky = 0; ky < PH; ky++)
            for (fnn_index kx = 0; kx < PW; kx++) {
                const REAL v = p[ky * W + kx];
                /* np.argmax: the first maximum, and a NaN beats everything */
                const int take = (v > best) | ((v != v) & (best == best));
                best = take ? v : best;
                arg = take ? (int32_t)(ky * PW + kx) : arg;
            }
        o[ow] = best;
        a[ow] = arg;
    }
}

/* The book's 2x2 window at stride 2, written out so that the loop over ow vectorises: the
   pairs of neighbours become vector shuffles, and the index of the maximum is carried as a
   REAL so that every select is of one vector type (GCC 12 vectorises no chain of selects that
   mixes float masks with int32 values). */
#define FNN_POOL_TAKE(v, best) ((v) > (best) || ((v) != (v) && (best) == (best)))
FNN_INLINE void FNN(fnn_pool_row_2x2)(const REAL *restrict r0, const REAL *restrict r1,
                                      fnn_index pad, fnn_index ow0, fnn_index ow1,
                                      REAL *restrict o, int32_t *restrict a)
{
    for (fnn_index ow = ow0; ow < ow1; ow++) {
        const fnn_index i = 2 * ow - pad;
        const REAL v0 = r0[i], v1 = r0[i + 1], v2 = r1[i], v3 = r1[i + 1];
        REAL best = v0, arg = 0;
        arg = FNN_POOL_TAKE(v1, best) ? (REAL)1 : arg;
        best = FNN_POOL_TAKE(v1, best) ? v1 : best;
        arg = FNN_POOL_TAKE(v2, best) ? (REAL)2 : arg;
        best = FNN_POOL_TAKE(v2, best) ? v2 : best;
        arg = FNN_POOL_TAKE(v3, best) ? (REAL)3 : arg;
        best = FNN_POOL_TAKE(v3, best) ? v3 : best;
        o[ow] = best;
        a[ow] = (int32_t)arg;
    }
}

/* The same for any window, padding and edges included (padding reads as 0). */
FNN_INLINE void FNN(fnn_pool_row_checked)(const REAL *restrict xp, fnn_index H, fnn_index W,
                                          fnn_index PH, fnn_index PW, fnn_index stride,
                                          fnn_index pad, fnn_index oh, fnn_index ow0,
                                          fnn_index ow1, REAL *restrict o, int32_t *restrict a)
{
    const fnn_index iy0 = oh * stride - pad;
    for (fnn_index ow = ow0; ow < ow1; ow++) {
        const fnn_index ix0 = ow * stride - pad;
        REAL best = 0;
        int32_t arg = 0, k = 0;
        for (fnn_index ky = 0; ky < PH; ky++) {
            const fnn_index iy = iy0 + ky;
            const int row_in = iy >= 0 && iy < H;
            for (fnn_index kx = 0; kx < PW; kx++, k++) {
                const fnn_index ix = ix0 + kx;
                const REAL v = (row_in && ix >= 0 && ix < W) ? xp[iy * W + ix] : (REAL)0;
                if (k == 0 || v > best || (v != v && best == best)) {
                    best = v;
                    arg = k;
                }
            }
        }
        o[ow] = best;
        a[ow] = arg;
    }
}

FNN_MULTIVERSION
void FNN(fnn_maxpool_forward)(const REAL *restrict x, fnn_index NC, fnn_index H, fnn_index W,
                              fnn_index PH, fnn_index PW, fnn_index stride, fnn_index pad,
                              fnn_index OH, fnn_index OW, REAL *restrict out,
                              int32_t *restrict argmax)
{
    /* the outputs whose windows lie inside the input: ix0 = ow * stride - pad >= 0 and
       ix0 + PW <= W (and likewise for rows) */
    fnn_index lo = (pad + stride - 1) / stride;
    fnn_index hi = W - PW + pad >= 0 ? (W - PW + pad) / stride + 1 : 0;
    hi = hi > OW ? OW : hi;
    lo = lo > hi ? hi : lo;
    const int book = PH == 2 && PW == 2 && stride == 2;
    for (fnn_index p = 0; p < NC; p++) {
        const REAL *restrict xp = x + p * H * W;
        for (fnn_index oh = 0; oh < OH; oh++) {
            REAL *restrict o = out + (p * OH + oh) * OW;
            int32_t *restrict a = argmax + (p * OH + oh) * OW;
            const fnn_index iy0 = oh * stride - pad;
            if (iy0 < 0 || iy0 + PH > H) {
                FNN(fnn_pool_row_checked)(xp, H, W, PH, PW, stride, pad, oh, 0, OW, o, a);
                continue;
            }
            FNN(fnn_pool_row_checked)(xp, H, W, PH, PW, stride, pad, oh, 0, lo, o, a);
            if (book)
                FNN(fnn_pool_row_2x2)(xp + iy0 * W, xp + (iy0 + 1) * W, pad, lo, hi, o, a);
            else
                FNN(fnn_pool_row_interior)(xp + iy0 * W, W, PH, PW, stride, pad, lo, hi, o, a);
            FNN(fnn_pool_row_checked)(xp, H, W, PH, PW, stride, pad, oh, hi, OW, o, a);
        }
    }
}

FNN_MULTIVERSION
void FNN(fnn_maxpool_backward)(const REAL *restrict dout, const int32_t *restrict argmax,
                               fnn_index NC, fnn_index H, fnn_index W, fnn_index PH,
                               fnn_index PW, fnn_index stride, fnn_index pad, fnn_index OH,
                               fnn_index OW, REAL *restrict dx)
{
    if (PH == 2 && PW == 2 && stride == 2 && pad == 0 && 2 * OH <= H && 2 * OW <= W && OW >= 8) {
        /* the book's 2x2 windows tile the input: each pixel of a window written once, the
           gradient or 0, in one vectorised pass instead of zeroing dx and scattering into it
           (and the rows and columns that no window covers zeroed); from 8 outputs a row:
           below, the vectorised loop is all remainder, and measured 3.7x slower than the
           scatter at the book's 8x8 -> 4x4 */
        for (fnn_index p = 0; p < NC; p++) {
            REAL *restrict xp = dx + p * H * W;
            for (fnn_index oh = 0; oh < OH; oh++) {
                const REAL *restrict dp = dout + (p * OH + oh) * OW;
                const int32_t *restrict ap = argmax + (p * OH + oh) * OW;
                REAL *restrict r0 = xp + 2 * oh * W;
                REAL *restrict r1 = r0 + W;
                for (fnn_index ow = 0; ow < OW; ow++) {
                    const REAL k = (REAL)ap[ow], d = dp[ow];
                    r0[2 * ow] = k == 0 ? d : (REAL)0;
                    r0[2 * ow + 1] = k == 1 ? d : (REAL)0;
                    r1[2 * ow] = k == 2 ? d : (REAL)0;
                    r1[2 * ow + 1] = k == 3 ? d : (REAL)0;
                }
                for (fnn_index ix = 2 * OW; ix < W; ix++)
                    r0[ix] = r1[ix] = 0;
            }
            memset(xp + 2 * OH * W, 0, (size_t)((H - 2 * OH) * W) * sizeof(REAL));
        }
        return;
    }
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
