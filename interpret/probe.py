"""Probes: record gradients, updates and optimizer state of selected coordinates.

`probe` wraps any optax transformation into a ``GradientTransformationExtraArgs`` that behaves
exactly like it (same updates) and also keeps, in its state, a ring buffer of the last
``buffer_size`` steps for a few selected coordinates: the gradient, the update and the inner
state of that coordinate (its float state entries, flattened in tree order, the same ``h`` as
`interpret.scalar_system` uses). The buffer has fixed shapes, so the wrapper works under
``jax.jit`` and ``jax.lax.scan`` in a user's own training loop. `rollout` runs a whole
optimisation and returns the records.

A state leaf belongs to a parameter leaf when its tree path ends with that parameter's path and
its leading dimensions are the parameter's shape (optax's moments, a learned optimizer's hidden
state with a trailing hidden dimension); a coordinate's state is the concatenation of its
entries in those leaves. Integer leaves (step counters) are not recorded.

References:
  Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
  mechanisms", arXiv 2011.02159.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from interpret import _checks


class ProbeState(NamedTuple):
    """State of a `probe` wrapper.

    Attributes:
      inner: the wrapped transformation's state.
      count: number of steps recorded so far (int32 scalar).
      gradients: ring buffer of gradients, shape ``(buffer_size, num_coordinates)``.
      updates: ring buffer of updates, shape ``(buffer_size, num_coordinates)``.
      states: ring buffer of per-coordinate states *before* each step, shape
        ``(buffer_size, num_coordinates, state_size)``.
    """

    inner: Any
    count: jax.Array
    gradients: jax.Array
    updates: jax.Array
    states: jax.Array


@dataclasses.dataclass(frozen=True)
class Records:
    """Time-ordered records of a probe (oldest first).

    Attributes:
      steps: the step index of each record, shape ``(T,)``.
      gradients: shape ``(T, num_coordinates)``.
      updates: shape ``(T, num_coordinates)``.
      states: state before each step, shape ``(T, num_coordinates, state_size)``.
    """

    steps: np.ndarray
    gradients: np.ndarray
    updates: np.ndarray
    states: np.ndarray


@dataclasses.dataclass(frozen=True)
class Rollout:
    """A whole optimisation run, recorded.

    Attributes:
      losses: loss before each step, shape ``(num_steps,)``.
      gradients: shape ``(num_steps, num_coordinates)``.
      updates: shape ``(num_steps, num_coordinates)``.
      states: per-coordinate state before each step, ``(num_steps, num_coordinates, size)``.
      params: the parameters after the last step.
      coordinates: the flat indices that were recorded.
    """

    losses: np.ndarray
    gradients: np.ndarray
    updates: np.ndarray
    states: np.ndarray
    params: Any
    coordinates: tuple[int, ...]


def _owned_leaves(state: Any, params: Any) -> list[list[int]]:
    """For each param leaf, the indices of the float state leaves that belong to it.

    A state leaf belongs to a parameter leaf when its tree path ends with the parameter's and
    its shape starts with the parameter's (a per-coordinate accumulator), or when it is a
    scalar (a per-tensor quantity, e.g. a tensor's adapted step scale): every coordinate of
    the tensor sees that scalar as part of its state, as the one-coordinate system, whose
    tensor is the coordinate, does.
    """
    state_leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    param_leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    owned = []
    for ppath, p in param_leaves:
        pshape = tuple(np.shape(p))
        mine = []
        for i, (spath, leaf) in enumerate(state_leaves):
            if not _checks.is_float(leaf):
                continue
            if len(ppath) > len(spath) or tuple(spath[len(spath) - len(ppath) :]) != tuple(ppath):
                continue
            shape = tuple(np.shape(leaf))
            if shape[: len(pshape)] != pshape and shape != ():
                continue
            mine.append(i)
        owned.append(mine)
    return owned


def _by_leaf(coords: list) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Groups ``coords`` by parameter leaf: ``(leaf, local indices, positions in coords)``.

    One gather per leaf instead of one per coordinate keeps the traced graph (and its
    compile time inside a scan) small.
    """
    groups: dict[int, tuple[list, list]] = {}
    for pos, (_, leaf, j) in enumerate(coords):
        js, ps = groups.setdefault(leaf, ([], []))
        js.append(j)
        ps.append(pos)
    return [(leaf, np.asarray(js), np.asarray(ps)) for leaf, (js, ps) in groups.items()]


def _in_coordinate_order(blocks: list, groups: list) -> jax.Array:
    out = jnp.concatenate(blocks, axis=0)
    order = np.argsort(np.concatenate([ps for *_, ps in groups]), kind="stable")
    return out if np.array_equal(order, np.arange(len(order))) else out[order]


def _gather(tree: Any, coords: list) -> jax.Array:
    leaves = jax.tree.leaves(tree)
    groups = _by_leaf(coords)
    blocks = [jnp.ravel(leaves[leaf])[js].astype(jnp.float32) for leaf, js, _ in groups]
    return _in_coordinate_order(blocks, groups)


def _per_coordinate(leaf: Any, size: int) -> jax.Array:
    """A state leaf as ``(size, n)`` rows, one per coordinate; a scalar is repeated."""
    leaf = jnp.asarray(leaf)
    if leaf.ndim == 0:
        return jnp.broadcast_to(leaf.reshape(1, 1), (size, 1))
    return jnp.reshape(leaf, (size, -1))


def _gather_state(state: Any, params: Any, coords: list, owned: list) -> jax.Array:
    leaves = jax.tree.leaves(state)
    plea = jax.tree.leaves(params)
    groups = _by_leaf(coords)
    blocks = []
    for leaf, js, _ in groups:
        size = int(np.size(plea[leaf]))
        parts = [_per_coordinate(leaves[i], size)[js].astype(jnp.float32) for i in owned[leaf]]
        blocks.append(jnp.concatenate(parts, axis=1) if parts else jnp.zeros((len(js), 0)))
    sizes = {int(b.shape[1]) for b in blocks}
    if len(sizes) != 1:
        raise ValueError(
            "coordinates: expected every selected coordinate to have a state of the same size, "
            f"got sizes {sorted(sizes)}; select coordinates of one parameter leaf."
        )
    return _in_coordinate_order(blocks, groups)


def probe(
    tx: optax.GradientTransformation,
    coordinates: Sequence[int] | int | None = None,
    buffer_size: int = 1000,
) -> optax.GradientTransformationExtraArgs:
    """Wraps ``tx`` so that its state records a few coordinates' dynamics.

    Args:
      tx: any optax transformation.
      coordinates: flat indices into the parameters (all leaves raveled and concatenated in
        tree order), or a count ``k`` for ``k`` evenly spaced indices (default 8).
      buffer_size: how many of the most recent steps the ring buffer keeps.

    Returns:
      A ``GradientTransformationExtraArgs`` with the updates of ``tx`` and `ProbeState` state.
      Read the records with `records`.
    """
    _checks.gradient_transformation(tx)
    buffer_size = _checks.positive_int("buffer_size", buffer_size)
    inner_tx = optax.with_extra_args_support(tx)

    def init_fn(params):
        coords = _checks.coordinates(params, coordinates)
        inner = inner_tx.init(params)
        owned = _owned_leaves(inner, params)
        size = _gather_state(inner, params, coords, owned).shape[1]
        k = len(coords)
        return ProbeState(
            inner=inner,
            count=jnp.zeros((), jnp.int32),
            gradients=jnp.zeros((buffer_size, k), jnp.float32),
            updates=jnp.zeros((buffer_size, k), jnp.float32),
            states=jnp.zeros((buffer_size, k, size), jnp.float32),
        )

    def update_fn(updates, state, params=None, **extra_args):
        reference = updates if params is None else params
        coords = _checks.coordinates(reference, coordinates)
        owned = _owned_leaves(state.inner, reference)
        h = _gather_state(state.inner, reference, coords, owned)
        new_updates, inner = inner_tx.update(updates, state.inner, params, **extra_args)
        pos = state.count % buffer_size
        new_state = ProbeState(
            inner=inner,
            count=optax.safe_increment(state.count),
            gradients=state.gradients.at[pos].set(_gather(updates, coords)),
            updates=state.updates.at[pos].set(_gather(new_updates, coords)),
            states=state.states.at[pos].set(h),
        )
        return new_updates, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _find_probe_state(state: Any) -> ProbeState:
    if isinstance(state, ProbeState):
        return state
    found = [
        s
        for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, ProbeState))
        if isinstance(s, ProbeState)
    ]
    if len(found) != 1:
        raise ValueError(
            f"state: expected a state holding exactly one ProbeState, found {len(found)}."
        )
    return found[0]


