// CPU loops of the im2col convolution path of xpnn/functional/conv_numpy.py (compiled and called through ctypes by
// xpnn/functional/cpu_kernels.py): the column tensor in one pass, and each col2im (the scatter of column gradients
// into dx) in gather form. NumPy scatters with kh*kw strided additions into a zeroed padded accumulator and then
// copies dx out of it; here every dx row is built once: zeroed, the in-range terms added in the NumPy path's order
// (kernel offset (i, j) lexicographic, the same two-step sums where the NumPy path has them), then stored in NCHW.
// Equal operations in equal order: the results equal the NumPy path's bit for bit (NaN and inf included).
// The CUDA col2im (kernels/conv.cu) sums per output element in another order and layout, so no loop is shared.
//
// Geometry: g[] = {n, c, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, groups}; the output dx is addressed with
// element strides {sn, sc, sh} (its w stride is 1), so it may be a view (the interior of a padded buffer).
#include <stddef.h>
#include <string.h>

#include <vector>

#define XPNN_CPU_API extern "C" __attribute__((visibility("default")))

namespace {

struct Geom {
    long long n, c, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, groups;
    explicit Geom(const long long* g)
        : n(g[0]), c(g[1]), h(g[2]), w(g[3]), kh(g[4]), kw(g[5]), sh(g[6]), sw(g[7]), dh(g[8]), dw(g[9]),
          pt(g[10]), pl(g[11]), oh(g[12]), ow(g[13]), groups(g[14]) {}
};

// The first q >= 0 with q * s >= a (s > 0); not as (a + s - 1) / s, which overflows for a stride near 2^63.
inline long long first_at_least(long long a, long long s) { return a <= 0 ? 0 : (a - 1) / s + 1; }

// The output positions q in [lo, hi) of a kernel column whose padded input column w + pl = off + q * s lies in
// [pl, pl + w) (off = j * dw).
inline void q_range(long long off, long long s, long long pl, long long w, long long ow, long long& lo,
                    long long& hi) {
    lo = first_at_least(pl - off, s);
    hi = first_at_least(pl + w - off, s);
    if (hi > ow) hi = ow;
    if (lo > hi) lo = hi;
}

// The output row p of a kernel row whose padded input row is t = hpad - i * dh (p * s == t), or -1.
inline long long row_of(long long t, long long s, long long oh) {
    if (t < 0 || t % s != 0) return -1;
    const long long p = t / s;
    return p < oh ? p : -1;
}

// o[k*stride] += v[k] for k < count (dx at w = j*dw + q*sw - pl for q = qlo + k), the unit stride as its own loop
// (vectorized).
template <typename T>
inline void add_strided(T* o, const T* v, long long count, long long stride) {
    if (stride == 1) {
        for (long long k = 0; k < count; ++k) o[k] += v[k];
    } else {
        for (long long k = 0; k < count; ++k) o[k * stride] += v[k];
    }
}

template <typename T>
inline T* zeroed(std::vector<T>& v, long long size) {
    v.assign(static_cast<size_t>(size), T(0));
    return v.data();
}

// The row of ow values out[q] = xrow[w0 + q*sw] (0 where w0 + q*sw is outside [0, w)), xrow null: all 0.
template <typename T>
inline void window_row(const T* xrow, T* out, long long w0, const Geom& g) {
    long long qlo = 0, qhi = 0;
    if (xrow) q_range(w0 + g.pl, g.sw, g.pl, g.w, g.ow, qlo, qhi);
    for (long long q = 0; q < qlo; ++q) out[q] = T(0);
    if (qhi > qlo) {
        const T* src = xrow + (w0 + qlo * g.sw);  // x at q = qlo
        for (long long q = qlo; q < qhi; ++q) out[q] = src[(q - qlo) * g.sw];
    }
    for (long long q = qhi; q < g.ow; ++q) out[q] = T(0);
}

// cols[n, c, i, j, p, q] = x[n, c, i*dh + p*sh - pt, j*dw + q*sw - pl] (0 outside x), x C-contiguous NCHW. With
// stride 1 in height as im2col_numpy's two copies, per (n, c): the kernel-column shifted rows
// rows[j, t, q] = xpad[t, j*dw + q*sw] (kw*hp runs of ow values), then each (i, j) block of oh*ow contiguous values
// rows[j, i*dh:i*dh + oh] (one copy each); copying each window row of ow values straight from x is ~1.3x slower
// at LeNet's second layer (ow = 10).
template <typename T>
void im2col(const T* x, T* cols, const Geom& g) {
    const long long plane = g.h * g.w, block = g.oh * g.ow, hp = g.dh * (g.kh - 1) + g.oh;
    std::vector<T> buf(g.sh == 1 ? static_cast<size_t>(g.kw * hp * g.ow) : 0);
    T* out = cols;
    for (long long nc = 0; nc < g.n * g.c; ++nc) {
        const T* xc = x + nc * plane;
        if (g.sh == 1) {
            T* rows = buf.data();
            for (long long j = 0; j < g.kw; ++j)
                for (long long t = 0; t < hp; ++t) {
                    const long long hh = t - g.pt;
                    window_row(hh >= 0 && hh < g.h ? xc + hh * g.w : nullptr, rows + (j * hp + t) * g.ow,
                               j * g.dw - g.pl, g);
                }
            for (long long i = 0; i < g.kh; ++i)
                for (long long j = 0; j < g.kw; ++j, out += block)
                    memcpy(out, rows + (j * hp + i * g.dh) * g.ow, static_cast<size_t>(block) * sizeof(T));
            continue;
        }
        for (long long i = 0; i < g.kh; ++i)
            for (long long j = 0; j < g.kw; ++j)
                for (long long p = 0; p < g.oh; ++p, out += g.ow) {
                    const long long hh = i * g.dh + p * g.sh - g.pt;
                    window_row(hh >= 0 && hh < g.h ? xc + hh * g.w : nullptr, out, j * g.dw - g.pl, g);
                }
    }
}

// conv2d_input_grad_batch_last_numpy's scatter (stride 1): parts[gi, i, j, c, p, q, n] (C_in/G = cg) added at
// dxp[gi, c, i*dh + p, (j*dw + q)*N + n] for (i, j) in order. Per (gi, c, h) a zeroed (W, N) row accumulator.
template <typename T>
void col2im_batch_last(const T* parts, T* dx, const Geom& g, long long sn, long long sc, long long sh) {
    const long long cg = g.c / g.groups, row = g.ow * g.n;
    std::vector<T> buf;
    for (long long gi = 0; gi < g.groups; ++gi) {
        for (long long c = 0; c < cg; ++c) {
            for (long long h = 0; h < g.h; ++h) {
                T* acc = zeroed(buf, g.w * g.n);
                for (long long i = 0; i < g.kh; ++i) {
                    const long long p = row_of(h + g.pt - i * g.dh, 1, g.oh);
                    if (p < 0) continue;
                    for (long long j = 0; j < g.kw; ++j) {
                        long long qlo, qhi;
                        q_range(j * g.dw, 1, g.pl, g.w, g.ow, qlo, qhi);
                        const T* src = parts + (((gi * g.kh + i) * g.kw + j) * cg + c) * g.oh * row + p * row +
                                       qlo * g.n;
                        T* dst = acc + (j * g.dw + qlo - g.pl) * g.n;  // acc[w = j*dw + q - pl, n]
                        for (long long e = 0; e < (qhi - qlo) * g.n; ++e) dst[e] += src[e];
                    }
                }
                T* out = dx + (gi * cg + c) * sc + h * sh;
                for (long long n = 0; n < g.n; ++n)
                    for (long long w = 0; w < g.w; ++w) out[n * sn + w] = acc[w * g.n + n];
            }
        }
    }
}

// conv2d_input_grad_numpy's scatter: parts[gi, (i, j), p, q, n, c] (per group the GEMM of the offsets) added at
// dxp[i*dh + p*sh, j*dw + q*sw, n, gi*cg + c] for (i, j) in order. Per (gi, h) a zeroed (W, N, cg) accumulator.
template <typename T>
void col2im_channels_last(const T* parts, T* dx, const Geom& g, long long sn, long long sc, long long sh) {
    const long long cg = g.c / g.groups, blk = g.n * cg;
    std::vector<T> buf;
    for (long long gi = 0; gi < g.groups; ++gi) {
        for (long long h = 0; h < g.h; ++h) {
            T* acc = zeroed(buf, g.w * blk);
            for (long long i = 0; i < g.kh; ++i) {
                const long long p = row_of(h + g.pt - i * g.dh, g.sh, g.oh);
                if (p < 0) continue;
                for (long long j = 0; j < g.kw; ++j) {
                    long long qlo, qhi;
                    q_range(j * g.dw, g.sw, g.pl, g.w, g.ow, qlo, qhi);
                    const T* src = parts + ((gi * g.kh + i) * g.kw + j) * g.oh * g.ow * blk + p * g.ow * blk;
                    for (long long q = qlo; q < qhi; ++q) {
                        T* dst = acc + (j * g.dw + q * g.sw - g.pl) * blk;
                        const T* s = src + q * blk;
                        for (long long e = 0; e < blk; ++e) dst[e] += s[e];
                    }
                }
            }
            for (long long n = 0; n < g.n; ++n)
                for (long long c = 0; c < cg; ++c) {
                    T* out = dx + n * sn + (gi * cg + c) * sc + h * sh;
                    const T* a = acc + n * cg + c;
                    for (long long w = 0; w < g.w; ++w) out[w] = a[w * blk];
                }
        }
    }
}

// conv2d_input_grad_rows_numpy's two scatters (stride 1 in height): parts[i, n, C, j, p, q] (the kh GEMMs),
// rows[n, C, j, t, q] = parts[0, .., t, q] (t < oh, else 0) + parts[i, .., t - i*dh, q] for i = 1.. in order, then
// dxp[n, C, h, j*dw + q*sw] += rows[n, C, j, h, q] for j in order.
template <typename T>
void col2im_rows(const T* parts, T* dx, const Geom& g, long long sn, long long sc, long long sh) {
    const long long plane = g.oh * g.ow, per_i = g.n * g.c * g.kw * plane;
    std::vector<T> buf(static_cast<size_t>(g.ow));
    T* v = buf.data();
    for (long long n = 0; n < g.n; ++n) {
        for (long long c = 0; c < g.c; ++c) {
            const T* base = parts + (n * g.c + c) * g.kw * plane;
            for (long long h = 0; h < g.h; ++h) {
                const long long t = h + g.pt;
                T* out = dx + n * sn + c * sc + h * sh;
                for (long long w = 0; w < g.w; ++w) out[w] = T(0);
                for (long long j = 0; j < g.kw; ++j) {
                    long long qlo, qhi;
                    q_range(j * g.dw, g.sw, g.pl, g.w, g.ow, qlo, qhi);
                    const T* bj = base + j * plane;
                    if (t < g.oh) {
                        for (long long q = qlo; q < qhi; ++q) v[q] = bj[t * g.ow + q];
                    } else {
                        for (long long q = qlo; q < qhi; ++q) v[q] = T(0);
                    }
                    for (long long i = 1; i < g.kh; ++i) {
                        const long long p = t - i * g.dh;
                        if (p < 0 || p >= g.oh) continue;
                        const T* s = bj + i * per_i + p * g.ow;
                        for (long long q = qlo; q < qhi; ++q) v[q] += s[q];
                    }
                    add_strided(out + (j * g.dw + qlo * g.sw - g.pl), v + qlo, qhi - qlo, g.sw);
                }
            }
        }
    }
}

// conv2d_input_grad_cols_numpy's scatter (the reference's col2im): dc[n, C, i, j, p, q] added at
// dxp[n, C, i*dh + p*sh, j*dw + q*sw] for (i, j) in order.
template <typename T>
void col2im_cols(const T* dc, T* dx, const Geom& g, long long sn, long long sc, long long sh) {
    const long long plane = g.oh * g.ow;
    for (long long n = 0; n < g.n; ++n) {
        for (long long c = 0; c < g.c; ++c) {
            const T* base = dc + (n * g.c + c) * g.kh * g.kw * plane;
            for (long long h = 0; h < g.h; ++h) {
                T* out = dx + n * sn + c * sc + h * sh;
                for (long long w = 0; w < g.w; ++w) out[w] = T(0);
                for (long long i = 0; i < g.kh; ++i) {
                    const long long p = row_of(h + g.pt - i * g.dh, g.sh, g.oh);
                    if (p < 0) continue;
                    for (long long j = 0; j < g.kw; ++j) {
                        long long qlo, qhi;
                        q_range(j * g.dw, g.sw, g.pl, g.w, g.ow, qlo, qhi);
                        const T* s = base + (i * g.kw + j) * plane + p * g.ow;
                        add_strided(out + (j * g.dw + qlo * g.sw - g.pl), s + qlo, qhi - qlo, g.sw);
                    }
                }
            }
        }
    }
}

}  // namespace

