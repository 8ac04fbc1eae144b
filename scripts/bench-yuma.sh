#!/usr/bin/env bash
# Yuma epoch figures for docs/perf.md, meant for a quiet machine: 4096 uids, 256 validators
# weighting all 3840 miners (the criterion bench's subnet), Yuma2 and Yuma3 + liquid alpha.
#
#   scripts/bench-yuma.sh            # this checkout: `polylith bench yuma` on 2 cores
#   BEFORE=c512e29 scripts/bench-yuma.sh
#                                    # also the criterion bench of commit BEFORE, then of this
#                                    # checkout, in the same run (criterion prints the change)
#   POLYLITH=path/to/polylith ...    # use that binary instead of building one
#
# On a machine with more than 2 CPUs the epoch is pinned to CPUs 0 and 1 (taskset), because
# the goal is stated for 2 cores. Every figure is printed with the load average.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-); cpus: $(nproc)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"

pin=()
if [ "$(nproc)" -gt 2 ] && command -v taskset > /dev/null; then
    pin=(taskset -c 0,1)
fi

polylith="${POLYLITH:-}"
if [ -z "$polylith" ]; then
    cargo build --release -p polylith
    polylith=target/release/polylith
fi
for mode in "" "--yuma3 --liquid-alpha"; do
    # shellcheck disable=SC2086  # $mode is two flags or none
    "${pin[@]}" "$polylith" bench yuma --uids 4096 --validators 256 $mode --repeats 51
done

if [ -n "${BEFORE:-}" ]; then
    # Separate target directories (the two checkouts' artifacts share names, so one directory
    # would run the first binary twice) and one criterion directory, so criterion compares the
    # second run with the first. The wall group's names are the same in both; the thread-CPU
    # group of this checkout is named *_1thread (the epoch on one thread).
    base="${BENCH_TARGET:-$PWD/target-bench-yuma}"
    export CRITERION_HOME="$base/criterion"
    tree="$(mktemp -d)/before"
    git worktree add --detach "$tree" "$BEFORE" > /dev/null
    trap 'git worktree remove --force "$tree"' EXIT
    echo "== criterion, $BEFORE (single-threaded epoch)"
    (cd "$tree" && CARGO_TARGET_DIR="$base/before" "${pin[@]}" cargo bench -p polylith-scoring --bench yuma_epoch)
    echo "== criterion, this checkout"
    CARGO_TARGET_DIR="$base/after" "${pin[@]}" cargo bench -p polylith-scoring --bench yuma_epoch
    echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
fi
