// LayerNorm over the rows of a row-major (n_rows, n_cols) matrix (torch.nn.functional.layer_norm with
// normalized_shape = the last dims, flattened to n_cols):
//   mean_r = sum_c x[r, c] / n,   var_r = sum_c (x[r, c] - mean_r)^2 / n   (biased, two-pass: no cancellation),
//   rstd_r = 1 / sqrt(var_r + eps),   y = (x - mean_r) * rstd_r * weight + bias,
// statistics in the accumulation type A (float for __half), mean and rstd saved (in A) for the backward:
//   xhat = (x - mean) * rstd,   g = dy * weight,
//   dx = rstd * (g - sum_c(g) / n - xhat * sum_c(g * xhat) / n),
//   dweight = sum_r dy * xhat,   dbias = sum_r dy.
// Rows go to row groups (common.cuh: a few lanes of a warp for narrow rows, the whole block for wide ones). A
// thread holds XPNN_LN_PACKS(T) packs of its row (16-byte loads where the row is 16-byte aligned, scalar loads
// else) per chunk of the row; a row of one chunk -- the launcher's block choice makes every row up to
// XPNN_LN_PACKS * 16 bytes * 512 threads one chunk -- is read from memory once and kept in registers between the
// passes (forward: sum, squared deviations, output; backward: the two row sums, then dx). Wider rows are read
// again per pass (from L2).
// dweight / dbias without atomics: every row group accumulates its rows' dy * xhat and dy (in registers for rows
// of one chunk, else in its own slice of `partials`) and writes its partial sums to partials[0 / 1][group][c];
// layer_norm_bwd_params then sums the groups' partials of each column in group order. The result does not depend
// on block scheduling (the same bits every run).
#include "common.cuh"

// packs per thread and chunk: 4 (16 float / 8 double entries), 2 for __half (16 entries: the backward holds x, dy
// and two float accumulators per entry; 4 packs of half spilled within 128 registers)
#define XPNN_LN_PACKS(T) (sizeof(T) == 2 ? 2u : 4u)
// __launch_bounds__(N, 1): with the thread bound alone ptxas for sm_90 kept layer_norm_fwd<float> within 64
// registers and spilled; a minimum of one block lets it use what N threads may have
#define XPNN_LN_V(T) (16u / (unsigned)sizeof(T))  // entries per pack

// Loads this thread's packs of chunk `chunk` of row[0:n] into v: pack k = (chunk * U + u) * size + rank (adjacent
// threads read adjacent packs), entries k * V + j; entries past n are 0.
template <typename T, unsigned U, unsigned V>
__device__ __forceinline__ void xpnn_ln_load(const T* __restrict__ row, long long n, long long chunk, unsigned rank,
                                             unsigned size, T (&v)[U][V]) {
    const bool aligned = (unsigned long long)row % 16u == 0u;
    XPNN_UNROLL
    for (unsigned u = 0; u < U; ++u) {
        const long long e0 = ((chunk * U + u) * (long long)size + rank) * V;
        if (aligned && e0 + V <= n) {
            const xpnn_pack<T> p = xpnn_load_pack(row + e0);
            XPNN_UNROLL
            for (unsigned j = 0; j < V; ++j) v[u][j] = p.v[j];
        } else {
            XPNN_UNROLL
            for (unsigned j = 0; j < V; ++j) v[u][j] = e0 + j < n ? row[e0 + j] : T(0);
        }
    }
}

template <typename T>
__device__ __forceinline__ long long xpnn_ln_entry(long long chunk, int u, unsigned rank, unsigned size, int j) {
    const int U = (int)XPNN_LN_PACKS(T), V = (int)XPNN_LN_V(T);
    return ((chunk * U + u) * (long long)size + rank) * V + j;
}

// Stores pack `out` as entries e0 + j of row[0:n] (streaming): one 16-byte store where `aligned` (the row is 16-byte
// aligned) and the pack lies within the row, else entry by entry; entries past n are not written.
template <typename T>
__device__ __forceinline__ void xpnn_ln_store(T* __restrict__ row, long long n, long long e0, bool aligned,
                                              const xpnn_pack<T>& out) {
    const int V = (int)XPNN_LN_V(T);
    if (aligned && e0 + V <= n) {
        xpnn_store_pack_streaming(row + e0, out);
    } else {
        XPNN_UNROLL
        for (int j = 0; j < V; ++j)
            if (e0 + j < n) xpnn_store_streaming(row + e0 + j, out.v[j]);
    }
}

