"""The meta-training recipe: one set of defaults and builders for its example and benchmark.

`MetaTrainingRecipe` holds every setting of a meta-training run that changes the weights
(task or task mix, architecture, estimator, outer steps, meta-optimizer, seed, and the
weights a run starts from). The functions here build its parts from it: `build_lopt`,
`build_initial_theta`, `build_estimator` and `build_meta_optimizer`.
``examples/meta_train.py`` adds where and how to run (workdir, checkpoints, devices) and
generates its flags from the whole (``optax_lopt.meta.config_flags``);
``benchmarks/meta_training.py`` reuses the same defaults and builders.

References:
  Vicol, Metz, Sohl-Dickstein, "Unbiased Gradient Estimation in Unrolled Computation Graphs
  with Persistent Evolution Strategies", arXiv 2112.13835.
"""

from __future__ import annotations

import dataclasses
import json
import os

import optax

from optax_lopt import _checks, serialization, tasks
from optax_lopt.base import LearnedOptimizer, MetaParams, architecture_names, from_config
from optax_lopt.meta.base import GradientEstimator
from optax_lopt.meta.config_flags import check_choices, setting
from optax_lopt.meta.estimators import estimator, estimator_fields, estimator_names
from optax_lopt.meta.meta_losses import META_LOSS_NAMES
from optax_lopt.meta.mixture_estimator import Mixture
from optax_lopt.pretrained import weights_dir

__all__ = [
    "MetaTrainingRecipe",
    "build_estimator",
    "build_initial_theta",
    "build_lopt",
    "build_meta_optimizer",
]


@dataclasses.dataclass(frozen=True)
class MetaTrainingRecipe:
    """The weight-relevant settings of a meta-training run, one field per command-line flag.

    Each field's metadata holds its flag's help text and, where they are known, its valid
    values; a value outside those is refused on construction, naming the flag.

    Raises:
      ValueError: naming the flag and listing the valid values, for a ``task``,
        ``architecture``, ``estimator``, ``meta_loss`` or ``meta_lr_decay`` outside them.
    """

    task: str = setting("linear_regression", "Task family name.", choices=tasks.family_names())
    task_mix: str | None = setting(
        None,
        "Train on a mix of families instead of --task: a preset name (one of "
        f"{', '.join(tasks.task_mix_names())}) or a JSON list of components, e.g. "
        '\'[{"family": "quadratic", "reparameterize": true}, {"family": "rosenbrock"}]\'.',
    )
    architecture: str = setting(
        "MLPLOpt", "Learned optimizer class name.", choices=architecture_names
    )
    architecture_config: str = setting(
        "{}", "JSON dict of the architecture's constructor kwargs, e.g. '{\"hidden_size\": 64}'."
    )
    estimator: str = setting("pes", "Gradient estimator.", choices=estimator_names())
    num_outer_steps: int = setting(300, "Outer (meta) steps in total.")
    seed: int = setting(0, "Random seed; the same seed gives the same weights.")
    num_tasks: int = setting(8, "Tasks trained in parallel per outer step.")
    truncation_length: int = setting(20, "Inner steps per outer step (truncated estimators).")
    horizon: int | None = setting(
        None, "Inner steps before a task restarts (default: the task's num_steps)."
    )
    sigma: float = setting(0.01, "Perturbation scale (ES-type estimators).")
    meta_loss: str = setting("mean_normalized", "Meta-loss.", choices=META_LOSS_NAMES)
    meta_learning_rate: float = setting(3e-3, "Adam meta learning rate.")
    meta_lr_decay: str = setting(
        "constant", "Meta learning-rate schedule.", choices=("constant", "cosine")
    )
    meta_lr_alpha: float = setting(
        0.05, "With --meta_lr_decay=cosine: final learning rate / initial."
    )
    clip_norm: float = setting(1.0, "Meta-gradient global-norm clip (0: none).")
    init_from: str | None = setting(
        None,
        "Start from these weights instead of a fresh init (a second phase): a directory "
        "written by optax_lopt.save, or else a shipped name such as 'general'. Their "
        "architecture must be --architecture with meta-parameters of the same shapes; "
        "--architecture_config may change the rules around them.",
    )

    def __post_init__(self) -> None:
        check_choices(self)


