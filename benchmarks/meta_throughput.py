"""Meta-training throughput: inner task-steps per second for each gradient estimator.

Setting (issue 3, item 8): the learned optimizer ``MLPLOpt`` on the 10-d ``quadratic`` family,
8 tasks, truncations of 50 inner steps. One ``meta_gradient`` call (one truncation of every
task, the antithetic pair of ES-type estimators included, and the gradient estimate) is one
jitted call; for ``es`` and ``full_bptt`` (no truncation) a call unrolls the family's whole
horizon. A task-step is one inner step of one task; ES-type estimators run two inner
trajectories (``theta +/- eps``) per task, which are counted once.

With ``--general_recipe`` (default) it also times one outer step of the recipe
``pretrained("general")`` was meta-trained with (its metadata's ``meta_train_config``: PES on
the ``general_wide`` mix of nine components, 8 tasks each, truncation 20), the workload whose
wall time decides how much of a recipe fits in a session.

Prints a table, then one JSON object as the last line:
``{"inner_task_steps_per_s": {...}, "compile_s": {...}, ..., "general_recipe": {...}}``.

Usage:
  python benchmarks/meta_throughput.py [--estimators=pes,truncated_es,truncated_bptt]
      [--nogeneral_recipe]
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time

import jax
from absl import app, flags

import optax_lopt
from optax_lopt import meta, tasks
from optax_lopt.meta import meta_training_recipe

_ESTIMATORS = flags.DEFINE_list(
    "estimators", ["pes", "truncated_es", "truncated_bptt"], "Estimators to time."
)
_LOPT = flags.DEFINE_string("lopt", "MLPLOpt", "Learned optimizer architecture (class name).")
_NUM_TASKS = flags.DEFINE_integer("num_tasks", 8, "Tasks per meta-gradient.")
_TRUNCATION = flags.DEFINE_integer("truncation_length", 50, "Inner steps per truncation.")
_DIM = flags.DEFINE_integer("dim", 10, "Dimension of the quadratic family.")
_SECONDS = flags.DEFINE_float("seconds", 3.0, "Minimum timed seconds per estimator.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repeats per estimator; the best counts.")
_GENERAL = flags.DEFINE_bool(
    "general_recipe", True, "Also time one outer step of the general optimizer's recipe."
)


def _time_estimator(name: str, lopt, family) -> dict[str, float]:
    knobs = {"num_tasks": _NUM_TASKS.value, "truncation_length": _TRUNCATION.value}
    fields = meta.estimator_fields(name)  # es and full_bptt take no truncation_length
    est = meta.estimator(name, lopt, family, **{k: v for k, v in knobs.items() if k in fields})
    timing = _time_calls(est, lopt)
    # A call runs one truncation of each task; es and full_bptt run the whole horizon.
    unroll = est.truncation_length if "truncation_length" in fields else est.horizon
    steps = _NUM_TASKS.value * (unroll or family.num_steps)
    timing["inner_task_steps_per_s"] = steps / (timing["ms_per_call"] / 1e3)
    return timing


def _general_recipe() -> meta_training_recipe.MetaTrainingRecipe:
    """The recipe in ``pretrained("general")``'s metadata."""
    config = optax_lopt.pretrained_metadata("general")["meta_train_config"]
    fields = {f.name for f in dataclasses.fields(meta_training_recipe.MetaTrainingRecipe)}
    return meta_training_recipe.MetaTrainingRecipe(
        **{k: v for k, v in config.items() if k in fields}
    )


def _time_general_recipe(recipe: meta_training_recipe.MetaTrainingRecipe) -> dict[str, float]:
    """One outer step (meta-gradient) of ``recipe``."""
    lopt = meta_training_recipe.build_lopt(recipe)
    timing = _time_calls(meta_training_recipe.build_estimator(recipe, lopt), lopt)
    timing["outer_steps"] = recipe.num_outer_steps
    timing["outer_steps_s"] = recipe.num_outer_steps * timing["ms_per_call"] / 1e3
    return timing


def _time_calls(est, lopt) -> dict[str, float]:
    """Compile time and best time per jitted ``meta_gradient`` call of ``est``."""
    theta = lopt.init(jax.random.key(0))
    state = jax.jit(est.init)(theta, jax.random.key(1))
    step = jax.jit(est.meta_gradient, donate_argnums=(1,))
    start = time.perf_counter()
    compiled = step.lower(theta, state, jax.random.key(2)).compile()
    compile_s = time.perf_counter() - start
    grad, state, metrics = compiled(theta, state, jax.random.key(2))
    jax.block_until_ready((grad, state))

    # Calibrate how many calls fill the time budget, then take the best of a few repeats.
    calls, elapsed = 1, 0.0
    while elapsed < 0.5:
        calls *= 2
        start = time.perf_counter()
        for i in range(calls):
            grad, state, metrics = compiled(theta, state, jax.random.key(i))
        jax.block_until_ready((grad, state))
        elapsed = time.perf_counter() - start
    calls = max(1, int(calls * _SECONDS.value / elapsed / _REPEATS.value))
    best = float("inf")
    for r in range(_REPEATS.value):
        start = time.perf_counter()
        for i in range(calls):
            grad, state, metrics = compiled(theta, state, jax.random.key(1000 * r + i))
        jax.block_until_ready((grad, state))
        best = min(best, (time.perf_counter() - start) / calls)
    return {
        "compile_s": compile_s,
        "ms_per_call": 1e3 * best,
        "meta_loss": float(metrics["meta_loss"]),
    }


def main(argv):
    del argv
    lopt = optax_lopt.architecture(_LOPT.value)()
    family = tasks.family("quadratic", dim=_DIM.value)
    results = {name: _time_estimator(name, lopt, family) for name in _ESTIMATORS.value}

    device = jax.devices()[0]
    machine = f"{platform.processor() or platform.machine()}, {device.platform}"
    print(
        f"{_LOPT.value} on the {_DIM.value}-d quadratic, {_NUM_TASKS.value} tasks, "
        f"truncation {_TRUNCATION.value} ({machine})"
    )
    header = f"{'estimator':<16}{'task-steps/s':>14}{'ms/call':>10}{'compile s':>11}"
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        print(
            f"{name:<16}{r['inner_task_steps_per_s']:>14,.0f}{r['ms_per_call']:>10.2f}"
            f"{r['compile_s']:>11.2f}"
        )
    recipe = _general_recipe()
    general = _time_general_recipe(recipe) if _GENERAL.value else None
    if general is not None:
        print(
            f"\ngeneral recipe ({recipe.task_mix} mix): {general['ms_per_call']:.1f} ms per outer "
            f"step, compile {general['compile_s']:.1f} s; {general['outer_steps']:,} outer "
            f"steps = {general['outer_steps_s'] / 60:.1f} min"
        )
    print(
        json.dumps(
            {
                "inner_task_steps_per_s": {
                    n: round(r["inner_task_steps_per_s"]) for n, r in results.items()
                },
                "compile_s": {n: round(r["compile_s"], 3) for n, r in results.items()},
                "ms_per_call": {n: round(r["ms_per_call"], 4) for n, r in results.items()},
                "config": {
                    "lopt": _LOPT.value,
                    "family": f"quadratic(dim={_DIM.value})",
                    "num_tasks": _NUM_TASKS.value,
                    "truncation_length": _TRUNCATION.value,
                    "jax": jax.__version__,
                    "device": device.platform,
                },
                "general_recipe": None
                if general is None
                else {k: round(v, 4) for k, v in general.items() if k != "meta_loss"},
            }
        )
    )


if __name__ == "__main__":
    app.run(main)
