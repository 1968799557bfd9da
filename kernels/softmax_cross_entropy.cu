// Row kernels over a row-major (n_rows, n_cols) matrix: log-sum-exp, softmax, log-softmax, and softmax
// cross-entropy with its gradient (and its reduced loss) fused into one kernel.
//
// Each row belongs to a group of threads (common.cuh, "row groups"): a few lanes of a warp per row for narrow rows
// (`lanes` 1..32, several rows per warp, shuffles only or no reduction at all), the whole block for wide ones
// (lanes == 0); groups loop over rows (grid-stride) when there are more rows than groups. Pass 1 reads the row once
// in 16-byte packs (common.cuh, "16-byte vectors"; several loads in flight per thread) and computes m = max(x) and
// s = sum(exp(x - m)), rescaling once per pack. Pass 2 writes the output once, in packs too, from the packs still
// in registers when the row fits 4 packs per thread (xpnn_row_two_pass), else reading the row again (from L2: the
// outputs are stored evict-first so that they do not push the row out).
// Rows with +inf or NaN: see common.cuh (lse = +inf, the row's other outputs NaN, like the reference).
// T is the storage type (__half, float, double), A the accumulation type (float for __half).
// __launch_bounds__ = the largest block the launcher may use (xpnn/_cuda/launch.py reads it from here): without it
// the compiler may use more registers than a block of that size can have (double cross-entropy took 72 per thread:
// a 1024-thread block would fail to launch with "too many resources requested"; within 64 it spills, hence 512;
// the float16 softmax with four 16-byte packs in flight spilled within 64 registers too).
#include "common.cuh"

// out[r] = m + log(s)
template <typename T, typename A>
__global__ void __launch_bounds__(512)
logsumexp_rows(const T* __restrict__ x, T* __restrict__ out, long long n_rows, long long n_cols, int lanes) {
    const xpnn_row_group g = xpnn_rows(lanes);
    for (long long r = g.first, r0 = g.warp_first; r0 < n_rows; r += g.stride, r0 += g.stride) {
        const bool active = r < n_rows;
        const xpnn_max_sum<A> st = xpnn_row_max_sum(x + (active ? r : 0) * n_cols, active ? n_cols : 0, g, lanes);
        if (active && g.rank == 0) out[r] = xpnn_from_acc<T>(xpnn_row_lse(st));
    }
}

// out[r, c] = exp(x[r, c] - m) / s  (not exp(x - lse): lse = m + log(s) rounds at the magnitude of m, an error
// of ~1e-5 relative in float32 for |m| ~ 100 that the division avoids)
template <typename T, typename A>
__global__ void __launch_bounds__(512)
softmax_rows(const T* __restrict__ x, T* __restrict__ out, long long n_rows, long long n_cols, int lanes) {
    const xpnn_row_group g = xpnn_rows(lanes);
    for (long long r = g.first, r0 = g.warp_first; r0 < n_rows; r += g.stride, r0 += g.stride) {
        const bool active = r < n_rows;
        const long long n = active ? n_cols : 0;
        const T* row = x + (active ? r : 0) * n_cols;
        A m = A(0), inv_s = A(0);
        xpnn_row_two_pass(row, out + (active ? r : 0) * n_cols, n, g, lanes, [&](xpnn_max_sum<A> st) {
            st = xpnn_row_poison(st);
            m = st.m;
            inv_s = A(1) / st.s;
        }, [&](long long, T xc) { return xpnn_from_acc<T>(xpnn_exp_shifted((A)xpnn_to_acc(xc) - m) * inv_s); });
    }
}

// out[r, c] = (x[r, c] - m) - log(s)
template <typename T, typename A>
__global__ void __launch_bounds__(512)
log_softmax_rows(const T* __restrict__ x, T* __restrict__ out, long long n_rows, long long n_cols, int lanes) {
    const xpnn_row_group g = xpnn_rows(lanes);
    for (long long r = g.first, r0 = g.warp_first; r0 < n_rows; r += g.stride, r0 += g.stride) {
        const bool active = r < n_rows;
        const long long n = active ? n_cols : 0;
        const T* row = x + (active ? r : 0) * n_cols;
        A m = A(0), log_s = A(0);
        xpnn_row_two_pass(row, out + (active ? r : 0) * n_cols, n, g, lanes, [&](xpnn_max_sum<A> st) {
            st = xpnn_row_poison(st);
            m = st.m;
            log_s = xpnn_log(st.s);
        }, [&](long long, T xc) { return xpnn_from_acc<T>(((A)xpnn_to_acc(xc) - m) - log_s); });
    }
}

// For the mean, launched before cross_entropy_fwd_bwd on zeroed counters: counters[0] += #{r : target[r] !=
// ignore_index} (an integer atomic per block: the count does not depend on block order).
__global__ void __launch_bounds__(256)
cross_entropy_count(const long long* __restrict__ target, long long n_rows, long long ignore_index,
                    unsigned long long* counters) {
    unsigned long long count = 0;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long r = blockIdx.x * (long long)blockDim.x + threadIdx.x; r < n_rows; r += stride)
        count += target[r] != ignore_index ? 1ull : 0ull;
    count = xpnn_block_sum(count);
    if (threadIdx.x == 0 && count != 0ull) atomicAdd(counters, count);
}

#define XPNN_REDUCTION_NONE 0
#define XPNN_REDUCTION_SUM 1
#define XPNN_REDUCTION_MEAN 2

