// Kernels of a training step that never waits for the host (issue 13): they read what changes between steps --
// the step count, the learning rate, the loss scale -- from device memory instead of launch arguments, so a CUDA
// graph that captured them stays right when a schedule changes the learning rate, and they report what the host
// would otherwise have to read (inf/NaN in the gradients) into a device flag.
// The reference is the array-API code in xpnn/functional/updates.py (capturable form: step and lr as 0-d arrays)
// and xpnn/amp.py (unscale_and_check_); products are grouped as there.
#include "common.cuh"

#define XPNN_SCALARS_ADAM 0
#define XPNN_SCALARS_ADAGRAD 1

// The step's scalars, derived once per step by one thread (not by every thread of the update: two double pow, a
// sqrt and divisions each), in double from the double hyperparameters and the device step count t = *step and
// lr = *lr, rounded to T once (in T, 1 - 0.999^t would lose ~5 digits to cancellation), into scalars[]:
//   XPNN_SCALARS_ADAM:    [step_size = lr / (1 - beta1^t), bc2_sqrt = sqrt(1 - beta2^t), decay = 1 - lr * wd]
//   XPNN_SCALARS_ADAGRAD: [clr = lr / (1 + (t - 1) * lr_decay)]
// The launcher runs it just before the update on the same stream (kernels on one stream run in order, also as
// nodes of a captured CUDA graph), so the update reads finished values; scalars is a kept device array.
template <typename T>
__global__ void __launch_bounds__(32)
capturable_step_scalars(const T* __restrict__ step, const T* __restrict__ lr, double beta1, double beta2,
                        double weight_decay, double lr_decay, int kind, T* __restrict__ scalars) {
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        const double t = (double)*step;
        const double rate = (double)*lr;
        if (kind == XPNN_SCALARS_ADAM) {
            scalars[0] = (T)(rate / (1.0 - pow(beta1, t)));
            scalars[1] = (T)sqrt(1.0 - pow(beta2, t));
            scalars[2] = (T)(1.0 - rate * weight_decay);
        } else {
            scalars[0] = (T)(rate / (1.0 + (t - 1.0) * lr_decay));
        }
    }
}

// Adam / AdamW with the scalars of capturable_step_scalars (XPNN_SCALARS_ADAM, same launch stream): exactly
// adam_update in optimizers.cu (xpnn_adam_element, 16-byte packs of every buffer).
template <typename T>
__global__ void __launch_bounds__(256)
adam_update_capturable(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ exp_avg,
                       T* __restrict__ exp_avg_sq, T* max_exp_avg_sq, long long n, const T* __restrict__ scalars,
                       T beta1, T one_minus_beta1, T beta2, T one_minus_beta2, T eps, T weight_decay, int decoupled,
                       int amsgrad, int maximize) {
    const xpnn_adam_params<T> h = {beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, scalars[2],
                                   scalars[0], scalars[1], decoupled, amsgrad, maximize};
    T* const arrays[5] = {param, const_cast<T*>(grad), exp_avg, exp_avg_sq, amsgrad ? max_exp_avg_sq : nullptr};
    xpnn_flat_update(arrays, 0x1du, n, [&](T (&x)[5]) {  // stores: param, exp_avg, exp_avg_sq, max_exp_avg_sq
        xpnn_adam_element(h, x[0], x[1], x[2], x[3], x[4]);
    });
}

// SGD as sgd_update in optimizers.cu (xpnn_sgd_element), with lr = *lr.
template <typename T>
__global__ void __launch_bounds__(256)
sgd_update_capturable(T* __restrict__ param, const T* __restrict__ grad, T* momentum_buffer, long long n,
                      const T* __restrict__ lr, T momentum, T one_minus_dampening, T weight_decay, int use_momentum,
                      int nesterov, int first_step, int maximize) {
    const xpnn_sgd_params<T> h = {*lr, momentum, one_minus_dampening, weight_decay, use_momentum, nesterov,
                                  first_step, maximize};
    T* const arrays[3] = {param, const_cast<T*>(grad), use_momentum ? momentum_buffer : nullptr};
    xpnn_flat_update(arrays, 0x5u, n, [&](T (&x)[3]) { xpnn_sgd_element(h, x[0], x[1], x[2]); });
}

