// Optimizer updates over a flat parameter buffer: one launch, a grid-stride loop, each element read and written once.
// Formulas follow torch.optim (see xpnn/functional/updates.py, the reference). Hyperparameters that the reference
// derives in Python (1 - beta, lr / bias_correction, ...) arrive precomputed, rounded to T as the reference rounds
// them, and products are grouped as in the reference so that results agree to the last bit where the compiler does
// not contract a*b+c into an FMA (the CPU shim; on a GPU they agree to an ulp or so). Optional state buffers the
// options leave unused are never touched (the launcher passes a placeholder).
#include "common.cuh"

// Adam / AdamW (decoupled != 0): g = -grad if maximize; p *= decay (= 1 - lr*wd) if decoupled, elif wd: g += wd*p;
// m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g; vmax = max(vmax, v) if amsgrad;
// p -= step_size * m / (sqrt(v or vmax) / bc2_sqrt + eps),
// step_size = lr / (1 - b1^step), bc2_sqrt = sqrt(1 - b2^step).
template <typename T>
__global__ void __launch_bounds__(256)
adam_update(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ exp_avg, T* __restrict__ exp_avg_sq,
            T* max_exp_avg_sq, long long n, T beta1, T one_minus_beta1, T beta2, T one_minus_beta2, T eps,
            T weight_decay, T decay, T step_size, T bc2_sqrt, int decoupled, int amsgrad, int maximize) {
    const xpnn_adam_params<T> h = {beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, decay,
                                   step_size, bc2_sqrt, decoupled, amsgrad, maximize};
    T* const arrays[5] = {param, const_cast<T*>(grad), exp_avg, exp_avg_sq, amsgrad ? max_exp_avg_sq : nullptr};
    xpnn_flat_update(arrays, 0x1du, n, [&](T (&x)[5]) {  // stores: param, exp_avg, exp_avg_sq, max_exp_avg_sq
        xpnn_adam_element(h, x[0], x[1], x[2], x[3], x[4]);
    });
}

// SGD: g = -grad if maximize; g += wd*p; with momentum: buf = g on the first step else
// buf = momentum*buf + (1-dampening)*g, g = g + momentum*buf if nesterov else buf; p -= lr*g
// (xpnn_sgd_element, updates.cuh).
template <typename T>
__global__ void __launch_bounds__(256)
sgd_update(T* __restrict__ param, const T* __restrict__ grad, T* momentum_buffer, long long n, T lr, T momentum,
           T one_minus_dampening, T weight_decay, int use_momentum, int nesterov, int first_step, int maximize) {
    const xpnn_sgd_params<T> h = {lr, momentum, one_minus_dampening, weight_decay, use_momentum, nesterov,
                                  first_step, maximize};
    T* const arrays[3] = {param, const_cast<T*>(grad), use_momentum ? momentum_buffer : nullptr};
    xpnn_flat_update(arrays, 0x5u, n, [&](T (&x)[3]) { xpnn_sgd_element(h, x[0], x[1], x[2]); });
}

// Adagrad: g = -grad if maximize; g += wd*p; sum += g*g; p -= clr * g / (sqrt(sum) + eps),
// clr = lr / (1 + (step - 1) * lr_decay) (xpnn_adagrad_element, updates.cuh).
template <typename T>
__global__ void __launch_bounds__(256)
adagrad_update(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ state_sum, long long n, T clr,
               T weight_decay, T eps, int maximize) {
    T* const arrays[3] = {param, const_cast<T*>(grad), state_sum};
    xpnn_flat_update(arrays, 0x5u, n, [&](T (&x)[3]) {
        xpnn_adagrad_element(clr, weight_decay, eps, maximize, x[0], x[1], x[2]);
    });
}

// RMSprop: g = -grad if maximize; g += wd*p; sq = alpha*sq + (1-alpha)*g*g;
// centered: ga = alpha*ga + (1-alpha)*g, avg = sqrt(sq - ga*ga) + eps; else avg = sqrt(sq) + eps;
// momentum: buf = momentum*buf + g/avg, p -= lr*buf; else p -= lr*g/avg (xpnn_rmsprop_element, updates.cuh).
template <typename T>
__global__ void __launch_bounds__(256)
rmsprop_update(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ square_avg, T* grad_avg,
               T* momentum_buffer, long long n, T lr, T alpha, T one_minus_alpha, T eps, T weight_decay, T momentum,
               int centered, int use_momentum, int maximize) {
    const xpnn_rmsprop_params<T> h = {lr, alpha, one_minus_alpha, eps, weight_decay, momentum, centered,
                                      use_momentum, maximize};
    T* const arrays[5] = {param, const_cast<T*>(grad), square_avg, centered ? grad_avg : nullptr,
                          use_momentum ? momentum_buffer : nullptr};
    xpnn_flat_update(arrays, 0x1du, n, [&](T (&x)[5]) { xpnn_rmsprop_element(h, x[0], x[1], x[2], x[3], x[4]); });
}
