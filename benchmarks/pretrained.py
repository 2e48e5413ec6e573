"""Benchmark: shipped paper optimizers against tuned baselines on held-out instances.

For every shipped optimizer (``optax_lopt.pretrained_names()``, or ``--names``) and for each
setting of its task family (the family it was trained on, and a robustness variant: linear
regression in 20 dimensions, Rosenbrock over 400 steps, two moons with 64-unit hidden layers),
tunes SGD with momentum, RMSProp and Adam with ``optax_lopt.baselines.tune`` (on the "tune"
split) and evaluates all four on ``--num_instances`` held-out ("test") instances with
``optax_lopt.evaluation.evaluate``. The score is the paper's meta-objective
``mean_t f_t / f_0`` (lower is better); ``vs best`` is the learned optimizer's score relative
to the best tuned baseline (-30% means 30% lower). Prints a table, then one JSON object as the
last line.

``--ship=name=path`` evaluates the weights written by ``examples/meta_train.py`` at ``path``
(``<workdir>/final``) under ``name`` and copies them into
``optax_lopt/pretrained_weights/<name>`` with the evaluation added to their metadata.
Optimizers meant for new problems are evaluated on a family they never saw instead of their
name's (`EVAL_FAMILIES`: "general" on "digits_conv"); ``--baselines`` and
``--learning_rates`` narrow the tuning grid where runs are expensive.

Run: ``python benchmarks/pretrained.py`` (``--help`` for flags).

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
import optax_lopt.tasks
from optax_lopt import baselines, evaluation
from optax_lopt.pretrained import WEIGHTS_DIR
from optax_lopt.serialization import read_config

_NAMES = flags.DEFINE_list("names", None, "Shipped optimizers to evaluate (default: all).")
_SHIP = flags.DEFINE_list("ship", [], "name=path pairs: evaluate path's weights, then ship them.")
_NUM_INSTANCES = flags.DEFINE_integer("num_instances", 128, "Held-out instances per setting.")
_CACHE_DIR = flags.DEFINE_string(
    "cache_dir", "/tmp/optax_lopt_tuning", "Where baseline tuning results are cached."
)
_VARIANTS = flags.DEFINE_bool("variants", True, "Also evaluate each family's variant setting.")
_BASELINES = flags.DEFINE_list("baselines", ["sgdm", "rmsprop", "adam"], "Baselines to tune.")
_LEARNING_RATES = flags.DEFINE_list(
    "learning_rates", None, "Baselines' learning-rate grid (default: baselines.LEARNING_RATES)."
)

VARIANTS = {
    "linear_regression": {"dim": 20},
    "rosenbrock": {"num_steps": 400},
    "two_moons": {"hidden_sizes": (64, 64)},
}
"""The robustness setting of each family: same distribution, another size or horizon."""

BASELINES = ("sgdm", "rmsprop", "adam")

EVAL_FAMILIES = {"general": "digits_conv"}
"""Shipped names evaluated on another family than their own: one they were not trained on."""


def evaluate_setting(
    name: str,
    tx,
    family_kwargs: dict,
    num_instances: int,
    cache_dir: str | None,
    names: tuple[str, ...] = BASELINES,
    learning_rates: tuple[float, ...] = baselines.LEARNING_RATES,
) -> dict:
    """Tuned baselines and ``tx`` on held-out instances of ``family(name, **family_kwargs)``."""
    family = optax_lopt.tasks.family(name, **family_kwargs)
    optimizers = {}
    hyperparams = {}
    for opt in names:
        tuned = baselines.tune(family, opt, learning_rates, num_instances=16, cache_dir=cache_dir)
        optimizers[opt] = tuned.transform()
        hyperparams[opt] = tuned.hyperparams
    optimizers["learned"] = tx
    results = evaluation.evaluate(optimizers, family, num_instances=num_instances)
    scores = {k: r.objective for k, r in results.items()}
    best = min(names, key=lambda k: scores[k])
    return {
        "family": name,
        "family_kwargs": {
            k: list(v) if isinstance(v, tuple) else v for k, v in family_kwargs.items()
        },
        "num_instances": num_instances,
        "objectives": scores,
        "objective_sem": {k: r.objective_sem for k, r in results.items()},
        "baseline_hyperparams": hyperparams,
        "best_baseline": best,
        "relative_to_best": scores["learned"] / scores[best] - 1.0,
    }


def _settings(name: str, variants: bool) -> list[dict]:
    out = [{}]
    if variants and name in VARIANTS:
        out.append(VARIANTS[name])
    return out


def main(argv: list[str]) -> None:
    del argv
    jobs = []  # (name, tx, ship_from)
    for pair in _SHIP.value:
        name, _, path = pair.partition("=")
        if not path:
            raise ValueError(f"ship: expected name=path pairs, got {pair!r}.")
        lopt, theta = optax_lopt.load(path)
        jobs.append((name, lopt.transform(theta), path))
    if not _SHIP.value or _NAMES.value:
        for name in _NAMES.value or optax_lopt.pretrained_names():
            jobs.append((name, optax_lopt.pretrained(name), None))
    rows = []
    for name, tx, ship_from in jobs:
        evaluations = []
        family_name = EVAL_FAMILIES.get(name, name)
        lrs = baselines.LEARNING_RATES
        if _LEARNING_RATES.value:
            lrs = tuple(float(v) for v in _LEARNING_RATES.value)
        for kwargs in _settings(family_name, _VARIANTS.value):
            start = time.time()
            result = evaluate_setting(
                family_name,
                tx,
                kwargs,
                _NUM_INSTANCES.value,
                _CACHE_DIR.value,
                tuple(_BASELINES.value),
                lrs,
            )
            result["optimizer"] = name
            result["seconds"] = time.time() - start
            evaluations.append(result)
            rows.append(result)
        if ship_from is not None:
            lopt, theta = optax_lopt.load(ship_from)
            metadata = dict(read_config(ship_from).get("metadata", {}))
            metadata["evaluation"] = evaluations
            optax_lopt.save(os.path.join(WEIGHTS_DIR, name), lopt, theta, metadata=metadata)
    print(
        f"{'family':<18} {'setting':<22} {'sgdm':>9} {'rmsprop':>9} {'adam':>9} "
        f"{'learned':>9} {'vs best':>8}"
    )
    for r in rows:
        setting = ",".join(f"{k}={v}" for k, v in r["family_kwargs"].items()) or "default"
        s = {k: f"{v:>9.4g}" for k, v in r["objectives"].items()}
        print(
            f"{r['family']:<18} {setting:<22} {s.get('sgdm', '-'):>9} "
            f"{s.get('rmsprop', '-'):>9} {s.get('adam', '-'):>9} {s['learned']:>9} "
            f"{100 * r['relative_to_best']:>+7.1f}%"
        )
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
                "jax": jax.__version__,
                "results": rows,
            }
        )
    )


if __name__ == "__main__":
    app.run(main)
