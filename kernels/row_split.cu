// Softmax, log-softmax and log-sum-exp of few wide rows (say 8 rows of 32768), split across blocks: a block per
// row would leave most of the GPU idle. Two launches:
//   row_chunk_max_sum   block (r, k) reduces chunk k of row r to its (max, sum(exp(x - max))) in partials;
//   row_chunk_finish    block (r, k) merges row r's partials (each warp: a lane per chunk, then shuffles; the
//                       same state in every block of the row) and writes its chunk of the output (op 1 softmax,
//                       2 log-softmax), or, for op 0, block (r, 0) writes lse_r.
// Chunks hold a multiple of 64 entries (the launcher's choice), so every chunk starts at the row's offset from a
// 16-byte boundary and reads in packs like a whole row (common.cuh). Rows with +inf/NaN as in common.cuh.
// partials: 2 * n_rows * chunks entries of A, (m, s) per (row, chunk).
#include "common.cuh"

#define XPNN_SPLIT_LSE 0
#define XPNN_SPLIT_SOFTMAX 1
#define XPNN_SPLIT_LOG_SOFTMAX 2

template <typename T, typename A>
__global__ void __launch_bounds__(512)
row_chunk_max_sum(const T* __restrict__ x, A* __restrict__ partials, long long n_rows, long long n_cols,
                  long long chunk) {
    const long long chunks = (n_cols + chunk - 1) / chunk;
    for (long long b = blockIdx.x; b < n_rows * chunks; b += gridDim.x) {  // uniform across the block
        const long long r = b / chunks, c0 = (b % chunks) * chunk;
        const long long n = n_cols - c0 < chunk ? n_cols - c0 : chunk;
        xpnn_row_group g;
        g.first = g.warp_first = b;
        g.stride = gridDim.x;
        g.rank = threadIdx.x;
        g.size = blockDim.x;
        const xpnn_max_sum<A> st = xpnn_row_max_sum(x + r * n_cols + c0, n, g, 0);
        if (threadIdx.x == 0) {
            partials[2 * b] = st.m;
            partials[2 * b + 1] = st.s;
        }
    }
}

template <typename T, typename A>
__global__ void __launch_bounds__(512)
row_chunk_finish(const T* __restrict__ x, const A* __restrict__ partials, T* __restrict__ out, long long n_rows,
                 long long n_cols, long long chunk, int op) {
    const long long chunks = (n_cols + chunk - 1) / chunk;
    for (long long b = blockIdx.x; b < n_rows * chunks; b += gridDim.x) {
        const long long r = b / chunks, k = b % chunks, c0 = k * chunk;
        const long long n = n_cols - c0 < chunk ? n_cols - c0 : chunk;
        // Every warp merges the row's partials: lane j takes chunks j, j + 32, ..., then an xor-shuffle tree (the
        // merge is symmetric, so every lane ends with the same state). Every warp of every block of the row does the
        // same operations in the same order: the same state bit for bit. Merging the empty state (-inf, 0) returns
        // the other state exactly, also (+inf, k) and a NaN sum.
        xpnn_max_sum<A> st;
        st.m = xpnn_neg_inf<A>();
        st.s = A(0);
        XPNN_NO_UNROLL for (long long j = threadIdx.x % 32u; j < chunks; j += 32) {  // (unrolled: spills)
            xpnn_max_sum<A> other;
            other.m = partials[2 * (r * chunks + j)];
            other.s = partials[2 * (r * chunks + j) + 1];
            st = xpnn_max_sum_merge(st, other);
        }
        st = xpnn_warp_max_sum(st);
        if (op == XPNN_SPLIT_LSE) {
            if (k == 0 && threadIdx.x == 0) out[r] = xpnn_from_acc<T>(xpnn_row_lse(st));
            continue;
        }
        st = xpnn_row_poison(st);
        const T* row = x + r * n_cols + c0;
        T* orow = out + r * n_cols + c0;
        if (op == XPNN_SPLIT_SOFTMAX) {
            const A inv_s = A(1) / st.s;
            xpnn_row_map(row, orow, n, threadIdx.x, blockDim.x, [&](long long, T xc) {
                return xpnn_from_acc<T>(xpnn_exp_shifted((A)xpnn_to_acc(xc) - st.m) * inv_s);
            });
        } else {
            const A log_s = xpnn_log(st.s);
            xpnn_row_map(row, orow, n, threadIdx.x, blockDim.x, [&](long long, T xc) {
                return xpnn_from_acc<T>(((A)xpnn_to_acc(xc) - st.m) - log_s);
            });
        }
    }
}
