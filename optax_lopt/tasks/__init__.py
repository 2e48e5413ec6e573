"""Tasks and task families for meta-training and evaluation.

``family(name, **kwargs)`` builds a family; ``jax.vmap(family.sample)(keys)`` draws a batch of
`Task` instances; ``task.init(key)`` and ``task.loss(params, key)`` are pure and vmappable.
"""

from optax_lopt.tasks.base import Task, TaskFamily
from optax_lopt.tasks.digits_conv import DigitsConv
from optax_lopt.tasks.digits_mlp import DigitsMLP
from optax_lopt.tasks.linear_regression import LinearRegression
from optax_lopt.tasks.mixes import (
    GENERAL_MIX,
    GENERAL_WIDE_MIX,
    SELF_TRAINING_EVALUATED,
    MixComponent,
    parse_mix,
    self_training_mix,
    task_mix,
    task_mix_names,
)
from optax_lopt.tasks.quadratic import Quadratic
from optax_lopt.tasks.registry import family, family_names
from optax_lopt.tasks.reparameterized import Reparameterized, reparameterize
from optax_lopt.tasks.rosenbrock import Rosenbrock
from optax_lopt.tasks.synthetic_supervised import GaussianSoftmax, TeacherRegression
from optax_lopt.tasks.two_moons import TwoMoons, make_moons
from optax_lopt.tasks.unseen import (
    BundledClassifier,
    BundledRegressor,
    ChainedRosenbrock,
    DigitsAutoencoder,
    IllConditionedQuadratic,
    bundled_split,
    unseen_suite,
)

__all__ = [
    "BundledClassifier",
    "BundledRegressor",
    "ChainedRosenbrock",
    "DigitsAutoencoder",
    "DigitsConv",
    "DigitsMLP",
    "GENERAL_MIX",
    "GENERAL_WIDE_MIX",
    "GaussianSoftmax",
    "IllConditionedQuadratic",
    "LinearRegression",
    "MixComponent",
    "Quadratic",
    "Reparameterized",
    "Rosenbrock",
    "SELF_TRAINING_EVALUATED",
    "Task",
    "TaskFamily",
    "TeacherRegression",
    "TwoMoons",
    "bundled_split",
    "family",
    "family_names",
    "make_moons",
    "parse_mix",
    "reparameterize",
    "self_training_mix",
    "task_mix",
    "task_mix_names",
    "unseen_suite",
]
