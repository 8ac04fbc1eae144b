// Runs the kernels of ../kernels/llm.cu on the CPU through emu.h and compares each with a
// straightforward reference on random inputs. Built and run by cuda/tests/llm_emu.rs (needs g++
// with C++20); by hand: g++ -std=c++20 -O1 -pthread -I ../kernels llm_emu.cpp -o /tmp/llm_emu && /tmp/llm_emu
#include "emu.h"
#include "llm.cu"
#include <cstdio>
#include <random>
#include <cstdlib>

static std::mt19937_64 rng(42);
static std::vector<float> randv(size_t n, float s) {
    std::uniform_real_distribution<float> d(-s, s);
    std::vector<float> v(n);
    for (auto &x : v) x = d(rng);
    return v;
}
static u16 bf(float f) { u32 u = __float_as_uint(f); return (u16)((u + 0x7FFF + ((u >> 16) & 1)) >> 16); }
static float bfv(u16 b) { return __uint_as_float((u32)b << 16); }
static int fails = 0;
static void check(const char *what, const std::vector<float> &got, const std::vector<double> &want, double atol, double rtol) {
    if (got.size() != want.size()) { printf("FAIL %s: size %zu vs %zu\n", what, got.size(), want.size()); fails++; return; }
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i) {
        double e = std::fabs(got[i] - want[i]);
        if (!(e <= atol + rtol * std::fabs(want[i]))) { printf("FAIL %s[%zu]: got %g want %g\n", what, i, got[i], want[i]); fails++; return; }
        worst = std::max(worst, e);
    }
    printf("ok   %s (max abs err %.2e)\n", what, worst);
}

