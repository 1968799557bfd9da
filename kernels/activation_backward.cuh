// Activation backwards, one line each. Used as the preamble of CuPy ElementwiseKernels (one kernel per op; the
// loop body is the `operation` of the op's row in xpnn/_cuda/registry.py) and by the CPU shim's loops.
// A is the accumulation type (float for float16 data). Each reads its two inputs once and writes dx once.
#ifndef XPNN_ACTIVATION_BACKWARD_CUH
#define XPNN_ACTIVATION_BACKWARD_CUH

#include "acc.cuh"

#define XPNN_SELU_SCALE 1.0507009873554804934193349852946
#define XPNN_SELU_SCALE_ALPHA 1.7580993408473768599402175208123  // scale * alpha

// y = sigmoid(x): dx = dy * y * (1 - y)
template <typename A>
__device__ __forceinline__ A xpnn_sigmoid_backward(A y, A dy) { return dy * y * (A(1) - y); }

// y = tanh(x): dx = dy * (1 - y^2)
template <typename A>
__device__ __forceinline__ A xpnn_tanh_backward(A y, A dy) { return dy * (A(1) - y * y); }

// dx = 0 where x <= 0 else dy: PyTorch's threshold_backward, so dy = NaN at x <= 0 gives 0 and x = NaN passes dy
template <typename A>
__device__ __forceinline__ A xpnn_relu_backward(A x, A dy) { return x <= A(0) ? A(0) : dy; }

// dx = dy where x > 0 else negative_slope * dy
template <typename A>
__device__ __forceinline__ A xpnn_leaky_relu_backward(A x, A dy, A negative_slope) {
    return x > A(0) ? dy : dy * negative_slope;
}

// dx = dy * alpha * exp(x) where x <= 0 (exp cannot overflow there) else dy: PyTorch's elu_backward, so x = NaN
// passes dy
template <typename A>
__device__ __forceinline__ A xpnn_elu_backward(A x, A dy, A alpha) {
    return x <= A(0) ? dy * (alpha * xpnn_exp(x)) : dy;
}

// dx = dy * scale * alpha * exp(x) where x <= 0 else scale * dy (x = NaN too, as in PyTorch)
template <typename A>
__device__ __forceinline__ A xpnn_selu_backward(A x, A dy) {
    return x <= A(0) ? dy * (A(XPNN_SELU_SCALE_ALPHA) * xpnn_exp(x)) : dy * A(XPNN_SELU_SCALE);
}

// sigmoid(z) without overflow: e = exp(-|z|) <= 1, then 1 / (1 + e) for z >= 0 and e / (1 + e) below
template <typename A>
__device__ __forceinline__ A xpnn_stable_sigmoid(A z) {
    const A e = xpnn_exp(-xpnn_abs(z));
    return z >= A(0) ? A(1) / (A(1) + e) : e / (A(1) + e);
}

// y = softplus(x) = log1p(exp(beta * x)) / beta, x where beta * x > threshold (torch.nn.functional.softplus):
// dx = dy * sigmoid(beta * x), dy where beta * x > threshold (PyTorch's softplus_backward)
template <typename A>
__device__ __forceinline__ A xpnn_softplus_backward(A x, A dy, A beta, A threshold) {
    const A z = x * beta;
    return z > threshold ? dy : dy * xpnn_stable_sigmoid(z);
}

// y = mish(x) = x * tanh(softplus(x)) (Misra 2019): dx = dy * (t + x * (1 - t^2) * sigmoid(x)), t = tanh(softplus(x)),
// softplus(x) = log1p(exp(-|x|)) + max(x, 0) (never overflows)
template <typename A>
__device__ __forceinline__ A xpnn_mish_backward(A x, A dy) {
    const A t = xpnn_tanh(xpnn_log1p(xpnn_exp(-xpnn_abs(x))) + (x > A(0) ? x : A(0)));
    return dy * (t + x * (A(1) - t * t) * xpnn_stable_sigmoid(x));
}

// GELU (Hendrycks & Gimpel 2016; torch.nn.functional.gelu), `approximate` 0 for "none", 1 for "tanh":
//   none: y = x Phi(x) = x / 2 (1 + erf(x / sqrt 2)),  dx = dy (Phi(x) + x phi(x)),
//         phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
//   tanh: y = x / 2 (1 + tanh(u)),  u = sqrt(2 / pi) (x + 0.044715 x^3),
//         dx = dy (1 / 2 (1 + tanh(u)) + x / 2 (1 - tanh(u)^2) sqrt(2 / pi) (1 + 3 * 0.044715 x^2))
// (PyTorch's GeluCUDAKernelImpl / GeluBackwardCUDAKernelImpl, same order of operations)
#define XPNN_SQRT1_2 0.70710678118654752440
#define XPNN_SQRT_2_OVER_PI 0.79788456080286535588  // sqrt(2 / pi)
#define XPNN_INV_SQRT_2PI 0.39894228040143267794  // 1 / sqrt(2 pi)
#define XPNN_GELU_KAPPA 0.044715

template <typename A>
__device__ __forceinline__ A xpnn_gelu(A x, A approximate) {
    if (approximate != A(0)) {
        const A u = A(XPNN_SQRT_2_OVER_PI) * (x + A(XPNN_GELU_KAPPA) * x * x * x);
        return A(0.5) * x * (A(1) + xpnn_tanh(u));
    }
    return x * A(0.5) * (A(1) + xpnn_erf(x * A(XPNN_SQRT1_2)));
}

template <typename A>
__device__ __forceinline__ A xpnn_gelu_backward(A x, A dy, A approximate) {
    if (approximate != A(0)) {
        const A x_sq = x * x;
        const A t = xpnn_tanh(A(XPNN_SQRT_2_OVER_PI) * (x + A(XPNN_GELU_KAPPA) * x_sq * x));
        const A left = A(0.5) * x, right = A(1) + t;
        const A right_derivative = left * (A(1) - t * t) * A(XPNN_SQRT_2_OVER_PI) *
                                   (A(1) + A(3 * XPNN_GELU_KAPPA) * x_sq);
        return dy * (A(0.5) * right + right_derivative);
    }
    const A cdf = A(0.5) * (A(1) + xpnn_erf(x * A(XPNN_SQRT1_2)));
    const A pdf = xpnn_exp(A(-0.5) * x * x) * A(XPNN_INV_SQRT_2PI);
    return dy * (cdf + x * pdf);
}

// SiLU (swish, Elfwing et al. 2017; torch.nn.functional.silu): y = x sigmoid(x), dx = dy s (1 + x (1 - s)),
// s = sigmoid(x)
template <typename A>
__device__ __forceinline__ A xpnn_silu(A x) { return x * xpnn_stable_sigmoid(x); }

template <typename A>
__device__ __forceinline__ A xpnn_silu_backward(A x, A dy) {
    const A s = xpnn_stable_sigmoid(x);
    return dy * (s * (A(1) + x * (A(1) - s)));
}

#endif  // XPNN_ACTIVATION_BACKWARD_CUH
