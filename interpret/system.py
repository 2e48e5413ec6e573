"""The one-coordinate dynamical system of an optax transformation.

A component-wise optimizer applies the same rule to every scalar parameter, so it is fully
described by what it does to one scalar. `scalar_system` builds that rule from any
``optax.GradientTransformation``: it calls ``tx.init`` on a scalar parameter, flattens the
floating-point leaves of the state into a vector ``h`` and keeps the other leaves (integer step
counters, booleans) apart as exogenous *time*. One step is

    h' = F(h, g; t),     u = G(h, g; t),

where ``g`` is the scalar gradient, ``u`` the update that ``tx.update`` returns (so a descent
step has ``u = -lr * g``) and ``t`` the clock (the non-float leaves), which advances as
``tx.update`` advances it but is never an unknown in fixed-point searches or Jacobians.

Transforms that are not component-wise (``optax.clip_by_global_norm``, ``optax.lamb``, anything
that couples parameters) are still probed on a single scalar parameter: the system then
describes what the transform does when the whole model is that one scalar (a global norm is
then ``|g|``), which is not what it does to one coordinate of a larger model. The parameter value
is held fixed at ``param`` (default 0), so terms that depend on parameters (weight decay) act
as constants.

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

Clock = tuple
"""The non-float leaves of a transformation's state (step counters): exogenous time."""


def _update_kwargs(tx: Any, value: Any) -> dict[str, Any]:
    """``{"value": value}`` for transforms that take extra args and a given value, else ``{}``."""
    if value is not None and isinstance(tx, optax.GradientTransformationExtraArgs):
        return {"value": value}
    return {}


