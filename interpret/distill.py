"""Distillation: the fitted mechanisms composed into an ordinary optax chain.

`distill` fits momentum, clipping, a schedule and learning-rate adaptation to a transformation
and composes them, in that order of application to the gradient,

    clip(threshold) -> adaptive scaling |v|^(-exponent/2) -> trace(beta) -> scale(-lr * s(t)),

where ``v`` is an exponential moving average of ``g^2`` whose decay reproduces the measured
recovery time and ``s(t)`` the measured schedule (``ScheduleFit.learning_rates``, held at its
last value afterwards); with a schedule, momentum is fitted relative to it, so ``lr`` is a
factor near 1. Parts that were not detected are left out (no clipping when the threshold is inf, no
adaptation when the exponent is below 0.1). `advantage_kept` measures, on a task, how much of
the original optimizer's advantage over a tuned Adam the distilled chain keeps.

References:
  Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
  mechanisms", arXiv 2011.02159.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from interpret import system as _system
from interpret.adaptation import LRAdaptation, lr_adaptation
from interpret.clipping import ClippingFit, fit_clipping
from interpret.momentum import MomentumFit, fit_momentum
from interpret.schedule import ScheduleFit, fit_schedule

_MIN_EXPONENT = 0.1


@dataclasses.dataclass(frozen=True)
class Distilled:
    """A distilled optimizer and the fits it was built from.

    Attributes:
      tx: the optax chain (a drop-in ``GradientTransformation``).
      momentum: the `MomentumFit`.
      clipping: the `ClippingFit`.
      schedule: the `ScheduleFit` (None when no schedule was fitted).
      adaptation: the `LRAdaptation` (None when not measured).
      adaptation_decay: decay of the squared-gradient average (None without adaptation).
      learning_rate: the base learning rate of the chain.
      description: the chain in words.

    References:
      Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
      mechanisms", arXiv 2011.02159.
    """

    tx: optax.GradientTransformation
    momentum: MomentumFit
    clipping: ClippingFit
    schedule: ScheduleFit | None
    adaptation: LRAdaptation | None
    adaptation_decay: float | None
    learning_rate: float
    description: str


class AdaptiveScaleState(NamedTuple):
    """State of `scale_by_power_rms`: step count and average of squared gradients.

    References:
      Kingma, Ba, "Adam: A Method for Stochastic Optimization", arXiv 1412.6980.
    """

    count: jax.Array
    nu: Any


def scale_by_power_rms(
    exponent: float, decay: float, eps: float = 1e-12
) -> optax.GradientTransformation:
    """Scales gradients by ``(v_hat + eps)^(-exponent / 2)``, ``v`` an EMA of ``g^2``.

    ``exponent = 1`` is RMSProp's normalisation (with bias correction, as in Adam).

    Args:
      exponent: power ``p`` of the root-mean-square to divide by.
      decay: decay of the moving average, in (0, 1).
      eps: added to ``v_hat`` before the power.

    Returns:
      An ``optax.GradientTransformation``.

    References:
      Kingma, Ba, "Adam: A Method for Stochastic Optimization", arXiv 1412.6980.
    """
    if not 0 < decay < 1:
        raise ValueError(f"decay: expected a number in (0, 1), got {decay!r}.")

    def init_fn(params):
        return AdaptiveScaleState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None):
        del params
        clean = jax.tree.map(lambda g: jnp.where(jnp.isfinite(g), g, 0.0), updates)
        nu = jax.tree.map(lambda v, g: decay * v + (1 - decay) * g * g, state.nu, clean)
        count = optax.safe_increment(state.count)
        correction = 1 - decay ** count.astype(jnp.float32)
        scaled = jax.tree.map(
            lambda g, v: (g * (v / correction + eps) ** (-exponent / 2)).astype(g.dtype),
            clean,
            nu,
        )
        return scaled, AdaptiveScaleState(count, nu)

    return optax.GradientTransformation(init_fn, update_fn)


def _decay_for_recovery(adaptation: LRAdaptation) -> float:
    """The EMA decay whose recovery time after the burst matches the measured one."""
    burst_steps, fraction = adaptation.burst_steps, adaptation.recovery_fraction
    if not math.isfinite(adaptation.recovery_time):
        return 0.9999
    small, large = adaptation.gradients[0] ** 2, adaptation.gradients[-1] ** 2
    p = max(adaptation.exponent, _MIN_EXPONENT)
    target = small * fraction ** (-2 / p)
    best, best_err = 0.9, float("inf")
    for d in 1 - np.logspace(-0.3, -4, 200):  # fast to slow: ties go to the faster decay
        v = d**burst_steps * small + (1 - d**burst_steps) * large
        n = 0.0 if v <= target else math.log((target - small) / (v - small)) / math.log(d)
        err = abs(n - adaptation.recovery_time)
        if err < best_err:
            best, best_err = float(d), err
    return best


def distill(
    tx: optax.GradientTransformation | _system.ScalarSystem,
    *,
    schedule_steps: int | None = None,
    adaptation_gradients: Sequence[float] | None = (1e-2, 1e-1, 1.0),
    momentum: MomentumFit | None = None,
    clipping: ClippingFit | None = None,
    schedule: ScheduleFit | None = None,
    adaptation: LRAdaptation | None = None,
    clipping_state: Any = None,
) -> Distilled:
    """Fits ``tx``'s mechanisms and composes them into an optax chain.

    Args:
      tx: an optax transformation (or a `ScalarSystem`).
      schedule_steps: steps of schedule to fit and reproduce (None: constant learning rate).
      adaptation_gradients: magnitudes for `interpret.lr_adaptation` (None: no adaptation).
      momentum, clipping, schedule, adaptation: fits already computed (skips refitting).
        Fits not given are made with gradients of standard deviation ``min(1, threshold /
        4)``, inside the linear range of any clipping.
      clipping_state: state at which to fit clipping (see `interpret.fit_clipping`).

    Returns:
      A `Distilled`.

    References:
      Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
      mechanisms", arXiv 2011.02159.
    """
    system = _system._as_system(tx)
    clipping = clipping or fit_clipping(system, state=clipping_state)
    # Fit schedule and momentum in the linear regime, below any clipping threshold, and
    # momentum relative to the schedule when there is one.
    scale = min(1.0, clipping.threshold / 4) if math.isfinite(clipping.threshold) else 1.0
    if schedule is None and schedule_steps is not None:
        schedule = fit_schedule(system, schedule_steps, gradient_scale=scale)
    if momentum is None:
        momentum = fit_momentum(
            system,
            gradient_scale=scale,
            learning_rates=None if schedule is None else schedule.learning_rates,
            num_steps=200 if schedule is None else max(3, min(200, schedule.learning_rates.size)),
        )
    if adaptation is None and adaptation_gradients is not None:
        adaptation = lr_adaptation(system, adaptation_gradients, max_recovery_steps=2000)
    parts, words = [], []
    if math.isfinite(clipping.threshold):
        parts.append(optax.clip(clipping.threshold))
        words.append(f"clip({clipping.threshold:.4g})")
    decay = None
    lr = momentum.learning_rate
    if adaptation is not None and adaptation.exponent >= _MIN_EXPONENT:
        decay = _decay_for_recovery(adaptation)
        p = adaptation.exponent
        parts.append(scale_by_power_rms(p, decay))
        words.append(f"scale_by_power_rms(exponent={p:.3g}, decay={decay:.4g})")
        # Match the update scale at the probing gradient scale of the momentum fit.
        lr = momentum.learning_rate * momentum.gradient_scale**p
    beta = float(np.clip(momentum.beta, 0.0, 0.9999))
    if beta > 0:
        parts.append(optax.trace(decay=beta))
        words.append(f"trace({beta:.4g})")
    if schedule is not None:
        profile = np.nan_to_num(schedule.learning_rates)
        if not momentum.relative_to_schedule:
            # An absolute learning rate: use the schedule's shape relative to its mean over
            # the steps where momentum was fitted.
            window = profile[: momentum.num_steps]
            profile = profile / max(float(np.mean(window)), 1e-30)
        profile = jnp.asarray(profile, jnp.float32)
        last = profile.shape[0] - 1

        def schedule_fn(count):
            return -lr * profile[jnp.minimum(count, last)]

        parts.append(optax.scale_by_schedule(schedule_fn))
        words.append(f"scale(-{lr:.4g} * schedule[{profile.shape[0]} steps])")
    else:
        parts.append(optax.scale(-lr))
        words.append(f"scale(-{lr:.4g})")
    return Distilled(
        tx=optax.chain(*parts),
        momentum=momentum,
        clipping=clipping,
        schedule=schedule,
        adaptation=adaptation,
        adaptation_decay=decay,
        learning_rate=float(lr),
        description=" -> ".join(words),
    )


@dataclasses.dataclass(frozen=True)
class AdvantageKept:
    """How much of an optimizer's advantage over tuned Adam a distilled one keeps.

    Attributes:
      original_loss: final loss of the original (mean of the last 10% of steps).
      distilled_loss: same, for the distilled chain.
      adam_loss: same, for the best Adam of the grid.
      adam_learning_rate: that Adam's learning rate.
      fraction: ``(adam_loss - distilled_loss) / (adam_loss - original_loss)``; nan when the
        original is not better than tuned Adam.

    References:
      Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
      mechanisms", arXiv 2011.02159.
    """

    original_loss: float
    distilled_loss: float
    adam_loss: float
    adam_learning_rate: float
    fraction: float


def _tail_loss(tx, loss_fn, params, num_steps):
    def body(carry, _):
        params, state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = tx.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), loss

    _, losses = jax.lax.scan(body, (params, tx.init(params)), None, length=num_steps)
    tail = losses[-max(1, num_steps // 10) :]
    value = jnp.mean(tail)
    return jnp.where(jnp.isfinite(value), value, jnp.inf)


def advantage_kept(
    original: optax.GradientTransformation,
    distilled: optax.GradientTransformation,
    loss_fn: Callable[[Any], jax.Array],
    params: Any,
    num_steps: int,
    *,
    adam_learning_rates: Sequence[float] = tuple(np.logspace(-4, 0, 9)),
) -> AdvantageKept:
    """Compares an optimizer, its distillation and the best Adam of a grid on one task.

    Args:
      original: the optimizer that was distilled.
      distilled: the distilled chain (``Distilled.tx``).
      loss_fn: ``params -> scalar loss``.
      params: initial parameters.
      num_steps: steps per run.
      adam_learning_rates: the grid over which Adam is tuned.

    Returns:
      An `AdvantageKept`.

    References:
      Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
      mechanisms", arXiv 2011.02159.
    """
    _system._check_transform(original, "original")
    _system._check_transform(distilled, "distilled")
    grid = _system._vector("adam_learning_rates", adam_learning_rates)
    num_steps = _system._check_positive_int("num_steps", num_steps)
    adam = np.asarray(
        jax.jit(jax.vmap(lambda lr: _tail_loss(optax.adam(lr), loss_fn, params, num_steps)))(
            jnp.asarray(grid, jnp.float32)
        ),
        np.float64,
    )
    best = int(np.argmin(adam))
    orig = float(jax.jit(lambda p: _tail_loss(original, loss_fn, p, num_steps))(params))
    dist = float(jax.jit(lambda p: _tail_loss(distilled, loss_fn, p, num_steps))(params))
    gap = adam[best] - orig
    fraction = (adam[best] - dist) / gap if gap > 0 and math.isfinite(dist) else float("nan")
    return AdvantageKept(
        original_loss=orig,
        distilled_loss=dist,
        adam_loss=float(adam[best]),
        adam_learning_rate=float(grid[best]),
        fraction=float(fraction),
    )