// Adagrad as adagrad_update in optimizers.cu (xpnn_adagrad_element), with clr from capturable_step_scalars
// (XPNN_SCALARS_ADAGRAD).
template <typename T>
__global__ void __launch_bounds__(256)
adagrad_update_capturable(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ state_sum, long long n,
                          const T* __restrict__ scalars, T weight_decay, T eps, int maximize) {
    T* const arrays[3] = {param, const_cast<T*>(grad), state_sum};
    xpnn_flat_update(arrays, 0x5u, n, [&](T (&x)[3]) {
        // clr read per element (an L1 hit), not held in a register: across the call of double division's slow path
        // a held value was spilled to the stack
        xpnn_adagrad_element(scalars[0], weight_decay, eps, maximize, x[0], x[1], x[2]);
    });
}

// RMSprop as rmsprop_update in optimizers.cu (xpnn_rmsprop_element), with lr = *lr.
template <typename T>
__global__ void __launch_bounds__(256)
rmsprop_update_capturable(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ square_avg,
                          T* grad_avg, T* momentum_buffer, long long n, const T* __restrict__ lr, T alpha,
                          T one_minus_alpha, T eps, T weight_decay, T momentum, int centered, int use_momentum,
                          int maximize) {
    const xpnn_rmsprop_params<T> h = {*lr, alpha, one_minus_alpha, eps, weight_decay, momentum, centered,
                                      use_momentum, maximize};
    T* const arrays[5] = {param, const_cast<T*>(grad), square_avg, centered ? grad_avg : nullptr,
                          use_momentum ? momentum_buffer : nullptr};
    xpnn_flat_update(arrays, 0x1du, n, [&](T (&x)[5]) { xpnn_rmsprop_element(h, x[0], x[1], x[2], x[3], x[4]); });
}

// Loss scaling (GradScaler): grad *= *inv_scale in place, and *found_inf = 1 when any element was inf/NaN before
// scaling -- one pass over the gradient buffer, in 16-byte packs (8 float16, 4 float, 2 double: one 128-bit load
// and store each) when grad is 16-byte aligned, then a scalar tail. A value is finite iff g - g == 0 (inf - inf and
// NaN give NaN). Threads that saw one store 1.0f (the same value: the race is benign); nobody ever stores 0 here.
template <typename T>
__global__ void __launch_bounds__(256)
amp_unscale_check(T* __restrict__ grad, long long n, const float* __restrict__ inv_scale,
                  float* __restrict__ found_inf) {
    typedef typename xpnn_acc<T>::type A;
    const int V = 16 / (int)sizeof(T);
    const A s = (A)*inv_scale;
    bool bad = false;
    const long long n_packs = (unsigned long long)grad % 16u == 0u ? n / V : 0;
    const long long first = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    const long long stride = (long long)gridDim.x * blockDim.x;
    XPNN_NO_UNROLL for (long long k = first; k < n_packs; k += stride) {
        xpnn_pack<T> p = xpnn_load_pack(grad + k * V);
        XPNN_UNROLL
        for (int j = 0; j < V; ++j) {
            const A g = xpnn_to_acc(p.v[j]);
            if (!((g - g) == A(0))) bad = true;
            p.v[j] = xpnn_from_acc<T>(g * s);
        }
        *reinterpret_cast<xpnn_pack<T>*>(grad + k * V) = p;
    }
    XPNN_NO_UNROLL for (long long i = n_packs * V + first; i < n; i += stride) {
        const A g = xpnn_to_acc(grad[i]);
        if (!((g - g) == A(0))) bad = true;
        grad[i] = xpnn_from_acc<T>(g * s);
    }
    if (bad) *found_inf = 1.0f;
}
