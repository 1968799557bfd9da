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
            v = xpnn_max(max_exp_avg_sq[i], v);
            max_exp_avg_sq[i] = v;
        }
        const T denom = xpnn_sqrt(v) / bc2_sqrt + eps;
        param[i] = p - (m / denom) * step_size;
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
