// Shared definitions for every Polylith kernel: fixed-width types (NVRTC has no <stdint.h>
// without the CUDA headers) and the counter-based matrix generator of docs/protocol.md §1.1.
// Functions are __host__ __device__ so the same text can be compiled by a host C++ compiler
// to cross-check it against the Rust reference (see docs/cuda.md).
#pragma once

#ifdef __CUDACC__
#define PL_HD __host__ __device__ __forceinline__
#else
#define PL_HD inline
#endif

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef signed char i8;
typedef int i32;
typedef long long i64;

// splitmix64 finalizer.
PL_HD u64 pl_mix64(u64 z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// key = mix64(seed + tag * golden); tag 1 for A, 2 for B. Computed once per launch.
PL_HD u64 pl_operand_key(u64 seed, u64 tag) {
    return pl_mix64(seed + tag * 0x9E3779B97F4A7C15ull);
}

// entry(seed, op, k, idx) given the operand key and the bound R (host computes R = bound(k)).
PL_HD i32 pl_entry(u64 key, i32 r, u64 idx) {
    u64 z = pl_mix64(key ^ (idx * 0xD1B54A32D192ED03ull));
    u64 span = (u64)(2 * r + 1);
    u64 v = ((z >> 32) * span) >> 32;
    return (i32)v - r;
}
