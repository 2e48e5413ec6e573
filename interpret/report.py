"""The reverse-engineering report: every analysis of the paper, on the optimizer's own task.

`reverse_engineer(tx, problem, workdir)` runs ``tx`` on instances of its `Problem`, scales
every probe from the gradients it recorded (`GradientStats`), and returns a `Report`:

- momentum: the convergence fixed point found from visited states, its modes ranked by their
  contribution to the update (`momentum_modes`), and, when the problem is a quadratic with
  known Hessian range, the optimal heavy-ball parameters to compare the dominant mode with;
- clipping and sign-likeness: the update function's shape (`update_shape`) at the initial
  state and along the top principal components of the visited states;
- schedule: the zero-gradient probe from the initial state (`zero_gradient_schedule`);
- learning-rate adaptation: fixed points of ``|g*|`` over the recorded 5%-95% range and the
  effective learning rate at each (`lr_adaptation` with finite differences);
- coupling: whether the optimizer is component-wise, as the one-coordinate analyses assume
  (`coupling` on the recorded gradient sequences);
- distillation: the chain `distill` fits to the recorded gradient sequences, and, when a
  ``baseline`` is given, the fraction of the optimizer's advantage over it that the chain and
  each ablation keep on held-out instances.

It writes ``report.json`` (all numbers), ``report.md`` (`interpret.report_text`) and the
figures to ``workdir``.

References:
  Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
  mechanisms", arXiv 2011.02159.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, NamedTuple

import jax
import numpy as np
import optax

from interpret import _checks
from interpret import figures as _figures
from interpret import system as _system
from interpret.adaptation import LRAdaptation, lr_adaptation
from interpret.coupling import Coupling, coupling
from interpret.distill import Distilled, distill
from interpret.modes import HeavyBall, MomentumModes, heavy_ball_optimum, momentum_modes
from interpret.problem import GradientStats, Problem, Recording, gradient_stats, record
from interpret.schedule import ScheduleFit, zero_gradient_schedule
from interpret.shape import UpdateShape, update_shapes


@dataclasses.dataclass(frozen=True)
class Report:
    """Everything `reverse_engineer` found (each part documents its own fields).

    Attributes:
      name: the optimizer's label.
      problem: the problem's name.
      state_size: dimension of the one-coordinate state.
      recording: the `Recording` of the optimizer on its problem.
      stats: the recorded gradients' `GradientStats`.
      modes: `MomentumModes` at the convergence fixed point.
      heavy_ball: the optimal heavy-ball parameters (None without a Hessian range).
      shapes: label -> `UpdateShape` ("initial state", "PC1 +2sd", ...).
      schedule: the zero-gradient `ScheduleFit`.
      adaptation: the `LRAdaptation` over the recorded gradient range.
      coupling: the `Coupling` of the recorded coordinates (is the optimizer component-wise);
        None when fewer than two finite coordinates were recorded.
      distilled: the `Distilled` chain.
      objectives: label -> held-out meta-objective (mean_t f_t / f_0) of "original",
        "baseline", "distilled" and "without <mechanism>" (empty without a baseline).
      kept: label -> ``(baseline - x) / (baseline - original)`` for the same labels.
      timings: seconds per stage.
    """

    name: str
    problem: str
    state_size: int
    recording: Recording
    stats: GradientStats
    modes: MomentumModes | None
    heavy_ball: HeavyBall | None
    shapes: dict[str, UpdateShape]
    schedule: ScheduleFit
    adaptation: LRAdaptation | None
    coupling: Coupling | None
    distilled: Distilled
    objectives: dict[str, float]
    kept: dict[str, float]
    timings: dict[str, float]


def reverse_engineer(
    tx: optax.GradientTransformation,
    problem: Problem,
    workdir: str | None = None,
    *,
    name: str = "optimizer",
    baseline: optax.GradientTransformation | None = None,
    hessian_range: tuple[float, float] | None = None,
    num_instances: int = 8,
    coordinates: int = 16,
    num_held_out: int = 16,
    held_out_ablations: bool = False,
    seed: int = 0,
) -> Report:
    """Reverse-engineers ``tx`` on ``problem``; writes the report when ``workdir`` is given.

    Args:
      tx: any optax transformation (learned or hand-designed).
      problem: the optimizer's own `Problem` (its task distribution and horizon).
      workdir: folder for report.json, report.md and the figures (None: write nothing).
      name: the optimizer's label in the report.
      baseline: the best tuned hand-designed optimizer on ``problem``; with it, the held-out
        advantage of the original, the distilled chain and every ablation is measured.
      hessian_range: ``(low, high)`` Hessian eigenvalues of a quadratic problem, to compare
        the dominant momentum mode with the optimal heavy-ball parameters.
      num_instances: instances recorded (the first ``num_instances`` `record` draws).
      coordinates: coordinates recorded per instance.
      num_held_out: held-out instances for the advantage (the next ``num_held_out``: the
        original's run in the same compiled call as the recorded ones).
      held_out_ablations: also measure every ablation's held-out advantage (one more run of
        the problem per mechanism).
      seed: seed of everything.

    Returns:
      A `Report`.
    """
    _checks.gradient_transformation(tx)
    run = _Run(problem, num_instances, seed)
    # the held-out instances of the original run in the same compiled call as the recorded
    held = 0 if baseline is None else _checks.positive_int("num_held_out", num_held_out)
    everything = run.timed("record", record, tx, problem, num_instances=num_instances + held,
                           coordinates=coordinates, seed=seed)  # fmt: skip
    rec = everything.instances(0, num_instances)
    system, found = _analyse(run, tx, rec)
    objectives, kept = _held_out(
        run, baseline, found.distilled, held_out_ablations, everything, held
    )
    report = Report(
        name=name,
        problem=problem.name,
        recording=rec,
        heavy_ball=None if hessian_range is None else heavy_ball_optimum(*hessian_range),
        objectives=objectives,
        kept=kept,
        timings=run.timings,
        **found._asdict(),
    )
    if workdir is not None:
        run.timed("write", write_report, report, workdir, system)
    return report


@dataclasses.dataclass
class _Run:
    """One `reverse_engineer` call: what its stages share, and the seconds each stage took."""

    problem: Problem
    num_instances: int
    seed: int
    timings: dict[str, float] = dataclasses.field(default_factory=dict)

    def timed(self, label: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, its duration (seconds, 2 decimals) kept under ``label``."""
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.timings[label] = round(time.perf_counter() - start, 2)
        return out


