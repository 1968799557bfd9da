// CPU shim stand-in for CUDA's <cuda_fp16.h>: __half is GCC's IEEE binary16 type (same bits as numpy.float16).
#ifndef XPNN_SHIM_CUDA_FP16_H
#define XPNN_SHIM_CUDA_FP16_H

typedef _Float16 __half;

inline float __half2float(__half h) { return static_cast<float>(h); }
inline __half __float2half(float f) { return static_cast<__half>(f); }

#endif
