// CPU builds of 2-D max pooling (the max_pool2d kernels of ../conv.cu) for NumPy arrays (compiled and called as
// xpnn/functional/cpu_kernels.py describes), one call per batch chunk. Geometry as in conv.cu: kernel (kh, kw),
// stride (sh, sw), dilation (dh, dw), top/left padding (pt, pl); output (oh, ow); output position (p, q) at kernel
// offset (i, j) reads input pixel (p*sh + i*dh - pt, q*sw + j*dw - pl). Results equal the NumPy path's
// (conv_numpy.max_pool2d_numpy / max_pool2d_backward_numpy) bit for bit.
#include <math.h>

#define __device__
#define __forceinline__ inline
#include "../max_pool.cuh"

#define XPNN_CPU_API extern "C" __attribute__((visibility("default")))

namespace {

// y, argmax (planes, oh, ow) from x (planes, h, w): each window's winner by the rule shared with the CUDA kernel.
template <typename T>
void max_pool2d_fwd(const T* x, T* y, int* argmax, long long planes, int h, int w, int kh, int kw, int sh, int sw,
                    int dh, int dw, int pt, int pl, int oh, int ow) {
    const long long plane_in = (long long)h * w, plane_out = (long long)oh * ow;
    for (long long c = 0; c < planes; ++c) {
        const T* img = x + c * plane_in;
        T* yc = y + c * plane_out;
        int* ac = argmax + c * plane_out;
        for (int p = 0; p < oh; ++p) {
            const int h0 = p * sh - pt;
            for (int q = 0; q < ow; ++q) {
                ac[p * ow + q] = xpnn_max_pool_window(
                    h, w, h0, q * sw - pl, kh, kw, dh, dw, -(T)INFINITY,
                    [&](int hh, int ww) { return img[(long long)hh * w + ww]; }, yc[p * ow + q]);
            }
        }
    }
}

// dx (planes, h, w) from argmax and dy (planes, oh, ow). tiles != 0: the windows tile the input exactly (stride =
// kernel, no dilation or padding, sizes divisible), each pixel is in one window and gets dy where it won, else 0
// (tiles == 1, as where(hit, dy, 0)) or 0 * dy (tiles == 2, the NumPy path's product for finite dy: -0.0 where dy is
// negative). Otherwise each pixel gets +0.0 plus dy of every window it won, added in increasing kernel offset (the
// NumPy path's order: one pass per offset into a zeroed padded buffer; a pixel is at offset k of one window at most).
template <typename T>
void max_pool2d_bwd(const int* argmax, const T* dy, T* dx, long long planes, int h, int w, int kh, int kw, int sh,
                    int sw, int dh, int dw, int pt, int pl, int oh, int ow, int tiles) {
    const long long plane_in = (long long)h * w, plane_out = (long long)oh * ow;
    for (long long c = 0; c < planes; ++c) {
        const int* ac = argmax + c * plane_out;
        const T* gc = dy + c * plane_out;
        T* dc = dx + c * plane_in;
        if (tiles) {
            for (int p = 0; p < oh; ++p) {
                for (int q = 0; q < ow; ++q) {
                    const int a = ac[p * ow + q];
                    const T g = gc[p * ow + q];
                    const T miss = tiles == 2 ? T(0) * g : T(0);
                    for (int i = 0; i < kh; ++i) {
                        T* row = dc + (long long)(p * kh + i) * w + q * kw;
                        for (int j = 0; j < kw; ++j) row[j] = a == i * kw + j ? g : miss;
                    }
                }
            }
            continue;
        }
        for (long long k = 0; k < plane_in; ++k) dc[k] = T(0);
        for (int i = 0; i < kh; ++i) {
            for (int j = 0; j < kw; ++j) {
                const int k = i * kw + j;
                for (int p = 0; p < oh; ++p) {
                    const int hh = p * sh + i * dh - pt;
                    for (int q = 0; q < ow; ++q) {
                        const int ww = q * sw + j * dw - pl;
                        // a window without in-bounds pixel points into the padding: the NumPy path drops it
                        if (ac[p * ow + q] == k && hh >= 0 && hh < h && ww >= 0 && ww < w) {
                            dc[(long long)hh * w + ww] += gc[p * ow + q];
                        }
                    }
                }
            }
        }
    }
}

}  // namespace

XPNN_CPU_API void xpnn_cpu_max_pool2d_float32(const float* x, float* y, int* argmax, long long planes, int h, int w,
                                              int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl, int oh,
                                              int ow) {
    max_pool2d_fwd(x, y, argmax, planes, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow);
}

XPNN_CPU_API void xpnn_cpu_max_pool2d_float64(const double* x, double* y, int* argmax, long long planes, int h,
                                              int w, int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl,
                                              int oh, int ow) {
    max_pool2d_fwd(x, y, argmax, planes, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow);
}

XPNN_CPU_API void xpnn_cpu_max_pool2d_backward_float32(const int* argmax, const float* dy, float* dx,
                                                       long long planes, int h, int w, int kh, int kw, int sh,
                                                       int sw, int dh, int dw, int pt, int pl, int oh, int ow,
                                                       int tiles) {
    max_pool2d_bwd(argmax, dy, dx, planes, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, tiles);
}

XPNN_CPU_API void xpnn_cpu_max_pool2d_backward_float64(const int* argmax, const double* dy, double* dx,
                                                       long long planes, int h, int w, int kh, int kw, int sh,
                                                       int sw, int dh, int dw, int pt, int pl, int oh, int ow,
                                                       int tiles) {
    max_pool2d_bwd(argmax, dy, dx, planes, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, tiles);
}