int main() {
    // rmsnorm
    for (u32 hidden : {192u, 40u, 2048u}) {
        u32 rows = 3;
        auto x = randv(rows * hidden, 3), w = randv(hidden, 1.4f);
        std::vector<float> out(rows * hidden);
        std::vector<u32> rl = {2, 0, 1};
        launch({rows}, 256, [&] { pl_llm_rmsnorm(x.data(), rl.data(), w.data(), out.data(), hidden, 1e-5f); });
        std::vector<double> want;
        for (u32 r = 0; r < rows; ++r) {
            const float *xr = &x[rl[r] * hidden];
            double ss = 0; for (u32 i = 0; i < hidden; ++i) ss += (double)xr[i] * xr[i];
            double inv = 1.0 / std::sqrt(ss / hidden + 1e-5);
            for (u32 i = 0; i < hidden; ++i) want.push_back(xr[i] * inv * w[i]);
        }
        check("rmsnorm", out, want, 1e-5, 1e-5);
    }
    // linear: matvec1, matvec (nb 3, 8), matmul
    struct Case { u32 t, n, k; };
    for (Case c : {Case{1, 37, 192}, Case{1, 9, 2048}, Case{3, 37, 64}, Case{8, 20, 520}, Case{70, 130, 200}, Case{9, 65, 40}}) {
        auto x = randv(c.t * c.k, 2), wf = randv(c.n * c.k, 0.1f), bias = randv(c.n, 1), res = randv(c.t * c.n, 1);
        std::vector<u16> w(wf.size()); for (size_t i = 0; i < w.size(); ++i) w[i] = bf(wf[i]);
        std::vector<float> y(res);  // res aliases y
        if (c.t == 1) launch({(c.n + 7) / 8}, 256, [&] { pl_llm_matvec1(w.data(), x.data(), bias.data(), y.data(), y.data(), c.n, c.k, 1); });
        else if (c.t <= 8) launch({(c.n + 7) / 8}, 256, [&] { pl_llm_matvec(w.data(), x.data(), bias.data(), y.data(), y.data(), c.n, c.k, c.t); });
        else launch({(c.n + 63) / 64, (c.t + 63) / 64}, 256, [&] { pl_llm_matmul(x.data(), w.data(), bias.data(), y.data(), y.data(), c.t, c.n, c.k); });
        std::vector<double> want;
        for (u32 t = 0; t < c.t; ++t) for (u32 n = 0; n < c.n; ++n) {
            double a = 0; for (u32 k = 0; k < c.k; ++k) a += (double)x[t * c.k + k] * bfv(w[n * c.k + k]);
            want.push_back(a + bias[n] + res[t * c.n + n]);
        }
        char name[64]; snprintf(name, 64, "linear %ux%ux%u", c.t, c.n, c.k);
        check(name, y, want, 1e-4, 1e-5);
        // no bias / no res
        std::vector<float> y2(c.t * c.n, 123.f);
        if (c.t == 1) launch({(c.n + 7) / 8}, 256, [&] { pl_llm_matvec1(w.data(), x.data(), nullptr, nullptr, y2.data(), c.n, c.k, 1); });
        else if (c.t <= 8) launch({(c.n + 7) / 8}, 256, [&] { pl_llm_matvec(w.data(), x.data(), nullptr, nullptr, y2.data(), c.n, c.k, c.t); });
        else launch({(c.n + 63) / 64, (c.t + 63) / 64}, 256, [&] { pl_llm_matmul(x.data(), w.data(), nullptr, nullptr, y2.data(), c.t, c.n, c.k); });
        for (u32 t = 0; t < c.t; ++t) for (u32 n = 0; n < c.n; ++n) want[t * c.n + n] -= bias[n] + res[t * c.n + n];
        check("  (no bias/res)", y2, want, 1e-4, 1e-5);
    }
    // rope + kv, attention
    u32 nh = 6, nkv = 2, hd = 40, slots = 2, max_pos = 300, half = hd / 2;
    {
        std::vector<u32> ts = {0, 1, 1, 0}, tp = {0, 5, 6, 299};
        u32 T = ts.size(), width = (nh + 2 * nkv) * hd;
        auto qkv = randv(T * width, 2);
        std::vector<float> cs(max_pos * half), sn(max_pos * half);
        for (u32 p = 0; p < max_pos; ++p) for (u32 i = 0; i < half; ++i) {
            float f = 1.0f / std::pow(10000.0f, (float)(2 * i) / hd), a = p * f;
            cs[p * half + i] = std::cos(a); sn[p * half + i] = std::sin(a);
        }
        std::vector<float> qo(T * nh * hd), kc(slots * nkv * max_pos * hd), vc(kc.size());
        launch({T}, 256, [&] { pl_llm_rope_kv(qkv.data(), ts.data(), tp.data(), cs.data(), sn.data(), qo.data(), kc.data(), vc.data(), nh, nkv, hd, max_pos); });
        std::vector<float> gq, gk, gv; std::vector<double> wq, wk, wv;
        for (u32 t = 0; t < T; ++t) {
            const float *row = &qkv[t * width];
            auto rot = [&](const float *x, std::vector<double> &o) {
                for (u32 d = 0; d < hd; ++d) {
                    double c = cs[tp[t] * half + d % half], s = sn[tp[t] * half + d % half];
                    o.push_back(d < half ? x[d] * c - x[d + half] * s : x[d] * c + x[d - half] * s);
                }
            };
            for (u32 h = 0; h < nh; ++h) { rot(row + h * hd, wq); for (u32 d = 0; d < hd; ++d) gq.push_back(qo[(t * nh + h) * hd + d]); }
            for (u32 h = 0; h < nkv; ++h) {
                rot(row + (nh + h) * hd, wk);
                size_t at = ((size_t)(ts[t] * nkv + h) * max_pos + tp[t]) * hd;
                for (u32 d = 0; d < hd; ++d) { gk.push_back(kc[at + d]); gv.push_back(vc[at + d]); wv.push_back(row[(nh + nkv + h) * hd + d]); }
            }
        }
        check("rope q", gq, wq, 1e-6, 1e-6); check("rope k", gk, wk, 1e-6, 1e-6); check("kv v", gv, wv, 0, 0);
    }
    {
        auto kc = randv(slots * nkv * max_pos * hd, 1), vc = randv(kc.size(), 1);
        std::vector<u32> ts = {0, 1, 1, 0, 1}, tp = {0, 5, 6, 299, 130};
        u32 T = ts.size();
        auto q = randv(T * nh * hd, 1);
        float scale = (float)(1.0 / std::sqrt((double)hd));
        std::vector<double> want;
        for (u32 t = 0; t < T; ++t) for (u32 h = 0; h < nh; ++h) {
            u32 kvh = h / (nh / nkv); size_t base = (size_t)(ts[t] * nkv + kvh) * max_pos;
            std::vector<double> sc;
            for (u32 j = 0; j <= tp[t]; ++j) { double a = 0; for (u32 d = 0; d < hd; ++d) a += (double)q[(t * nh + h) * hd + d] * kc[(base + j) * hd + d]; sc.push_back(a / std::sqrt((double)hd)); }
            double m = *std::max_element(sc.begin(), sc.end()), z = 0; for (auto &s : sc) { s = std::exp(s - m); z += s; }
            for (u32 d = 0; d < hd; ++d) { double a = 0; for (u32 j = 0; j <= tp[t]; ++j) a += sc[j] * vc[(base + j) * hd + d]; want.push_back(a / z); }
        }
        for (u32 split : {64u, 256u, 1000u}) {
            u32 splits = (300 + split - 1) / split;
            std::vector<float> part(T * nh * splits * (hd + 2)), out(T * nh * hd);
            launch({T, nh, splits}, 128, [&] { pl_llm_attention(q.data(), kc.data(), vc.data(), ts.data(), tp.data(), part.data(), nh, nkv, hd, max_pos, split, scale); });
            launch({T * nh}, 128, [&] { pl_llm_attn_combine(part.data(), out.data(), nh, hd, splits); });
            char name[64]; snprintf(name, 64, "attention split %u", split);
            check(name, out, want, 1e-5, 1e-4);
        }
    }
    // swiglu
    {
        u32 inter = 96; auto gu = randv(3 * 2 * inter, 6); u64 total = 3 * inter;
        std::vector<float> act(total);
        launch({2}, 256, [&] { pl_llm_swiglu(gu.data(), act.data(), inter, total); });
        std::vector<double> want;
        for (u32 t = 0; t < 3; ++t) for (u32 j = 0; j < inter; ++j) { double g = gu[t * 2 * inter + j]; want.push_back(g / (1 + std::exp(-g)) * gu[t * 2 * inter + inter + j]); }
        check("swiglu", act, want, 1e-5, 1e-5);
    }
    // argmax / log_softmax / topk
    {
        u32 vocab = 5000; auto l = randv(3 * vocab, 10);
        l[vocab + 100] = 50; l[vocab + 7] = 50; l[2 * vocab + 3] = NAN; l[2 * vocab + 4] = 40;
        std::vector<u32> am(3);
        launch({3}, 256, [&] { pl_llm_argmax(l.data(), am.data(), vocab); });
        std::vector<u32> want_am;
        for (u32 r = 0; r < 3; ++r) { u32 b = 0; for (u32 i = 0; i < vocab; ++i) { float v = l[r * vocab + i], bv = l[r * vocab + b]; if (v > bv || std::isnan(bv)) b = i; } want_am.push_back(b); }
        bool ok = am == want_am; printf("%s argmax %u %u %u (want %u %u %u)\n", ok ? "ok  " : "FAIL", am[0], am[1], am[2], want_am[0], want_am[1], want_am[2]); fails += !ok;
        std::vector<float> allnan(vocab, NAN); std::vector<u32> an(1);
        launch({1}, 256, [&] { pl_llm_argmax(allnan.data(), an.data(), vocab); });
        ok = an[0] == vocab - 1; printf("%s argmax all-NaN -> %u\n", ok ? "ok  " : "FAIL", an[0]); fails += !ok;
        std::vector<float> lp(2 * vocab);
        launch({2}, 256, [&] { pl_llm_log_softmax(l.data(), lp.data(), vocab); });
        std::vector<double> want;
        for (u32 r = 0; r < 2; ++r) { double m = -INFINITY; for (u32 i = 0; i < vocab; ++i) m = std::max(m, (double)l[r * vocab + i]); double s = 0; for (u32 i = 0; i < vocab; ++i) s += std::exp(l[r * vocab + i] - m); for (u32 i = 0; i < vocab; ++i) want.push_back(l[r * vocab + i] - m - std::log(s)); }
        check("log_softmax", lp, want, 1e-5, 1e-6);
        u32 k = 20; std::vector<u32> ids(3 * k); std::vector<float> vals(3 * k);
        launch({3}, 256, [&] { pl_llm_topk(l.data(), vocab, k, ids.data(), vals.data()); });
        ok = true;
        for (u32 r = 0; r < 3; ++r) {
            std::vector<u32> idx; for (u32 i = 0; i < vocab; ++i) if (!std::isnan(l[r * vocab + i])) idx.push_back(i);
            std::sort(idx.begin(), idx.end(), [&](u32 a, u32 b) { float va = l[r * vocab + a], vb = l[r * vocab + b]; return va > vb || (va == vb && a < b); });
            for (u32 j = 0; j < k; ++j) if (ids[r * k + j] != idx[j] || vals[r * k + j] != l[r * vocab + idx[j]]) { ok = false; printf("topk row %u pos %u: got %u want %u\n", r, j, ids[r * k + j], idx[j]); break; }
        }
        printf("%s topk (row 1 starts %u %u)\n", ok ? "ok  " : "FAIL", ids[k], ids[k + 1]); fails += !ok;
        std::vector<float> few = {1, NAN, 3}; std::vector<u32> fi(5); std::vector<float> fv(5);
        launch({1}, 256, [&] { pl_llm_topk(few.data(), 3, 5, fi.data(), fv.data()); });
        ok = fi[0] == 2 && fi[1] == 0 && fi[2] == 0xffffffffu && fi[4] == 0xffffffffu && std::isinf(fv[3]);
        printf("%s topk padding %u %u %u %u %u\n", ok ? "ok  " : "FAIL", fi[0], fi[1], fi[2], fi[3], fi[4]); fails += !ok;
    }
    // embed, fill
    {
        u32 vocab = 50, hidden = 24; std::vector<u16> e(vocab * hidden); for (auto &x : e) x = bf(randv(1, 2)[0]);
        std::vector<u32> tok = {3, 49, 0}; std::vector<float> x(3 * hidden);
        launch({3}, 128, [&] { pl_llm_embed(e.data(), tok.data(), x.data(), hidden, vocab); });
        std::vector<double> want; for (u32 t : tok) for (u32 i = 0; i < hidden; ++i) want.push_back(bfv(e[t * hidden + i]));
        check("embed", x, want, 0, 0);
        std::vector<u16> r(1000); launch({2}, 256, [&] { pl_llm_fill_random_bf16(r.data(), 1000, 7, 0.5f); });
        double mx = 0, mean = 0; for (auto b : r) { mx = std::max(mx, (double)std::fabs(bfv(b))); mean += bfv(b); }
        bool ok = mx <= 0.5 && mx > 0.4 && std::fabs(mean / 1000) < 0.05; printf("%s fill_random max %.3f mean %.4f\n", ok ? "ok  " : "FAIL", mx, mean / 1000); fails += !ok;
    }
    printf(fails ? "%d FAILURES\n" : "all passed\n", fails);
    return fails != 0;
}
