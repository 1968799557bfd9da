// Fused scaled dot-product attention in the style of FlashAttention (Dao et al. 2022, "FlashAttention: Fast and
// Memory-Efficient Exact Attention with IO-Awareness"; the backward as in FlashAttention-2, Dao 2023), semantics of
// torch.nn.functional.scaled_dot_product_attention without a mask and dropout:
//   S = scale * Q K^T (causal: key j > query t masked, the top-left aligned tril(ones(Tq, Tk)) of PyTorch),
//   P = softmax(S) per row,  O = P V,  lse_t = log sum_j exp(S[t, j])   (saved for the backward)
// over q (BH, Tq, D), k and v (BH, Tk, D), BH = batch * heads, any D <= XPNN_ATTN_MAX_D (32, 64, 128, ...).
// The (Tq, Tk) matrices S and P are never written to memory: each block keeps its rows' online-softmax state
// (running max m, sum l, unnormalised output) in registers and walks the keys in tiles of 32 staged in shared
// memory; the backward recomputes P from q, k and lse tile by tile.
// Arithmetic in the accumulation type A (float for __half: tiles are converted to float when staged).
// Layout of the work: a block of W warps owns W * R rows (query rows in attention_fwd / attention_bwd_dq, key rows
// in attention_bwd_dkv), R per warp; in a tile, lane j takes the tile's row j (key j, or query j for dk/dv), then
// the lanes switch to head-dimension columns c = lane + 32 i (i < 4) for the products with the tile.
// Shared tiles are padded to XPNN_ATTN_MAX_D + 1 columns: lane j reading row j at column c hits bank (j + c) % 32.
// The last tiles of a row (Tk or Tq not a multiple of 32, or of W * R) are masked.
// Backward: attention_bwd_dq first (it also writes delta_t = sum_c dO[t, c] O[t, c]), then attention_bwd_dkv
// (reads delta); each output row is written by one block, no atomics: the results do not depend on scheduling.
//   dP = dO V^T,  dS = P * (dP - delta),  dQ = scale dS K,  dK = scale dS^T Q,  dV = P^T dO.
#include "common.cuh"

#define XPNN_ATTN_MAX_D 128
#define XPNN_ATTN_TILE 32
#define XPNN_ATTN_PAD (XPNN_ATTN_MAX_D + 1)
// __launch_bounds__(128, 4): with the thread bound alone ptxas for sm_90 kept attention_fwd within 64-72 registers
// and spilled; 4 blocks per multiprocessor leave it 128

// warps per block and rows per warp (xpnn/_cuda/launch.py ATTENTION_WARPS / ATTENTION_ROWS mirror these): 4 x 4
// for float; 2 x 2 for double, whose tiles take twice the shared memory (static shared memory stays under 48 KiB)
template <typename A>
struct xpnn_attn_cfg {
    static const unsigned warps = 4u;
    static const unsigned rows = 4u;
};
template <>
struct xpnn_attn_cfg<double> {
    static const unsigned warps = 2u;
    static const unsigned rows = 2u;
};
// sizes of the per-thread and shared arrays (unsigned)
#define XPNN_ATTN_R(A) xpnn_attn_cfg<A>::rows
#define XPNN_ATTN_BLOCK_ROWS(A) (xpnn_attn_cfg<A>::warps * xpnn_attn_cfg<A>::rows)

template <typename A>
__device__ __forceinline__ A xpnn_warp_max(A v) {
    for (int off = 16; off > 0; off /= 2) v = xpnn_max(v, __shfl_xor_sync(XPNN_FULL_MASK, v, off));
    return v;
}

// rows [row0, row0 + n) of a (rows, d) matrix into dst (row stride `pitch`), converted to A and multiplied by `mul`;
// rows past `n_valid` are 0. Every thread of the block calls it.
template <typename T, typename A>
__device__ __forceinline__ void xpnn_attn_stage(A* dst, int pitch, const T* __restrict__ src, long long row0, int n,
                                                long long n_valid, long long d, A mul) {
    const long long total = n * d;
    for (long long i = threadIdx.x; i < total; i += blockDim.x) {
        const long long r = i / d, c = i - r * d;
        dst[r * pitch + c] = row0 + r < n_valid ? (A)xpnn_to_acc(src[(row0 + r) * d + c]) * mul : A(0);
    }
}

