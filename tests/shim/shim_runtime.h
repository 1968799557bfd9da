// A CPU runtime for xpnn's CUDA kernels: the same .cu sources compile with g++ and run here, one block at a time.
//
// - CUDA qualifiers are macros; threadIdx/blockIdx/blockDim/gridDim are thread-local variables the launcher sets.
// - Blocks run one at a time, so static __shared__ variables (plain statics here) belong to the running block.
// - Cooperative kernels run their block's threads as ucontext fibers, in forward or reverse order (a missing
//   barrier shows up in one order only). __syncthreads() suspends a fiber until every live thread of the block
//   arrives (threads that returned drop out); warp shuffles exchange values through per-thread slots between two
//   warp-wide barriers and require every thread of the warp to take part.
// - Other kernels run their threads as a plain loop; if such a kernel synchronises, the launch fails.
// - Errors never abort: the launch returns non-zero and xpnn_shim_last_error() says why.
// - Under AddressSanitizer (tests/test_kernels_asan.py) every fiber switch is announced to it, as its fiber API asks;
//   without the announcements it warns about an unknown stack and may report false positives.
#ifndef XPNN_SHIM_RUNTIME_H
#define XPNN_SHIM_RUNTIME_H

#include <math.h>
#include <stdint.h>
#include <string.h>
#include <ucontext.h>

#include <cstddef>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
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
#define __shared__ static
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

struct Scheduler {
    bool cooperative = false;  // fibers (true) or a plain loop over threads (false)
    bool reverse = false;
    std::string error;
    void* main_jb[5];
    std::vector<Fiber> fibers;
    std::vector<char> stacks;
    std::vector<uint64_t> slots;  // shuffle exchange, one per thread
    const std::function<void()>* body = nullptr;
    unsigned current = 0;
    void* main_asan_fake_stack = nullptr;  // the launching thread's, while a fiber runs
    const void* main_stack_bottom = nullptr;  // the launching thread's stack, as AddressSanitizer reports it
    size_t main_stack_size = 0;

    void fail(const std::string& msg) {
        if (error.empty()) error = msg;
    }
};

static Scheduler sched;

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

// Run one block of `n` threads as fibers; returns false on error (sched.error says why).
inline bool run_block_fibers(unsigned n) {
    sched.fibers.assign(n, Fiber());
    if (sched.stacks.size() < n * kStackSize) sched.stacks.resize(n * kStackSize);
#ifdef XPNN_SHIM_ASAN
    // frames of the last block's fibers never returned: clear their redzones before the stacks are reused
    ASAN_UNPOISON_MEMORY_REGION(sched.stacks.data(), n * kStackSize);
#endif
    sched.slots.assign(n, 0);
    for (unsigned t = 0; t < n; ++t) {
        Fiber& f = sched.fibers[t];
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = sched.stacks.data() + static_cast<size_t>(t) * kStackSize;
        f.ctx.uc_stack.ss_size = kStackSize;
        f.ctx.uc_link = nullptr;
        makecontext(&f.ctx, reinterpret_cast<void (*)()>(&fiber_entry), 1, t);
        f.state = RUNNABLE;
        f.started = false;
        f.asan_fake_stack = nullptr;
    }
    for (;;) {
        for (unsigned k = 0; k < n; ++k) {
            const unsigned t = sched.reverse ? n - 1 - k : k;
            if (sched.fibers[t].state != RUNNABLE) continue;
            sched.current = t;
            threadIdx.x = t;
            resume(t);
            if (!sched.error.empty()) return false;
        }
        // every fiber is done or waiting: release warp barriers first, then the block barrier
        bool released = false, all_done = true, all_at_block = true;
        for (unsigned w = 0; w * 32 < n; ++w) {
            unsigned waiting = 0, done = 0, other = 0;
            for (unsigned t = w * 32; t < n && t < w * 32 + 32; ++t) {
                const State s = sched.fibers[t].state;
                if (s == AT_WARP_BARRIER) ++waiting;
                else if (s == DONE) ++done;
                else ++other;
            }
            if (waiting > 0 && (done > 0 || other > 0)) {
                sched.fail("warp shuffle without the full warp (block " + std::to_string(blockIdx.x) + ", warp " +
                           std::to_string(w) + ")");
                return false;
            }
            if (waiting > 0) {
                for (unsigned t = w * 32; t < w * 32 + 32; ++t) sched.fibers[t].state = RUNNABLE;
                released = true;
            }
        }
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
    }
}

// Launch `body` over grid x block threads (1-D).
inline int launch(const std::function<void()>& body, bool cooperative, unsigned grid, unsigned block) {
    sched.error.clear();
    sched.cooperative = cooperative;
    sched.body = &body;
    if (cooperative && block % 32 != 0) {
        sched.fail("cooperative kernels need a block size that is a multiple of 32, got " + std::to_string(block));
        return 1;
    }
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    for (unsigned b = 0; b < grid; ++b) {
        blockIdx = {b, 0, 0};
        if (cooperative) {
            if (!run_block_fibers(block)) return 1;
        } else {
            for (unsigned k = 0; k < block; ++k) {
                threadIdx = {sched.reverse ? block - 1 - k : k, 0, 0};
                body();
                if (!sched.error.empty()) return 1;
            }
        }
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

template <typename V>
inline V __shfl_xor_sync(unsigned mask, V v, int lane_mask) {
    static_assert(sizeof(V) <= sizeof(uint64_t), "shuffle of a type wider than 64 bits");
    if (mask != 0xffffffffu) xpnn_shim::sched.fail("__shfl_xor_sync: only the full mask is supported");
    if (!xpnn_shim::sched.cooperative) {
        xpnn_shim::sched.fail("__shfl_xor_sync called by a kernel registered as non-cooperative");
        return v;
    }
    const unsigned t = threadIdx.x;
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof(V));
    xpnn_shim::sched.slots[t] = bits;
    xpnn_shim::barrier(xpnn_shim::AT_WARP_BARRIER, "__shfl_xor_sync");
    const unsigned src = (t & ~31u) | ((t & 31u) ^ static_cast<unsigned>(lane_mask & 31));
    bits = xpnn_shim::sched.slots[src];
    xpnn_shim::barrier(xpnn_shim::AT_WARP_BARRIER, "__shfl_xor_sync");
    V r;
    memcpy(&r, &bits, sizeof(V));
    return r;
}

// Blocks run one at a time, so plain memory operations are already atomic and ordered across blocks.
template <typename V>
inline V atomicAdd(V* address, V value) {
    const V old = *address;
    *address = old + value;
    return old;
}

inline void __threadfence() {}

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

#endif  // XPNN_SHIM_RUNTIME_H
