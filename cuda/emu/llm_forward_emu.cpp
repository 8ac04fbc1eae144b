// Runs the engine's launch sequence (the one of `Engine::launch_all` in src/llm.rs: embed, then
// per layer norm, fused qkv, rope+KV, split attention, combine, o(+residual), norm, fused
// gate/up, swiglu, down(+residual), then the final norm of each piece's last token and the
// output head) with the kernels of ../kernels/llm.cu under emu.h, on weights written by
// cuda/tests/llm_emu.rs. Three steps exercise the matmul (12-token prefill), matvec1 (one
// decode token, with the maximal split count as in a captured graph) and matvec (a step mixing
// two sequences, 8 tokens). Writes the logits of each piece to the output file.
// Usage: llm_forward_emu WEIGHTS OUT
#include "emu.h"
#include "llm.cu"
#include <cstdio>
#include <cstdlib>

struct Reader {
    FILE *f;
    template <class T> std::vector<T> vec(size_t n) {
        std::vector<T> v(n);
        if (fread(v.data(), sizeof(T), n, f) != n) { fprintf(stderr, "short weights file\n"); exit(2); }
        return v;
    }
    u32 u() { return vec<u32>(1)[0]; }
    float fl() { return vec<float>(1)[0]; }
};

struct Layer { std::vector<float> in_norm, post_norm; std::vector<u16> qkv, o, gate_up, down; std::vector<float> kc, vc; };

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s WEIGHTS OUT\n", argv[0]); return 2; }
    Reader r{fopen(argv[1], "rb")};
    if (!r.f) { perror("weights"); return 2; }
    const u32 h = r.u(), inter = r.u(), v = r.u(), nl = r.u(), nh = r.u(), nkv = r.u(), hd = r.u(), max_pos = r.u(), slots = r.u();
    const float eps = r.fl();
    const u32 q = nh * hd, kv = nkv * hd, half = hd / 2;
    auto cos_t = r.vec<float>(max_pos * half), sin_t = r.vec<float>(max_pos * half);
    auto embed = r.vec<u16>((size_t)v * h);
    std::vector<Layer> layers(nl);
    for (auto &l : layers) {
        l.in_norm = r.vec<float>(h);
        l.qkv = r.vec<u16>((size_t)(q + 2 * kv) * h);
        l.o = r.vec<u16>((size_t)h * q);
        l.post_norm = r.vec<float>(h);
        l.gate_up = r.vec<u16>((size_t)2 * inter * h);
        l.down = r.vec<u16>((size_t)h * inter);
        l.kc.assign((size_t)slots * nkv * max_pos * hd, 0.0f);
        l.vc.assign(l.kc.size(), 0.0f);
    }
    auto norm = r.vec<float>(h);
    auto lm_head = r.vec<u16>((size_t)v * h);
    // Steps: (slot, start, tokens) pieces.
    const u32 nsteps = r.u();
    FILE *out = fopen(argv[2], "wb");
    for (u32 s = 0; s < nsteps; ++s) {
        const u32 npieces = r.u(), splits = r.u();
        std::vector<u32> tok, slot, pos, rows;
        for (u32 p = 0; p < npieces; ++p) {
            const u32 sl = r.u(), start = r.u(), n = r.u();
            auto ids = r.vec<u32>(n);
            for (u32 i = 0; i < n; ++i) { tok.push_back(ids[i]); slot.push_back(sl); pos.push_back(start + i); }
            rows.push_back(tok.size() - 1);
        }
        const u32 t = tok.size(), rr = rows.size();
        std::vector<float> x(t * h), hb(t * h), qkv(t * (q + 2 * kv)), qb(t * q), att(t * q),
            part((size_t)t * nh * splits * (hd + 2)), gu((size_t)t * 2 * inter), act((size_t)t * inter),
            last(rr * h), logits((size_t)rr * v);
        auto linear = [&](const float *xi, const u16 *w, float *res, float *y, u32 n, u32 k) {
            if (t == 1) launch({(n + 7) / 8}, 256, [&] { pl_llm_matvec1(w, xi, nullptr, res, y, n, k, 1); });
            else if (t <= 8) launch({(n + 7) / 8}, 256, [&] { pl_llm_matvec(w, xi, nullptr, res, y, n, k, t); });
            else launch({(n + 63) / 64, (t + 63) / 64}, 256, [&] { pl_llm_matmul(xi, w, nullptr, res, y, t, n, k); });
        };
        launch({t}, 128, [&] { pl_llm_embed(embed.data(), tok.data(), x.data(), h, v); });
        for (auto &l : layers) {
            launch({t}, 256, [&] { pl_llm_rmsnorm(x.data(), nullptr, l.in_norm.data(), hb.data(), h, eps); });
            linear(hb.data(), l.qkv.data(), nullptr, qkv.data(), q + 2 * kv, h);
            launch({t}, 256, [&] { pl_llm_rope_kv(qkv.data(), slot.data(), pos.data(), cos_t.data(), sin_t.data(), qb.data(), l.kc.data(), l.vc.data(), nh, nkv, hd, max_pos); });
            const float scale = (float)(1.0 / std::sqrt((double)hd));
            launch({t, nh, splits}, 128, [&] { pl_llm_attention(qb.data(), l.kc.data(), l.vc.data(), slot.data(), pos.data(), part.data(), nh, nkv, hd, max_pos, 256, scale); });
            launch({t * nh}, 128, [&] { pl_llm_attn_combine(part.data(), att.data(), nh, hd, splits); });
            linear(att.data(), l.o.data(), x.data(), x.data(), h, q);
            launch({t}, 256, [&] { pl_llm_rmsnorm(x.data(), nullptr, l.post_norm.data(), hb.data(), h, eps); });
            linear(hb.data(), l.gate_up.data(), nullptr, gu.data(), 2 * inter, h);
            launch({4}, 256, [&] { pl_llm_swiglu(gu.data(), act.data(), inter, (u64)t * inter); });
            linear(act.data(), l.down.data(), x.data(), x.data(), h, inter);
        }
        launch({rr}, 256, [&] { pl_llm_rmsnorm(x.data(), rows.data(), norm.data(), last.data(), h, eps); });
        // The output head runs over the rr gathered rows, not the t tokens.
        if (rr == 1) launch({(v + 7) / 8}, 256, [&] { pl_llm_matvec1(lm_head.data(), last.data(), nullptr, nullptr, logits.data(), v, h, 1); });
        else launch({(v + 7) / 8}, 256, [&] { pl_llm_matvec(lm_head.data(), last.data(), nullptr, nullptr, logits.data(), v, h, rr); });
        fwrite(logits.data(), sizeof(float), logits.size(), out);
    }
    fclose(out);
    return 0;
}
