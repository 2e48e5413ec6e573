"""Update functions ``u(g | h)`` and the effective learning rate ``-du/dg``.

The update function of an optimizer at state ``h`` is the update it would apply for each
possible gradient ``g`` now. Plain SGD's is a line of slope ``-lr``; clipping bends it flat;
momentum shifts it by ``-lr * beta * m``; learning-rate adaptation changes its slope with the
state. Its negative slope is the effective learning rate.

References:
  Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
  mechanisms", arXiv 2011.02159.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from interpret import _checks
from interpret import system as _system


@dataclasses.dataclass(frozen=True)
class UpdateFunction:
    """The update function at one or more states.

    Attributes:
      gradients: the gradients ``g`` it was evaluated at, shape ``(G,)``.
      updates: ``u(g | h)``, shape ``(S, G)`` (one row per state).
      effective_learning_rates: ``-du/dg``, shape ``(S, G)``.
      states: the states, shape ``(S, size)``.
    """

    gradients: np.ndarray
    updates: np.ndarray
    effective_learning_rates: np.ndarray
    states: np.ndarray


def update_function(
    tx: optax.GradientTransformation | _system.ScalarSystem,
    gradients: Any,
    states: Any = None,
    *,
    step: int = 0,
) -> UpdateFunction:
    """Evaluates ``u(g | h)`` and ``-du/dg`` on a grid of gradients.

    Args:
      tx: an optax transformation (or a `ScalarSystem` built from one).
      gradients: the gradients to evaluate at, 1-d.
      states: one state vector ``(size,)`` or several ``(S, size)``; default the initial state.
      step: the exogenous time (number of ``tx.update`` calls before this one).

    Returns:
      An `UpdateFunction`.
    """
    system = _system.as_system(tx)
    g = _checks.vector("gradients", gradients)
    h = np.asarray(system.initial_state if states is None else states, np.float64)
    if h.ndim == 1:
        h = h[None]
    if h.ndim != 2 or h.shape[1] != system.size:
        raise ValueError(
            f"states: expected shape ({system.size},) or (S, {system.size}), got {h.shape}."
        )
    clock = system.clock_at(step)
    us, lrs = _evaluate(system, jnp.asarray(h, system.dtype), jnp.asarray(g, system.dtype), clock)
    return UpdateFunction(
        gradients=g,
        updates=np.asarray(us, np.float64),
        effective_learning_rates=np.asarray(lrs, np.float64),
        states=h,
    )


def _evaluate(system, hs, gs, clock):
    def one(h, g):
        u, du = jax.jvp(lambda gg: system.update(h, gg, clock), (g,), (jnp.ones_like(g),))
        return u, -du

    fn = jax.vmap(jax.vmap(one, in_axes=(None, 0)), in_axes=(0, None))
    return jax.jit(fn)(hs, gs)
