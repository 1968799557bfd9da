// The tile transforms of the Winograd F(2x2, 3x3) convolution of xpnn/functional/conv_numpy.py (Lavin & Gray 2016,
// "Fast Algorithms for Convolutional Neural Networks"), for NumPy arrays (compiled with the other kernels/cpu
// sources by xpnn/functional/cpu_kernels.py, called through ctypes, one call per block of samples [lo, hi): one
// sample at 3x3 64->64, 32x32, whose transformed tiles stay in cache for the product). The products between them stay
// np.matmul (16 batched GEMMs). With
//   B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]], A^T = [[1,1,1,0],[0,1,-1,-1]]:
// - input: V = B^T d B for every 4x4 input tile d (tiles at stride 2, the padding and everything past the input
//   zero), laid out (16, C, T), T the block's tiles (sample, tile row, tile column);
// - output: y = A^T m A (+ bias) for every tile of M (16, C_out, T), the last partial tiles cropped; returns 1
//   where a written output is not finite (inf or NaN), else 0;
// - dy: A dY A^T for every 2x2 tile of dy (0 past its edge), laid out (16, C_out, T) (the gradient of the
//   products' first operand per tile: dU = sum over tiles of (A dY A^T) . V).
// Each plane is zero-padded into scratch and transformed along every row first (the tiles' columns), the results
// kept in separate even- and odd-row arrays, so that the transform along the columns runs as one flat loop over
// the plane's tiles (tile rows ty and ty + 1 are one row of tiles apart in those arrays): the loops vectorise
// (restrict-qualified parameters) and run over whole planes, not rows of a few tiles. Per-call scratch only
// (thread-safe). No CUDA kernel computes these (the CUDA conv2d runs im2col), so nothing is shared with
// kernels/*.cu.
#include <stddef.h>
#include <string.h>

#include <vector>

#define XPNN_CPU_API extern "C" __attribute__((visibility("default")))

