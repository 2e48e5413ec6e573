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
quadratic). The settings, their defaults and the builders are the library's
``optax_lopt.meta.SelfTrainingRecipe`` (``optax_lopt.meta.self_training_recipe``), which
``benchmarks/self_training.py`` shares; this script adds ``--workdir``.

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

from optax_lopt.meta import SelfTrainingRecipe, plot_population, read_metrics
from optax_lopt.meta.config_flags import config_from_flags, define_flags, setting
from optax_lopt.meta.self_training_recipe import (  # noqa: F401  (the example's API)
    build_estimator,
    build_lopt,
    build_trainer,
    held_out,
    inner_steps,
)


@dataclasses.dataclass(frozen=True)
class Config(SelfTrainingRecipe):
    """A self-training run's settings (the recipe's, and where to write); flags come from it."""

    workdir: str = setting("/tmp/self_train", "Metrics, checkpoints, final weights.")


def run(config: Config) -> dict[str, Any]:
    """Self-trains a population (resuming ``workdir``), evaluates its best member.

    Returns:
      A summary dict: the best member, held-out meta-objective per family and their mean,
      and the inner steps spent.
    """
    trainer = build_trainer(config, workdir=config.workdir)
    theta = trainer.train(config.num_outer_steps)
    scores = held_out(config, trainer.lopt, theta)
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
