"""An estimator over a mix of task families: the weighted sum of per-family estimators.

(The mixes themselves, named presets of families, are in `optax_lopt.tasks.mixes`.)

Task families with different parameter shapes cannot share one vmapped batch, so a mix keeps
one estimator (and one persistent batch of inner runs) per family and combines their
meta-gradients. Training on a distribution of tasks, with augmentation, is what lets a
learned optimizer generalise to problems it never saw.

References:
  Metz et al., "Tasks, stability, architecture, and compute: Training more effective learned
  optimizers, and using them to train themselves", arXiv 2009.11243.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import chex
import jax

from optax_lopt.base import MetaParams
from optax_lopt.meta import outer_loop
from optax_lopt.meta.base import EstimatorState, GradientEstimator
from optax_lopt.tasks.base import TaskFamily


def _default_name(est: GradientEstimator, index: int) -> str:
    family = getattr(est, "family", None)
    base = getattr(family, "base", None)  # Reparameterized keeps the family it augments.
    inner = family if base is None else base
    return f"{index}_{type(inner).__name__}" if inner is not None else str(index)


class Mixture(GradientEstimator):
    """Weighted mean of several estimators' meta-gradients, one per task family.

    ``meta_gradient`` advances every component's inner runs by one truncation (each with its
    own key, ``fold_in(key, i)``) and returns ``sum_i w_i g_i`` with the weights normalised to
    sum to one. The reported ``"meta_loss"`` is the same weighted mean of the components'
    meta-losses; every component metric ``k`` is also reported as ``"<name>/k"``.

    The components may be any estimators, of any kind, on any families. The trainer's task
    sharding (``mesh``) needs one task batch and does not apply to a mixture.

    Args:
      estimators: the per-family estimators (at least one), all for the same learned
        optimizer.
      weights: non-negative weights, one per estimator, not all zero (equal when None).
      names: names of the components in the metrics (``"<i>_<FamilyClass>"`` when None).

    Raises:
      ValueError: naming the argument, for an empty or ill-typed ``estimators``, weights of
        the wrong length or sign, or names of the wrong length or repeated.
    """

    def __init__(
        self,
        estimators: Sequence[GradientEstimator],
        weights: Sequence[float] | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        estimators = tuple(estimators)
        if not estimators:
            raise ValueError("estimators: expected a non-empty sequence of estimators, got none.")
        for i, est in enumerate(estimators):
            outer_loop.check_estimator(est, f"estimators[{i}]")
        if weights is None:
            weights = (1.0,) * len(estimators)
        weights = tuple(float(w) for w in weights)
        if (
            len(weights) != len(estimators)
            or not all(math.isfinite(w) and w >= 0 for w in weights)
            or sum(weights) <= 0
        ):
            raise ValueError(
                f"weights: expected {len(estimators)} finite non-negative numbers, not all "
                f"zero, got {weights!r}."
            )
        if names is None:
            names = tuple(_default_name(e, i) for i, e in enumerate(estimators))
        names = tuple(str(n) for n in names)
        if len(names) != len(estimators) or len(set(names)) != len(names):
            raise ValueError(
                f"names: expected {len(estimators)} distinct names, got {list(names)!r}."
            )
        total = sum(weights)
        self.estimators = estimators
        self.weights = tuple(w / total for w in weights)
        self.names = names

    @classmethod
    def from_mix(
        cls, components: Sequence[Any], make: Callable[[TaskFamily], GradientEstimator]
    ) -> Mixture:
        """One ``make(family)`` per component of a task mix, with its weight and name.

        Args:
          components: `optax_lopt.tasks.MixComponent` s (e.g. ``task_mix("general")``).
          make: builds the estimator of one family.

        Returns:
          The `Mixture`.
        """
        return cls(
            [make(c.build()) for c in components],
            weights=[c.weight for c in components],
            names=[c.name for c in components],
        )

    def init(self, theta: MetaParams, key: chex.PRNGKey) -> EstimatorState:
        return tuple(
            est.init(theta, jax.random.fold_in(key, i)) for i, est in enumerate(self.estimators)
        )

    def meta_gradient(
        self, theta: MetaParams, state: EstimatorState, key: chex.PRNGKey
    ) -> tuple[MetaParams, EstimatorState, dict[str, chex.Array]]:
        if not isinstance(state, tuple) or len(state) != len(self.estimators):
            raise ValueError(
                f"state: expected a tuple of {len(self.estimators)} component states (from "
                f"Mixture.init), got {type(state).__name__}."
            )
        grad: Any = None
        new_states = []
        metrics: dict[str, chex.Array] = {}
        meta_loss = 0.0
        for i, (est, w, name, sub) in enumerate(
            zip(self.estimators, self.weights, self.names, state, strict=True)
        ):
            g, sub, sub_metrics = est.meta_gradient(theta, sub, jax.random.fold_in(key, i))
            g = jax.tree.map(lambda x, w=w: w * x, g)
            grad = g if grad is None else jax.tree.map(lambda a, b: a + b, grad, g)
            new_states.append(sub)
            meta_loss = meta_loss + w * sub_metrics["meta_loss"]
            metrics.update({f"{name}/{k}": v for k, v in sub_metrics.items()})
        metrics["meta_loss"] = meta_loss
        return grad, tuple(new_states), metrics
