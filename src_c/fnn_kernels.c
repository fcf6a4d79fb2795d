/* Instantiates the kernels of fnn_kernels_impl.h for float32 and float64. */
#include <math.h>

#include "fnn_kernels.h"

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
