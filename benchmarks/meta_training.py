"""Benchmark: meta-training speed and progress of each gradient estimator.

For each estimator, meta-trains ``--architecture`` on ``--task`` for ``--num_outer_steps`` outer
steps with ``optax_lopt.meta.MetaTrainer`` (no workdir, so no disk I/O) and reports the time to
compile the outer step, the outer steps per second after that, and the cut in mean meta-loss
between the first and last 20 outer steps. Prints a table, then one JSON object as the last
line.

Run: ``python benchmarks/meta_training.py`` (``--help`` for flags).
"""

from __future__ import annotations

import json
import os
import platform
import time

import jax
import numpy as np
import optax
from absl import app, flags

import optax_lopt
import optax_lopt.tasks
from optax_lopt.meta import MetaTrainer, estimator, estimator_fields

_TASK = flags.DEFINE_string("task", "linear_regression", "Task family name.")
_ARCHITECTURE = flags.DEFINE_string("architecture", "MLPLOpt", "Learned optimizer class name.")
_ESTIMATORS = flags.DEFINE_list(
    "estimators", ["truncated_bptt", "truncated_es", "pes", "hybrid"], "Estimators to time."
)
_NUM_OUTER_STEPS = flags.DEFINE_integer("num_outer_steps", 300, "Outer steps per estimator.")
_NUM_TASKS = flags.DEFINE_integer("num_tasks", 8, "Tasks per outer step.")
_TRUNCATION_LENGTH = flags.DEFINE_integer("truncation_length", 20, "Inner steps per outer step.")
_META_LEARNING_RATE = flags.DEFINE_float("meta_learning_rate", 3e-3, "Adam meta learning rate.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")

_WINDOW = 20


def bench_one(name: str) -> dict[str, float | str]:
    """Compiles and runs one estimator; returns its row of the table."""
    lopt = optax_lopt.architecture(_ARCHITECTURE.value)()
    family = optax_lopt.tasks.family(_TASK.value)
    kwargs = {"num_tasks": _NUM_TASKS.value}
    if "truncation_length" in estimator_fields(name):
        kwargs["truncation_length"] = _TRUNCATION_LENGTH.value
    est = estimator(name, lopt, family, **kwargs)
    losses: list[float] = []
    trainer = MetaTrainer(
        est,
        optax.adam(_META_LEARNING_RATE.value),
        lopt=lopt,
        seed=_SEED.value,
        clip_norm=1.0,
        progress=False,
        on_step=lambda step, record: losses.append(record["meta_loss"]),
    )
    start = time.perf_counter()
    state = trainer.init_state()
    state, _ = trainer.step(state)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    theta = trainer.train(_NUM_OUTER_STEPS.value)  # from scratch, includes the first step
    jax.block_until_ready(theta)
    run_s = time.perf_counter() - start
    values = np.asarray(losses, np.float64)
    window = min(_WINDOW, max(1, values.size // 2))
    first, last = float(np.nanmean(values[:window])), float(np.nanmean(values[-window:]))
    return {
        "estimator": name,
        "compile_s": compile_s,
        "outer_steps_per_s": _NUM_OUTER_STEPS.value / run_s,
        "meta_loss_first": first,
        "meta_loss_last": last,
        "reduction": 1.0 - last / first,
    }


def main(argv: list[str]) -> None:
    del argv
    rows = [bench_one(name) for name in _ESTIMATORS.value]
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, " + (
        f"jax {jax.__version__} on {jax.devices()[0].platform}"
    )
    print(
        f"Meta-training {_ARCHITECTURE.value} on {_TASK.value}: {_NUM_OUTER_STEPS.value} outer "
        f"steps, {_NUM_TASKS.value} tasks, truncation {_TRUNCATION_LENGTH.value} ({machine})"
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
                "task": _TASK.value,
                "architecture": _ARCHITECTURE.value,
                "num_outer_steps": _NUM_OUTER_STEPS.value,
                "num_tasks": _NUM_TASKS.value,
                "truncation_length": _TRUNCATION_LENGTH.value,
                "machine": machine,
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    app.run(main)
