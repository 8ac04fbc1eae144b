#!/usr/bin/env python3
"""Generates the Grafana dashboards in dashboards/ (dashboards as code, standard library only).

    scripts/gen_dashboards.py            # rewrite dashboards/{overview,miner,validator}.json
    scripts/gen_dashboards.py --check    # exit 1 if the committed JSON differs from this file

Why a generator: three dashboards share the same histogram/percentile and table patterns, and a
hand-edited 2,000-line JSON drifts. Edit the panel lists below, regenerate, commit both. A panel
edited in Grafana's UI can still be exported and pasted back, but then port the change here.

Every query uses only the metrics of docs/metrics.md; scripts/check-dashboards.sh evaluates each
one against the real daemons.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_VERSION = 39
Q = "polylith_validator_queries_total"


# --------------------------------------------------------------------------- building blocks


class Board:
    """Accumulates panels left to right, top to bottom on Grafana's 24-column grid."""

    def __init__(self, uid: str, title: str, description: str, variables: list[dict]):
        self.uid, self.title, self.description = uid, title, description
        self.variables = [datasource_var()] + variables
        self.panels: list[dict] = []
        self.x = self.y = self.row_h = 0
        self.next_id = 1

    def _place(self, w: int, h: int) -> dict:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def row(self, title: str) -> None:
        if self.x:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        self.panels.append({"id": self._id(), "type": "row", "title": title, "collapsed": False,
                            "gridPos": self._place(24, 1), "panels": []})
        self.x, self.y, self.row_h = 0, self.y + 1, 0

    def text(self, title: str, content: str, w: int = 24, h: int = 5) -> None:
        self.panels.append({"id": self._id(), "type": "text", "title": title, "gridPos": self._place(w, h),
                            "options": {"mode": "markdown", "content": content}})

    def add(self, kind: str, title: str, description: str, targets: list[dict], w: int, h: int,
            unit: str = "short", **extra) -> None:
        panel = {
            "id": self._id(), "type": kind, "title": title, "description": description,
            "datasource": DS, "gridPos": self._place(w, h),
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [dict(t, refId=chr(ord("A") + i), datasource=DS) for i, t in enumerate(targets)],
        }
        for key, value in extra.items():
            if key == "defaults":
                panel["fieldConfig"]["defaults"].update(value)
            elif key == "overrides":
                panel["fieldConfig"]["overrides"] = value
            else:
                panel[key] = value
        self.panels.append(panel)

    def timeseries(self, title, description, targets, w=12, h=8, unit="short", stack=False, log=False,
                   **extra):
        custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                  "spanNulls": True, "stacking": {"mode": "normal" if stack else "none", "group": "A"}}
        if log:
            # CPU miners (GFLOP/s) and GPU miners (hundreds of TFLOP/s) on one linear axis would
            # flatten every CPU line to zero; a log axis keeps both readable.
            custom["scaleDistribution"] = {"type": "log", "log": 10}
        extra.setdefault("defaults", {})["custom"] = custom
        self.add("timeseries", title, description, targets, w, h, unit,
                 options={"legend": {"displayMode": "table", "placement": "bottom", "showLegend": True,
                                     "calcs": ["lastNotNull", "max"]},
                          "tooltip": {"mode": "multi", "sort": "desc"}}, **extra)

    def stat(self, title, description, expr, w=4, h=4, unit="short", legend="", thresholds=None,
             text_mode="auto", **extra):
        defaults = extra.pop("defaults", {})
        if thresholds:
            defaults["thresholds"] = {"mode": "absolute", "steps": thresholds}
            defaults["color"] = {"mode": "thresholds"}
        self.add("stat", title, description, [instant(expr, legend)], w, h, unit, defaults=defaults,
                 options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                          "colorMode": "value", "graphMode": "area", "textMode": text_mode,
                          "justifyMode": "auto", "orientation": "auto"}, **extra)

    def table(self, title, description, columns: list[tuple[str, str, str]], key: str, w=24, h=10,
              sort_by: str | None = None, extra_overrides=None):
        """One instant query per column, merged on `key`: (header, expr, unit)."""
        targets = [{"expr": expr, "format": "table", "instant": True, "range": False, "legendFormat": ""}
                   for _, expr, _ in columns]
        rename = {f"Value #{chr(ord('A') + i)}": header for i, (header, _, _) in enumerate(columns)}
        rename[key] = key.replace("_", " ")
        overrides = [{"matcher": {"id": "byName", "options": header},
                      "properties": [{"id": "unit", "value": unit}]}
                     for header, _, unit in columns]
        overrides += extra_overrides or []
        self.add("table", title, description, targets, w, h, "short", overrides=overrides,
                 options={"showHeader": True, "cellHeight": "sm",
                          "sortBy": [{"displayName": sort_by, "desc": True}] if sort_by else []},
                 transformations=[
                     {"id": "merge", "options": {}},
                     {"id": "organize", "options": {"excludeByName": {"Time": True},
                                                    "indexByName": {key: 0}, "renameByName": rename}},
                 ])

    def to_json(self) -> dict:
        return {
            "uid": self.uid, "title": self.title, "description": self.description,
            "tags": ["polylith"], "editable": True, "graphTooltip": 1, "timezone": "browser",
            "schemaVersion": SCHEMA_VERSION, "version": 1, "refresh": "30s",
            "time": {"from": "now-1h", "to": "now"}, "fiscalYearStartMonth": 0, "liveNow": False,
            "annotations": {"list": [{
                "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
                "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
                "type": "dashboard"}]},
            "links": [{"title": "Polylith dashboards", "type": "dashboards", "tags": ["polylith"],
                       "asDropdown": True, "includeVars": False, "keepTime": True}],
            "templating": {"list": self.variables},
            "panels": self.panels,
        }


