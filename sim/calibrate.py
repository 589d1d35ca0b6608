"""`fairbatch calibrate DIR`: fit the cost model's free coefficients to a real run or to operator profiles.

The roofline prices a step from the model and the GPU; what it cannot know is how close an engine
comes to the GPU's peaks and what a step costs on top. Those are the free coefficients: `mfu`
(compute efficiency), `mbu` (memory-bandwidth efficiency) and `step_overhead_ms` (fixed cost per
step). The fit replays the run (`sim.realrun`) and minimises, by least squares, the log-ratios of
predicted to measured TTFT, TPOT and E2E over a set of its requests (Levenberg-Marquardt, with a
finite-difference Jacobian: each evaluation is a replay). Requests alternate between the
fitted half and the held-out half, both replayed together (queueing couples them), so the
held-out error is measured on requests the fit never scored.

A folder of Vidur operator profiles (`sim.opprofile`) is fitted without replays: mfu and mbu to
the timings of its linear layers and attention kernels, every other row held out, and the step
overhead from its CPU overheads.

It writes a small TOML that `[cluster] calibration = "file.toml"` loads.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scheduler.errors import ConfigError
from scheduler.outcomes import Outcome

from .config import CALIBRATED, ClusterConfig
from .hardware import GPUSpec, get_gpu, get_model
from .opprofile import Profile, is_profile, load_profile
from .realrun import RealRun, gpu_of, latencies, load_run, replay, replay_config

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
    basis: str  # what the fit evaluated: "154 replays", "1,204 operator timings"
    notes: tuple[str, ...] = ()


class Objective:
    """Residuals of a set of coefficients: the log-ratios of predicted to measured TTFT, TPOT and
    E2E of the fitted requests, one vector of fixed length (a missing TPOT counts 0)."""

    free = tuple(FREE)

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
                          keep_all=True), records["outcome"] == Outcome.FINISHED.code)

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
    """Levenberg-Marquardt on the residuals, in log coefficients, with a finite-difference Jacobian:
    of a real run's replays, or of a folder of Vidur operator profiles (`fit_profile`)."""
    if is_profile(Path(path)):
        return fit_profile(path, gpu, model)
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
               errors(objective.measured, predicted, held_out), f"{objective.replays} replays")


class ProfileObjective:
    """Residuals of (mfu, mbu) on operator profiles: the log-ratios of the roofline's to the
    measured milliseconds of every other row, scaled to a mean square."""

    free = ("mfu", "mbu")

    def __init__(self, profile: Profile, gpu: GPUSpec) -> None:
        self.profile, self.gpu = profile, gpu
        self.fitted = np.arange(len(profile.measured_ms)) % 2 == 0

    def predicted(self, coefficients: Mapping[str, float]) -> np.ndarray:
        return self.profile.predicted_ms(self.gpu, coefficients["mfu"], coefficients["mbu"])

    def residuals(self, coefficients: Mapping[str, float]) -> np.ndarray:
        ratio = np.log(self.predicted(coefficients) / self.profile.measured_ms)[self.fitted]
        return ratio / math.sqrt(len(ratio))


def fit_profile(path: str | Path, gpu: str | None, model: str | None) -> Fit:
    """mfu and mbu fitted to a Vidur profile folder's linear-layer and attention timings (every
    other row; the rest held out), the step overhead from its CPU overheads (else the default)."""
    if gpu is None or model is None:
        flag = "--gpu" if gpu is None else "--model"
        raise ConfigError(f"{flag}: operator profiles do not say which {flag[2:]} they timed; allowed: give "
                          f"{flag} (the GPU's catalogue name; the model's name or config.json)")
    profile = load_profile(path, get_model(model))
    objective = ProfileObjective(profile, get_gpu(gpu))
    theta = _descend(objective, _to_theta(START, objective.free))[0]
    coefficients = _from_theta(theta, objective.free)
    notes = []
    if profile.cpu_overhead_ms is None:
        coefficients["step_overhead_ms"] = START["step_overhead_ms"]
        notes.append("step_overhead_ms: the default (no cpu_overheads.csv with two or more single-GPU rows)")
    else:
        at_smallest, per_sequence = profile.cpu_overhead_ms
        coefficients["step_overhead_ms"] = min(max(at_smallest, 0.0), FREE["step_overhead_ms"][1])
        notes.append(f"step_overhead_ms: cpu_overheads.csv at its smallest batch; it grows by {per_sequence:.3f} "
                     f"ms per sequence, which the cost model does not carry")
    predicted = objective.predicted(coefficients)
    return Fit(profile.path, gpu, model, {k: round(v, 6) for k, v in coefficients.items()},
               profile_errors(profile, predicted, objective.fitted),
               profile_errors(profile, predicted, ~objective.fitted),
               f"{len(profile.measured_ms):,} operator timings", tuple(notes))


