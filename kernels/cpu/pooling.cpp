// CPU builds of 2-D max pooling (the max_pool2d kernels of ../conv.cu) for NumPy arrays (compiled and called as
// xpnn/functional/cpu_kernels.py describes), one call per batch chunk. Geometry as in conv.cu: kernel (kh, kw),
// stride (sh, sw), dilation (dh, dw), top/left padding (pt, pl); output (oh, ow); output position (p, q) at kernel
// offset (i, j) reads input pixel (p*sh + i*dh - pt, q*sw + j*dw - pl). Results equal the NumPy path's
// (conv_numpy.max_pool2d_numpy / max_pool2d_backward_numpy) bit for bit.
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <type_traits>

#define __device__
#define __forceinline__ inline
#include "../max_pool.cuh"

#define XPNN_CPU_API extern "C" __attribute__((visibility("default")))

namespace {

// g where keep, else +0.0, through the bits (a mask, not a branch: which windows a pixel won is data-dependent).
template <typename T>
inline T kept_or_zero(bool keep, T g) {
    typedef typename std::conditional<sizeof(T) == 4, uint32_t, uint64_t>::type Bits;
    Bits b;
    memcpy(&b, &g, sizeof b);
    b &= Bits(0) - Bits(keep);
    memcpy(&g, &b, sizeof b);
    return g;
}

// The window's running maximum and first winner without branches (random data mispredicts them): v wins when
// greater; a NaN is only noted (nan), for the rule of xpnn_max_pool_window.
template <typename T>
inline void take(T v, int k, T& best, int& arg, bool& nan) {
    const int win = -(int)(v > best);  // all ones where v wins
    best = v > best ? v : best;
    arg = (arg & ~win) | (k & win);
    nan |= v != v;
}

// The first kernel index i in [0, k) whose position start + i*d lies in [0, size); 0 where none does.
inline int first_inside(int start, int k, int d, int size) {
    for (int i = 0; i < k; ++i) {
        if (start + i * d >= 0 && start + i * d < size) return i;
    }
    return 0;
}

// The kernel indices [lo, hi) whose positions start + i*d lie in [0, size) (contiguous: positions increase).
inline void inside(int start, int k, int d, int size, int& lo, int& hi) {
    lo = 0;
    hi = k;
    while (lo < k && start + lo * d < 0) ++lo;
    while (hi > lo && start + (hi - 1) * d >= size) --hi;
}

// y, argmax (planes, oh, ow) from x (planes, h, w). Each window runs over its in-bounds pixels (padding never wins)
// from best = -inf and the first in-bounds offset, a later pixel winning when greater: the rule's first maximum, and
// a window of only -inf keeps its first in-bounds pixel. Windows holding a NaN, or with no in-bounds pixel, take
// the rule shared with the CUDA kernel (xpnn_max_pool_window) instead; it is written with branches, which random
// data mispredicts (4x slower at LeNet's 2x2 pooling), hence the loops here for the other windows.
template <typename T, int K>
void max_pool2d_fwd(const T* x, T* y, int* argmax, long long planes, int h, int w, int kh, int kw, int sh, int sw,
                    int dh, int dw, int pt, int pl, int oh, int ow) {
    if (K) kh = kw = K;
    const long long plane_in = (long long)h * w, plane_out = (long long)oh * ow;
    const T neg_inf = -(T)INFINITY;
    for (long long c = 0; c < planes; ++c) {
        const T* img = x + c * plane_in;
        T* yc = y + c * plane_out;
        int* ac = argmax + c * plane_out;
        for (int p = 0; p < oh; ++p) {
            const int h0 = p * sh - pt;
            int i0, i1;
            inside(h0, kh, dh, h, i0, i1);
            for (int q = 0; q < ow; ++q) {
                const int w0 = q * sw - pl;
                T best = neg_inf;
                int arg = 0;
                bool nan = false;
                if (i0 == 0 && i1 == kh && w0 >= 0 && w0 + (kw - 1) * dw < w) {  // inside: loops of fixed size
                    const T* corner = img + (long long)h0 * w + w0;
                    for (int i = 0; i < kh; ++i) {
                        const T* row = corner + (long long)i * dh * w;
                        for (int j = 0; j < kw; ++j) take(row[j * dw], i * kw + j, best, arg, nan);
                    }
                } else {
                    int j0, j1;
                    inside(w0, kw, dw, w, j0, j1);
                    nan = i0 == i1 || j0 == j1;  // no in-bounds pixel: the shared rule's offset
                    arg = i0 * kw + j0;
                    for (int i = i0; i < i1; ++i) {
                        const T* row = img + (long long)(h0 + i * dh) * w + w0;
                        for (int j = j0; j < j1; ++j) take(row[j * dw], i * kw + j, best, arg, nan);
                    }
                }
                if (!nan) {
                    yc[p * ow + q] = best;
                    ac[p * ow + q] = arg;
                } else {
                    arg = xpnn_max_pool_window(h, w, h0, w0, kh, kw, dh, dw, neg_inf,
                                               [&](int hh, int ww) { return img[(long long)hh * w + ww]; },
                                               yc[p * ow + q]);
                    // -1: no in-bounds pixel, the reference's first_inbounds_offset
                    ac[p * ow + q] = arg >= 0 ? arg : first_inside(h0, kh, dh, h) * kw + first_inside(w0, kw, dw, w);
                }
            }
        }
    }
}

// dx (planes, h, w) from argmax and dy (planes, oh, ow) where the windows tile the input exactly (stride = kernel,
// no dilation or padding, sizes divisible): each pixel is in one window and gets its dy where it won, else 0
// (Product false, as where(hit, dy, 0)) or 0 * dy (Product true, the NumPy path's product for finite dy: -0.0 where
// dy is negative).
template <typename T, bool Product, int KW>
void max_pool2d_bwd_tiles(const int* __restrict__ argmax, const T* __restrict__ dy, T* __restrict__ dx,
                          long long planes, int w, int kh, int kw, int oh, int ow) {
    if (KW) kw = KW;
    const long long rows = planes * oh;  // output rows over all planes: each covers kh rows of dx
    for (long long r = 0; r < rows; ++r) {
        const int* ar = argmax + r * ow;
        const T* gr = dy + r * ow;
        for (int i = 0; i < kh; ++i) {
            T* row = dx + (r * kh + i) * w;
            for (int q = 0; q < ow; ++q) {
                const int a = ar[q] - i * kw;
                const T g = gr[q];
                const T miss = Product ? T(0) * g : T(0);
                for (int j = 0; j < kw; ++j) row[q * kw + j] = a == j ? g : miss;
            }
        }
    }
}

// dx (planes, h, w) from argmax and dy (planes, oh, ow), any geometry: each pixel gets +0.0 plus dy of every window
// it won, added in increasing kernel offset (the NumPy path's order: one pass per offset into a zeroed padded
// buffer; a pixel is at offset k of one window at most). Adding +0.0 for a window the pixel did not win (instead of
// a branch) leaves the sum's bits: it starts at +0.0, so it is never -0.0.
template <typename T, int SW>
void max_pool2d_bwd(const int* __restrict__ argmax, const T* __restrict__ dy, T* __restrict__ dx, long long planes,
                    int h, int w, int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl, int oh, int ow) {
    if (SW) sw = SW;
    const long long plane_in = (long long)h * w, plane_out = (long long)oh * ow;
    for (long long e = 0; e < planes * plane_in; ++e) dx[e] = T(0);
    for (long long c = 0; c < planes; ++c) {
        const int* ac = argmax + c * plane_out;
        const T* gc = dy + c * plane_out;
        T* dc = dx + c * plane_in;
        for (int i = 0; i < kh; ++i) {
            for (int j = 0; j < kw; ++j) {
                const int k = i * kw + j, w_off = j * dw - pl;
                int q0 = 0, q1 = ow;  // the outputs whose pixel at offset (i, j) has its column inside the input
                while (q0 < ow && q0 * sw + w_off < 0) ++q0;
                while (q1 > q0 && (q1 - 1) * sw + w_off >= w) --q1;
                for (int p = 0; p < oh; ++p) {
                    const int hh = p * sh + i * dh - pt;
                    if (hh < 0 || hh >= h) continue;  // (a window without in-bounds pixel points into the padding)
                    T* row = dc + (long long)hh * w + w_off;
                    const int* ar = ac + p * ow;
                    const T* gr = gc + p * ow;
                    for (int q = q0; q < q1; ++q) {
                        const T sum = row[q * sw];
                        const T next = sum + kept_or_zero(ar[q] == k, gr[q]);
                        row[q * sw] = sum != sum ? sum : next;  // NaN + NaN: the sum's NaN, as NumPy's sum + dy
                    }
                }
            }
        }
    }
}

// The loops over a window with its size fixed where it is 2x2 or 3x3 (K; 0: any; the backward's KW: its width), and
// the backward's strided row of stride 1 or 2 (SW): with a run-time count or stride these short loops ran up to ~15x
// slower (GCC vectorises them, with its set-up every window or row).
template <typename T>
void max_pool2d_forward(const T* x, T* y, int* argmax, long long planes, int h, int w, int kh, int kw, int sh, int sw,
                        int dh, int dw, int pt, int pl, int oh, int ow) {
    const int k = kh == kw ? kw : 0;
    auto run = k == 2 ? max_pool2d_fwd<T, 2> : k == 3 ? max_pool2d_fwd<T, 3> : max_pool2d_fwd<T, 0>;
    run(x, y, argmax, planes, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow);
}

// tiles: 0 any geometry (max_pool2d_bwd), 1 / 2 exact tiles with +0.0 / 0 * dy for the pixels that did not win.
template <typename T>
void max_pool2d_backward(const int* argmax, const T* dy, T* dx, long long planes, int h, int w, int kh, int kw,
                         int sh, int sw, int dh, int dw, int pt, int pl, int oh, int ow, int tiles) {
    if (tiles) {
        auto run = tiles == 2 ? (kw == 2   ? max_pool2d_bwd_tiles<T, true, 2>
                                 : kw == 3 ? max_pool2d_bwd_tiles<T, true, 3>
                                           : max_pool2d_bwd_tiles<T, true, 0>)
                              : (kw == 2   ? max_pool2d_bwd_tiles<T, false, 2>
                                 : kw == 3 ? max_pool2d_bwd_tiles<T, false, 3>
                                           : max_pool2d_bwd_tiles<T, false, 0>);
        run(argmax, dy, dx, planes, w, kh, kw, oh, ow);
    } else {
        auto run = sw == 1 ? max_pool2d_bwd<T, 1> : sw == 2 ? max_pool2d_bwd<T, 2> : max_pool2d_bwd<T, 0>;
        run(argmax, dy, dx, planes, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow);
    }
}

}  // namespace

