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

#endif  // XPNN_ACTIVATION_BACKWARD_CUH
