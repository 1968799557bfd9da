// Embedding backward (torch.nn.functional.embedding's weight gradient) as a deterministic segmented sum:
//   dweight[i, c] = sum over positions n with ids[n] == i (in position order) of dy[n, c],  0 for padding_idx
// and for rows no position names. The launcher sorts the positions by id with a stable sort (`order`, and the ids
// in that order `sorted_ids`), so the positions of one id form a segment in position order. The block of sorted
// position s sums the segment that starts there (when s is a segment start; other blocks exit) over its columns,
// in the accumulation type A, and writes the id's row once: no atomics, the same bits every run. dweight rows no
// segment writes are the launcher's zeros.
#include "common.cuh"

template <typename T, typename A>
__global__ void __launch_bounds__(256)
embedding_bwd(const long long* __restrict__ order, const long long* __restrict__ sorted_ids,
              const T* __restrict__ dy, T* __restrict__ dweight, long long n_positions, long long n_cols,
              long long padding_idx) {
    for (long long s = blockIdx.x; s < n_positions; s += gridDim.x) {  // uniform across the block
        const long long id = sorted_ids[s];
        if ((s > 0 && sorted_ids[s - 1] == id) || id == padding_idx) continue;
        long long end = s + 1;
        while (end < n_positions && sorted_ids[end] == id) ++end;
        for (long long c = threadIdx.x; c < n_cols; c += blockDim.x) {
            A acc = A(0);
            XPNN_NO_UNROLL for (long long p = s; p < end; ++p) acc += (A)xpnn_to_acc(dy[order[p] * n_cols + c]);
            dweight[id * n_cols + c] = xpnn_from_acc<T>(acc);
        }
    }
}
