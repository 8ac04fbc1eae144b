#!/usr/bin/env bash
# Creates the hotkeys and the metagraph the compose subnet mounts (run once, from anywhere):
#
#   deploy/init-subnet.sh [--gpu]
#
# Writes (all git-ignored): $POLYLITH_KEYS_DIR (default deploy/keys) with one hotkey per
# service, $POLYLITH_DATA_DIR/validator-{0,1} (default deploy/data),
# $POLYLITH_METAGRAPH_DIR/metagraph.toml (default deploy/metagraph) from
# metagraph/metagraph.template.toml, and with --gpu the miner-gpu neuron and
# deploy/prometheus/targets/gpu.json; without --gpu that target file is removed, so Prometheus
# stops scraping a GPU miner that is no longer in the metagraph. Existing keys are kept, so
# running it again only rewrites the metagraph.
#
# The metagraph is written to a temporary file in the same directory and renamed over the old
# one (never half-written). The rename gives the file a new inode, which is why compose mounts
# the directory: the running daemons see the new file and reload it within a few seconds.
#
# Env: POLYLITH_BIN (default: `polylith` on PATH, else ../target/release/polylith),
#      POLYLITH_KEYS_DIR, POLYLITH_METAGRAPH_DIR, POLYLITH_DATA_DIR (as in .env),
#      POLYLITH_PUBLIC_HOST (default 127.0.0.1).
# Assumes `polylith --keys-dir DIR key new NAME` and `polylith --keys-dir DIR key show NAME`
# (which prints the SS58 address).
set -euo pipefail

cd "$(dirname "$0")"
gpu=0
[ "${1:-}" = "--gpu" ] && gpu=1
if [ -f .env ]; then set -a; . ./.env; set +a; fi

BIN="${POLYLITH_BIN:-}"
if [ -z "$BIN" ]; then
  if command -v polylith >/dev/null; then BIN=polylith
  elif [ -x ../target/release/polylith ]; then BIN=../target/release/polylith
  else echo "init-subnet: no polylith binary (set POLYLITH_BIN)" >&2; exit 2; fi
fi
KEYS="${POLYLITH_KEYS_DIR:-./keys}"
if [ -n "${POLYLITH_METAGRAPH:-}" ] && [ -z "${POLYLITH_METAGRAPH_DIR:-}" ]; then
  echo "init-subnet: POLYLITH_METAGRAPH (a file) is replaced by POLYLITH_METAGRAPH_DIR (the directory" \
       "holding metagraph.toml; compose mounts the directory so that edits reach the daemons)." \
       "Set POLYLITH_METAGRAPH_DIR=$(dirname "$POLYLITH_METAGRAPH") in deploy/.env" >&2
  exit 2
fi
OUT="${POLYLITH_METAGRAPH_DIR:-./metagraph}/metagraph.toml"
HOST="${POLYLITH_PUBLIC_HOST:-127.0.0.1}"
DATA="${POLYLITH_DATA_DIR:-./data}"
mkdir -p "$KEYS" "$(dirname "$OUT")" "$DATA/validator-0" "$DATA/validator-1"
chmod 700 "$KEYS"
if [ "${POLYLITH_UID:-10001}" != "$(id -u)" ]; then
  echo "init-subnet: note: the containers run as uid ${POLYLITH_UID:-10001} but $KEYS and $DATA belong to" \
       "uid $(id -u); set POLYLITH_UID=$(id -u) POLYLITH_GID=$(id -g) in deploy/.env" >&2
fi

names=(validator-0 validator-1 miner-0 miner-1 miner-2)
[ "$gpu" = 1 ] && names+=(miner-gpu)

text="$(cat metagraph/metagraph.template.toml)"
[ "$gpu" = 1 ] && text="$text
$(cat metagraph/gpu.template.toml)"
for name in "${names[@]}"; do
  if ! "$BIN" --keys-dir "$KEYS" key show "$name" >/dev/null 2>&1; then
    "$BIN" --keys-dir "$KEYS" key new "$name" >/dev/null
  fi
  ss58="$("$BIN" --keys-dir "$KEYS" key show "$name" | grep -oE '5[1-9A-HJ-NP-Za-km-z]{47}' | head -n 1)"
  [ -n "$ss58" ] || { echo "init-subnet: no SS58 address in \`key show $name\`" >&2; exit 1; }
  text="${text//@$name@/$ss58}"
  echo "init-subnet: $name $ss58"
done
text="${text//@HOST@/$HOST}"
printf '%s\n' "$text" >"$OUT.tmp" && mv "$OUT.tmp" "$OUT"
echo "init-subnet: wrote $OUT"
if [ "$gpu" = 1 ]; then
  printf '[{"targets": ["127.0.0.1:9104"], "labels": {"job": "miner"}}]\n' >prometheus/targets/gpu.json.tmp
  mv prometheus/targets/gpu.json.tmp prometheus/targets/gpu.json
  echo "init-subnet: wrote prometheus/targets/gpu.json"
elif [ -e prometheus/targets/gpu.json ]; then
  rm -f prometheus/targets/gpu.json
  echo "init-subnet: removed prometheus/targets/gpu.json (no --gpu: the GPU miner is not in the metagraph)"
fi
