"""Linearisation of an optimizer's dynamics around a state, read as momentum terms.

Around a state ``h*`` and input ``g*`` (usually a fixed point),

    h' - h* ~ F(h*, g*) - h* + J (h - h*) + b (g - g*),
    u       ~ G(h*, g*) + r . (h - h*) + d (g - g*),

with ``J = dF/dh``, ``b = dF/dg``, ``r = dG/dh``, ``d = dG/dg``. Diagonalising ``J = V L V^-1``
splits the state into modes ``z_k`` that each obey ``z_k' = lambda_k z_k + c_k g``: a momentum
accumulator with decay ``beta_k = lambda_k`` and time-scale ``-1 / log|lambda_k|`` steps. The
impulse response of the update to one unit of gradient is ``d`` now and ``r J^(n-1) b`` after
``n >= 1`` steps, which is ``-sum_k alpha_k beta_k^n`` for ``alpha_k = -(r V)_k (V^-1 b)_k /
lambda_k``: the learning rate of mode ``k`` read as optax's ``m' = beta m + g, u = -alpha m'``.
For ``optax.sgd(lr, momentum=beta)`` there is one mode, ``beta_1 = beta`` and ``alpha_1 = lr``.

`linearized_optimizer` turns a `Linearization` into a runnable optax transformation, so one
can measure how much of an optimizer's behaviour the linear model keeps.

References:
  Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
  mechanisms", arXiv 2011.02159.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from interpret import _checks
from interpret import system as _system


@dataclasses.dataclass(frozen=True)
class Linearization:
    """The linearised one-coordinate system around ``(state, input)``.

    Attributes:
      state: the linearisation point ``h*``, shape ``(size,)``.
      input: the input ``g*``.
      step: exogenous time at which the system was linearised.
      next_state: ``F(h*, g*)``, shape ``(size,)``.
      update: ``G(h*, g*)``.
      state_jacobian: ``J = dF/dh``, shape ``(size, size)``.
      input_jacobian: ``b = dF/dg``, shape ``(size,)``.
      readout: ``r = dG/dh``, shape ``(size,)``.
      learning_rate: ``-dG/dg``, the immediate effective learning rate.
      eigenvalues: eigenvalues of ``J`` sorted by decreasing modulus, complex, ``(size,)``.
      eigenvectors: matching right eigenvectors (columns), complex, ``(size, size)``.
      timescales: ``-1 / log|lambda|`` in steps (inf for ``|lambda| >= 1``, 0 for 0).
      betas: momentum decay of each mode (the eigenvalues).
      alphas: learning rate of each mode read as a momentum term, complex ``(size,)``.
      initial_state: the state the transformation starts from (``tx.init``).
    """

    state: np.ndarray
    input: float
    step: int
    next_state: np.ndarray
    update: float
    state_jacobian: np.ndarray
    input_jacobian: np.ndarray
    readout: np.ndarray
    learning_rate: float
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    timescales: np.ndarray
    betas: np.ndarray
    alphas: np.ndarray
    initial_state: np.ndarray


def linearize(
    tx: optax.GradientTransformation | _system.ScalarSystem,
    state: Any = None,
    input: float = 0.0,
    *,
    step: int = 0,
    input_step: float | None = None,
) -> Linearization:
    """Linearises ``h' = F(h, g)``, ``u = G(h, g)`` at ``(state, input)``.

    Args:
      tx: an optax transformation (or a `ScalarSystem`).
      state: the point ``h*`` (default: the initial state), shape ``(size,)``; usually a fixed
        point from `interpret.fixed_points`.
      input: the gradient ``g*``.
      step: exogenous time.
      input_step: when given, the input derivatives ``b = dF/dg`` and ``d = dG/dg`` are the
        central differences ``(F(h*, g* + s) - F(h*, g* - s)) / 2s`` at this step ``s``
        instead of derivatives: a rule with a jump at ``g = 0`` (a sign-like input) has zero
        derivative there yet responds to every gradient it sees. Use the median observed
        gradient magnitude (`interpret.GradientStats.scale`).

    Returns:
      A `Linearization`.
    """
    system = _system.as_system(tx)
    n = system.size
    h = np.asarray(system.initial_state if state is None else state, np.float64)
    if h.shape != (n,):
        raise ValueError(f"state: expected shape ({n},), got {h.shape}.")
    g = float(_checks.vector("input", input)[0]) if np.ndim(input) == 0 else None
    if g is None:
        raise ValueError(f"input: expected a scalar gradient, got shape {np.shape(input)}.")
    _checks.optional_positive("input_step", input_step)
    fh, uh, j, b, r, d = _derivatives(system, system.clock_at(step), h, g, input_step)
    lam, vec, alphas, timescales = _eigenmodes(j, b, r)
    return Linearization(
        state=h,
        input=g,
        step=step,
        next_state=np.asarray(fh, np.float64),
        update=float(uh),
        state_jacobian=j,
        input_jacobian=b,
        readout=r,
        learning_rate=-float(d),
        eigenvalues=lam,
        eigenvectors=vec,
        timescales=timescales,
        betas=lam,
        alphas=alphas,
        initial_state=np.asarray(system.initial_state, np.float64),
    )


def _derivatives(system, clock, h, g, input_step):
    """``F(h, g)``, ``G(h, g)`` and their derivatives ``J, b, r, d`` (``J, b, r`` as float64).

    With ``input_step``, ``b`` and ``d`` are central differences at that step.
    """
    h, g = jnp.asarray(h, system.dtype), jnp.asarray(g, system.dtype)
    central = input_step is not None
    step = jnp.asarray(input_step if central else 0.0, system.dtype)
    fh, uh, ((j, b), (r, d)) = _jacobians(system, central, h, g, step, clock)
    n = system.size
    j = np.asarray(j, np.float64).reshape(n, n)
    b = np.asarray(b, np.float64).reshape(n)
    r = np.asarray(r, np.float64).reshape(n)
    return fh, uh, j, b, r, d


@functools.partial(jax.jit, static_argnums=(0, 1))
def _jacobians(system, central: bool, h, g, input_step, clock):
    """``F``, ``G`` and their Jacobians at ``(h, g)``; one compiled program per system."""

    def f(h, g):
        new_h, u, _ = system.step(h, g, clock)
        return new_h, u

    fh, uh = f(h, g)
    (j, b), (r, d) = jax.jacfwd(f, argnums=(0, 1))(h, g)
    if central:
        (fp, up), (fm, um) = f(h, g + input_step), f(h, g - input_step)
        b, d = (fp - fm) / (2 * input_step), (up - um) / (2 * input_step)
    return fh, uh, ((j, b), (r, d))


def _eigenmodes(j: np.ndarray, b: np.ndarray, r: np.ndarray):
    """Eigen-decomposition of ``J`` read as momentum terms (see the module docstring).

    Returns ``(eigenvalues, eigenvectors, alphas, timescales)``, by decreasing modulus. A
    Jacobian with a non-finite entry (a rule not differentiable at this point, e.g. a norm
    at zero) has no eigen-decomposition: everything is NaN, so callers can tell and move on.
    """
    if j.size and not np.all(np.isfinite(j)):
        n = j.shape[0]
        nan = np.full((n,), np.nan)
        return nan.astype(complex), np.full((n, n), np.nan, complex), nan.astype(complex), nan
    if not j.size:
        return (
            np.zeros((0,), complex),
            np.zeros((0, 0), complex),
            np.zeros((0,), complex),
            np.zeros((0,)),
        )
    lam, vec = np.linalg.eig(j)
    order = np.argsort(-np.abs(lam), kind="stable")
    lam, vec = lam[order], vec[:, order]
    coupling = (r @ vec) * np.linalg.solve(vec, b.astype(complex))
    safe = np.abs(lam) > 1e-8
    alphas = np.where(safe, -coupling / np.where(safe, lam, 1.0), 0.0)
    mod = np.abs(lam)
    with np.errstate(divide="ignore"):
        timescales = np.where(
            mod >= 1.0, np.inf, np.where(mod == 0, 0.0, -1.0 / np.log(np.maximum(mod, 1e-300)))
        )
    return lam, vec, alphas, timescales


class LinearizedState(NamedTuple):
    """State of `linearized_optimizer`: ``h - h*`` per parameter, trailing dim ``size``."""

    delta: Any


def linearized_optimizer(linearization: Linearization) -> optax.GradientTransformation:
    """The linearised system as a component-wise optax transformation.

    Every parameter entry carries ``delta = h - h*`` (starting from ``tx.init``'s state) and
    follows ``delta' = F* - h* + J delta + b (g - g*)``, ``u = G* + r . delta + d (g - g*)``.
    The clock is frozen at the linearisation's step.

    Args:
      linearization: from `linearize`.

    Returns:
      An ``optax.GradientTransformation``.
    """
    _checks.instance("linearization", linearization, Linearization, "a Linearization")
    lin = linearization
    f32 = lambda x: jnp.asarray(x, jnp.float32)
    drift = f32(lin.next_state - lin.state)
    j, b, r = f32(lin.state_jacobian), f32(lin.input_jacobian), f32(lin.readout)
    d, g0, u0 = -lin.learning_rate, lin.input, lin.update
    delta0 = f32(lin.initial_state - lin.state)

    def init_fn(params):
        return LinearizedState(
            jax.tree.map(lambda p: jnp.broadcast_to(delta0, jnp.shape(p) + delta0.shape), params)
        )

    def update_fn(updates, state, params=None):
        del params

        def one(g, delta):
            g32 = jnp.asarray(g, jnp.float32)
            dg = jnp.where(jnp.isfinite(g32), g32, 0.0) - g0
            u = u0 + delta @ r + d * dg
            new = drift + delta @ j.T + dg[..., None] * b
            return u.astype(jnp.asarray(g).dtype), new

        pairs = jax.tree.map(one, updates, state.delta)
        outer = jax.tree.structure(updates)
        new_updates, new_delta = jax.tree.transpose(outer, jax.tree.structure((0, 0)), pairs)
        return new_updates, LinearizedState(new_delta)

    return optax.GradientTransformation(init_fn, update_fn)
