// A CPU runtime for xpnn's CUDA kernels: the same .cu sources compile with g++ and run here.
//
// - CUDA qualifiers are macros; threadIdx/blockIdx/blockDim/gridDim are thread-local variables the launcher sets.
// - Blocks run concurrently on a pool of OS threads ("workers"; xpnn_shim_set_workers, 4 by default): worker w runs
//   blocks w, w + W, w + 2W, ... (reverse order: from the last block down), so a grid of at least W blocks always
//   uses W threads. __shared__ variables are function-static thread_local: each worker's block has its own.
//   atomicAdd is a real atomic (__atomic builtins) and __threadfence a real fence (seq_cst), so the kernels' block
//   hand-offs are exercised across OS threads. With one worker, blocks run one after another.
// - Hand-off discipline (the CUDA memory model, which x86 would forgive): a value stored with xpnn_publish must be
//   fenced before the storing thread's next atomic (release), and once a thread of the block did an atomic, no
//   thread of the block may xpnn_load_published until that thread has fenced (acquire). Either mistake fails the
//   launch with a message naming it (see common.cuh, "data handed between blocks"). Beyond these per-thread rules,
//   each published store is tagged with its block, thread and fence epoch, and a load of another block's value
//   fails unless a release of it reached the loading thread through atomics and an acquire fence (Ordering).
// - Cooperative kernels run their block's threads as ucontext fibers, in forward or reverse order, or in a seeded
//   random order drawn afresh at every scheduling round (xpnn_shim_set_order_seed; a missing
//   barrier shows up in one order only). __syncthreads() suspends a fiber until every live thread of the block
//   arrives (threads that returned drop out); warp shuffles exchange values through per-thread slots between two
//   warp barriers of the lanes of their mask (partial masks and __syncwarp too), which must all meet at the same
//   call site with the same mask (release_warp).
// - Other kernels run their threads as a plain loop; if such a kernel synchronises, the launch fails.
// - xpnn_shim_set_blocks runs only the listed blocks of a grid (gridDim unchanged): a grid-stride kernel then
//   touches only those blocks' elements, so index math past 2^31 elements runs on sparse arrays in little memory.
// - Errors never abort: the launch returns non-zero and xpnn_shim_last_error() says why.
// - Under AddressSanitizer (tests/test_kernels_asan.py) every fiber switch is announced to it, as its fiber API asks;
//   without the announcements it warns about an unknown stack and may report false positives.
#ifndef XPNN_SHIM_RUNTIME_H
#define XPNN_SHIM_RUNTIME_H

#include <math.h>
#include <stdint.h>
#include <string.h>
#include <ucontext.h>

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define XPNN_SHIM_ASAN 1
#endif
// The fiber switches are not instrumented: an instrumented caller of a function that does not return (the jumps)
// first unpoisons the rest of its stack, a system call and a shadow memset per switch (6x slower); stale
// redzones on abandoned fiber stacks are cleared once per block instead.
#define XPNN_SHIM_NO_ASAN __attribute__((no_sanitize_address))

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static thread_local

// common.cuh's static shared memory: function-static thread_local (each worker's block has its own), filled with
// 0xFF bytes (NaN for float/double, -1 for integers) by the first thread of each block that reaches the
// declaration -- so a read of a slot no thread of this block wrote sees garbage, as on a GPU, instead of the zeros
// (or a previous block's values) a static would hold. -DXPNN_SHIM_NO_POISON builds the old behaviour (tests).
#define XPNN_SHARED(T, name) \
    static thread_local T name; \
    xpnn_shim::shared_block_start(&name, sizeof(name))
#define XPNN_SHARED_ARRAY(T, name, n) \
    static thread_local T name[n]; \
    xpnn_shim::shared_block_start(name, sizeof(name))
#define __launch_bounds__(...)

struct dim3 {
    unsigned x, y, z;
};

static thread_local dim3 threadIdx = {0, 0, 0};
static thread_local dim3 blockIdx = {0, 0, 0};
static thread_local dim3 blockDim = {1, 1, 1};
static thread_local dim3 gridDim = {1, 1, 1};