class _Analyses(NamedTuple):
    """The analyses of the recording: the `Report` fields of the same names."""

    state_size: int
    stats: GradientStats
    modes: MomentumModes | None
    shapes: dict[str, UpdateShape]
    schedule: ScheduleFit
    adaptation: LRAdaptation | None
    coupling: Coupling | None
    distilled: Distilled


def _analyse(
    run: _Run, tx: optax.GradientTransformation, rec: Recording
) -> tuple[_system.ScalarSystem, _Analyses]:
    """The optimizer's `ScalarSystem` and every analysis of its recording ``rec``.

    Every probe is scaled from the finite recorded gradients.
    """
    finite = np.isfinite(rec.gradients).all(axis=0)
    if not finite.any():
        raise ValueError(
            f"tx: its gradients on {run.problem.name!r} are not finite at every recorded "
            "coordinate (it diverged); nothing can be reverse-engineered from this run."
        )
    stats = gradient_stats(rec.gradients[:, finite])
    system = _system.scalar_system(tx)
    horizon = run.problem.num_steps
    visited = rec.states[-max(1, horizon // 4) :].reshape(-1, system.size)
    modes = (
        run.timed("modes", momentum_modes, system, stats, visited, horizon=horizon)
        if system.size
        else None
    )
    shapes = run.timed("shapes", _shapes, system, stats, rec.states)
    schedule = run.timed(
        "schedule", zero_gradient_schedule, system, horizon, gradient_scale=stats.scale
    )
    adaptation = (
        run.timed(
            "adaptation",
            lr_adaptation,
            system,
            np.geomspace(stats.low, stats.high, 7),
            input_step=stats.scale,
            max_recovery_steps=horizon,
        )  # fmt: skip
        if system.size
        else None
    )
    sequences = rec.gradients[:, finite][:, :128]
    coupled = run.timed("coupling", coupling, tx, sequences) if sequences.shape[1] > 1 else None
    own = () if modes is None else tuple(modes.betas[:2])
    distilled = run.timed("distill", distill, system, gradients=sequences,
                          schedule_steps=horizon, betas=own, seed=run.seed)  # fmt: skip
    analyses = _Analyses(
        system.size, stats, modes, shapes, schedule, adaptation, coupled, distilled
    )
    return system, analyses


def _held_out(
    run: _Run,
    baseline: optax.GradientTransformation | None,
    distilled: Distilled,
    ablations: bool,
    everything: Recording,
    held: int,
) -> tuple[dict[str, float], dict[str, float]]:
    """Held-out objectives and kept fractions (two empty dicts without a ``baseline``).

    ``everything`` holds the original's runs on the recorded instances, then on the ``held``
    held-out ones; the baseline and the distilled chains (with ``ablations``, every ablation
    too) run on the same held-out instances.
    """
    if baseline is None:
        return {}, {}
    _checks.gradient_transformation(baseline, "baseline")
    contenders = _contenders(baseline, distilled, ablations)
    objectives = run.timed("held_out", held_out_objectives, run.problem, contenders, held,
                           run.seed, first_instance=run.num_instances)  # fmt: skip
    objectives = {"original": meta_objective(everything.losses[run.num_instances:]),
                  **objectives}  # fmt: skip
    return objectives, advantage_fractions(objectives)


def _shapes(system, stats: GradientStats, states: np.ndarray) -> dict[str, UpdateShape]:
    """The update function's shape at the initial state and along the visited PCs."""
    probes, labels = _probe_states(system, states, num_pcs=2)
    return dict(zip(labels, update_shapes(system, stats, probes), strict=True))


def _probe_states(system, states: np.ndarray, num_pcs: int) -> tuple[np.ndarray, list[str]]:
    """The initial state, the mean visited state and +-2 sd along the top visited PCs."""
    out, labels = [np.asarray(system.initial_state, np.float64)], ["initial state"]
    if system.size == 0:
        return np.stack(out), labels
    pool = states.reshape(-1, system.size)
    pool = pool[np.isfinite(pool).all(axis=1)]
    mean = pool.mean(axis=0)
    _, sing, vt = np.linalg.svd(pool - mean, full_matrices=False)
    sd = sing / math.sqrt(max(len(pool) - 1, 1))
    out.append(mean)
    labels.append("mean visited state")
    for k in range(min(num_pcs, len(sd))):
        for sign in (-2, 2):
            out.append(mean + sign * sd[k] * vt[k])
            labels.append(f"PC{k + 1} {sign:+d}sd")
    return np.stack(out), labels


def _contenders(baseline, distilled: Distilled, ablations: bool) -> dict[str, Any]:
    out = {"baseline": baseline, "distilled": distilled.tx}
    if ablations:
        out.update({f"without {m}": d.tx for m, d in distilled.ablations.items()})
    return out


def held_out_objectives(
    problem: Problem,
    optimizers: dict[str, optax.GradientTransformation],
    num: int,
    seed: int,
    *,
    first_instance: int = 0,
) -> dict[str, float]:
    """`meta_objective` of each optimizer on instances ``[first_instance, first_instance + num)``.

    The instances are those `record` draws from ``seed`` (the same for every optimizer), so
    with ``first_instance`` the number of recorded instances they are held out.
    """
    num = _checks.positive_int("num", num)
    return {
        label: meta_objective(record(opt, problem, num_instances=num, coordinates=1, seed=seed,
                                     first_instance=first_instance).losses)
        for label, opt in optimizers.items()
    }  # fmt: skip


def meta_objective(losses: np.ndarray) -> float:
    """Mean over instances and steps of ``f_t / f_0``, from ``(instances, steps + 1)`` losses.

    A run whose loss is not finite or exceeds 1e3 times its start counts as 1e3, so one
    divergence cannot hide.
    """
    ratio = losses[:, :-1] / losses[:, :1]
    return float(np.mean(np.where(np.isfinite(ratio) & (ratio < 1e3), ratio, 1e3)))


def advantage_fractions(objectives: dict[str, float]) -> dict[str, float]:
    """``(baseline - x) / (baseline - original)`` per label (NaN when the original is no better)."""
    base, orig = objectives["baseline"], objectives["original"]
    gap = base - orig
    return {k: (base - v) / gap if gap > 0 else float("nan") for k, v in objectives.items()}


# ----------------------------------------------------------------------------- writing
def write_report(report: Report, workdir: str, system: Any = None) -> None:
    """Writes report.json, report.md and the figures of ``report`` into ``workdir``.

    ``system`` is the optimizer's `ScalarSystem`; without it the update-function figure
    (which evaluates the optimizer) is not drawn.
    """
    from interpret.report_text import markdown  # noqa: PLC0415 (text depends on this module)

    os.makedirs(workdir, exist_ok=True)
    _write_figures(report, workdir, system)
    with open(os.path.join(workdir, "report.json"), "w") as f:
        json.dump(_jsonable(summary(report)), f, indent=1)
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write(markdown(report))


def _write_figures(report: Report, workdir: str, system) -> None:
    path = lambda name: os.path.join(workdir, name)  # noqa: E731
    q = report.stats.quantiles
    side = np.geomspace(q[1] / 10, 3 * q[99], 120)
    grid = np.concatenate([-side[::-1], [0.0], side])
    rec = report.recording
    if system is not None:
        states, labels = _probe_states(system, rec.states, num_pcs=1)
        _figures.plot_update_functions(system, states, path("update_functions.png"),
                                       gradients=grid, labels=labels,
                                       observed=rec.gradients)  # fmt: skip
    _figures.plot_trajectories(rec.states[:, :8], path("trajectories.png"))
    if report.modes is not None:
        _figures.plot_modes(report.modes.betas, report.modes.contributions,
                            path("modes.png"), direct=report.modes.direct)  # fmt: skip
        label = f"fixed point of g* = {report.modes.input:.3g}"
        _figures.plot_eigenvalues(report.modes.linearization, path("eigenvalues.png"),
                                  labels=[label])  # fmt: skip
    _figures.plot_schedule(report.schedule, path("schedule.png"))
    if report.adaptation is not None:
        _figures.plot_lr_adaptation(report.adaptation, path("lr_adaptation.png"))


def summary(report: Report) -> dict[str, Any]:
    """The report's numbers as a JSON-ready dict."""
    modes = report.modes
    d = report.distilled
    return {
        "name": report.name,
        "problem": report.problem,
        "state_size": report.state_size,
        "losses_first_last": [float(np.mean(report.recording.losses[:, 0])),
                              float(np.mean(report.recording.losses[:, -1]))],  # fmt: skip
        "gradient_quantiles": {str(k): v for k, v in report.stats.quantiles.items()},
        "modes": None if modes is None else {
            "betas": modes.betas[:8], "alphas": modes.alphas[:8],
            "fraction": modes.fraction[:8], "direct": modes.direct,
            "impulse_r2": modes.impulse_r2, "fixed_point_residual": modes.fixed_point_residual,
            "input": modes.input,
        },  # fmt: skip
        "heavy_ball": None if report.heavy_ball is None else dataclasses.asdict(report.heavy_ball),
        "shapes": {k: {f: getattr(v, f) for f in ("kind", "jump", "sign_fraction",
                   "learning_rate", "saturation", "saturation_quantile", "linear_r2")}
                   for k, v in report.shapes.items()},  # fmt: skip
        "schedule": {"learning_rates": report.schedule.learning_rates,
                     "peak": report.schedule.peak_learning_rate,
                     "warmup_steps": report.schedule.warmup_steps,
                     "decay": report.schedule.decay},  # fmt: skip
        "adaptation": None if report.adaptation is None else {
            "gradients": report.adaptation.gradients,
            "learning_rates": report.adaptation.learning_rates,
            "exponent": report.adaptation.exponent, "r2": report.adaptation.r2,
        },  # fmt: skip
        "coupling": None if report.coupling is None else dataclasses.asdict(report.coupling),
        "distilled": {"description": d.description, "mechanisms": list(d.mechanisms),
                      "r2": d.r2, "ablation_r2": {k: v.r2 for k, v in d.ablations.items()},
                      "unexplained": d.unexplained, "residual_locations": d.residual_locations},
        "objectives": report.objectives,
        "kept": report.kept,
        "timings_s": report.timings,
    }  # fmt: skip


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.ndarray, jax.Array)):
        return _jsonable(np.asarray(x).tolist())
    if isinstance(x, (complex, np.complexfloating)):
        return {"re": _jsonable(float(x.real)), "im": _jsonable(float(x.imag))}
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(float(x)) else str(float(x))
    if isinstance(x, (np.integer, np.bool_)):
        return x.item()
    return x
