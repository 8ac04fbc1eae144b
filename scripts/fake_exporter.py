#!/usr/bin/env python3
"""Development stand-in for `polylith local --serve --data-dir DIR` (metrics only).

Serves Prometheus text (format 0.0.4) at GET /metrics for 2 validators and 6 miners on
127.0.0.1 (ephemeral ports), with exactly the names and labels of docs/metrics.md, values that
move every second, and writes DIR/targets.json in Prometheus file_sd format (job=miner or
job=validator), as the real command does. It runs until interrupted.

It is a development aid for the dashboards and alerts; CI runs the dashboard check against
the real daemons (scripts/check-dashboards.sh without --fake).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MINERS = {2: "honest", 3: "honest", 4: "slow", 5: "lazy", 6: "random", 7: "replay"}
VALIDATORS = (0, 1)
FAIL_REASON = {"lazy": "merkle_path_invalid", "random": "wrong_product", "replay": "stale_commitment"}


class Family:
    """One metric family: name, type, help, and its series keyed by label tuples."""

    def __init__(self, name: str, kind: str, help_text: str):
        self.name, self.kind, self.help = name, kind, help_text
        self.series: dict[tuple, object] = {}

    def set(self, value: float, **labels: str) -> None:
        self.series[tuple(sorted(labels.items()))] = value

    def inc(self, value: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        self.series[key] = self.series.get(key, 0.0) + value

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        h = self.series.setdefault(key, {"buckets": [0] * len(BUCKETS), "sum": 0.0, "count": 0})
        for i, le in enumerate(BUCKETS):
            if value <= le:
                h["buckets"][i] += 1
        h["sum"] += value
        h["count"] += 1

    def render(self) -> str:
        if not self.series:
            return ""
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        for key, v in sorted(self.series.items()):
            if self.kind == "histogram":
                for i, le in enumerate(BUCKETS):
                    out.append(f"{self.name}_bucket{fmt(key + (('le', repr(le)),))} {v['buckets'][i]}")
                out.append(f"{self.name}_bucket{fmt(key + (('le', '+Inf'),))} {v['count']}")
                out.append(f"{self.name}_sum{fmt(key)} {v['sum']}")
                out.append(f"{self.name}_count{fmt(key)} {v['count']}")
            else:
                out.append(f"{self.name}{fmt(key)} {v}")
        return "\n".join(out) + "\n"


def fmt(key: tuple) -> str:
    if not key:
        return ""
    return "{" + ",".join(f'{k}="{v}"' for k, v in key) + "}"


class Daemon:
    """Metrics of one stand-in daemon, advanced by `tick()`."""

    def __init__(self, role: str, uid: int):
        self.role, self.uid, self.lock = role, uid, threading.Lock()
        self.fams: dict[str, Family] = {}
        self.fam("polylith_build_info", "gauge", "Build identity.").set(1, component=role, version="0.1.0")
        if role == "miner":
            self.kind = MINERS[uid]
            self.fam("polylith_miner_backend_info", "gauge", "Backend in use.").set(1, backend="cpu")
            for outcome in ("ok", "rejected", "error"):
                for task in ("gemm", "llm"):
                    self.fam("polylith_miner_requests_total", "counter", "Requests handled.").inc(0, task=task, outcome=outcome)
            self.fam("polylith_miner_rejections_total", "counter", "Envelope rejections.").inc(0, reason="stale_timestamp")
        else:
            self.rounds = 0

    def fam(self, name: str, kind: str, help_text: str) -> Family:
        return self.fams.setdefault(name, Family(name, kind, help_text))

    def tick(self, now: float) -> None:
        with self.lock:
            (self.tick_miner if self.role == "miner" else self.tick_validator)(now)

    def tick_miner(self, now: float) -> None:
        slow = 4.0 if self.kind == "slow" else 1.0
        for task in ("gemm", "llm"):
            self.fam("polylith_miner_requests_total", "counter", "").inc(2, task=task, outcome="ok")
            self.fam("polylith_miner_compute_seconds", "histogram", "Compute time per request.").observe(
                random.uniform(0.01, 0.2) * slow, task=task)
        if random.random() < 0.2:
            self.fam("polylith_miner_requests_total", "counter", "").inc(1, task="gemm", outcome="rejected")
            self.fam("polylith_miner_rejections_total", "counter", "").inc(1, reason="stale_timestamp")
        self.fam("polylith_miner_queue_depth", "gauge", "Requests admitted and not finished.").set(random.randint(0, 3))
        self.fam("polylith_miner_tokens_served_total", "counter", "LLM tokens returned.").inc(32)
        self.fam("polylith_miner_gemm_flop_total", "counter", "2nkm of every committed product.").inc(2 * 512**3)
        self.fam("polylith_miner_commitments", "gauge", "Commitments held for opening.").set(random.randint(0, 8))

    def tick_validator(self, now: float) -> None:
        self.rounds += 1
        f = self.fam
        f("polylith_validator_rounds_total", "counter", "Completed rounds.").inc(1)
        f("polylith_validator_round_duration_seconds", "histogram", "Wall time of a round.").observe(random.uniform(0.3, 0.9))
        f("polylith_validator_last_round_timestamp_seconds", "gauge", "Unix time the last round completed.").set(round(now, 3))
        shares = {}
        for uid, kind in MINERS.items():
            for task in ("gemm", "llm"):
                if kind in FAIL_REASON:
                    outcome = "failed"
                    f("polylith_validator_verification_failures_total", "counter", "Failed verifications by reason.").inc(
                        1, task=task, reason=FAIL_REASON[kind])
                else:
                    outcome = "verified"
                f("polylith_validator_queries_total", "counter", "Queries sent.").inc(1, miner_uid=str(uid), task=task, outcome=outcome)
                f("polylith_validator_query_latency_seconds", "histogram", "Request to commitment or first result.").observe(
                    random.uniform(0.02, 0.3) * (5 if kind == "slow" else 1), task=task)
            score = {"honest": 0.9, "slow": 0.3}.get(kind, 0.0)
            shares[uid] = score
            f("polylith_validator_miner_score", "gauge", "EMA score.").set(score, miner_uid=str(uid))
            f("polylith_validator_miner_throughput_flops", "gauge", "Last verified GEMM throughput.").set(
                score * 1e10, miner_uid=str(uid))
        total = sum(shares.values()) or 1.0
        for uid, s in shares.items():
            f("polylith_validator_miner_weight", "gauge", "This validator's weight for the miner.").set(s / total, miner_uid=str(uid))
            f("polylith_validator_miner_reward_share", "gauge", "Yuma incentive share.").set(s / total, miner_uid=str(uid))
        for v in VALIDATORS:
            f("polylith_validator_dividend_share", "gauge", "Yuma dividend share.").set(0.5, validator_uid=str(v))
            if v != self.uid:
                f("polylith_validator_peer_weights_received_total", "counter", "Peers' weight vectors fetched.").inc(
                    1, peer_uid=str(v), outcome="ok")
        f("polylith_validator_consensus_duration_seconds", "histogram", "Yuma epoch compute time.").observe(0.002)
        f("polylith_validator_peers_with_weights", "gauge", "Peers whose weights were used in the last epoch.").set(len(VALIDATORS) - 1)
        f("polylith_validator_db_size_bytes", "gauge", "Sled size on disk.").set(1_000_000 + 4096 * self.rounds)
        f("polylith_validator_db_write_seconds", "histogram", "Sled write and flush latency.").observe(random.uniform(0.001, 0.02))
        st = os.statvfs("/")
        f("polylith_validator_data_dir_free_bytes", "gauge", "Free space on the data directory's filesystem.").set(st.f_bavail * st.f_frsize)
        f("polylith_validator_data_dir_size_bytes", "gauge", "Total size of that filesystem.").set(st.f_blocks * st.f_frsize)

    def render(self) -> bytes:
        with self.lock:
            return "".join(fam.render() for fam in self.fams.values()).encode()


def serve(daemon: Daemon) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server API)
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = daemon.render()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True, help="where targets.json is written")
    ap.add_argument("--serve", action="store_true", help="accepted for symmetry with `polylith local`")
    args = ap.parse_args()
    os.makedirs(args.data_dir, exist_ok=True)

    daemons = [Daemon("validator", v) for v in VALIDATORS] + [Daemon("miner", m) for m in MINERS]
    servers = [serve(d) for d in daemons]
    groups: dict[str, list[str]] = {"miner": [], "validator": []}
    for d, s in zip(daemons, servers):
        groups[d.role].append(f"127.0.0.1:{s.server_address[1]}")
    sd = [{"targets": t, "labels": {"job": job}} for job, t in groups.items()]
    tmp = os.path.join(args.data_dir, "targets.json.tmp")
    with open(tmp, "w") as fh:
        json.dump(sd, fh, indent=2)
    os.replace(tmp, os.path.join(args.data_dir, "targets.json"))
    print(f"fake_exporter: {len(daemons)} endpoints, targets in {args.data_dir}/targets.json", flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.is_set():
        now = time.time()
        for d in daemons:
            d.tick(now)
        stop.wait(1.0)
    for s in servers:
        s.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
