/* Instantiates the convolution and pooling kernels of fnn_conv_impl.h for float32 and float64. */
#include "fnn_conv.h"

/* [lo, hi): the outputs o whose input o * stride - pad + k lies in [0, n) */
static inline void fnn_valid_range(fnn_index n, fnn_index k, fnn_index stride, fnn_index pad,
                                   fnn_index count, fnn_index *lo, fnn_index *hi)
{
    const fnn_index first = pad - k; /* o * stride >= first */
    const fnn_index last = n - 1 + pad - k; /* o * stride <= last */
    fnn_index l = first <= 0 ? 0 : (first + stride - 1) / stride;
    fnn_index h = last < 0 ? 0 : last / stride + 1;
    if (h > count)
        h = count;
    if (l > h)
        l = h;
    *lo = l;
    *hi = h;
}

/* Copy loops of a few dozen values stay loops: GCC would otherwise turn them into memcpy calls,
   whose call overhead exceeds such a copy. */
#if defined(__GNUC__) && !defined(__clang__)
#define FNN_SHORT_COPIES __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define FNN_SHORT_COPIES
#endif

#define REAL float
#define SFX f32
#include "fnn_conv_impl.h"
#undef REAL
#undef SFX

#define REAL double
#define SFX f64
#include "fnn_conv_impl.h"
#undef REAL
#undef SFX
