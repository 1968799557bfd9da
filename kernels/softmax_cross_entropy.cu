// Row kernels over a row-major (n_rows, n_cols) matrix: log-sum-exp, softmax, log-softmax, and softmax
// cross-entropy with its gradient fused into one kernel.
//
// One block per row (grid-stride over rows when there are more rows than blocks). Pass 1 reads the row once and
// computes m = max(x) and s = sum(exp(x - m)) with online rescaling, reduced across the block (warp shuffles, then
// shared memory). Pass 2 reads the row again (mostly from cache) and writes the output once.
// T is the storage type (__half, float, double), A the accumulation type (float for __half).
#include "common.cuh"

// out[r] = m + log(s)
template <typename T, typename A>
__global__ void logsumexp_rows(const T* __restrict__ x, T* __restrict__ out, long long n_rows, long long n_cols) {
    for (long long r = blockIdx.x; r < n_rows; r += gridDim.x) {
        const xpnn_max_sum<A> st = xpnn_row_max_sum(x + r * n_cols, n_cols);
        if (threadIdx.x == 0) out[r] = xpnn_from_acc<T>(st.m + xpnn_log(st.s));
    }
}

// out[r, c] = exp(x[r, c] - lse_r)
template <typename T, typename A>
__global__ void softmax_rows(const T* __restrict__ x, T* __restrict__ out, long long n_rows, long long n_cols) {
    for (long long r = blockIdx.x; r < n_rows; r += gridDim.x) {
        const T* row = x + r * n_cols;
        const xpnn_max_sum<A> st = xpnn_row_max_sum(row, n_cols);
        const A lse = st.m + xpnn_log(st.s);
        for (long long c = threadIdx.x; c < n_cols; c += blockDim.x)
            out[r * n_cols + c] = xpnn_from_acc<T>(xpnn_exp((A)xpnn_to_acc(row[c]) - lse));
    }
}

// out[r, c] = (x[r, c] - m) - log(s)
template <typename T, typename A>
__global__ void log_softmax_rows(const T* __restrict__ x, T* __restrict__ out, long long n_rows, long long n_cols) {
    for (long long r = blockIdx.x; r < n_rows; r += gridDim.x) {
        const T* row = x + r * n_cols;
        const xpnn_max_sum<A> st = xpnn_row_max_sum(row, n_cols);
        const A log_s = xpnn_log(st.s);
        for (long long c = threadIdx.x; c < n_cols; c += blockDim.x)
            out[r * n_cols + c] = xpnn_from_acc<T>(((A)xpnn_to_acc(row[c]) - st.m) - log_s);
    }
}

// Softmax cross-entropy with logits, PyTorch semantics, forward and gradient in one kernel.
//   nll_r    = (m - x[t]) + log(s)                     (this order keeps float32 digits at |x| ~ 1e4)
//   smooth_r = sum_c (lse - x_c) = sum_c (m - x_c) + C log(s)
//   loss_r   = (1 - eps) nll_r + (eps / C) smooth_r,   0 where t == ignore_index
//   grad_r   = (softmax_r - (1 - eps) onehot(t) - eps / C) * scale,   0 rows where ignored
// scale = 1 / *n_valid when mean_reduction != 0, else 1 (n_valid is a device scalar: no host sync needed).
// loss_rows holds the per-row losses in A; the caller reduces them. Targets must be validated before launch.
template <typename T, typename A>
__global__ void cross_entropy_fwd_bwd(const T* __restrict__ logits, const long long* __restrict__ target,
                                      const long long* __restrict__ n_valid, T* __restrict__ grad,
                                      A* __restrict__ loss_rows, long long n_rows, long long n_cols,
                                      long long ignore_index, double label_smoothing, int mean_reduction) {
    const A eps = (A)label_smoothing;
    const A on_weight = A(1) - eps;   // weight of the target class
    const A off_weight = eps / (A)n_cols;  // weight of every class
    for (long long r = blockIdx.x; r < n_rows; r += gridDim.x) {
        const T* row = logits + r * n_cols;
        T* grow = grad + r * n_cols;
        const long long t = target[r];
        if (t == ignore_index) {  // uniform across the block: no barrier is skipped by part of it
            for (long long c = threadIdx.x; c < n_cols; c += blockDim.x) grow[c] = xpnn_from_acc<T>(A(0));
            if (threadIdx.x == 0) loss_rows[r] = A(0);
            continue;
        }
        const xpnn_max_sum<A> st = xpnn_row_max_sum(row, n_cols);
        const A log_s = xpnn_log(st.s);
        const A lse = st.m + log_s;
        const A scale = mean_reduction ? A(1) / (A)(*n_valid) : A(1);
        A shifted_sum = A(0);  // sum_c (m - x_c), needed for label smoothing only
        for (long long c = threadIdx.x; c < n_cols; c += blockDim.x) {
            const A xc = (A)xpnn_to_acc(row[c]);
            A g = xpnn_exp(xc - lse) - off_weight;
            if (c == t) g -= on_weight;
            grow[c] = xpnn_from_acc<T>(g * scale);
            shifted_sum += st.m - xc;
        }
        if (eps > A(0)) shifted_sum = xpnn_block_sum(shifted_sum);  // eps is uniform: all threads or none
        if (threadIdx.x == 0) {
            A loss = on_weight * ((st.m - (A)xpnn_to_acc(row[t])) + log_s);
            if (eps > A(0)) loss += off_weight * (shifted_sum + (A)n_cols * log_s);
            loss_rows[r] = loss;
        }
    }
}