template <typename T, typename A>
__global__ void __launch_bounds__(512, 1)
layer_norm_fwd(const T* __restrict__ x, const T* __restrict__ weight, const T* __restrict__ bias,
               T* __restrict__ y, A* __restrict__ mean_out, A* __restrict__ rstd_out, long long n_rows,
               long long n_cols, A eps, int has_weight, int has_bias, int lanes) {
    const int U = (int)XPNN_LN_PACKS(T), V = (int)XPNN_LN_V(T);
    const xpnn_row_group g = xpnn_rows(lanes);
    const long long n_chunks = (n_cols + (long long)U * V * g.size - 1) / ((long long)U * V * g.size);
    T v[XPNN_LN_PACKS(T)][XPNN_LN_V(T)];
    for (long long r = g.first, r0 = g.warp_first; r0 < n_rows; r += g.stride, r0 += g.stride) {
        const bool active = r < n_rows;
        const long long n = active ? n_cols : 0;
        const T* row = x + (active ? r : 0) * n_cols;
        A sum = A(0);
        for (long long chunk = 0; chunk < n_chunks; ++chunk) {
            xpnn_ln_load(row, n, chunk, g.rank, g.size, v);
            XPNN_UNROLL
            for (int u = 0; u < U; ++u)
                XPNN_UNROLL
                for (int j = 0; j < V; ++j) sum += (A)xpnn_to_acc(v[u][j]);  // entries past n are 0
        }
        const A mean = xpnn_group_sum(sum, lanes) / A(n_cols);
        A sq = A(0);
        for (long long chunk = 0; chunk < n_chunks; ++chunk) {
            if (n_chunks > 1) xpnn_ln_load(row, n, chunk, g.rank, g.size, v);
            XPNN_UNROLL
            for (int u = 0; u < U; ++u)
                XPNN_UNROLL
                for (int j = 0; j < V; ++j) {
                    const A d = (A)xpnn_to_acc(v[u][j]) - mean;
                    if (xpnn_ln_entry<T>(chunk, u, g.rank, g.size, j) < n) sq += d * d;
                }
        }
        const A var = xpnn_group_sum(sq, lanes) / A(n_cols);
        const A rstd = A(1) / xpnn_sqrt(var + eps);
        T* orow = y + (active ? r : 0) * n_cols;
        const bool aligned_out = (unsigned long long)orow % 16u == 0u;
        for (long long chunk = 0; chunk < n_chunks; ++chunk) {
            if (n_chunks > 1) xpnn_ln_load(row, n, chunk, g.rank, g.size, v);
            XPNN_UNROLL
            for (int u = 0; u < U; ++u) {
                const long long e0 = xpnn_ln_entry<T>(chunk, u, g.rank, g.size, 0);
                xpnn_pack<T> out;
                XPNN_UNROLL
                for (int j = 0; j < V; ++j) {
                    const long long c = e0 + j < n ? e0 + j : 0;
                    A o = ((A)xpnn_to_acc(v[u][j]) - mean) * rstd;
                    if (has_weight) o *= (A)xpnn_to_acc(weight[c]);
                    if (has_bias) o += (A)xpnn_to_acc(bias[c]);
                    out.v[j] = xpnn_from_acc<T>(o);
                }
                xpnn_ln_store(orow, n, e0, aligned_out, out);
            }
        }
        if (active && g.rank == 0) {
            mean_out[r] = mean;
            rstd_out[r] = rstd;
        }
    }
}