XPNN_CPU_API void xpnn_cpu_max_pool2d_float32(const float* x, float* y, int* argmax, long long planes, int h, int w,
                                              int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl, int oh,
                                              int ow) {
    max_pool2d_forward(x, y, argmax, planes, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow);
}

XPNN_CPU_API void xpnn_cpu_max_pool2d_float64(const double* x, double* y, int* argmax, long long planes, int h,
                                              int w, int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl,
                                              int oh, int ow) {
    max_pool2d_forward(x, y, argmax, planes, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow);
}

XPNN_CPU_API void xpnn_cpu_max_pool2d_backward_float32(const int* argmax, const float* dy, float* dx,
                                                       long long planes, int h, int w, int kh, int kw, int sh,
                                                       int sw, int dh, int dw, int pt, int pl, int oh, int ow,
                                                       int tiles) {
    max_pool2d_backward(argmax, dy, dx, planes, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, tiles);
}

XPNN_CPU_API void xpnn_cpu_max_pool2d_backward_float64(const int* argmax, const double* dy, double* dx,
                                                       long long planes, int h, int w, int kh, int kw, int sh,
                                                       int sw, int dh, int dw, int pt, int pl, int oh, int ow,
                                                       int tiles) {
    max_pool2d_backward(argmax, dy, dx, planes, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, tiles);
}
