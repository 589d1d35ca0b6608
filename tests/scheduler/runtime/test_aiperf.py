"""A load generator that tokenizes on the client, aiperf, driving `fairbatch serve` for a few
seconds with `--tokenizer DIR` of the folder `fairbatch tokenizer DIR` writes: its counts agree
with the server's /metrics, and its client-side token counts with the server's `usage`.

aiperf is large (about 1.2 GB with its dependencies) and pins older prometheus-client and rich,
so `test` leaves it out and CI installs it in a venv of its own: `pip install -e '.[loadgen]'`, or
install it in a venv of its own and point FAIRBATCH_AIPERF at its `aiperf` executable. Without it
the test is skipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from benchmarks.main import main
from benchmarks.serving import counter_samples

pytestmark = pytest.mark.slow

REQUESTS, CONCURRENCY, PROMPT_TOKENS, OUTPUT_TOKENS = 40, 4, 128, 32
CONFIG = """
[cluster]
workers = 2

[[tenants]]
name = "alice"

[serve]
api_keys = { "key-alice" = "alice" }
"""
COUNTERS = ("fairbatch_requests_total", "fairbatch_prompt_tokens_total", "fairbatch_generation_tokens_total")


def aiperf() -> str:
    beside = Path(sys.executable).with_name("aiperf")  # this venv's, when it is not on PATH
    found = os.environ.get("FAIRBATCH_AIPERF") or shutil.which("aiperf") or (beside.exists() and str(beside))
    if not found:
        pytest.skip("aiperf is not installed: pip install -e '.[loadgen]' (or set FAIRBATCH_AIPERF to its executable)")
    return found


def totals(url: str) -> dict[str, float]:
    """Finished requests, prompt and generated tokens, summed over tenants, from /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {name: sum(value for labels, value in counter_samples(text, name.removesuffix("_total"))
                      if labels.get("outcome", "finished") == "finished") for name in COUNTERS}


def aiperf_command(executable: str, url: str, tokenizer_dir, artifacts) -> list[str]:
    return [executable, "profile", "--model", "llama-3-8b", "--url", url, "--endpoint-type", "completions",
            "--streaming", "--api-key", "key-alice", "--tokenizer", str(tokenizer_dir),
            "--synthetic-input-tokens-mean", str(PROMPT_TOKENS), "--synthetic-input-tokens-stddev", "0",
            "--output-tokens-mean", str(OUTPUT_TOKENS), "--output-tokens-stddev", "0",
            "--concurrency", str(CONCURRENCY), "--request-count", str(REQUESTS), "--random-seed", "1",
            "--artifact-dir", str(artifacts), "--ui-type", "none", "--no-gpu-telemetry"]


def run_aiperf(command: list[str]) -> None:
    # Not HF_HUB_OFFLINE: aiperf 0.13 then looks a local tokenizer folder up in the hub's cache.
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_aiperf_counts_what_the_servers_metrics_count(tmp_path):
    executable = aiperf()
    pytest.importorskip("tokenizers", reason="the 'tokenizer' extra (tokenizers) is not installed: pip install -e '.[tokenizer]'")
    assert main(["tokenizer", str(tmp_path / "tokenizer")]) == 0
    (tmp_path / "serve.toml").write_text(CONFIG)
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.main", "serve", "--config",
                               str(tmp_path / "serve.toml"), "--port", "0", "--speed", "1"],
                              stderr=subprocess.PIPE, text=True)
    try:
        url = re.search(r"at (http://127\.0\.0\.1:\d+) ", server.stderr.readline()).group(1)
        before = totals(url)
        run_aiperf(aiperf_command(executable, url, tmp_path / "tokenizer", tmp_path / "aiperf"))
        after = totals(url)
    finally:
        server.terminate()
        server.wait(timeout=30)
        server.stderr.close()
    served = {name: after[name] - before[name] for name in COUNTERS}
    result = json.loads((tmp_path / "aiperf" / "profile_export_aiperf.json").read_text())
    assert result["request_count"]["avg"] == served["fairbatch_requests_total"] == REQUESTS
    assert result["usage_discrepancy_count"]["avg"] == 0  # its tokenizer counts what `usage` reports
    assert result["input_sequence_length"]["sum"] == served["fairbatch_prompt_tokens_total"] == REQUESTS * PROMPT_TOKENS
    assert result["output_sequence_length"]["sum"] == served["fairbatch_generation_tokens_total"]