namespace xpnn_shim {

enum State { RUNNABLE, AT_BLOCK_BARRIER, AT_WARP_BARRIER, DONE };

// Fibers start with setcontext and then switch with __builtin_setjmp/__builtin_longjmp, which (unlike
// swapcontext) do not save the signal mask: no system call per switch.
struct Fiber {
    ucontext_t ctx;
    void* jb[5];
    State state;
    bool started;
    void* asan_fake_stack;  // AddressSanitizer's fake stack of this fiber while it is switched out
};

const size_t kStackSize = 64 * 1024;

// Cross-block ordering, the CUDA memory model's rules for data one block hands to another (common.cuh, "data
// handed between blocks"), tracked per launch: every xpnn_publish store is tagged with the writing (block, thread)
// and that thread's fence count at the store (its epoch). An atomic releases what its thread stored before its
// last fence (the address records writer -> fence count); an atomic of another thread reads those releases, and
// its thread's next __threadfence() acquires them (a __syncthreads() then shares them with the block). An
// xpnn_load_published of a value another block stored must be covered by an acquired release of the storing
// thread with a fence after the store, else the launch fails: a load that no acquire ordered (x86 and the
// shim's seq_cst fences would have made it harmless). The storing thread itself must fence and do the atomic.
// -DXPNN_SHIM_NO_ORDERING builds the shim without these checks (tests show what they add).
struct StoreTag {
    unsigned block, thread;
    unsigned long long epoch;
};

struct Ordering {
    std::mutex lock;
    std::unordered_map<const void*, StoreTag> stores;  // published addresses -> last store
    std::unordered_map<const void*, std::unordered_map<unsigned long long, unsigned long long>> released;
};

inline unsigned long long writer_key(unsigned block, unsigned thread) {
    return (static_cast<unsigned long long>(block) << 32) | thread;
}

inline void merge_releases(std::unordered_map<unsigned long long, unsigned long long>& into,
                           const std::unordered_map<unsigned long long, unsigned long long>& from) {
    for (const auto& e : from) {
        unsigned long long& f = into[e.first];
        if (e.second > f) f = e.second;
    }
}

struct Scheduler {
    bool cooperative = false;  // fibers (true) or a plain loop over threads (false)
    bool reverse = false;
    unsigned long long order_seed = 0;  // != 0: fibers run in a fresh seeded random order each scheduling round
    std::string error;
    void* main_jb[5];
    std::vector<Fiber> fibers;
    char* stacks = nullptr;  // mmap'ed (pages are touched only as deep as the fibers go)
    size_t stacks_size = 0;
    std::vector<uint64_t> slots;  // shuffle exchange, one per thread
    struct WarpCall {             // what a thread waiting at a warp barrier called, and where
        unsigned mask;
        const char* what;
        const char* file;
        int line;
    };
    std::vector<WarpCall> warp_calls;  // one per thread
    const std::function<void()>* body = nullptr;
    unsigned current = 0;
    void* main_asan_fake_stack = nullptr;  // the launching thread's, while a fiber runs
    const void* main_stack_bottom = nullptr;  // the launching thread's stack, as AddressSanitizer reports it
    size_t main_stack_size = 0;
    // hand-off discipline, per thread of the running block
    std::vector<unsigned char> unfenced_publish;  // stored with xpnn_publish, no __threadfence since
    std::vector<unsigned char> unfenced_atomic;   // did an atomic, no __threadfence since
    unsigned unfenced_atomics = 0;                // threads of the block with unfenced_atomic set
    // cross-block ordering (see Ordering below), per thread of the running block: __threadfence() calls so far;
    // releases seen by its atomics since its last fence (pending) and after one (acquired): writer -> fences
    std::vector<unsigned long long> fences;
    std::vector<std::unordered_map<unsigned long long, unsigned long long>> pending, acquired;
    struct Ordering* ordering = nullptr;  // of the running launch, shared by the workers
    // static shared memory: (address, serial of the block that last poisoned it) on this worker
    unsigned long long block_serial = 0;
    std::vector<std::pair<void*, unsigned long long>> shared_poisoned;