def datasource_var() -> dict:
    return {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1,
            "regex": ""}


def query_var(name: str, label: str, metric_selector: str, label_name: str) -> dict:
    q = f"label_values({metric_selector}, {label_name})"
    return {"name": name, "label": label, "type": "query", "datasource": DS, "definition": q,
            "query": {"query": q, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
            "current": {}, "hide": 0, "includeAll": True, "multi": True, "allValue": ".+",
            "options": [], "refresh": 2, "regex": "", "sort": 3}


def series(expr: str, legend: str = "__auto") -> dict:
    return {"expr": expr, "legendFormat": legend, "range": True, "instant": False}


def instant(expr: str, legend: str = "") -> dict:
    return {"expr": expr, "legendFormat": legend, "range": False, "instant": True}


def quantiles(metric: str, by: str, sel: str = "", qs=(0.5, 0.9, 0.99)) -> list[dict]:
    """p50/p90/p99 from a histogram, aggregated across instances (why histograms, not summaries)."""
    by_clause = f"le, {by}" if by else "le"
    legend_suffix = " ".join("{{" + b.strip() + "}}" for b in by.split(",")) if by else ""
    return [series(f"histogram_quantile({q}, sum by ({by_clause}) "
                   f"(rate({metric}_bucket{sel}[$__rate_interval])))",
                   f"p{int(q * 100)} {legend_suffix}".strip()) for q in qs]


def per_miner(outcome_sel: str, validator_sel: str) -> str:
    """Query outcomes per miner over the range, 0 (not a blank cell) for miners that never had it."""
    extra = f",{validator_sel}" if validator_sel else ""
    every = f"{Q}{{{validator_sel}}}" if validator_sel else Q
    return (f"sum by (miner_uid) (increase({Q}{{outcome{outcome_sel}{extra}}}[$__range])) "
            f"or 0 * sum by (miner_uid) (increase({every}[$__range]))")


RED_IF_HIGH = [{"color": "green", "value": None}, {"color": "orange", "value": 0.05}, {"color": "red", "value": 0.2}]
RED_IF_ZERO = [{"color": "red", "value": None}, {"color": "green", "value": 1}]


def miner_table(board: Board, validator_sel: str, title: str, description: str) -> None:
    """The operator's first stop: every miner with what it did and what it earned."""
    vsel = f"{{{validator_sel}}}" if validator_sel else ""
    total = f"sum by (miner_uid) (increase({Q}{vsel}[$__range]))"
    columns = [
        ("Reward share", f"avg by (miner_uid) (polylith_validator_miner_reward_share{vsel})", "percentunit"),
        ("Weight", f"avg by (miner_uid) (polylith_validator_miner_weight{vsel})", "percentunit"),
        ("EMA score", f"avg by (miner_uid) (polylith_validator_miner_score{vsel})", "none"),
        ("Verified", per_miner('="verified"', validator_sel), "none"),
        ("Failed verification", per_miner('="failed"', validator_sel), "none"),
        ("Timeout", per_miner('="timeout"', validator_sel), "none"),
        ("Error", per_miner('="error"', validator_sel), "none"),
        ("Not verified ratio", "(" + per_miner('!="verified"', validator_sel) + f") / {total}", "percentunit"),
        ("Last throughput", f"max by (miner_uid) (polylith_validator_miner_throughput_flops{vsel})", "flops"),
        ("Last LLM rate", f"max by (miner_uid) (polylith_validator_miner_tokens_per_second{vsel})", "short"),
    ]
    color_ratio = {"matcher": {"id": "byName", "options": "Not verified ratio"}, "properties": [
        {"id": "custom.cellOptions", "value": {"type": "color-background"}},
        {"id": "thresholds", "value": {"mode": "absolute", "steps": RED_IF_HIGH}}]}
    color_share = {"matcher": {"id": "byName", "options": "Reward share"}, "properties": [
        {"id": "custom.cellOptions", "value": {"type": "gauge", "mode": "basic"}},
        {"id": "min", "value": 0}, {"id": "max", "value": 1}]}
    board.table(title, description, columns, "miner_uid", h=10, sort_by="Reward share",
                extra_overrides=[color_ratio, color_share])


# --------------------------------------------------------------------------- dashboards


WHY_ZERO = """\
**Why does a miner earn nothing?** Read its row in the table above, left to right:

* **Failed verification > 0**: validators caught wrong results (a lazy, random or replaying miner);
  see *Verification failures by reason*. Any failure zeroes that query's score.
* **Timeout / Error > 0** and few *Verified*: the miner is unreachable, overloaded or too slow for
  the query deadline; check its *Miner* dashboard (queue depth, rejections by reason).
* **Verified > 0 but low EMA score**: it is correct but slower than its peers (see throughput).
* **EMA score > 0 but weight 0**: the validator has not set weights since; check the validator's
  rounds. **Weight > 0 but reward share 0**: validators with the stake majority disagree (Yuma
  clips weights above consensus); compare the per-validator weights on the *Miner* dashboard.
"""


def overview() -> Board:
    b = Board("polylith-overview", "Polylith / Subnet overview",
              "Leaderboard, verification failures, throughput and latency across the whole subnet.", [])
    b.row("Subnet health")
    b.stat("Validators up", "Validator metrics endpoints Prometheus can scrape.",
           'sum(up{job="validator"})', thresholds=RED_IF_ZERO)
    b.stat("Miners up", "Miner metrics endpoints Prometheus can scrape.",
           'sum(up{job="miner"})', thresholds=RED_IF_ZERO)
    b.stat("Rounds completed", "Rounds completed by all validators in the selected time range.",
           "sum(increase(polylith_validator_rounds_total[$__range]))", unit="none")
    b.stat("Since last round", "Time since the most recent round completed on any validator.",
           "time() - max(polylith_validator_last_round_timestamp_seconds)", unit="s",
           thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 300},
                       {"color": "red", "value": 900}])
    b.stat("Queries verified", "Share of all validator queries whose answer verified.",
           f'sum(rate({Q}{{outcome="verified"}}[$__rate_interval])) / sum(rate({Q}[$__rate_interval]))',
           unit="percentunit", thresholds=[{"color": "red", "value": None}, {"color": "orange", "value": 0.5},
                                           {"color": "green", "value": 0.8}])
    b.stat("Peers with weights (min)", "Fewest peers whose weights any validator used in its last "
           "epoch; 0 means that validator ran consensus on its own weights only.",
           "min(polylith_validator_peers_with_weights)", unit="none", thresholds=RED_IF_ZERO)

    b.row("Leaderboard")
    miner_table(b, "", "Miners: what each did and what it earned",
                "Per miner, averaged over validators (reward share, weight, EMA score) or summed "
                "(query outcomes over the selected range). Sorted by reward share.")
    b.text("Reading the leaderboard", WHY_ZERO, w=12, h=9)
    b.add("bargauge", "Reward share", "Yuma incentive share per miner (average over validators).",
          [instant("avg by (miner_uid) (polylith_validator_miner_reward_share)", "uid {{miner_uid}}")],
          12, 9, "percentunit", defaults={"min": 0, "max": 1},
          options={"orientation": "horizontal", "displayMode": "gradient", "showUnfilled": True,
                   "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}})

    b.row("Verification")
    b.timeseries("Verification failures by reason", "Failed verifications per second, by task and reason.",
                 [series("sum by (task, reason) (rate(polylith_validator_verification_failures_total"
                         "[$__rate_interval]))", "{{task}} {{reason}}")], unit="ops", stack=True)
    b.add("bargauge", "Verification failures in range", "Failed verifications in the selected range.",
          [instant("sum by (task, reason) (increase(polylith_validator_verification_failures_total[$__range]))",
                   "{{task}} {{reason}}")], 12, 8, "none",
          options={"orientation": "horizontal", "displayMode": "basic", "showUnfilled": True,
                   "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}})
    b.timeseries("Query outcomes per miner", "Validator queries per second by miner and outcome.",
                 [series(f"sum by (miner_uid, outcome) (rate({Q}[$__rate_interval]))",
                         "uid {{miner_uid}} {{outcome}}")], unit="reqps", w=24)

    b.row("Throughput and latency")
    b.timeseries("GEMM throughput per miner", "Last verified GEMM throughput per miner (best validator view); "
                 "log axis, so CPU (GFLOP/s) and GPU (TFLOP/s) miners both show.",
                 [series("max by (miner_uid) (polylith_validator_miner_throughput_flops)", "uid {{miner_uid}}")],
                 unit="flops", log=True)
    b.timeseries("LLM rate per miner", "Last verified LLM completion rate per miner, tokens/s over the "
                 "whole exchange (best validator view).",
                 [series("max by (miner_uid) (polylith_validator_miner_tokens_per_second)", "uid {{miner_uid}}")],
                 unit="short")
    b.timeseries("LLM tokens verified vs rejected", "Completion tokens the validators checked, per second: "
                 "rejected counts a failed completion's tokens from its first failing one.",
                 [series("sum by (outcome) (rate(polylith_validator_llm_tokens_total[$__rate_interval]))",
                         "{{outcome}}")], unit="short", stack=True)
    b.timeseries("Reward share over time", "Yuma incentive share per miner (average over validators).",
                 [series("avg by (miner_uid) (polylith_validator_miner_reward_share)", "uid {{miner_uid}}")],
                 unit="percentunit", stack=True)
    b.timeseries("Query latency (validator view)", "Request to commitment or first result, percentiles "
                 "over all validators.", quantiles("polylith_validator_query_latency_seconds", "task"), unit="s")
    b.timeseries("Compute time (miner view)", "Compute time per request, percentiles over all miners.",
                 quantiles("polylith_miner_compute_seconds", "task"), unit="s")
    b.timeseries("Work served", "GEMM FLOP committed per second and LLM tokens returned per second, all miners.",
                 [series("sum(rate(polylith_miner_gemm_flop_total[$__rate_interval]))", "GEMM FLOP/s"),
                  series("sum(rate(polylith_miner_tokens_served_total[$__rate_interval]))", "tokens/s")],
                 unit="short")
    b.timeseries("Round duration", "Wall time of a validator round, percentiles over all validators.",
                 quantiles("polylith_validator_round_duration_seconds", ""), unit="s")
    return b


def miner() -> Board:
    inst = 'instance=~"$instance"'
    b = Board("polylith-miner", "Polylith / Miner",
              "One miner as it sees itself (requests, rejections, compute time, queue) and as the "
              "validators see it (score, weight, reward share).",
              [query_var("instance", "Miner endpoint", 'polylith_build_info{component="miner"}', "instance"),
               query_var("miner_uid", "Miner uid (validator view)", "polylith_validator_miner_score", "miner_uid")])
    b.row("This miner")
    b.stat("Up", "1 when Prometheus can scrape the miner's metrics endpoint.",
           f'min(up{{job="miner",{inst}}})', thresholds=RED_IF_ZERO)
    b.stat("Backend", "Compute backend in use.", f"polylith_miner_backend_info{{{inst}}}", legend="{{backend}}",
           text_mode="name")
    b.stat("Version", "Build version.", f'polylith_build_info{{component="miner",{inst}}}', legend="{{version}}", text_mode="name")
    b.stat("Queue depth", "Requests admitted and not finished.", f"sum(polylith_miner_queue_depth{{{inst}}})")
    b.stat("Commitments held", "Commitments waiting to be opened.", f"sum(polylith_miner_commitments{{{inst}}})")
    b.stat("Rejected", "Share of requests rejected at the envelope (signature, stake, replay, size, load).",
           f'sum(rate(polylith_miner_requests_total{{outcome="rejected",{inst}}}[$__rate_interval])) / '
           f"sum(rate(polylith_miner_requests_total{{{inst}}}[$__rate_interval]))",
           unit="percentunit", thresholds=RED_IF_HIGH)
    b.timeseries("Requests by task and outcome", "Requests handled per second.",
                 [series(f"sum by (task, outcome) (rate(polylith_miner_requests_total{{{inst}}}[$__rate_interval]))",
                         "{{task}} {{outcome}}")], unit="reqps")
    b.timeseries("Rejections by reason", "Envelope rejections per second; bad_signature or "
                 "unknown_sender from a validator usually means a stale metagraph.",
                 [series(f"sum by (reason) (rate(polylith_miner_rejections_total{{{inst}}}[$__rate_interval]))",
                         "{{reason}}")], unit="reqps", stack=True)
    b.timeseries("Compute time", "Compute time per request, percentiles.",
                 quantiles("polylith_miner_compute_seconds", "task", f"{{{inst}}}"), unit="s")
    b.timeseries("Work served", "GEMM FLOP committed per second (left axis) and LLM tokens per second "
                 "(right axis): the two differ by many orders of magnitude on a GPU.",
                 [series(f"sum(rate(polylith_miner_gemm_flop_total{{{inst}}}[$__rate_interval]))", "GEMM FLOP/s"),
                  series(f"sum(rate(polylith_miner_tokens_served_total{{{inst}}}[$__rate_interval]))", "tokens/s")],
                 unit="flops",
                 overrides=[{"matcher": {"id": "byName", "options": "tokens/s"},
                             "properties": [{"id": "unit", "value": "short"},
                                            {"id": "custom.axisPlacement", "value": "right"}]}])
    b.timeseries("Queue depth and commitments", "Requests in flight and commitments held.",
                 [series(f"sum(polylith_miner_queue_depth{{{inst}}})", "queue depth"),
                  series(f"sum(polylith_miner_commitments{{{inst}}})", "commitments")], w=24, h=6)

    uid = 'miner_uid=~"$miner_uid"'
    b.row("As the validators see it")
    b.timeseries("Reward share per validator", "Yuma incentive share each validator computed for this miner.",
                 [series(f"polylith_validator_miner_reward_share{{{uid}}}", "uid {{miner_uid}} by {{instance}}")],
                 unit="percentunit", w=8)
    b.timeseries("Weight per validator", "The weight each validator set for this miner (0..1).",
                 [series(f"polylith_validator_miner_weight{{{uid}}}", "uid {{miner_uid}} by {{instance}}")],
                 unit="percentunit", w=8)
    b.timeseries("EMA score per validator", "Each validator's moving-average score of this miner.",
                 [series(f"polylith_validator_miner_score{{{uid}}}", "uid {{miner_uid}} by {{instance}}")],
                 unit="none", w=8)
    b.timeseries("Validator queries by outcome", "How this miner's answers fared: verified, failed, "
                 "timeout or error, per second.",
                 [series(f"sum by (miner_uid, outcome) (rate({Q}{{{uid}}}[$__rate_interval]))",
                         "uid {{miner_uid}} {{outcome}}")], unit="reqps", stack=True)
    b.timeseries("Verified throughput", "Last verified GEMM throughput, per validator (log axis).",
                 [series(f"polylith_validator_miner_throughput_flops{{{uid}}}", "uid {{miner_uid}} by {{instance}}")],
                 unit="flops", log=True)
    b.timeseries("Verified LLM rate", "Last verified LLM completion rate (tokens/s), per validator.",
                 [series(f"polylith_validator_miner_tokens_per_second{{{uid}}}", "uid {{miner_uid}} by {{instance}}")],
                 unit="short")
    return b


def validator() -> Board:
    inst = 'instance=~"$instance"'
    b = Board("polylith-validator", "Polylith / Validator",
              "Rounds, verification, consensus, peers' weights and storage of the selected validators.",
              [query_var("instance", "Validator endpoint", 'polylith_build_info{component="validator"}',
                         "instance")])
    b.row("Rounds")
    b.stat("Up", "1 when Prometheus can scrape the validator's metrics endpoint.",
           f'min(up{{job="validator",{inst}}})', thresholds=RED_IF_ZERO)
    b.stat("Rounds completed", "Rounds completed in the selected range.",
           f"sum(increase(polylith_validator_rounds_total{{{inst}}}[$__range]))", unit="none")
    b.stat("Since last round", "Time since the last completed round (worst selected validator).",
           f"time() - min(polylith_validator_last_round_timestamp_seconds{{{inst}}})", unit="s",
           thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 300},
                       {"color": "red", "value": 900}])
    b.stat("Peers with weights", "Peers whose weight vectors were used in the last epoch (fewest).",
           f"min(polylith_validator_peers_with_weights{{{inst}}})", unit="none", thresholds=RED_IF_ZERO)
    b.stat("Data dir free", "Free space on the data directory's filesystem (lowest).",
           f"min(polylith_validator_data_dir_free_bytes{{{inst}}} / polylith_validator_data_dir_size_bytes{{{inst}}})",
           unit="percentunit", thresholds=[{"color": "red", "value": None}, {"color": "orange", "value": 0.05},
                                           {"color": "green", "value": 0.1}])
    b.stat("Database size", "sled database size on disk.", f"sum(polylith_validator_db_size_bytes{{{inst}}})",
           unit="bytes")
    b.timeseries("Rounds per minute", "Completed rounds per minute, per validator.",
                 [series(f"rate(polylith_validator_rounds_total{{{inst}}}[$__rate_interval]) * 60", "{{instance}}")],
                 unit="none")
    b.timeseries("Round and consensus duration", "Round wall time and Yuma epoch compute time, percentiles.",
                 quantiles("polylith_validator_round_duration_seconds", "", f"{{{inst}}}", (0.5, 0.99))
                 + [series(f"histogram_quantile(0.99, sum by (le) (rate(polylith_validator_consensus_duration_seconds_bucket"
                           f"{{{inst}}}[$__rate_interval])))", "consensus p99")], unit="s")

    b.row("Verification")
    b.timeseries("Queries by outcome", "Queries sent per second, by task and outcome.",
                 [series(f"sum by (task, outcome) (rate({Q}{{{inst}}}[$__rate_interval]))", "{{task}} {{outcome}}")],
                 unit="reqps", stack=True)
    b.timeseries("Verification failures by reason", "Failed verifications per second, by task and reason.",
                 [series(f"sum by (task, reason) (rate(polylith_validator_verification_failures_total{{{inst}}}"
                         f"[$__rate_interval]))", "{{task}} {{reason}}")], unit="ops", stack=True)
    b.timeseries("Query latency", "Request to commitment or first result, percentiles by task.",
                 quantiles("polylith_validator_query_latency_seconds", "task", f"{{{inst}}}"), unit="s", w=24)
    miner_table(b, inst, "Miners as scored by this validator",
                "Per miner: this validator's reward share, weight and EMA score (averaged if several "
                "validators are selected), query outcomes over the selected range.")

    b.row("Consensus and peers")
    b.timeseries("Dividend share", "Yuma dividend share per validator uid, as computed here.",
                 [series(f"avg by (validator_uid) (polylith_validator_dividend_share{{{inst}}})", "uid {{validator_uid}}")],
                 unit="percentunit", w=8)
    b.timeseries("Peers' weights fetched", "Peer weight vectors fetched per second, by peer and outcome.",
                 [series(f"sum by (peer_uid, outcome) (rate(polylith_validator_peer_weights_received_total{{{inst}}}"
                         f"[$__rate_interval]))", "peer {{peer_uid}} {{outcome}}")], unit="reqps", w=8)
    b.timeseries("Peers with weights", "Peers whose weights were used in the last epoch.",
                 [series(f"polylith_validator_peers_with_weights{{{inst}}}", "{{instance}}")], unit="none", w=8)

    b.row("Storage")
    b.timeseries("Data dir free space", "Free bytes on the data directory's filesystem.",
                 [series(f"polylith_validator_data_dir_free_bytes{{{inst}}}", "{{instance}}")], unit="bytes", w=8)
    b.timeseries("Database size", "sled database size on disk.",
                 [series(f"polylith_validator_db_size_bytes{{{inst}}}", "{{instance}}")], unit="bytes", w=8)
    b.timeseries("Database write latency", "sled write + flush latency, percentiles.",
                 quantiles("polylith_validator_db_write_seconds", "", f"{{{inst}}}", (0.5, 0.99)), unit="s", w=8)
    return b


BOARDS = {"overview.json": overview, "miner.json": miner, "validator.json": validator}


def render(board: Board) -> str:
    return json.dumps(board.to_json(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description="Generate dashboards/*.json")
    ap.add_argument("--check", action="store_true", help="fail if the committed files are out of date")
    args = ap.parse_args()
    stale = []
    for name, build in BOARDS.items():
        text, path = render(build()), OUT / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(f"dashboards out of date (run scripts/gen_dashboards.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
