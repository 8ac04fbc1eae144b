#!/usr/bin/env bash
# Smoke test of deploy/docker-compose.yml on this host, with no registry access:
#
#   scripts/compose-smoke.sh
#
#   1. starts a private dockerd (overlay2, else vfs; no iptables, no default bridge: the services
#      use the host network) on a socket in a temp dir; fails early and clearly if it cannot run;
#   2. builds a Debian bookworm base image with debootstrap (cached in the daemon's data root,
#      so later runs skip it) and, from it, a Prometheus image with Debian's package;
#   3. packages the prebuilt binary (POLYLITH_BIN, default target/release/polylith) with
#      Dockerfile.prebuilt: no Rust compile inside docker;
#   4. creates keys and a metagraph with deploy/init-subnet.sh in a temp dir (mounted read-only);
#   5. `docker-compose up -d` validators, miners and Prometheus (Grafana cannot be pulled here);
#   6. waits until Prometheus sees every target up and sum(polylith_validator_rounds_total) > 0,
#      and both task kinds verify;
#   7. checks every polylith container's healthcheck (`polylith health`) reports healthy and
#      its logs rotate (json-file with max-size);
#   8. replaces the metagraph by rename with changed stakes (as init-subnet.sh does) and waits
#      for the containers, which mount its directory, to log `metagraph reloaded`;
#   9. tears everything down (`down -v`, stops its dockerd) whatever happened.
#
# Needs root (dockerd), and docker.io, docker-compose, debootstrap, curl, python3
# (scripts/install-ops-deps.sh --docker). Uses the fixed host ports of docker-compose.yml
# (8081-8082, 8091-8093, 9101-9103, 9201-9202) and checks they are free first.
#
# Env: POLYLITH_BIN; SMOKE_DOCKER_ROOT (data root prefix, default /var/tmp/polylith-smoke-docker,
#      suffixed with the storage driver; caches the base and Prometheus images, ~650 MB);
#      SMOKE_MIRROR (debootstrap mirror, default http://deb.debian.org/debian);
#      SMOKE_TIMEOUT (seconds for targets + a round, default 300);
#      SMOKE_STORAGE_DRIVER (default "overlay2 vfs": the first that starts);
#      SMOKE_KEEP=1 keeps the temp dir (logs, env file, keys).
# Exit: 0 pass, 1 fail, 3 this host cannot run dockerd (the message says why).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$PWD"
t0=$(date +%s)
say() { printf '== %s (%ss)\n' "$*" "$(( $(date +%s) - t0 ))"; }
die() { echo "compose-smoke: $*" >&2; exit 1; }
cannot() { echo "compose-smoke: CANNOT RUN HERE: $*" >&2; exit 3; }

[ "$(id -u)" = 0 ] || cannot "dockerd needs root (run as root, or in CI with sudo)"
for tool in dockerd docker docker-compose debootstrap curl python3; do
  command -v "$tool" >/dev/null || cannot "$tool not found (scripts/install-ops-deps.sh --docker installs it)"
done
BIN="${POLYLITH_BIN:-target/release/polylith}"
[ -x "$BIN" ] || die "no polylith binary at $BIN (cargo build --release -p polylith, or set POLYLITH_BIN)"
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"

PORTS=(8081 8082 8091 8092 8093 9101 9102 9103 9201 9202)
busy=$(python3 - "${PORTS[@]}" <<'EOF'
import socket, sys
for p in sys.argv[1:]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the daemons bind: TIME_WAIT is fine
    try:
        s.bind(("127.0.0.1", int(p)))
    except OSError:
        print(p)
    finally:
        s.close()
EOF
)
[ -z "$busy" ] || die "host ports in use (docker-compose.yml needs them): $(echo $busy)"
PROM_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

