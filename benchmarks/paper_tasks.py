"""Benchmark: the paper's tasks, task x optimizer x meta-objective, with Fig. 1-style curves.

For each task (the three paper tasks, their robustness variants, and ``digits_conv``, a
family no shipped optimizer was trained on) tunes SGD with momentum, RMSProp and Adam on the
"tune" split with `optax_lopt.baselines.compare` and evaluates them, the task's shipped
paper optimizer (``pretrained(task)``, the "learned" column) and the shipped general-purpose
optimizer (``pretrained("general")``) on ``--num_instances`` held-out ("test") instances.
The score is the paper's meta-objective ``mean_t f_t / f_0`` (lower is better). ``learned
vs best`` is the paper optimizer's score relative to the best tuned baseline (-30% means 30%
lower), ``general vs adam`` the general optimizer's relative to tuned Adam.

Writes the loss curves of the default setting of every task, mean +/- s.e.m. over the
held-out instances, side by side like the paper's Fig. 1 (``--figure``). Prints the table,
then one JSON object as the last line.

Run: ``python benchmarks/paper_tasks.py`` (``--help`` for flags; about 10 minutes on a 2-core
CPU with a warm tuning cache, plus the tuning itself on the first run).

References:
  Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
  mechanisms", arXiv 2011.02159.
"""

from __future__ import annotations

import json
import os
import platform
import time

import jax
from absl import app, flags

import optax_lopt
from optax_lopt import baselines, evaluation, tasks

_TASKS = flags.DEFINE_list(
    "tasks",
    ["linear_regression", "rosenbrock", "two_moons", "digits_conv"],
    "Task families to benchmark.",
)
_NUM_INSTANCES = flags.DEFINE_integer("num_instances", 128, "Held-out instances per setting.")
_CACHE_DIR = flags.DEFINE_string(
    "cache_dir", "/tmp/optax_lopt_tuning", "Where baseline tuning results are cached."
)
_VARIANTS = flags.DEFINE_bool("variants", True, "Also evaluate each family's variant setting.")
_FIGURE = flags.DEFINE_string(
    "figure", "docs/figures/paper_tasks.png", "Where the loss-curve figure goes ('' for none)."
)

VARIANTS = {
    "linear_regression": {"dim": 20},
    "rosenbrock": {"num_steps": 400},
    "two_moons": {"hidden_sizes": (64, 64)},
}
"""The robustness setting of each family: same distribution, another size or horizon."""

BASELINES = tuple(baselines.OPTIMIZERS)
COLUMNS = (*BASELINES, "learned", "general")


def _candidates(task: str) -> dict:
    names = optax_lopt.pretrained_names()
    out = {}
    if task in names:
        out["learned"] = optax_lopt.pretrained(task)
    if "general" in names:
        out["general"] = optax_lopt.pretrained("general")
    return out


def _jsonable(kwargs: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}


def run_setting(task: str, kwargs: dict, num_instances: int, cache_dir: str | None):
    """Compares the shipped optimizers with the tuned baselines on one task setting."""
    start = time.time()
    comparison = baselines.compare(
        _candidates(task),
        tasks.family(task, **kwargs),
        num_instances=num_instances,
        cache_dir=cache_dir,
    )
    results = comparison.results
    row = {
        "task": task,
        "family_kwargs": _jsonable(kwargs),
        "num_instances": num_instances,
        "objectives": {k: r.objective for k, r in results.items()},
        "objective_sem": {k: r.objective_sem for k, r in results.items()},
        "baseline_hyperparams": comparison.hyperparams,
        "best_baseline": comparison.best_baseline,
        "seconds": None,
    }
    if "learned" in results:
        row["learned_vs_best"] = comparison.relative_to_best("learned")
    if "general" in results:
        row["general_vs_adam"] = results["general"].objective / results["adam"].objective - 1.0
    row["seconds"] = time.time() - start
    return row, results


def _cell(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:+.1f}%" if percent else f"{value:.4g}"


def main(argv: list[str]) -> None:
    del argv
    rows = []
    panels = {}
    for task in _TASKS.value:
        settings = [{}]
        if _VARIANTS.value and task in VARIANTS:
            settings.append(VARIANTS[task])
        for kwargs in settings:
            row, results = run_setting(task, kwargs, _NUM_INSTANCES.value, _CACHE_DIR.value)
            rows.append(row)
            if not kwargs:
                panels[task] = results
    header = f"{'task':<18} {'setting':<18}" + "".join(f"{c:>9}" for c in COLUMNS)
    print(header + f"{'learned vs best':>17}{'general vs adam':>17}")
    for r in rows:
        setting = ",".join(f"{k}={v}" for k, v in r["family_kwargs"].items()) or "default"
        cells = "".join(f"{_cell(r['objectives'].get(c)):>9}" for c in COLUMNS)
        print(
            f"{r['task']:<18} {setting:<18}{cells}"
            f"{_cell(r.get('learned_vs_best'), True):>17}"
            f"{_cell(r.get('general_vs_adam'), True):>17}"
        )
    if _FIGURE.value:
        os.makedirs(os.path.dirname(_FIGURE.value) or ".", exist_ok=True)
        evaluation.plot_panels(panels, _FIGURE.value)
        print(f"figure: {_FIGURE.value}")
    headline = {
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
        "jax": jax.__version__,
        "learned_vs_best": {
            r["task"]: r["learned_vs_best"]
            for r in rows
            if not r["family_kwargs"] and "learned_vs_best" in r
        },
        "general_vs_adam": {
            r["task"]: r["general_vs_adam"]
            for r in rows
            if not r["family_kwargs"] and "general_vs_adam" in r
        },
        "results": rows,
    }
    print(json.dumps(headline))


if __name__ == "__main__":
    app.run(main)
