#!/usr/bin/env python3
"""Checks Polylith's dashboards and alert rules (Python 3.9+ standard library only).

Subcommands (scripts/check-dashboards.sh drives them):

  static  FILE...   dashboards against dashboards/schema.json (+ unique panel ids, grid bounds,
                    unique refIds, defined variables); every `polylith_*` name in dashboards and
                    rule files must be a metric of docs/metrics.md (histograms: _bucket/_sum/_count)
  wait    --prometheus URL --targets FILE   until every file_sd target is up, a round completed
                    (sum(polylith_validator_rounds_total) > 0) and a few more scrapes happened
  live    --prometheus URL FILE...   evaluates every panel target (and every label_values()
                    variable query) through /api/v1/query; one line per target: ok, empty, error
  rules   --prometheus URL   every loaded rule has health "ok"

Exit status: 0 all good, 1 a check failed, 2 bad usage or Prometheus unreachable.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Grafana's built-in interval variables, chosen for a 1 s scrape interval: $__rate_interval must
# cover at least 4 scrapes (Grafana's rule: max(4 x scrape, interval + scrape)).
BUILTINS = {
    "__rate_interval": "30s", "__interval": "15s", "__interval_ms": "15000",
    "__range": "5m", "__range_s": "300", "__range_ms": "300000",
}
VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?\}|\$([A-Za-z_][A-Za-z0-9_]*)|\[\[([A-Za-z_][A-Za-z0-9_]*)\]\]")
METRIC_RE = re.compile(r"\bpolylith_[a-z0-9_]+")


# --------------------------------------------------------------------------- JSON Schema subset


class SchemaError(Exception):
    """A schema keyword this validator does not implement (fail loudly, never skip)."""


SUPPORTED = {"$schema", "$id", "$defs", "title", "description", "type", "required", "properties",
             "additionalProperties", "items", "minItems", "contains", "minimum", "maximum", "minLength",
             "pattern", "enum", "const", "$ref", "allOf", "anyOf", "not", "if", "then", "else"}
TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def type_ok(value, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, TYPES[name])


def validate(value, schema: dict, root: dict, path: str = "$") -> list[str]:
    """Errors of `value` against `schema` (the JSON Schema keywords listed in SUPPORTED)."""
    unknown = set(schema) - SUPPORTED
    if unknown:
        raise SchemaError(f"unsupported schema keywords {sorted(unknown)}")
    errs: list[str] = []
    if "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            raise SchemaError(f"only local $ref supported: {ref}")
        target = root
        for part in ref[2:].split("/"):
            target = target[part]
        errs += validate(value, target, root, path)
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(type_ok(value, n) for n in names):
            return errs + [f"{path}: expected {'/'.join(names)}, got {type(value).__name__}"]
    if "const" in schema and value != schema["const"]:
        errs.append(f"{path}: must be {json.dumps(schema['const'])}, got {json.dumps(value)}")
    if "enum" in schema and value not in schema["enum"]:
        errs.append(f"{path}: {json.dumps(value)} not one of {schema['enum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errs.append(f"{path}: shorter than {schema['minLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errs.append(f"{path}: {value!r} does not match {schema['pattern']!r}")
    if type_ok(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            errs.append(f"{path}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errs.append(f"{path}: {value} > maximum {schema['maximum']}")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errs.append(f"{path}: missing required {key!r}")
        props = schema.get("properties", {})
        for key, sub in props.items():
            if key in value:
                errs += validate(value[key], sub, root, f"{path}.{key}")
        extra = schema.get("additionalProperties", True)
        for key in value:
            if key not in props:
                if extra is False:
                    errs.append(f"{path}: unexpected property {key!r}")
                elif isinstance(extra, dict):
                    errs += validate(value[key], extra, root, f"{path}.{key}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errs.append(f"{path}: fewer than {schema['minItems']} items")
        if "items" in schema:
            for i, item in enumerate(value):
                errs += validate(item, schema["items"], root, f"{path}[{i}]")
        if "contains" in schema and not any(not validate(v, schema["contains"], root) for v in value):
            errs.append(f"{path}: no item matches {json.dumps(schema['contains'])[:120]}")
    for sub in schema.get("allOf", []):
        errs += validate(value, sub, root, path)
    if "anyOf" in schema and all(validate(value, s, root, path) for s in schema["anyOf"]):
        errs.append(f"{path}: matches none of anyOf")
    if "not" in schema and not validate(value, schema["not"], root, path):
        errs.append(f"{path}: must not match {json.dumps(schema['not'])[:120]}")
    if "if" in schema:
        branch = "then" if not validate(value, schema["if"], root, path) else "else"
        if branch in schema:
            errs += validate(value, schema[branch], root, path)
    return errs


# --------------------------------------------------------------------------- dashboards


def walk_panels(panels: list[dict]):
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels", []))


def dashboard_targets(dash: dict):
    """(panel, target) for every query-bearing target, nested rows included."""
    for p in walk_panels(dash.get("panels", [])):
        for t in p.get("targets", []) or []:
            if isinstance(t, dict) and "expr" in t:
                yield p, t


def semantic_errors(dash: dict) -> list[str]:
    """What JSON Schema cannot say: unique ids, grid bounds, unique refIds, defined variables."""
    errs, ids = [], set()
    defined = {v.get("name") for v in dash.get("templating", {}).get("list", [])} | set(BUILTINS)
    for p in walk_panels(dash.get("panels", [])):
        pid, where = p.get("id"), f"panel {p.get('id')} {p.get('title')!r}"
        if pid in ids:
            errs.append(f"{where}: duplicate panel id")
        ids.add(pid)
        g = p.get("gridPos", {})
        if isinstance(g.get("x"), int) and isinstance(g.get("w"), int) and g["x"] + g["w"] > 24:
            errs.append(f"{where}: gridPos x+w = {g['x'] + g['w']} > 24")
        refs = [t.get("refId") for t in p.get("targets", []) or []]
        if len(refs) != len(set(refs)):
            errs.append(f"{where}: duplicate refId in {refs}")
        for t in p.get("targets", []) or []:
            for name in variables_in(str(t.get("expr", ""))):
                if name not in defined:
                    errs.append(f"{where} {t.get('refId')}: undefined variable ${name}")
    return errs


def variables_in(expr: str) -> list[str]:
    return [a or b or c for a, b, c in VAR_RE.findall(expr)]


def documented_metrics(doc: Path) -> set[str]:
    """Metric names from the table of docs/metrics.md, with a histogram's series suffixes."""
    names = set()
    for line in doc.read_text().splitlines():
        m = re.match(r"\|\s*`(polylith_[a-z0-9_]+)`\s*\|\s*([a-z]+)", line)
        if m:
            names.add(m.group(1))
            if m.group(2) == "histogram":
                names |= {m.group(1) + s for s in ("_bucket", "_sum", "_count")}
    if not names:
        raise SystemExit(f"no metrics found in {doc}")
    return names