WORK="$(mktemp -d -t polylith-smoke.XXXXXX)"
export DOCKER_HOST="unix://$WORK/docker.sock" DOCKER_BUILDKIT=0
PROJECT=polylith-smoke
COMPOSE=(docker-compose --env-file "$WORK/smoke.env" -p "$PROJECT" -f deploy/docker-compose.yml)
DOCKERD_PID=""
up_done=0
cleanup() {
  local rc=$?
  if [ "$up_done" = 1 ]; then
    if [ "$rc" != 0 ]; then
      echo "---- container logs (last lines each)"
      "${COMPOSE[@]}" logs --no-color --tail=15 2>&1 | tail -n 120 || true
    fi
    "${COMPOSE[@]}" down -v --remove-orphans -t 10 >/dev/null 2>&1 || echo "compose-smoke: docker-compose down failed" >&2
  fi
  if [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
    kill "$DOCKERD_PID" 2>/dev/null || true
    for _ in $(seq 300); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.1; done
  fi
  # dockerd leaves its default network namespace mounted under the exec root.
  if mountpoint -q "$WORK/exec/netns/default" 2>/dev/null; then umount "$WORK/exec/netns/default" || true; fi
  if [ "${SMOKE_KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
  say "done (exit $rc)"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_dockerd() { # start_dockerd DRIVER: 0 when the daemon answers
  local driver="$1"
  DATA_ROOT="${SMOKE_DOCKER_ROOT:-/var/tmp/polylith-smoke-docker}-$driver"
  mkdir -p "$DATA_ROOT"
  say "starting a private dockerd ($driver, data root $DATA_ROOT)"
  dockerd --data-root "$DATA_ROOT" --exec-root "$WORK/exec" --pidfile "$WORK/docker.pid" \
    --host "$DOCKER_HOST" --storage-driver "$driver" --iptables=false --ip-masq=false --bridge=none \
    >"$WORK/dockerd-$driver.log" 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 300); do
    docker version >/dev/null 2>&1 && return 0
    kill -0 "$DOCKERD_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill "$DOCKERD_PID" 2>/dev/null || true
  wait "$DOCKERD_PID" 2>/dev/null || true
  DOCKERD_PID=""
  return 1
}
# overlay2 where the kernel allows it (builds and teardown are several times faster), else vfs.
started=0
for driver in ${SMOKE_STORAGE_DRIVER:-overlay2 vfs}; do
  if start_dockerd "$driver"; then started=1; break; fi
  echo "compose-smoke: dockerd with $driver did not start:"; tail -n 5 "$WORK/dockerd-$driver.log"
done
[ "$started" = 1 ] || cannot "dockerd did not start (logs above); it needs root with CAP_SYS_ADMIN and cgroups"

BASE=local/debian:bookworm
if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  say "building $BASE with debootstrap (once; cached in $DATA_ROOT)"
  debootstrap --variant=minbase bookworm "$WORK/rootfs" "${SMOKE_MIRROR:-http://deb.debian.org/debian}" \
    >"$WORK/debootstrap.log" 2>&1 || { tail -n 20 "$WORK/debootstrap.log"; die "debootstrap failed"; }
  tar -C "$WORK/rootfs" -c . | docker import - "$BASE" >/dev/null
  rm -rf "$WORK/rootfs"
fi

PROM_IMAGE=local/prometheus:bookworm
if ! docker image inspect "$PROM_IMAGE" >/dev/null 2>&1; then
  say "building $PROM_IMAGE (Debian's prometheus package)"
  docker build -q --network host --build-arg BASE_IMAGE="$BASE" -t "$PROM_IMAGE" \
    -f deploy/prometheus/Dockerfile.debian deploy/prometheus >"$WORK/build-prometheus.log" 2>&1 \
    || { tail -n 20 "$WORK/build-prometheus.log"; die "building $PROM_IMAGE failed"; }
fi

say "packaging $BIN as polylith:smoke (Dockerfile.prebuilt)"
mkdir -p "$WORK/ctx"
cp "$BIN" "$WORK/ctx/polylith"
docker build -q --network host --build-arg BASE_IMAGE="$BASE" -t polylith:smoke \
  -f Dockerfile.prebuilt "$WORK/ctx" >"$WORK/build-polylith.log" 2>&1 \
  || { tail -n 20 "$WORK/build-polylith.log"; die "building polylith:smoke failed"; }
docker run --rm --network none polylith:smoke --version || die "the packaged binary does not run in the image"

say "keys and metagraph (deploy/init-subnet.sh)"
POLYLITH_BIN="$BIN" POLYLITH_KEYS_DIR="$WORK/keys" POLYLITH_METAGRAPH_DIR="$WORK/metagraph" \
  POLYLITH_DATA_DIR="$WORK/data" POLYLITH_UID="$(id -u)" deploy/init-subnet.sh

cat >"$WORK/smoke.env" <<EOF
POLYLITH_IMAGE=polylith:smoke
PROMETHEUS_IMAGE=$PROM_IMAGE
POLYLITH_KEYS_DIR=$WORK/keys
POLYLITH_METAGRAPH_DIR=$WORK/metagraph
POLYLITH_HEALTHCHECK_INTERVAL=2s
POLYLITH_DATA_DIR=$WORK/data
POLYLITH_UID=$(id -u)
POLYLITH_GID=$(id -g)
POLYLITH_LOG=info
PROMETHEUS_PORT=$PROM_PORT
GRAFANA_ADMIN_PASSWORD=unused-in-smoke-test
EOF
"${COMPOSE[@]}" config -q

say "docker-compose up (validators, miners, prometheus; grafana cannot be pulled here)"
up_done=1
"${COMPOSE[@]}" up -d --no-build validator-0 validator-1 miner-0 miner-1 miner-2 prometheus \
  >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log"; die "docker-compose up failed"; }
PROM="http://127.0.0.1:$PROM_PORT"
for _ in $(seq 300); do curl -sf "$PROM/-/ready" >/dev/null && break; sleep 0.2; done
curl -sf "$PROM/-/ready" >/dev/null || die "prometheus in compose is not ready on $PROM"

say "waiting for every target up and a completed round"
python3 scripts/check_dashboards.py wait --prometheus "$PROM" --targets deploy/prometheus/targets/polylith.json \
  --timeout "${SMOKE_TIMEOUT:-300}" --scrapes 0 || die "the compose subnet did not come up"
python3 scripts/check_dashboards.py rules --prometheus "$PROM" >/dev/null || die "alert rules do not evaluate in compose"
say "both task kinds verify in the containers (GEMM proofs and LLM completions)"
verified() { # verified TASK: verified queries of that task, as Prometheus sees them (0 if none yet)
  curl -sf --get "$PROM/api/v1/query" \
    --data-urlencode "query=sum(polylith_validator_queries_total{task=\"$1\",outcome=\"verified\"})" |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(int(float(r[0]["value"][1])) if r else 0)'
}
for task in gemm llm; do
  n=0
  for _ in $(seq 120); do
    n=$(verified "$task" || echo 0)
    [ "$n" -gt 0 ] && break
    sleep 0.5
  done
  [ "$n" -gt 0 ] || die "no verified $task query in compose"
  say "$task: $n verified queries"
done
say "every polylith container is healthy (polylith health) and rotates its logs"
for svc in validator-0 validator-1 miner-0 miner-1 miner-2; do
  cid=$("${COMPOSE[@]}" ps -q "$svc")
  st=none
  for _ in $(seq 120); do
    st=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$cid")
    [ "$st" = healthy ] && break
    sleep 0.5
  done
  [ "$st" = healthy ] || die "$svc is $st: $(docker inspect -f '{{json .State.Health}}' "$cid" | tail -c 800)"
  docker inspect -f '{{.HostConfig.LogConfig.Type}} {{index .HostConfig.LogConfig.Config "max-size"}}' "$cid" |
    grep -q '^json-file [0-9]' || die "$svc: logs are not rotated"
done

say "a metagraph replaced by rename (changed stakes) reaches the containers"
python3 - "$WORK/metagraph/metagraph.toml" <<'EOF'
import re, sys, os
path = sys.argv[1]
text = open(path).read()
new = re.sub(r"^stake = (\d+)", lambda m: f"stake = {int(m.group(1)) + 1}", text, flags=re.M)
assert new != text, "no stake to change"
open(path + ".tmp", "w").write(new)
os.rename(path + ".tmp", path)
EOF
for svc in miner-0 validator-0; do
  ok=0
  for _ in $(seq 120); do
    "${COMPOSE[@]}" logs --no-color "$svc" 2>&1 | grep -q "metagraph reloaded" && { ok=1; break; }
    sleep 0.5
  done
  [ "$ok" = 1 ] || die "$svc did not reload the metagraph replaced by rename"
done
running=$("${COMPOSE[@]}" ps --services --filter status=running | sort | tr '\n' ' ')
say "services running: $running"
say "compose smoke test passed"
