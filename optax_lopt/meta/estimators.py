"""Lookup of gradient estimators by module name, and of the fields each one takes."""

from __future__ import annotations

import dataclasses
from typing import Any

from optax_lopt import _checks
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


def estimator_fields(name: str) -> tuple[str, ...]:
    """The keyword fields estimator ``name`` takes beside ``lopt`` and ``family``.

    E.g. ``"truncation_length" in estimator_fields("pes")`` is True and is False for the
    whole-unroll ``"es"``; examples and benchmarks ask this instead of listing them.

    Raises:
      ValueError: for an unknown name (the message lists the known ones).
    """
    cls = _ESTIMATORS[_checks.one_of("name", name, estimator_names())]
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in ("lopt", "family"))


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
    cls = _ESTIMATORS[_checks.one_of("name", name, estimator_names())]
    unknown = sorted(set(kwargs) - set(estimator_fields(name)))
    if unknown:
        raise ValueError(
            f"kwargs: expected fields of estimator {name!r} (one of "
            f"{list(estimator_fields(name))}), got {unknown}."
        )
    return cls(lopt, family, **kwargs)
