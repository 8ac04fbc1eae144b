#!/usr/bin/env python3
"""Independent re-implementation of docs/protocol.md §1 (generator, exact product, Merkle
commitment) that prints the test vectors pinned in protocol/tests/gemm.rs and §1.4.

Usage: python3 -m venv .venv-keys && .venv-keys/bin/pip install blake3
       .venv-keys/bin/python scripts/protocol_vectors.py
"""
import struct

from blake3 import blake3

M64 = (1 << 64) - 1


def mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def bound(k):
    return max([r for r in range(1, 128) if k * r * r < 2**24], default=0)


def entry(seed, tag, k, idx):
    key = mix64((seed + tag * 0x9E3779B97F4A7C15) & M64)
    z = mix64(key ^ ((idx * 0xD1B54A32D192ED03) & M64))
    r = bound(k)
    v = ((z >> 32) * (2 * r + 1)) >> 32
    return v - r


def leaf(row):
    return blake3(b"\x00" + struct.pack("<%di" % len(row), *row)).digest()


def node(left, right):
    return blake3(b"\x01" + left + right).digest()


def root(leaves):
    level = list(leaves)
    while len(level) > 1:
        nxt = [node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def main():
    for seed, k in [(0, 1), (42, 4096), (0xDEADBEEF, 1 << 22)]:
        print(f"seed {seed:#x} k {k} R {bound(k)}")
        print("  A[0..8]", [entry(seed, 1, k, i) for i in range(8)])
        print("  B[0..8]", [entry(seed, 2, k, i) for i in range(8)])
    n, k, m, seed = 4, 8, 4, 42
    a = [[entry(seed, 1, k, i * k + j) for j in range(k)] for i in range(n)]
    b = [[entry(seed, 2, k, i * m + j) for j in range(m)] for i in range(k)]
    c = [[sum(a[i][l] * b[l][j] for l in range(k)) for j in range(m)] for i in range(n)]
    print("C (seed 42, n 4, k 8, m 4):", c)
    leaves = [leaf(r) for r in c]
    print("leaf(row 0):", leaves[0].hex())
    print("root(4 rows):", root(leaves).hex())
    print("root(rows 0..3):", root(leaves[:3]).hex())


if __name__ == "__main__":
    main()
