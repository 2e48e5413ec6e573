"""Fixed points of an optimizer's one-coordinate dynamics, one per constant gradient.

For a constant input ``g*`` a fixed point ``h*`` of ``h' = F(h, g*)`` is a state the optimizer
would stay in forever. Following the paper, fixed points are found by minimising the speed

    q(h) = 1/2 ||F(h, g*) - h||^2

from states the optimizer actually visits (its trajectory under the constant input ``g*``),
for all inputs and starting states at once (vmapped, jitted): a first phase of Adam on ``q``,
then Levenberg-Marquardt (damped Gauss-Newton) polishing on the residual ``F(h, g*) - h``.
Found points closer than a tolerance are merged. The fixed points traced as ``g*`` varies are
the paper's S-curve (a line attractor at ``g* = 0`` when the Jacobian there has an eigenvalue
near 1).

References:
  Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
  mechanisms", arXiv 2011.02159.
  Sussillo, Barak, "Opening the Black Box: Low-Dimensional Dynamics in High-Dimensional
  Recurrent Neural Networks", Neural Computation 25(3), 2013.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from interpret import _checks
from interpret import system as _system


@dataclasses.dataclass(frozen=True)
class FixedPoints:
    """Fixed points, one (the best) per constant input, plus all distinct ones found.

    Attributes:
      inputs: the constant gradients ``g*``, shape ``(N,)``.
      states: the best fixed point for each input, shape ``(N, size)``; the curve of fixed
        points parameterised by ``g*``.
      residuals: ``q(h*) = 1/2 ||F(h*, g*) - h*||^2`` of each of ``states``, shape ``(N,)``.
      converged: whether ``||F(h*, g*) - h*|| <= tolerance * (1 + ||h*||)``, shape ``(N,)``.
      distinct: for each input, the converged fixed points found from all starts after merging
        those closer than ``dedup_tolerance * (1 + ||h||)``, each an array ``(k_i, size)``.
      step: the exogenous time at which ``F`` was evaluated.
    """

    inputs: np.ndarray
    states: np.ndarray
    residuals: np.ndarray
    converged: np.ndarray
    distinct: tuple[np.ndarray, ...]
    step: int


def fixed_points(
    tx: optax.GradientTransformation | _system.ScalarSystem,
    inputs: Any,
    *,
    step: int = 0,
    starts: Any = None,
    num_starts: int = 4,
    warmup_steps: int = 100,
    num_iterations: int = 200,
    learning_rate: float = 1e-2,
    newton_steps: int = 6,
    tolerance: float = 1e-4,
    dedup_tolerance: float = 1e-3,
) -> FixedPoints:
    """Finds fixed points ``h* = F(h*, g*)`` for each constant input ``g*`` in ``inputs``.

    Args:
      tx: an optax transformation (or a `ScalarSystem`).
      inputs: constant gradients ``g*``, 1-d.
      step: exogenous time (calls of ``tx.update`` before) at which ``F`` is evaluated.
      starts: extra starting states ``(M, size)`` tried for every input.
      num_starts: visited states used as starts per input, taken evenly along the trajectory
        of ``warmup_steps`` steps driven by the constant input.
      warmup_steps: length of that trajectory.
      num_iterations: Adam iterations on the speed ``q``.
      learning_rate: Adam's learning rate.
      newton_steps: Levenberg-Marquardt polishing iterations (0 to skip).
      tolerance: relative tolerance on ``||F(h, g*) - h||`` for convergence.
      dedup_tolerance: relative distance under which two fixed points are the same.

    Returns:
      `FixedPoints`.
    """
    system = _system.as_system(tx)
    g = _checks.vector("inputs", inputs)
    num_starts = _checks.positive_int("num_starts", num_starts)
    warmup_steps = _checks.positive_int("warmup_steps", warmup_steps)
    _check_solver(num_iterations, newton_steps, tolerance, dedup_tolerance, learning_rate)
    if system.size == 0:
        return _stateless(g, step)
    extra = _extra_starts(starts, system.size)
    clock = system.clock_at(step)
    h, q = _solve(
        system,
        jnp.asarray(g, system.dtype),
        None if extra is None else jnp.asarray(extra, system.dtype),
        clock,
        num_starts,
        warmup_steps,
        int(num_iterations),
        float(learning_rate),
        int(newton_steps),
    )
    return _best(g, h, q, tolerance, dedup_tolerance, step)


def _check_solver(num_iterations, newton_steps, tolerance, dedup_tolerance, learning_rate):
    """Raises a ValueError naming the first invalid solver setting."""
    _checks.non_negative_int("num_iterations", num_iterations)
    _checks.non_negative_int("newton_steps", newton_steps)
    _checks.positive("tolerance", tolerance)
    _checks.positive("dedup_tolerance", dedup_tolerance)
    _checks.positive("learning_rate", learning_rate)


def _stateless(g: np.ndarray, step: int) -> FixedPoints:
    """The fixed points of a stateless optimizer: its one (empty) state, for every input."""
    return FixedPoints(
        inputs=g,
        states=np.zeros((g.size, 0)),
        residuals=np.zeros(g.size),
        converged=np.ones(g.size, bool),
        distinct=tuple(np.zeros((1, 0)) for _ in g),
        step=step,
    )


def _extra_starts(starts: Any, n: int) -> np.ndarray | None:
    """``starts`` as a float64 ``(M, n)`` array (one state may be given 1-d), or None."""
    if starts is None:
        return None
    extra = np.asarray(starts, np.float64)
    if extra.ndim == 1:
        extra = extra[None]
    if extra.ndim != 2 or extra.shape[1] != n:
        raise ValueError(f"starts: expected shape (M, {n}), got {extra.shape}.")
    return extra


def _best(g, h, q, tolerance, dedup_tolerance, step) -> FixedPoints:
    """`FixedPoints` from the solver's points ``h (N, S, n)`` and speeds ``q (N, S)``.

    Per input, the converged point with the smallest relative speed (the smallest speed when
    none converged), and the distinct converged ones.
    """
    h = np.asarray(h, np.float64)
    q = np.asarray(q, np.float64)
    q = np.where(np.isfinite(q), q, np.inf)
    norms = np.linalg.norm(h, axis=-1)
    ok = np.sqrt(2 * q) <= tolerance * (1 + norms)
    best = np.argmin(np.where(ok, q / (1 + norms) ** 2, np.inf + 0 * q), axis=1)
    best = np.where(ok.any(axis=1), best, np.argmin(q, axis=1))
    rows = np.arange(g.size)
    distinct = tuple(_dedup(h[i][ok[i]], dedup_tolerance) for i in rows)
    return FixedPoints(
        inputs=g,
        states=h[rows, best],
        residuals=q[rows, best],
        converged=ok[rows, best],
        distinct=distinct,
        step=step,
    )


def _dedup(points: np.ndarray, tol: float) -> np.ndarray:
    kept: list[np.ndarray] = []
    for p in points:
        if all(np.linalg.norm(p - k) > tol * (1 + np.linalg.norm(k)) for k in kept):
            kept.append(p)
    if not kept:
        return np.zeros((0, points.shape[-1]))
    return np.stack(kept)


def _solve(system, g, extra, clock, num_starts, warmup, iters, lr, newton):
    """`_solve_jit` on inputs and extra starts padded to bucket sizes, the padding cut off.

    Padding lets the report's calls (one input with visited starts, several inputs without)
    share one traced and compiled program, which costs far more than solving the padding.
    Every start is solved on its own, so the padded rows change the others only by rounding
    (a larger batch may order XLA's float operations differently).
    """
    num, num_extra = g.shape[0], 0 if extra is None else extra.shape[0]
    g_pad = jnp.concatenate([g, jnp.zeros((_bucket(num, _INPUT_BUCKET) - num,), g.dtype)])
    extra_pad = jnp.zeros((_bucket(num_extra, _START_BUCKET), system.size), system.dtype)
    if num_extra:
        extra_pad = extra_pad.at[:num_extra].set(extra)
    h, q = _solve_jit(system, g_pad, extra_pad, clock, num_starts, warmup, iters, lr, newton)
    return h[:num, : num_starts + num_extra], q[:num, : num_starts + num_extra]


_INPUT_BUCKET = 8
_START_BUCKET = 16


def _bucket(n: int, size: int) -> int:
    """``n`` rounded up to a positive multiple of ``size``."""
    return size * max(1, -(-n // size))


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 6, 7, 8))
def _solve_jit(system, g, extra, clock, num_starts, warmup, iters, lr, newton):
    """Adam, then Levenberg-Marquardt, from every start: states ``(N, S, n)``, speeds ``(N, S)``."""

    def residual(h, gi):
        return system.next_state(h, gi, clock) - h

    def speed(h, gi):
        r = residual(h, gi)
        return 0.5 * jnp.sum(r * r)

    h0 = _starts(system, g, extra, clock, num_starts, warmup)  # (N, S, n)
    num, per = h0.shape[0], h0.shape[1]
    gb = jnp.repeat(g, per)
    hb = h0.reshape(num * per, -1)
    batch_speed = jax.vmap(speed)
    if iters > 0:
        hb = _adam_descent(batch_speed, hb, gb, iters, lr)
    if newton > 0:
        hb = jax.vmap(functools.partial(_levenberg_marquardt, residual, newton))(hb, gb)
    qb = batch_speed(hb, gb)
    return hb.reshape(num, per, -1), qb.reshape(num, per)


def _starts(system, g, extra, clock, num_starts, warmup):
    """Starting states: visited along the trajectory under each constant input, then ``extra``."""

    def visit(gi):
        hs, _ = system.run(jnp.full((warmup,), gi), clock=clock)
        last = system.next_state(hs[-1], gi, clock)
        traj = jnp.concatenate([hs, last[None]])
        idx = jnp.linspace(warmup, 0, num_starts + 1)[:num_starts].round().astype(jnp.int32)
        return traj[idx]

    h0 = jax.vmap(visit)(g)
    return jnp.concatenate([h0, jnp.broadcast_to(extra, (g.shape[0],) + extra.shape)], 1)


def _adam_descent(batch_speed, h0, g, iters, lr):
    """``iters`` Adam steps on the summed speed; each start keeps the slowest state it visited."""
    opt = optax.adam(lr)

    def adam_step(_, carry):
        h, state, best_h, best_q = carry
        q, grads = jax.value_and_grad(lambda h: jnp.sum(batch_speed(h, g)))(h)
        qs = batch_speed(h, g)
        better = qs < best_q
        best_h = jnp.where(better[:, None], h, best_h)
        best_q = jnp.where(better, qs, best_q)
        updates, state = opt.update(grads, state, h)
        return optax.apply_updates(h, updates), state, best_h, best_q

    q0 = batch_speed(h0, g)
    q0 = jnp.where(jnp.isfinite(q0), q0, jnp.inf)
    h, _, best_h, best_q = jax.lax.fori_loop(0, iters, adam_step, (h0, opt.init(h0), h0, q0))
    qs = batch_speed(h, g)
    better = qs < best_q
    return jnp.where(better[:, None], h, best_h)


def _levenberg_marquardt(residual, num_steps, h, gi):
    """``num_steps`` damped Gauss-Newton steps on ``residual(h, gi)``, from ``h``.

    A step that does not lower ``|r|^2`` (or is not finite) is refused and the damping raised.
    """

    def body(_, carry):
        h, mu = carry
        r = residual(h, gi)
        a = jax.jacfwd(residual)(h, gi)
        ata = a.T @ a
        scale = jnp.maximum(jnp.max(jnp.abs(jnp.diag(ata))), 1e-30)
        step = jnp.linalg.solve(ata + mu * scale * jnp.eye(h.shape[0], dtype=h.dtype), -(a.T @ r))
        new_h = h + step
        new_r = residual(new_h, gi)
        good = jnp.all(jnp.isfinite(new_r)) & (jnp.sum(new_r**2) < jnp.sum(r**2))
        h = jnp.where(good, new_h, h)
        mu = jnp.where(good, jnp.maximum(mu / 10, 1e-9), mu * 10)
        return h, mu

    return jax.lax.fori_loop(0, num_steps, body, (h, jnp.asarray(1e-6, h.dtype)))[0]