// s[r] = sum_c rows[r * MD + c] * tile[lane * PAD + c] for c < dd: this warp's R staged rows (row stride MD) times
// the tile row of this lane (row stride PAD).
template <typename A, unsigned R>
__device__ __forceinline__ void xpnn_attn_row_dots(A (&s)[R], const A* rows, const A* tile, int lane, int dd) {
    XPNN_UNROLL
    for (int r = 0; r < (int)R; ++r) s[r] = A(0);
    XPNN_NO_UNROLL for (int c = 0; c < dd; ++c) {
        const A tc = tile[lane * XPNN_ATTN_PAD + c];
        XPNN_UNROLL
        for (int r = 0; r < (int)R; ++r) s[r] += rows[r * XPNN_ATTN_MAX_D + c] * tc;
    }
}

// acc[r][i] += sum_j w[r * TILE + j] * tile[j * PAD + c] at columns c = lane + 32 i < dd: this warp's R rows of
// weights (P or dS) times the staged tile.
template <typename A, unsigned R>
__device__ __forceinline__ void xpnn_attn_tile_acc(A (&acc)[R][4], const A* w, const A* tile, int lane, int dd) {
    XPNN_NO_UNROLL for (int j = 0; j < XPNN_ATTN_TILE; ++j) {
        XPNN_UNROLL
        for (int i = 0; i < 4; ++i) {
            const int c = lane + 32 * i;
            if (c < dd) {
                const A tc = tile[j * XPNN_ATTN_PAD + c];
                XPNN_UNROLL
                for (int r = 0; r < (int)R; ++r) acc[r][i] += w[r * XPNN_ATTN_TILE + j] * tc;
            }
        }
    }
}

// out[c] = acc[i] * mul at this lane's columns c = lane + 32 i < dd (one output row).
template <typename T, typename A>
__device__ __forceinline__ void xpnn_attn_store_row(T* __restrict__ out, const A (&acc)[4], A mul, int lane, int dd) {
    XPNN_UNROLL
    for (int i = 0; i < 4; ++i) {
        const int c = lane + 32 * i;
        if (c < dd) out[c] = xpnn_from_acc<T>(acc[i] * mul);
    }
}