    void fail(const std::string& msg) {
        if (error.empty()) error = msg;
    }
};

static thread_local Scheduler sched;  // one per worker (OS thread)

[[gnu::noinline]] XPNN_SHIM_NO_ASAN inline void jump_to(void** jb) { __builtin_longjmp(jb, 1); }

// AddressSanitizer's fiber API (no-ops in a normal build): start_switch before leaving a stack (fake_stack_save
// nullptr when leaving it for good), finish_switch first thing on the stack switched to.
inline void asan_start_switch(void** fake_stack_save, const void* bottom, size_t size) {
#ifdef XPNN_SHIM_ASAN
    __sanitizer_start_switch_fiber(fake_stack_save, bottom, size);
#else
    (void)fake_stack_save, (void)bottom, (void)size;
#endif
}

inline void asan_finish_switch(void* fake_stack_save, const void** bottom_old, size_t* size_old) {
#ifdef XPNN_SHIM_ASAN
    __sanitizer_finish_switch_fiber(fake_stack_save, bottom_old, size_old);
#else
    (void)fake_stack_save, (void)bottom_old, (void)size_old;
#endif
}

XPNN_SHIM_NO_ASAN inline void yield_at(State s) {
    Fiber& f = sched.fibers[sched.current];
    f.state = s;
    if (__builtin_setjmp(f.jb) == 0) {
        asan_start_switch(&f.asan_fake_stack, sched.main_stack_bottom, sched.main_stack_size);
        jump_to(sched.main_jb);
    }
    asan_finish_switch(sched.fibers[sched.current].asan_fake_stack, nullptr, nullptr);
}

XPNN_SHIM_NO_ASAN inline void fiber_entry(unsigned tid) {
    asan_finish_switch(nullptr, &sched.main_stack_bottom, &sched.main_stack_size);
    threadIdx.x = tid;
    (*sched.body)();
    sched.fibers[tid].state = DONE;
    asan_start_switch(nullptr, sched.main_stack_bottom, sched.main_stack_size);
    jump_to(sched.main_jb);  // never returns: the fiber's stack is abandoned
}

// Run fiber t until it waits at a barrier or finishes.
[[gnu::noinline]] XPNN_SHIM_NO_ASAN inline void resume(unsigned t) {
    Fiber& f = sched.fibers[t];
    if (__builtin_setjmp(sched.main_jb) == 0) {
        asan_start_switch(&sched.main_asan_fake_stack, f.ctx.uc_stack.ss_sp, f.ctx.uc_stack.ss_size);
        if (!f.started) {
            f.started = true;
            setcontext(&f.ctx);
        }
        jump_to(f.jb);
    }
    asan_finish_switch(sched.main_asan_fake_stack, nullptr, nullptr);
}

inline void barrier(State kind, const char* what) {
    if (!sched.cooperative) {
        sched.fail(std::string(what) + " called by a kernel registered as non-cooperative");
        return;
    }
    yield_at(kind);
    threadIdx.x = sched.current;
}

// __syncthreads(): what any thread of the block acquired is ordered before every thread's later loads.
inline void share_acquired() {
    std::unordered_map<unsigned long long, unsigned long long> all;
    for (const auto& a : sched.acquired) merge_releases(all, a);
    if (all.empty()) return;
    for (auto& a : sched.acquired) a = all;
}

inline std::string hex(unsigned v) {
    std::string r = "0x";
    for (int k = 28; k >= 0; k -= 4) r += "0123456789abcdef"[(v >> k) & 15u];
    return r;
}

inline std::string site(const Scheduler::WarpCall& c) {
    return std::string(c.what) + " at " + c.file + ":" + std::to_string(c.line) + " (mask " + hex(c.mask) + ")";
}

// Warp w's threads waiting at a warp barrier (a shuffle or __syncwarp): each names a mask of lanes, which must
// include itself. A mask's lanes go on together once every one of them waits at the same call site (file and line
// of the shuffle or __syncwarp) with the same mask; a lane of the mask that has exited, waits at __syncthreads, or
// waits at another call site or with another mask fails the launch (a shuffle in divergent code, a wrong mask).
// Lanes outside every waiting mask run on (partial masks). Sets `released` when a mask's lanes were released.
inline bool release_warp(unsigned w, unsigned n, bool& released) {
    const unsigned base = w * 32, lanes = n - base < 32 ? n - base : 32;
    const std::string where = " (block " + std::to_string(blockIdx.x) + ", warp " + std::to_string(w) + ")";
    unsigned handled = 0;
    for (unsigned l = 0; l < lanes; ++l) {
        if (sched.fibers[base + l].state != AT_WARP_BARRIER || (handled >> l) & 1u) continue;
        const Scheduler::WarpCall& c = sched.warp_calls[base + l];
        if (!((c.mask >> l) & 1u)) {
            sched.fail(site(c) + ": lane " + std::to_string(l) + " is not in its mask " + hex(c.mask) + where);
            return false;
        }
        for (unsigned m = 0; m < 32; ++m) {
            if (!((c.mask >> m) & 1u)) continue;
            if (m >= lanes) {
                sched.fail(site(c) + ": the mask names lane " + std::to_string(m) + ", past the block" + where);
                return false;
            }
            const State st = sched.fibers[base + m].state;
            const Scheduler::WarpCall& o = sched.warp_calls[base + m];
            if (st == DONE) {
                sched.fail(site(c) + ": lane " + std::to_string(m) + " of the mask has exited" + where);
                return false;
            }
            if (st != AT_WARP_BARRIER) {
                sched.fail(site(c) + ": lane " + std::to_string(m) + " of the mask is not at a warp barrier (at "
                           "__syncthreads: a shuffle in divergent code)" + where);
                return false;
            }
#ifdef XPNN_SHIM_COUNT_SHUFFLES  // the old model (tests): lanes meet whatever shuffle each waits at
            const bool differ = false;
#else
            const bool differ =
                strcmp(o.file, c.file) != 0 || o.line != c.line || strcmp(o.what, c.what) != 0 || o.mask != c.mask;
#endif
            if (differ) {
                sched.fail(site(c) + " (lane " + std::to_string(l) + ") and " + site(o) + " (lane " +
                           std::to_string(m) + ") meet in one warp barrier: a shuffle in divergent code or "
                           "different masks" + where);
                return false;
            }
        }
        for (unsigned m = 0; m < lanes; ++m)
            if ((c.mask >> m) & 1u) sched.fibers[base + m].state = RUNNABLE;
        handled |= c.mask;
        released = true;
    }
    return true;
}

// Run one block of `n` threads as fibers; returns false on error (sched.error says why).
inline bool run_block_fibers(unsigned n) {
    sched.fibers.assign(n, Fiber());
    if (sched.stacks_size < n * kStackSize) {
        if (sched.stacks != nullptr) munmap(sched.stacks, sched.stacks_size);
        void* p = mmap(nullptr, n * kStackSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                       -1, 0);
        if (p == MAP_FAILED) {
            sched.stacks = nullptr;
            sched.stacks_size = 0;
            sched.fail("mmap of the fiber stacks failed");
            return false;
        }
        sched.stacks = static_cast<char*>(p);
        sched.stacks_size = n * kStackSize;
    }
#ifdef XPNN_SHIM_ASAN
    // frames of the last block's fibers never returned: clear their redzones before the stacks are reused
    ASAN_UNPOISON_MEMORY_REGION(sched.stacks, n * kStackSize);
#endif
    sched.slots.assign(n, 0);
    sched.warp_calls.assign(n, Scheduler::WarpCall{0u, nullptr, nullptr, 0});
    for (unsigned t = 0; t < n; ++t) {
        Fiber& f = sched.fibers[t];
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = sched.stacks + static_cast<size_t>(t) * kStackSize;
        f.ctx.uc_stack.ss_size = kStackSize;
        f.ctx.uc_link = nullptr;
        makecontext(&f.ctx, reinterpret_cast<void (*)()>(&fiber_entry), 1, t);
        f.state = RUNNABLE;
        f.started = false;
        f.asan_fake_stack = nullptr;
    }
    std::vector<unsigned> order(n);
    unsigned long long rng = (sched.order_seed * 0x9E3779B97F4A7C15ull) ^ (blockIdx.x + 1ull);
    for (;;) {
        for (unsigned k = 0; k < n; ++k) order[k] = sched.reverse ? n - 1 - k : k;
        if (sched.order_seed != 0) {  // Fisher-Yates with xorshift64: every round a different interleaving
            for (unsigned k = n; k > 1; --k) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                std::swap(order[k - 1], order[static_cast<unsigned>(rng % k)]);
            }
        }
        for (unsigned k = 0; k < n; ++k) {
            const unsigned t = order[k];
            if (sched.fibers[t].state != RUNNABLE) continue;
            sched.current = t;
            threadIdx.x = t;
            resume(t);
            if (!sched.error.empty()) return false;
        }
        // every fiber is done or waiting: release warp barriers first, then the block barrier
        bool released = false, all_done = true, all_at_block = true;
        for (unsigned w = 0; w * 32 < n; ++w)
            if (!release_warp(w, n, released)) return false;
        if (released) continue;
        for (unsigned t = 0; t < n; ++t) {
            if (sched.fibers[t].state != DONE) all_done = false;
            if (sched.fibers[t].state != DONE && sched.fibers[t].state != AT_BLOCK_BARRIER) all_at_block = false;
        }
        if (all_done) return true;
        if (!all_at_block) {
            sched.fail("deadlock in block " + std::to_string(blockIdx.x));
            return false;
        }
        for (unsigned t = 0; t < n; ++t)
            if (sched.fibers[t].state == AT_BLOCK_BARRIER) sched.fibers[t].state = RUNNABLE;
        share_acquired();
    }
}

