#!/usr/bin/env bash
# Offline checks of deploy/docker-compose.yml with deploy/.env.example (no engine needed):
#
#   deploy/check-compose.sh
#
#   1. the file renders (`config -q`) once a Grafana password is set;
#   2. it refuses to render with .env.example as shipped (empty GRAFANA_ADMIN_PASSWORD), so
#      nobody runs Grafana with a password copied from the example;
#   3. every polylith service mounts the metagraph *directory* (a single-file bind mount keeps
#      the inode init-subnet.sh's `mv` replaces), has a `polylith health` healthcheck, and
#      every service has rotated logs;
#   4. ../Dockerfile's dependency layer copies the manifest of every workspace member.
set -euo pipefail
cd "$(dirname "$0")"
compose() { docker-compose --env-file .env.example -f docker-compose.yml "$@"; }
fail() { echo "check-compose: $*" >&2; exit 1; }

GRAFANA_ADMIN_PASSWORD=check-compose compose config -q || fail "the compose file does not render"
if out=$(env -u GRAFANA_ADMIN_PASSWORD docker-compose --env-file .env.example -f docker-compose.yml config -q 2>&1); then
  fail "compose renders with .env.example's empty GRAFANA_ADMIN_PASSWORD; the :? guard must fire"
fi
grep -q GRAFANA_ADMIN_PASSWORD <<<"$out" || fail "the refusal does not name GRAFANA_ADMIN_PASSWORD: $out"

rendered=$(GRAFANA_ADMIN_PASSWORD=check-compose compose --profile gpu config 2>/dev/null \
  || GRAFANA_ADMIN_PASSWORD=check-compose compose config)
python3 - "$rendered" <<'PY'
import sys, yaml
doc = yaml.safe_load(sys.argv[1])
bad = []
for name, svc in doc["services"].items():
    log = svc.get("logging") or {}
    opts = log.get("options") or {}
    if log.get("driver") != "json-file" or "max-size" not in opts or "max-file" not in opts:
        bad.append(f"{name}: no rotated json-file logging")
    if name.startswith(("validator", "miner")):
        vols = [v if isinstance(v, str) else f'{v.get("source")}:{v.get("target")}' for v in svc.get("volumes", [])]
        if not any(v.split(":")[1] == "/etc/polylith/metagraph" for v in vols if ":" in v):
            bad.append(f"{name}: the metagraph directory is not mounted at /etc/polylith/metagraph: {vols}")
        if any(v.split(":")[1].endswith(".toml") for v in vols if ":" in v):
            bad.append(f"{name}: a single file is bind-mounted: {vols}")
        cmd = svc.get("command")
        cmd = " ".join(cmd) if isinstance(cmd, list) else cmd
        if "--metagraph /etc/polylith/metagraph/metagraph.toml" not in cmd:
            bad.append(f"{name}: --metagraph is not the file in the mounted directory")
        test = (svc.get("healthcheck") or {}).get("test") or []
        if "health" not in test or "--url" not in test:
            bad.append(f"{name}: no `polylith health` healthcheck: {test}")
if bad:
    print("\n".join(bad), file=sys.stderr)
    sys.exit(1)
print(f"check-compose: {len(doc['services'])} services: rotated logs; polylith services mount the metagraph directory and have healthchecks")
PY

python3 - <<'PY'
import re, sys, tomllib
members = tomllib.load(open("../Cargo.toml", "rb"))["workspace"]["members"]
docker = open("../Dockerfile").read()
copied = set(re.findall(r"^COPY (\S+)/Cargo.toml ", docker, re.M))
listed = set(re.search(r'WORKSPACE_CRATES="([^"]*)"', docker).group(1).split())
missing = [m for m in members if m not in copied or m not in listed]
if missing:
    sys.exit(f"check-compose: Dockerfile's dependency layer lacks workspace members {missing}")
print(f"check-compose: Dockerfile caches the dependencies of all {len(members)} workspace members")
PY
