// Operand generation on the device (docs/protocol.md §1.1), bit-identical to the CPU
// generator, plus the sentinel fill used to poison output buffers in tests.
//
// Layout (what the GEMM expects): A is n_pad × k_pad row-major, Bt (= B transposed) is
// m_pad × k_pad row-major, both "K-major" so tensor-core fragments load with plain ldmatrix
// for bf16 and int8 alike. Padding entries are zero, so the GEMM never bounds-checks loads.
#include "common.cuh"

// bf16 bits of a small integer: |v| <= 127 needs 7 significant bits and bf16 keeps 8, so
// truncating the f32 bits is exact (no rounding ever happens).
__device__ __forceinline__ u16 pl_bf16_bits(i32 v) {
    return (u16)(__float_as_uint((float)v) >> 16);
}

// One thread per output element of a rows_pad × k_pad operand. For A (`transposed` = 0),
// element (r, c) is entry(idx = r*k + c) for r < rows, c < k. For Bt (`transposed` = 1),
// element (r, c) is B[c][r], entry(idx = c*rows + r) with rows = m.
template <typename Out, typename Conv>
__device__ __forceinline__ void pl_gen(Out *out, u64 key, i32 r_bound, u32 rows, u32 k,
                                       u32 k_pad, u64 total, int transposed, Conv conv) {
    u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 t = (u64)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += stride) {
        u64 r = t / k_pad;
        u64 c = t - r * k_pad;
        i32 v = 0;
        if (r < rows && c < k) {
            u64 idx = transposed ? c * (u64)rows + r : r * (u64)k + c;
            v = pl_entry(key, r_bound, idx);
        }
        out[t] = conv(v);
    }
}

struct PlToBf16 {
    __device__ __forceinline__ u16 operator()(i32 v) const { return pl_bf16_bits(v); }
};
struct PlToI8 {
    __device__ __forceinline__ i8 operator()(i32 v) const { return (i8)v; }
};
struct PlToI32 {
    __device__ __forceinline__ i32 operator()(i32 v) const { return v; }
};

extern "C" __global__ void pl_gen_bf16(u16 *out, u64 key, i32 r_bound, u32 rows, u32 k,
                                       u32 k_pad, u64 total, int transposed) {
    pl_gen(out, key, r_bound, rows, k, k_pad, total, transposed, PlToBf16());
}

extern "C" __global__ void pl_gen_i8(i8 *out, u64 key, i32 r_bound, u32 rows, u32 k, u32 k_pad,
                                     u64 total, int transposed) {
    pl_gen(out, key, r_bound, rows, k, k_pad, total, transposed, PlToI8());
}

// Plain i32 entries (no padding semantics change): used by the self-test to compare the device
// generator with the host reference directly.
extern "C" __global__ void pl_gen_i32(i32 *out, u64 key, i32 r_bound, u32 rows, u32 k,
                                      u32 k_pad, u64 total, int transposed) {
    pl_gen(out, key, r_bound, rows, k, k_pad, total, transposed, PlToI32());
}

// Fills `len` i32 values with `value` (output poisoning before a run).
extern "C" __global__ void pl_fill_i32(i32 *out, u64 len, i32 value) {
    u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 t = (u64)blockIdx.x * blockDim.x + threadIdx.x; t < len; t += stride) out[t] = value;
}
