// Convolution and max-pooling helpers over NCHW tensors (see xpnn/functional/conv.py and pooling.py, the
// reference). Every kernel is a grid-stride loop with one output element per iteration and no atomics: the
// adjoints (col2im, max-pool backward) gather, for each input pixel, the column entries / window outputs that read
// it, so results are deterministic. Geometry: kernel (kh, kw), stride (sh, sw), dilation (dh, dw), top/left padding
// (pt, pl); output (oh, ow). An output position (p, q) at kernel offset (i, j) reads padded pixel
// (p*sh + i*dh, q*sw + j*dw), i.e. input pixel (p*sh + i*dh - pt, q*sw + j*dw - pl).
#include "common.cuh"

#define XPNN_FOR_EACH(i, n)                                                        \
    XPNN_NO_UNROLL for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; \
                        i < (n); i += (long long)gridDim.x * blockDim.x)

// Output row p (or column q) of offset i that reads input row h, or -1: h + pt - i*dh = p*sh with 0 <= p < oh.
// 32-bit arithmetic (image sides fit in int): a 64-bit division is a call that spills registers in the loops below.
__device__ __forceinline__ int xpnn_window_of(int h, int i, int s, int d, int pad, int out) {
    const int r = h + pad - i * d;
    if (r < 0 || r % s != 0) return -1;
    const int p = r / s;
    return p < out ? p : -1;
}

// A flat index as mixed-radix digits (least significant first, digit[k] < radix[k], each radix below 2^31) and
// what is left above them (top). The im2col grid-stride loop decodes its first index and the grid's stride once
// per thread and then steps by adding the stride's digits with a carry: no division per element
// (digit + step digit + carry < 2 * radix < 2^32, so one subtraction wraps it). Both decoded values are below
// gridDim.x * blockDim.x, which the launcher keeps below 2^32 (at most MAX_GRID = 65535 blocks of 256 threads):
// 32-bit divisions (a 64-bit division is a call to a library routine).
template <unsigned K>
struct xpnn_mixed_radix {
    unsigned digit[K];
    long long top;
};

template <unsigned K>
__device__ __forceinline__ xpnn_mixed_radix<K> xpnn_decode(unsigned x, const unsigned (&radix)[K]) {
    xpnn_mixed_radix<K> r;
    XPNN_UNROLL
    for (unsigned k = 0; k < K; ++k) {
        r.digit[k] = x % radix[k];
        x /= radix[k];
    }
    r.top = x;
    return r;
}

template <unsigned K>
__device__ __forceinline__ void xpnn_advance(xpnn_mixed_radix<K>& a, const xpnn_mixed_radix<K>& step,
                                             const unsigned (&radix)[K]) {
    unsigned carry = 0u;
    XPNN_UNROLL
    for (unsigned k = 0; k < K; ++k) {
        const unsigned d = a.digit[k] + step.digit[k] + carry;
        carry = d >= radix[k] ? 1u : 0u;
        a.digit[k] = d - carry * radix[k];
    }
    a.top += step.top + (long long)carry;
}

// cols (N, C, kh, kw, oh, ow) = x (N, C, h, w) read at every window position; zero outside the input. Index math
// inside an image in 32 bits: the launcher checks that padded and output sides are below 2^31 (p*sh + i*dh is at
// most the padded height - 1).
template <typename T>
__global__ void __launch_bounds__(256)
im2col(const T* __restrict__ x, T* __restrict__ cols, long long n, long long c, long long h, long long w, int kh,
       int kw, int sh, int sw, int dh, int dw, int pt, int pl, long long oh, long long ow) {
    const long long total = n * c * kh * kw * oh * ow;
    const unsigned radix[4] = {(unsigned)ow, (unsigned)oh, (unsigned)kw, (unsigned)kh};  // q, p, j, i; top: plane
    const unsigned first = blockIdx.x * blockDim.x + threadIdx.x, stride = gridDim.x * blockDim.x;
    xpnn_mixed_radix<4> at = xpnn_decode(first, radix);
    const xpnn_mixed_radix<4> step = xpnn_decode(stride, radix);
    long long idx = first;
    XPNN_NO_UNROLL for (; idx < total; idx += stride) {
        const int hh = (int)(at.digit[1] * (unsigned)sh + at.digit[3] * (unsigned)dh) - pt;
        const int ww = (int)(at.digit[0] * (unsigned)sw + at.digit[2] * (unsigned)dw) - pl;
        const bool inside = hh >= 0 && hh < h && ww >= 0 && ww < w;
        cols[idx] = inside ? x[(at.top * h + hh) * w + ww] : xpnn_from_acc<T>((typename xpnn_acc<T>::type)0);
        xpnn_advance(at, step, radix);
    }
}