namespace {

typedef long long ll;

// Plane p (h, w) into the zeroed (hp, wp) scratch pad at row pt, column pl (what falls outside pad dropped).
template <typename T>
void place(T* pad, const T* p, ll h, ll w, ll hp, ll wp, ll pt, ll pl) {
    memset(pad, 0, static_cast<size_t>(hp * wp) * sizeof(T));  // (+0.0)
    const ll q0 = pl < 0 ? -pl : 0, q1 = w < wp - pl ? w : wp - pl;  // the columns of p inside pad
    for (ll r = 0; r < h; ++r) {
        const ll rr = r + pt;
        if (rr < 0 || rr >= hp || q1 <= q0) continue;
        memcpy(pad + rr * wp + pl + q0, p + r * w + q0, static_cast<size_t>(q1 - q0) * sizeof(T));
    }
}

// For every row r of pad (hp, wp) and tile column i (tw of them, reading row[2i .. 2i + 3]): d B, the tile's
// columns t0 - t2, t1 + t2, t2 - t1, t1 - t3, into c0..c3 at [r % 2][r / 2][i] (each (2, half, tw)).
template <typename T>
void bt_cols(const T* __restrict__ pad, T* __restrict__ c0, T* __restrict__ c1, T* __restrict__ c2,
             T* __restrict__ c3, ll hp, ll wp, ll half, ll tw) {
    for (ll r = 0; r < hp; ++r) {
        const T* row = pad + r * wp;
        const ll at = ((r % 2) * half + r / 2) * tw;
        for (ll i = 0; i < tw; ++i) {
            const T t0 = row[2 * i], t1 = row[2 * i + 1], t2 = row[2 * i + 2], t3 = row[2 * i + 3];
            c0[at + i] = t0 - t2;
            c1[at + i] = t1 + t2;
            c2[at + i] = t2 - t1;
            c3[at + i] = t1 - t3;
        }
    }
}

// B^T's rows over the tiles: o0..o3 = r0 - r2, r1 + r2, r2 - r1, r1 - r3 (n tiles)
template <typename T>
void bt_rows(const T* __restrict__ r0, const T* __restrict__ r1, const T* __restrict__ r2, const T* __restrict__ r3,
             T* __restrict__ o0, T* __restrict__ o1, T* __restrict__ o2, T* __restrict__ o3, ll n) {
    for (ll i = 0; i < n; ++i) {
        o0[i] = r0[i] - r2[i];
        o1[i] = r1[i] + r2[i];
        o2[i] = r2[i] - r1[i];
        o3[i] = r1[i] - r3[i];
    }
}

// A^T's rows over the tiles: o0, o1 = m0 + m1 + m2, m1 - m2 - m3 (n tiles)
template <typename T>
void at_rows(const T* __restrict__ m0, const T* __restrict__ m1, const T* __restrict__ m2, const T* __restrict__ m3,
             T* __restrict__ o0, T* __restrict__ o1, ll n) {
    for (ll i = 0; i < n; ++i) {
        o0[i] = m0[i] + m1[i] + m2[i];
        o1[i] = m1[i] - m2[i] - m3[i];
    }
}

// A's columns plus the bias over the tiles: o0, o1 = s0 + s1 + s2 + b, s1 - s2 - s3 + b (n tiles)
template <typename T>
void at_cols(const T* __restrict__ s0, const T* __restrict__ s1, const T* __restrict__ s2, const T* __restrict__ s3,
             T b, T* __restrict__ o0, T* __restrict__ o1, ll n) {
    for (ll i = 0; i < n; ++i) {
        o0[i] = s0[i] + s1[i] + s2[i] + b;
        o1[i] = s1[i] - s2[i] - s3[i] + b;
    }
}

// Output rows from the tiles' even and odd columns ev, od (each (rows of tiles, tw)), row 2*ty + a from ev/od +
// a * plane: y[p, 2i], y[p, 2i + 1] = ev[ty, i], od[ty, i] (columns past ow dropped); chk[q] += y - y (0 while
// every value is finite, NaN after an inf or NaN).
template <typename T>
void store_rows(const T* __restrict__ ev, const T* __restrict__ od, T* __restrict__ y, T* __restrict__ chk, ll oh,
                ll ow, ll tw, ll plane) {
    const ll pairs = ow / 2;
    for (ll p = 0; p < oh; ++p) {
        const ll at = (p % 2) * plane + (p / 2) * tw;
        T* row = y + p * ow;
        for (ll i = 0; i < pairs; ++i) {
            row[2 * i] = ev[at + i];
            row[2 * i + 1] = od[at + i];
        }
        if (ow % 2) row[ow - 1] = ev[at + pairs];
        for (ll q = 0; q < ow; ++q) chk[q] += row[q] - row[q];
    }
}

// For every row r of pad (hp, wp) and tile column i (row[2i], row[2i + 1] = p, q): dY A^T, the tile's columns p,
// p + q, p - q, -q, into c0..c3 at [r % 2][r / 2][i] (each (2, hp / 2, tw)).
template <typename T>
void a_cols(const T* __restrict__ pad, T* __restrict__ c0, T* __restrict__ c1, T* __restrict__ c2,
            T* __restrict__ c3, ll hp, ll wp, ll tw) {
    const ll half = hp / 2;
    for (ll r = 0; r < hp; ++r) {
        const T* row = pad + r * wp;
        const ll at = ((r % 2) * half + r / 2) * tw;
        for (ll i = 0; i < tw; ++i) {
            const T p = row[2 * i], q = row[2 * i + 1];
            c0[at + i] = p;
            c1[at + i] = p + q;
            c2[at + i] = p - q;
            c3[at + i] = -q;
        }
    }
}

// A's rows over the tiles (a, c: a tile's rows): o0..o3 = a, a + c, a - c, -c (n tiles)
template <typename T>
void a_rows(const T* __restrict__ a, const T* __restrict__ c, T* __restrict__ o0, T* __restrict__ o1,
            T* __restrict__ o2, T* __restrict__ o3, ll n) {
    for (ll i = 0; i < n; ++i) {
        o0[i] = a[i];
        o1[i] = a[i] + c[i];
        o2[i] = a[i] - c[i];
        o3[i] = -c[i];
    }
}

// x (N, C, h, w) C-contiguous; v (16, c, T), T = (hi - lo) * th * tw, each v[k] C-contiguous and ks elements after
// v[k - 1] (as m and e below: a stride of an odd number of cache lines keeps the 16 entries' rows out of one
// cache set; a multiple of 4 KiB made the transforms ~5% slower): tile (ty, tx) of sample n reads input rows
// 2*ty - pt .. +3 and columns 2*tx - pl .. +3 (0 outside x).
template <typename T>
void input_transform(const T* x, T* v, ll lo, ll hi, ll c, ll h, ll w, ll pt, ll pl, ll th, ll tw, ll ks) {
    const ll tiles = (hi - lo) * th * tw, plane = th * tw;
    const ll hp = 2 * th + 2, wp = 2 * tw + 2, half = th + 1;
    const ll dbs = 2 * half * tw;  // one column j of d B: even padded rows (half, tw), then odd ones
    std::vector<T> buf(static_cast<size_t>(hp * wp + 4 * dbs));
    T* pad = buf.data();
    T* db = pad + hp * wp;
    for (ll n = lo; n < hi; ++n) {
        for (ll ch = 0; ch < c; ++ch) {
            place(pad, x + (n * c + ch) * h * w, h, w, hp, wp, pt, pl);
            bt_cols(pad, db, db + dbs, db + 2 * dbs, db + 3 * dbs, hp, wp, half, tw);
            T* out = v + ch * tiles + (n - lo) * plane;
            for (ll j = 0; j < 4; ++j) {  // tile rows 0..3 of tile row ty: even[ty], odd[ty], even[ty+1], odd[ty+1]
                const T* ev = db + j * dbs;
                const T* od = ev + half * tw;
                T* o = out + j * ks;  // entries (0, j), (1, j), (2, j), (3, j)
                bt_rows(ev, od, ev + tw, od + tw, o, o + 4 * ks, o + 8 * ks, o + 12 * ks, plane);
            }
        }
    }
}

// m (16, co, T) (entries ks apart) -> y (N, co, oh, ow) C-contiguous, samples [lo, hi); bias (co,) or null;
// y = A^T m A + bias, the last row and column of partial tiles dropped. Returns whether some written output is not
// finite.
template <typename T>
int output_transform(const T* m, T* y, const T* bias, ll lo, ll hi, ll co, ll oh, ll ow, ll th, ll tw, ll ks) {
    const ll tiles = (hi - lo) * th * tw, plane = th * tw;
    std::vector<T> buf(static_cast<size_t>(12 * plane + ow));
    T* s = buf.data();         // s[4*a + j]: row a of A^T m, column j, per tile
    T* cols = s + 8 * plane;   // [2*b + a]: column b of row a of A^T m A (y[2ty + a, 2tx + b]), per tile
    T* chk = cols + 4 * plane;
    for (ll q = 0; q < ow; ++q) chk[q] = T(0);
    for (ll n = lo; n < hi; ++n) {
        for (ll o = 0; o < co; ++o) {
            const T b = bias ? bias[o] : T(0);
            const T* mk = m + o * tiles + (n - lo) * plane;
            for (ll j = 0; j < 4; ++j) {
                const T* m0 = mk + j * ks;
                at_rows(m0, m0 + 4 * ks, m0 + 8 * ks, m0 + 12 * ks, s + j * plane, s + (4 + j) * plane, plane);
            }
            for (ll a = 0; a < 2; ++a) {
                const T* s0 = s + 4 * a * plane;
                at_cols(s0, s0 + plane, s0 + 2 * plane, s0 + 3 * plane, b, cols + a * plane, cols + (2 + a) * plane,
                        plane);
            }
            // row p = 2*ty + a: even columns cols[a], odd columns cols[2 + a]
            store_rows(cols, cols + 2 * plane, y + (n * co + o) * oh * ow, chk, oh, ow, tw, plane);
        }
    }
    int bad = 0;
    for (ll q = 0; q < ow; ++q) bad |= chk[q] != T(0);
    return bad;
}

// dy (N, co, oh, ow) C-contiguous -> e (16, co, T) (entries ks apart), samples [lo, hi): A dY A^T of every 2x2
// tile dY = [[a, b], [c, d]] (0 past dy's edge), A = [[1, 0], [1, 1], [1, -1], [0, -1]].
template <typename T>
void dy_transform(const T* dy, T* e, ll lo, ll hi, ll co, ll oh, ll ow, ll th, ll tw, ll ks) {
    const ll tiles = (hi - lo) * th * tw, plane = th * tw;
    const ll hp = 2 * th, wp = 2 * tw;
    const ll das = 2 * plane;  // one column j of dY A^T: even rows (th, tw), then odd ones
    std::vector<T> buf(static_cast<size_t>(hp * wp + 4 * das));
    T* pad = buf.data();
    T* da = pad + hp * wp;
    for (ll n = lo; n < hi; ++n) {
        for (ll o = 0; o < co; ++o) {
            place(pad, dy + (n * co + o) * oh * ow, oh, ow, hp, wp, 0, 0);
            a_cols(pad, da, da + das, da + 2 * das, da + 3 * das, hp, wp, tw);
            T* out = e + o * tiles + (n - lo) * plane;
            for (ll j = 0; j < 4; ++j) {
                const T* ev = da + j * das;
                T* oj = out + j * ks;
                a_rows(ev, ev + plane, oj, oj + 4 * ks, oj + 8 * ks, oj + 12 * ks, plane);
            }
        }
    }
}

}  // namespace

