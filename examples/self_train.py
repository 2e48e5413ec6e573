r"""Self-training: randomly initialised learned optimizers that train themselves.

A population of ``MLPLOpt`` optimizers with random weights (``skip_init="random"``: nothing
Adam-like built in) is meta-trained on the mix of ``linear_regression`` and ``two_moons``
with PES; each member's meta-gradient is applied by a learned optimizer from the population
(``--rule=self``, the default: the member itself; ``--rule=best``: the member with the
lowest running meta-loss), and population-based training copies better members over worse
ones every ``--exploit_every`` outer steps. No hand-designed optimizer is used anywhere.

  python examples/self_train.py --workdir=/tmp/self_train
  python examples/self_train.py --workdir=/tmp/self_train --population_size=8 --rule=best

``MLPLOpt(feature_clip=5)`` (``--feature_clip``, 0 turns it off) keeps one spike in a PES
meta-gradient from becoming a huge step on a member's own weights (see README).

Writes ``<workdir>/metrics.jsonl`` (one record per outer step, every member), orbax
checkpoints (a rerun with the same flags resumes), the best member to ``<workdir>/final``
(``optax_lopt.load``) and the figure of the population's meta-loss (``--figure``).

References:
  Metz, Freeman, Maheswaranathan, Sohl-Dickstein, "Training Learned Optimizers with Randomly
  Initialized Learned Optimizers", arXiv 2101.07367.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from absl import app, flags

import optax_lopt
import optax_lopt.tasks
from optax_lopt import evaluation
from optax_lopt.meta import PES, Mixture, SelfTrainer, plot_population, read_metrics

FLAGS = flags.FLAGS

FAMILIES = ("linear_regression", "two_moons")


def make_families(
    two_moons_points: int = 128,
    horizon: int = 200,
    aux_quadratic_dim: int = 0,
    aux_quadratic_noise: float = 0.3,
) -> list[Any]:
    """The training mix: ``linear_regression``, a small ``two_moons``, an optional quadratic.

    ``two_moons`` has one hidden layer of 16. With ``aux_quadratic_dim > 0`` a noisy quadratic
    of that dimension is appended: trained on, not evaluated. README's self-training section
    has ten seeds at dimension 100, noise 0.3, and the settings that collapse.
    """
    families = [
        optax_lopt.tasks.family("linear_regression", num_steps=horizon),
        optax_lopt.tasks.family(
            "two_moons", num_points=two_moons_points, hidden_sizes=(16,), num_steps=horizon
        ),
    ]
    if aux_quadratic_dim:
        families.append(
            optax_lopt.tasks.family(
                "quadratic",
                dim=aux_quadratic_dim,
                noise_scale=aux_quadratic_noise,
                num_steps=horizon,
            )
        )
    return families


def make_estimator(lopt, families, num_tasks: int, truncation_length: int, sigma: float):
    """One PES estimator per family, mixed with equal weights."""
    return Mixture(
        [
            PES(lopt, f, num_tasks=num_tasks, truncation_length=truncation_length, sigma=sigma)
            for f in families
        ],
        names=(*FAMILIES, "aux_quadratic")[: len(families)],
    )


def run(
    workdir: str,
    population_size: int = 8,
    num_outer_steps: int = 150,
    rule: str = "self",
    exploit_every: int = 5,
    exploit_fraction: float = 0.125,
    perturb_scale: float = 0.05,
    initial_step_gain: float = 1.0,
    step_gain_factor: float = 1.25,
    num_tasks: int = 2,
    truncation_length: int = 20,
    horizon: int = 200,
    sigma: float = 0.01,
    hidden_size: int = 16,
    step_mult: float = 5e-3,
    feature_clip: float | None = 5.0,
    two_moons_points: int = 128,
    aux_quadratic_dim: int = 0,
    aux_quadratic_noise: float = 0.3,
    num_eval_instances: int = 128,
    figure: str | None = None,
    seed: int = 0,
    momentum_decays: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999),
) -> dict[str, Any]:
    """Self-trains a population, evaluates its best member on held-out instances.

    Args:
      workdir: where metrics, checkpoints and the final weights go (resumes if present).
      population_size: number of members.
      num_outer_steps: outer steps of the population.
      rule: "best" or "self" (which member's optimizer applies each meta-gradient).
      exploit_every: outer steps between PBT exploit/explore events.
      exploit_fraction: fraction of members replaced per event.
      perturb_scale: relative std of the explore noise.
      initial_step_gain: every member's initial gain on its own learned meta-update.
      step_gain_factor: PBT's explore multiplies a copied member's gain by this or its
        inverse (1 keeps the gains fixed).
      num_tasks: PES tasks per family per member.
      truncation_length: inner steps per outer step.
      horizon: inner trajectory length.
      sigma: PES perturbation std.
      hidden_size: MLPLOpt hidden width.
      step_mult: MLPLOpt step scale.
      feature_clip: MLPLOpt feature clip (None: off); bounds the step a meta-gradient
        spike causes (the self-referential loop is steadier with it; README).
      two_moons_points: points per two_moons instance.
      aux_quadratic_dim: dimension of a noisy quadratic added to the training mix (0: none);
        the held-out evaluation stays on ``linear_regression`` and ``two_moons``.
      aux_quadratic_noise: gradient-noise scale of that quadratic.
      num_eval_instances: held-out ("test") instances per family.
      figure: PNG path of the population's meta-loss over time (None: none drawn).
      seed: random seed.
      momentum_decays: MLPLOpt momentum decays (fewer compile faster, e.g. in tests).

    Returns:
      A summary dict: the best member, held-out meta-objective per family and their mean,
      and the inner steps spent.
    """
    lopt = optax_lopt.MLPLOpt(
        hidden_sizes=(hidden_size,),
        momentum_decays=tuple(momentum_decays),
        step_mult=step_mult,
        feature_clip=feature_clip,
        skip_init="random",
    )
    families = make_families(two_moons_points, horizon, aux_quadratic_dim, aux_quadratic_noise)
    est = make_estimator(lopt, families, num_tasks, truncation_length, sigma)
    trainer = SelfTrainer(
        est,
        lopt,
        population_size=population_size,
        rule=rule,
        exploit_every=exploit_every,
        exploit_fraction=exploit_fraction,
        perturb_scale=perturb_scale,
        initial_step_gain=initial_step_gain,
        step_gain_factor=step_gain_factor,
        workdir=workdir,
        seed=seed,
    )
    theta = trainer.train(num_outer_steps)
    tx = lopt.transform(theta)
    held_out = {
        name: evaluation.evaluate({"self_trained": tx}, f, num_eval_instances)[
            "self_trained"
        ].objective
        for name, f in zip(FAMILIES, families[: len(FAMILIES)], strict=True)
    }
    records = read_metrics(workdir)
    if figure:
        plot_population(
            records,
            figure,
            title=f"Self-training, {population_size} members, rule={rule}",
        )
    inner_per_step = population_size * len(families) * num_tasks * 2 * truncation_length
    return {
        "best_member": trainer.best_index(),
        "held_out": held_out,
        "meta_objective": float(np.mean(list(held_out.values()))),
        "inner_steps": inner_per_step * num_outer_steps,
    }


def define_flags() -> None:
    """Defines the command-line flags (only when run as a script)."""
    flags.DEFINE_string("workdir", "/tmp/self_train", "Metrics, checkpoints, final weights.")
    flags.DEFINE_integer("population_size", 8, "Members of the population.")
    flags.DEFINE_integer("num_outer_steps", 150, "Outer steps.")
    flags.DEFINE_enum("rule", "self", ["best", "self"], "Which member optimizes whom.")
    flags.DEFINE_integer("exploit_every", 5, "Outer steps between PBT events.")
    flags.DEFINE_float("exploit_fraction", 0.125, "Fraction replaced per PBT event.")
    flags.DEFINE_float("perturb_scale", 0.05, "Relative std of the explore noise.")
    flags.DEFINE_float("initial_step_gain", 1.0, "Initial gain on each member's meta-update.")
    flags.DEFINE_float("step_gain_factor", 1.25, "PBT explore factor on a copy's step gain.")
    flags.DEFINE_integer("num_tasks", 2, "PES tasks per family per member.")
    flags.DEFINE_integer("truncation_length", 20, "Inner steps per outer step.")
    flags.DEFINE_integer("horizon", 200, "Inner trajectory length.")
    flags.DEFINE_float("sigma", 0.01, "PES perturbation std.")
    flags.DEFINE_integer("hidden_size", 16, "MLPLOpt hidden width.")
    flags.DEFINE_float("step_mult", 5e-3, "MLPLOpt step scale.")
    flags.DEFINE_float("feature_clip", 5.0, "MLPLOpt feature clip (0: off).")
    flags.DEFINE_integer("two_moons_points", 128, "Points per two_moons instance.")
    flags.DEFINE_integer("aux_quadratic_dim", 0, "Noisy quadratic in the training mix (0: none).")
    flags.DEFINE_float("aux_quadratic_noise", 0.3, "Gradient noise of that quadratic.")
    flags.DEFINE_integer("num_eval_instances", 128, "Held-out instances per family.")
    flags.DEFINE_string("figure", "docs/figures/self_training.png", "Figure path ('' for none).")
    flags.DEFINE_integer("seed", 0, "Random seed.")


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.figure:
        os.makedirs(os.path.dirname(FLAGS.figure) or ".", exist_ok=True)
    summary = run(
        workdir=FLAGS.workdir,
        population_size=FLAGS.population_size,
        num_outer_steps=FLAGS.num_outer_steps,
        rule=FLAGS.rule,
        exploit_every=FLAGS.exploit_every,
        exploit_fraction=FLAGS.exploit_fraction,
        perturb_scale=FLAGS.perturb_scale,
        initial_step_gain=FLAGS.initial_step_gain,
        step_gain_factor=FLAGS.step_gain_factor,
        num_tasks=FLAGS.num_tasks,
        truncation_length=FLAGS.truncation_length,
        horizon=FLAGS.horizon,
        sigma=FLAGS.sigma,
        hidden_size=FLAGS.hidden_size,
        step_mult=FLAGS.step_mult,
        feature_clip=FLAGS.feature_clip or None,
        two_moons_points=FLAGS.two_moons_points,
        aux_quadratic_dim=FLAGS.aux_quadratic_dim,
        aux_quadratic_noise=FLAGS.aux_quadratic_noise,
        num_eval_instances=FLAGS.num_eval_instances,
        figure=FLAGS.figure or None,
        seed=FLAGS.seed,
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    define_flags()
    app.run(main)
