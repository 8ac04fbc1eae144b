#!/usr/bin/env bash
# Fuzz smoke test: builds every cargo-fuzz target and runs each from its seed corpus
# (fuzz/seeds/<target>) for a bounded number of executions; any crash fails the script.
# Needs nightly and cargo-fuzz. FUZZ_SMOKE_RUNS (default 20000) sets the executions per target.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${FUZZ_SMOKE_RUNS:-20000}
# -a: debug assertions and overflow checks, as in the test suite. -s none: the code under
# test is safe Rust, and without AddressSanitizer the crypto-heavy targets run ~5x faster.
flags=(-a -s none)
cargo +nightly fuzz build "${flags[@]}"
for target in $(cargo +nightly fuzz list); do
  corpus=$(mktemp -d)
  log=$(mktemp)
  echo "fuzz smoke: $target ($runs runs)"
  if cargo +nightly fuzz run "${flags[@]}" "$target" "$corpus" "fuzz/seeds/$target" -- \
    -runs="$runs" -max_len=4096 -max_total_time=60 >"$log" 2>&1; then
    grep -E '^#[0-9]+[[:space:]]+DONE' "$log" || true
    rm -rf "$corpus" "$log"
  else
    tail -n 60 "$log"
    echo "fuzz smoke: $target crashed; the input is in fuzz/artifacts/$target/"
    exit 1
  fi
done
