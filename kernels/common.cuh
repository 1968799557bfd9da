// Shared device helpers for xpnn's CUDA kernels (included by every .cu file in this folder).
//
// Rules these sources follow (see ARCHITECTURE.md, "Testing CUDA code without a GPU"):
// no host headers (NVRTC rejects them); block sizes are multiples of 32 and at most 1024; shuffles are called by
// the full warp; a block returns early only as a whole; static shared memory through XPNN_SHARED(_ARRAY); the same
// text also compiles with g++ through tests/shim.
#ifndef XPNN_COMMON_CUH
#define XPNN_COMMON_CUH

#include <cuda_fp16.h>

#include "acc.cuh"
#include "adam.cuh"
#include "updates.cuh"

#define XPNN_FULL_MASK 0xffffffffu
#define XPNN_MAX_WARPS 32  // 1024 threads per block at most

// Static shared memory is declared through these two (so that the CPU shim can fill it with 0xFF bytes -- NaN for
// floats -- at the start of every block: uninitialised shared memory holds garbage on a GPU, not zeros).
#ifdef __CUDACC__
#define XPNN_SHARED(T, name) __shared__ T name
#define XPNN_SHARED_ARRAY(T, name, n) __shared__ T name[n]
#endif

// "#pragma unroll 1" / "#pragma unroll" for CUDA compilers only (a host compiler would warn about an unknown pragma).
#ifdef __CUDACC__
#define XPNN_NO_UNROLL _Pragma("unroll 1")
#define XPNN_UNROLL _Pragma("unroll")
#else
#define XPNN_NO_UNROLL
#define XPNN_UNROLL
#endif

__device__ __forceinline__ float xpnn_to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float xpnn_to_acc(float x) { return x; }
__device__ __forceinline__ double xpnn_to_acc(double x) { return x; }

template <typename T> __device__ __forceinline__ T xpnn_from_acc(float x);
template <> __device__ __forceinline__ __half xpnn_from_acc<__half>(float x) { return __float2half(x); }
template <> __device__ __forceinline__ float xpnn_from_acc<float>(float x) { return x; }
template <typename T> __device__ __forceinline__ T xpnn_from_acc(double x) { return (T)x; }

// -inf and +inf without <math.h>'s INFINITY (a host header).
template <typename A> __device__ __forceinline__ A xpnn_neg_inf();
template <> __device__ __forceinline__ float xpnn_neg_inf<float>() { return __int_as_float((int)0xff800000u); }
template <> __device__ __forceinline__ double xpnn_neg_inf<double>() {
    return __longlong_as_double((long long)0xfff0000000000000ULL);
}
template <typename A> __device__ __forceinline__ A xpnn_pos_inf() { return -xpnn_neg_inf<A>(); }

// Online log-sum-exp state: the running max m and s = sum(exp(x - m)). Empty state: (-inf, 0).
// Rows with +inf or NaN (semantics of xpnn/functional/softmax.py, PyTorch's): entries equal to m count 1 without
// computing exp(m - m) (NaN for m = +inf), so a row with +inf ends with (+inf, k >= 1); a NaN entry makes s NaN.
// xpnn_row_lse / xpnn_row_poison turn that into lse = +inf and NaN softmax rows.
template <typename A>
struct xpnn_max_sum {
    A m;
    A s;
};

template <typename A>
__device__ __forceinline__ xpnn_max_sum<A> xpnn_max_sum_add(xpnn_max_sum<A> st, A x) {
    if (x > st.m) {  // new max: rescale the sum (exp(-inf) = 0 covers the empty state; x = +inf: exp(-inf) too)
        st.s = st.s * xpnn_exp(st.m - x) + A(1);
        st.m = x;
    } else if (x > xpnn_neg_inf<A>()) {  // -inf entries contribute 0 (and -inf - -inf would be NaN)
        st.s += x == st.m ? A(1) : xpnn_exp(x - st.m);  // x == m: exactly 1, also for m = +inf
    } else if (x != x) {  // NaN propagates into the sum
        st.s += x;
    }
    return st;
}

// The factor exp(m_part - m) that rescales a partial sum to the merged max m (1 when m_part == m: no
// exp(inf - inf) or exp(-inf - -inf), both NaN).
template <typename A>
__device__ __forceinline__ A xpnn_rescale(A m_part, A m) {
    return m_part == m ? A(1) : xpnn_exp(m_part - m);
}

