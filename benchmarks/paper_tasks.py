"""Benchmark: the paper's tasks, task x optimizer x meta-objective, with Fig. 1-style curves.

For each task (the three paper tasks, their robustness variants, and ``digits_conv``, a
family no shipped optimizer was trained on) tunes SGD with momentum, RMSProp and Adam on the
"tune" split with `optax_lopt.baselines.compare` and evaluates them, the task's shipped
paper optimizer (``pretrained(task)``, the "learned" column) and the shipped general-purpose
optimizer (``pretrained("general")``) on ``--num_instances`` held-out ("test") instances.
The score is the paper's meta-objective ``mean_t f_t / f_0`` (lower is better). ``learned
vs best`` is the paper optimizer's score relative to the best tuned baseline (-30% means 30%
lower), ``general vs adam`` the general optimizer's relative to tuned Adam.

``digits_conv`` is compared with Adam only, tuned over learning rates 1e-3 to 0.316 in
quarter decades (`DIGITS_CONV_TUNING`): the convnet makes the full grid slow on a 2-core CPU,
and the best rate, 0.0316, lies well inside the narrowed range.

``--ship=name=path`` evaluates the weights written by ``examples/meta_train.py`` at ``path``
(``<workdir>/final``) as "learned" on the family ``name`` (``general``: on ``digits_conv``,
a family it never saw) and its variant, and copies them into
``optax_lopt/pretrained_weights/<name>`` with those rows added to their metadata as
``evaluation``.

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
from optax_lopt.pretrained import WEIGHTS_DIR
from optax_lopt.serialization import read_config

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
_SHIP = flags.DEFINE_list("ship", [], "name=path pairs: evaluate path's weights, then ship them.")

VARIANTS = {
    "linear_regression": {"dim": 20},
    "rosenbrock": {"num_steps": 400},
    "two_moons": {"hidden_sizes": (64, 64)},
}
"""The robustness setting of each family: same distribution, another size or horizon."""

BASELINES = tuple(baselines.OPTIMIZERS)
COLUMNS = (*BASELINES, "learned", "general")

DIGITS_CONV_TUNING = {"optimizers": ("adam",), "learning_rates": baselines.LEARNING_RATES[4:15]}
"""How the baselines are tuned on digits_conv (Adam over 1e-3 to 0.316); others: full grids."""

SHIP_FAMILY = {"general": "digits_conv"}
"""Shipped names evaluated on another family than their own: one they were never trained on."""


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


def run_setting(task: str, kwargs: dict, candidates: dict, num_instances: int, cache_dir):
    """Compares ``candidates`` with the tuned baselines on one task setting.

    Returns:
      ``(row, results)``: the JSON row (objectives, s.e.m.s, tuned hyperparameters, the best
      baseline, ``relative_to_best`` of "learned" and ``general_vs_adam`` where present) and
      label -> `EvaluationResult`.
    """
    start = time.time()
    tuning = DIGITS_CONV_TUNING if task == "digits_conv" else {}
    comparison = baselines.compare(
        candidates,
        tasks.family(task, **kwargs),
        num_instances=num_instances,
        cache_dir=cache_dir,
        **tuning,
    )
    results = comparison.results
    row = {
        "family": task,
        "family_kwargs": _jsonable(kwargs),
        "num_instances": num_instances,
        "objectives": {k: r.objective for k, r in results.items()},
        "objective_sem": {k: r.objective_sem for k, r in results.items()},
        "baseline_hyperparams": comparison.hyperparams,
        "best_baseline": comparison.best_baseline,
    }
    if "learned" in results:
        row["relative_to_best"] = comparison.relative_to_best("learned")
    if "general" in results:
        row["general_vs_adam"] = results["general"].objective / results["adam"].objective - 1.0
    row["seconds"] = time.time() - start
    return row, results


def _settings(task: str) -> list[dict]:
    return [{}, VARIANTS[task]] if _VARIANTS.value and task in VARIANTS else [{}]


def ship(name: str, path: str) -> list[dict]:
    """Evaluates the weights at ``path`` and copies them into the package as ``name``."""
    lopt, theta = optax_lopt.load(path)
    task = SHIP_FAMILY.get(name, name)
    rows = []
    for kwargs in _settings(task):
        row, _ = run_setting(
            task, kwargs, {"learned": lopt.transform(theta)}, _NUM_INSTANCES.value, _CACHE_DIR.value
        )
        rows.append(row)
    metadata = dict(read_config(path).get("metadata", {}))
    metadata["evaluation"] = rows
    optax_lopt.save(os.path.join(WEIGHTS_DIR, name), lopt, theta, metadata=metadata)
    return rows


def _cell(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:+.1f}%" if percent else f"{value:.4g}"


def main(argv: list[str]) -> None:
    del argv
    rows = []
    panels = {}
    if _SHIP.value:
        for pair in _SHIP.value:
            name, _, path = pair.partition("=")
            if not path:
                raise ValueError(f"ship: expected name=path pairs, got {pair!r}.")
            rows.extend(ship(name, path))
    else:
        for task in _TASKS.value:
            for kwargs in _settings(task):
                row, results = run_setting(
                    task, kwargs, _candidates(task), _NUM_INSTANCES.value, _CACHE_DIR.value
                )
                rows.append(row)
                if not kwargs:
                    panels[task] = results
    header = f"{'task':<18} {'setting':<18}" + "".join(f"{c:>9}" for c in COLUMNS)
    print(header + f"{'learned vs best':>17}{'general vs adam':>17}")
    for r in rows:
        setting = ",".join(f"{k}={v}" for k, v in r["family_kwargs"].items()) or "default"
        cells = "".join(f"{_cell(r['objectives'].get(c)):>9}" for c in COLUMNS)
        print(
            f"{r['family']:<18} {setting:<18}{cells}"
            f"{_cell(r.get('relative_to_best'), True):>17}"
            f"{_cell(r.get('general_vs_adam'), True):>17}"
        )
    if _FIGURE.value and panels:
        os.makedirs(os.path.dirname(_FIGURE.value) or ".", exist_ok=True)
        evaluation.plot_panels(panels, _FIGURE.value)
        print(f"figure: {_FIGURE.value}")
    defaults = [r for r in rows if not r["family_kwargs"]]
    headline = {
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
        "jax": jax.__version__,
        "learned_vs_best": {
            r["family"]: r["relative_to_best"] for r in defaults if "relative_to_best" in r
        },
        "general_vs_adam": {
            r["family"]: r["general_vs_adam"] for r in defaults if "general_vs_adam" in r
        },
        "results": rows,
    }
    print(json.dumps(headline))


if __name__ == "__main__":
    app.run(main)
