// CPU builds of the optimizer updates in ../optimizers.cu, for NumPy arrays (xpnn/functional/cpu_kernels.py
// compiles this file with the system C++ compiler on first use and calls it through ctypes). Each update is one
// pass over C-contiguous arrays, the element math included from the header the CUDA kernels use, so the CPU,
// CUDA and NumPy updates run the same expressions in the same order: with -ffp-contract=off (no a*b+c -> FMA)
// the results equal the NumPy reference's (updates.adam_update, ~13 array passes) bit for bit.
#include <math.h>

#define __device__
#define __forceinline__ inline
#include "../adam.cuh"

#define XPNN_CPU_API extern "C" __attribute__((visibility("default")))

namespace {

// adam_update of optimizers.cu over n elements; vmax is read and written only when amsgrad (else may be null).
template <typename T>
void adam(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, T* vmax, long long n, T beta1, T one_minus_beta1,
          T beta2, T one_minus_beta2, T eps, T weight_decay, T decay, T step_size, T bc2_sqrt, int decoupled,
          int amsgrad, int maximize) {
    const xpnn_adam_params<T> h = {beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, decay,
                                   step_size, bc2_sqrt, decoupled, amsgrad, maximize};
    if (amsgrad) {
        for (long long i = 0; i < n; ++i) xpnn_adam_element(h, param[i], grad[i], exp_avg[i], exp_avg_sq[i], vmax[i]);
    } else {
        T unused = T(0);
        for (long long i = 0; i < n; ++i) xpnn_adam_element(h, param[i], grad[i], exp_avg[i], exp_avg_sq[i], unused);
    }
}

}  // namespace

XPNN_CPU_API void xpnn_cpu_adam_float32(float* param, const float* grad, float* exp_avg, float* exp_avg_sq,
                                        float* vmax, long long n, float beta1, float one_minus_beta1, float beta2,
                                        float one_minus_beta2, float eps, float weight_decay, float decay,
                                        float step_size, float bc2_sqrt, int decoupled, int amsgrad, int maximize) {
    adam(param, grad, exp_avg, exp_avg_sq, vmax, n, beta1, one_minus_beta1, beta2, one_minus_beta2, eps,
         weight_decay, decay, step_size, bc2_sqrt, decoupled, amsgrad, maximize);
}

XPNN_CPU_API void xpnn_cpu_adam_float64(double* param, const double* grad, double* exp_avg, double* exp_avg_sq,
                                        double* vmax, long long n, double beta1, double one_minus_beta1,
                                        double beta2, double one_minus_beta2, double eps, double weight_decay,
                                        double decay, double step_size, double bc2_sqrt, int decoupled, int amsgrad,
                                        int maximize) {
    adam(param, grad, exp_avg, exp_avg_sq, vmax, n, beta1, one_minus_beta1, beta2, one_minus_beta2, eps,
         weight_decay, decay, step_size, bc2_sqrt, decoupled, amsgrad, maximize);
}