template <typename A>
__device__ __forceinline__ xpnn_max_sum<A> xpnn_max_sum_merge(xpnn_max_sum<A> a, xpnn_max_sum<A> b) {
    xpnn_max_sum<A> r;
    r.m = xpnn_max(a.m, b.m);
    // symmetric in a and b, so every lane of an xor-shuffle gets the same result
    r.s = a.s * xpnn_rescale(a.m, r.m) + b.s * xpnn_rescale(b.m, r.m);
    return r;
}

// log-sum-exp of a finished row state: +inf for a row with +inf and no NaN, NaN for a row with a NaN.
template <typename A>
__device__ __forceinline__ A xpnn_row_lse(xpnn_max_sum<A> st) {
    return st.m == xpnn_pos_inf<A>() && st.s == st.s ? st.m : st.m + xpnn_log(st.s);
}

// The state the per-entry outputs (softmax, log-softmax, cross-entropy) are computed from: a row with +inf gets
// s = NaN (inf - inf), so that every output of the row is NaN, like the reference's.
template <typename A>
__device__ __forceinline__ xpnn_max_sum<A> xpnn_row_poison(xpnn_max_sum<A> st) {
    if (st.m == xpnn_pos_inf<A>()) st.s = st.m - st.m;
    return st;
}

// Warp-wide all-reduce (xor-shuffles): every lane of the warp must call it; every lane gets the result.
template <typename A>
__device__ __forceinline__ A xpnn_warp_sum(A v) {
    for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(XPNN_FULL_MASK, v, off);
    return v;
}

template <typename A>
__device__ __forceinline__ xpnn_max_sum<A> xpnn_warp_max_sum(xpnn_max_sum<A> st) {
    for (int off = 16; off > 0; off /= 2) {
        xpnn_max_sum<A> other;
        other.m = __shfl_xor_sync(XPNN_FULL_MASK, st.m, off);
        other.s = __shfl_xor_sync(XPNN_FULL_MASK, st.s, off);
        st = xpnn_max_sum_merge(st, other);
    }
    return st;
}

// Block-wide reductions: a warp all-reduce, then warp 0 combines the per-warp partials kept in shared memory.
// Every thread of the block must call them; every thread gets the result.
// Two barriers: after the partials are written, and after warp 0 wrote the result. A following call of the same
// function may reuse the shared variables without a third barrier: its partials are written after every thread
// passed the second barrier (so warp 0 is done reading them), and its result only after its own first barrier
// (so every thread has read the previous result).
template <typename A>
__device__ __forceinline__ A xpnn_block_sum(A v) {
    XPNN_SHARED_ARRAY(A, partial, XPNN_MAX_WARPS);
    XPNN_SHARED(A, result);
    const unsigned lane = threadIdx.x % 32u, warp = threadIdx.x / 32u, n_warps = blockDim.x / 32u;
    v = xpnn_warp_sum(v);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = xpnn_warp_sum(lane < n_warps ? partial[lane] : A(0));
        if (lane == 0) result = v;
    }
    __syncthreads();
    return result;
}

template <typename A>
__device__ __forceinline__ xpnn_max_sum<A> xpnn_block_max_sum(xpnn_max_sum<A> st) {
    XPNN_SHARED_ARRAY(A, partial_m, XPNN_MAX_WARPS);
    XPNN_SHARED_ARRAY(A, partial_s, XPNN_MAX_WARPS);
    XPNN_SHARED(A, result_m);
    XPNN_SHARED(A, result_s);
    const unsigned lane = threadIdx.x % 32u, warp = threadIdx.x / 32u, n_warps = blockDim.x / 32u;
    st = xpnn_warp_max_sum(st);
    if (lane == 0) {
        partial_m[warp] = st.m;
        partial_s[warp] = st.s;
    }
    __syncthreads();
    if (warp == 0) {
        st.m = lane < n_warps ? partial_m[lane] : xpnn_neg_inf<A>();
        st.s = lane < n_warps ? partial_s[lane] : A(0);
        st = xpnn_warp_max_sum(st);
        if (lane == 0) {
            result_m = st.m;
            result_s = st.s;
        }
    }
    __syncthreads();
    st.m = result_m;
    st.s = result_s;
    return st;
}