// O and lse of query rows [q0, q0 + W * R) of one (batch, head), blocks over (bh, query block) grid-stride.
template <typename T, typename A>
__global__ void __launch_bounds__(128, 4)
attention_fwd(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ o,
              A* __restrict__ lse, long long n_bh, long long t_q, long long t_k, long long d, A scale, int causal) {
    const int W = (int)xpnn_attn_cfg<A>::warps, R = (int)xpnn_attn_cfg<A>::rows, BR = W * R;
    const int TILE = XPNN_ATTN_TILE, PAD = XPNN_ATTN_PAD, MD = XPNN_ATTN_MAX_D;
    XPNN_SHARED_ARRAY(A, qs, XPNN_ATTN_BLOCK_ROWS(A) * XPNN_ATTN_MAX_D);
    XPNN_SHARED_ARRAY(A, kv, XPNN_ATTN_TILE * XPNN_ATTN_PAD);
    XPNN_SHARED_ARRAY(A, ps, XPNN_ATTN_BLOCK_ROWS(A) * XPNN_ATTN_TILE);
    const int lane = (int)(threadIdx.x % 32u), warp = (int)(threadIdx.x / 32u);
    const int dd = (int)d;  // <= XPNN_ATTN_MAX_D (the launcher's check)
    const long long n_qb = (t_q + BR - 1) / BR;
    for (long long b = blockIdx.x; b < n_bh * n_qb; b += gridDim.x) {  // uniform across the block
        const long long bh = b / n_qb, q0 = (b - bh * n_qb) * BR;
        const T* qh = q + bh * t_q * d;
        const T* kh = k + bh * t_k * d;
        const T* vh = v + bh * t_k * d;
        __syncthreads();  // the previous round's readers of qs / kv / ps are done
        xpnn_attn_stage(qs, MD, qh, q0, BR, t_q, d, scale);  // q pre-scaled: S = (scale q) k^T
        A m[XPNN_ATTN_R(A)], l[XPNN_ATTN_R(A)], acc[XPNN_ATTN_R(A)][4];
        XPNN_UNROLL
        for (int r = 0; r < R; ++r) {
            m[r] = xpnn_neg_inf<A>();
            l[r] = A(0);
            XPNN_UNROLL
            for (int i = 0; i < 4; ++i) acc[r][i] = A(0);
        }
        const long long k_end = causal ? (q0 + BR < t_k ? q0 + BR : t_k) : t_k;  // keys any of the rows sees
        for (long long k0 = 0; k0 < k_end; k0 += TILE) {
            __syncthreads();  // qs written (first tile); the previous tile's readers of kv are done
            xpnn_attn_stage(kv, PAD, kh, k0, TILE, t_k, d, A(1));
            __syncthreads();
            A s[XPNN_ATTN_R(A)];
            xpnn_attn_row_dots(s, qs + warp * R * MD, kv, lane, dd);
            const long long key = k0 + lane;
            XPNN_UNROLL
            for (int r = 0; r < R; ++r) {
                const long long t = q0 + warp * R + r;
                if (key >= t_k || (causal && key > t)) s[r] = xpnn_neg_inf<A>();
                const A m_new = xpnn_max(m[r], xpnn_warp_max(s[r]));
                // exp(-inf - m) = 0 for masked keys; m_new = -inf only while every key so far is masked
                const A p = s[r] == xpnn_neg_inf<A>() ? A(0) : xpnn_exp(s[r] - m_new);
                const A alpha = xpnn_rescale(m[r], m_new);
                l[r] = l[r] * alpha + xpnn_warp_sum(p);
                m[r] = m_new;
                XPNN_UNROLL
                for (int i = 0; i < 4; ++i) acc[r][i] *= alpha;
                ps[(warp * R + r) * TILE + lane] = p;
            }
            __syncthreads();  // kv (keys) read by every warp; ps written
            xpnn_attn_stage(kv, PAD, vh, k0, TILE, t_k, d, A(1));
            __syncthreads();
            xpnn_attn_tile_acc(acc, ps + warp * R * TILE, kv, lane, dd);
        }
        XPNN_UNROLL
        for (int r = 0; r < R; ++r) {
            const long long t = q0 + warp * R + r;
            if (t < t_q) {
                xpnn_attn_store_row(o + (bh * t_q + t) * d, acc[r], A(1) / l[r], lane, dd);
                if (lane == 0) lse[bh * t_q + t] = m[r] + xpnn_log(l[r]);
            }
        }
    }
}

