// LLM inference kernels: a Llama decoder (HF LlamaForCausalLM semantics, as model/src/model.rs)
// with bf16 weights and f32 activations.
//
// Precision: weights are stored as bf16 bits (u16, round-to-nearest-even on the host), every
// activation, the KV cache, the rotary tables and every accumulator are f32. Products use
// explicit fmaf (the family is compiled with --fmad=false, which would otherwise split them).
//
// One step runs T tokens that may belong to different sequences: token t has a sequence slot
// tok_slot[t] and an absolute position tok_pos[t]. Prefill (T tokens of one slot), batched
// decode (one token per slot) and mixes of both use the same kernels; causality is simply
// "key position <= query position" in the query's own slot, because the step writes every new
// key/value before attention reads them.
//
// Layouts (row-major):
//   weight matrices  W[out][in] bf16 (the HF nn.Linear layout), in % 8 == 0
//   activations      X[t][features] f32
//   KV cache         K[slot][kv_head][pos][head_dim] f32 for one layer (the host passes the
//                    layer's base pointer), likewise V
//   rotary tables    cos[pos][head_dim/2], sin[pos][head_dim/2] f32, computed on the host with
//                    the CPU model's formula
#include "common.cuh"

#define PL_FULL 0xffffffffu
#define PL_NEG_INF (-__int_as_float(0x7f800000))

__device__ __forceinline__ float pl_bf16(u16 b) { return __uint_as_float(((u32)b) << 16); }

__device__ __forceinline__ float pl_warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(PL_FULL, v, o);
    return v;
}

__device__ __forceinline__ float pl_warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(PL_FULL, v, o));
    return v;
}

// Block-wide sum for blockDim.x a multiple of 32 and at most 1024; every thread gets the total.
__device__ __forceinline__ float pl_block_sum(float v, float *scratch) {
    const u32 lane = threadIdx.x & 31u, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = pl_warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float t = 0.0f;
    for (u32 w = 0; w < warps; ++w) t += scratch[w];
    return t;
}

// Unpacks 8 bf16 from a 128-bit load.
__device__ __forceinline__ void pl_unpack8(uint4 w, float *f) {
    f[0] = __uint_as_float(w.x << 16);
    f[1] = __uint_as_float(w.x & 0xffff0000u);
    f[2] = __uint_as_float(w.y << 16);
    f[3] = __uint_as_float(w.y & 0xffff0000u);
    f[4] = __uint_as_float(w.z << 16);
    f[5] = __uint_as_float(w.z & 0xffff0000u);
    f[6] = __uint_as_float(w.w << 16);
    f[7] = __uint_as_float(w.w & 0xffff0000u);
}

// ---------------------------------------------------------------------------------------------
// Embedding gather: x[t][:] = embed[tokens[t]][:] (bf16 → f32). Grid (T), any block size.
extern "C" __global__ void pl_llm_embed(const u16 *__restrict__ embed, const u32 *__restrict__ tokens,
                                        float *__restrict__ x, u32 hidden, u32 vocab) {
    const u32 t = blockIdx.x;
    u32 id = tokens[t];
    // The host validates ids; a bad one reads row 0 rather than out of bounds.
    if (id >= vocab) id = 0;
    const u16 *row = embed + (u64)id * hidden;
    for (u32 i = threadIdx.x; i < hidden; i += blockDim.x) x[(u64)t * hidden + i] = pl_bf16(row[i]);
}

