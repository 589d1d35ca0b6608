"""`fairbatch calibrate RUN_DIR`: fit the cost model's free coefficients to a real run.

The roofline prices a step from the model and the GPU; what it cannot know is how close an engine
comes to the GPU's peaks and what a step costs on top. Those are the free coefficients: `mfu`
(compute efficiency), `mbu` (memory-bandwidth efficiency) and `step_overhead_ms` (fixed cost per
step). The fit replays the run (`sim.realrun`) and minimises, by least squares, the log-ratios of
predicted to measured TTFT, TPOT and E2E over a set of its requests (Levenberg-Marquardt, with a
finite-difference Jacobian: each evaluation is a replay). Requests alternate between the
fitted half and the held-out half, both replayed together (queueing couples them), so the
held-out error is measured on requests the fit never scored.

It writes a small TOML that `[cluster] calibration = "file.toml"` loads.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import CALIBRATED, ClusterConfig
from .hardware import get_model
from .realrun import RealRun, gpu_of, latencies, load_run, replay, replay_config
from .results import FINISHED

# The search bounds of each coefficient CALIBRATED names.
FREE = {"mfu": (0.02, 1.0), "mbu": (0.02, 1.0), "step_overhead_ms": (0.0, 50.0)}
METRICS = ("ttft", "tpot", "e2e")
START = {name: getattr(ClusterConfig(), name) for name in CALIBRATED}  # the roofline's defaults
OFFSET = {"mfu": 0.0, "mbu": 0.0, "step_overhead_ms": 0.05}  # searched as log(value + offset): overhead may be 0
# The coarse grid the search starts from (64 replays), spanning each coefficient's usual range.
GRID = {"mfu": (0.2, 0.35, 0.6, 0.95), "mbu": (0.2, 0.35, 0.6, 0.95), "step_overhead_ms": (0.2, 1.0, 4.0, 16.0)}
STEP = 0.02  # finite-difference step of the Jacobian, in log units (2%)
MAX_ITERATIONS = 25
MISSED = 5.0  # the residual of a request the replay never finishes (a ratio of e^5)


@dataclass(frozen=True, slots=True)
class Fit:
    """Fitted coefficients, and the errors (predicted / measured - 1 of the means and p90) on the
    fitted and the held-out requests."""

    run: Path
    gpu: str
    model: str
    coefficients: Mapping[str, float]
    in_sample: Mapping[str, float]
    held_out: Mapping[str, float]
    replays: int


class Objective:
    """Residuals of a set of coefficients: the log-ratios of predicted to measured TTFT, TPOT and
    E2E of the fitted requests, one vector of fixed length (a missing TPOT counts 0)."""

    def __init__(self, run: RealRun, gpu: str, model: str) -> None:
        self.run, self.gpu, self.model = run, gpu, model
        self.fitted = np.arange(len(run.arrival_s)) % 2 == 0
        self.measured = latencies(run.arrival_s, run.first_token_s, run.last_token_s, run.output_tokens, keep_all=True)
        self.replays = 0

    def predicted(self, coefficients: Mapping[str, float]) -> tuple[dict, np.ndarray]:
        """(per-request latencies, finished mask), every request, in the run's order."""
        self.replays += 1
        records = replay(self.run, replay_config(self.run, self.gpu, self.model, dict(coefficients)))
        return (latencies(records["arrival"], records["first_token"], records["finish"], records["output_tokens"],
                          keep_all=True), records["outcome"] == FINISHED)

    def residuals(self, coefficients: Mapping[str, float]) -> np.ndarray:
        """Per request, the log-ratios scaled to a mean square; then the log-ratios of each
        metric's mean and p90, which the targets judge and which per-request ratios alone can
        leave biased (a few requests with a tiny measured TTFT weigh as much as the rest)."""
        predicted, done = self.predicted(coefficients)
        parts, summary = [], []
        for metric in METRICS:
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.log(predicted[metric] / self.measured[metric])[self.fitted]
            ratio[~done[self.fitted]] = MISSED
            parts.append(np.nan_to_num(ratio, nan=0.0, posinf=MISSED, neginf=-MISSED) / math.sqrt(len(ratio)))
            summary += [math.log1p(max(e, -0.99)) for e in _summary_errors(self.measured[metric],
                                                                           predicted[metric], self.fitted & done)]
        return np.concatenate([*parts, summary])


def fit(path: str | Path, gpu: str | None = None, model: str | None = None) -> Fit:
    """Levenberg-Marquardt on the residuals, in log coefficients, with a finite-difference Jacobian."""
    run = load_run(path)
    gpu = gpu_of(run, gpu)
    model = model or str(run.path / "config.json")
    objective = Objective(run, gpu, model)
    theta = min((_descend(objective, start) for start in _starts(objective)), key=lambda found: found[1])[0]
    coefficients = _from_theta(theta)
    predicted, done = objective.predicted(coefficients)
    held_out = ~objective.fitted & done
    return Fit(run.path, gpu, model, {k: round(v, 6) for k, v in coefficients.items()},
               errors(objective.measured, predicted, objective.fitted & done),
               errors(objective.measured, predicted, held_out), objective.replays)