// ---- row groups ---------------------------------------------------------------------------------------------------
// The row kernels give each row to a group of threads, chosen by the kernel argument `lanes` (uniform across the
// grid, so the block-wide reductions are called by all threads or by none):
//   lanes == 0       the whole block per row (wide rows; block-wide reductions, two barriers each);
//   lanes in 1..32   a power of two: `lanes` adjacent lanes of a warp per row, 32 / lanes rows per warp (narrow
//                    rows; reductions are xor-shuffles inside the group, none at all for lanes == 1).
// Groups loop over rows (grid-stride). Shuffles need the whole warp, so the loop runs while the warp's first row
// exists (`warp_first`); a group whose row is past the end is `active == false` for that round: it reads and
// writes nothing and reduces an empty state.
struct xpnn_row_group {
    long long first;       // first row of this group
    long long warp_first;  // first row of the warp's first group (== first for lanes 0 and 32): loop condition
    long long stride;      // rows between two rounds
    unsigned rank;         // thread index inside the group
    unsigned size;         // threads in the group
};

__device__ __forceinline__ xpnn_row_group xpnn_rows(int lanes) {
    xpnn_row_group g;
    if (lanes > 0) {
        const unsigned l = (unsigned)lanes;
        const unsigned per_warp = 32u / l, per_block = (blockDim.x / 32u) * per_warp;
        const long long warp_base = (long long)blockIdx.x * per_block + (long long)(threadIdx.x / 32u) * per_warp;
        g.first = warp_base + (threadIdx.x % 32u) / l;
        g.warp_first = warp_base;
        g.stride = (long long)gridDim.x * per_block;
        g.rank = threadIdx.x % l;
        g.size = l;
    } else {
        g.first = g.warp_first = blockIdx.x;
        g.stride = gridDim.x;
        g.rank = threadIdx.x;
        g.size = blockDim.x;
    }
    return g;
}

// Reductions over a row group: every thread of the warp (lanes > 0) or block (lanes == 0) must call them.
template <typename A>
__device__ __forceinline__ A xpnn_group_sum(A v, int lanes) {
    if (lanes == 0) return xpnn_block_sum(v);
    for (int off = lanes / 2; off > 0; off /= 2) v += __shfl_xor_sync(XPNN_FULL_MASK, v, off);
    return v;
}

template <typename A>
__device__ __forceinline__ xpnn_max_sum<A> xpnn_group_max_sum(xpnn_max_sum<A> st, int lanes) {
    if (lanes == 0) return xpnn_block_max_sum(st);
    for (int off = lanes / 2; off > 0; off /= 2) {
        xpnn_max_sum<A> other;
        other.m = __shfl_xor_sync(XPNN_FULL_MASK, st.m, off);
        other.s = __shfl_xor_sync(XPNN_FULL_MASK, st.s, off);
        st = xpnn_max_sum_merge(st, other);
    }
    return st;
}

// ---- 16-byte vectors ---------------------------------------------------------------------------------------------
// A row is read (and its outputs written) as 16-byte packs of 16 / sizeof(T) entries (4 float, 8 half, 2 double):
// one 128-bit load per pack. Rows start anywhere (row r at r * n_cols), so each row peels a scalar head up to the
// first 16-byte boundary and a scalar tail after the last whole pack; outputs use packs only when their row has
// the same offset from a 16-byte boundary as the input's (else scalar stores). XPNN_ROW_UNROLL packs per thread
// are loaded before any is used: that many 128-bit loads in flight per thread.
#define XPNN_ROW_UNROLL 4

template <typename T>
struct alignas(16) xpnn_pack {
    T v[16 / sizeof(T)];
};

template <typename T>
__device__ __forceinline__ xpnn_pack<T> xpnn_load_pack(const T* p) {
    return *reinterpret_cast<const xpnn_pack<T>*>(p);
}

// Store of outputs nothing reads back soon: evict-first in L2 (__stcs), which leaves L2 to the input rows the
// second pass reads again. Plain stores on compilers other than CUDA's (the CPU shim).
template <typename T>
__device__ __forceinline__ void xpnn_store_streaming(T* p, T v) {
#ifdef __CUDACC__
    __stcs(p, v);
#else
    *p = v;
#endif
}