@dataclasses.dataclass(frozen=True, eq=False)
class ScalarSystem:
    """The dynamical system ``h' = F(h, g; t)``, ``u = G(h, g; t)`` of a transformation.

    Attributes:
      tx: the transformation.
      initial_state: ``h`` after ``tx.init`` (flattened float leaves), shape ``(size,)``.
      initial_clock: the non-float leaves after ``tx.init``.
      size: the dimension of ``h`` (0 for plain SGD).
      leaf_sizes: the number of entries each float leaf contributes to ``h``, in tree order.
      dtype: the dtype of ``h``.
      param: the scalar parameter the transform sees.
      value: the loss passed as ``value=`` (only to ``GradientTransformationExtraArgs``).
    """

    tx: optax.GradientTransformation
    initial_state: jax.Array
    initial_clock: Clock
    size: int
    leaf_sizes: tuple[int, ...]
    dtype: Any
    param: jax.Array
    value: Any
    _treedef: Any
    _float_mask: tuple[bool, ...]
    _shapes: tuple[tuple[int, ...], ...]
    _dtypes: tuple[Any, ...]

    def unflatten(self, h: jax.Array, clock: Clock) -> Any:
        """Rebuilds the optax state from ``h`` and a clock."""
        leaves, offset, clock_iter = [], 0, iter(clock)
        specs = zip(self._float_mask, self._shapes, self._dtypes, strict=True)
        for is_float, shape, dtype in specs:
            if is_float:
                n = int(np.prod(shape, dtype=int))
                leaves.append(h[offset : offset + n].reshape(shape).astype(dtype))
                offset += n
            else:
                leaves.append(next(clock_iter))
        return jax.tree.unflatten(self._treedef, leaves)

    def flatten(self, state: Any) -> tuple[jax.Array, Clock]:
        """Splits an optax state (of a scalar parameter) into ``(h, clock)``."""
        leaves = jax.tree.leaves(state)
        floats, clock = [], []
        for leaf, is_float, dtype in zip(leaves, self._float_mask, self._dtypes, strict=True):
            if is_float:
                floats.append(jnp.ravel(leaf).astype(self.dtype))
            else:
                clock.append(jnp.asarray(leaf).astype(dtype))
        h = jnp.concatenate(floats) if floats else jnp.zeros((0,), self.dtype)
        return h, tuple(clock)

    def step(
        self, h: jax.Array, g: jax.Array, clock: Clock | None = None
    ) -> tuple[jax.Array, jax.Array, Clock]:
        """One step: returns ``(F(h, g; t), G(h, g; t), next clock)``.

        Args:
          h: state vector, shape ``(size,)``.
          g: scalar gradient.
          clock: the time; defaults to ``initial_clock``.

        Returns:
          The next state vector, the scalar update and the next clock.
        """
        clock = self.initial_clock if clock is None else clock
        state = self.unflatten(h, clock)
        g = jnp.asarray(g, self.param.dtype).reshape(())
        u, new_state = self.tx.update(g, state, self.param, **_update_kwargs(self.tx, self.value))
        new_h, new_clock = self.flatten(new_state)
        return new_h, jnp.asarray(u, self.dtype).reshape(()), new_clock

    def next_state(self, h: jax.Array, g: jax.Array, clock: Clock | None = None) -> jax.Array:
        """``F(h, g; t)``."""
        return self.step(h, g, clock)[0]

    def update(self, h: jax.Array, g: jax.Array, clock: Clock | None = None) -> jax.Array:
        """``G(h, g; t)``: the scalar update."""
        return self.step(h, g, clock)[1]

    def clock_at(self, step: int) -> Clock:
        """The clock after ``step`` calls of ``tx.update`` (with zero gradients) from init."""
        step = _checks.non_negative_int("step", step)
        if not self.initial_clock or step == 0:
            return self.initial_clock
        return _advance(self, int(step))

    def run(
        self, gradients: jax.Array, h: jax.Array | None = None, clock: Clock | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """Drives the system with a gradient sequence.

        Args:
          gradients: shape ``(T,)``.
          h: starting state (default ``initial_state``).
          clock: starting clock (default ``initial_clock``).

        Returns:
          ``(states, updates)``: the state *before* each step, shape ``(T, size)``, and the
          update of each step, shape ``(T,)``.
        """
        h = self.initial_state if h is None else h
        clock = self.initial_clock if clock is None else clock

        def body(carry, g):
            h, clock = carry
            new_h, u, new_clock = self.step(h, g, clock)
            return (new_h, new_clock), (h, u)

        _, (hs, us) = jax.lax.scan(body, (h, clock), jnp.asarray(gradients, self.dtype))
        return hs, us


def _advance(system: ScalarSystem, step: int) -> Clock:
    def body(_, carry):
        h, clock = carry
        new_h, _, new_clock = system.step(h, jnp.zeros((), system.dtype), clock)
        return new_h, new_clock

    _, clock = jax.jit(lambda c: jax.lax.fori_loop(0, step, body, c))(
        (system.initial_state, system.initial_clock)
    )
    return clock


def scalar_system(
    tx: optax.GradientTransformation,
    *,
    param: float = 0.0,
    dtype: Any = jnp.float32,
    value: Any = None,
) -> ScalarSystem:
    """Builds the one-coordinate dynamical system of ``tx``.

    Args:
      tx: any ``optax.GradientTransformation``.
      param: the value of the scalar parameter the transform sees (held fixed).
      dtype: the parameter's dtype.
      value: a loss passed as ``value=`` to ``GradientTransformationExtraArgs`` (None: not
        passed).

    Returns:
      A `ScalarSystem`.
    """
    _checks.gradient_transformation(tx)
    if not jnp.issubdtype(jnp.dtype(dtype), jnp.floating):
        raise ValueError(f"dtype: expected a floating-point dtype, got {dtype!r}.")
    p = jnp.asarray(param, dtype).reshape(())
    state = tx.init(p)
    leaves, treedef = jax.tree.flatten(state)
    mask = tuple(_checks.is_float(leaf) for leaf in leaves)
    shapes = tuple(tuple(jnp.shape(leaf)) for leaf in leaves)
    dtypes = tuple(jnp.asarray(leaf).dtype for leaf in leaves)
    float_dtypes = [d for d, m in zip(dtypes, mask, strict=True) if m]
    h_dtype = jnp.result_type(*float_dtypes, jnp.float32) if float_dtypes else jnp.float32
    leaf_sizes = tuple(int(np.prod(s, dtype=int)) for s, m in zip(shapes, mask, strict=True) if m)
    system = ScalarSystem(
        tx=tx,
        initial_state=jnp.zeros((0,), h_dtype),
        initial_clock=(),
        size=sum(leaf_sizes),
        leaf_sizes=leaf_sizes,
        dtype=h_dtype,
        param=p,
        value=value,
        _treedef=treedef,
        _float_mask=mask,
        _shapes=shapes,
        _dtypes=dtypes,
    )
    h0, clock0 = system.flatten(state)
    return dataclasses.replace(system, initial_state=h0, initial_clock=clock0)


def effective_learning_rate(
    system: ScalarSystem, h: jax.Array, g: jax.Array, clock: Clock | None = None
) -> jax.Array:
    """``-dG/dg`` at ``(h, g)``: the effective learning rate of one step.

    Args:
      system: a `ScalarSystem`.
      h: state vector, shape ``(size,)``.
      g: scalar gradient.
      clock: the time (default ``system.initial_clock``).

    Returns:
      A scalar.
    """
    return -jax.grad(lambda gg: system.update(h, gg, clock))(jnp.asarray(g, system.dtype))


def typical_state(
    tx: optax.GradientTransformation | ScalarSystem,
    *,
    num_steps: int = 100,
    gradient_scale: float = 1.0,
    seed: int = 0,
) -> jax.Array:
    """The state ``h`` reached after ``num_steps`` Gaussian gradients from ``tx.init``.

    Args:
      tx: an optax transformation (or a `ScalarSystem`).
      num_steps: number of steps.
      gradient_scale: standard deviation of the gradients.
      seed: seed of the gradient sequence.

    Returns:
      The state vector, shape ``(size,)``.
    """
    system = as_system(tx)
    num_steps = _checks.positive_int("num_steps", num_steps)
    g = gradient_scale * jax.random.normal(jax.random.key(seed), (num_steps,), system.dtype)
    hs, _ = jax.jit(system.run)(g)
    return system.next_state(hs[-1], g[-1], system.clock_at(num_steps - 1))


def as_system(tx_or_system: Any, **kwargs: Any) -> ScalarSystem:
    """``tx_or_system`` if it is a `ScalarSystem`, else ``scalar_system(tx_or_system, **kwargs)``.

    The package's internal helper (not re-exported) behind every entry point that accepts
    either an optax transformation or its `ScalarSystem`.
    """
    if isinstance(tx_or_system, ScalarSystem):
        return tx_or_system
    return scalar_system(tx_or_system, **kwargs)
