"""Lookup of gradient estimators by module name."""

from __future__ import annotations

from typing import Any

from optax_lopt.base import LearnedOptimizer
from optax_lopt.meta.base import GradientEstimator
from optax_lopt.meta.es import ES
from optax_lopt.meta.full_bptt import FullBPTT
from optax_lopt.meta.hybrid import Hybrid
from optax_lopt.meta.pes import PES
from optax_lopt.meta.truncated_bptt import TruncatedBPTT
from optax_lopt.meta.truncated_es import TruncatedES
from optax_lopt.tasks.base import TaskFamily

_ESTIMATORS: dict[str, type[GradientEstimator]] = {
    "full_bptt": FullBPTT,
    "truncated_bptt": TruncatedBPTT,
    "es": ES,
    "truncated_es": TruncatedES,
    "pes": PES,
    "hybrid": Hybrid,
}


def estimator_names() -> tuple[str, ...]:
    """Names accepted by :func:`estimator`, sorted."""
    return tuple(sorted(_ESTIMATORS))


def estimator(
    name: str, lopt: LearnedOptimizer, family: TaskFamily, **kwargs: Any
) -> GradientEstimator:
    """Builds a gradient estimator by name.

    Args:
      name: one of "full_bptt", "truncated_bptt", "es", "truncated_es", "pes", "hybrid".
      lopt: the learned optimizer.
      family: the task family.
      **kwargs: the estimator's other fields (``num_tasks``, ``truncation_length``,
        ``horizon``, ``sigma``, ``meta_loss``, ...). The whole-unroll estimators
        ("full_bptt", "es") take no ``truncation_length``; the BPTT ones no ``sigma``.

    Returns:
      A `GradientEstimator`.

    Raises:
      ValueError: for an unknown name or an argument the estimator does not take.
    """
    if name not in _ESTIMATORS:
        raise ValueError(f"name: expected one of {list(estimator_names())}, got {name!r}.")
    cls = _ESTIMATORS[name]
    try:
        return cls(lopt, family, **kwargs)
    except TypeError as err:
        raise ValueError(
            f"kwargs: arguments {sorted(kwargs)} do not fit estimator {name!r}: {err}"
        ) from err
