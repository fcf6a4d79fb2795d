/* Instantiates the convnet kernels of fnn_convnet_impl.h for float32 and float64. */
#include <string.h>

#include "fnn_convnet.h"

#define REAL float
#define SFX f32
#include "fnn_convnet_impl.h"
#undef REAL
#undef SFX

#define REAL double
#define SFX f64
#include "fnn_convnet_impl.h"
#undef REAL
#undef SFX