template <typename T>
__device__ __forceinline__ void xpnn_store_pack_streaming(T* p, const xpnn_pack<T>& v) {
#ifdef __CUDACC__
    union {
        xpnn_pack<T> pack;
        uint4 bits;
    } u;
    u.pack = v;
    __stcs(reinterpret_cast<uint4*>(p), u.bits);
#else
    *reinterpret_cast<xpnn_pack<T>*>(p) = v;
#endif
}

// Entries of row[0:n] before its first 16-byte boundary (n when the row is not even aligned to sizeof(T)).
template <typename T>
__device__ __forceinline__ long long xpnn_head(const T* row, long long n) {
    const unsigned long long addr = (unsigned long long)row;
    if (addr % sizeof(T) != 0) return n;
    const long long head = (long long)(((16u - (addr & 15u)) & 15u) / sizeof(T));
    return head < n ? head : n;
}

// f(c, x) for every entry x = row[c], c in [0, n), the group's share (rank, size): packs where aligned.
template <typename T, typename F>
__device__ __forceinline__ void xpnn_row_read(const T* __restrict__ row, long long n, unsigned rank, unsigned size,
                                             F&& f) {
    const int V = 16 / (int)sizeof(T);
    const long long head = xpnn_head(row, n);
    const long long n_packs = (n - head) / V;
    for (long long c = rank; c < head; c += size) f(c, row[c]);
    const T* body = row + head;
    long long k = rank;
    for (; k + (XPNN_ROW_UNROLL - 1) * (long long)size < n_packs; k += XPNN_ROW_UNROLL * (long long)size) {
        xpnn_pack<T> p[XPNN_ROW_UNROLL];
XPNN_UNROLL
        for (int u = 0; u < XPNN_ROW_UNROLL; ++u) p[u] = xpnn_load_pack(body + (k + u * (long long)size) * V);
XPNN_UNROLL
        for (int u = 0; u < XPNN_ROW_UNROLL; ++u)
XPNN_UNROLL
            for (int j = 0; j < V; ++j) f(head + (k + u * (long long)size) * V + j, p[u].v[j]);
    }
    for (; k < n_packs; k += size) {
        const xpnn_pack<T> p = xpnn_load_pack(body + k * V);
XPNN_UNROLL
        for (int j = 0; j < V; ++j) f(head + k * V + j, p.v[j]);
    }
    for (long long c = head + n_packs * V + rank; c < n; c += size) f(c, row[c]);
}

// out[c] = f(c, row[c]) for the group's share of row[0:n], streaming stores; packs where aligned.
template <typename T, typename F>
__device__ __forceinline__ void xpnn_row_map(const T* __restrict__ row, T* __restrict__ out, long long n,
                                            unsigned rank, unsigned size, F&& f) {
    const int V = 16 / (int)sizeof(T);
    const long long head = xpnn_head(row, n);
    const bool packed_out = head == xpnn_head(out, n);  // same offset from a 16-byte boundary
    const long long n_packs = packed_out ? (n - head) / V : 0;
    for (long long c = rank; c < head; c += size) xpnn_store_streaming(out + c, f(c, row[c]));
    long long k = rank;
    for (; k + (XPNN_ROW_UNROLL - 1) * (long long)size < n_packs; k += XPNN_ROW_UNROLL * (long long)size) {
        xpnn_pack<T> p[XPNN_ROW_UNROLL];
XPNN_UNROLL
        for (int u = 0; u < XPNN_ROW_UNROLL; ++u) p[u] = xpnn_load_pack(row + head + (k + u * (long long)size) * V);
XPNN_UNROLL
        for (int u = 0; u < XPNN_ROW_UNROLL; ++u) {
            const long long c0 = head + (k + u * (long long)size) * V;
XPNN_UNROLL
            for (int j = 0; j < V; ++j) p[u].v[j] = f(c0 + j, p[u].v[j]);
            xpnn_store_pack_streaming(out + c0, p[u]);
        }
    }
    for (; k < n_packs; k += size) {
        const long long c0 = head + k * V;
        xpnn_pack<T> p = xpnn_load_pack(row + c0);
XPNN_UNROLL
        for (int j = 0; j < V; ++j) p.v[j] = f(c0 + j, p.v[j]);
        xpnn_store_pack_streaming(out + c0, p);
    }
    for (long long c = head + n_packs * V + rank; c < n; c += size) xpnn_store_streaming(out + c, f(c, row[c]));
}