// Softmax cross-entropy with logits, PyTorch semantics, forward and gradient in one kernel.
//   nll_r    = (m - x[t]) + log(s)                     (this order keeps float32 digits at |x| ~ 1e4)
//   smooth_r = sum_c (lse - x_c) = sum_c (m - x_c) + C log(s)
//   loss_r   = (1 - eps) nll_r + (eps / C) smooth_r,   0 where t == ignore_index
//   grad_r   = (softmax_r - (1 - eps) onehot(t) - eps / C) * scale_r,   scale_r = 0 where ignored
// Ignored rows are computed like the others with scale_r = 0, so that a row with +inf/NaN gives a NaN gradient
// there too, like the reference and PyTorch (rows with +inf: NaN loss and gradient, see common.cuh).
// counters (zero at launch; the last block sets them back to zero): [0] the number of valid targets (from
// cross_entropy_count, for the mean only), [1] the number of blocks done. scale = 1 / counters[0] for the mean,
// else 1.
// reduction "none": loss[r] = loss_r. "sum"/"mean": each block adds its rows' losses (in double) into
// partials[blockIdx.x]; the last block to finish (atomic count in counters[1]) sums the partials in a fixed order,
// so the result does not depend on block timing, and writes loss[0] = sum (/ counters[0] for the mean: 0/0 = NaN
// when every target is ignored, like PyTorch). Targets must be validated before launch.
template <typename T, typename A>
__global__ void __launch_bounds__(512)
cross_entropy_fwd_bwd(const T* __restrict__ logits, const long long* __restrict__ target, unsigned long long* counters,
                      T* __restrict__ grad, T* __restrict__ loss, double* __restrict__ partials, long long n_rows,
                      long long n_cols, long long ignore_index, double label_smoothing, int reduction, int lanes) {
    const A eps = (A)label_smoothing;
    const A on_weight = A(1) - eps;        // weight of the target class
    const A off_weight = eps / (A)n_cols;  // weight of every class
    const A scale = reduction == XPNN_REDUCTION_MEAN ? A(1) / (A)counters[0] : A(1);
    const xpnn_row_group g = xpnn_rows(lanes);
    double total = 0.0;  // this thread's share of the summed loss (rank 0 of each group adds its rows)
    for (long long r = g.first, r0 = g.warp_first; r0 < n_rows; r += g.stride, r0 += g.stride) {
        const bool active = r < n_rows;
        const long long n = active ? n_cols : 0;
        const T* row = logits + (active ? r : 0) * n_cols;
        const long long t = active ? target[r] : ignore_index;
        const bool valid = t != ignore_index;  // uniform across the group
        const A scale_r = valid ? scale : A(0);
        xpnn_max_sum<A> st;
        A log_s = A(0), inv_s = A(0);
        A shifted_sum = A(0);  // sum_c (m - x_c), needed for label smoothing only
        xpnn_row_two_pass(row, grad + (active ? r : 0) * n_cols, n, g, lanes, [&](xpnn_max_sum<A> s) {
            st = xpnn_row_poison(s);
            log_s = xpnn_log(st.s);
            inv_s = A(1) / st.s;
        }, [&](long long c, T x) {
            const A xc = (A)xpnn_to_acc(x);
            A gc = xpnn_exp_shifted(xc - st.m) * inv_s - off_weight;  // softmax as in softmax_rows
            gc -= c == t ? on_weight : A(0);
            shifted_sum += st.m - xc;
            return xpnn_from_acc<T>(gc * scale_r);
        });
        if (eps > A(0)) shifted_sum = xpnn_group_sum(shifted_sum, lanes);  // eps is uniform: all or none
        if (active && g.rank == 0 && !valid) {
            if (reduction == XPNN_REDUCTION_NONE) loss[r] = xpnn_from_acc<T>(A(0));
        } else if (active && g.rank == 0) {
            A loss_r = on_weight * ((st.m - (A)xpnn_to_acc(row[t])) + log_s);
            if (eps > A(0)) loss_r += off_weight * (shifted_sum + (A)n_cols * log_s);
            if (reduction == XPNN_REDUCTION_NONE) loss[r] = xpnn_from_acc<T>(loss_r);
            total += (double)loss_r;
        }
    }
    if (reduction == XPNN_REDUCTION_NONE) return;  // uniform: the whole grid returns
    // every thread of the block gets here (the row loops above contain no return)
    total = xpnn_block_sum(total);
    XPNN_SHARED(int, is_last);
    if (threadIdx.x == 0) {
        xpnn_publish(partials + blockIdx.x, total);
        __threadfence();  // release: the partial is visible to every block before the count says so
        const bool last = atomicAdd(counters + 1, 1ull) == gridDim.x - 1ull;
        if (last) __threadfence();  // acquire: the other blocks' partials are read after their counts were seen
        is_last = last;
    }
    __syncthreads();  // the other threads read after thread 0's acquire fence
    if (!is_last) return;  // uniform across the block
    double sum = 0.0;
    for (unsigned b = threadIdx.x; b < gridDim.x; b += blockDim.x) sum += xpnn_load_published(partials + b);
    sum = xpnn_block_sum(sum);
    if (threadIdx.x == 0) {
        loss[0] = xpnn_from_acc<T>((A)(reduction == XPNN_REDUCTION_MEAN ? sum / (double)counters[0] : sum));
        counters[0] = 0ull;  // ready for the next launch: the launcher keeps counters and partials across calls
        counters[1] = 0ull;  // (every other block read counters[0] before its count, hence before this)
    }
}