// Run block b of the current launch on this worker.
inline bool run_block(unsigned b, unsigned block) {
    blockIdx = {b, 0, 0};
    ++sched.block_serial;  // XPNN_SHARED variables are poisoned again when this block first reaches them
    sched.unfenced_publish.assign(block, 0);
    sched.unfenced_atomic.assign(block, 0);
    sched.unfenced_atomics = 0;
    sched.fences.assign(block, 0);
    sched.pending.assign(block, {});
    sched.acquired.assign(block, {});
    if (sched.cooperative) return run_block_fibers(block);
    for (unsigned k = 0; k < block; ++k) {
        threadIdx = {sched.reverse ? block - 1 - k : k, 0, 0};
        (*sched.body)();
        if (!sched.error.empty()) return false;
    }
    return true;
}

// The launch the workers are running: its parameters, and the first error any of them met.
struct Launch {
    const std::function<void()>* body = nullptr;
    bool cooperative = false, reverse = false;
    unsigned long long order_seed = 0;
    unsigned grid = 0, block = 0, workers = 1;
    std::vector<unsigned> only_blocks;  // not empty: run just these blocks of the grid (sorted)
    Ordering ordering;
    std::atomic<bool> failed{false};
    std::mutex error_lock;
    std::string error;
    std::atomic<unsigned> in_flight{0}, max_in_flight{0};  // blocks running at once (statistics for the tests)
};