def exprs_of_file(path: Path) -> list[tuple[str, str]]:
    """(where, text) pairs whose polylith_* tokens must be documented metrics."""
    if path.suffix == ".json":
        dash = json.loads(path.read_text())
        out = [(f"panel {p.get('id')} {p.get('title')!r} {t.get('refId')}", str(t["expr"]))
               for p, t in dashboard_targets(dash)]
        for v in dash.get("templating", {}).get("list", []):
            q = v.get("query")
            q = q.get("query", "") if isinstance(q, dict) else str(q or "")
            out.append((f"variable ${v.get('name')}", q))
        return out
    # Rule files: every line is scanned (names can only appear in expressions or annotations).
    return [(f"line {i}", line) for i, line in enumerate(path.read_text().splitlines(), 1)
            if not line.lstrip().startswith("#")]


def cmd_static(args) -> int:
    schema = json.loads(Path(args.schema).read_text())
    known = documented_metrics(Path(args.metrics_doc))
    failed = 0
    for f in args.files:
        path = Path(f)
        errs = []
        if path.suffix == ".json":
            try:
                dash = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                print(f"FAIL {f}: not JSON: {e}")
                failed += 1
                continue
            errs += [f"schema: {e}" for e in validate(dash, schema, schema)]
            errs += semantic_errors(dash)
        for where, text in exprs_of_file(path):
            for name in sorted(set(METRIC_RE.findall(text))):
                if name not in known:
                    errs.append(f"{where}: {name} is not in {args.metrics_doc}")
        for e in errs:
            print(f"FAIL {f}: {e}")
        if not errs:
            print(f"ok   {f}")
        failed += bool(errs)
    return 1 if failed else 0


# --------------------------------------------------------------------------- Prometheus API


