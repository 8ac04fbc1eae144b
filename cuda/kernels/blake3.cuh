// BLAKE3 (unkeyed hash mode) compression and the pieces the commitment needs: chunk chaining
// values, parent nodes and the root flag. Straight from the BLAKE3 specification; the tree
// shape (left subtree = largest power of two of chunks) is built by the callers.
#pragma once
#include "common.cuh"

#define B3_CHUNK_START 1u
#define B3_CHUNK_END 2u
#define B3_PARENT 4u
#define B3_ROOT 8u
#define B3_CHUNK_LEN 1024u
#define B3_BLOCK_LEN 64u

#ifdef __CUDACC__
__constant__ u32 B3_IV[8] = {0x6A09E667u, 0xBB67AE85u, 0x3C6EF372u, 0xA54FF53Au,
                             0x510E527Fu, 0x9B05688Cu, 0x1F83D9ABu, 0x5BE0CD19u};
#else
static const u32 B3_IV[8] = {0x6A09E667u, 0xBB67AE85u, 0x3C6EF372u, 0xA54FF53Au,
                             0x510E527Fu, 0x9B05688Cu, 0x1F83D9ABu, 0x5BE0CD19u};
#endif

PL_HD u32 b3_rotr(u32 x, u32 n) { return (x >> n) | (x << (32u - n)); }

PL_HD void b3_g(u32 *s, int a, int b, int c, int d, u32 mx, u32 my) {
    s[a] = s[a] + s[b] + mx;
    s[d] = b3_rotr(s[d] ^ s[a], 16);
    s[c] = s[c] + s[d];
    s[b] = b3_rotr(s[b] ^ s[c], 12);
    s[a] = s[a] + s[b] + my;
    s[d] = b3_rotr(s[d] ^ s[a], 8);
    s[c] = s[c] + s[d];
    s[b] = b3_rotr(s[b] ^ s[c], 7);
}

// One round on message words m (already permuted for this round).
PL_HD void b3_round(u32 *s, const u32 *m) {
    b3_g(s, 0, 4, 8, 12, m[0], m[1]);
    b3_g(s, 1, 5, 9, 13, m[2], m[3]);
    b3_g(s, 2, 6, 10, 14, m[4], m[5]);
    b3_g(s, 3, 7, 11, 15, m[6], m[7]);
    b3_g(s, 0, 5, 10, 15, m[8], m[9]);
    b3_g(s, 1, 6, 11, 12, m[10], m[11]);
    b3_g(s, 2, 7, 8, 13, m[12], m[13]);
    b3_g(s, 3, 4, 9, 14, m[14], m[15]);
}

PL_HD void b3_permute(u32 *m) {
    // MSG_PERMUTATION = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8]
    u32 t[16];
    t[0] = m[2]; t[1] = m[6]; t[2] = m[3]; t[3] = m[10];
    t[4] = m[7]; t[5] = m[0]; t[6] = m[4]; t[7] = m[13];
    t[8] = m[1]; t[9] = m[11]; t[10] = m[12]; t[11] = m[5];
    t[12] = m[9]; t[13] = m[14]; t[14] = m[15]; t[15] = m[8];
    for (int i = 0; i < 16; ++i) m[i] = t[i];
}

// Compresses one 64-byte block (16 little-endian words, zero-padded) into cv, in place:
// cv' = first 8 words of the compression output (the chaining value).
PL_HD void b3_compress(u32 *cv, const u32 *block, u64 counter, u32 block_len, u32 flags) {
    u32 s[16];
    u32 m[16];
    for (int i = 0; i < 8; ++i) s[i] = cv[i];
    for (int i = 0; i < 4; ++i) s[8 + i] = B3_IV[i];
    s[12] = (u32)counter;
    s[13] = (u32)(counter >> 32);
    s[14] = block_len;
    s[15] = flags;
    for (int i = 0; i < 16; ++i) m[i] = block[i];
    for (int r = 0; r < 7; ++r) {
        b3_round(s, m);
        if (r < 6) b3_permute(m);
    }
    for (int i = 0; i < 8; ++i) cv[i] = s[i] ^ s[i + 8];
}

// Parent node of two chaining values; `flags_extra` is B3_ROOT for the root, else 0.
PL_HD void b3_parent(u32 *out, const u32 *left, const u32 *right, u32 flags_extra) {
    u32 block[16];
    for (int i = 0; i < 8; ++i) {
        block[i] = left[i];
        block[8 + i] = right[i];
    }
    for (int i = 0; i < 8; ++i) out[i] = B3_IV[i];
    b3_compress(out, block, 0, B3_BLOCK_LEN, B3_PARENT | flags_extra);
}