// dx, and the group's partial dweight / dbias (at most 256 threads: x, dy and two accumulators per entry held in
// registers spilled within the 128 registers of a 512-thread block; the minimum of 1 block lets ptxas use
// more than 128 registers (it spilled the __half one at 128)) in partials[0 / 1][group][c] (group = g.first: the groups are
// numbered 0 .. g.stride - 1 in row order). Every group writes its partials, also a group without rows (zeros).
template <typename T, typename A>
__global__ void __launch_bounds__(256, 1)
layer_norm_bwd(const T* __restrict__ x, const T* __restrict__ dy, const A* __restrict__ mean,
               const A* __restrict__ rstd, const T* __restrict__ weight, T* __restrict__ dx,
               A* __restrict__ partials, long long n_rows, long long n_cols, int has_weight, int lanes) {
    const int U = (int)XPNN_LN_PACKS(T), V = (int)XPNN_LN_V(T);
    const xpnn_row_group g = xpnn_rows(lanes);
    const long long n_chunks = (n_cols + (long long)U * V * g.size - 1) / ((long long)U * V * g.size);
    const long long n_groups = g.stride;
    A* pw = partials + g.first * n_cols;  // this group's slices (g.first < n_groups for every group)
    A* pb = partials + (n_groups + g.first) * n_cols;
    // accumulators of rows of one chunk; rows of several chunks accumulate in the group's slices directly (each
    // entry by the one thread that owns it: no race)
    A acc_w[XPNN_LN_PACKS(T)][XPNN_LN_V(T)], acc_b[XPNN_LN_PACKS(T)][XPNN_LN_V(T)];
    XPNN_UNROLL
    for (int u = 0; u < U; ++u)
        XPNN_UNROLL
        for (int j = 0; j < V; ++j) acc_w[u][j] = acc_b[u][j] = A(0);
    if (n_chunks > 1) {
        for (long long chunk = 0; chunk < n_chunks; ++chunk)
            for (int u = 0; u < U; ++u)
                for (int j = 0; j < V; ++j) {
                    const long long c = xpnn_ln_entry<T>(chunk, u, g.rank, g.size, j);
                    if (c < n_cols) pw[c] = pb[c] = A(0);
                }
    }
    T xv[XPNN_LN_PACKS(T)][XPNN_LN_V(T)], gv[XPNN_LN_PACKS(T)][XPNN_LN_V(T)];
    for (long long r = g.first, r0 = g.warp_first; r0 < n_rows; r += g.stride, r0 += g.stride) {
        const bool active = r < n_rows;
        const long long n = active ? n_cols : 0;
        const T* xrow = x + (active ? r : 0) * n_cols;
        const T* grow = dy + (active ? r : 0) * n_cols;
        const A mu = active ? mean[r] : A(0), rs = active ? rstd[r] : A(0);
        A s1 = A(0), s2 = A(0);
        for (long long chunk = 0; chunk < n_chunks; ++chunk) {
            xpnn_ln_load(xrow, n, chunk, g.rank, g.size, xv);
            xpnn_ln_load(grow, n, chunk, g.rank, g.size, gv);
            XPNN_UNROLL
            for (int u = 0; u < U; ++u)
                XPNN_UNROLL
                for (int j = 0; j < V; ++j) {
                    const long long c = xpnn_ln_entry<T>(chunk, u, g.rank, g.size, j);
                    const A xhat = ((A)xpnn_to_acc(xv[u][j]) - mu) * rs;
                    A gw = (A)xpnn_to_acc(gv[u][j]);  // 0 past n
                    if (has_weight) gw *= (A)xpnn_to_acc(weight[c < n ? c : 0]);
                    s1 += gw;
                    s2 += gw * xhat;
                }
        }
        const A c1 = xpnn_group_sum(s1, lanes) / A(n_cols);
        const A c2 = xpnn_group_sum(s2, lanes) / A(n_cols);
        T* orow = dx + (active ? r : 0) * n_cols;
        const bool aligned_out = (unsigned long long)orow % 16u == 0u;
        for (long long chunk = 0; chunk < n_chunks; ++chunk) {
            if (n_chunks > 1) {
                xpnn_ln_load(xrow, n, chunk, g.rank, g.size, xv);
                xpnn_ln_load(grow, n, chunk, g.rank, g.size, gv);
            }
            XPNN_UNROLL
            for (int u = 0; u < U; ++u) {
                const long long e0 = xpnn_ln_entry<T>(chunk, u, g.rank, g.size, 0);
                xpnn_pack<T> out;
                XPNN_UNROLL
                for (int j = 0; j < V; ++j) {
                    const long long c = e0 + j < n ? e0 + j : 0;
                    const A xhat = ((A)xpnn_to_acc(xv[u][j]) - mu) * rs;
                    const A d = (A)xpnn_to_acc(gv[u][j]);
                    const A gw = has_weight ? d * (A)xpnn_to_acc(weight[c]) : d;
                    out.v[j] = xpnn_from_acc<T>(rs * ((gw - c1) - xhat * c2));
                    if (e0 + j < n) {
                        if (n_chunks > 1) {
                            pw[e0 + j] += d * xhat;
                            pb[e0 + j] += d;
                        } else {
                            acc_w[u][j] += d * xhat;
                            acc_b[u][j] += d;
                        }
                    }
                }
                xpnn_ln_store(orow, n, e0, aligned_out, out);
            }
        }
    }
    if (n_chunks == 1) {
        XPNN_UNROLL
        for (int u = 0; u < U; ++u)
            XPNN_UNROLL
            for (int j = 0; j < V; ++j) {
                const long long c = xpnn_ln_entry<T>(0, u, g.rank, g.size, j);
                if (c < n_cols) {
                    pw[c] = acc_w[u][j];
                    pb[c] = acc_b[u][j];
                }
            }
    }
}

// dweight[c] = sum_k partials[0][k][c], dbias[c] = sum_k partials[1][k][c] over the n_groups groups, in group
// order (a thread per column, grid-stride; adjacent threads read adjacent columns).
template <typename T, typename A>
__global__ void __launch_bounds__(256)
layer_norm_bwd_params(const A* __restrict__ partials, T* __restrict__ dweight, T* __restrict__ dbias,
                      long long n_groups, long long n_cols, int has_weight, int has_bias) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long c = blockIdx.x * (long long)blockDim.x + threadIdx.x; c < n_cols; c += stride) {
        A sw = A(0), sb = A(0);
        XPNN_NO_UNROLL for (long long k = 0; k < n_groups; ++k) {
            sw += partials[k * n_cols + c];
            sb += partials[(n_groups + k) * n_cols + c];
        }
        if (has_weight) dweight[c] = xpnn_from_acc<T>(sw);
        if (has_bias) dbias[c] = xpnn_from_acc<T>(sb);
    }
}
