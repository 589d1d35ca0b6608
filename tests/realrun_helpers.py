"""Real-run directories for the tests of sim.realrun, sim.calibrate and benchmarks.validate: the
layout of the shared data's real_vllm_runs (vllm/meta.json, vllm/requests.jsonl.gz)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path


def write_run(folder: Path, meta: dict, requests: list[dict]) -> Path:
    """Write (or rewrite) a run directory in `folder`; returns `folder`."""
    (folder / "vllm").mkdir(parents=True, exist_ok=True)
    (folder / "vllm" / "meta.json").write_text(json.dumps(meta))
    with gzip.open(folder / "vllm" / "requests.jsonl.gz", "wt") as out:
        out.writelines(json.dumps(row) + "\n" for row in requests)
    return folder
