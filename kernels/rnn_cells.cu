// The pointwise part of one recurrent step, forward and backward, one thread per (row, unit) of the state: the
// reference is xpnn/functional/recurrent.py (step_forward / step_backward; PyTorch's formulas and gate order).
//
// LSTM: gates = gx + gh, (N, 4H) in the order i, f, g, o; c' = f * c + i * g, h' = o * tanh(c').
// GRU:  r = sigmoid(gx_r + gh_r), z = sigmoid(gx_z + gh_z), n = tanh(gx_n + r * gh_n), h' = (h - n) * z + n.
// Everything in the accumulation type A (float for float16 data), rounded once when stored. Index math in 32 bits:
// the launcher (xpnn/_cuda/launch.py) keeps rows * gates * hidden below 2^31 and the grid below 2^32 threads.
// The forwards compute each gate where it is used (few values live across the exp/tanh/division calls): in the order
// i, f, g, o, ptxas for sm_90 spilled the float64 forwards under __launch_bounds__(256).
#include "common.cuh"

template <typename A>
__device__ __forceinline__ A xpnn_sigmoid(A x) {
    return (A)1 / ((A)1 + xpnn_exp(-x));  // exp(-x) = inf for very negative x: the limit 0
}

// h_out, c_out (N, H) from gx, gh (N, 4H) and c (N, H).
template <typename T, typename A>
__global__ void __launch_bounds__(256)
lstm_cell_fwd(const T* __restrict__ gx, const T* __restrict__ gh, const T* __restrict__ c, T* __restrict__ h_out,
              T* __restrict__ c_out, unsigned n, unsigned hidden) {
    const unsigned stride = gridDim.x * blockDim.x;
    XPNN_NO_UNROLL for (unsigned idx = blockIdx.x * blockDim.x + threadIdx.x; idx < n; idx += stride) {
        const unsigned row = idx / hidden, j = idx - row * hidden, at = row * 4u * hidden + j;
        const A ig = xpnn_sigmoid(xpnn_to_acc(gx[at]) + xpnn_to_acc(gh[at])) *
                     xpnn_tanh(xpnn_to_acc(gx[at + 2u * hidden]) + xpnn_to_acc(gh[at + 2u * hidden]));
        const A f = xpnn_sigmoid(xpnn_to_acc(gx[at + hidden]) + xpnn_to_acc(gh[at + hidden]));
        const A c_new = f * xpnn_to_acc(c[idx]) + ig;
        const A o = xpnn_sigmoid(xpnn_to_acc(gx[at + 3u * hidden]) + xpnn_to_acc(gh[at + 3u * hidden]));
        c_out[idx] = xpnn_from_acc<T>(c_new);
        h_out[idx] = xpnn_from_acc<T>(o * xpnn_tanh(c_new));
    }
}

// dgates (N, 4H) (the gradient of gx and of gh) and dc_prev (N, H) from the forward's inputs and dh', dc' (N, H):
// dc_total = dc' + dh' * o * (1 - tanh(c')^2); di = dc_total * g * i(1-i), df = dc_total * c * f(1-f),
// dg = dc_total * i * (1-g^2), do = dh' * tanh(c') * o(1-o); dc_prev = dc_total * f.
template <typename T, typename A>
__global__ void __launch_bounds__(256)
lstm_cell_bwd(const T* __restrict__ gx, const T* __restrict__ gh, const T* __restrict__ c, const T* __restrict__ dh,
              const T* __restrict__ dc, T* __restrict__ dgates, T* __restrict__ dc_prev, unsigned n, unsigned hidden) {
    const unsigned stride = gridDim.x * blockDim.x;
    XPNN_NO_UNROLL for (unsigned idx = blockIdx.x * blockDim.x + threadIdx.x; idx < n; idx += stride) {
        const unsigned row = idx / hidden, j = idx - row * hidden, at = row * 4u * hidden + j;
        const A i = xpnn_sigmoid(xpnn_to_acc(gx[at]) + xpnn_to_acc(gh[at]));
        const A f = xpnn_sigmoid(xpnn_to_acc(gx[at + hidden]) + xpnn_to_acc(gh[at + hidden]));
        const A g = xpnn_tanh(xpnn_to_acc(gx[at + 2u * hidden]) + xpnn_to_acc(gh[at + 2u * hidden]));
        const A o = xpnn_sigmoid(xpnn_to_acc(gx[at + 3u * hidden]) + xpnn_to_acc(gh[at + 3u * hidden]));
        const A c_old = xpnn_to_acc(c[idx]);
        const A tc = xpnn_tanh(f * c_old + i * g);
        const A d_h = xpnn_to_acc(dh[idx]);
        const A dct = d_h * o * ((A)1 - tc * tc) + xpnn_to_acc(dc[idx]);
        dgates[at] = xpnn_from_acc<T>(dct * g * (i * ((A)1 - i)));
        dgates[at + hidden] = xpnn_from_acc<T>(dct * c_old * (f * ((A)1 - f)));
        dgates[at + 2u * hidden] = xpnn_from_acc<T>(dct * i * ((A)1 - g * g));
        dgates[at + 3u * hidden] = xpnn_from_acc<T>(d_h * tc * (o * ((A)1 - o)));
        dc_prev[idx] = xpnn_from_acc<T>(dct * f);
    }
}

