"""The self-training recipe: one set of defaults and builders for its example and benchmark.

`SelfTrainingRecipe` holds the settings of a self-training run (a population of randomly
initialised ``MLPLOpt`` optimizers that meta-train themselves with PES on the
``self_training`` task mix). The functions here build its parts from it: `build_lopt`,
`build_estimator`, `build_trainer`, `held_out` and `inner_steps`. ``examples/self_train.py``
generates its flags from the recipe (``optax_lopt.meta.config_flags``) and
``benchmarks/self_training.py`` reuses the same builders, so each default exists once.

References:
  Metz, Freeman, Maheswaranathan, Sohl-Dickstein, "Training Learned Optimizers with Randomly
  Initialized Learned Optimizers", arXiv 2101.07367.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from optax_lopt import evaluation
from optax_lopt.architectures.mlp_lopt import MLPLOpt
from optax_lopt.base import LearnedOptimizer, MetaParams
from optax_lopt.meta.config_flags import check_choices, setting
from optax_lopt.meta.mixture_estimator import Mixture
from optax_lopt.meta.pes import PES
from optax_lopt.meta.self_training import SelfTrainer
from optax_lopt.tasks.base import TaskFamily
from optax_lopt.tasks.mixes import SELF_TRAINING_EVALUATED, MixComponent, self_training_mix

__all__ = [
    "SelfTrainingRecipe",
    "build_estimator",
    "build_lopt",
    "build_trainer",
    "evaluated_families",
    "held_out",
    "inner_steps",
    "training_mix",
]


@dataclasses.dataclass(frozen=True)
class SelfTrainingRecipe:
    """The settings of a self-training run, one field per command-line flag.

    Each field's metadata holds its flag's help text (and, for ``rule``, the valid values);
    a value outside those is refused on construction, naming the flag.

    Raises:
      ValueError: naming the flag, for a ``rule`` other than ``"best"`` or ``"self"``.
    """

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
    antisymmetric: bool = setting(False, "MLPLOpt odd in the gradient.")
    momentum_decays: str = setting("0.5,0.9,0.99,0.999", "MLPLOpt momentum decays (commas).")
    two_moons_points: int = setting(128, "Points per two_moons instance.")
    aux_quadratic_dim: int = setting(0, "Noisy quadratic in the training mix (0: none).")
    aux_quadratic_noise: float = setting(0.3, "Gradient noise of that quadratic.")
    num_eval_instances: int = setting(128, "Held-out ('test') instances per family.")
    figure: str = setting("docs/figures/self_training.png", "Figure path ('' for none).")
    seed: int = setting(0, "Random seed.")

    def __post_init__(self) -> None:
        check_choices(self)


def build_lopt(recipe: SelfTrainingRecipe) -> MLPLOpt:
    """A randomly initialised ``MLPLOpt`` (``skip_init="random"``: nothing Adam-like built in)."""
    return MLPLOpt(
        hidden_sizes=(recipe.hidden_size,),
        momentum_decays=tuple(float(d) for d in recipe.momentum_decays.split(",")),
        step_mult=recipe.step_mult,
        antisymmetric=recipe.antisymmetric,
        feature_clip=recipe.feature_clip or None,
        skip_init="random",
    )


def training_mix(recipe: SelfTrainingRecipe) -> tuple[MixComponent, ...]:
    """The ``self_training`` mix preset (with the auxiliary noisy quadratic when it is on)."""
    return self_training_mix(
        recipe.horizon,
        recipe.two_moons_points,
        recipe.aux_quadratic_dim,
        recipe.aux_quadratic_noise,
    )


def evaluated_families(recipe: SelfTrainingRecipe) -> list[TaskFamily]:
    """The families of the mix that are evaluated (``SELF_TRAINING_EVALUATED``), in order."""
    return [c.build() for c in training_mix(recipe) if c.name in SELF_TRAINING_EVALUATED]


def build_estimator(
    recipe: SelfTrainingRecipe, lopt: LearnedOptimizer, num_tasks: int | None = None
) -> Mixture:
    """PES on each family of the training mix, weighted as the mix says.

    Args:
      recipe: the settings.
      lopt: the learned optimizer being meta-trained.
      num_tasks: PES tasks per family (None: ``recipe.num_tasks``; the benchmark's Adam
        reference gives ``population_size * num_tasks``).

    Returns:
      An ``optax_lopt.meta.Mixture`` of one `optax_lopt.meta.PES` per family.
    """
    num_tasks = recipe.num_tasks if num_tasks is None else num_tasks
    return Mixture.from_mix(
        training_mix(recipe),
        lambda family: PES(
            lopt,
            family,
            num_tasks=num_tasks,
            truncation_length=recipe.truncation_length,
            sigma=recipe.sigma,
        ),
    )


def build_trainer(recipe: SelfTrainingRecipe, **options: Any) -> SelfTrainer:
    """The `optax_lopt.meta.SelfTrainer` of ``recipe``.

    Args:
      recipe: the settings.
      **options: the trainer's other keyword arguments (``workdir``, ``checkpoint_every``,
        ``progress``, ``on_step``, ...).

    Returns:
      The trainer, its population not yet initialised.
    """
    lopt = build_lopt(recipe)
    return SelfTrainer(
        build_estimator(recipe, lopt),
        lopt,
        population_size=recipe.population_size,
        rule=recipe.rule,
        exploit_every=recipe.exploit_every,
        exploit_fraction=recipe.exploit_fraction,
        perturb_scale=recipe.perturb_scale,
        initial_step_gain=recipe.initial_step_gain,
        step_gain_factor=recipe.step_gain_factor,
        seed=recipe.seed,
        **options,
    )


def held_out(
    recipe: SelfTrainingRecipe,
    lopt: LearnedOptimizer,
    theta: MetaParams,
    families: list[TaskFamily] | None = None,
) -> dict[str, float]:
    """Meta-objective of ``theta`` on ``num_eval_instances`` held-out ("test") instances.

    Args:
      recipe: the settings.
      lopt: the learned optimizer.
      theta: its meta-parameters (one member).
      families: the evaluated families (None: `evaluated_families`).

    Returns:
      ``{family name: mean over the horizon of loss / initial loss}`` (lower is better).
    """
    families = evaluated_families(recipe) if families is None else families
    tx = lopt.transform(theta)
    return {
        name: evaluation.evaluate({"x": tx}, f, recipe.num_eval_instances)["x"].objective
        for name, f in zip(SELF_TRAINING_EVALUATED, families, strict=True)
    }


def inner_steps(recipe: SelfTrainingRecipe) -> int:
    """Inner steps the run spends: members x families x tasks x PES particles x steps."""
    per_step = len(training_mix(recipe)) * recipe.num_tasks * PES.NUM_PARTICLES
    return recipe.population_size * per_step * recipe.truncation_length * recipe.num_outer_steps
