// CPU loops of the column-free ("shift-add", kn2row) stride-1 convolution of xpnn/functional/conv_numpy.py, for
// NumPy arrays (compiled with the other kernels/cpu sources by xpnn/functional/cpu_kernels.py, called through
// ctypes). Each replaces several NumPy passes (and Python calls that hold the GIL while conv_numpy's chunks run on
// threads) by one loop; the GEMMs between them stay np.matmul. They copy values or add them in the NumPy path's
// order, so their results equal it bit for bit:
// - shift_planes: conv_numpy._fill_shifts (the kw zero-padded, column-shifted planes of a sample's input);
// - shift_row_sum: the kernel-row sum of shift_add_product's product, ((z_0 + z_1) + z_2) + ... + bias;
// - shift_dw_rows: the kh shifted copies of dy's plane that conv2d_weight_grad_shift_numpy multiplies.
// No CUDA kernel computes these (the CUDA conv2d runs im2col), so nothing is shared with kernels/*.cu.
#include <string.h>

#define XPNN_CPU_API extern "C" __attribute__((visibility("default")))

namespace {

typedef long long ll;

template <typename T>
void zero(T* p, ll n) {
    for (ll i = 0; i < n; ++i) p[i] = T(0);  // +0.0, as ndarray.fill(0)
}

template <typename T>
void copy(T* dst, const T* src, ll n) {
    if (n > 0) memcpy(dst, src, static_cast<size_t>(n) * sizeof(T));
}

// Samples [lo, hi) of xs (N, C, kw, hp*wp), C-contiguous: xs[n, c, 0] = the (hp, wp) plane of src[n, c] (H, W)
// placed at row pt, column pl, zeros elsewhere; xs[n, c, j, t] = xs[n, c, 0, t + j*dw], 0 past the plane's end.
// src's strides (sn, sc, sh, sw) are in elements.
template <typename T>
void shift_planes(T* xs, const T* src, ll lo, ll hi, ll c, ll h, ll w, ll sn, ll sc, ll sh, ll sw, ll kw, ll hp,
                  ll wp, ll pt, ll pl, ll dw) {
    const ll plane = hp * wp;
    for (ll n = lo; n < hi; ++n) {
        for (ll ch = 0; ch < c; ++ch) {
            T* p0 = xs + (n * c + ch) * kw * plane;
            const T* s = src + n * sn + ch * sc;
            if (h <= 0 || w <= 0) {
                zero(p0, plane);
            } else {
                zero(p0, pt * wp + pl);  // the rows above and the first row's left padding
                for (ll r = 0; r < h; ++r) {
                    T* row = p0 + (pt + r) * wp + pl;
                    const T* in = s + r * sh;
                    if (sw == 1) {
                        copy(row, in, w);
                    } else {
                        for (ll q = 0; q < w; ++q) row[q] = in[q * sw];
                    }
                    // this row's right padding and the next row's left (after the last row: to the plane's end)
                    const T* end = r + 1 < h ? row + wp : p0 + plane;
                    zero(row + w, static_cast<ll>(end - (row + w)));
                }
            }
            for (ll j = 1; j < kw; ++j) {
                T* pj = p0 + j * plane;
                ll shift = j * dw < plane ? j * dw : plane;
                copy(pj, p0 + shift, plane - shift);
                zero(pj + plane - shift, shift);
            }
        }
    }
}

// One sample of shift_add_product: y (groups, cog, oh, ow) = sum over kernel rows i of z[gi, i, o, (p + i*dh)*wp
// + q] (z: (groups, kh, cog, plane)), added in row order, then + bias[gi*cog + o] (bias may be null). All
// C-contiguous.
template <typename T>
void shift_row_sum(const T* z, T* y, const T* bias, ll groups, ll kh, ll cog, ll plane, ll wp, ll dh, ll oh,
                   ll ow) {
    const ll step = cog * plane + dh * wp;  // from kernel row i's shifted plane to row i + 1's
    for (ll gi = 0; gi < groups; ++gi) {
        for (ll o = 0; o < cog; ++o) {
            const T* z0 = z + (gi * kh * cog + o) * plane;
            T* yo = y + (gi * cog + o) * oh * ow;
            for (ll p = 0; p < oh; ++p) {
                const T* zr = z0 + p * wp;
                T* yr = yo + p * ow;
                if (kh == 1) {
                    for (ll q = 0; q < ow; ++q) yr[q] = zr[q];
                } else {
                    const T* z1 = zr + step;
                    for (ll q = 0; q < ow; ++q) yr[q] = zr[q] + z1[q];
                }
                for (ll i = 2; i < kh; ++i) {
                    const T* zi = zr + i * step;
                    for (ll q = 0; q < ow; ++q) yr[q] += zi[q];
                }
                if (bias) {
                    const T b = bias[gi * cog + o];
                    for (ll q = 0; q < ow; ++q) yr[q] += b;
                }
            }
        }
    }
}

// One sample of conv2d_weight_grad_shift_numpy's operand: est[gi, i, o, s : s + m] = pg[gi, o, at : at + m] with
// s = i*dh*wp, m = plane - max(s, at) (est (groups, kh, cog, plane) C-contiguous; pg's rows cstride elements apart,
// each contiguous). The zeros around each copy are est's already (written once per chunk).
template <typename T>
void shift_dw_rows(T* est, const T* pg, ll groups, ll kh, ll cog, ll plane, ll cstride, ll at, ll dh, ll wp) {
    for (ll gi = 0; gi < groups; ++gi) {
        for (ll i = 0; i < kh; ++i) {
            const ll s = i * dh * wp;
            const ll m = plane - (s > at ? s : at);
            for (ll o = 0; o < cog; ++o) {
                copy(est + ((gi * kh + i) * cog + o) * plane + s, pg + (gi * cog + o) * cstride + at, m);
            }
        }
    }
}

}  // namespace

#define XPNN_CONV_ENTRIES(T, NAME)                                                                                  \
    XPNN_CPU_API void xpnn_cpu_shift_planes_##NAME(T* xs, const T* src, ll lo, ll hi, ll c, ll h, ll w, ll sn,      \
                                                  ll sc, ll sh, ll sw, ll kw, ll hp, ll wp, ll pt, ll pl, ll dw) {  \
        shift_planes(xs, src, lo, hi, c, h, w, sn, sc, sh, sw, kw, hp, wp, pt, pl, dw);                            \
    }                                                                                                               \
    XPNN_CPU_API void xpnn_cpu_shift_row_sum_##NAME(const T* z, T* y, const T* bias, ll groups, ll kh, ll cog,      \
                                                   ll plane, ll wp, ll dh, ll oh, ll ow) {                          \
        shift_row_sum(z, y, bias, groups, kh, cog, plane, wp, dh, oh, ow);                                          \
    }                                                                                                               \
    XPNN_CPU_API void xpnn_cpu_shift_dw_rows_##NAME(T* est, const T* pg, ll groups, ll kh, ll cog, ll plane,        \
                                                   ll cstride, ll at, ll dh, ll wp) {                               \
        shift_dw_rows(est, pg, groups, kh, cog, plane, cstride, at, dh, wp);                                        \
    }

XPNN_CONV_ENTRIES(float, float32)
XPNN_CONV_ENTRIES(double, float64)