inline void run_worker(Launch& L, unsigned w) {
    sched.error.clear();
    sched.cooperative = L.cooperative;
    sched.reverse = L.reverse;
    sched.order_seed = L.order_seed;
    sched.body = L.body;
    sched.ordering = &L.ordering;
    gridDim = {L.grid, 1, 1};
    blockDim = {L.block, 1, 1};
    for (unsigned k = w; k < L.grid && !L.failed.load(std::memory_order_relaxed); k += L.workers) {
        const unsigned b = L.reverse ? L.grid - 1 - k : k;
        if (!L.only_blocks.empty() && !std::binary_search(L.only_blocks.begin(), L.only_blocks.end(), b)) continue;
        const unsigned now = L.in_flight.fetch_add(1) + 1;
        unsigned seen = L.max_in_flight.load();
        while (now > seen && !L.max_in_flight.compare_exchange_weak(seen, now)) {
        }
        const bool ok = run_block(b, L.block);
        L.in_flight.fetch_sub(1);
        if (!ok) {
            std::lock_guard<std::mutex> g(L.error_lock);
            if (L.error.empty()) L.error = sched.error;
            L.failed.store(true);
            return;
        }
    }
}

// A pool of worker threads that live as long as the process (never joined: they wait on a condition variable).
// The launching thread is worker 0; pool thread i is worker i + 1.
struct Pool {
    std::mutex lock;
    std::condition_variable wake, done;
    std::vector<std::thread*> threads;
    Launch* job = nullptr;
    unsigned long long generation = 0;
    unsigned busy = 0;

