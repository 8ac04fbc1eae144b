#!/usr/bin/env bash
# Proves the dashboards and alert rules match what the daemons really export.
#
#   scripts/check-dashboards.sh                      # against the real daemons (CI)
#   scripts/check-dashboards.sh --expect-fail tests/fixtures/broken-dashboard.json
#                                                    # same, and FILE must be caught (self-test)
#   scripts/check-dashboards.sh --fake               # against scripts/fake_exporter.py (dev aid)
#   scripts/check-dashboards.sh --static-only        # no daemons, no Prometheus server
#
# Steps:
#   1. static: dashboards are what scripts/gen_dashboards.py generates; they match
#      dashboards/schema.json; every polylith_* name in dashboards and alert rules is in
#      docs/metrics.md; `promtool check rules` + `promtool test rules` on the alerts.
#   2. `polylith local --serve --data-dir DIR` (POLYLITH_BIN, default the newer of
#      $CARGO_TARGET_DIR/{release,debug}/polylith); wait for DIR/targets.json (file_sd).
#   3. `promtool check metrics` on every endpoint's /metrics.
#   4. Debian's Prometheus on 127.0.0.1:<free port>, temp storage, scrape_interval 1s,
#      file_sd on DIR/targets.json, the alert rules loaded; wait until every target is up, a
#      round completed and 3 more scrapes happened.
#   5. every panel query and label_values() variable of every dashboard through
#      /api/v1/query: one line each (ok / empty / error); every alert rule evaluates (health ok).
#   6. with --expect-fail FILE: step 1 and 5 must FAIL on FILE (exit 0 only if they do).
#
# Env: POLYLITH_BIN, CHECK_TIMEOUT (seconds to wait for targets and a round, default 240),
#      KEEP=1 keeps the temp directory (logs, targets.json, prometheus.yml) for debugging.
# Needs: prometheus, promtool, curl, python3 (scripts/install-ops-deps.sh installs them).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$PWD"
fake=0 static_only=0
expect_fail=()
while [ $# -gt 0 ]; do
  case "$1" in
    --fake) fake=1 ;;
    --static-only) static_only=1 ;;
    --expect-fail) shift; [ $# -gt 0 ] || { echo "--expect-fail needs a FILE" >&2; exit 2; }; expect_fail+=("$1") ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "check-dashboards: unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

for tool in promtool python3 curl; do
  command -v "$tool" >/dev/null || { echo "check-dashboards: $tool not found (run scripts/install-ops-deps.sh)" >&2; exit 2; }
done

DASHBOARDS=()
for f in dashboards/*.json; do
  case "$(basename "$f")" in schema.json|allow-empty.json) ;; *) DASHBOARDS+=("$f") ;; esac
done
RULES=deploy/prometheus/alerts.yml
RULES_TEST=deploy/prometheus/alerts_test.yml
PY="python3 scripts/check_dashboards.py"
failed=0
t_start=$(date +%s)
say() { printf '== %s (%ss)\n' "$*" "$(( $(date +%s) - t_start ))"; }

say "static checks"
python3 scripts/gen_dashboards.py --check || failed=1
$PY static "${DASHBOARDS[@]}" "$RULES" || failed=1
promtool check rules "$RULES" || failed=1
promtool test rules "$RULES_TEST" || failed=1
for f in "${expect_fail[@]}"; do
  if $PY static "$f" >"/tmp/check-dashboards-static.$$" 2>&1; then
    echo "FAIL expect-fail $f: the static check passed it"; failed=1
  else
    sed 's/^/   (expected) /' "/tmp/check-dashboards-static.$$"
  fi
  rm -f "/tmp/check-dashboards-static.$$"
done
if [ "$static_only" = 1 ]; then
  [ "$failed" = 0 ] && say "static checks passed" || say "static checks FAILED"
  exit "$failed"
fi

command -v prometheus >/dev/null || { echo "check-dashboards: prometheus not found (run scripts/install-ops-deps.sh)" >&2; exit 2; }
WORK="$(mktemp -d -t polylith-dashcheck.XXXXXX)"
SUBNET_PID="" PROM_PID=""
cleanup() {
  # Only the processes this script started, by PID. The subnet gets SIGINT (its graceful stop).
  if [ -n "$PROM_PID" ] && kill -0 "$PROM_PID" 2>/dev/null; then kill "$PROM_PID" 2>/dev/null || true; fi
  if [ -n "$SUBNET_PID" ] && kill -0 "$SUBNET_PID" 2>/dev/null; then
    kill -INT "$SUBNET_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SUBNET_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$SUBNET_PID" 2>/dev/null || true
  fi
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

alive() { kill -0 "$1" 2>/dev/null; }
show_log() { echo "---- last lines of $1"; tail -n 30 "$1" || true; }

SUBNET_DIR="$WORK/subnet"
mkdir -p "$SUBNET_DIR"
if [ "$fake" = 1 ]; then
  say "starting scripts/fake_exporter.py (development stand-in, not the real daemons)"
  python3 scripts/fake_exporter.py --serve --data-dir "$SUBNET_DIR" >"$WORK/subnet.log" 2>&1 &
else
  BIN="${POLYLITH_BIN:-}"
  if [ -z "$BIN" ]; then
    # The newest build, so a stale release binary never shadows a fresh debug one.
    T="${CARGO_TARGET_DIR:-target}"
    for c in "$T/release/polylith" "$T/debug/polylith"; do
      [ -x "$c" ] && { [ -z "$BIN" ] || [ "$c" -nt "$BIN" ]; } && BIN="$c"
    done
  fi
  [ -n "$BIN" ] && [ -x "$BIN" ] || { echo "check-dashboards: no polylith binary (build it, or set POLYLITH_BIN)" >&2; exit 2; }
  say "starting $BIN local --serve --data-dir $SUBNET_DIR"
  "$BIN" local --serve --data-dir "$SUBNET_DIR" >"$WORK/subnet.log" 2>&1 &
fi
SUBNET_PID=$!

TIMEOUT="${CHECK_TIMEOUT:-240}"
deadline=$(( $(date +%s) + TIMEOUT ))
until [ -s "$SUBNET_DIR/targets.json" ] && python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$SUBNET_DIR/targets.json" 2>/dev/null; do
  alive "$SUBNET_PID" || { echo "check-dashboards: the subnet exited before writing targets.json"; show_log "$WORK/subnet.log"; exit 1; }
  [ "$(date +%s)" -lt "$deadline" ] || { echo "check-dashboards: no $SUBNET_DIR/targets.json after ${TIMEOUT}s"; show_log "$WORK/subnet.log"; exit 1; }
  sleep 0.2
done
mapfile -t ENDPOINTS < <(python3 -c '
import json, sys
for g in json.load(open(sys.argv[1])):
    for t in g.get("targets", []):
        print(g.get("labels", {}).get("job", "?"), t)' "$SUBNET_DIR/targets.json")
say "targets.json lists ${#ENDPOINTS[@]} endpoints"
[ "${#ENDPOINTS[@]}" -gt 0 ] || { echo "check-dashboards: targets.json lists no targets"; exit 1; }

say "promtool check metrics on every endpoint"
for entry in "${ENDPOINTS[@]}"; do
  job="${entry%% *}" addr="${entry#* }"
  body="$WORK/metrics-${addr//[^0-9A-Za-z]/_}.txt"
  for _ in $(seq 100); do
    curl -sf --max-time 2 -H 'Accept: text/plain;version=0.0.4' "http://$addr/metrics" -o "$body" && break
    sleep 0.2
  done
  if [ ! -s "$body" ]; then echo "FAIL $job $addr: /metrics did not answer"; failed=1; continue; fi
  if out=$(promtool check metrics <"$body" 2>&1); then
    echo "ok    $job $addr ($(grep -c '^polylith_' "$body") samples)"
  else
    echo "FAIL  $job $addr:"; echo "$out" | sed 's/^/      /'; failed=1
  fi
done

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
PROM="http://127.0.0.1:$PORT"
cp "$RULES" "$WORK/alerts.yml"
cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [alerts.yml]
scrape_configs:
  - job_name: polylith
    file_sd_configs:
      - files: ["$SUBNET_DIR/targets.json"]
        refresh_interval: 5s
EOF
promtool check config "$WORK/prometheus.yml" >/dev/null
say "starting prometheus on $PROM"
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$PORT" --log.level=warn >"$WORK/prometheus.log" 2>&1 &
PROM_PID=$!
for _ in $(seq 100); do curl -sf "$PROM/-/ready" >/dev/null && break; alive "$PROM_PID" || break; sleep 0.1; done
alive "$PROM_PID" && curl -sf "$PROM/-/ready" >/dev/null || { echo "check-dashboards: prometheus did not start"; show_log "$WORK/prometheus.log"; exit 1; }

say "waiting for every target up and a completed round"
if ! $PY wait --prometheus "$PROM" --targets "$SUBNET_DIR/targets.json" --timeout "$TIMEOUT"; then
  show_log "$WORK/subnet.log"; exit 1
fi
alive "$SUBNET_PID" || { echo "check-dashboards: the subnet process died"; show_log "$WORK/subnet.log"; exit 1; }

say "evaluating every dashboard query"
ALLOW=()
[ -f dashboards/allow-empty.json ] && ALLOW=(--allow-empty dashboards/allow-empty.json)
$PY live --prometheus "$PROM" "${ALLOW[@]}" "${DASHBOARDS[@]}" || failed=1
say "evaluating every alert rule"
$PY rules --prometheus "$PROM" || failed=1

for f in "${expect_fail[@]}"; do
  say "expect-fail: $f must be caught"
  out=$($PY live --prometheus "$PROM" "$f" 2>&1) && rc=0 || rc=$?
  echo "$out" | sed 's/^/   (expected) /'
  if [ "$rc" = 0 ]; then
    echo "FAIL expect-fail $f: every query returned data; the check cannot catch a broken dashboard"; failed=1
  elif ! echo "$out" | grep -q '^ok '; then
    echo "FAIL expect-fail $f: no query passed either; the fixture should fail on one panel only"; failed=1
  else
    echo "ok   expect-fail $f was caught"
  fi
done

alive "$SUBNET_PID" || { echo "check-dashboards: the subnet process died during the check"; show_log "$WORK/subnet.log"; failed=1; }
if [ "$failed" = 0 ]; then say "dashboard check passed"; else say "dashboard check FAILED"; fi
exit "$failed"
