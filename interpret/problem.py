"""The optimizer's own task: a sampler of problem instances, and recordings of it at work.

Reverse-engineering only says something true about an optimizer when it is probed on the
gradients it actually sees: a learned optimizer meta-trained on two-moons gradients of 1e-4
behaves differently at gradients of order one. A `Problem` is a distribution of training
problems (a sampler of initial parameters plus instance data, and a loss); `record` runs the
optimizer on several instances of it at once (vmapped, one compilation) and keeps what the
probe sees: losses, gradients, updates and per-coordinate states. `GradientStats` summarises
the recorded gradient magnitudes, and every analysis of the report is scaled from it.

``interpret`` never imports ``optax_lopt``: adapt any task library with three lines (see
`Problem`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from interpret import _checks
from interpret import probe as _probe


@dataclasses.dataclass(frozen=True)
class Problem:
    """A distribution of training problems.

    Attributes:
      sample: ``key -> (params, data)``: one instance's initial parameters and its data (any
        pytree of arrays; ``None`` for a fixed loss). Must be traceable (it runs under jit).
      loss: ``(params, data, key) -> scalar``: the training loss; ``key`` draws a minibatch
        for stochastic problems and may be ignored.
      num_steps: the horizon the optimizer is run for.
      name: a label for reports.

    Example, for an ``optax_lopt`` task family::

      def sample(key):
          k_task, k_init = jax.random.split(key)
          task = family.sample(k_task)
          return task.init(k_init), task.data
      problem = interpret.Problem(sample, lambda p, d, k: family.loss_fn(d, p, k), 200)
    """

    sample: Callable[[jax.Array], tuple[Any, Any]]
    loss: Callable[[Any, Any, jax.Array], jax.Array]
    num_steps: int
    name: str = "problem"

    def __post_init__(self) -> None:
        _checks.function("sample", self.sample)
        _checks.function("loss", self.loss)
        _checks.positive_int("num_steps", self.num_steps)


def problem_from_loss(
    loss_fn: Callable[[Any], jax.Array], params: Any, num_steps: int, name: str = "problem"
) -> Problem:
    """A `Problem` with one fixed instance: ``loss_fn(params)`` from ``params``."""
    _checks.function("loss_fn", loss_fn)
    return Problem(lambda key: (params, None), lambda p, d, k: loss_fn(p), num_steps, name)


@dataclasses.dataclass(frozen=True)
class Recording:
    """An optimizer at work on several instances of its problem.

    Attributes:
      losses: loss before every step and after the last, ``(num_instances, num_steps + 1)``.
      gradients: gradient of each recorded coordinate at each step, ``(num_steps, K)`` with
        ``K = num_instances * coordinates`` (instance-major columns).
      updates: the optimizer's update for the same, ``(num_steps, K)``.
      states: the one-coordinate state before each step, ``(num_steps, K, state_size)``.
    """

    losses: np.ndarray
    gradients: np.ndarray
    updates: np.ndarray
    states: np.ndarray

    def instances(self, start: int, stop: int) -> Recording:
        """The recording of instances ``[start, stop)`` only."""
        n = self.losses.shape[0]
        if not (0 <= start < stop <= n):
            raise ValueError(
                f"start, stop: expected 0 <= start < stop <= {n}, got {start}, {stop}."
            )
        k = self.gradients.shape[1] // n
        cols = slice(start * k, stop * k)
        return Recording(self.losses[start:stop], self.gradients[:, cols],
                         self.updates[:, cols], self.states[:, cols])  # fmt: skip


def record(
    tx: optax.GradientTransformation,
    problem: Problem,
    *,
    num_instances: int = 4,
    coordinates: int | Sequence[int] = 16,
    seed: int = 0,
    num_steps: int | None = None,
    first_instance: int = 0,
) -> Recording:
    """Runs ``tx`` on ``num_instances`` instances of ``problem`` and records it (one jit).

    Args:
      tx: any optax transformation; the loss is passed as ``value=`` to those taking extras.
      problem: the `Problem`.
      num_instances: how many instances to draw.
      coordinates: as in `interpret.probe` (a count of evenly spaced coordinates, or indices).
      seed: seed of the instances and minibatches.
      num_steps: horizon (default ``problem.num_steps``).
      first_instance: index of the first instance: instance ``i`` is drawn from
        ``fold_in(key(seed), i)``, so instances ``[a, b)`` are the same whichever call draws
        them (a held-out set is ``first_instance=`` the number recorded).

    Returns:
      A `Recording`.
    """
    _checks.gradient_transformation(tx)
    _checks.instance("problem", problem, Problem, "an interpret.Problem")
    num_instances = _checks.positive_int("num_instances", num_instances)
    num_steps = problem.num_steps if num_steps is None else num_steps
    num_steps = _checks.positive_int("num_steps", num_steps)
    params0, _ = jax.eval_shape(problem.sample, jax.random.key(0))
    flat = tuple(c for c, _, _ in _checks.coordinates(params0, coordinates))
    ptx = _probe.probe(tx, flat, buffer_size=num_steps)
    takes_value = isinstance(tx, optax.GradientTransformationExtraArgs)
    first_instance = _checks.non_negative_int("first_instance", first_instance)
    base = jax.random.key(seed)
    keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(
        jnp.arange(first_instance, first_instance + num_instances)
    )
    one = _instance_run(ptx, problem, num_steps, takes_value)
    # instances one after another: batching a learned optimizer's graph with vmap compiles
    # far slower than the run it would speed up
    losses, state = jax.jit(lambda ks: jax.lax.map(one, ks))(keys)
    return _recording(losses, state)


def _instance_run(
    ptx: optax.GradientTransformation, problem: Problem, num_steps: int, takes_value: bool
) -> Callable[[jax.Array], tuple[jax.Array, Any]]:
    """``key -> (losses, probe state)``: the probed optimizer on one instance of ``problem``."""

    def one(key):
        k_sample, k_steps = jax.random.split(key)
        params, data = problem.sample(k_sample)
        grad_fn = jax.value_and_grad(problem.loss)

        def body(carry, k):
            params, state = carry
            loss, grads = grad_fn(params, data, k)
            extra = {"value": loss} if takes_value else {}
            updates, state = ptx.update(grads, state, params, **extra)
            return (optax.apply_updates(params, updates), state), loss

        keys = jax.random.split(k_steps, num_steps + 1)
        (params, state), losses = jax.lax.scan(body, (params, ptx.init(params)), keys[:-1])
        final = problem.loss(params, data, keys[-1])
        return jnp.concatenate([losses, final[None]]), state

    return one


def _recording(losses: jax.Array, state: Any) -> Recording:
    """A `Recording` from the instances' losses and their probes' ring buffers."""
    # ring buffers: (instances, T, K[, n]) -> (T, instances * K[, n])
    grads = np.moveaxis(np.asarray(state.gradients), 0, 1)
    ups = np.moveaxis(np.asarray(state.updates), 0, 1)
    hs = np.moveaxis(np.asarray(state.states), 0, 1)
    t = grads.shape[0]
    return Recording(
        losses=np.asarray(losses, np.float64),
        gradients=grads.reshape(t, -1).astype(np.float64),
        updates=ups.reshape(t, -1).astype(np.float64),
        states=hs.reshape(t, grads.shape[1] * grads.shape[2], hs.shape[-1]).astype(np.float64),
    )


@dataclasses.dataclass(frozen=True)
class GradientStats:
    """Magnitudes of the gradients an optimizer saw.

    Attributes:
      quantiles: ``{q: value}`` of the nonzero finite ``|g|`` for q in 1, 5, 25, 50, 75, 95, 99.
      scale: the median ``|g|``: the step of every finite difference and the unit of probes.
      low, high: the 5% and 95% quantiles: the range of fixed-point inputs and of fits.
      count: how many gradient entries were summarised.
    """

    quantiles: dict[int, float]
    scale: float
    low: float
    high: float
    count: int

    def quantile_of(self, magnitude: float) -> float:
        """The fraction of recorded ``|g|`` below ``magnitude`` (0 to 1, by interpolation)."""
        qs = sorted(self.quantiles)
        values = [self.quantiles[q] for q in qs]
        return float(np.interp(magnitude, values, np.asarray(qs) / 100.0))


def gradient_stats(gradients: Any) -> GradientStats:
    """Summarises observed gradients (any array; zeros and non-finite entries are dropped).

    Raises:
      ValueError: when no nonzero finite gradient is given.
    """
    g = np.abs(np.asarray(gradients, np.float64)).ravel()
    g = g[np.isfinite(g) & (g > 0)]
    if g.size == 0:
        raise ValueError("gradients: expected at least one nonzero finite gradient, got none.")
    levels = (1, 5, 25, 50, 75, 95, 99)
    values = np.percentile(g, levels)
    quantiles = {q: float(v) for q, v in zip(levels, values, strict=True)}
    return GradientStats(quantiles, quantiles[50], quantiles[5], quantiles[95], int(g.size))
