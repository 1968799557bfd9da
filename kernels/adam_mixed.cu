// Adam / AdamW for float16 parameters with float32 master copies, in one pass: reads the float16 gradient and the
// float32 master and moments, writes the master, the moments and the float16 parameter (28 bytes per parameter).
// The math is adam_update's (xpnn_adam_element in common.cuh) in float, element by element in the same order,
// so that it agrees bit for bit with the reference (xpnn/functional/mixed_precision.py: cast the gradient up,
// adam_update on the master, cast the master down) where the compiler does not contract a*b+c (the CPU shim).
// Each thread handles 8 entries per step when every array is 16-byte aligned: one 128-bit access per float16
// array, two per float32 array; else (and for the tail) one entry at a time.
#include "common.cuh"

template <typename T>
__global__ void __launch_bounds__(256)
adam_update_mixed(T* __restrict__ param, float* __restrict__ master, const T* __restrict__ grad,
                  float* __restrict__ exp_avg, float* __restrict__ exp_avg_sq, float* max_exp_avg_sq, long long n,
                  float beta1, float one_minus_beta1, float beta2, float one_minus_beta2, float eps,
                  float weight_decay, float decay, float step_size, float bc2_sqrt, int decoupled, int amsgrad,
                  int maximize) {
    const xpnn_adam_params<float> hyper = {beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, decay,
                                           step_size, bc2_sqrt, decoupled, amsgrad, maximize};
    auto step = [&](float p, float g, float& m_io, float& v_io, float& vmax_io) -> float {
        xpnn_adam_element(hyper, p, g, m_io, v_io, vmax_io);
        return p;
    };
    const unsigned long long any_misaligned =
        ((unsigned long long)param | (unsigned long long)master | (unsigned long long)grad |
         (unsigned long long)exp_avg | (unsigned long long)exp_avg_sq |
         (amsgrad ? (unsigned long long)max_exp_avg_sq : 0ull)) & 15ull;
    const long long n_groups = any_misaligned ? 0 : n / 8;
    const long long first = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    const long long stride = (long long)gridDim.x * blockDim.x;
    XPNN_NO_UNROLL for (long long k = first; k < n_groups; k += stride) {
        const long long i = k * 8;
        const xpnn_pack<T> g16 = xpnn_load_pack(grad + i);
        xpnn_pack<float> p32[2], m32[2], v32[2], x32[2];
        XPNN_UNROLL
        for (int h = 0; h < 2; ++h) {
            p32[h] = xpnn_load_pack(master + i + 4 * h);
            m32[h] = xpnn_load_pack(exp_avg + i + 4 * h);
            v32[h] = xpnn_load_pack(exp_avg_sq + i + 4 * h);
            if (amsgrad) {
                x32[h] = xpnn_load_pack(max_exp_avg_sq + i + 4 * h);
            } else {
                XPNN_UNROLL
                for (int j = 0; j < 4; ++j) x32[h].v[j] = 0.0f;
            }
        }
        xpnn_pack<T> p16;
        XPNN_UNROLL
        for (int j = 0; j < 8; ++j) {
            const int h = j / 4, e = j % 4;
            const float p = step(p32[h].v[e], xpnn_to_acc(g16.v[j]), m32[h].v[e], v32[h].v[e], x32[h].v[e]);
            p32[h].v[e] = p;
            p16.v[j] = xpnn_from_acc<T>(p);
        }
        XPNN_UNROLL
        for (int h = 0; h < 2; ++h) {
            *reinterpret_cast<xpnn_pack<float>*>(master + i + 4 * h) = p32[h];
            *reinterpret_cast<xpnn_pack<float>*>(exp_avg + i + 4 * h) = m32[h];
            *reinterpret_cast<xpnn_pack<float>*>(exp_avg_sq + i + 4 * h) = v32[h];
            if (amsgrad) *reinterpret_cast<xpnn_pack<float>*>(max_exp_avg_sq + i + 4 * h) = x32[h];
        }
        *reinterpret_cast<xpnn_pack<T>*>(param + i) = p16;
    }
    XPNN_NO_UNROLL for (long long i = n_groups * 8 + first; i < n; i += stride) {
        float m = exp_avg[i], v = exp_avg_sq[i], vmax = amsgrad ? max_exp_avg_sq[i] : 0.0f;
        const float p = step(master[i], xpnn_to_acc(grad[i]), m, v, vmax);
        master[i] = p;
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        if (amsgrad) max_exp_avg_sq[i] = vmax;
        param[i] = xpnn_from_acc<T>(p);
    }
}