    void thread_main(unsigned w) {
        unsigned long long seen = 0;
        for (;;) {
            Launch* L;
            {
                std::unique_lock<std::mutex> g(lock);
                wake.wait(g, [&] { return generation != seen; });
                seen = generation;
                L = job;
            }
            if (L != nullptr && w < L->workers) run_worker(*L, w);
            {
                std::lock_guard<std::mutex> g(lock);
                if (--busy == 0) done.notify_all();
            }
        }
    }

    void run(Launch& L) {
        while (threads.size() + 1 < L.workers) {
            const unsigned w = static_cast<unsigned>(threads.size()) + 1;
            threads.push_back(new std::thread([this, w] { thread_main(w); }));
        }
        if (L.workers > 1) {
            std::lock_guard<std::mutex> g(lock);
            job = &L;
            busy = static_cast<unsigned>(threads.size());
            ++generation;
            wake.notify_all();
        }
        run_worker(L, 0);
        if (L.workers > 1) {
            std::unique_lock<std::mutex> g(lock);
            done.wait(g, [&] { return busy == 0; });
            job = nullptr;
        }
    }
};

inline Pool& pool() {
    static Pool* p = new Pool();  // never destroyed: its threads outlive static destruction
    return *p;
}

static unsigned requested_workers = 4;
static unsigned long long requested_order_seed = 0;
static std::vector<unsigned> requested_blocks;  // xpnn_shim_set_blocks
static unsigned last_threads_used = 0, last_max_in_flight = 0;
static std::string last_error;

// Launch `body` over grid x block threads (1-D). Launches from several host threads run one after another.
inline int launch(const std::function<void()>& body, bool cooperative, unsigned grid, unsigned block, bool reverse) {
    static std::mutex one_launch_at_a_time;
    std::lock_guard<std::mutex> hold(one_launch_at_a_time);
    last_error.clear();
    if (cooperative && block % 32 != 0) {
        last_error = "cooperative kernels need a block size that is a multiple of 32, got " + std::to_string(block);
        return 1;
    }
    Launch L;
    L.body = &body;
    L.cooperative = cooperative;
    L.reverse = reverse;
    L.order_seed = requested_order_seed;
    L.only_blocks = requested_blocks;
    L.grid = grid;
    L.block = block;
    L.workers = grid < requested_workers ? (grid == 0 ? 1 : grid) : requested_workers;
    pool().run(L);
    last_threads_used = L.workers;
    last_max_in_flight = L.max_in_flight.load();
    if (L.failed.load()) {
        last_error = L.error;
        return 1;
    }
    return 0;
}

// Bind a kernel's parameters from a CUDA-style array of argument pointers (cuLaunchKernel's kernelParams).
template <typename... P, size_t... I>
std::function<void()> bind_impl(void (*f)(P...), void** args, std::index_sequence<I...>) {
    std::tuple<std::decay_t<P>...> values(*static_cast<std::decay_t<P>*>(args[I])...);
    return [f, values]() { std::apply(f, values); };
}

template <typename... P>
std::function<void()> bind(void (*f)(P...), void** args) {
    return bind_impl(f, args, std::index_sequence_for<P...>{});
}

struct Entry {
    const char* name;
    std::function<void()> (*bind)(void** args);
};

}  // namespace xpnn_shim

inline void __syncthreads() { xpnn_shim::barrier(xpnn_shim::AT_BLOCK_BARRIER, "__syncthreads"); }

