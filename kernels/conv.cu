// Convolution and max-pooling helpers over NCHW tensors (see xpnn/functional/conv.py and pooling.py, the
// reference). Every kernel is a grid-stride loop with one output element per iteration and no atomics: the
// adjoints (col2im, max-pool backward) gather, for each input pixel, the column entries / window outputs that read
// it, so results are deterministic. Geometry: kernel (kh, kw), stride (sh, sw), dilation (dh, dw), top/left padding
// (pt, pl); output (oh, ow). An output position (p, q) at kernel offset (i, j) reads padded pixel
// (p*sh + i*dh, q*sw + j*dw), i.e. input pixel (p*sh + i*dh - pt, q*sw + j*dw - pl).
#include "common.cuh"
#include "max_pool.cuh"

// A flat index as mixed-radix digits (least significant first, digit[k] < radix[k], each radix below 2^31) and
// what is left above them (top). The grid-stride loops here decode their first index and the grid's stride once
// per thread and then step by adding the stride's digits with a carry: no division per element
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

// The grid-stride loop of every kernel here: f(idx, digits of idx) for this thread's flat indices idx below
// tops * prod(radix) (the loop tests the top digit: no 64-bit total to keep in registers).
template <unsigned K, typename F>
__device__ __forceinline__ void xpnn_for_each_decoded(long long tops, const unsigned (&radix)[K], F&& f) {
    const unsigned first = blockIdx.x * blockDim.x + threadIdx.x, stride = gridDim.x * blockDim.x;
    xpnn_mixed_radix<K> at = xpnn_decode(first, radix);
    const xpnn_mixed_radix<K> step = xpnn_decode(stride, radix);
    long long idx = first;
    XPNN_NO_UNROLL for (; at.top < tops; idx += stride) {
        f(idx, (const xpnn_mixed_radix<K>&)at);
        xpnn_advance(at, step, radix);
    }
}

// The adjoints' gather along one image axis: the kernel offsets i (< k) and output positions p (< out) whose window
// reads input coordinate x, p*s + i*d == x + pad. (p, m) = divmod(x + pad - i*d, s) is formed once per element
// (one 32-bit division, none for s == 1) and stepped to the next offset by subtracting divmod(d, s) = (dq, dm) with
// a borrow; offset i reads x when m == 0 and 0 <= p < out, and no later offset does once p < 0 (x + pad - i*d < 0).
// dq is a kernel argument (the launcher divides once; dm = d - dq*s): a division per thread took the registers
// that made ptxas spill max_pool2d_bwd<float> on sm_80.
struct xpnn_axis {
    int k, s, pad, out, dq, dm;
};

// f(i * kw + j, p, q) for every window (output position (p, q), kernel offset (i, j)) that reads input pixel
// (hh, ww), offsets in increasing order (row-major): col2im's and max-pool backward's loop.
template <typename F>
__device__ __forceinline__ void xpnn_for_each_window_reading(int hh, int ww, const xpnn_axis& ah, const xpnn_axis& aw,
                                                             F&& f) {
    const unsigned rh = (unsigned)(hh + ah.pad), rw = (unsigned)(ww + aw.pad);
    int p = ah.s == 1 ? (int)rh : (int)(rh / (unsigned)ah.s), mp = (int)rh - p * ah.s;
    const int q0 = aw.s == 1 ? (int)rw : (int)(rw / (unsigned)aw.s), mq0 = (int)rw - q0 * aw.s;
    for (int i = 0; i < ah.k && p >= 0; ++i) {
        if (mp == 0 && p < ah.out) {
            int q = q0, mq = mq0;
            for (int j = 0; j < aw.k && q >= 0; ++j) {
                if (mq == 0 && q < aw.out) f(i * aw.k + j, p, q);
                q -= aw.dq;
                mq -= aw.dm;
                if (mq < 0) {
                    mq += aw.s;
                    --q;
                }
            }
        }
        p -= ah.dq;
        mp -= ah.dm;
        if (mp < 0) {
            mp += ah.s;
            --p;
        }
    }
}

// cols (N, C, kh, kw, oh, ow) = x (N, C, h, w) read at every window position; zero outside the input. Index math
// inside an image in 32 bits: the launcher checks that padded and output sides are below 2^31 (p*sh + i*dh is at
// most the padded height - 1).
template <typename T>
__global__ void __launch_bounds__(256)
im2col(const T* __restrict__ x, T* __restrict__ cols, long long n, long long c, long long h, long long w, int kh,
       int kw, int sh, int sw, int dh, int dw, int pt, int pl, long long oh, long long ow) {
    const unsigned radix[4] = {(unsigned)ow, (unsigned)oh, (unsigned)kw, (unsigned)kh};  // q, p, j, i; top: plane
    xpnn_for_each_decoded(n * c, radix, [&](long long idx, const xpnn_mixed_radix<4>& at) {
        const int hh = (int)(at.digit[1] * (unsigned)sh + at.digit[3] * (unsigned)dh) - pt;
        const int ww = (int)(at.digit[0] * (unsigned)sw + at.digit[2] * (unsigned)dw) - pl;
        const bool inside = hh >= 0 && hh < h && ww >= 0 && ww < w;
        cols[idx] = inside ? x[(at.top * h + hh) * w + ww] : xpnn_from_acc<T>((typename xpnn_acc<T>::type)0);
    });
}