#define XPNN_WINOGRAD_ENTRIES(T, NAME)                                                                              \
    XPNN_CPU_API void xpnn_cpu_winograd_input_##NAME(const T* x, T* v, ll lo, ll hi, ll c, ll h, ll w, ll pt,       \
                                                    ll pl, ll th, ll tw, ll ks) {                                   \
        input_transform(x, v, lo, hi, c, h, w, pt, pl, th, tw, ks);                                                 \
    }                                                                                                               \
    XPNN_CPU_API int xpnn_cpu_winograd_output_##NAME(const T* m, T* y, const T* bias, ll lo, ll hi, ll co, ll oh,   \
                                                    ll ow, ll th, ll tw, ll ks) {                                   \
        return output_transform(m, y, bias, lo, hi, co, oh, ow, th, tw, ks);                                        \
    }                                                                                                               \
    XPNN_CPU_API void xpnn_cpu_winograd_dy_##NAME(const T* dy, T* e, ll lo, ll hi, ll co, ll oh, ll ow, ll th,      \
                                                 ll tw, ll ks) {                                                    \
        dy_transform(dy, e, lo, hi, co, oh, ow, th, tw, ks);                                                        \
    }

XPNN_WINOGRAD_ENTRIES(float, float32)
XPNN_WINOGRAD_ENTRIES(double, float64)
