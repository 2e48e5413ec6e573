"""Hand-designed update rules whose hyperparameters are meta-parameters.

`LearnableSGDM` and `LearnableAdam` are SGD with momentum and Adam written as learned
optimizers: ``theta`` holds the log learning rate and the logits of the decay rates, so the
meta-trainer can tune them by gradient. They are baselines, and starting points.

References:
  Maclaurin, Duvenaud, Adams, "Gradient-based Hyperparameter Optimization through Reversible
  Learning", arXiv 1502.03492.
  Kingma, Ba, "Adam: A Method for Stochastic Optimization", arXiv 1412.6980.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from optax_lopt import _checks, _numerics
from optax_lopt.architectures import _features as F
from optax_lopt.base import LearnedOptimizer, MetaParams


def _logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


class SGDMState(NamedTuple):
    """State of `LearnableSGDM`: the momentum trace, one leaf per parameter."""

    momentum: Any


@dataclasses.dataclass(frozen=True)
class LearnableSGDM(LearnedOptimizer):
    """SGD with momentum, its learning rate and momentum learnable.

    ``m <- beta * m + g``, ``u = -lr * m`` (optax's ``sgd(lr, momentum=beta)``), with
    ``theta = {"log_learning_rate", "momentum_logit"}``.

    It behaves exactly as SGD with momentum, outliers included, because it is the baseline
    learned optimizers are compared with: a spike ``G`` moves its coordinate by ``lr * G``
    and, through the momentum, by ``lr * beta**k * G`` ``k`` steps later. The package-wide
    numerics are the only difference from ``optax.sgd``: non-finite gradient entries count as
    0 and entries beyond +/- 1e18 as +/- 1e18, so nothing in the state or the updates is ever
    non-finite (a float32 step of ``lr * 1e30`` would be finite, its square not). To guard
    against spikes, chain a clip in front (``optax.chain(optax.clip_by_global_norm(...),
    tx)``) or use a learned architecture, whose ``spike_clip`` is on by default.

    Args:
      learning_rate: initial learning rate.
      momentum: initial momentum decay beta, in (0, 1).

    References:
      Polyak, "Some methods of speeding up the convergence of iteration methods" (1964).
      Maclaurin et al., arXiv 1502.03492.
    """

    learning_rate: float = 1e-2
    momentum: float = 0.9

    def __post_init__(self) -> None:
        F.check_fields(
            self,
            {"learning_rate": _checks.positive, "momentum": _checks.in_unit_interval},
        )

    def init(self, key: chex.PRNGKey) -> MetaParams:
        del key
        return {
            "log_learning_rate": jnp.asarray(math.log(self.learning_rate), jnp.float32),
            "momentum_logit": jnp.asarray(_logit(self.momentum), jnp.float32),
        }

    def transform(self, theta: MetaParams) -> optax.GradientTransformationExtraArgs:
        def init_fn(params):
            return SGDMState(momentum=jax.tree.map(_numerics.zeros_for, params))

        def update_fn(updates, state, params=None, *, value=None, **extra_args):
            del value, extra_args
            F.check_tree(updates, state.momentum, "state")
            if params is not None:
                F.check_tree(updates, params, "params")
            lr = jnp.exp(theta["log_learning_rate"])
            beta = jax.nn.sigmoid(theta["momentum_logit"])
            grads = jax.tree.map(_numerics.clean_gradient, updates)
            momentum = jax.tree.map(
                lambda m, g: (beta * m + g).astype(m.dtype), state.momentum, grads
            )
            new_updates = jax.tree.map(lambda m: -lr * m, momentum)
            reference = updates if params is None else params
            return _numerics.cast_like(new_updates, reference), SGDMState(momentum)

        return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class AdamState(NamedTuple):
    """State of `LearnableAdam`: step count, first and second moments."""

    count: jax.Array
    mu: Any
    nu: Any


@dataclasses.dataclass(frozen=True)
class LearnableAdam(LearnedOptimizer):
    """Adam with learnable learning rate, betas and epsilon.

    Identical to ``optax.adam`` for the same numbers, with
    ``theta = {"log_learning_rate", "b1_logit", "b2_logit", "log_eps"}``.

    It behaves exactly as Adam, outliers included: Adam's step per coordinate is already
    bounded, ``|m_hat / sqrt(v_hat)| <= (1 - b1) / sqrt(1 - b2)`` times a bias-correction
    factor at a spike, so one outlier moves its coordinate by a few ``lr`` at most; its second
    moment then holds the spike, and that coordinate's steps stay near 0 for about
    ``log(spike**2 / v) / (1 - b2)`` steps, as in Adam. The package-wide numerics are the only
    difference from ``optax.adam``: non-finite gradient entries count as 0 and entries beyond
    +/- 1e18 as +/- 1e18 (``optax.adam`` would square 1e30 to inf and then never move that
    coordinate again); nothing in the state or the updates is ever non-finite.

    Args:
      learning_rate: initial learning rate.
      b1: initial first-moment decay, in (0, 1).
      b2: initial second-moment decay, in (0, 1).
      eps: initial epsilon added to the root second moment.

    References:
      Kingma, Ba, "Adam: A Method for Stochastic Optimization", arXiv 1412.6980.
    """

    learning_rate: float = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self) -> None:
        F.check_fields(
            self,
            {
                "learning_rate": _checks.positive,
                "b1": _checks.in_unit_interval,
                "b2": _checks.in_unit_interval,
                "eps": _checks.positive,
            },
        )

    def init(self, key: chex.PRNGKey) -> MetaParams:
        del key
        return {
            "log_learning_rate": jnp.asarray(math.log(self.learning_rate), jnp.float32),
            "b1_logit": jnp.asarray(_logit(self.b1), jnp.float32),
            "b2_logit": jnp.asarray(_logit(self.b2), jnp.float32),
            "log_eps": jnp.asarray(math.log(self.eps), jnp.float32),
        }

    def transform(self, theta: MetaParams) -> optax.GradientTransformationExtraArgs:
        def init_fn(params):
            return AdamState(
                count=jnp.zeros((), jnp.int32),
                mu=jax.tree.map(_numerics.zeros_for, params),
                nu=jax.tree.map(_numerics.zeros_for, params),
            )

        def update_fn(updates, state, params=None, *, value=None, **extra_args):
            del value, extra_args
            F.check_tree(updates, state.mu, "state")
            if params is not None:
                F.check_tree(updates, params, "params")
            lr = jnp.exp(theta["log_learning_rate"])
            b1 = jax.nn.sigmoid(theta["b1_logit"])
            b2 = jax.nn.sigmoid(theta["b2_logit"])
            eps = jnp.exp(theta["log_eps"])
            grads = jax.tree.map(_numerics.clean_gradient, updates)
            count = optax.safe_increment(state.count)
            mu = jax.tree.map(lambda m, g: (b1 * m + (1 - b1) * g).astype(m.dtype), state.mu, grads)
            nu = jax.tree.map(
                lambda v, g: (b2 * v + (1 - b2) * g * g).astype(v.dtype), state.nu, grads
            )
            t = count.astype(jnp.float32)
            c1 = 1 - b1**t
            c2 = 1 - b2**t
            new_updates = jax.tree.map(
                lambda m, v: -lr * (m / c1) / (jnp.sqrt(v / c2) + eps), mu, nu
            )
            reference = updates if params is None else params
            return _numerics.cast_like(new_updates, reference), AdamState(count, mu, nu)

        return optax.GradientTransformationExtraArgs(init_fn, update_fn)
