// CPU builds of activation backwards for NumPy arrays (compiled and called as xpnn/functional/cpu_kernels.py
// describes): one pass over C-contiguous arrays, the element rule included from the header the CUDA elementwise
// kernels use (../activation_backward.cuh). ReLU's backward is a select (no arithmetic on dy), so dx equals the
// NumPy path's (activations.ReluBackward: zero_where's three passes) bit for bit, NaN payloads and -0.0 included.
#include <math.h>

#define __device__
#define __forceinline__ inline
#include "../activation_backward.cuh"

#define XPNN_CPU_API extern "C" __attribute__((visibility("default")))

namespace {

// dx = +0.0 where x <= 0 else dy (a NaN x passes dy: PyTorch's threshold_backward), over n elements
template <typename T>
void relu_backward(const T* x, const T* dy, T* dx, long long n) {
    for (long long i = 0; i < n; ++i) dx[i] = xpnn_relu_backward(x[i], dy[i]);
}

}  // namespace

XPNN_CPU_API void xpnn_cpu_relu_backward_float32(const float* x, const float* dy, float* dx, long long n) {
    relu_backward(x, dy, dx, n);
}

XPNN_CPU_API void xpnn_cpu_relu_backward_float64(const double* x, const double* dy, double* dx, long long n) {
    relu_backward(x, dy, dx, n);
}