// dQ of query rows [q0, q0 + W * R), and delta_t = sum_c dO[t, c] O[t, c] of those rows (written for
// attention_bwd_dkv, launched next).
template <typename T, typename A>
__global__ void __launch_bounds__(128, 4)
attention_bwd_dq(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                 const T* __restrict__ o, const T* __restrict__ dout, const A* __restrict__ lse,
                 A* __restrict__ delta, T* __restrict__ dq, long long n_bh, long long t_q, long long t_k, long long d,
                 A scale, int causal) {
    const int W = (int)xpnn_attn_cfg<A>::warps, R = (int)xpnn_attn_cfg<A>::rows, BR = W * R;
    const int TILE = XPNN_ATTN_TILE, PAD = XPNN_ATTN_PAD, MD = XPNN_ATTN_MAX_D;
    XPNN_SHARED_ARRAY(A, qs, XPNN_ATTN_BLOCK_ROWS(A) * XPNN_ATTN_MAX_D);
    XPNN_SHARED_ARRAY(A, dos, XPNN_ATTN_BLOCK_ROWS(A) * XPNN_ATTN_MAX_D);
    XPNN_SHARED_ARRAY(A, kv, XPNN_ATTN_TILE * XPNN_ATTN_PAD);
    XPNN_SHARED_ARRAY(A, dss, XPNN_ATTN_BLOCK_ROWS(A) * XPNN_ATTN_TILE);
    const int lane = (int)(threadIdx.x % 32u), warp = (int)(threadIdx.x / 32u);
    const int dd = (int)d;  // <= XPNN_ATTN_MAX_D (the launcher's check)
    const long long n_qb = (t_q + BR - 1) / BR;
    for (long long b = blockIdx.x; b < n_bh * n_qb; b += gridDim.x) {
        const long long bh = b / n_qb, q0 = (b - bh * n_qb) * BR;
        const T* kh = k + bh * t_k * d;
        const T* vh = v + bh * t_k * d;
        __syncthreads();
        xpnn_attn_stage(qs, MD, q + bh * t_q * d, q0, BR, t_q, d, scale);
        xpnn_attn_stage(dos, MD, dout + bh * t_q * d, q0, BR, t_q, d, A(1));
        A lse_r[XPNN_ATTN_R(A)], delta_r[XPNN_ATTN_R(A)], acc[XPNN_ATTN_R(A)][4];
        XPNN_UNROLL
        for (int r = 0; r < R; ++r) {
            const long long t = q0 + warp * R + r;
            const bool valid = t < t_q;
            A dsum = A(0);
            const long long at = (bh * t_q + (valid ? t : 0)) * d;
            for (long long c = lane; c < d; c += 32)
                if (valid) dsum += (A)xpnn_to_acc(dout[at + c]) * (A)xpnn_to_acc(o[at + c]);
            delta_r[r] = xpnn_warp_sum(dsum);
            lse_r[r] = valid ? lse[bh * t_q + t] : A(0);
            if (valid && lane == 0) delta[bh * t_q + t] = delta_r[r];
            XPNN_UNROLL
            for (int i = 0; i < 4; ++i) acc[r][i] = A(0);
        }
        const long long k_end = causal ? (q0 + BR < t_k ? q0 + BR : t_k) : t_k;
        for (long long k0 = 0; k0 < k_end; k0 += TILE) {
            __syncthreads();  // qs / dos written (first tile); the previous tile's readers of kv are done
            xpnn_attn_stage(kv, PAD, vh, k0, TILE, t_k, d, A(1));
            __syncthreads();
            A dp[XPNN_ATTN_R(A)];
            xpnn_attn_row_dots(dp, dos + warp * R * MD, kv, lane, dd);
            __syncthreads();  // every warp read the values
            xpnn_attn_stage(kv, PAD, kh, k0, TILE, t_k, d, A(1));
            __syncthreads();
            A s[XPNN_ATTN_R(A)];
            xpnn_attn_row_dots(s, qs + warp * R * MD, kv, lane, dd);
            const long long key = k0 + lane;
            XPNN_UNROLL
            for (int r = 0; r < R; ++r) {
                const long long t = q0 + warp * R + r;
                const bool masked = t >= t_q || key >= t_k || (causal && key > t);
                const A p = masked ? A(0) : xpnn_exp(s[r] - lse_r[r]);
                dss[(warp * R + r) * TILE + lane] = masked ? A(0) : p * (dp[r] - delta_r[r]);
            }
            __syncthreads();  // dss written
            xpnn_attn_tile_acc(acc, dss + warp * R * TILE, kv, lane, dd);
        }
        XPNN_UNROLL
        for (int r = 0; r < R; ++r) {
            const long long t = q0 + warp * R + r;
            if (t < t_q) {
                xpnn_attn_store_row(dq + (bh * t_q + t) * d, acc[r], scale, lane, dd);
            }
        }
    }
}