// dx (N, C, h, w) = sum of the column entries read from each pixel (the adjoint of im2col), accumulated in A.
// dqh = dh / sh and dqw = dw / sw, from the launcher (see xpnn_axis).
template <typename T, typename A>
__global__ void __launch_bounds__(256)
col2im(const T* __restrict__ cols, T* __restrict__ dx, long long n, long long c, long long h, long long w, int kh,
       int kw, int sh, int sw, int dh, int dw, int pt, int pl, long long oh, long long ow, int dqh, int dqw) {
    const unsigned radix[2] = {(unsigned)w, (unsigned)h};  // ww, hh; top: plane
    const xpnn_axis ah = {kh, sh, pt, (int)oh, dqh, dh - dqh * sh};
    const xpnn_axis aw = {kw, sw, pl, (int)ow, dqw, dw - dqw * sw};
    xpnn_for_each_decoded(n * c, radix, [&](long long, const xpnn_mixed_radix<2>& at) {
        const T* plane = cols + at.top * kh * kw * oh * ow;
        A sum = A(0);  // (dx's index from the digits below: idx kept live pushed ptxas into spilling)
        xpnn_for_each_window_reading((int)at.digit[1], (int)at.digit[0], ah, aw, [&](int k, int p, int q) {
            sum += (A)xpnn_to_acc(plane[((long long)k * oh + p) * ow + q]);
        });
        dx[(at.top * h + at.digit[1]) * w + at.digit[0]] = xpnn_from_acc<T>(sum);
    });
}

// y (N, C, oh, ow): window maxima; argmax: the winning offset i*kw + j, chosen as PyTorch's max_pool2d_with_indices
// (xpnn_max_pool_window in max_pool.cuh, shared with the CPU kernel: the first maximum, the last NaN; padding never
// wins, even in a window of only -inf, pytorch#23161); a window with no in-bounds element reports offset 0.
template <typename T, typename A>
__global__ void __launch_bounds__(256)
max_pool2d_fwd(const T* __restrict__ x, T* __restrict__ y, int* __restrict__ argmax, long long n, long long c,
               long long h, long long w, int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl, long long oh,
               long long ow) {
    const unsigned radix[2] = {(unsigned)ow, (unsigned)oh};  // q, p; top: plane
    xpnn_for_each_decoded(n * c, radix, [&](long long idx, const xpnn_mixed_radix<2>& at) {
        const T* img = x + at.top * h * w;
        const int h0 = (int)(at.digit[1] * (unsigned)sh) - pt, w0 = (int)(at.digit[0] * (unsigned)sw) - pl;
        A best;
        const int arg = xpnn_max_pool_window(
            (int)h, (int)w, h0, w0, kh, kw, dh, dw, xpnn_neg_inf<A>(),
            [&](int hh, int ww) { return (A)xpnn_to_acc(img[(long long)hh * w + ww]); }, best);
        argmax[idx] = arg < 0 ? 0 : arg;
        y[idx] = xpnn_from_acc<T>(best);
    });
}

// dx (N, C, h, w): for each pixel, the sum of dy over the windows whose argmax is this pixel. dqh, dqw as for
// col2im.
template <typename T, typename A>
__global__ void __launch_bounds__(256)
max_pool2d_bwd(const int* __restrict__ argmax, const T* __restrict__ dy, T* __restrict__ dx, long long n,
               long long c, long long h, long long w, int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl,
               long long oh, long long ow, int dqh, int dqw) {
    const unsigned radix[2] = {(unsigned)w, (unsigned)h};  // ww, hh; top: plane
    const xpnn_axis ah = {kh, sh, pt, (int)oh, dqh, dh - dqh * sh};
    const xpnn_axis aw = {kw, sw, pl, (int)ow, dqw, dw - dqw * sw};
    xpnn_for_each_decoded(n * c, radix, [&](long long, const xpnn_mixed_radix<2>& at) {
        const int* arg = argmax + at.top * oh * ow;
        const T* g = dy + at.top * oh * ow;
        A sum = A(0);
        xpnn_for_each_window_reading((int)at.digit[1], (int)at.digit[0], ah, aw, [&](int k, int p, int q) {
            const long long o = (long long)p * ow + q;
            if (arg[o] == k) sum += (A)xpnn_to_acc(g[o]);
        });
        dx[(at.top * h + at.digit[1]) * w + at.digit[0]] = xpnn_from_acc<T>(sum);
    });
}
