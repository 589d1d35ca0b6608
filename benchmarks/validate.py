"""`fairbatch bench validate RUN_DIR`: a real vLLM run replayed in the simulator (`sim.realrun`),
predicted against measured TTFT, TPOT, ITL and E2E: mean, median, p90 and p99, the error of each,
the per-request MAPE, and the CDFs. TTFT = first token - arrival, TPOT = (last token - first
token) / (output tokens - 1), E2E = last token - arrival, on both sides. The runs record no time
between the first and last token, so a measured ITL has no distribution of its own: its mean is
TPOT's mean weighted by tokens, and that is what is compared.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scheduler.outcomes import Outcome
from sim.cli import check_output
from sim.config import SimConfig
from sim.realrun import RealRun, gpu_of, latencies, load_run, replay, replay_config

from .tables import md_table

STATS = ("mean", "median", "p90", "p99")
METRICS = ("ttft", "tpot", "itl", "e2e")


# ----- comparing --------------------------------------------------------------------------------


def stats(values: np.ndarray) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "median": float(np.median(values)),
            "p90": float(np.percentile(values, 90)), "p99": float(np.percentile(values, 99))}


@dataclass(frozen=True, slots=True)
class Validation:
    """A replayed run: what was measured and what the simulator predicted, per request (seconds),
    over the requests both finished."""

    run: RealRun
    config: SimConfig
    measured: Mapping[str, np.ndarray]
    predicted: Mapping[str, np.ndarray]
    requests: int
    preemptions: int

    def summary(self) -> dict[str, Any]:
        """Each metric's statistics, measured and predicted, their errors and the per-request MAPE."""
        metrics = {}
        for metric in ("ttft", "tpot", "e2e"):
            m, p = stats(self.measured[metric]), stats(self.predicted[metric])
            metrics[metric] = {"measured": m, "predicted": p, "error": {s: p[s] / m[s] - 1 for s in STATS},
                               "mape": float(np.mean(np.abs(self.predicted[metric] / self.measured[metric] - 1)))}
        m, p = _token_mean(self.measured), _token_mean(self.predicted)
        metrics["itl"] = {"measured": {"mean": m}, "predicted": {"mean": p}, "error": {"mean": p / m - 1}}
        cluster = self.config.cluster
        return {"run": str(self.run.path), "gpu": cluster.gpu, "model": cluster.model,
                "kv_blocks": cluster.kv_blocks(self.config.scheduler),
                "modelled_kv_blocks": cluster.modelled_kv_blocks(self.config.scheduler),
                "measured_kv_blocks": self.run.kv_cache("num_gpu_blocks"), "requests": self.requests,
                "compared": int(len(self.measured["ttft"])), "preemptions": self.preemptions, "metrics": metrics}


def _token_mean(lat: Mapping[str, np.ndarray]) -> float:
    return float(np.average(lat["tpot"], weights=lat["tpot_weight"]))


def validate(path: str | Path, gpu: str | None = None, model: str | None = None,
             cluster: Mapping[str, Any] | None = None) -> Validation:
    """Replay the run in `path`; `cluster` overrides [cluster] keys (mfu, mbu, ...)."""
    run = load_run(path)
    config = replay_config(run, gpu_of(run, gpu), model or str(run.path / "config.json"), cluster)
    records = replay(run, config)
    done = records["outcome"] == Outcome.FINISHED.code
    measured = latencies(run.arrival_s[done], run.first_token_s[done], run.last_token_s[done], run.output_tokens[done])
    predicted = latencies(records["arrival"][done], records["first_token"][done], records["finish"][done],
                          records["output_tokens"][done])
    return Validation(run, config, measured, predicted, len(records), int(records["preemptions"].sum()))


# ----- reporting --------------------------------------------------------------------------------


def report(result: Mapping[str, Any]) -> str:
    lines = [f"{result['run']}: {result['compared']} of {result['requests']} requests, {result['model']} on "
             f"{result['gpu']}, {result['kv_blocks']:,} KV blocks (vLLM allocated "
             f"{_count(result['measured_kv_blocks'])}; the cost model's memory gives {result['modelled_kv_blocks']:,})",
             f"{'metric':8} {'stat':7} {'measured ms':>12} {'predicted ms':>13} {'error':>8}"]
    for metric in METRICS:
        row = result["metrics"][metric]
        for stat in row["measured"]:
            lines.append(f"{metric:8} {stat:7} {row['measured'][stat] * 1e3:12.1f} {row['predicted'][stat] * 1e3:13.1f} "
                         f"{row['error'][stat]:+8.1%}")
        if "mape" in row:
            lines.append(f"{metric:8} {'MAPE':7} {'':>12} {'':>13} {row['mape']:8.1%}")
    return "\n".join(lines)