// ---------------------------------------------------------------------------------------------
// RMSNorm: out[r] = x[src] · 1/sqrt(mean(x[src]²) + eps) · w, with src = rows ? rows[r] : r
// (the row list gathers the last token of each sequence before the output head).
// Grid (R), block 256.
extern "C" __global__ void pl_llm_rmsnorm(const float *__restrict__ x, const u32 *__restrict__ rows,
                                          const float *__restrict__ w, float *__restrict__ out,
                                          u32 hidden, float eps) {
    __shared__ float scratch[32];
    const u32 r = blockIdx.x;
    const u32 src = rows ? rows[r] : r;
    const float *xr = x + (u64)src * hidden;
    float ss = 0.0f;
    for (u32 i = threadIdx.x; i < hidden; i += blockDim.x) ss = fmaf(xr[i], xr[i], ss);
    ss = pl_block_sum(ss, scratch);
    // As the CPU: mean, + eps, sqrt, reciprocal (not rsqrtf, which is approximate).
    const float inv = 1.0f / sqrtf(ss / (float)hidden + eps);
    float *o = out + (u64)r * hidden;
    for (u32 i = threadIdx.x; i < hidden; i += blockDim.x) o[i] = xr[i] * inv * w[i];
}

// ---------------------------------------------------------------------------------------------
// Matrix-vector for decode (memory-bound): Y[b][o] = Σ_i W[o][i]·X[b][i] + bias[o] + res[b][o]
// for b < nb <= PL_MV_BATCH (pl_llm_matvec1: nb = 1). One warp per output row; each lane
// streams 8 weights per 128-bit load, so every weight byte is read once per launch whatever nb
// is. bias and res may be null; res may alias Y (each element is read and then written by the
// same lane).
// Requires cols % 8 == 0 and 16-byte aligned W and X rows (cols % 8 == 0 gives both).
// Grid (ceil(rows / 8)), block 256.
#define PL_MV_BATCH 8

// acc[b] += w · x[b][8c .. 8c+8) for the first nb vectors.
template <int NB>
__device__ __forceinline__ void pl_mv_chunk(float *acc, uint4 wv, const float *__restrict__ x, u32 c,
                                            u32 cols, u32 nb) {
    float wf[8];
    pl_unpack8(wv, wf);
#pragma unroll
    for (int b = 0; b < NB; ++b) {
        if ((u32)b < nb) {
            const float4 *xr = reinterpret_cast<const float4 *>(x + (u64)b * cols) + 2u * c;
            const float4 x0 = xr[0], x1 = xr[1];
            float a = acc[b];
            a = fmaf(wf[0], x0.x, a);
            a = fmaf(wf[1], x0.y, a);
            a = fmaf(wf[2], x0.z, a);
            a = fmaf(wf[3], x0.w, a);
            a = fmaf(wf[4], x1.x, a);
            a = fmaf(wf[5], x1.y, a);
            a = fmaf(wf[6], x1.z, a);
            a = fmaf(wf[7], x1.w, a);
            acc[b] = a;
        }
    }
}

// U 128-bit weight loads are issued per lane before any arithmetic: decode is bound by memory
// latency × bytes in flight, not by the FMAs. U = 4 for one vector; U = 2 for up to 8 (four
// loads in flight spill registers there).
template <int NB, int U>
__device__ __forceinline__ void pl_matvec(const u16 *__restrict__ w, const float *__restrict__ x,
                                          const float *bias, const float *res, float *y, u32 rows,
                                          u32 cols, u32 nb) {
    const u32 lane = threadIdx.x & 31u;
    const u32 row = blockIdx.x * 8u + (threadIdx.x >> 5);
    if (row >= rows) return;  // warp-uniform: the whole warp leaves before any shuffle
    float acc[NB];
#pragma unroll
    for (int b = 0; b < NB; ++b) acc[b] = 0.0f;
    const uint4 *wr = reinterpret_cast<const uint4 *>(w + (u64)row * cols);
    const u32 chunks = cols >> 3;
    u32 c = lane;
    for (; c + 32u * (U - 1) < chunks; c += 32u * U) {
        uint4 wv[U];
#pragma unroll
        for (int u = 0; u < U; ++u) wv[u] = __ldg(wr + c + 32u * u);
#pragma unroll
        for (int u = 0; u < U; ++u) pl_mv_chunk<NB>(acc, wv[u], x, c + 32u * u, cols, nb);
    }
    for (; c < chunks; c += 32u) pl_mv_chunk<NB>(acc, __ldg(wr + c), x, c, cols, nb);
#pragma unroll
    for (int b = 0; b < NB; ++b) {
        float v = pl_warp_sum(acc[b]);
        if (lane == 0 && (u32)b < nb) {
            if (bias) v += bias[row];
            u64 idx = (u64)b * rows + row;
            if (res) v += res[idx];
            y[idx] = v;
        }
    }
}

