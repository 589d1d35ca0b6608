"""Markdown tables of run documents: one results table per load with the DESIGN metric keys,
per-tenant latency and service share, and goodput capacity. `compare` prints them; reports and
RESULTS.md embed them. Also how points are grouped: by scenario, then load, then series (the
labels that vary, e.g. the policy)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# (section of the run document, key): the columns of a results table, vLLM's names where it has them.
RESULT_COLUMNS = (
    ("summary", "completed"), ("summary", "unfinished"), ("summary", "request_throughput"),
    ("summary", "output_throughput"), ("summary", "request_goodput"), ("goodput", "ttft_attainment"),
    ("goodput", "tpot_attainment"), ("summary", "mean_ttft_ms"), ("summary", "p99_ttft_ms"),
    ("summary", "mean_tpot_ms"), ("summary", "p99_tpot_ms"), ("summary", "p99_itl_ms"),
    ("summary", "p99_e2el_ms"), ("fairness", "jain_index"), ("fairness", "max_service_gap"),
    ("summary", "utilisation"), ("summary", "kv_usage_mean"), ("summary", "preemptions"),
)
PERCENT_KEYS = ("ttft_attainment", "tpot_attainment", "attainment", "utilisation", "kv_usage_mean",
                "service_share", "slo_attainment", "prefix_cache_hit_rate")
GROUP_LABELS = ("scenario", "load")  # sections of a report, not parts of a series' name
BARE_LABELS = ("policy", "placement")  # shown as their value alone in a series' name

Rows = list[tuple[str, dict]]  # (series name, run document)


def group(points: Sequence[Mapping[str, Any]], docs: Mapping[str, dict]) -> dict[str, dict[Any, Rows]]:
    """{scenario: {load: [(series name, doc), ...]}} over the manifest points that have documents,
    in manifest order. Points without a scenario or load label group under None."""
    names = series_names([p["labels"] for p in points])
    out: dict[str, dict[Any, Rows]] = {}
    for point, name in zip(points, names):
        doc = docs.get(point["key"])
        if doc is not None:
            labels = point["labels"]
            out.setdefault(labels.get("scenario"), {}).setdefault(labels.get("load"), []).append((name, doc))
    return out


def series_names(labels: Sequence[Mapping[str, Any]]) -> list[str]:
    """A name per point from the labels that vary among the points, scenario and load left out."""
    keys = list(dict.fromkeys(k for lab in labels for k in lab if k not in GROUP_LABELS))
    varying = [k for k in keys if len({repr(lab.get(k)) for lab in labels}) > 1]
    if not varying:
        varying = [k for k in keys if k == "policy"]
    names = []
    for lab in labels:
        parts = [str(lab.get(k)) if k in BARE_LABELS else f"{k}={lab.get(k)}" for k in varying]
        names.append(" / ".join(parts) or "run")
    return names


def results_table(rows: Rows) -> str:
    header = ["series"] + [key for _, key in RESULT_COLUMNS]
    body = [[name] + [fmt(doc.get(section, {}).get(key), key) for section, key in RESULT_COLUMNS]
            for name, doc in rows]
    return md_table(header, body)


def tenant_tables(rows: Rows) -> str:
    """Per tenant, a column per series: p99 TTFT with SLO attainment, and service share."""
    tenants = list(dict.fromkeys(t for _, doc in rows for t in doc.get("tenants", {})))
    header = ["tenant"] + [name for name, _ in rows]
    ttft = [[t] + [_ttft_cell(doc, t) for _, doc in rows] for t in tenants]
    share = [[t] + [fmt(doc["tenants"].get(t, {}).get("service_share"), "service_share") for _, doc in rows]
             for t in tenants]
    return ("p99 TTFT in ms of the tenant's finished requests (in brackets: the share of all it submitted "
            "that met both its SLOs):\n\n" + md_table(header, ttft)
            + "\n\nService share (w_p x prompt + w_q x output tokens):\n\n" + md_table(header, share))


def _ttft_cell(doc: Mapping[str, Any], tenant: str) -> str:
    row = doc.get("tenants", {}).get(tenant)
    if not row:
        return "-"
    met = doc.get("goodput", {}).get("tenants", {}).get(tenant, {}).get("attainment")
    return f"{fmt(row.get('p99_ttft_ms'), 'p99_ttft_ms')} ({fmt(met, 'attainment')})"


def capacity_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """From capacity search results by series name."""
    header = ["series", "capacity (load x)", "offered req/s", "ttft_attainment", "tpot_attainment", "probes", "note"]
    body = []
    for name, r in results.items():
        best = r.get("at_capacity") or {}
        body.append([name, fmt(r.get("capacity"), "load"), fmt(best.get("offered_request_rate"), "rate"),
                     fmt(best.get("ttft_attainment"), "ttft_attainment"),
                     fmt(best.get("tpot_attainment"), "tpot_attainment"), str(len(r.get("probes", []))),
                     r.get("note") or ""])
    return md_table(header, body)


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: Any, key: str = "") -> str:
    """A table cell: percentages for fractions, thousands separators, fewer digits as values grow."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if key in PERCENT_KEYS:
        return f"{100 * value:.1f}%"
    if key == "jain_index":
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    magnitude = abs(value)
    digits = 0 if magnitude >= 100 else 1 if magnitude >= 10 else 2 if magnitude >= 0.1 or magnitude == 0 else 3
    return f"{value:,.{digits}f}"