def build_lopt(recipe: MetaTrainingRecipe) -> LearnedOptimizer:
    """``optax_lopt.from_config`` of ``architecture`` and ``architecture_config``.

    Raises:
      ValueError: naming ``architecture_config``, for text that is not a JSON object or has
        arguments the architecture does not take.
    """
    try:
        kwargs = json.loads(recipe.architecture_config)
    except json.JSONDecodeError as err:
        kwargs = err
    if not isinstance(kwargs, dict):
        raise ValueError(
            "architecture_config: expected a JSON object of constructor arguments, got "
            f"{recipe.architecture_config!r}."
        )
    try:
        return from_config(recipe.architecture, kwargs)
    except ValueError as err:
        raise ValueError(f"architecture_config: {err}") from err


def build_initial_theta(
    recipe: MetaTrainingRecipe, lopt: LearnedOptimizer
) -> tuple[MetaParams | None, str | None]:
    """The meta-parameters a run starts from, and the SHA-256 of their weights file.

    Without ``init_from`` both are None: the trainer draws ``lopt.init`` from the run's seed.
    With it, ``init_from`` is read as a directory written by ``optax_lopt.save`` when one
    exists at that path, else as a shipped name (``optax_lopt.pretrained_names()``). The
    architecture must be ``lopt``'s class and the meta-parameters must have the tree and
    shapes ``lopt.init`` makes; its other fields (``architecture_config``) may differ, so a
    second phase can train the same network under changed rules. The hash goes in the final
    weights' metadata, since a shipped name's weights may change between releases.

    Raises:
      ValueError: naming ``init_from``, for weights that cannot be read or do not fit
        ``lopt``.
    """
    if recipe.init_from is None:
        return None, None
    path = _weights_dir(recipe.init_from)
    try:
        source, theta = serialization.load(path)
    except ValueError as err:
        raise ValueError(f"init_from: {err}") from err
    if type(source) is not type(lopt):
        raise ValueError(
            f"init_from: expected weights of architecture {type(lopt).__name__} "
            f"(--architecture), got {type(source).__name__} in {path!r}."
        )
    try:
        serialization.check_theta(lopt, theta)
    except ValueError as err:
        raise ValueError(f"init_from: the weights in {path!r} do not fit: {err}") from err
    return theta, serialization.read_config(path).get("weights_sha256")


def _weights_dir(init_from: str) -> str:
    """The weights directory ``init_from`` names: a path if one exists, else a shipped name."""
    if os.path.isdir(init_from):
        return init_from
    try:
        return weights_dir(init_from)
    except ValueError as err:
        raise ValueError(
            f"init_from: expected a directory written by optax_lopt.save or a shipped name; "
            f"{init_from!r} is neither (no such directory; {err})"
        ) from err


def build_meta_optimizer(recipe: MetaTrainingRecipe) -> optax.GradientTransformation:
    """Adam at ``meta_learning_rate``, constant or cosine-decayed over the run to ``alpha``.

    Raises:
      ValueError: naming ``meta_lr_alpha``, for a cosine decay's alpha outside [0, 1].
    """
    if recipe.meta_lr_decay == "constant":
        return optax.adam(recipe.meta_learning_rate)
    alpha = _checks.between("meta_lr_alpha", recipe.meta_lr_alpha, 0.0, 1.0)
    schedule = optax.cosine_decay_schedule(
        recipe.meta_learning_rate, recipe.num_outer_steps, alpha=alpha
    )
    return optax.adam(schedule)


def build_estimator(recipe: MetaTrainingRecipe, lopt: LearnedOptimizer) -> GradientEstimator:
    """The estimator named by ``recipe.estimator``, given only the fields it takes.

    With ``recipe.task_mix`` it is an ``optax_lopt.meta.Mixture`` of one such estimator per
    component of the mix (each with ``num_tasks`` tasks), weighted by the components'
    weights; ``recipe.task`` is then unused.

    Raises:
      ValueError: naming ``task_mix``, for a mix that ``optax_lopt.tasks.parse_mix`` rejects.
    """
    knobs = {
        "num_tasks": recipe.num_tasks,
        "truncation_length": recipe.truncation_length,
        "horizon": recipe.horizon,
        "sigma": recipe.sigma,
        "meta_loss": recipe.meta_loss,
    }
    fields = estimator_fields(recipe.estimator)
    knobs = {k: v for k, v in knobs.items() if k in fields}

    def make(family):
        return estimator(recipe.estimator, lopt, family, **knobs)

    if not recipe.task_mix:
        return make(tasks.family(recipe.task))
    try:
        components = tasks.parse_mix(recipe.task_mix)
    except ValueError as err:
        raise ValueError(f"task_mix: {err}") from err
    return Mixture.from_mix(components, make)