def _count(blocks: int | None) -> str:
    return f"{blocks:,}" if blocks else "(not recorded)"


def validate_runs(paths, gpu: str | None = None, model: str | None = None,
                  cluster: Mapping[str, Any] | None = None, plot: Path | None = None,
                  json_path: Path | None = None) -> str:
    """`fairbatch bench validate`: each run's table; the figure and the JSON where asked."""
    for flag, out in (("--plot", plot), ("--json", json_path)):
        if out is not None:
            check_output(out, flag)
    validations = [validate(path, gpu, model, cluster) for path in paths]
    summaries = [v.summary() for v in validations]
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(summaries, indent=1, allow_nan=False) + "\n")
    if plot is not None:
        from .plots import validation_figure

        validation_figure([(f"{v.config.cluster.gpu}", {"measured": v.measured, "predicted": v.predicted})
                           for v in validations], plot)
    return "\n\n".join(report(s) for s in summaries)


# ----- the RESULTS.md section -------------------------------------------------------------------

# The real runs (real_vllm_runs/<GPU>/<MODEL>) and their GPUs: the RTX PRO 6000 run's meta.json
# does not name its device.
RUNS = (("RTX4090/Llama-3.1-8B", "rtx-4090"), ("RTXPRO6000/Llama-3.1-8B", "rtx-pro-6000"))


def validation_markdown(data: Path, figure: Path, shown_figure: str) -> str:
    """RESULTS.md's validation section: each real run replayed by the plain roofline and by the
    roofline calibrated on half its requests (`fairbatch calibrate`), against what was measured,
    and the CDFs in `figure` (linked as `shown_figure`)."""
    from sim.calibrate import fit

    from .plots import validation_figure

    blocks = ["## Validation against real vLLM runs",
              "Two runs of vLLM 0.19.0 serving Llama-3.1-8B (LLMServingSim's, MIT; Cho et al.) replayed with "
              "`fairbatch bench validate`: the same 300 ShareGPT arrivals at 10 req/s, lengths and engine limits. "
              "*Roofline*: the cost model as it is; *calibrated*: its mfu, mbu and step overhead fitted by "
              "`fairbatch calibrate` on the even-numbered requests, so the held-out errors are those of the "
              "odd-numbered ones. Errors are predicted / measured - 1."]
    panels = []
    for run, gpu in RUNS:
        path = data / "real_vllm_runs" / run
        calibration = fit(path, gpu)
        plain, calibrated = validate(path, gpu), validate(path, gpu, cluster=calibration.coefficients)
        panels.append((gpu, {"measured": plain.measured, "roofline": plain.predicted,
                             "calibrated": calibrated.predicted}))
        blocks.append(_validation_block(plain.summary(), calibrated.summary(), calibration))
    validation_figure(panels, figure)
    blocks.append(f"![measured, roofline and calibrated CDFs]({shown_figure})")
    return "\n\n".join(blocks)


def _validation_block(plain: Mapping[str, Any], calibrated: Mapping[str, Any], calibration) -> str:
    rows = []
    for metric in METRICS:
        p, c = plain["metrics"][metric], calibrated["metrics"][metric]
        for stat in p["measured"]:
            rows.append([metric.upper(), stat, f"{p['measured'][stat] * 1e3:,.1f}",
                         f"{p['predicted'][stat] * 1e3:,.1f} ({p['error'][stat]:+.1%})",
                         f"{c['predicted'][stat] * 1e3:,.1f} ({c['error'][stat]:+.1%})"])
    coefficients = ", ".join(f"{k} {v:.3g}" for k, v in calibration.coefficients.items())
    held_out = ", ".join(f"{stat} {metric.upper()} {v:+.1%}"
                         for (stat, metric), v in ((k.split("_"), v) for k, v in calibration.held_out.items()))
    mape = "; ".join(f"{m.upper()} {plain['metrics'][m]['mape']:.1%} roofline, {calibrated['metrics'][m]['mape']:.1%} "
                     "calibrated" for m in ("ttft", "tpot", "e2e"))
    return (f"### {plain['gpu']}: {plain['compared']} requests, {plain['kv_blocks']:,} KV blocks (vLLM allocated "
            f"{_count(plain['measured_kv_blocks'])}; the cost model's memory gives {plain['modelled_kv_blocks']:,})"
            "\n\n" + md_table(["metric", "stat", "measured ms", "roofline ms", "calibrated ms"], rows)
            + f"\n\nPer-request MAPE: {mape}. Calibrated: {coefficients}; held-out errors: {held_out}.")