def profile_errors(profile: Profile, predicted: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Per kind of timing, predicted / measured - 1 of the mean and the mean absolute error."""
    out = {}
    for kind in dict.fromkeys(profile.kind):
        rows = mask & (profile.kind == kind)
        if rows.any():
            p, m = predicted[rows], profile.measured_ms[rows]
            out[f"mean_{kind}"] = float(p.mean() / m.mean() - 1)
            out[f"mape_{kind}"] = float(np.mean(np.abs(p / m - 1)))
    return out


def _starts(objective: Objective) -> list[np.ndarray]:
    """The defaults and the best point of a coarse grid: a replay's error is not smooth in the
    coefficients (a faster step can change which requests share it), so a local search from one
    start can stop in a valley far from the best fit."""
    grid = [_to_theta(dict(zip(GRID, point))) for point in itertools.product(*GRID.values())]
    return [_to_theta(START), min(grid, key=lambda theta: _cost(objective.residuals(_from_theta(theta))))]


def _descend(objective, theta: np.ndarray) -> tuple[np.ndarray, float]:
    """Levenberg-Marquardt from `theta`, over `objective.free`: (the point it stops at, its squared error)."""
    r, damping = objective.residuals(_from_theta(theta, objective.free)), 1e-2
    for _ in range(MAX_ITERATIONS):
        step = _damped_step(objective, theta, r, _jacobian(objective, theta, r), damping)
        if step is None:
            break
        theta, r, damping = step
    return theta, _cost(r)


def _cost(r: np.ndarray) -> float:
    return float(r @ r)


def _jacobian(objective, theta: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Forward differences, backward at an upper bound."""
    columns, names = [], objective.free
    for e in np.eye(len(theta)):
        probe = _clip(theta + STEP * e, names)
        if np.array_equal(probe, theta):
            probe = _clip(theta - STEP * e, names)
        columns.append((objective.residuals(_from_theta(probe, names)) - r) / float((probe - theta) @ e))
    return np.column_stack(columns)


def _damped_step(objective, theta, r, jacobian, damping):
    """(theta, residuals, damping) after a step that lowers the squared error, None if none does
    or the gain is negligible."""
    normal, gradient = jacobian.T @ jacobian, jacobian.T @ r
    cost = _cost(r)
    while damping < 1e6:
        delta = np.linalg.solve(normal + damping * np.diag(np.diag(normal) + 1e-12), -gradient)
        trial = _clip(theta + delta, objective.free)
        r_trial = objective.residuals(_from_theta(trial, objective.free))
        trial_cost = _cost(r_trial)
        if trial_cost < cost:
            return None if cost - trial_cost < 1e-6 * cost else (trial, r_trial, damping / 3)
        damping *= 4
    return None


def _to_theta(coefficients: Mapping[str, float], names: tuple[str, ...] = tuple(FREE)) -> np.ndarray:
    return np.array([math.log(coefficients[k] + OFFSET[k]) for k in names])


def _from_theta(theta: np.ndarray, names: tuple[str, ...] = tuple(FREE)) -> dict[str, float]:
    return {k: float(math.exp(t) - OFFSET[k]) for k, t in zip(names, theta)}


def _clip(theta: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    low = _to_theta({k: FREE[k][0] for k in names}, names)
    high = _to_theta({k: FREE[k][1] for k in names}, names)
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
    lines = [f"# The cost model's coefficients fitted to {result.run} ({result.basis}).",
             *(f"# {note}" for note in result.notes),
             f"gpu = {_quoted(result.gpu)}", f"model = {_quoted(get_model(result.model).name)}"]
    lines += [f"{name} = {value:.6g}" for name, value in result.coefficients.items()]
    for section, values in (("error.in_sample", result.in_sample), ("error.held_out", result.held_out)):
        lines += ["", f"[{section}]  # predicted / measured - 1"] + [f"{k} = {v:.4f}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def _percent(key: str, value: float | None) -> str:
    # an error signed, a mean absolute error not
    if value is None:
        return "-"
    return f"{value:.1%}" if key.startswith("mape") else f"{value:+.1%}"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def report(result: Fit) -> str:
    coefficients = ", ".join(f"{k} {v:.4g}" for k, v in result.coefficients.items())
    rows = [f"{'error':18} {'in-sample':>10} {'held-out':>10}"]
    rows += [f"{key:18} {_percent(key, result.in_sample[key]):>10} {_percent(key, result.held_out.get(key)):>10}"
             for key in result.in_sample]
    head = f"{result.run} on {result.gpu}: {coefficients} ({result.basis})"
    return "\n".join([head, *result.notes, *rows])
