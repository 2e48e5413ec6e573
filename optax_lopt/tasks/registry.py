"""Lookup of task families by name."""

from __future__ import annotations

from typing import Any

from optax_lopt import _checks
from optax_lopt.tasks.base import TaskFamily
from optax_lopt.tasks.digits_conv import DigitsConv
from optax_lopt.tasks.digits_mlp import DigitsMLP
from optax_lopt.tasks.linear_regression import LinearRegression
from optax_lopt.tasks.quadratic import Quadratic
from optax_lopt.tasks.reparameterized import Reparameterized
from optax_lopt.tasks.rosenbrock import Rosenbrock
from optax_lopt.tasks.synthetic_supervised import GaussianSoftmax, TeacherRegression
from optax_lopt.tasks.two_moons import TwoMoons
from optax_lopt.tasks.unseen import (
    BundledClassifier,
    BundledRegressor,
    ChainedRosenbrock,
    DigitsAutoencoder,
    IllConditionedQuadratic,
)

_FAMILIES: dict[str, type[TaskFamily]] = {
    "linear_regression": LinearRegression,
    "rosenbrock": Rosenbrock,
    "two_moons": TwoMoons,
    "quadratic": Quadratic,
    "digits_mlp": DigitsMLP,
    "digits_conv": DigitsConv,
    "sklearn_classifier": BundledClassifier,
    "sklearn_regressor": BundledRegressor,
    "digits_mlp_autoencoder": DigitsAutoencoder,
    "ill_conditioned_quadratic": IllConditionedQuadratic,
    "rosenbrock_chained": ChainedRosenbrock,
    "gaussian_softmax": GaussianSoftmax,
    "teacher_regression": TeacherRegression,
}


def family_names() -> tuple[str, ...]:
    """Names accepted by :func:`family`, sorted."""
    return tuple(sorted(_FAMILIES))


def family(name: str, *, reparameterize: bool | tuple[float, float] = False, **kwargs: Any):
    """Builds a task family by name.

    Args:
      name: one of ``family_names()``: "digits_conv", "digits_mlp",
        "digits_mlp_autoencoder", "gaussian_softmax", "ill_conditioned_quadratic",
        "linear_regression", "quadratic", "rosenbrock", "rosenbrock_chained",
        "sklearn_classifier", "sklearn_regressor", "teacher_regression", "two_moons".
      reparameterize: if True (or a ``(low, high)`` scale range) wrap the family in
        `Reparameterized` (random per-tensor scales, default range ``(1e-2, 1e2)``).
      **kwargs: the family's constructor arguments (e.g. ``dim=10``, ``num_steps=50``).

    Returns:
      A `TaskFamily`.

    Raises:
      ValueError: for an unknown name (the message lists the valid ones), arguments the
        family does not take or values it refuses (the message names the argument).
    """
    cls = _FAMILIES[_checks.one_of("name", name, family_names())]
    try:
        fam = cls(**kwargs)
    except TypeError as err:
        raise ValueError(
            f"kwargs: arguments {sorted(kwargs)} do not fit task family {name!r}: {err}"
        ) from err
    if reparameterize is True:
        return Reparameterized(fam)
    if reparameterize is False:
        return fam
    if not isinstance(reparameterize, (tuple, list)):
        raise ValueError(
            "reparameterize: expected True, False or a pair (low, high) of scales, got "
            f"{reparameterize!r}."
        )
    return Reparameterized(fam, _checks.value_range("reparameterize", reparameterize))