// exp(d) for d = x - m <= 0 (or NaN) (the difference is formed first, so |x| ~ 1e4 loses no digits), two ways:
// - xpnn_exp_shifted, for the per-entry outputs (softmax, the cross-entropy gradient): expf, at most 2 ulp from
//   exp(d) (CUDA's documented bound for expf; the CPU shim's glibc expf: under 1 ulp). Not exp2f(d * log2(e)):
//   rounding that product (and log2(e)) errs by up to |d| * 7.3e-8 relative, 64 ulp (3.8e-6) at d = -87, where
//   float32 results are still normal.
// - xpnn_exp_sum_term, for the terms of s = sum(exp(x - m)) (pass 1): exp2f(d * log2(e)), one multiply and ex2 and
//   fewer registers (expf there made ptxas spill log_softmax_rows<float> on sm_90). The error of s is the terms'
//   errors weighted by the terms: 2 ulp + 7.3e-8 times the softmax-weighted mean of |x - m|, where the largest
//   terms have the smallest |x - m|.
// A float32 softmax or cross-entropy-gradient entry adds the roundings of 1/s and of the product and the error of s:
// within 8 ulp of the exact value from the same x - m (log-softmax: 2 ulp of the entry + 8 * 2^-24) for the rows of
// tests/_row_accuracy.py (up to 40,000 wide, |x - m| up to ~150); tests/test_kernels_shim.py checks these bounds,
// tests/test_cuda_kernels.py on a GPU.
__device__ __forceinline__ float xpnn_exp_shifted(float d) { return expf(d); }
__device__ __forceinline__ double xpnn_exp_shifted(double d) { return exp(d); }
__device__ __forceinline__ float xpnn_exp_sum_term(float d) { return exp2f(d * 1.4426950408889634f); }
__device__ __forceinline__ double xpnn_exp_sum_term(double d) { return exp(d); }

// Contribution of entry x to s = sum(exp(x - m)) for a state whose max m >= x (m from xpnn_max, so m is never
// NaN): exactly 1 for x == m (also m = +inf), 0 for x = m = -inf, NaN for x = NaN.
template <typename A>
__device__ __forceinline__ A xpnn_exp_term(A x, A m) {
    return x == m ? (x > xpnn_neg_inf<A>() ? A(1) : A(0)) : xpnn_exp_sum_term(x - m);
}

// Adds the entries of pack p (its max first, NaN ignored; the state rescaled once if it grew; then one exponent
// per entry) to a thread's state.
template <typename T, typename A>
__device__ __forceinline__ void xpnn_add_packs(xpnn_max_sum<A>& st, const xpnn_pack<T>* p, int count) {
    const int V = 16 / (int)sizeof(T);
    A pm = st.m;
    XPNN_UNROLL
    for (int u = 0; u < XPNN_ROW_UNROLL; ++u) {
        if (u < count) {
            XPNN_UNROLL
            for (int j = 0; j < V; ++j) pm = xpnn_max(pm, (A)xpnn_to_acc(p[u].v[j]));
        }
    }
    st.s *= xpnn_rescale(st.m, pm);
    st.m = pm;
    XPNN_UNROLL
    for (int u = 0; u < XPNN_ROW_UNROLL; ++u) {
        if (u < count) {
            XPNN_UNROLL
            for (int j = 0; j < V; ++j) st.s += xpnn_exp_term((A)xpnn_to_acc(p[u].v[j]), st.m);
        }
    }
}

