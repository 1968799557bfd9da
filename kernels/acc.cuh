// Accumulation type and precision-matched math overloads (no CUDA headers needed: used by the elementwise
// kernels, where CuPy supplies its own float16 type, and by common.cuh).
#ifndef XPNN_ACC_CUH
#define XPNN_ACC_CUH

// float for 16-bit floats (__half, CuPy's float16), else the type itself.
template <typename T, int Size = sizeof(T)>
struct xpnn_acc { typedef T type; };
template <typename T>
struct xpnn_acc<T, 2> { typedef float type; };

// Overloads so templates call the math function of their own precision.
__device__ __forceinline__ float xpnn_exp(float x) { return expf(x); }
__device__ __forceinline__ double xpnn_exp(double x) { return exp(x); }
__device__ __forceinline__ float xpnn_log(float x) { return logf(x); }
__device__ __forceinline__ double xpnn_log(double x) { return log(x); }
__device__ __forceinline__ float xpnn_log1p(float x) { return log1pf(x); }
__device__ __forceinline__ double xpnn_log1p(double x) { return log1p(x); }
__device__ __forceinline__ float xpnn_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double xpnn_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float xpnn_erf(float x) { return erff(x); }
__device__ __forceinline__ double xpnn_erf(double x) { return erf(x); }
__device__ __forceinline__ float xpnn_abs(float x) { return fabsf(x); }
__device__ __forceinline__ double xpnn_abs(double x) { return fabs(x); }
__device__ __forceinline__ float xpnn_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double xpnn_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float xpnn_max(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double xpnn_max(double a, double b) { return fmax(a, b); }
// max that propagates NaN from either side (torch.maximum, numpy.maximum); fmax/fmaxf return the other operand.
template <typename A>
__device__ __forceinline__ A xpnn_max_nan(A a, A b) { return (a > b || a != a) ? a : b; }

#endif  // XPNN_ACC_CUH
