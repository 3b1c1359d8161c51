// cuda_emulation.h -- just enough of CUDA to run minigrad's kernels/*.cu on a CPU, for the
// tests on machines without a GPU (test_cuda_c_emulated.py).  Slow, but the semantics are
// CUDA's:
//   * blocks run one after another; the threads of a block are cooperative fibers
//     (ucontext) on one OS thread, resumed round-robin by a small scheduler;
//   * __shared__ arrays become function-static arrays, shared by the threads of the
//     block running now;
//   * __syncthreads() is a barrier over the block, __shfl_down_sync() a barrier over the
//     warp plus a buffer through which the lanes exchange values: a fiber waiting at a
//     barrier yields until the last thread arrives.
// launch() returns 0, or 1 when the threads deadlock (a barrier some thread never reaches).
// emu::first_block_z > 0 runs only the blocks from that blockIdx.z on (the last images
// of a batch too large to run whole).
#pragma once
#include <ucontext.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

struct __attribute__((aligned(16))) float4 { float x, y, z, w; };

struct dim3 { unsigned x = 1, y = 1, z = 1; };
static dim3 blockIdx, blockDim, gridDim, threadIdx;

inline int min(int a, int b) { return a < b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline float __int_as_float(unsigned bits) { float f; std::memcpy(&f, &bits, 4); return f; }

namespace emu {
struct Barrier { int n = 0, count = 0, generation = 0; };

static ucontext_t scheduler;
static std::vector<ucontext_t> fibers;
static std::vector<std::vector<char>> stacks;
static std::vector<char> finished;
static std::vector<dim3> thread_index;
static std::function<void()> body;
static int current = 0;
static long long progress = 0;              // barrier releases + finished threads
static Barrier block_barrier;
static unsigned first_block_z = 0;          // launch() skips the blocks with a smaller z
static std::vector<Barrier> warp_barriers;
static std::vector<float> shfl_buffer;

inline void wait(Barrier& b) {
    const int gen = b.generation;
    if (++b.count == b.n) { b.count = 0; ++b.generation; ++progress; return; }
    while (b.generation == gen) swapcontext(&fibers[current], &scheduler);   // yield
}

inline int linear_id() { return (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x; }

static void trampoline() { body(); finished[current] = 1; ++progress; }
}  // namespace emu

inline void __syncthreads() { emu::wait(emu::block_barrier); }

inline float __shfl_down_sync(unsigned /*mask: the whole warp*/, float v, int offset) {
    const int tid = emu::linear_id(), lane = tid % 32;
    const int nthreads = blockDim.x * blockDim.y * blockDim.z;
    emu::shfl_buffer[tid] = v;
    emu::wait(emu::warp_barriers[tid / 32]);
    const float r = (lane + offset < 32 && tid + offset < nthreads) ? emu::shfl_buffer[tid + offset] : v;
    emu::wait(emu::warp_barriers[tid / 32]);   // before anyone writes the buffer again
    return r;
}

template <class Kernel, class... Args>
int launch(dim3 grid, dim3 block, Kernel kernel, Args... args) {
    using namespace emu;
    gridDim = grid;
    blockDim = block;
    const int nthreads = block.x * block.y * block.z;
    fibers.resize(nthreads);
    stacks.resize(nthreads);
    finished.assign(nthreads, 0);
    thread_index.resize(nthreads);
    shfl_buffer.assign(nthreads, 0.0f);
    body = [=] { kernel(args...); };
    for (int t = 0; t < nthreads; ++t) {
        stacks[t].resize(1 << 16);
        thread_index[t] = dim3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
    }
    for (unsigned bz = first_block_z; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                blockIdx = dim3{bx, by, bz};
                block_barrier = Barrier{nthreads};
                warp_barriers.assign((nthreads + 31) / 32, Barrier{});
                for (int w = 0; w < (int)warp_barriers.size(); ++w)
                    warp_barriers[w].n = min(32, nthreads - 32 * w);
                for (int t = 0; t < nthreads; ++t) {
                    finished[t] = 0;
                    getcontext(&fibers[t]);
                    fibers[t].uc_stack.ss_sp = stacks[t].data();
                    fibers[t].uc_stack.ss_size = stacks[t].size();
                    fibers[t].uc_link = &scheduler;
                    makecontext(&fibers[t], trampoline, 0);
                }
                for (int alive = nthreads; alive > 0;) {
                    const long long before = progress;
                    alive = 0;
                    for (int t = 0; t < nthreads; ++t) {
                        if (finished[t]) continue;
                        current = t;
                        threadIdx = thread_index[t];
                        swapcontext(&scheduler, &fibers[t]);
                        alive += !finished[t];
                    }
                    if (alive > 0 && progress == before) return 1;   // deadlock
                }
            }
    return 0;
}
