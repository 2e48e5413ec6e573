"""Benchmark: meta-training speed and progress of each gradient estimator.

For each estimator, meta-trains ``--architecture`` on ``--task`` for ``--num_outer_steps`` outer
steps with ``optax_lopt.meta.MetaTrainer`` (no workdir, so no disk I/O) and reports the time to
compile the outer step, the outer steps per second after that, and the cut in mean meta-loss
between the first and last 20 outer steps. Prints a table, then one JSON object as the last
line.

The architecture, task, estimator settings, meta-optimizer and seed are the flags of
``optax_lopt.meta.MetaTrainingRecipe`` (the defaults of ``examples/meta_train.py``), built with
``optax_lopt.meta.meta_training_recipe``; ``--estimators`` lists the estimators to time.

Run: ``python benchmarks/meta_training.py`` (``--help`` for flags).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time

import jax
import numpy as np
from absl import app, flags

from optax_lopt.meta import MetaTrainer, MetaTrainingRecipe, estimator_names
from optax_lopt.meta.config_flags import config_from_flags, define_flags
from optax_lopt.meta.meta_training_recipe import (
    build_estimator,
    build_initial_theta,
    build_lopt,
    build_meta_optimizer,
)

_ESTIMATORS = flags.DEFINE_list(
    "estimators", ["truncated_bptt", "truncated_es", "pes", "hybrid"], "Estimators to time."
)
flags.register_validator(
    "estimators",
    lambda names: set(names) <= set(estimator_names()),
    message=f"--estimators: expected names among {', '.join(estimator_names())}.",
)
define_flags(MetaTrainingRecipe, exclude=("estimator",))

_WINDOW = 20


def bench_one(recipe: MetaTrainingRecipe) -> dict[str, float | str]:
    """Compiles and runs ``recipe``'s estimator; returns its row of the table."""
    lopt = build_lopt(recipe)
    losses: list[float] = []
    trainer = MetaTrainer(
        build_estimator(recipe, lopt),
        build_meta_optimizer(recipe),
        lopt=lopt,
        theta=build_initial_theta(recipe, lopt)[0],
        seed=recipe.seed,
        clip_norm=recipe.clip_norm or None,
        progress=False,
        on_step=lambda step, record: losses.append(record["meta_loss"]),
    )
    start = time.perf_counter()
    state = trainer.init_state()
    state, _ = trainer.step(state)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    theta = trainer.train(recipe.num_outer_steps)  # from scratch, includes the first step
    jax.block_until_ready(theta)
    run_s = time.perf_counter() - start
    values = np.asarray(losses, np.float64)
    window = min(_WINDOW, max(1, values.size // 2))
    first, last = float(np.nanmean(values[:window])), float(np.nanmean(values[-window:]))
    return {
        "estimator": recipe.estimator,
        "compile_s": compile_s,
        "outer_steps_per_s": recipe.num_outer_steps / run_s,
        "meta_loss_first": first,
        "meta_loss_last": last,
        "reduction": 1.0 - last / first,
    }


def main(argv: list[str]) -> None:
    del argv
    recipe = config_from_flags(MetaTrainingRecipe, exclude=("estimator",))
    rows = [bench_one(dataclasses.replace(recipe, estimator=n)) for n in _ESTIMATORS.value]
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, " + (
        f"jax {jax.__version__} on {jax.devices()[0].platform}"
    )
    print(
        f"Meta-training {recipe.architecture} on {recipe.task_mix or recipe.task}: "
        f"{recipe.num_outer_steps} outer "
        f"steps, {recipe.num_tasks} tasks, truncation {recipe.truncation_length} ({machine})"
    )
    header = f"{'estimator':<16}{'compile s':>11}{'steps/s':>10}{'first':>9}{'last':>9}{'cut':>8}"
    print(header)
    for r in rows:
        print(
            f"{r['estimator']:<16}{r['compile_s']:>11.1f}{r['outer_steps_per_s']:>10.1f}"
            f"{r['meta_loss_first']:>9.3f}{r['meta_loss_last']:>9.3f}{r['reduction']:>8.0%}"
        )
    print(
        json.dumps(
            {
                "benchmark": "meta_training",
                "task": recipe.task,
                "architecture": recipe.architecture,
                "num_outer_steps": recipe.num_outer_steps,
                "num_tasks": recipe.num_tasks,
                "truncation_length": recipe.truncation_length,
                "machine": machine,
                # every recipe setting but the estimator (one per row), e.g. a --task_mix
                "recipe": {k: v for k, v in dataclasses.asdict(recipe).items() if k != "estimator"},
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    app.run(main)
