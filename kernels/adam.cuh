// The Adam / AdamW update of one element, shared by the CUDA kernels (optimizers.cu, capturable.cu, adam_mixed.cu)
// and the CPU kernels (cpu/optimizers.cpp), so that every compiled Adam runs the same expressions in the same order
// as the NumPy reference (xpnn/functional/updates.py, adam_update). Needs only acc.cuh (no CUDA headers): a host
// compiler includes it with __device__ and __forceinline__ defined away.
#ifndef XPNN_ADAM_CUH
#define XPNN_ADAM_CUH

#include "acc.cuh"

// One Adam / AdamW element (formulas in optimizers.cu, adam_update), shared by adam_update, adam_update_capturable
// and adam_update_mixed so that the three agree bit for bit: p, m, v (and vmax when amsgrad) updated in place.
template <typename T>
struct xpnn_adam_params {
    T beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, decay, step_size, bc2_sqrt;
    int decoupled, amsgrad, maximize;
};

template <typename T>
__device__ __forceinline__ void xpnn_adam_element(const xpnn_adam_params<T>& h, T& p_io, T grad, T& m_io, T& v_io,
                                                  T& vmax_io) {
    T p = p_io;
    T g = h.maximize ? -grad : grad;
    if (h.decoupled) {
        p = p * h.decay;
    } else if (h.weight_decay != T(0)) {
        g = g + h.weight_decay * p;
    }
    const T m = h.beta1 * m_io + h.one_minus_beta1 * g;
    T v = h.beta2 * v_io + (g * g) * h.one_minus_beta2;
    m_io = m;
    v_io = v;
    if (h.amsgrad) {
        v = xpnn_max_nan(vmax_io, v);  // NaN propagates, as in the reference (fmax drops it)
        vmax_io = v;
    }
    const T denom = xpnn_sqrt(v) / h.bc2_sqrt + h.eps;
    p_io = p - (m / denom) * h.step_size;
}

#endif  // XPNN_ADAM_CUH
