/* Instantiates the convnet kernels of fnn_convnet_impl.h for float32 and float64. */
#include <string.h>

#include "fnn_convnet.h"

#define REAL float
#define SFX f32
#define FNN_CN_IREAL int32_t  /* integer lanes of REAL's width */
#include "fnn_convnet_impl.h"
#undef REAL
#undef SFX
#undef FNN_CN_IREAL

#define REAL double
#define SFX f64
#define FNN_CN_IREAL int64_t
#include "fnn_convnet_impl.h"
#undef REAL
#undef SFX
#undef FNN_CN_IREAL