// dx (N, C, h, w) = sum of the column entries read from each pixel (the adjoint of im2col), accumulated in A.
template <typename T, typename A>
__global__ void __launch_bounds__(256)
col2im(const T* __restrict__ cols, T* __restrict__ dx, long long n, long long c, long long h, long long w, int kh,
       int kw, int sh, int sw, int dh, int dw, int pt, int pl, long long oh, long long ow) {
    const long long total = n * c * h * w;
    XPNN_FOR_EACH(idx, total) {
        const int ww = (int)(idx % w);
        const int hh = (int)((idx / w) % h);
        const long long plane = idx / (w * h);
        A sum = A(0);
        for (int i = 0; i < kh; ++i) {
            const int p = xpnn_window_of(hh, i, sh, dh, pt, (int)oh);
            if (p < 0) continue;
            for (int j = 0; j < kw; ++j) {
                const int q = xpnn_window_of(ww, j, sw, dw, pl, (int)ow);
                if (q < 0) continue;
                sum += (A)xpnn_to_acc(cols[(((plane * kh + i) * kw + j) * oh + p) * ow + q]);
            }
        }
        dx[idx] = xpnn_from_acc<T>(sum);
    }
}

// y (N, C, oh, ow): window maxima; argmax: the winning offset i*kw + j, chosen as PyTorch's max_pool2d_with_indices:
// from the window's first in-bounds element on, `v > best || isnan(v)` (the first maximum, the last NaN). Padding
// never wins, even in a window of only -inf (pytorch#23161); a window with no in-bounds element reports offset 0.
template <typename T, typename A>
__global__ void __launch_bounds__(256)
max_pool2d_fwd(const T* __restrict__ x, T* __restrict__ y, int* __restrict__ argmax, long long n, long long c,
               long long h, long long w, int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl, long long oh,
               long long ow) {
    const long long total = n * c * oh * ow;
    XPNN_FOR_EACH(idx, total) {
        const long long q = idx % ow;
        const long long p = (idx / ow) % oh;
        const long long plane = idx / (ow * oh);
        const T* img = x + plane * h * w;
        A best = xpnn_neg_inf<A>();
        int arg = -1;
        for (int i = 0; i < kh; ++i) {
            const long long hh = p * sh + (long long)i * dh - pt;
            if (hh < 0 || hh >= h) continue;
            for (int j = 0; j < kw; ++j) {
                const long long ww = q * sw + (long long)j * dw - pl;
                if (ww < 0 || ww >= w) continue;
                const A v = (A)xpnn_to_acc(img[hh * w + ww]);
                if (arg < 0 || v > best || v != v) {
                    best = v;
                    arg = i * kw + j;
                }
            }
        }
        y[idx] = xpnn_from_acc<T>(best);
        argmax[idx] = arg < 0 ? 0 : arg;
    }
}

// dx (N, C, h, w): for each pixel, the sum of dy over the windows whose argmax is this pixel.
template <typename T, typename A>
__global__ void __launch_bounds__(256)
max_pool2d_bwd(const int* __restrict__ argmax, const T* __restrict__ dy, T* __restrict__ dx, long long n,
               long long c, long long h, long long w, int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl,
               long long oh, long long ow) {
    const long long total = n * c * h * w;
    XPNN_FOR_EACH(idx, total) {
        const int ww = (int)(idx % w);
        const int hh = (int)((idx / w) % h);
        const long long plane = idx / (w * h);
        A sum = A(0);
        for (int i = 0; i < kh; ++i) {
            const int p = xpnn_window_of(hh, i, sh, dh, pt, (int)oh);
            if (p < 0) continue;
            for (int j = 0; j < kw; ++j) {
                const int q = xpnn_window_of(ww, j, sw, dw, pl, (int)ow);
                if (q < 0) continue;
                const long long o = (plane * oh + p) * ow + q;
                if (argmax[o] == i * kw + j) sum += (A)xpnn_to_acc(dy[o]);
            }
        }
        dx[idx] = xpnn_from_acc<T>(sum);
    }
}
