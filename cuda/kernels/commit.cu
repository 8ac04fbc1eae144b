// The commitment of docs/protocol.md §1.2 on the device: BLAKE3 row hashes of C
// (0x00 || row as LE i32) and the Merkle root, so C never travels to the host to be hashed.
//
// Rows longer than one BLAKE3 chunk (m > 255) are hashed in two passes: one thread per
// (row, chunk) computes chunk chaining values, then one thread per row merges them.
#include "blake3.cuh"

// Single-chunk rows (4m + 1 <= 1024): one thread hashes a whole row straight to its leaf.
extern "C" __global__ void pl_row_hash_single(const i32 *c, u32 n, u32 m, u32 *leaves) {
    u32 row = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= n) return;
    u32 cv[8];
    b3_row_chunk(cv, c + (u64)row * m, m, 0, true);
    for (int i = 0; i < 8; ++i) leaves[(u64)row * 8 + i] = cv[i];
}

// Multi-chunk rows, pass 1: chunk chaining values, cvs[row][chunk][8].
extern "C" __global__ void pl_row_chunks(const i32 *c, u32 n, u32 m, u32 chunks, u32 *cvs) {
    u64 t = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (u64)n * chunks) return;
    u64 row = t / chunks;
    u64 chunk = t - row * chunks;
    u32 cv[8];
    b3_row_chunk(cv, c + row * m, m, chunk, false);
    for (int i = 0; i < 8; ++i) cvs[t * 8 + i] = cv[i];
}

// Multi-chunk rows, pass 2: merge each row's chunk chaining values into its leaf hash.
extern "C" __global__ void pl_row_merge(const u32 *cvs, u32 n, u32 chunks, u32 *leaves) {
    u32 row = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= n) return;
    u32 stack[54][8];
    u32 out[8];
    b3_merge_chunks(out, cvs + (u64)row * chunks * 8, chunks, stack);
    for (int i = 0; i < 8; ++i) leaves[(u64)row * 8 + i] = out[i];
}

// One Merkle level: out[i] = node(in[2i], in[2i+1]); an odd last node is promoted unchanged.
extern "C" __global__ void pl_merkle_level(const u32 *in, u32 count, u32 *out) {
    u32 i = blockIdx.x * blockDim.x + threadIdx.x;
    u32 pairs = count / 2;
    if (i < pairs) {
        u32 h[8];
        b3_merkle_node(h, in + (u64)(2 * i) * 8, in + (u64)(2 * i + 1) * 8);
        for (int w = 0; w < 8; ++w) out[(u64)i * 8 + w] = h[w];
    } else if (i == pairs && (count & 1)) {
        for (int w = 0; w < 8; ++w) out[(u64)i * 8 + w] = in[(u64)(count - 1) * 8 + w];
    }
}
