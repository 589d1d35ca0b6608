"""The on-disk results of a benchmark command.

    OUT/points.json        the manifest: the command, and per point its labels, key, status, error
    OUT/results.csv        one row per point: labels, status, seed, the DESIGN metric keys
    CACHE/<key>.json       one run document per config (CACHE defaults to OUT/runs)
    CACHE/<key>.toml       its config: `fairbatch simulate --config CACHE/<key>.toml` replays it

Run documents are written atomically as each point finishes, so an interrupted command keeps
what it finished; only successful runs are cached, so a failed point is retried on the next run.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable

from scheduler.errors import ConfigError

from . import tomlwrite
from .points import FORMAT, Point

MANIFEST = "points.json"
CSV_NAME = "results.csv"
# Columns after the labels, from the run document: summary keys first (vLLM's names), then these.
EXTRA_COLUMNS = (("goodput", "ttft_attainment"), ("goodput", "tpot_attainment"), ("goodput", "attainment"),
                 ("goodput", "offered_request_rate"), ("fairness", "jain_index"), ("fairness", "max_service_gap"))


@dataclasses.dataclass(slots=True)
class Outcome:
    point: Point
    status: str  # "ok" (run now), "cached" (found on disk), "failed", "pending" (not run: interrupted)
    doc: dict | None = None
    error: str | None = None


def dump_json(doc: Any) -> str:
    """The one way documents are written: same document, same bytes."""
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # a reader (or a resumed run) never sees half a file


class Store:
    def __init__(self, out: str | Path, cache: str | Path | None = None) -> None:
        self.out = Path(out)
        self.cache = Path(cache) if cache is not None else self.out / "runs"

    def cached(self, key: str) -> dict | None:
        """The run document of `key` if a complete one of the current format is on disk."""
        try:
            doc = json.loads((self.cache / f"{key}.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return doc if doc.get("format") == FORMAT and doc.get("key") == key else None

    def save(self, key: str, doc: dict) -> None:
        write_atomic(self.cache / f"{key}.toml", tomlwrite.dumps(doc["config"]))
        write_atomic(self.cache / f"{key}.json", dump_json(doc))

    def write_manifest(self, command: str, outcomes: list[Outcome], **extra: Any) -> None:
        points = [{"key": o.point.key, "labels": o.point.labels, "status": _final(o.status), "error": o.error}
                  for o in outcomes]
        cache = os.path.relpath(self.cache, self.out)
        write_atomic(self.out / MANIFEST, dump_json({"command": command, "cache": cache, **extra, "points": points}))

    def write_csv(self, outcomes: list[Outcome]) -> None:
        write_atomic(self.out / CSV_NAME, csv_text(outcomes))


def _final(status: str) -> str:
    return "ok" if status == "cached" else status


def csv_text(outcomes: list[Outcome]) -> str:
    """One row per point; failed and pending points keep their labels and error."""
    labels = list(dict.fromkeys(k for o in outcomes for k in o.point.labels))
    summary = list(dict.fromkeys(k for o in outcomes if o.doc for k, v in o.doc["summary"].items()
                                 if not isinstance(v, dict)))
    seed = [] if "seed" in labels else ["seed"]  # a seed axis is a label already
    header = labels + ["key", "status", "error"] + seed + summary + [name for _, name in EXTRA_COLUMNS]
    rows = [header]
    for o in outcomes:
        doc = o.doc or {}
        row = [o.point.labels.get(k, "") for k in labels] + [o.point.key, _final(o.status), o.error or ""]
        row += [o.point.table.get("seed", 0)] if seed else []
        row += [doc.get("summary", {}).get(k, "") for k in summary]
        row += [doc.get(section, {}).get(name, "") for section, name in EXTRA_COLUMNS]
        rows.append(["" if v is None else v for v in row])
    return _csv(rows)


def _csv(rows: Iterable[list]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def load_results(out: str | Path) -> tuple[dict, dict[str, dict]]:
    """A command's manifest and the run documents of its finished points, by key."""
    out = Path(out)
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{out}: no {MANIFEST} here; give a directory written by fairbatch bench") from None
    store = Store(out, out / manifest["cache"])
    docs = {p["key"]: store.cached(p["key"]) for p in manifest["points"] if p["status"] == "ok"}
    return manifest, {k: v for k, v in docs.items() if v is not None}
