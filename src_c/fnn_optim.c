/* Instantiates the optimizer kernels of fnn_optim_impl.h for float32 and float64. */
#include <math.h>

#include "fnn_optim.h"

#define REAL float
#define SFX f32
#define SQRT sqrtf
#include "fnn_optim_impl.h"
#undef REAL
#undef SFX
#undef SQRT

#define REAL double
#define SFX f64
#define SQRT sqrt
#include "fnn_optim_impl.h"
#undef REAL
#undef SFX
#undef SQRT