// This thread's share of pass 1 over row[0:n]: scalar head, packs (XPNN_ROW_UNROLL at a time), scalar tail.
template <typename T>
__device__ __forceinline__ xpnn_max_sum<typename xpnn_acc<T>::type> xpnn_row_max_sum_local(
        const T* __restrict__ row, long long n, unsigned rank, unsigned size) {
    typedef typename xpnn_acc<T>::type A;
    xpnn_max_sum<A> st;
    st.m = xpnn_neg_inf<A>();
    st.s = A(0);
    const int V = 16 / (int)sizeof(T);
    const long long head = xpnn_head(row, n);
    const long long n_packs = (n - head) / V;
    for (long long c = rank; c < head; c += size) st = xpnn_max_sum_add(st, (A)xpnn_to_acc(row[c]));
    long long k = rank;
    for (; k + (XPNN_ROW_UNROLL - 1) * (long long)size < n_packs; k += XPNN_ROW_UNROLL * (long long)size) {
        xpnn_pack<T> p[XPNN_ROW_UNROLL];
        XPNN_UNROLL
        for (int u = 0; u < XPNN_ROW_UNROLL; ++u) p[u] = xpnn_load_pack(row + head + (k + u * (long long)size) * V);
        xpnn_add_packs(st, p, XPNN_ROW_UNROLL);
    }
    for (; k < n_packs; k += size) {
        const xpnn_pack<T> p = xpnn_load_pack(row + head + k * V);
        xpnn_add_packs(st, &p, 1);
    }
    for (long long c = head + n_packs * V + rank; c < n; c += size) st = xpnn_max_sum_add(st, (A)xpnn_to_acc(row[c]));
    return st;
}

// Pass 1 shared by the row kernels: (max, sum(exp(x - max))) of row[0:n_cols] over the row's group (an inactive
// group passes n_cols = 0).
template <typename T>
__device__ __forceinline__ xpnn_max_sum<typename xpnn_acc<T>::type> xpnn_row_max_sum(
        const T* __restrict__ row, long long n_cols, const xpnn_row_group& g, int lanes) {
    return xpnn_group_max_sum(xpnn_row_max_sum_local(row, n_cols, g.rank, g.size), lanes);
}

// Both passes of the softmax-like kernels: pass 1 over the group, then finish(st) with the group's state, then
// out[c] = f(c, row[c]). When the row's packs are at most XPNN_ROW_UNROLL per thread (the launcher's block choice
// aims at that for rows up to 4 * 16 bytes * 1024 threads), they stay in registers between the passes and the row
// is read from memory once (its scalar head and tail, under 16 bytes each, are read twice); float and half only.
// The group reduction has one call site, whichever path a group takes (lanes of one warp may take different ones).
template <typename T, typename Fin, typename F>
__device__ __forceinline__ void xpnn_row_two_pass(const T* __restrict__ row, T* __restrict__ out, long long n,
                                                 const xpnn_row_group& g, int lanes, Fin&& finish, F&& f) {
    typedef typename xpnn_acc<T>::type A;
    const int V = 16 / (int)sizeof(T);
    const long long head = xpnn_head(row, n);
    const long long n_packs = (n - head) / V;
    // (not for double: its 8-byte accumulators held across the reduction spilled within 128 registers)
    const bool resident = sizeof(A) == 4 && n_packs <= XPNN_ROW_UNROLL * (long long)g.size;
    xpnn_pack<T> p[XPNN_ROW_UNROLL];
    int count = 0;  // packs this thread holds
    xpnn_max_sum<A> st;
    if (resident) {
        st.m = xpnn_neg_inf<A>();
        st.s = A(0);
        for (long long c = g.rank; c < head; c += g.size) st = xpnn_max_sum_add(st, (A)xpnn_to_acc(row[c]));
        XPNN_UNROLL
        for (int u = 0; u < XPNN_ROW_UNROLL; ++u) {
            const long long k = g.rank + u * (long long)g.size;
            if (k < n_packs) {
                p[u] = xpnn_load_pack(row + head + k * V);
                count = u + 1;
            }
        }
        xpnn_add_packs(st, p, count);
        for (long long c = head + n_packs * V + g.rank; c < n; c += g.size)
            st = xpnn_max_sum_add(st, (A)xpnn_to_acc(row[c]));
    } else {
        st = xpnn_row_max_sum_local(row, n, g.rank, g.size);
    }
    finish(xpnn_group_max_sum(st, lanes));
    if (!resident) {
        xpnn_row_map(row, out, n, g.rank, g.size, f);
        return;
    }
    const bool packed_out = head == xpnn_head(out, n);
    for (long long c = g.rank; c < head; c += g.size) xpnn_store_streaming(out + c, f(c, row[c]));
    XPNN_UNROLL
    for (int u = 0; u < XPNN_ROW_UNROLL; ++u) {
        if (u < count) {
            const long long c0 = head + (g.rank + u * (long long)g.size) * V;
            XPNN_UNROLL
            for (int j = 0; j < V; ++j) p[u].v[j] = f(c0 + j, p[u].v[j]);
            if (packed_out) {
                xpnn_store_pack_streaming(out + c0, p[u]);
            } else {
                XPNN_UNROLL
                for (int j = 0; j < V; ++j) xpnn_store_streaming(out + c0 + j, p[u].v[j]);
            }
        }
    }
    for (long long c = head + n_packs * V + g.rank; c < n; c += g.size) xpnn_store_streaming(out + c, f(c, row[c]));
}

