// CPU builds of the optimizer updates in ../optimizers.cu, for NumPy arrays (xpnn/functional/cpu_kernels.py
// compiles this file with the system C++ compiler on first use and calls it through ctypes). Each update is one
// pass over C-contiguous arrays, the element math included from the headers the CUDA kernels use (adam.cuh,
// updates.cuh), so the CPU, CUDA and NumPy updates run the same expressions in the same order: with
// -ffp-contract=off (no a*b+c -> FMA) the results equal the NumPy reference's (updates.adam_update, ~13 array
// passes; sgd_update, adagrad_update, rmsprop_update, 2-12) bit for bit.
#include <math.h>

#define __device__
#define __forceinline__ inline
#include "../adam.cuh"
#include "../updates.cuh"

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

// sgd_update of optimizers.cu over n elements; buf is read and written only when use_momentum (else may be null).
// Each flag combination is its own loop (the flags constant in it), so that the compiler vectorizes it.
template <typename T, int UseMomentum, int Nesterov, int FirstStep>
void sgd_loop(xpnn_sgd_params<T> h, T* param, const T* grad, T* buf, long long n) {
    h.use_momentum = UseMomentum;
    h.nesterov = Nesterov;
    h.first_step = FirstStep;
    if (UseMomentum) {
        for (long long i = 0; i < n; ++i) xpnn_sgd_element(h, param[i], grad[i], buf[i]);
    } else {
        T unused = T(0);
        for (long long i = 0; i < n; ++i) xpnn_sgd_element(h, param[i], grad[i], unused);
    }
}

template <typename T>
void sgd(T* param, const T* grad, T* buf, long long n, T lr, T momentum, T one_minus_dampening, T weight_decay,
         int use_momentum, int nesterov, int first_step, int maximize) {
    const xpnn_sgd_params<T> h = {lr, momentum, one_minus_dampening, weight_decay, use_momentum, nesterov,
                                  first_step, maximize};
    if (!use_momentum) {
        sgd_loop<T, 0, 0, 0>(h, param, grad, buf, n);
    } else if (first_step) {
        if (nesterov) sgd_loop<T, 1, 1, 1>(h, param, grad, buf, n);
        else sgd_loop<T, 1, 0, 1>(h, param, grad, buf, n);
    } else {
        if (nesterov) sgd_loop<T, 1, 1, 0>(h, param, grad, buf, n);
        else sgd_loop<T, 1, 0, 0>(h, param, grad, buf, n);
    }
}

// adagrad_update of optimizers.cu over n elements.
template <typename T>
void adagrad(T* param, const T* grad, T* state_sum, long long n, T clr, T weight_decay, T eps, int maximize) {
    for (long long i = 0; i < n; ++i) xpnn_adagrad_element(clr, weight_decay, eps, maximize, param[i], grad[i],
                                                           state_sum[i]);
}

// rmsprop_update of optimizers.cu over n elements; grad_avg is read and written only when centered, buf only when
// use_momentum (else either may be null). Each combination of the two is its own loop, as in sgd_loop.
template <typename T, int Centered, int UseMomentum>
void rmsprop_loop(xpnn_rmsprop_params<T> h, T* param, const T* grad, T* square_avg, T* grad_avg, T* buf,
                  long long n) {
    h.centered = Centered;
    h.use_momentum = UseMomentum;
    T unused_ga = T(0), unused_buf = T(0);
    for (long long i = 0; i < n; ++i) {
        xpnn_rmsprop_element(h, param[i], grad[i], square_avg[i], Centered ? grad_avg[i] : unused_ga,
                             UseMomentum ? buf[i] : unused_buf);
    }
}

template <typename T>
void rmsprop(T* param, const T* grad, T* square_avg, T* grad_avg, T* buf, long long n, T lr, T alpha,
             T one_minus_alpha, T eps, T weight_decay, T momentum, int centered, int use_momentum, int maximize) {
    const xpnn_rmsprop_params<T> h = {lr, alpha, one_minus_alpha, eps, weight_decay, momentum, centered,
                                      use_momentum, maximize};
    if (centered) {
        if (use_momentum) rmsprop_loop<T, 1, 1>(h, param, grad, square_avg, grad_avg, buf, n);
        else rmsprop_loop<T, 1, 0>(h, param, grad, square_avg, grad_avg, buf, n);
    } else {
        if (use_momentum) rmsprop_loop<T, 0, 1>(h, param, grad, square_avg, grad_avg, buf, n);
        else rmsprop_loop<T, 0, 0>(h, param, grad, square_avg, grad_avg, buf, n);
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

XPNN_CPU_API void xpnn_cpu_sgd_float32(float* param, const float* grad, float* momentum_buffer, long long n,
                                     float lr, float momentum, float one_minus_dampening, float weight_decay,
                                     int use_momentum, int nesterov, int first_step, int maximize) {
    sgd(param, grad, momentum_buffer, n, lr, momentum, one_minus_dampening, weight_decay, use_momentum, nesterov,
        first_step, maximize);
}

XPNN_CPU_API void xpnn_cpu_adagrad_float32(float* param, const float* grad, float* state_sum, long long n,
                                         float clr, float weight_decay, float eps, int maximize) {
    adagrad(param, grad, state_sum, n, clr, weight_decay, eps, maximize);
}

XPNN_CPU_API void xpnn_cpu_rmsprop_float32(float* param, const float* grad, float* square_avg, float* grad_avg,
                                         float* momentum_buffer, long long n, float lr, float alpha,
                                         float one_minus_alpha, float eps, float weight_decay, float momentum,
                                         int centered, int use_momentum, int maximize) {
    rmsprop(param, grad, square_avg, grad_avg, momentum_buffer, n, lr, alpha, one_minus_alpha, eps, weight_decay,
            momentum, centered, use_momentum, maximize);
}

XPNN_CPU_API void xpnn_cpu_sgd_float64(double* param, const double* grad, double* momentum_buffer, long long n,
                                     double lr, double momentum, double one_minus_dampening, double weight_decay,
                                     int use_momentum, int nesterov, int first_step, int maximize) {
    sgd(param, grad, momentum_buffer, n, lr, momentum, one_minus_dampening, weight_decay, use_momentum, nesterov,
        first_step, maximize);
}

XPNN_CPU_API void xpnn_cpu_adagrad_float64(double* param, const double* grad, double* state_sum, long long n,
                                         double clr, double weight_decay, double eps, int maximize) {
    adagrad(param, grad, state_sum, n, clr, weight_decay, eps, maximize);
}

XPNN_CPU_API void xpnn_cpu_rmsprop_float64(double* param, const double* grad, double* square_avg, double* grad_avg,
                                         double* momentum_buffer, long long n, double lr, double alpha,
                                         double one_minus_alpha, double eps, double weight_decay, double momentum,
                                         int centered, int use_momentum, int maximize) {
    rmsprop(param, grad, square_avg, grad_avg, momentum_buffer, n, lr, alpha, one_minus_alpha, eps, weight_decay,
            momentum, centered, use_momentum, maximize);
}
