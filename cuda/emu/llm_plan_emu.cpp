// Replays launch plans of the LLM engine (src/llm/plan.rs) with the kernels of ../kernels/llm.cu
// under emu.h: the Rust test (tests/llm_emu.rs) writes the buffers, uploads, launches and
// downloads of a few forward steps to a file; this program executes them in order and writes
// the downloaded bytes. Device addresses are (buffer id << 40) | byte offset, 0 is null. Each
// launch's argument kinds are checked against the kernel's signature, so a plan that passes
// the wrong kind or count of arguments fails here as it would misbehave on a GPU.
// Usage: llm_plan_emu PLAN OUT
#include "emu.h"
#include "llm.cu"
#include <cstdio>
#include <cstdlib>
#include <string>

static FILE *in;
template <class T> static T rd() {
    T v;
    if (fread(&v, sizeof(T), 1, in) != 1) { fprintf(stderr, "truncated plan\n"); exit(2); }
    return v;
}
static std::vector<std::vector<unsigned char>> bufs;
static void *ptr(u64 a) {
    if (a == 0) return nullptr;
    u64 id = a >> 40, off = a & ((1ull << 40) - 1);
    if (id == 0 || id > bufs.size() || off > bufs[id - 1].size()) { fprintf(stderr, "bad address %llx\n", a); exit(3); }
    return bufs[id - 1].data() + off;
}

struct Args {
    std::vector<u32> tag;
    std::vector<u64> bits;
    template <class T> T *p(int i) const { return (T *)ptr(bits[i]); }
    u32 u(int i) const { return (u32)bits[i]; }
    u64 q(int i) const { return bits[i]; }
    float f(int i) const { return __uint_as_float((u32)bits[i]); }
};

// Argument kinds per kernel: P pointer, U u32, Q u64, F float (tags 0, 1, 2, 3).
static const char *SIGS[] = {"PPPUU", "PPPPUF", "PPPPPUUU", "PPPPPUUU", "PPPPPUUU",
                             "PPPPPPPPUUUU", "PPPPPPUUUUUF", "PPUUU", "PPUQ"};

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s PLAN OUT\n", argv[0]); return 2; }
    in = fopen(argv[1], "rb");
    FILE *out = fopen(argv[2], "wb");
    if (!in || !out) { perror("open"); return 2; }
    const u32 n = rd<u32>();
    for (u32 i = 0; i < n; ++i) bufs.emplace_back(rd<u64>(), 0);
    for (;;) {
        const u32 op = rd<u32>();
        if (op == 0) break;
        if (op == 1) {  // upload
            unsigned char *dst = (unsigned char *)ptr(rd<u64>());
            const u64 bytes = rd<u64>();
            if (fread(dst, 1, bytes, in) != bytes) { fprintf(stderr, "truncated upload\n"); return 2; }
        } else if (op == 3) {  // download
            const unsigned char *src = (const unsigned char *)ptr(rd<u64>());
            const u64 bytes = rd<u64>();
            fwrite(src, 1, bytes, out);
        } else if (op == 2) {  // launch
            const u32 k = rd<u32>(), gx = rd<u32>(), gy = rd<u32>(), gz = rd<u32>(), block = rd<u32>(), na = rd<u32>();
            Args a;
            std::string kinds;
            for (u32 i = 0; i < na; ++i) {
                a.tag.push_back(rd<u32>());
                a.bits.push_back(rd<u64>());
                kinds += "PUQF"[a.tag.back() & 3];
            }
            if (k >= sizeof(SIGS) / sizeof(SIGS[0]) || kinds != SIGS[k]) {
                fprintf(stderr, "kernel %u: arguments %s, signature %s\n", k, kinds.c_str(), k < 9 ? SIGS[k] : "?");
                return 4;
            }
            const dim3 g{gx, gy, gz};
            switch (k) {
            case 0: launch(g, block, [&] { pl_llm_embed(a.p<u16>(0), a.p<u32>(1), a.p<float>(2), a.u(3), a.u(4)); }); break;
            case 1: launch(g, block, [&] { pl_llm_rmsnorm(a.p<float>(0), a.p<u32>(1), a.p<float>(2), a.p<float>(3), a.u(4), a.f(5)); }); break;
            case 2: launch(g, block, [&] { pl_llm_matvec(a.p<u16>(0), a.p<float>(1), a.p<float>(2), a.p<float>(3), a.p<float>(4), a.u(5), a.u(6), a.u(7)); }); break;
            case 3: launch(g, block, [&] { pl_llm_matvec1(a.p<u16>(0), a.p<float>(1), a.p<float>(2), a.p<float>(3), a.p<float>(4), a.u(5), a.u(6), a.u(7)); }); break;
            case 4: launch(g, block, [&] { pl_llm_matmul(a.p<float>(0), a.p<u16>(1), a.p<float>(2), a.p<float>(3), a.p<float>(4), a.u(5), a.u(6), a.u(7)); }); break;
            case 5: launch(g, block, [&] { pl_llm_rope_kv(a.p<float>(0), a.p<u32>(1), a.p<u32>(2), a.p<float>(3), a.p<float>(4), a.p<float>(5), a.p<float>(6), a.p<float>(7), a.u(8), a.u(9), a.u(10), a.u(11)); }); break;
            case 6: launch(g, block, [&] { pl_llm_attention(a.p<float>(0), a.p<float>(1), a.p<float>(2), a.p<u32>(3), a.p<u32>(4), a.p<float>(5), a.u(6), a.u(7), a.u(8), a.u(9), a.u(10), a.f(11)); }); break;
            case 7: launch(g, block, [&] { pl_llm_attn_combine(a.p<float>(0), a.p<float>(1), a.u(2), a.u(3), a.u(4)); }); break;
            case 8: launch(g, block, [&] { pl_llm_swiglu(a.p<float>(0), a.p<float>(1), a.u(2), a.q(3)); }); break;
            }
        } else {
            fprintf(stderr, "bad op %u\n", op);
            return 2;
        }
    }
    fclose(out);
    return 0;
}