def api(base: str, path: str, params: dict | None = None, timeout: float = 10) -> dict:
    url = base.rstrip("/") + path + ("?" + urllib.parse.urlencode(params, doseq=True) if params else "")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:  # 400/422 carry a JSON error body (parse errors)
        try:
            return json.loads(e.read())
        except (ValueError, OSError):
            return {"status": "error", "errorType": f"http {e.code}", "error": str(e)}


def substitute(expr: str, variables: dict[str, dict]) -> str:
    """Grafana variables → values Prometheus accepts; multi-value/All vars become regex `.+`."""
    def matcher_var(m: re.Match) -> str:
        label, op, name = m.group(1), m.group(2), m.group(3) or m.group(4)
        if name in variables and variables[name].get("type") in ("query", "custom"):
            return f'{label}{"!~" if op in ("!=", "!~") else "=~"}".+"'
        return m.group(0)

    expr = re.sub(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|=|!=)\s*"\$(?:\{([A-Za-z_]\w*)\}|([A-Za-z_]\w*))"',
                  matcher_var, expr)

    def value(m: re.Match) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name in BUILTINS:
            return BUILTINS[name]
        var = variables.get(name)
        if var is None:
            raise KeyError(f"undefined variable ${name}")
        cur = (var.get("current") or {}).get("value")
        if var.get("type") == "constant" or cur not in (None, "", [], "$__all"):
            return str(var.get("query") if var.get("type") == "constant" else cur)
        opts = var.get("options") or []
        if opts:
            return str(opts[0].get("value"))
        raise KeyError(f"variable ${name} used outside a label matcher has no value")

    return VAR_RE.sub(value, expr)


def describe(result: dict) -> tuple[str, str]:
    data = result.get("data", {})
    rows = data.get("result", [])
    if data.get("resultType") == "scalar":
        rows = [{"value": rows}]
    if not rows:
        return "empty", "no series"
    vals = [r.get("value", [0, "nan"])[1] for r in rows]
    nan = sum(1 for v in vals if v in ("NaN", "nan"))
    sample = ", ".join(v if len(v) < 12 else f"{float(v):.4g}" for v in vals[:3])
    note = f" ({nan} NaN: no observations in the window)" if nan else ""
    return "ok", f"{len(rows)} series [{sample}{', ...' if len(rows) > 3 else ''}]{note}"


def cmd_live(args) -> int:
    allow = json.loads(Path(args.allow_empty).read_text()) if args.allow_empty else {}
    allow = {k: v for k, v in allow.items() if not k.startswith("_")}
    used_allow, failures, total = set(), 0, 0
    for f in args.files:
        dash = json.loads(Path(f).read_text())
        variables = {v["name"]: v for v in dash.get("templating", {}).get("list", []) if "name" in v}
        name = Path(f).name
        for v in variables.values():
            q = v.get("query")
            q = q.get("query", "") if isinstance(q, dict) else str(q or "")
            m = re.fullmatch(r"\s*label_values\((.*),\s*([A-Za-z_]\w*)\s*\)\s*", q)
            if v.get("type") != "query" or not m:
                continue
            total += 1
            res = api(args.prometheus, f"/api/v1/label/{m.group(2)}/values", {"match[]": m.group(1)})
            ok = res.get("status") == "success" and res.get("data")
            status = "ok" if ok else ("error" if res.get("status") != "success" else "empty")
            detail = (f"{len(res['data'])} values {res['data'][:4]}" if ok else res.get("error", "no values"))
            print(f"{status:<6} {name:<16} variable ${v['name']}: {detail}")
            failures += not ok
        for panel, target in dashboard_targets(dash):
            total += 1
            key = f"{dash.get('uid')}/{panel.get('title')}/{target.get('refId')}"
            label = f"{name:<16} #{panel.get('id'):<3} {panel.get('title')!r} {target.get('refId')}"
            try:
                expr = substitute(str(target["expr"]), variables)
            except KeyError as e:
                print(f"error  {label}: {e.args[0]}")
                failures += 1
                continue
            res = api(args.prometheus, "/api/v1/query", {"query": expr})
            if res.get("status") != "success":
                print(f"error  {label}: {res.get('errorType')}: {res.get('error')}\n         query: {expr}")
                failures += 1
                continue
            status, detail = describe(res)
            if status == "empty" and key in allow:
                used_allow.add(key)
                print(f"empty  {label}: allowed ({allow[key]})")
                continue
            print(f"{status:<6} {label}: {detail}")
            if status != "ok":
                print(f"         query: {expr}")
                failures += 1
    stale = set(allow) - used_allow - {k for f in args.files for k in keys_of(f)}
    for key in sorted(stale):
        print(f"error  allow-empty entry {key!r} matches no target (remove it)")
        failures += 1
    print(f"{total - failures}/{total} queries ok")
    return 1 if failures else 0