#define XPNN_IM2COL_ENTRIES(T, NAME)                                                                          \
    XPNN_CPU_API void xpnn_cpu_im2col_##NAME(const T* x, T* cols, const long long* g) { im2col(x, cols, Geom(g)); } \
    XPNN_CPU_API void xpnn_cpu_col2im_batch_last_##NAME(const T* parts, T* dx, const long long* g, long long sn,  \
                                                        long long sc, long long sh) {                          \
        col2im_batch_last(parts, dx, Geom(g), sn, sc, sh);                                                     \
    }                                                                                                          \
    XPNN_CPU_API void xpnn_cpu_col2im_channels_last_##NAME(const T* parts, T* dx, const long long* g,           \
                                                           long long sn, long long sc, long long sh) {         \
        col2im_channels_last(parts, dx, Geom(g), sn, sc, sh);                                                  \
    }                                                                                                          \
    XPNN_CPU_API void xpnn_cpu_col2im_rows_##NAME(const T* parts, T* dx, const long long* g, long long sn,        \
                                                  long long sc, long long sh) {                                \
        col2im_rows(parts, dx, Geom(g), sn, sc, sh);                                                           \
    }                                                                                                          \
    XPNN_CPU_API void xpnn_cpu_col2im_cols_##NAME(const T* dc, T* dx, const long long* g, long long sn,          \
                                                  long long sc, long long sh) {                                \
        col2im_cols(dc, dx, Geom(g), sn, sc, sh);                                                              \
    }

XPNN_IM2COL_ENTRIES(float, float32)
XPNN_IM2COL_ENTRIES(double, float64)