namespace xpnn_shim {
// Wait at a warp barrier for the lanes of `mask` (see release_warp); false when the kernel may not.
inline bool warp_barrier(unsigned mask, const char* what, const char* file, int line) {
    if (!sched.cooperative) {
        sched.fail(std::string(what) + " called by a kernel registered as non-cooperative");
        return false;
    }
    sched.warp_calls[threadIdx.x] = Scheduler::WarpCall{mask, what, file, line};
    barrier(AT_WARP_BARRIER, what);
    return true;
}

// __shfl_xor_sync, tagged with its call site by the macro below: the value of lane (lane ^ lane_mask), which must
// be in the mask too (a lane outside it gives an undefined value on a GPU).
template <typename V>
inline V shfl_xor(unsigned mask, V v, int lane_mask, const char* file, int line) {
    static_assert(sizeof(V) <= sizeof(uint64_t), "shuffle of a type wider than 64 bits");
    if (!sched.cooperative) {
        sched.fail("__shfl_xor_sync called by a kernel registered as non-cooperative");
        return v;
    }
    const unsigned t = threadIdx.x;
    const unsigned src_lane = (t & 31u) ^ static_cast<unsigned>(lane_mask & 31);
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof(V));
    sched.slots[t] = bits;
    warp_barrier(mask, "__shfl_xor_sync", file, line);
    if (!((mask >> src_lane) & 1u)) {
        sched.fail(std::string("__shfl_xor_sync at ") + file + ":" + std::to_string(line) + ": lane " +
                   std::to_string(t & 31u) + " reads lane " + std::to_string(src_lane) + ", outside the mask");
        return v;
    }
    bits = sched.slots[(t & ~31u) | src_lane];
    warp_barrier(mask, "__shfl_xor_sync", file, line);
    V r;
    memcpy(&r, &bits, sizeof(V));
    return r;
}
}  // namespace xpnn_shim

// Call sites (file and line) travel with every warp-level call, so lanes meeting at different ones are caught.
#define __shfl_xor_sync(mask, v, lane_mask) xpnn_shim::shfl_xor((mask), (v), (lane_mask), __FILE__, __LINE__)
#define __syncwarp(...) xpnn_shim::warp_barrier(xpnn_shim::syncwarp_mask(__VA_ARGS__), "__syncwarp", __FILE__, __LINE__)
namespace xpnn_shim {
inline unsigned syncwarp_mask(unsigned mask = 0xffffffffu) { return mask; }
}  // namespace xpnn_shim

namespace xpnn_shim {
// Called at every XPNN_SHARED declaration: the first call in a block fills the variable with 0xFF bytes.
inline void shared_block_start(void* p, size_t size) {
    std::pair<void*, unsigned long long>* seen = nullptr;
    for (auto& e : sched.shared_poisoned)
        if (e.first == p) seen = &e;
    if (seen != nullptr && seen->second == sched.block_serial) return;  // poisoned by this block already
    if (seen == nullptr) sched.shared_poisoned.emplace_back(p, sched.block_serial);
    else seen->second = sched.block_serial;
#ifndef XPNN_SHIM_NO_POISON
    memset(p, 0xff, size);
#else
    (void)size;
#endif
}

inline unsigned tid() { return threadIdx.x; }
inline bool in_block() { return tid() < sched.unfenced_atomic.size(); }
}  // namespace xpnn_shim

