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
meta-gradient from becoming a huge step on a member's own weights. The training mix is the
``optax_lopt.tasks.mixes.self_training_mix`` preset (``--aux_quadratic_dim`` adds its noisy
quadratic).

Writes ``<workdir>/metrics.jsonl`` (one record per outer step, every member), orbax
checkpoints (a rerun with the same flags resumes), the best member to ``<workdir>/final``
(``optax_lopt.load``) and the figure of the population's meta-loss (``--figure``).

References:
  Metz, Freeman, Maheswaranathan, Sohl-Dickstein, "Training Learned Optimizers with Randomly
  Initialized Learned Optimizers", arXiv 2101.07367.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np
from absl import app

import optax_lopt
from optax_lopt import evaluation
from optax_lopt.meta import PES, Mixture, SelfTrainer, plot_population, read_metrics
from optax_lopt.meta.config_flags import config_from_flags, define_flags, setting
from optax_lopt.tasks.mixes import SELF_TRAINING_EVALUATED, self_training_mix


@dataclasses.dataclass(frozen=True)
class Config:
    """A self-training run's settings; the flags are generated from it."""

    workdir: str = setting("/tmp/self_train", "Metrics, checkpoints, final weights.")
    population_size: int = setting(8, "Members of the population.")
    num_outer_steps: int = setting(150, "Outer steps.")
    rule: str = setting("self", "Which member optimizes whom.", choices=("best", "self"))
    exploit_every: int = setting(5, "Outer steps between PBT events.")
    exploit_fraction: float = setting(0.125, "Fraction replaced per PBT event.")
    perturb_scale: float = setting(0.05, "Relative std of the explore noise.")
    initial_step_gain: float = setting(1.0, "Initial gain on each member's meta-update.")
    step_gain_factor: float = setting(1.25, "PBT explore factor on a copy's step gain.")
    num_tasks: int = setting(2, "PES tasks per family per member.")
    truncation_length: int = setting(20, "Inner steps per outer step.")
    horizon: int = setting(200, "Inner trajectory length.")
    sigma: float = setting(0.01, "PES perturbation std.")
    hidden_size: int = setting(16, "MLPLOpt hidden width.")
    step_mult: float = setting(5e-3, "MLPLOpt step scale.")
    feature_clip: float = setting(5.0, "MLPLOpt feature clip (0: off).")
    two_moons_points: int = setting(128, "Points per two_moons instance.")
    aux_quadratic_dim: int = setting(0, "Noisy quadratic in the training mix (0: none).")
    aux_quadratic_noise: float = setting(0.3, "Gradient noise of that quadratic.")
    num_eval_instances: int = setting(128, "Held-out instances per family.")
    figure: str = setting("docs/figures/self_training.png", "Figure path ('' for none).")
    seed: int = setting(0, "Random seed.")
    momentum_decays: str = setting("0.5,0.9,0.99,0.999", "MLPLOpt momentum decays.")


def build_lopt(config: Config) -> optax_lopt.MLPLOpt:
    """A randomly initialised ``MLPLOpt`` (nothing Adam-like built in)."""
    return optax_lopt.MLPLOpt(
        hidden_sizes=(config.hidden_size,),
        momentum_decays=tuple(float(d) for d in config.momentum_decays.split(",")),
        step_mult=config.step_mult,
        feature_clip=config.feature_clip or None,
        skip_init="random",
    )


def build_estimator(config: Config, lopt: optax_lopt.LearnedOptimizer, num_tasks: int) -> Mixture:
    """PES on each family of the ``self_training`` mix preset, equal weights."""
    mix = self_training_mix(
        config.horizon,
        config.two_moons_points,
        config.aux_quadratic_dim,
        config.aux_quadratic_noise,
    )
    return Mixture.from_mix(
        mix,
        lambda family: PES(
            lopt,
            family,
            num_tasks=num_tasks,
            truncation_length=config.truncation_length,
            sigma=config.sigma,
        ),
    )


def build_trainer(config: Config, **options: Any) -> SelfTrainer:
    """The `SelfTrainer` of ``config``; ``options`` are its other keyword arguments."""
    lopt = build_lopt(config)
    return SelfTrainer(
        build_estimator(config, lopt, config.num_tasks),
        lopt,
        population_size=config.population_size,
        rule=config.rule,
        exploit_every=config.exploit_every,
        exploit_fraction=config.exploit_fraction,
        perturb_scale=config.perturb_scale,
        initial_step_gain=config.initial_step_gain,
        step_gain_factor=config.step_gain_factor,
        seed=config.seed,
        **options,
    )


def held_out(config: Config, lopt, theta, families) -> dict[str, float]:
    """Meta-objective of ``theta`` on held-out ("test") instances of the evaluated families."""
    tx = lopt.transform(theta)
    return {
        name: evaluation.evaluate({"x": tx}, f, config.num_eval_instances)["x"].objective
        for name, f in zip(SELF_TRAINING_EVALUATED, families, strict=True)
    }


def inner_steps(config: Config) -> int:
    """Inner steps the run spends: members x families x tasks x 2 particles x truncation."""
    num_families = len(build_estimator(config, build_lopt(config), 1).estimators)
    per_step = config.population_size * num_families * config.num_tasks * 2
    return per_step * config.truncation_length * config.num_outer_steps


def run(config: Config) -> dict[str, Any]:
    """Self-trains a population (resuming ``workdir``), evaluates its best member.

    Returns:
      A summary dict: the best member, held-out meta-objective per family and their mean,
      and the inner steps spent.
    """
    trainer = build_trainer(config, workdir=config.workdir)
    theta = trainer.train(config.num_outer_steps)
    families = [e.family for e in trainer.estimator.estimators[: len(SELF_TRAINING_EVALUATED)]]
    scores = held_out(config, trainer.lopt, theta, families)
    if config.figure:
        os.makedirs(os.path.dirname(config.figure) or ".", exist_ok=True)
        title = f"Self-training, {config.population_size} members, rule={config.rule}"
        plot_population(read_metrics(config.workdir), config.figure, title=title)
    return {
        "best_member": trainer.best_index(),
        "held_out": scores,
        "meta_objective": float(np.mean(list(scores.values()))),
        "inner_steps": inner_steps(config),
    }


def main(argv: list[str]) -> None:
    del argv
    print(json.dumps(run(config_from_flags(Config))))


if __name__ == "__main__":
    define_flags(Config)
    app.run(main)