extern "C" __global__ void __launch_bounds__(256)
    pl_llm_matvec(const u16 *__restrict__ w, const float *__restrict__ x, const float *bias,
                  const float *res, float *y, u32 rows, u32 cols, u32 nb) {
    pl_matvec<PL_MV_BATCH, 2>(w, x, bias, res, y, rows, cols, nb);
}

// The batch-1 decode case (nb must be 1): fewer registers, so four loads in flight.
extern "C" __global__ void __launch_bounds__(256)
    pl_llm_matvec1(const u16 *__restrict__ w, const float *__restrict__ x, const float *bias,
                   const float *res, float *y, u32 rows, u32 cols, u32 nb) {
    pl_matvec<1, 4>(w, x, bias, res, y, rows, cols, nb);
}

// ---------------------------------------------------------------------------------------------
// Matrix-matrix for prefill and large batches: Y[t][n] = Σ_k X[t][k]·W[n][k] + bias[n] + res[t][n]
// for t < T, n < N. 64×64 output tile per block, K in steps of 32 through shared memory (W is
// widened to f32 on the way in), 256 threads each owning a 4×4 sub-tile. f32 FMA, no tensor
// cores: the activations stay f32 so prefill logits match decode logits closely.
// Requires K % 8 == 0. res may alias Y. Grid (ceil(N / 64), ceil(T / 64)), block 256.
#define PL_MM_T 64
#define PL_MM_N 64
#define PL_MM_K 32
extern "C" __global__ void __launch_bounds__(256)
    pl_llm_matmul(const float *__restrict__ x, const u16 *__restrict__ w, const float *bias,
                  const float *res, float *y, u32 T, u32 N, u32 K) {
    __shared__ float xs[PL_MM_K][PL_MM_T + 4];
    __shared__ float ws[PL_MM_K][PL_MM_N + 4];
    const u32 tid = threadIdx.x;
    const u32 t0 = blockIdx.y * PL_MM_T, n0 = blockIdx.x * PL_MM_N;
    const u32 ty = tid >> 4, tx = tid & 15u;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

    for (u32 k0 = 0; k0 < K; k0 += PL_MM_K) {
        // W tile: 64 rows × 32 k = 256 chunks of 8 bf16, one per thread.
        {
            const u32 r = tid >> 2, c = (tid & 3u) * 8u;
            float f[8];
            if (n0 + r < N && k0 + c < K) {
                pl_unpack8(__ldg(reinterpret_cast<const uint4 *>(w + (u64)(n0 + r) * K + k0 + c)), f);
            } else {
#pragma unroll
                for (int e = 0; e < 8; ++e) f[e] = 0.0f;
            }
#pragma unroll
            for (int e = 0; e < 8; ++e) ws[c + e][r] = f[e];
        }
        // X tile: 64 rows × 32 k = 512 float4, two per thread.
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const u32 id = tid + h * 256u;
            const u32 r = id >> 3, c = (id & 7u) * 4u;
            float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (t0 + r < T && k0 + c < K)
                v = *reinterpret_cast<const float4 *>(x + (u64)(t0 + r) * K + k0 + c);
            xs[c + 0][r] = v.x;
            xs[c + 1][r] = v.y;
            xs[c + 2][r] = v.z;
            xs[c + 3][r] = v.w;
        }
        __syncthreads();
#pragma unroll 8
        for (u32 kk = 0; kk < PL_MM_K; ++kk) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = xs[kk][ty * 4 + i];
#pragma unroll
            for (int j = 0; j < 4; ++j) b[j] = ws[kk][tx * 4 + j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const u32 t = t0 + ty * 4 + i;
        if (t >= T) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const u32 n = n0 + tx * 4 + j;
            if (n >= N) continue;
            float v = acc[i][j];
            if (bias) v += bias[n];
            const u64 idx = (u64)t * N + n;
            if (res) v += res[idx];
            y[idx] = v;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rotary embedding and KV-cache write. qkv is the fused projection output [T][(nh + 2·nkv)·hd]
// (q heads, then k heads, then v heads, each head-major as HF's view(n, heads, hd)).
// q_out[t][h][:] = rope(q), K[slot][h][pos][:] = rope(k), V[slot][h][pos][:] = v, with HF's
// rotate_half convention: for i < hd/2, out[i] = x[i]·c − x[i+hd/2]·s and
// out[i+hd/2] = x[i+hd/2]·c + x[i]·s, c = cos[pos][i], s = sin[pos][i].
// Grid (T), block 256.
extern "C" __global__ void pl_llm_rope_kv(const float *__restrict__ qkv, const u32 *__restrict__ tok_slot,
                                          const u32 *__restrict__ tok_pos,
                                          const float *__restrict__ cos_t, const float *__restrict__ sin_t,
                                          float *__restrict__ q_out, float *__restrict__ k_cache,
                                          float *__restrict__ v_cache, u32 nh, u32 nkv, u32 hd,
                                          u32 max_pos) {
    const u32 t = blockIdx.x;
    const u32 half = hd >> 1;
    const u32 slot = tok_slot[t], pos = tok_pos[t];
    if (pos >= max_pos) return;  // the host never sends one; never write out of bounds
    const u32 width = (nh + 2u * nkv) * hd;
    const float *row = qkv + (u64)t * width;
    const float *cs = cos_t + (u64)pos * half;
    const float *sn = sin_t + (u64)pos * half;
    const u32 n_rot = (nh + nkv) * half;
    const u32 total = n_rot + nkv * hd;
    for (u32 i = threadIdx.x; i < total; i += blockDim.x) {
        if (i < n_rot) {
            const u32 h = i / half, d = i - h * half;  // h < nh: query head, else key head
            const float *src = row + (u64)h * hd;
            const float x1 = src[d], x2 = src[d + half];
            const float c = cs[d], s = sn[d];
            const float o1 = x1 * c - x2 * s;
            const float o2 = x2 * c + x1 * s;
            float *dst;
            if (h < nh) {
                dst = q_out + ((u64)t * nh + h) * hd;
            } else {
                dst = k_cache + (((u64)slot * nkv + (h - nh)) * max_pos + pos) * hd;
            }
            dst[d] = o1;
            dst[d + half] = o2;
        } else {
            const u32 j = i - n_rot;
            const u32 h = j / hd, d = j - h * hd;
            v_cache[(((u64)slot * nkv + h) * max_pos + pos) * hd + d] = row[(u64)(nh + nkv + h) * hd + d];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Attention, split over the key length (flash-decoding): block (t, h, s) handles query token t,
// query head h and keys [s·split_len, min((s+1)·split_len, pos+1)) of the token's slot, reading
// kv head h / (nh / nkv) (grouped-query). Four warps take keys round-robin, each with an online
// softmax (running max m, sum l, accumulator acc); the warps merge through shared memory and
// the block writes its partial (m, l, acc[hd]) to part[t][h][s][hd + 2]; pl_llm_attn_combine
// merges the splits. head_dim <= 256. Grid (T, nh, splits), block 128.
#define PL_ATT_WARPS 4
#define PL_ATT_MAX_HD 256
#define PL_ATT_R (PL_ATT_MAX_HD / 32)
extern "C" __global__ void __launch_bounds__(128)
    pl_llm_attention(const float *__restrict__ q, const float *__restrict__ k_cache,
                     const float *__restrict__ v_cache, const u32 *__restrict__ tok_slot,
                     const u32 *__restrict__ tok_pos, float *__restrict__ part, u32 nh, u32 nkv,
                     u32 hd, u32 max_pos, u32 split_len, float scale) {
    __shared__ float sm_m[PL_ATT_WARPS], sm_l[PL_ATT_WARPS];
    __shared__ float sm_acc[PL_ATT_WARPS][PL_ATT_MAX_HD];
    const u32 t = blockIdx.x, h = blockIdx.y, s = blockIdx.z, splits = gridDim.z;
    const u32 lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    const u32 slot = tok_slot[t];
    const u32 pos = tok_pos[t];
    const u32 kvh = h / (nh / nkv);
    const u32 len = (pos < max_pos ? pos : max_pos - 1) + 1;
    const u32 start = s * split_len;
    const u32 end = min(len, start + split_len);

    float qr[PL_ATT_R], acc[PL_ATT_R];
    const float *qh = q + ((u64)t * nh + h) * hd;
#pragma unroll
    for (int r = 0; r < PL_ATT_R; ++r) {
        const u32 d = lane + 32u * r;
        qr[r] = d < hd ? qh[d] : 0.0f;
        acc[r] = 0.0f;
    }
    float m = PL_NEG_INF, l = 0.0f;
    const u64 base = ((u64)slot * nkv + kvh) * max_pos;
    for (u32 j = start + warp; j < end; j += PL_ATT_WARPS) {
        const float *kr = k_cache + (base + j) * hd;
        float dot = 0.0f;
#pragma unroll
        for (int r = 0; r < PL_ATT_R; ++r) {
            const u32 d = lane + 32u * r;
            if (d < hd) dot = fmaf(qr[r], kr[d], dot);
        }
        const float score = pl_warp_sum(dot) * scale;
        const float m_new = fmaxf(m, score);
        const float corr = expf(m - m_new);  // m = -inf on the first key: corr = 0
        const float p = expf(score - m_new);
        l = l * corr + p;
        const float *vr = v_cache + (base + j) * hd;
#pragma unroll
        for (int r = 0; r < PL_ATT_R; ++r) {
            const u32 d = lane + 32u * r;
            if (d < hd) acc[r] = fmaf(p, vr[d], acc[r] * corr);
        }
        m = m_new;
    }
    if (lane == 0) {
        sm_m[warp] = m;
        sm_l[warp] = l;
    }
#pragma unroll
    for (int r = 0; r < PL_ATT_R; ++r) {
        const u32 d = lane + 32u * r;
        if (d < hd) sm_acc[warp][d] = acc[r];
    }
    __syncthreads();
    float mb = PL_NEG_INF;
#pragma unroll
    for (int w = 0; w < PL_ATT_WARPS; ++w) mb = fmaxf(mb, sm_m[w]);
    float *out = part + (((u64)t * nh + h) * splits + s) * (hd + 2u);
    float wgt[PL_ATT_WARPS];
    float lb = 0.0f;
#pragma unroll
    for (int w = 0; w < PL_ATT_WARPS; ++w) {
        // A warp that saw no key has m = -inf and l = 0: weight 0 (and no -inf - -inf NaN).
        wgt[w] = sm_m[w] == PL_NEG_INF ? 0.0f : expf(sm_m[w] - mb);
        lb = fmaf(wgt[w], sm_l[w], lb);
    }
    for (u32 d = threadIdx.x; d < hd; d += blockDim.x) {
        float a = 0.0f;
#pragma unroll
        for (int w = 0; w < PL_ATT_WARPS; ++w) a = fmaf(wgt[w], sm_acc[w][d], a);
        out[2 + d] = a;
    }
    if (threadIdx.x == 0) {
        out[0] = mb;
        out[1] = lb;
    }
}

// Merges the splits of pl_llm_attention: out[t][h·hd + d] = Σ_s e^{m_s − M} acc_s[d] /
// Σ_s e^{m_s − M} l_s (the CPU layout: heads concatenated per token). Grid (T·nh), block 256.
extern "C" __global__ void pl_llm_attn_combine(const float *__restrict__ part, float *__restrict__ out,
                                               u32 nh, u32 hd, u32 splits) {
    const u32 th = blockIdx.x;  // t·nh + h
    const float *p = part + (u64)th * splits * (hd + 2u);
    float mm = PL_NEG_INF;
    for (u32 s = 0; s < splits; ++s) mm = fmaxf(mm, p[(u64)s * (hd + 2u)]);
    float l = 0.0f;
    for (u32 s = 0; s < splits; ++s) {
        const float ms = p[(u64)s * (hd + 2u)];
        if (ms != PL_NEG_INF) l = fmaf(expf(ms - mm), p[(u64)s * (hd + 2u) + 1u], l);
    }
    // Every query sees at least its own key, so l > 0; guard anyway against a division by 0.
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    for (u32 d = threadIdx.x; d < hd; d += blockDim.x) {
        float a = 0.0f;
        for (u32 s = 0; s < splits; ++s) {
            const float ms = p[(u64)s * (hd + 2u)];
            if (ms != PL_NEG_INF) a = fmaf(expf(ms - mm), p[(u64)s * (hd + 2u) + 2u + d], a);
        }
        out[(u64)th * hd + d] = a * inv;
    }
}

// ---------------------------------------------------------------------------------------------
// SwiGLU: act[t][j] = silu(gu[t][j]) · gu[t][inter + j], silu(g) = g / (1 + e^{−g}); gu is the
// fused gate/up projection [T][2·inter]. Grid-stride over T·inter.
extern "C" __global__ void pl_llm_swiglu(const float *__restrict__ gu, float *__restrict__ act, u32 inter,
                                         u64 total) {
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const u64 t = i / inter, j = i - t * inter;
        const float g = gu[t * 2u * inter + j];
        const float u = gu[t * 2u * inter + inter + j];
        act[i] = g / (1.0f + expf(-g)) * u;
    }
}

// Residual add: x[i] += d[i] (kept for callers without a fused epilogue). Grid-stride.
extern "C" __global__ void pl_llm_add(float *__restrict__ x, const float *__restrict__ d, u64 total) {
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) x[i] += d[i];
}

// ---------------------------------------------------------------------------------------------
// Logits. NaN never wins (as polylith_model::sampling::argmax) and ties go to the lowest id.

// (value, id) "a beats b": larger value, or equal value and lower id; NaN loses to everything.
__device__ __forceinline__ bool pl_beats(float va, u32 ia, float vb, u32 ib) {
    if (va != va) return false;
    if (vb != vb) return true;
    return va > vb || (va == vb && ia < ib);
}

__device__ __forceinline__ void pl_block_best(float &v, u32 &id, float *sv, u32 *si) {
    const u32 lane = threadIdx.x & 31u, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(PL_FULL, v, o);
        const u32 oi = __shfl_xor_sync(PL_FULL, id, o);
        if (pl_beats(ov, oi, v, id)) {
            v = ov;
            id = oi;
        }
    }
    __syncthreads();
    if (lane == 0) {
        sv[warp] = v;
        si[warp] = id;
    }
    __syncthreads();
    v = sv[0];
    id = si[0];
    for (u32 w = 1; w < warps; ++w)
        if (pl_beats(sv[w], si[w], v, id)) {
            v = sv[w];
            id = si[w];
        }
}

// out[r] = argmax of row r of logits [R][vocab]. Grid (R), block 256.
extern "C" __global__ void pl_llm_argmax(const float *__restrict__ logits, u32 *__restrict__ out, u32 vocab) {
    __shared__ float sv[32];
    __shared__ u32 si[32];
    const float *row = logits + (u64)blockIdx.x * vocab;
    float v = __int_as_float(0x7fc00000);  // NaN: loses to any real entry
    u32 id = 0xffffffffu;
    for (u32 i = threadIdx.x; i < vocab; i += blockDim.x)
        if (pl_beats(row[i], i, v, id)) {
            v = row[i];
            id = i;
        }
    pl_block_best(v, id, sv, si);
    // An all-NaN row: the last id, as the CPU rule (which moves off a NaN at every step).
    if (threadIdx.x == 0) out[blockIdx.x] = id == 0xffffffffu ? vocab - 1u : id;
}

// out[r][i] = logits[r][i] − logsumexp(logits[r]), the sum in f64 as the CPU. Grid (R), block 256.
extern "C" __global__ void pl_llm_log_softmax(const float *__restrict__ logits, float *__restrict__ out,
                                              u32 vocab) {
    __shared__ float scratch[32];
    __shared__ double dscratch[32];
    const float *row = logits + (u64)blockIdx.x * vocab;
    const u32 lane = threadIdx.x & 31u, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    float mx = PL_NEG_INF;
    for (u32 i = threadIdx.x; i < vocab; i += blockDim.x) mx = fmaxf(mx, row[i]);
    mx = pl_warp_max(mx);
    if (lane == 0) scratch[warp] = mx;
    __syncthreads();
    mx = scratch[0];
    for (u32 w = 1; w < warps; ++w) mx = fmaxf(mx, scratch[w]);
    double s = 0.0;
    for (u32 i = threadIdx.x; i < vocab; i += blockDim.x) s += exp((double)row[i] - (double)mx);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(PL_FULL, s, o);
    if (lane == 0) dscratch[warp] = s;
    __syncthreads();
    double tot = 0.0;
    for (u32 w = 0; w < warps; ++w) tot += dscratch[w];
    const double lse = (double)mx + log(tot);
    float *o = out + (u64)blockIdx.x * vocab;
    for (u32 i = threadIdx.x; i < vocab; i += blockDim.x) o[i] = (float)((double)row[i] - lse);
}

// The k highest entries of each row, sorted by (value desc, id asc), by k rounds of a block
// argmax over the entries that rank strictly below the previous pick (the order is total, so
// each round excludes exactly the picks so far). k <= 64 (the API allows 20). NaN entries are
// never picked; a row with fewer than k real entries pads with id 0xffffffff and value -inf.
// Grid (R), block 256.
extern "C" __global__ void pl_llm_topk(const float *__restrict__ x, u32 vocab, u32 k, u32 *__restrict__ ids,
                                       float *__restrict__ vals) {
    __shared__ float sv[32];
    __shared__ u32 si[32];
    const float *row = x + (u64)blockIdx.x * vocab;
    float pv = 0.0f;
    u32 pi = 0xffffffffu;
    bool first = true;
    for (u32 r = 0; r < k; ++r) {
        float v = __int_as_float(0x7fc00000);
        u32 id = 0xffffffffu;
        for (u32 i = threadIdx.x; i < vocab; i += blockDim.x) {
            const float e = row[i];
            if (!first && !pl_beats(pv, pi, e, i)) continue;  // not below the previous pick
            if (pl_beats(e, i, v, id)) {
                v = e;
                id = i;
            }
        }
        pl_block_best(v, id, sv, si);
        if (threadIdx.x == 0) {
            ids[(u64)blockIdx.x * k + r] = id;
            vals[(u64)blockIdx.x * k + r] = id == 0xffffffffu ? PL_NEG_INF : v;
        }
        if (id == 0xffffffffu) {
            // Nothing left: pad the rest.
            for (u32 q = r + 1 + threadIdx.x; q < k; q += blockDim.x) {
                ids[(u64)blockIdx.x * k + q] = 0xffffffffu;
                vals[(u64)blockIdx.x * k + q] = PL_NEG_INF;
            }
            return;
        }
        pv = v;
        pi = id;
        first = false;
    }
}

// ---------------------------------------------------------------------------------------------
// Random bf16 weights for speed benchmarks (synthetic models): out[i] uniform in
// [−scale, scale] from a counter hash of (seed, i). Grid-stride.
extern "C" __global__ void pl_llm_fill_random_bf16(u16 *__restrict__ out, u64 n, u64 seed, float scale) {
    const u64 stride = (u64)gridDim.x * blockDim.x;
    const u64 key = pl_mix64(seed);
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const u64 z = pl_mix64(key ^ (i * 0xD1B54A32D192ED03ull));
        const float u = (float)(z >> 40) * (1.0f / 16777216.0f);  // [0, 1)
        const float v = (2.0f * u - 1.0f) * scale;
        out[i] = (u16)(__float_as_uint(v) >> 16);
    }
}
