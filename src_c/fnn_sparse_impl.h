/*
 * Body of the kernels of fnn_sparse.h for a floating type REAL with suffix SFX, included twice
 * by fnn_sparse.c.
 */

void FNN(fnn_sparse_columns)(fnn_index n, fnn_index K, const REAL *restrict val,
                             const int32_t *restrict col, const int32_t *restrict ptr,
                             REAL *restrict cval, int32_t *restrict crow, int32_t *restrict cptr)
{
    /* a counting sort by column: rows are taken in order, so each column's stay in order */
    memset(cptr, 0, sizeof(int32_t) * (size_t)(K + 1));
    for (int32_t e = 0; e < ptr[n]; e++)
        cptr[col[e] + 1]++;
    for (fnn_index k = 0; k < K; k++)
        cptr[k + 1] += cptr[k];
    /* cptr[k] as column k's cursor, which ends at column k + 1's start; shifted back after */
    for (fnn_index i = 0; i < n; i++)
        for (int32_t e = ptr[i]; e < ptr[i + 1]; e++) {
            const int32_t dst = cptr[col[e]]++;
            cval[dst] = val[e];
            crow[dst] = (int32_t)i;
        }
    for (fnn_index k = K; k > 0; k--)
        cptr[k] = cptr[k - 1];
    cptr[0] = 0;
}

/* ---- the products ---------------------------------------------------------------------------
 *
 * Both GEMMs are one loop: an output row is sum_e s[e] B[idx[e], :] over a list of entries
 * (a row of the CSR against the rows of W; a column of the CSC against the rows of d).  A tile
 * keeps up to FNN_SP_TILE vectors of the output row in registers (all of it for a row of up
 * to 52 doubles or 104 floats, so that the entries are walked once) and, per entry, broadcasts
 * s[e] and adds s[e] times the vectors of B's row, read straight from it.  The last r < VL
 * columns are one more vector, loaded so that it ends at the row's end (overlapping the one
 * before; its first VL - r lanes are thrown away), so that no load passes the end of B.  Each
 * output is one accumulator, summed in the entries' order with fused multiply-adds, as a
 * GEMM's inner product is. */

#define FNN_SP_VL ((int)(32 / sizeof(REAL)))
#define FNN_SP_TILE 13  /* accumulators: 13 + the broadcast fit AVX2's 16 registers */
typedef REAL FNN(sp_vec) __attribute__((vector_size(32)));
typedef REAL FNN(sp_vecu) __attribute__((vector_size(32), aligned(sizeof(REAL)), may_alias));
#define FNN_SP_LOAD(p) (*(const FNN(sp_vecu) *)(p))
#define FNN_SP_STORE(p, v) (*(FNN(sp_vecu) *)(p) = (v))

#pragma GCC push_options
#pragma GCC optimize("fp-contract=fast")

/* out[j0 .. j0 + nv vectors) = sum_e s[e] B[idx[e]*ldb + j0 ...], e in [lo, hi); with tail,
   also the last r columns of the row (N = j0 + nv vectors + r) */
FNN_INLINE void FNN(sp_tile)(const REAL *restrict s, const int32_t *restrict idx, int32_t lo,
                             int32_t hi, const REAL *restrict B, fnn_index ldb, fnn_index j0,
                             REAL *restrict out, const int nv, const int tail, int r)
{
    FNN(sp_vec) acc[FNN_SP_TILE], last = {0};
    const fnn_index jt = j0 + (fnn_index)nv * FNN_SP_VL + r - FNN_SP_VL;  /* the tail's load */
    for (int v = 0; v < nv; v++)
        acc[v] = (FNN(sp_vec)){0};
    for (int32_t e = lo; e < hi; e++) {
        const REAL *restrict b = B + idx[e] * ldb;
        const REAL sv = s[e];
        for (int v = 0; v < nv; v++)
            acc[v] += FNN_SP_LOAD(b + j0 + v * FNN_SP_VL) * sv;
        if (tail)
            last += FNN_SP_LOAD(b + jt) * sv;
    }
    for (int v = 0; v < nv; v++)
        FNN_SP_STORE(out + j0 + v * FNN_SP_VL, acc[v]);
    if (tail) {
        REAL lanes[FNN_SP_VL];
        FNN_SP_STORE(lanes, last);
        for (int c = FNN_SP_VL - r; c < FNN_SP_VL; c++)
            out[jt + c] = lanes[c];
    }
}

