"""Benchmark: self-trained learned optimizers vs the same architecture meta-trained with Adam.

On the mix of ``linear_regression`` and ``two_moons`` (128 points, one hidden layer of 16,
horizon 200), both start from random ``MLPLOpt`` weights (``skip_init="random"``, features
clipped at ``--feature_clip``, 0 for no clip):

* self-training (``optax_lopt.meta.SelfTrainer``): ``--population_size`` members, each with
  PES on ``--num_tasks`` tasks per family, each member's meta-update applied by its own
  learned optimizer (``--rule=self``; ``--rule=best``: the population's best) times its step
  gain (explored by PBT with ``--step_gain_factor``), PBT every ``--exploit_every`` steps;
  no hand-designed optimizer anywhere;
* Adam (``optax_lopt.meta.MetaTrainer``, ``optax.adam``, global-norm clip 1): PES on
  ``population_size * num_tasks`` tasks per family, so that each outer step and the whole run
  spend exactly the self-training population's inner steps; its meta learning rate is picked
  from ``--meta_learning_rates`` on the "tune" split (those extra runs are not counted).

With ``--aux_quadratic_dim=D`` (default 0: off) both trainings also meta-train on a noisy
``D``-dimensional quadratic (``--aux_quadratic_noise``), with the same tasks per member and
the inner-step budget counting it; evaluation stays on the two families above. The paper
credits its diverse task distribution for making the meta-problem learnable; the docs'
self-training results page compares the dimensions and noise levels tried.

The self-trained optimizer reported is the member with the best meta-objective on the "tune"
split (never "test"). Both are evaluated with ``optax_lopt.evaluation`` on the same held-out
("test") instances of both families; the meta-objective (mean over the horizon of loss /
initial loss, lower is better) is averaged over the two families. The feedback loop is
measured with `optax_lopt.meta.probe_meta_optimizers`: the best member saved every
``--probe_every`` steps meta-trains ``--probe_trainees`` fresh random trainees for
``--probe_steps`` outer steps (Adam at the tuned meta learning rate as the reference). Prints
a table, writes the population figure (``--figure``), then one JSON object as the last line:
``{"self_trained": ..., "adam_trained": ..., ...}``.

The run's settings, defaults and builders are ``optax_lopt.meta.SelfTrainingRecipe`` and
``optax_lopt.meta.self_training_recipe`` (shared with ``examples/self_train.py``); the flags
defined here are the benchmark's own (the Adam reference, the tuning split, the probe).

Run: ``python benchmarks/self_training.py`` (``--help`` for flags).

References:
  Metz, Freeman, Maheswaranathan, Sohl-Dickstein, "Training Learned Optimizers with Randomly
  Initialized Learned Optimizers", arXiv 2101.07367.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from optax_lopt import evaluation
from optax_lopt.meta import (
    MetaTrainer,
    SelfTrainingRecipe,
    plot_population,
    probe_meta_optimizers,
)
from optax_lopt.meta.config_flags import config_from_flags, define_flags
from optax_lopt.meta.pbt import cap_loss, finite_argmin, running_loss
from optax_lopt.meta.self_training_recipe import (
    build_estimator,
    build_lopt,
    build_trainer,
    evaluated_families,
    held_out,
    inner_steps,
    training_mix,
)
from optax_lopt.tasks.mixes import SELF_TRAINING_EVALUATED

_META_LEARNING_RATES = flags.DEFINE_list(
    "meta_learning_rates", ["1e-2", "3e-2", "1e-1"], "Adam meta learning rates tried."
)
_NUM_TUNE_INSTANCES = flags.DEFINE_integer("num_tune_instances", 32, "'tune' instances.")
_PROBE_EVERY = flags.DEFINE_integer("probe_every", 25, "Outer steps between probed snapshots.")
_PROBE_STEPS = flags.DEFINE_integer("probe_steps", 40, "Outer steps of each probe trainee.")
_PROBE_TRAINEES = flags.DEFINE_integer("probe_trainees", 4, "Fresh trainees per snapshot.")
define_flags(SelfTrainingRecipe)


def _tune_scores(lopt, thetas: list[Any], families, num: int) -> list[float]:
    """Per theta, the mean over families of the meta-objective on ``num`` "tune" instances.

    Theta is an argument of the jitted function (not a constant), so each family compiles once.
    """
    keys = evaluation.instance_keys("tune", num)
    scores = np.zeros((len(thetas), len(families)))
    for j, f in enumerate(families):

        def objective(theta, k, f=f):
            losses = evaluation.run_on_instances(lopt.transform(theta), f, k)
            return jnp.mean(evaluation.objective(losses))

        run = jax.jit(objective)
        for i, theta in enumerate(thetas):
            scores[i, j] = float(run(theta, keys))
    return [float(v) for v in scores.mean(axis=1)]


def _running_mean(values: list[float], decay: float) -> list[float]:
    """The EMA the population is ranked by (first value as is), for the Adam reference."""
    out: list[float] = []
    for step, v in enumerate(values):
        loss = np.float64(np.nan if v is None else v)
        out.append(float(running_loss(out[-1] if out else 0.0, loss, step, decay)))
    return out


def _probe_score(losses: np.ndarray) -> list[float]:
    """Per snapshot: median over trainees of the mean meta-loss of the last 10 probe steps."""
    tail = cap_loss(np.asarray(losses))[:, :, -10:]
    return [float(v) for v in np.median(tail.mean(axis=2), axis=1)]


def _self_train(recipe: SelfTrainingRecipe, lopt) -> dict[str, Any]:
    """Self-training, paused every --probe_every steps to keep the best member.

    The pause resumes from the checkpoint just written, bit-identical to an uninterrupted run.
    """
    records: list[dict[str, Any]] = []
    workdir = tempfile.mkdtemp(prefix="self_training_")
    start = time.perf_counter()
    steps = recipe.num_outer_steps
    trainer = build_trainer(
        recipe,
        workdir=workdir,
        checkpoint_every=_PROBE_EVERY.value,
        async_checkpointing=False,
        progress=False,
        on_step=lambda step, record: records.append(record),
    )
    snapshots = {0: trainer.best_theta(trainer.init_state())}
    for at in range(_PROBE_EVERY.value, steps + _PROBE_EVERY.value, _PROBE_EVERY.value):
        snapshots[min(at, steps)] = trainer.train(min(at, steps))
    seconds = time.perf_counter() - start
    shutil.rmtree(workdir, ignore_errors=True)
    size = recipe.population_size
    members = [jax.tree.map(lambda x, i=i: x[i], trainer.state.theta) for i in range(size)]
    families = evaluated_families(recipe)
    tune = _tune_scores(lopt, members, families, _NUM_TUNE_INSTANCES.value)
    member = int(finite_argmin(tune))
    theta = jax.tree.map(lambda x: x[member], trainer.state.theta)
    return {
        "records": records,
        "snapshots": snapshots,
        "seconds": seconds,
        "member": member,
        "test": held_out(recipe, lopt, theta, families),
        "ema_decay": trainer.ema_decay,
    }


def _adam_train(recipe: SelfTrainingRecipe, lopt, ema_decay: float) -> tuple[dict, list[dict]]:
    """Adam, the same inner steps per outer step and in total, meta learning rate tuned."""
    rows = []
    for lr in (float(v) for v in _META_LEARNING_RATES.value):
        start = time.perf_counter()
        losses: list[float] = []
        adam = MetaTrainer(
            build_estimator(recipe, lopt, recipe.population_size * recipe.num_tasks),
            optax.adam(lr),
            lopt=lopt,
            seed=recipe.seed,
            clip_norm=1.0,
            progress=False,
            on_step=lambda step, record, out=losses: out.append(record["meta_loss"]),
        )
        theta = adam.train(recipe.num_outer_steps)
        seconds = time.perf_counter() - start
        rows.append({"meta_learning_rate": lr, "theta": theta, "seconds": seconds})
        rows[-1]["running"] = _running_mean(losses, ema_decay)
    families = evaluated_families(recipe)
    scores = _tune_scores(lopt, [r["theta"] for r in rows], families, _NUM_TUNE_INSTANCES.value)
    for r, score in zip(rows, scores, strict=True):
        r["tune"] = score
    best = rows[int(finite_argmin([r["tune"] for r in rows]))]
    best["test"] = held_out(recipe, lopt, best["theta"], families)
    return best, rows


def _feedback(recipe, lopt, snapshots, adam_lr: float) -> tuple[dict[int, float], float]:
    """The feedback loop: each snapshot meta-trains the same fresh random trainees."""
    probe_est = build_estimator(recipe, lopt)
    kwargs = dict(
        num_steps=_PROBE_STEPS.value, num_trainees=_PROBE_TRAINEES.value, seed=recipe.seed + 7
    )
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *snapshots.values())
    probe = _probe_score(probe_meta_optimizers(probe_est, lopt, stacked, **kwargs))
    adam_meta = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(adam_lr))
    adam = _probe_score(probe_meta_optimizers(probe_est, lopt, meta_optimizer=adam_meta, **kwargs))
    return dict(zip(snapshots, probe, strict=True)), adam[0]


def _figure(recipe, selfrun, best_adam, feedback, adam_probe) -> None:
    os.makedirs(os.path.dirname(recipe.figure) or ".", exist_ok=True)
    label = f"Adam-trained (meta-lr {best_adam['meta_learning_rate']:g}), same inner steps"
    plot_population(
        selfrun["records"],
        recipe.figure,
        title=(
            f"Self-training MLPLOpt from random init ({recipe.population_size} members, "
            f"rule={recipe.rule})"
        ),
        references={label: best_adam["running"]},
        feedback=feedback,
        feedback_references={"Adam as the meta-optimizer": adam_probe},
    )


def _print_table(recipe, selfrun, best_adam, rows, feedback, adam_probe, machine) -> None:
    size, steps = recipe.population_size, recipe.num_outer_steps
    self_test, adam_test = selfrun["test"], best_adam["test"]
    print(
        f"Self-training vs Adam meta-training, MLPLOpt(hidden {recipe.hidden_size}, step_mult "
        f"{recipe.step_mult}, random init), {steps} outer steps, {inner_steps(recipe)} inner "
        f"steps each ({machine})"
    )
    print(
        f"Training mix: {', '.join(c.name for c in training_mix(recipe))}; evaluated on "
        f"{', '.join(SELF_TRAINING_EVALUATED)}"
    )
    print(f"{'meta-trainer':<34}{'lin. regr.':>11}{'two moons':>11}{'mean':>9}{'train s':>9}")
    for label, test, seconds in (
        (
            f"self-trained ({size} members, member {selfrun['member']})",
            self_test,
            selfrun["seconds"],
        ),
        (f"Adam lr {best_adam['meta_learning_rate']:g} (tuned)", adam_test, best_adam["seconds"]),
    ):
        print(
            f"{label:<34}{test['linear_regression']:>11.4f}{test['two_moons']:>11.4f}"
            f"{np.mean(list(test.values())):>9.4f}{seconds:>9.0f}"
        )
    print("Adam meta learning rates ('tune' split meta-objective):")
    for r in rows:
        print(f"  {r['meta_learning_rate']:<8g}{r['tune']:>9.4f}")
    print("Running meta-loss (EMA) by outer step: best member / Adam-trained / best's gain")
    for at in sorted({10, 25, 50, 75, 100, 125, steps} & set(range(1, steps + 1))):
        r = selfrun["records"][at - 1]
        print(
            f"  {at:>5}  {r['best_ema_meta_loss']:.4f}  {best_adam['running'][at - 1]:.4f}  "
            f"{r['step_gain'][r['best']]:.3g}"
        )
    print(
        f"Feedback probe: {_PROBE_TRAINEES.value} fresh random trainees meta-trained for "
        f"{_PROBE_STEPS.value} outer steps by the best member saved at each step (median over "
        "trainees of the mean meta-loss of the last 10 steps; lower is better)"
    )
    for at, value in feedback.items():
        print(f"  snapshot {at:>5}  {value:.4f}")
    print(f"  Adam (meta-lr {best_adam['meta_learning_rate']:g}, clip 1)  {adam_probe:.4f}")
    print(f"Figure: {recipe.figure}")


def main(argv: list[str]) -> None:
    del argv
    recipe = config_from_flags(SelfTrainingRecipe)
    lopt = build_lopt(recipe)
    selfrun = _self_train(recipe, lopt)
    best_adam, rows = _adam_train(recipe, lopt, selfrun["ema_decay"])
    feedback, adam_probe = _feedback(
        recipe, lopt, selfrun["snapshots"], best_adam["meta_learning_rate"]
    )
    if recipe.figure:
        _figure(recipe, selfrun, best_adam, feedback, adam_probe)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, " + (
        f"jax {jax.__version__} on {jax.devices()[0].platform}"
    )
    _print_table(recipe, selfrun, best_adam, rows, feedback, adam_probe, machine)
    print(
        json.dumps(
            {
                "self_trained": float(np.mean(list(selfrun["test"].values()))),
                "adam_trained": float(np.mean(list(best_adam["test"].values()))),
                "self_trained_per_family": selfrun["test"],
                "adam_trained_per_family": best_adam["test"],
                "adam_meta_learning_rate": best_adam["meta_learning_rate"],
                "adam_tune": {str(r["meta_learning_rate"]): r["tune"] for r in rows},
                "self_trained_member": selfrun["member"],
                "population_size": recipe.population_size,
                "rule": recipe.rule,
                "num_outer_steps": recipe.num_outer_steps,
                "aux_quadratic_dim": recipe.aux_quadratic_dim,
                "inner_steps": inner_steps(recipe),
                "self_training_seconds": selfrun["seconds"],
                "feedback_probe": {str(k): v for k, v in feedback.items()},
                "feedback_probe_adam": adam_probe,
                "machine": machine,
            }
        )
    )


if __name__ == "__main__":
    app.run(main)