def records(state: Any) -> Records:
    """Returns the records in a probe's state, oldest first.

    Args:
      state: a `ProbeState`, or an optax state (e.g. of a chain) that holds exactly one.

    Returns:
      `Records` of the last ``min(count, buffer_size)`` steps.
    """
    state = _find_probe_state(state)
    count = int(state.count)
    size = state.gradients.shape[0]
    n = min(count, size)
    steps = np.arange(count - n, count)
    idx = steps % size
    return Records(
        steps=steps,
        gradients=np.asarray(state.gradients)[idx],
        updates=np.asarray(state.updates)[idx],
        states=np.asarray(state.states)[idx],
    )


def rollout(
    tx: optax.GradientTransformation,
    loss_fn: Callable[[Any], jax.Array],
    params: Any,
    num_steps: int,
    *,
    coordinates: Sequence[int] | int | None = None,
    pass_value: bool = True,
) -> Rollout:
    """Runs ``num_steps`` of ``tx`` on ``loss_fn`` from ``params`` and records everything.

    Args:
      tx: any optax transformation.
      loss_fn: ``params -> scalar loss``, differentiable.
      params: initial parameters (a pytree of float arrays).
      num_steps: number of optimisation steps.
      coordinates: as in `probe`.
      pass_value: pass the loss as ``value=`` to transforms that take extra args.

    Returns:
      A `Rollout`.
    """
    _checks.gradient_transformation(tx)
    num_steps = _checks.positive_int("num_steps", num_steps)
    _checks.function("loss_fn", loss_fn)
    coords = _checks.coordinates(params, coordinates)
    flat = tuple(c for c, _, _ in coords)
    ptx = probe(tx, flat, buffer_size=num_steps)

    @jax.jit
    def run(params):
        state = ptx.init(params)

        def body(carry, _):
            params, state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params)
            kwargs = {"value": loss} if pass_value else {}
            updates, state = ptx.update(grads, state, params, **kwargs)
            return (optax.apply_updates(params, updates), state), loss

        (params, state), losses = jax.lax.scan(body, (params, state), None, length=num_steps)
        return params, state, losses

    final, state, losses = run(params)
    rec = records(state)
    return Rollout(
        losses=np.asarray(losses),
        gradients=rec.gradients,
        updates=rec.updates,
        states=rec.states,
        params=final,
        coordinates=flat,
    )