// Number of chunks of a message of `len` bytes (an empty message still has one chunk).
PL_HD u64 b3_num_chunks(u64 len) { return len == 0 ? 1 : (len + B3_CHUNK_LEN - 1) / B3_CHUNK_LEN; }

// Commitment row messages are 0x00 || row as LE i32: message word w (4 bytes starting at byte
// p = 4w) is row bytes p-1 .. p+2, i.e. the top byte of x[w-1] and the low three of x[w].
// Bytes past the end read as zero, which is exactly BLAKE3's block padding.
PL_HD u32 b3_row_word(const i32 *x, u64 m, u64 w) {
    u32 hi = w < m ? (u32)x[w] : 0u;
    u32 lo = (w >= 1 && w - 1 < m) ? (u32)x[w - 1] : 0u;
    return (lo >> 24) | (hi << 8);
}

// Chaining value of chunk `chunk` of the row message (length 4m+1). When the row is a single
// chunk, `root` makes this the final hash.
PL_HD void b3_row_chunk(u32 *cv, const i32 *x, u64 m, u64 chunk, bool root) {
    u64 len = 4 * m + 1;
    u64 start = chunk * B3_CHUNK_LEN;
    u64 chunk_len = len - start < B3_CHUNK_LEN ? len - start : B3_CHUNK_LEN;
    u32 nblocks = (u32)((chunk_len + B3_BLOCK_LEN - 1) / B3_BLOCK_LEN);
    for (int i = 0; i < 8; ++i) cv[i] = B3_IV[i];
    u64 w0 = start / 4;
    for (u32 b = 0; b < nblocks; ++b) {
        u32 block[16];
        for (int i = 0; i < 16; ++i) block[i] = b3_row_word(x, m, w0 + b * 16 + i);
        bool last = b + 1 == nblocks;
        u32 block_len = last ? (u32)(chunk_len - (u64)b * B3_BLOCK_LEN) : B3_BLOCK_LEN;
        u32 flags = (b == 0 ? B3_CHUNK_START : 0u) | (last ? B3_CHUNK_END : 0u) |
                    (last && root ? B3_ROOT : 0u);
        b3_compress(cv, block, chunk, block_len, flags);
    }
}

// Merges `n` chunk chaining values (n >= 2) into the root hash, using BLAKE3's tree shape: the
// left subtree of a node over c chunks holds the largest power of two strictly below c. The
// incremental form: after each non-final chunk, merge while the count of chunks so far is even.
// `stack` needs room for 54 CVs (2^54 chunks is far beyond any row).
PL_HD void b3_merge_chunks(u32 *out, const u32 *cvs, u64 n, u32 (*stack)[8]) {
    int depth = 0;
    for (u64 c = 0; c + 1 < n; ++c) {
        u32 cur[8];
        for (int i = 0; i < 8; ++i) cur[i] = cvs[c * 8 + i];
        u64 total = c + 1;
        while ((total & 1) == 0) {
            --depth;
            b3_parent(cur, stack[depth], cur, 0);
            total >>= 1;
        }
        for (int i = 0; i < 8; ++i) stack[depth][i] = cur[i];
        ++depth;
    }
    u32 cur[8];
    for (int i = 0; i < 8; ++i) cur[i] = cvs[(n - 1) * 8 + i];
    while (depth > 0) {
        --depth;
        b3_parent(cur, stack[depth], cur, depth == 0 ? B3_ROOT : 0u);
    }
    for (int i = 0; i < 8; ++i) out[i] = cur[i];
}

// Merkle inner node of docs/protocol.md §1.2: blake3(0x01 || l || r), a 65-byte message in one
// chunk of two blocks. l and r are 32-byte hashes as 8 little-endian words each.
PL_HD void b3_merkle_node(u32 *out, const u32 *l, const u32 *r) {
    u32 block[16];
    // Byte stream: 0x01, l[0..32], r[0..32]; word w holds bytes 4w..4w+3.
    u32 bytes_word[17];
    for (int i = 0; i < 8; ++i) {
        bytes_word[i] = l[i];
        bytes_word[8 + i] = r[i];
    }
    bytes_word[16] = 0;
    // Shift by one byte for the 0x01 prefix.
    for (int w = 0; w < 16; ++w) {
        u32 prev = w == 0 ? 0x01u : (bytes_word[w - 1] >> 24);
        block[w] = prev | (bytes_word[w] << 8);
    }
    for (int i = 0; i < 8; ++i) out[i] = B3_IV[i];
    b3_compress(out, block, 0, B3_BLOCK_LEN, B3_CHUNK_START);
    u32 tail[16];
    for (int i = 0; i < 16; ++i) tail[i] = 0;
    tail[0] = bytes_word[15] >> 24;
    b3_compress(out, tail, 0, 1, B3_CHUNK_END | B3_ROOT);
}
