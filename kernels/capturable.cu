// Kernels of a training step that never waits for the host (issue 13): they read what changes between steps --
// the step count, the learning rate, the loss scale -- from device memory instead of launch arguments, so a CUDA
// graph that captured them stays right when a schedule changes the learning rate, and they report what the host
// would otherwise have to read (inf/NaN in the gradients) into a device flag.
// The reference is the array-API code in xpnn/functional/updates.py (capturable form: step and lr as 0-d arrays)
// and xpnn/amp.py (unscale_and_check_); products are grouped as there.
#include "common.cuh"

#define XPNN_CAPTURABLE_GRID_STRIDE(i, n)                                                   \
    XPNN_NO_UNROLL for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; \
                        i < (n); i += (long long)gridDim.x * blockDim.x)

// Adam / AdamW with the step count t = *step (already counting this step) and lr = *lr on the device. The scalars
// the Python path derives in float64 are derived here in double too, from the double hyperparameters, and rounded
// to T once (in T, 1 - 0.999^t would lose ~5 digits to cancellation):
// step_size = lr / (1 - beta1^t), bc2_sqrt = sqrt(1 - beta2^t), decay = 1 - lr * weight_decay;
// then exactly adam_update in optimizers.cu. Every thread derives the same scalars from the same two loads.
template <typename T>
__global__ void __launch_bounds__(256)
adam_update_capturable(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ exp_avg,
                       T* __restrict__ exp_avg_sq, T* max_exp_avg_sq, long long n, const T* __restrict__ step,
                       const T* __restrict__ lr, T beta1, T one_minus_beta1, T beta2, T one_minus_beta2, T eps,
                       T weight_decay, double beta1_d, double beta2_d, double weight_decay_d, int decoupled,
                       int amsgrad, int maximize) {
    const double t = (double)*step;
    const double rate = (double)*lr;
    const T step_size = (T)(rate / (1.0 - pow(beta1_d, t)));
    const T bc2_sqrt = (T)sqrt(1.0 - pow(beta2_d, t));
    const T decay = (T)(1.0 - rate * weight_decay_d);
    XPNN_CAPTURABLE_GRID_STRIDE(i, n) {
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

// SGD as sgd_update in optimizers.cu, with lr = *lr.
template <typename T>
__global__ void __launch_bounds__(256)
sgd_update_capturable(T* __restrict__ param, const T* __restrict__ grad, T* momentum_buffer, long long n,
                      const T* __restrict__ lr, T momentum, T one_minus_dampening, T weight_decay, int use_momentum,
                      int nesterov, int first_step, int maximize) {
    const T rate = *lr;
    XPNN_CAPTURABLE_GRID_STRIDE(i, n) {
        const T p = param[i];
        T g = maximize ? -grad[i] : grad[i];
        if (weight_decay != T(0)) g = g + weight_decay * p;
        if (use_momentum) {
            const T b = first_step ? g : momentum * momentum_buffer[i] + one_minus_dampening * g;
            momentum_buffer[i] = b;
            g = nesterov ? g + momentum * b : b;
        }
        param[i] = p - (g * rate);
    }
}

// Adagrad as adagrad_update in optimizers.cu, with clr = lr / (1 + (t - 1) * lr_decay) from t = *step, lr = *lr,
// derived in double and rounded once (as the Python path does).
template <typename T>
__global__ void __launch_bounds__(256)
adagrad_update_capturable(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ state_sum, long long n,
                          const T* __restrict__ step, const T* __restrict__ lr, double lr_decay, T weight_decay,
                          T eps, int maximize) {
    const T clr = (T)((double)*lr / (1.0 + ((double)*step - 1.0) * lr_decay));
    XPNN_CAPTURABLE_GRID_STRIDE(i, n) {
        const T p = param[i];
        T g = maximize ? -grad[i] : grad[i];
        if (weight_decay != T(0)) g = g + weight_decay * p;
        const T s = state_sum[i] + g * g;
        state_sum[i] = s;
        param[i] = p - (g / (xpnn_sqrt(s) + eps)) * clr;
    }
}

// RMSprop as rmsprop_update in optimizers.cu, with lr = *lr.
template <typename T>
__global__ void __launch_bounds__(256)
rmsprop_update_capturable(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ square_avg,
                          T* grad_avg, T* momentum_buffer, long long n, const T* __restrict__ lr, T alpha,
                          T one_minus_alpha, T eps, T weight_decay, T momentum, int centered, int use_momentum,
                          int maximize) {
    const T rate = *lr;
    XPNN_CAPTURABLE_GRID_STRIDE(i, n) {
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
            param[i] = p - b * rate;
        } else {
            param[i] = p - (g / avg) * rate;
        }
    }
}

// Loss scaling (GradScaler): grad *= *inv_scale in place, and *found_inf = 1 when any element was inf/NaN before
// scaling -- one pass over the gradient buffer. A value is finite iff g - g == 0 (inf - inf and NaN give NaN).
// Threads that saw one store 1.0f (the same value: the race is benign); nobody ever stores 0 here.
template <typename T>
__global__ void __launch_bounds__(256)
amp_unscale_check(T* __restrict__ grad, long long n, const float* __restrict__ inv_scale,
                  float* __restrict__ found_inf) {
    typedef typename xpnn_acc<T>::type A;
    const A s = (A)*inv_scale;
    bool bad = false;
    XPNN_CAPTURABLE_GRID_STRIDE(i, n) {
        const A g = xpnn_to_acc(grad[i]);
        if (!((g - g) == A(0))) bad = true;
        grad[i] = xpnn_from_acc<T>(g * s);
    }
    if (bad) *found_inf = 1.0f;
}
