// Minimal CPU emulation of the CUDA features llm.cu uses, so the kernels' index arithmetic,
// reductions and synchronisation can be checked on a machine without a GPU: one OS thread per
// CUDA thread, blocks run one at a time (so `__shared__` can be `static`), __syncthreads and
// warp shuffles through std::barrier. It does not model the GPU memory model, alignment faults, launch limits,
// occupancy or speed: passing here is necessary, not sufficient.
#pragma once
#include <algorithm>
#include <array>
#include <barrier>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>
struct dim3 { unsigned x = 1, y = 1, z = 1; };
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
struct float4 { float x, y, z, w; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
template <class T> T __ldg(const T *p) { return *p; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
using std::min;
using bar = std::barrier<>;
inline bar *g_block;
inline std::vector<std::unique_ptr<bar>> g_warps;
inline std::vector<std::array<double, 32>> g_shfl;
inline thread_local int t_lane, t_warp;
inline void __syncthreads() { g_block->arrive_and_wait(); }
template <class T> T __shfl_xor_sync(unsigned, T v, int o) {
    auto &buf = g_shfl[t_warp];
    buf[t_lane] = (double)v;
    g_warps[t_warp]->arrive_and_wait();
    T r = (T)buf[t_lane ^ o];
    g_warps[t_warp]->arrive_and_wait();
    return r;
}
// One worker per CUDA thread of a block, reused for every block of the launch; the blocks run
// in order, separated by a block-wide barrier. A kernel may return early only block- or
// warp-uniformly and not before a later __syncthreads of the others (true of llm.cu's kernels:
// matvec rows past the end leave a whole warp, rope/topk leave the whole block).
template <class F> void launch(dim3 grid, unsigned threads, F f) {
    gridDim = grid;
    blockDim = dim3{threads, 1, 1};
    bar bb(threads);
    g_block = &bb;
    const unsigned nw = (threads + 31) / 32;
    g_warps.clear();
    for (unsigned w = 0; w < nw; ++w) g_warps.emplace_back(new bar(std::min(32u, threads - 32 * w)));
    g_shfl.assign(nw, {});
    std::vector<std::thread> ts;
    for (unsigned i = 0; i < threads; ++i)
        ts.emplace_back([&, i] {
            threadIdx = dim3{i, 0, 0};
            t_lane = i % 32;
            t_warp = i / 32;
            for (unsigned z = 0; z < grid.z; ++z)
                for (unsigned y = 0; y < grid.y; ++y)
                    for (unsigned x = 0; x < grid.x; ++x) {
                        blockIdx = dim3{x, y, z};
                        f();
                        bb.arrive_and_wait();  // the block is done before the next one starts
                    }
        });
    for (auto &t : ts) t.join();
}
