// The SGD, Adagrad and RMSprop updates of one element, shared by the CUDA kernels (optimizers.cu, capturable.cu) and
// the CPU kernels (cpu/optimizers.cpp), so that every compiled update runs the same expressions in the same order
// as the NumPy reference (xpnn/functional/updates.py: sgd_update, adagrad_update, rmsprop_update; formulas in
// optimizers.cu). Needs only acc.cuh (no CUDA headers): a host compiler includes it with __device__ and
// __forceinline__ defined away. The scalars arrive rounded to T as the reference rounds its Python floats; the
// flags (use_momentum, ...) are decided by the caller as the reference decides them (on the Python values).
#ifndef XPNN_UPDATES_CUH
#define XPNN_UPDATES_CUH

#include "acc.cuh"

// g = -grad if maximize; g += wd*p (when wd != 0)
template <typename T>
__device__ __forceinline__ T xpnn_update_grad(T grad, T p, T weight_decay, int maximize) {
    T g = maximize ? -grad : grad;
    if (weight_decay != T(0)) g = g + weight_decay * p;
    return g;
}

template <typename T>
struct xpnn_sgd_params {
    T lr, momentum, one_minus_dampening, weight_decay;
    int use_momentum, nesterov, first_step, maximize;
};

// SGD: p and (when use_momentum) buf updated in place; buf is neither read nor written otherwise.
template <typename T>
__device__ __forceinline__ void xpnn_sgd_element(const xpnn_sgd_params<T>& h, T& p_io, T grad, T& buf_io) {
    const T p = p_io;
    T g = xpnn_update_grad(grad, p, h.weight_decay, h.maximize);
    if (h.use_momentum) {
        const T b = h.first_step ? g : h.momentum * buf_io + h.one_minus_dampening * g;
        buf_io = b;
        g = h.nesterov ? g + h.momentum * b : b;
    }
    p_io = p - h.lr * g;
}

// Adagrad (clr = lr / (1 + (step - 1) * lr_decay)): p and sum updated in place.
template <typename T>
__device__ __forceinline__ void xpnn_adagrad_element(T clr, T weight_decay, T eps, int maximize, T& p_io, T grad,
                                                     T& sum_io) {
    const T p = p_io;
    const T g = xpnn_update_grad(grad, p, weight_decay, maximize);
    const T s = sum_io + g * g;
    sum_io = s;
    p_io = p - (g / (xpnn_sqrt(s) + eps)) * clr;
}

template <typename T>
struct xpnn_rmsprop_params {
    T lr, alpha, one_minus_alpha, eps, weight_decay, momentum;
    int centered, use_momentum, maximize;
};

// RMSprop: p and sq updated in place, ga when centered, buf when use_momentum (each untouched otherwise).
template <typename T>
__device__ __forceinline__ void xpnn_rmsprop_element(const xpnn_rmsprop_params<T>& h, T& p_io, T grad, T& sq_io,
                                                     T& ga_io, T& buf_io) {
    const T p = p_io;
    const T g = xpnn_update_grad(grad, p, h.weight_decay, h.maximize);
    const T sq = h.alpha * sq_io + (g * g) * h.one_minus_alpha;
    sq_io = sq;
    T avg;
    if (h.centered) {
        const T ga = h.alpha * ga_io + h.one_minus_alpha * g;
        ga_io = ga;
        avg = xpnn_sqrt(sq - ga * ga) + h.eps;
    } else {
        avg = xpnn_sqrt(sq) + h.eps;
    }
    if (h.use_momentum) {
        const T b = h.momentum * buf_io + g / avg;
        buf_io = b;
        p_io = p - h.lr * b;
    } else {
        p_io = p - (g / avg) * h.lr;
    }
}

#endif  // XPNN_UPDATES_CUH
