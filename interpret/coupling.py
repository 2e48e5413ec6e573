"""Whether an optimizer is component-wise: does a coordinate's update depend on the others?

The one-coordinate system (`interpret.scalar_system`) and everything built on it (update
functions, fixed points, modes, the distilled chain) see an optimizer one coordinate at a
time, which is how the paper's learned optimizers are built: each coordinate's update depends
on its own gradient history only. An optimizer that reads whole tensors (an RMS over the
tensor as a feature, the cosine or secant of whole tensors in a step adaptation) is not: the
same coordinate, with the same gradients, gets another update when it shares a tensor with
other coordinates, and a component-wise chain fitted to its one-coordinate view can match that
view closely and still behave differently on the optimizer's task. `coupling` measures how far
this goes: it runs ``tx`` once with ``K`` recorded gradient sequences as the ``K`` coordinates
of one tensor and once on each sequence alone, and returns the r2 of the lone updates against
the shared ones: 1 for a component-wise optimizer, lower the more the tensor's other
coordinates steer each update. No loss is passed as ``value=`` (as in the one-coordinate
system), so a rule that reads the loss is not part of this measure.

References:
  Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
  mechanisms", arXiv 2011.02159 (the component-wise optimizers it analyses).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from interpret import _checks
from interpret.momentum import r_squared

COMPONENT_WISE_R2 = 0.99
"""An optimizer whose lone updates reach this r2 against its shared ones is component-wise."""


@dataclasses.dataclass(frozen=True)
class Coupling:
    """How far an optimizer's coordinates steer each other's updates.

    Attributes:
      r2: the r2 of each coordinate's updates when it is alone against its updates when it
        shares one tensor with the other coordinates (1: no coupling).
      component_wise: ``r2 >= COMPONENT_WISE_R2``.
      num_coordinates: ``K``, the coordinates that shared the tensor.
    """

    r2: float
    component_wise: bool
    num_coordinates: int


def coupling(tx: optax.GradientTransformation, gradients: Any) -> Coupling:
    """Compares ``tx``'s updates of coordinates alone and sharing a tensor (module docstring).

    Args:
      tx: any optax transformation.
      gradients: ``(T, K)`` finite gradient sequences, ``K >= 2`` (a `interpret.Recording`'s
        ``gradients``: what the optimizer saw), run as the ``K`` entries of one float32 tensor.

    Returns:
      A `Coupling`.

    Raises:
      ValueError: ``tx`` is not a transformation, or ``gradients`` is not a finite
        ``(T >= 2, K >= 2)`` array.
    """
    _checks.gradient_transformation(tx)
    g = np.asarray(gradients, np.float64)
    if g.ndim != 2 or g.shape[0] < 2 or g.shape[1] < 2 or not np.all(np.isfinite(g)):
        raise ValueError(
            f"gradients: expected a finite (T >= 2, K >= 2) array, got shape {g.shape}"
            + ("" if g.ndim != 2 or np.all(np.isfinite(g)) else " with non-finite entries")
            + "."
        )
    g32 = jnp.asarray(g, jnp.float32)
    shared = jax.jit(lambda x: _updates(tx, x))(g32)
    lone = jax.jit(jax.vmap(lambda column: _updates(tx, column), in_axes=1, out_axes=1))
    alone = lone(g32[:, :, None])[..., 0]
    r2 = float(r_squared(np.asarray(shared, np.float64), np.asarray(alone, np.float64)))
    return Coupling(r2=r2, component_wise=r2 >= COMPONENT_WISE_R2, num_coordinates=g.shape[1])


def _updates(tx: optax.GradientTransformation, g: jax.Array) -> jax.Array:
    """``tx``'s updates of one float32 tensor of ``g.shape[1:]`` driven by ``g``, at 0."""
    params = jnp.zeros(g.shape[1:], jnp.float32)

    def step(state, gradient):
        u, state = tx.update(gradient, state, params)
        return state, u

    return jax.lax.scan(step, tx.init(params), g)[1]