def keys_of(f: str) -> set[str]:
    dash = json.loads(Path(f).read_text())
    return {f"{dash.get('uid')}/{p.get('title')}/{t.get('refId')}" for p, t in dashboard_targets(dash)}


def cmd_wait(args) -> int:
    """Every file_sd target up, one completed round, then `--scrapes` more scrape intervals."""
    groups = json.loads(Path(args.targets).read_text())
    expected = {(g.get("labels", {}).get("job"), t) for g in groups for t in g.get("targets", [])}
    deadline = time.monotonic() + args.timeout
    state = "targets"
    while time.monotonic() < deadline:
        try:
            if state == "targets":
                res = api(args.prometheus, "/api/v1/targets", {"state": "active"}, timeout=2)
                active = res.get("data", {}).get("activeTargets", [])
                up = {(t["labels"].get("job"), t["labels"].get("instance")) for t in active if t.get("health") == "up"}
                if expected <= up:
                    print(f"wait: all {len(expected)} targets up")
                    state = "round"
            if state == "round":
                res = api(args.prometheus, "/api/v1/query", {"query": "sum(polylith_validator_rounds_total)"}, timeout=2)
                rows = res.get("data", {}).get("result", [])
                if rows and float(rows[0]["value"][1]) > 0:
                    print(f"wait: rounds completed: {rows[0]['value'][1]}")
                    time.sleep(args.scrapes * args.scrape_interval)
                    return 0
        except (OSError, ValueError, KeyError) as e:
            print(f"wait: {e}", file=sys.stderr)
        time.sleep(0.5)
    if state == "targets":
        res = api(args.prometheus, "/api/v1/targets", {"state": "active"}, timeout=2)
        for t in res.get("data", {}).get("activeTargets", []):
            print(f"wait: target {t['labels'].get('job')} {t.get('scrapeUrl')}: {t.get('health')} {t.get('lastError')}")
        print(f"wait: timed out after {args.timeout}s waiting for {len(expected)} targets to be up")
    else:
        print(f"wait: timed out after {args.timeout}s waiting for polylith_validator_rounds_total > 0")
    return 1


def cmd_rules(args) -> int:
    res = api(args.prometheus, "/api/v1/rules")
    groups = res.get("data", {}).get("groups", [])
    rules = [r for g in groups for r in g.get("rules", [])]
    bad = [r for r in rules if r.get("health") not in ("ok", "unknown")]
    for r in rules:
        print(f"{'ok' if r not in bad else 'error':<6} rule {r.get('name')}: {r.get('health')} {r.get('lastError', '')}")
    if not rules:
        print("error  no rules loaded")
        return 1
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("static")
    s.add_argument("--schema", default=str(ROOT / "dashboards/schema.json"))
    s.add_argument("--metrics-doc", default=str(ROOT / "docs/metrics.md"))
    s.add_argument("files", nargs="+")
    w = sub.add_parser("wait")
    w.add_argument("--prometheus", required=True)
    w.add_argument("--targets", required=True)
    w.add_argument("--timeout", type=float, default=180)
    w.add_argument("--scrapes", type=int, default=3)
    w.add_argument("--scrape-interval", type=float, default=1.0)
    lv = sub.add_parser("live")
    lv.add_argument("--prometheus", required=True)
    lv.add_argument("--allow-empty", help="JSON {\"uid/panel title/refId\": \"why it may be empty\"}")
    lv.add_argument("files", nargs="+")
    r = sub.add_parser("rules")
    r.add_argument("--prometheus", required=True)
    args = ap.parse_args()
    try:
        return {"static": cmd_static, "wait": cmd_wait, "live": cmd_live, "rules": cmd_rules}[args.cmd](args)
    except SchemaError as e:
        print(f"schema: {e}", file=sys.stderr)
        return 2
    except urllib.error.URLError as e:
        print(f"prometheus unreachable: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