// A real atomic read-modify-write (relaxed: ordering comes from __threadfence, as on a GPU), after the release
// check of the hand-off discipline.
template <typename V>
inline V atomicAdd(V* address, V value) {
    using namespace xpnn_shim;
    if (in_block()) {
        if (sched.unfenced_publish[tid()]) {
            sched.fail("atomicAdd after xpnn_publish without __threadfence() between them (missing release fence; "
                       "block " + std::to_string(blockIdx.x) + ", thread " + std::to_string(tid()) + ")");
        }
        if (!sched.unfenced_atomic[tid()]) {
            sched.unfenced_atomic[tid()] = 1;
            ++sched.unfenced_atomics;
        }
    }
#ifndef XPNN_SHIM_NO_ORDERING
    // release what this thread stored before its last fence; read the releases of the atomics before this one
    std::unique_lock<std::mutex> hold;
    if (in_block() && sched.ordering != nullptr) {
        hold = std::unique_lock<std::mutex>(sched.ordering->lock);
        auto& rel = sched.ordering->released[address];
        unsigned long long& mine = rel[writer_key(blockIdx.x, tid())];
        if (sched.fences[tid()] > mine) mine = sched.fences[tid()];
        merge_releases(sched.pending[tid()], rel);
    }
#endif
    if constexpr (std::is_integral<V>::value) {
        return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
    } else {
        V old, desired;
        __atomic_load(address, &old, __ATOMIC_RELAXED);
        do {
            desired = old + value;
        } while (!__atomic_compare_exchange(address, &old, &desired, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
        return old;
    }
}

inline void __threadfence() {
    using namespace xpnn_shim;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (in_block()) {
        sched.unfenced_publish[tid()] = 0;
        if (sched.unfenced_atomic[tid()]) {
            sched.unfenced_atomic[tid()] = 0;
            --sched.unfenced_atomics;
        }
        ++sched.fences[tid()];  // stores before this fence are released by this thread's next atomic
        if (!sched.pending[tid()].empty()) {  // acquire what its atomics read
            merge_releases(sched.acquired[tid()], sched.pending[tid()]);
            sched.pending[tid()].clear();
        }
    }
}

// common.cuh's hand-off helpers (CUDA versions there), checked.
template <typename V>
inline void xpnn_publish(V* p, V v) {
    using namespace xpnn_shim;
    *p = v;
    if (!in_block()) return;
    sched.unfenced_publish[tid()] = 1;
#ifndef XPNN_SHIM_NO_ORDERING
    if (sched.ordering != nullptr) {
        std::lock_guard<std::mutex> hold(sched.ordering->lock);
        sched.ordering->stores[p] = StoreTag{blockIdx.x, tid(), sched.fences[tid()]};
    }
#endif
}

template <typename V>
inline V xpnn_load_published(const V* p) {
    using namespace xpnn_shim;
    if (sched.unfenced_atomics != 0) {
        sched.fail("xpnn_load_published after an atomic of this block without __threadfence() after it (missing "
                   "acquire fence; block " + std::to_string(blockIdx.x) + ", thread " + std::to_string(tid()) + ")");
    }
#ifndef XPNN_SHIM_NO_ORDERING
    if (in_block() && sched.ordering != nullptr) {
        std::lock_guard<std::mutex> hold(sched.ordering->lock);
        const auto it = sched.ordering->stores.find(p);
        if (it != sched.ordering->stores.end() && it->second.block != blockIdx.x) {
            const StoreTag& w = it->second;
            const auto& acq = sched.acquired[tid()];
            const auto got = acq.find(writer_key(w.block, w.thread));
            if (got == acq.end() || got->second <= w.epoch) {
                sched.fail("xpnn_load_published of a value block " + std::to_string(w.block) + " (thread " +
                           std::to_string(w.thread) + ") stored, which no acquire ordered (block " +
                           std::to_string(blockIdx.x) + ", thread " + std::to_string(tid()) + "): the storing thread "
                           "must __threadfence() after the store and then do an atomic that an atomic of this "
                           "block reads, followed by __threadfence() here (and __syncthreads() for the other "
                           "threads)");
            }
        }
    }
#endif
    return *p;
}

inline float __int_as_float(int i) {
    float f;
    memcpy(&f, &i, sizeof f);
    return f;
}

inline double __longlong_as_double(long long i) {
    double d;
    memcpy(&d, &i, sizeof d);
    return d;
}

// -DXPNN_SHIM_FAST_EXP: expf as a GPU computes it under fast math (__expf: ex2.approx of the rounded product
// x * log2(e), up to ~64 ulp off at |x| ~ 87), to check that the tests' tolerances also hold for that arithmetic
// (with -ffp-contract=fast -mfma for the GPU's a*b+c contraction).
#ifdef XPNN_SHIM_FAST_EXP
inline float xpnn_shim_fast_expf(float x) { return exp2f(x * 1.4426950408889634f); }
#define expf xpnn_shim_fast_expf
#endif

#endif  // XPNN_SHIM_RUNTIME_H