// ---- flat buffers (optimizer updates) ----------------------------------------------------------------------------
// Each element's update is a lambda over its values in the N arrays, applied by xpnn_flat_update: 16-byte packs of
// every array (one 128-bit load and store each) when all of them are 16-byte aligned -- flat buffers are, and
// parameters in them start at 64-byte offsets (xpnn/nn/parameter.py) --, then a scalar tail; else scalar.
// Arrays the options leave unused are passed as nullptr here: never loaded nor stored (their values are 0).
template <typename T, unsigned N, typename F>
__device__ __forceinline__ void xpnn_flat_update(T* const (&arrays)[N], unsigned store_mask, long long n, F&& f) {
    const int V = 16 / (int)sizeof(T);
    bool aligned = true;
    XPNN_UNROLL
    for (unsigned a = 0; a < N; ++a)
        if (arrays[a] != nullptr && (unsigned long long)arrays[a] % 16u != 0u) aligned = false;
    const long long n_packs = aligned ? n / V : 0;
    const long long first = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    const long long stride = (long long)gridDim.x * blockDim.x;
    XPNN_NO_UNROLL for (long long k = first; k < n_packs; k += stride) {
        xpnn_pack<T> p[N];
        XPNN_UNROLL
        for (unsigned a = 0; a < N; ++a) {
            if (arrays[a] != nullptr) {
                p[a] = xpnn_load_pack(arrays[a] + k * V);
            } else {
                XPNN_UNROLL
                for (int j = 0; j < V; ++j) p[a].v[j] = T(0);
            }
        }
        XPNN_UNROLL
        for (int j = 0; j < V; ++j) {
            T x[N];
            XPNN_UNROLL
            for (unsigned a = 0; a < N; ++a) x[a] = p[a].v[j];
            f(x);
            XPNN_UNROLL
            for (unsigned a = 0; a < N; ++a) p[a].v[j] = x[a];
        }
        XPNN_UNROLL
        for (unsigned a = 0; a < N; ++a)
            if (arrays[a] != nullptr && (store_mask >> a) & 1u)
                *reinterpret_cast<xpnn_pack<T>*>(arrays[a] + k * V) = p[a];
    }
    XPNN_NO_UNROLL for (long long i = n_packs * V + first; i < n; i += stride) {
        T x[N];
        XPNN_UNROLL
        for (unsigned a = 0; a < N; ++a) x[a] = arrays[a] != nullptr ? arrays[a][i] : T(0);
        f(x);
        XPNN_UNROLL
        for (unsigned a = 0; a < N; ++a)
            if (arrays[a] != nullptr && (store_mask >> a) & 1u) arrays[a][i] = x[a];
    }
}

// ---- data handed between blocks ----------------------------------------------------------------------------------
// A value one block writes for another to read after an atomic hand-off (the last-block reductions): the writer
// stores with xpnn_publish, then __threadfence() (release), then the atomic; the reader, once its atomic tells it
// the others are done, calls __threadfence() (acquire) before any xpnn_load_published. __ldcg reads L2, where the
// other SMs' stores are, not a possibly stale L1 line. The CPU shim (tests/shim) defines its own versions of these
// two, which check that discipline: a store not fenced before the next atomic, or a load after an atomic without a
// fence between, fails the launch.
#ifdef __CUDACC__
template <typename V>
__device__ __forceinline__ void xpnn_publish(V* p, V v) { *p = v; }
template <typename V>
__device__ __forceinline__ V xpnn_load_published(const V* p) { return __ldcg(p); }
#endif

#endif  // XPNN_COMMON_CUH
