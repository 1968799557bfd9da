// One window of 2-D max pooling, shared by the CUDA kernel (conv.cu, max_pool2d_fwd) and the CPU kernel
// (cpu/pooling.cpp), so both choose the winner as the reference does (xpnn/functional/pooling.py, window_max:
// PyTorch's max_pool2d_with_indices). Needs no CUDA header: a host compiler includes it with __device__ and
// __forceinline__ defined away.
#ifndef XPNN_MAX_POOL_CUH
#define XPNN_MAX_POOL_CUH

// The window with top-left padded corner at input position (h0, w0) (negative inside the top/left padding) of an
// h x w image; load(hh, ww) reads input pixel (hh, ww) as A. Sets best to the window's maximum and returns the
// winning offset i*kw + j, best being that pixel: from the first in-bounds pixel on, the first maximum (ties keep
// the earlier), the last NaN of a window with one (PyTorch's `v > best || isnan(v)`).
// Padding never wins, even in a window of only -inf (pytorch#23161); a window without in-bounds pixel (dilation
// can step over a small input) gives neg_inf and -1, for the caller to name an offset (the reference's
// first_inbounds_offset: the first in-bounds row's and column's, 0 for an axis with none; computing it here made
// ptxas spill registers in max_pool2d_fwd).
template <typename A, typename Load>
__device__ __forceinline__ int xpnn_max_pool_window(int h, int w, int h0, int w0, int kh, int kw, int dh, int dw,
                                                    A neg_inf, Load&& load, A& best_out) {
    A best = neg_inf;
    int arg = -1;
    for (int i = 0; i < kh; ++i) {
        const int hh = h0 + i * dh;
        if (hh < 0 || hh >= h) continue;
        for (int j = 0; j < kw; ++j) {
            const int ww = w0 + j * dw;
            if (ww < 0 || ww >= w) continue;
            const A v = load(hh, ww);
            if (arg < 0 || v > best || v != v) {
                best = v;
                arg = i * kw + j;
            }
        }
    }
    best_out = best;
    return arg;
}

#endif  // XPNN_MAX_POOL_CUH