def _starts(objective: Objective) -> list[np.ndarray]:
    """The defaults and the best point of a coarse grid: a replay's error is not smooth in the
    coefficients (a faster step can change which requests share it), so a local search from one
    start can stop in a valley far from the best fit."""
    grid = [_to_theta(dict(zip(GRID, point))) for point in itertools.product(*GRID.values())]
    return [_to_theta(START), min(grid, key=lambda theta: _cost(objective.residuals(_from_theta(theta))))]


def _descend(objective: Objective, theta: np.ndarray) -> tuple[np.ndarray, float]:
    """Levenberg-Marquardt from `theta`: (the point it stops at, its squared error)."""
    r, damping = objective.residuals(_from_theta(theta)), 1e-2
    for _ in range(MAX_ITERATIONS):
        step = _damped_step(objective, theta, r, _jacobian(objective, theta, r), damping)
        if step is None:
            break
        theta, r, damping = step
    return theta, _cost(r)


def _cost(r: np.ndarray) -> float:
    return float(r @ r)


def _jacobian(objective: Objective, theta: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Forward differences, backward at an upper bound."""
    columns = []
    for e in np.eye(len(theta)):
        probe = _clip(theta + STEP * e)
        if np.array_equal(probe, theta):
            probe = _clip(theta - STEP * e)
        columns.append((objective.residuals(_from_theta(probe)) - r) / float((probe - theta) @ e))
    return np.column_stack(columns)


def _damped_step(objective: Objective, theta, r, jacobian, damping):
    """(theta, residuals, damping) after a step that lowers the squared error, None if none does
    or the gain is negligible."""
    normal, gradient = jacobian.T @ jacobian, jacobian.T @ r
    cost = _cost(r)
    while damping < 1e6:
        delta = np.linalg.solve(normal + damping * np.diag(np.diag(normal) + 1e-12), -gradient)
        trial = _clip(theta + delta)
        r_trial = objective.residuals(_from_theta(trial))
        trial_cost = _cost(r_trial)
        if trial_cost < cost:
            return None if cost - trial_cost < 1e-6 * cost else (trial, r_trial, damping / 3)
        damping *= 4
    return None


def _to_theta(coefficients: Mapping[str, float]) -> np.ndarray:
    return np.array([math.log(coefficients[k] + OFFSET[k]) for k in FREE])


def _from_theta(theta: np.ndarray) -> dict[str, float]:
    return {k: float(math.exp(t) - OFFSET[k]) for k, t in zip(FREE, theta)}


def _clip(theta: np.ndarray) -> np.ndarray:
    low, high = _to_theta({k: b[0] for k, b in FREE.items()}), _to_theta({k: b[1] for k, b in FREE.items()})
    return np.clip(theta, low, high)


def errors(measured: Mapping[str, np.ndarray], predicted: Mapping[str, np.ndarray], mask: np.ndarray) -> dict:
    """predicted / measured - 1 of each metric's mean and p90 over the requests in `mask`."""
    out = {}
    for metric in METRICS:
        out[f"mean_{metric}"], out[f"p90_{metric}"] = _summary_errors(measured[metric], predicted[metric], mask)
    return out


def _summary_errors(measured: np.ndarray, predicted: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    # (mean, p90) of predicted / measured - 1 over the requests in `mask` both sides have; 0s if none
    keep = mask & np.isfinite(measured) & np.isfinite(predicted)
    if not keep.any():
        return 0.0, 0.0
    m, p = measured[keep], predicted[keep]
    return float(np.mean(p) / np.mean(m) - 1), float(np.percentile(p, 90) / np.percentile(m, 90) - 1)


# ----- the calibration file ---------------------------------------------------------------------


def to_toml(result: Fit) -> str:
    lines = [f"# The cost model's coefficients fitted to {result.run} ({result.replays} replays).",
             f"gpu = {_quoted(result.gpu)}", f"model = {_quoted(get_model(result.model).name)}"]
    lines += [f"{name} = {value:.6g}" for name, value in result.coefficients.items()]
    for section, values in (("error.in_sample", result.in_sample), ("error.held_out", result.held_out)):
        lines += ["", f"[{section}]  # predicted / measured - 1"] + [f"{k} = {v:.4f}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def report(result: Fit) -> str:
    coefficients = ", ".join(f"{k} {v:.4g}" for k, v in result.coefficients.items())
    rows = [f"{'error':12} {'in-sample':>10} {'held-out':>10}"]
    rows += [f"{key:12} {result.in_sample[key]:+10.1%} {result.held_out[key]:+10.1%}" for key in result.in_sample]
    return f"{result.run} on {result.gpu}: {coefficients} ({result.replays} replays)\n" + "\n".join(rows)
