"""Fitting a learning-rate schedule: the effective learning rate at each step.

The one-coordinate system is driven by several random gradient sequences. At each step, from
the state reached, the update function ``u(g | h_t)`` is evaluated on a fixed symmetric set of
probe gradients (``+-{0.1, 0.3, 0.6, 1, 1.5, 2} * gradient_scale``) and the effective learning
rate is minus the least-squares slope of ``u`` on ``g`` there (a secant slope, so that
sign-like first steps such as Adam's give a finite number); the median over sequences is
reported. For SGD, with or without momentum, under any optax schedule this is the schedule
itself, because its update is linear in ``g`` with slope ``-lr(t)``. Warm-up is the
number of steps before the curve first reaches 99% of its peak; decay is the final value over
the peak.

References:
  Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
  mechanisms", arXiv 2011.02159.
  Goyal et al., "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour",
  arXiv 1706.02677.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from interpret import _checks
from interpret import system as _system


@dataclasses.dataclass(frozen=True)
class ScheduleFit:
    """The effective learning rate over time.

    Attributes:
      learning_rates: median effective learning rate (secant ``-du/dg``) at each step,
        ``(num_steps,)``.
      spread: interquartile range across the probing sequences at each step, ``(num_steps,)``.
      peak_learning_rate: the largest of ``learning_rates``.
      warmup_steps: steps before ``learning_rates`` first reaches 99% of the peak.
      decay: ``learning_rates[-1] / peak_learning_rate`` (1: no decay).
    """

    learning_rates: np.ndarray
    spread: np.ndarray
    peak_learning_rate: float
    warmup_steps: int
    decay: float


def fit_schedule(
    tx: optax.GradientTransformation | _system.ScalarSystem,
    num_steps: int,
    *,
    num_samples: int = 8,
    gradient_scale: float = 1.0,
    seed: int = 0,
) -> ScheduleFit:
    """Measures ``tx``'s effective learning rate at each of ``num_steps`` steps.

    Args:
      tx: an optax transformation (or a `ScalarSystem`).
      num_steps: number of steps from ``tx.init``.
      num_samples: number of random gradient sequences.
      gradient_scale: standard deviation of the Gaussian gradients.
      seed: seed of the sequences.

    Returns:
      A `ScheduleFit`.
    """
    system = _system.as_system(tx)
    num_steps = _checks.positive_int("num_steps", num_steps)
    num_samples = _checks.positive_int("num_samples", num_samples)
    _checks.positive("gradient_scale", gradient_scale)
    g = gradient_scale * jax.random.normal(
        jax.random.key(seed), (num_samples, num_steps), system.dtype
    )
    return _summarise(np.asarray(_trace(system, g, float(gradient_scale)), np.float64))


def zero_gradient_schedule(
    tx: optax.GradientTransformation | _system.ScalarSystem,
    num_steps: int,
    *,
    gradient_scale: float,
) -> ScheduleFit:
    """The paper's schedule probe: the effective learning rate under zero gradients.

    The optimizer is driven with ``g = 0`` from its initial state (so only its internal clock
    and state move) and at every step its effective learning rate is the secant slope
    ``-(u(s | h_t) - u(-s | h_t)) / 2s`` at the observed gradient scale ``s``: a schedule the
    optimizer carries in its dynamics shows up as warm-up and decay of this curve.

    Args:
      tx: an optax transformation (or a `ScalarSystem`).
      num_steps: number of steps (the task's horizon).
      gradient_scale: the step ``s`` (the median observed gradient magnitude).

    Returns:
      A `ScheduleFit` (``spread`` is zero: there is one deterministic sequence).
    """
    system = _system.as_system(tx)
    num_steps = _checks.positive_int("num_steps", num_steps)
    _checks.positive("gradient_scale", gradient_scale)
    s = jnp.asarray(gradient_scale, system.dtype)

    def body(carry, _):
        h, clock = carry
        slope = -(system.update(h, s, clock) - system.update(h, -s, clock)) / (2 * s)
        new_h, _, new_clock = system.step(h, jnp.zeros((), system.dtype), clock)
        return (new_h, new_clock), slope

    init = (system.initial_state, system.initial_clock)
    _, lrs = jax.jit(lambda c: jax.lax.scan(body, c, None, length=num_steps))(init)
    return _summarise(np.asarray(lrs, np.float64)[None])


def _summarise(lrs: np.ndarray) -> ScheduleFit:
    """Median curve over sequences, its spread, peak, warm-up and decay."""
    lrs = np.where(np.isfinite(lrs), lrs, np.nan)
    med = np.nanmedian(lrs, axis=0)
    spread = np.nanpercentile(lrs, 75, axis=0) - np.nanpercentile(lrs, 25, axis=0)
    peak = float(np.nanmax(med))
    reach = np.nonzero(med >= 0.99 * peak)[0] if peak > 0 else np.zeros(1, int)
    warmup = int(reach[0]) if reach.size else 0
    decay = float(med[-1] / peak) if peak > 0 else float("nan")
    return ScheduleFit(
        learning_rates=med,
        spread=spread,
        peak_learning_rate=peak,
        warmup_steps=warmup,
        decay=decay,
    )


_PROBES = np.array([0.1, 0.3, 0.6, 1.0, 1.5, 2.0])


def _trace(system: _system.ScalarSystem, gradients: jax.Array, scale: float) -> jax.Array:
    probes = jnp.asarray(np.concatenate([-_PROBES, _PROBES]) * scale, system.dtype)

    def one(gs):
        def body(carry, g):
            h, clock = carry
            us = jax.vmap(lambda p: system.update(h, p, clock))(probes)
            slope = -jnp.sum((us - us.mean()) * probes) / jnp.sum(probes * probes)
            new_h, _, new_clock = system.step(h, g, clock)
            return (new_h, new_clock), slope

        _, lrs = jax.lax.scan(body, (system.initial_state, system.initial_clock), gs)
        return lrs

    return jax.jit(jax.vmap(one))(gradients)