/* one output row of N columns, in tiles of as even sizes as fit */
FNN_INLINE void FNN(sp_row)(const REAL *restrict s, const int32_t *restrict idx, int32_t lo,
                            int32_t hi, const REAL *restrict B, fnn_index ldb, fnn_index N,
                            REAL *restrict out)
{
    if (N < FNN_SP_VL) {  /* narrower than a vector: lane by lane */
        REAL acc[FNN_SP_VL] = {0};
        for (int32_t e = lo; e < hi; e++)
            for (fnn_index c = 0; c < N; c++)
                acc[c] += s[e] * B[idx[e] * ldb + c];
        for (fnn_index c = 0; c < N; c++)
            out[c] = acc[c];
        return;
    }
    const int r = (int)(N % FNN_SP_VL);
    const fnn_index vectors = N / FNN_SP_VL + (r > 0);
    const fnn_index tiles = (vectors + FNN_SP_TILE - 1) / FNN_SP_TILE;
    fnn_index j0 = 0;
    for (fnn_index t = 0; t < tiles; t++) {
        const int size = (int)(vectors / tiles + (t < vectors % tiles));
        const int tail = r > 0 && t == tiles - 1;
        /* constant tile sizes, so that the accumulators stay in registers */
#define FNN_SP_CASE(nv)                                                                       \
        case nv: if (tail) FNN(sp_tile)(s, idx, lo, hi, B, ldb, j0, out, nv - 1, 1, r);      \
                 else FNN(sp_tile)(s, idx, lo, hi, B, ldb, j0, out, nv, 0, 0);               \
                 break;
        switch (size) {
        FNN_SP_CASE(13) FNN_SP_CASE(12) FNN_SP_CASE(11) FNN_SP_CASE(10) FNN_SP_CASE(9)
        FNN_SP_CASE(8) FNN_SP_CASE(7) FNN_SP_CASE(6) FNN_SP_CASE(5) FNN_SP_CASE(4)
        FNN_SP_CASE(3) FNN_SP_CASE(2) FNN_SP_CASE(1)
        default: break;
        }
#undef FNN_SP_CASE
        j0 += (fnn_index)size * FNN_SP_VL;
    }
}

FNN_MULTIVERSION void FNN(fnn_sparse_gemm)(fnn_index n, fnn_index N, const REAL *restrict val,
                                           const int32_t *restrict col,
                                           const int32_t *restrict ptr, const REAL *restrict W,
                                           fnn_index ldw, REAL *restrict out, fnn_index ldo)
{
    for (fnn_index i = 0; i < n; i++)
        FNN(sp_row)(val, col, ptr[i], ptr[i + 1], W, ldw, N, out + i * ldo);
}

FNN_MULTIVERSION void FNN(fnn_sparse_gemm_tn)(fnn_index K, fnn_index N,
                                              const REAL *restrict cval,
                                              const int32_t *restrict crow,
                                              const int32_t *restrict cptr,
                                              const REAL *restrict d, fnn_index ldd,
                                              REAL *restrict dW, fnn_index ldw)
{
    for (fnn_index k = 0; k < K; k++)
        FNN(sp_row)(cval, crow, cptr[k], cptr[k + 1], d, ldd, N, dW + k * ldw);
}

#pragma GCC pop_options

FNN_MULTIVERSION int FNN(fnn_all_finite)(const REAL *restrict a, fnn_index size)
{
    /* a * 0 is 0 for a finite a and NaN for an infinite or NaN one; the lanes' sums are NaN
       if any is */
    REAL lanes[2 * FNN_SP_VL] = {0};
    fnn_index i = 0;
    for (; i + 2 * FNN_SP_VL <= size; i += 2 * FNN_SP_VL)
        for (int l = 0; l < 2 * FNN_SP_VL; l++)
            lanes[l] += a[i + l] * 0;
    for (; i < size; i++)
        lanes[0] += a[i] * 0;
    REAL total = 0;
    for (int l = 0; l < 2 * FNN_SP_VL; l++)
        total += lanes[l];
    return total == total;
}

#undef FNN_SP_VL
#undef FNN_SP_TILE
#undef FNN_SP_LOAD
#undef FNN_SP_STORE