// dK and dV of key rows [k0, k0 + W * R), walking the query tiles (causal: from the tile of query k0 on).
template <typename T, typename A>
__global__ void __launch_bounds__(128, 4)
attention_bwd_dkv(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                  const T* __restrict__ dout, const A* __restrict__ lse, const A* __restrict__ delta,
                  T* __restrict__ dk, T* __restrict__ dv, long long n_bh, long long t_q, long long t_k, long long d,
                  A scale, int causal) {
    const int W = (int)xpnn_attn_cfg<A>::warps, R = (int)xpnn_attn_cfg<A>::rows, BK = W * R;
    const int TILE = XPNN_ATTN_TILE, PAD = XPNN_ATTN_PAD, MD = XPNN_ATTN_MAX_D;
    XPNN_SHARED_ARRAY(A, ks, XPNN_ATTN_BLOCK_ROWS(A) * XPNN_ATTN_MAX_D);
    XPNN_SHARED_ARRAY(A, vs, XPNN_ATTN_BLOCK_ROWS(A) * XPNN_ATTN_MAX_D);
    XPNN_SHARED_ARRAY(A, buf, XPNN_ATTN_TILE * XPNN_ATTN_PAD);
    XPNN_SHARED_ARRAY(A, ps, XPNN_ATTN_BLOCK_ROWS(A) * XPNN_ATTN_TILE);
    XPNN_SHARED_ARRAY(A, dss, XPNN_ATTN_BLOCK_ROWS(A) * XPNN_ATTN_TILE);
    XPNN_SHARED_ARRAY(A, lse_s, XPNN_ATTN_TILE);
    XPNN_SHARED_ARRAY(A, delta_s, XPNN_ATTN_TILE);
    const int lane = (int)(threadIdx.x % 32u), warp = (int)(threadIdx.x / 32u);
    const int dd = (int)d;  // <= XPNN_ATTN_MAX_D (the launcher's check)
    const long long n_kb = (t_k + BK - 1) / BK;
    for (long long b = blockIdx.x; b < n_bh * n_kb; b += gridDim.x) {
        const long long bh = b / n_kb, k0 = (b - bh * n_kb) * BK;
        const T* qh = q + bh * t_q * d;
        const T* dh = dout + bh * t_q * d;
        __syncthreads();
        xpnn_attn_stage(ks, MD, k + bh * t_k * d, k0, BK, t_k, d, A(1));
        xpnn_attn_stage(vs, MD, v + bh * t_k * d, k0, BK, t_k, d, A(1));
        A dk_acc[XPNN_ATTN_R(A)][4], dv_acc[XPNN_ATTN_R(A)][4];
        XPNN_UNROLL
        for (int r = 0; r < R; ++r)
            XPNN_UNROLL
            for (int i = 0; i < 4; ++i) dk_acc[r][i] = dv_acc[r][i] = A(0);
        const long long t_begin = causal ? (k0 / TILE) * TILE : 0;  // queries t < k0 see none of these keys
        for (long long t0 = t_begin; t0 < t_q; t0 += TILE) {
            __syncthreads();  // ks / vs written (first tile); the previous tile's readers of buf are done
            xpnn_attn_stage(buf, PAD, qh, t0, TILE, t_q, d, scale);  // scale q: S = (scale q) k^T, dK = dS^T (scale q)
            if (threadIdx.x < (unsigned)TILE) {
                const long long t = t0 + threadIdx.x;
                lse_s[threadIdx.x] = t < t_q ? lse[bh * t_q + t] : A(0);
                delta_s[threadIdx.x] = t < t_q ? delta[bh * t_q + t] : A(0);
            }
            __syncthreads();
            A s[XPNN_ATTN_R(A)];
            xpnn_attn_row_dots(s, ks + warp * R * MD, buf, lane, dd);
            const long long t = t0 + lane;
            A p[XPNN_ATTN_R(A)];
            XPNN_UNROLL
            for (int r = 0; r < R; ++r) {
                const long long key = k0 + warp * R + r;
                const bool masked = t >= t_q || key >= t_k || (causal && key > t);
                p[r] = masked ? A(0) : xpnn_exp(s[r] - lse_s[lane]);
                ps[(warp * R + r) * TILE + lane] = p[r];
            }
            __syncthreads();  // every warp read the queries
            xpnn_attn_stage(buf, PAD, dh, t0, TILE, t_q, d, A(1));
            __syncthreads();
            A dp[XPNN_ATTN_R(A)];
            xpnn_attn_row_dots(dp, vs + warp * R * MD, buf, lane, dd);
            XPNN_UNROLL
            for (int r = 0; r < R; ++r)
                dss[(warp * R + r) * TILE + lane] = p[r] == A(0) ? A(0) : p[r] * (dp[r] - delta_s[lane]);
            __syncthreads();  // ps / dss written
            xpnn_attn_tile_acc(dv_acc, ps + warp * R * TILE, buf, lane, dd);
            __syncthreads();  // every warp read dO
            xpnn_attn_stage(buf, PAD, qh, t0, TILE, t_q, d, scale);
            __syncthreads();
            xpnn_attn_tile_acc(dk_acc, dss + warp * R * TILE, buf, lane, dd);
        }
        XPNN_UNROLL
        for (int r = 0; r < R; ++r) {
            const long long key = k0 + warp * R + r;
            if (key < t_k) {
                xpnn_attn_store_row(dk + (bh * t_k + key) * d, dk_acc[r], A(1), lane, dd);
                xpnn_attn_store_row(dv + (bh * t_k + key) * d, dv_acc[r], A(1), lane, dd);
            }
        }
    }
}