// h_out (N, H) from gx, gh (N, 3H) and h (N, H).
template <typename T, typename A>
__global__ void __launch_bounds__(256)
gru_cell_fwd(const T* __restrict__ gx, const T* __restrict__ gh, const T* __restrict__ h, T* __restrict__ h_out,
             unsigned n, unsigned hidden) {
    const unsigned stride = gridDim.x * blockDim.x;
    XPNN_NO_UNROLL for (unsigned idx = blockIdx.x * blockDim.x + threadIdx.x; idx < n; idx += stride) {
        const unsigned row = idx / hidden, j = idx - row * hidden, at = row * 3u * hidden + j;
        const A r = xpnn_sigmoid(xpnn_to_acc(gx[at]) + xpnn_to_acc(gh[at]));
        const A nn = xpnn_tanh(xpnn_to_acc(gx[at + 2u * hidden]) + r * xpnn_to_acc(gh[at + 2u * hidden]));
        const A z = xpnn_sigmoid(xpnn_to_acc(gx[at + hidden]) + xpnn_to_acc(gh[at + hidden]));
        h_out[idx] = xpnn_from_acc<T>((xpnn_to_acc(h[idx]) - nn) * z + nn);
    }
}

// dgx, dgh (N, 3H) and dh_prev (N, H) (the part through z * h) from the forward's inputs and dh' (N, H):
// dn = dh' (1-z) (1-n^2), dr = dn * gh_n * r(1-r), dz = dh' (h-n) z(1-z); dgx = [dr, dz, dn], dgh = [dr, dz, dn r].
template <typename T, typename A>
__global__ void __launch_bounds__(256)
gru_cell_bwd(const T* __restrict__ gx, const T* __restrict__ gh, const T* __restrict__ h, const T* __restrict__ dh,
             T* __restrict__ dgx, T* __restrict__ dgh, T* __restrict__ dh_prev, unsigned n, unsigned hidden) {
    const unsigned stride = gridDim.x * blockDim.x;
    XPNN_NO_UNROLL for (unsigned idx = blockIdx.x * blockDim.x + threadIdx.x; idx < n; idx += stride) {
        const unsigned row = idx / hidden, j = idx - row * hidden, at = row * 3u * hidden + j;
        const A r = xpnn_sigmoid(xpnn_to_acc(gx[at]) + xpnn_to_acc(gh[at]));
        const A z = xpnn_sigmoid(xpnn_to_acc(gx[at + hidden]) + xpnn_to_acc(gh[at + hidden]));
        const A ghn = xpnn_to_acc(gh[at + 2u * hidden]);
        const A nn = xpnn_tanh(xpnn_to_acc(gx[at + 2u * hidden]) + r * ghn);
        const A d_h = xpnn_to_acc(dh[idx]);
        const A dn = d_h * ((A)1 - z) * ((A)1 - nn * nn);
        const A dr = dn * ghn * (r * ((A)1 - r));
        const A dz = d_h * (xpnn_to_acc(h[idx]) - nn) * (z * ((A)1 - z));
        dgx[at] = dgh[at] = xpnn_from_acc<T>(dr);
        dgx[at + hidden] = dgh[at + hidden] = xpnn_from_acc<T>(dz);
        dgx[at + 2u * hidden] = xpnn_from_acc<T>(dn);
        dgh[at + 2u * hidden] = xpnn_from_acc<T>(dn * r);
        dh_prev[idx] = xpnn_from_acc<T>(d_h * z);
    }
}
