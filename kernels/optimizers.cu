// Optimizer updates over a flat parameter buffer: one launch, a grid-stride loop, each element read and written once.
// Formulas follow torch.optim (see xpnn/functional/updates.py, the reference). Hyperparameters that the reference
// derives in Python (1 - beta, lr / bias_correction, ...) arrive precomputed, rounded to T as the reference rounds
// them, and products are grouped as in the reference so that results agree to the last bit where the compiler does
// not contract a*b+c into an FMA (the CPU shim; on a GPU they agree to an ulp or so). Optional state buffers the
// options leave unused are never touched (the launcher passes a placeholder).
#include "common.cuh"

// Not unrolled: the loop body is memory-bound, and unrolling multiplies compile time (and code size) by ~4.
#define XPNN_GRID_STRIDE(i, n)                                                     \
    XPNN_NO_UNROLL for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; \
                        i < (n); i += (long long)gridDim.x * blockDim.x)

// Adam / AdamW (decoupled != 0): g = -grad if maximize; p *= decay (= 1 - lr*wd) if decoupled, elif wd: g += wd*p;
// m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g; vmax = max(vmax, v) if amsgrad;
// p -= step_size * m / (sqrt(v or vmax) / bc2_sqrt + eps),
// step_size = lr / (1 - b1^step), bc2_sqrt = sqrt(1 - b2^step).
template <typename T>
__global__ void __launch_bounds__(256)
adam_update(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ exp_avg, T* __restrict__ exp_avg_sq,
            T* max_exp_avg_sq, long long n, T beta1, T one_minus_beta1, T beta2, T one_minus_beta2, T eps,
            T weight_decay, T decay, T step_size, T bc2_sqrt, int decoupled, int amsgrad, int maximize) {
    XPNN_GRID_STRIDE(i, n) {
        T p = param[i];
        T g = maximize ? -grad[i] : grad[i];
        if (decoupled) {
            p = p * decay;
        } else if (weight_decay != T(0)) {
            g = g + weight_decay * p;
        }
        const T m = beta1 * exp_avg[i] + one_minus_beta1 * g;
        T v = beta2 * exp_avg_sq[i] + (g * g) * one_minus_beta2;
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        if (amsgrad) {
            v = xpnn_max_nan(max_exp_avg_sq[i], v);  // NaN propagates, as in the reference (fmax drops it)
            max_exp_avg_sq[i] = v;
        }
        const T denom = xpnn_sqrt(v) / bc2_sqrt + eps;
        param[i] = p - (m / denom) * step_size;
    }
}

// SGD: g = -grad if maximize; g += wd*p; with momentum: buf = g on the first step else
// buf = momentum*buf + (1-dampening)*g, g = g + momentum*buf if nesterov else buf; p -= lr*g.
template <typename T>
__global__ void __launch_bounds__(256)
sgd_update(T* __restrict__ param, const T* __restrict__ grad, T* momentum_buffer, long long n, T lr, T momentum,
           T one_minus_dampening, T weight_decay, int use_momentum, int nesterov, int first_step, int maximize) {
    XPNN_GRID_STRIDE(i, n) {
        const T p = param[i];
        T g = maximize ? -grad[i] : grad[i];
        if (weight_decay != T(0)) g = g + weight_decay * p;
        if (use_momentum) {
            const T b = first_step ? g : momentum * momentum_buffer[i] + one_minus_dampening * g;
            momentum_buffer[i] = b;
            g = nesterov ? g + momentum * b : b;
        }
        param[i] = p - lr * g;
    }
}

// Adagrad: g = -grad if maximize; g += wd*p; sum += g*g; p -= clr * g / (sqrt(sum) + eps),
// clr = lr / (1 + (step - 1) * lr_decay).
template <typename T>
__global__ void __launch_bounds__(256)
adagrad_update(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ state_sum, long long n, T clr,
               T weight_decay, T eps, int maximize) {
    XPNN_GRID_STRIDE(i, n) {
        const T p = param[i];
        T g = maximize ? -grad[i] : grad[i];
        if (weight_decay != T(0)) g = g + weight_decay * p;
        const T s = state_sum[i] + g * g;
        state_sum[i] = s;
        param[i] = p - (g / (xpnn_sqrt(s) + eps)) * clr;
    }
}

// RMSprop: g = -grad if maximize; g += wd*p; sq = alpha*sq + (1-alpha)*g*g;
// centered: ga = alpha*ga + (1-alpha)*g, avg = sqrt(sq - ga*ga) + eps; else avg = sqrt(sq) + eps;
// momentum: buf = momentum*buf + g/avg, p -= lr*buf; else p -= lr*g/avg.
template <typename T>
__global__ void __launch_bounds__(256)
rmsprop_update(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ square_avg, T* grad_avg,
               T* momentum_buffer, long long n, T lr, T alpha, T one_minus_alpha, T eps, T weight_decay, T momentum,
               int centered, int use_momentum, int maximize) {
    XPNN_GRID_STRIDE(i, n) {
        const T p = param[i];
        T g = maximize ? -grad[i] : grad[i];
        if (weight_decay != T(0)) g = g + weight_decay * p;
        const T sq = alpha * square_avg[i] + (g * g) * one_minus_alpha;
        square_avg[i] = sq;
        T avg;
        if (centered) {
            const T ga = alpha * grad_avg[i] + one_minus_alpha * g;
            grad_avg[i] = ga;
            avg = xpnn_sqrt(sq - ga * ga) + eps;
        } else {
            avg = xpnn_sqrt(sq) + eps;
        }
        if (use_momentum) {
            const T b = momentum * momentum_buffer[i] + g / avg;
            momentum_buffer[i] = b;
            param[i] = p - lr * b;
        } else {
            param[i] = p - (g / avg) * lr;
        }
    }
}
