// CPU builds of ReLU and leaky ReLU for NumPy arrays (compiled and called as xpnn/functional/cpu_kernels.py
// describes): one pass over C-contiguous arrays, each equal to the NumPy path it replaces bit for bit.
// - ReLU's backward is a select (no arithmetic on dy), so dx equals the NumPy path's (activations.ReluBackward:
//   zero_where's three passes), NaN payloads and -0.0 included; its element rule comes from the header the CUDA
//   elementwise kernels use (../activation_backward.cuh).
// - ReLU's forward is np.maximum(x, 0)'s select: a NaN x passes unchanged (payload and sign, a signalling NaN not
//   quieted), -0.0 gives +0.0. No CUDA kernel has this rule (CuPy's maximum runs there), so it is written here.
// - Leaky ReLU forward and backward: NumPy's where(x > 0, a, a * slope) multiplies every element (a = x, resp. dy) by
//   the slope and selects; so does leaky_relu_select, which returns the floating-point exceptions raised
//   (FE_OVERFLOW, FE_INVALID, FE_UNDERFLOW, FE_DIVBYZERO; 0 for none): where there is one, the caller runs the NumPy
//   path again, which reports it as NumPy's error state says. (The rule of xpnn_leaky_relu_backward in
//   ../activation_backward.cuh, written here as loops over a block so that every product is taken and each loop is
//   vectorized, which a one-element function does not allow.)
#include <fenv.h>
#include <math.h>

#define __device__
#define __forceinline__ inline
#include "../activation_backward.cuh"

#define XPNN_CPU_API extern "C" __attribute__((visibility("default")))

// These loops are bound by the vector width: on x86-64 ELF (Linux) each is also built for AVX2 and the variant the
// CPU runs is chosen once, when the library is loaded (target_clones; no -march flag for the whole library). The
// same IEEE operations in either (no FMA: -ffp-contract=off), so the same bits. (-DXPNN_CPU_CLONES= builds the
// baseline loops alone: tests/test_cpu_kernels.py checks them so.)
#ifndef XPNN_CPU_CLONES
#if defined(__x86_64__) && defined(__ELF__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define XPNN_CPU_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
#endif
#ifndef XPNN_CPU_CLONES
#define XPNN_CPU_CLONES
#endif

namespace {

// dx = +0.0 where x <= 0 else dy (a NaN x passes dy: PyTorch's threshold_backward), over n elements
template <typename T>
XPNN_CPU_CLONES void relu_backward(const T* x, const T* dy, T* dx, long long n) {
    for (long long i = 0; i < n; ++i) dx[i] = xpnn_relu_backward(x[i], dy[i]);
}

// y = +0.0 where x <= 0 (-0.0 and -inf included) else x (NaN too): np.maximum(x, 0)'s bits; y may be x itself
template <typename T>
XPNN_CPU_CLONES void relu_forward(const T* x, T* y, long long n) {
    for (long long i = 0; i < n; ++i) {
        const T v = x[i];
        y[i] = v <= T(0) ? T(0) : v;
    }
}

constexpr int kReported = FE_OVERFLOW | FE_INVALID | FE_UNDERFLOW | FE_DIVBYZERO;
constexpr long long kBlock = 256;  // elements per block: its products stay in a stack buffer (L1)

// out = a where x > 0 else a * slope (forward: a = x; backward: a = dy, xpnn_leaky_relu_backward's rule). NumPy's
// where(x > 0, a, a * slope) takes the product of every element, so the loop does too, block by block: all products
// into a stack buffer, the select into it, then the copy out (a product written inside the select would be moved
// into the x <= 0 branch by the compiler, raising fewer exceptions; a select written straight to out, which may be x
// or a itself, is not vectorized). Returns the exceptions raised (kReported bits; the compare of a NaN x may add
// FE_INVALID, which only sends the caller to NumPy).
template <typename T>
XPNN_CPU_CLONES int leaky_relu_select(const T* x, const T* a, T slope, T* out, long long n) {
    T block[kBlock];
    feclearexcept(FE_ALL_EXCEPT);
    for (long long lo = 0; lo < n; lo += kBlock) {
        const long long m = n - lo < kBlock ? n - lo : kBlock;
        const T* xb = x + lo;
        const T* ab = a + lo;
        T* ob = out + lo;
        for (long long j = 0; j < m; ++j) block[j] = ab[j] * slope;
        for (long long j = 0; j < m; ++j) block[j] = xb[j] > T(0) ? ab[j] : block[j];
        for (long long j = 0; j < m; ++j) ob[j] = block[j];
    }
    return fetestexcept(kReported);
}

}  // namespace

XPNN_CPU_API void xpnn_cpu_relu_backward_float32(const float* x, const float* dy, float* dx, long long n) {
    relu_backward(x, dy, dx, n);
}

XPNN_CPU_API void xpnn_cpu_relu_backward_float64(const double* x, const double* dy, double* dx, long long n) {
    relu_backward(x, dy, dx, n);
}

XPNN_CPU_API void xpnn_cpu_relu_forward_float32(const float* x, float* y, long long n) { relu_forward(x, y, n); }

XPNN_CPU_API void xpnn_cpu_relu_forward_float64(const double* x, double* y, long long n) { relu_forward(x, y, n); }

XPNN_CPU_API int xpnn_cpu_leaky_relu_forward_float32(const float* x, float slope, float* y, long long n) {
    return leaky_relu_select(x, x, slope, y, n);
}

XPNN_CPU_API int xpnn_cpu_leaky_relu_forward_float64(const double* x, double slope, double* y, long long n) {
    return leaky_relu_select(x, x, slope, y, n);
}

XPNN_CPU_API int xpnn_cpu_leaky_relu_backward_float32(const float* x, const float* dy, float slope, float* dx,
                                                      long long n) {
    return leaky_relu_select(x, dy, slope, dx, n);
}

XPNN_CPU_API int xpnn_cpu_leaky_relu_backward_float64(const double* x, const double* dy, double slope, double* dx,
                                                      long long n) {
    return leaky_relu_select(x, dy, slope, dx, n);
}
