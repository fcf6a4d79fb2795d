/* Instantiates the kernels of fnn_kernels_impl.h for float32 and float64. */
#include <math.h>

#include "fnn_kernels.h"

double fnn_mean_row_loss(const double *row_loss, fnn_index n)
{
    double total = 0;
    for (fnn_index i = 0; i < n; i++)
        total += row_loss[i];
    return total / (double)n;
}

fnn_index fnn_first_bad_label(const int64_t *labels, fnn_index n, int64_t k)
{
    /* as unsigned, a negative label is larger than any k */
    uint64_t bad = 0;
    for (fnn_index i = 0; i < n; i++)
        bad |= (uint64_t)labels[i] >= (uint64_t)k;
    if (!bad)
        return -1;
    for (fnn_index i = 0; i < n; i++)
        if ((uint64_t)labels[i] >= (uint64_t)k)
            return i;
    return -1;
}

#define REAL float
#define SFX f32
#define EXP fnn_exp_f32
#define FABS fabsf
#include "fnn_kernels_impl.h"
#undef REAL
#undef SFX
#undef EXP
#undef FABS

#define REAL double
#define SFX f64
#define EXP fnn_exp_f64
#define FABS fabs
#include "fnn_kernels_impl.h"
#undef REAL
#undef SFX
#undef EXP
#undef FABS
