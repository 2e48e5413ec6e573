"""A dense layer written as multiply-adds, with a derivative that stays one contraction.

The per-coordinate MLPs of the learned optimizers apply a small dense layer to every
coordinate of a tensor. Written as ``b[j] + sum_i x[i] * w[i, j]`` over whole arrays, XLA
fuses a chain of such layers, together with the feature computations, into one elementwise
loop, which is the fastest forward pass on a CPU. Its automatic derivative is not: the
transpose of every ``x[i] * w[i, j]`` with respect to the scalar ``w[i, j]`` is a separate
reduction over all coordinates, ``fan_in * fan_out`` of them per layer, so a meta-gradient
through one optimizer step costs many times its forward pass.

`muladd_dense` keeps the multiply-add primal and gives JAX a forward-mode rule in which the
weights' tangent enters through one ``stack(x) @ t_w``; reverse mode transposes that into one
``stack(x)^T @ cotangent`` contraction per layer. The inputs' tangent keeps the multiply-add
form (it fuses, and forward-mode users such as ``jax.jacfwd`` in `interpret` need it). Zero
tangents stay symbolic, so differentiating only with respect to the weights, as
meta-training does, computes no input tangents at all.

`muladd_mlp` does the same for a whole ReLU network: multiply-adds in the primal, which fuse
into one loop, and a forward-mode rule that carries every layer as one stacked
``(fan_out, coords)`` array. Reverse mode through an unroll (truncated backpropagation)
stores what the backward pass needs per step; as separate arrays per hidden unit that is one
small kernel and one stored buffer each, stacked it is a few.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero


def _muladd(inputs: Sequence[jax.Array], w: jax.Array, biases: Sequence[jax.Array]) -> list:
    """``out[j] = biases[j] + sum_i inputs[i] * w[i, j]`` as scalar-times-array multiply-adds."""
    fan_in, fan_out = w.shape
    w_flat = list(w.reshape(-1))
    outs = []
    for j in range(fan_out):
        acc = biases[j]
        for i in range(fan_in):
            acc = acc + inputs[i] * w_flat[i * fan_out + j]
        outs.append(acc)
    return outs


@jax.custom_jvp
def muladd_dense(inputs: tuple, w: jax.Array, biases: tuple) -> tuple:
    """``out[j] = biases[j] + sum_i inputs[i] * w[i, j]`` over same-shape arrays.

    Args:
      inputs: ``fan_in`` arrays of one shape and dtype.
      w: ``(fan_in, fan_out)`` weights of the inputs' dtype.
      biases: ``fan_out`` arrays of the inputs' dtype, each broadcastable to the inputs.

    Returns:
      ``fan_out`` arrays of the inputs' shape (a tuple).
    """
    return tuple(_muladd(inputs, w, biases))


def _is_zero(tangent) -> bool:
    return isinstance(tangent, SymbolicZero)


def _muladd_dense_jvp(primals, tangents):
    inputs, w, biases = primals
    t_inputs, t_w, t_biases = tangents
    shape, dtype = inputs[0].shape, inputs[0].dtype
    fan_out = w.shape[1]
    zero = jnp.zeros((), dtype)
    terms: list[list[jax.Array]] = [[] for _ in range(fan_out)]
    live = [i for i, t in enumerate(t_inputs) if not _is_zero(t)]
    if live:
        rows = w[np.asarray(live)]
        via_inputs = _muladd([t_inputs[i] for i in live], rows, [zero] * fan_out)
        for j, t in enumerate(via_inputs):
            terms[j].append(t)
    scalar = [j for j, t in enumerate(t_biases) if not _is_zero(t) and jnp.ndim(t) == 0]
    if not _is_zero(t_w) or scalar:
        # One (fan_out, coords) term, outputs along the leading axis and cut with split (not
        # indexing): in reverse mode it transposes into one contraction over the contiguous
        # coordinate axis for w, one reduction for the scalar biases and one concatenate,
        # instead of fan_in * fan_out reductions and fan_out pad-adds.
        joint = jnp.zeros((fan_out, *shape), dtype)
        if not _is_zero(t_w):
            stacked = jnp.stack(inputs).reshape(len(inputs), -1)
            joint = (t_w.T @ stacked).reshape(fan_out, *shape)
        if scalar:
            column = jnp.stack([t_biases[j] if j in scalar else zero for j in range(fan_out)])
            joint = joint + column.reshape((fan_out,) + (1,) * len(shape))
        for j, t in enumerate(jnp.split(joint, fan_out)):
            terms[j].append(t[0])
    for j, t in enumerate(t_biases):
        if not _is_zero(t) and j not in scalar:
            terms[j].append(t)
    t_out = tuple(jnp.broadcast_to(sum(ts[1:], ts[0]) if ts else zero, shape) for ts in terms)
    return _dot_dense(inputs, w, biases), t_out


def _dot_dense(inputs, w: jax.Array, biases) -> tuple:
    """`muladd_dense` as one ``w.T @ stack(inputs)``, the form the derivatives evaluate.

    A dot's output is materialised once. The multiply-add form would be fused into every
    consumer of the backward pass instead, recomputing the layer (and the layers before it)
    once per output unit.
    """
    shape = inputs[0].shape
    fan_out = w.shape[1]
    flat = (w.T @ jnp.stack(inputs).reshape(len(inputs), -1)).reshape(fan_out, *shape)
    return tuple(t[0] + b for t, b in zip(jnp.split(flat, fan_out), biases, strict=True))


muladd_dense.defjvp(_muladd_dense_jvp, symbolic_zeros=True)


def relu_chain(inputs, weights, biases, relu_inputs: bool = False, dense=_muladd) -> tuple:
    """``dense`` layers with ``relu`` between them (and on the inputs if ``relu_inputs``).

    ``dense(h, w, b)`` maps a list of arrays to a list; by default the multiply-adds of
    `muladd_dense`'s primal.
    """
    h = [jax.nn.relu(x) for x in inputs] if relu_inputs else list(inputs)
    for layer, (w, b) in enumerate(zip(weights, biases, strict=True)):
        h = dense(h, w, b)
        if layer < len(weights) - 1:
            h = [jax.nn.relu(x) for x in h]
    return tuple(h)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def muladd_mlp(inputs: tuple, weights: tuple, biases: tuple, relu_inputs: bool = False) -> tuple:
    """A ReLU MLP over same-shape arrays, each layer multiply-adds as in `muladd_dense`.

    Under differentiation the rule evaluates the layers as stacked matrix products, so the
    primal it returns agrees with the multiply-add form up to float rounding.

    Args:
      inputs: ``fan_in`` arrays of one shape and dtype.
      weights: per layer, its ``(fan_in, fan_out)`` weights of the inputs' dtype.
      biases: per layer, a tuple of ``fan_out`` arrays of the inputs' dtype, each
        broadcastable to the inputs.
      relu_inputs: apply ``relu`` to the inputs first (they are pre-activations).

    Returns:
      The last layer's ``fan_out`` arrays, of the inputs' shape (a tuple); no ``relu`` after
      the last layer.
    """
    return relu_chain(inputs, weights, biases, relu_inputs)


def _stacked(arrays, shape, dtype) -> jax.Array | None:
    """``arrays`` (symbolic zeros allowed) as one ``(len, prod(shape))`` array; None if all zero."""
    if all(_is_zero(a) for a in arrays):
        return None
    zero = jnp.zeros(shape, dtype)
    return jnp.stack([zero if _is_zero(a) else jnp.broadcast_to(a, shape) for a in arrays]).reshape(
        len(arrays), -1
    )


def _stacked_bias(biases, shape, dtype) -> jax.Array | None:
    """Biases as ``(fan_out, 1)`` when all are scalars, else ``(fan_out, prod(shape))``."""
    if all(_is_zero(b) or jnp.ndim(b) == 0 for b in biases):
        if all(_is_zero(b) for b in biases):
            return None
        zero = jnp.zeros((), dtype)
        return jnp.stack([zero if _is_zero(b) else b for b in biases])[:, None]
    return _stacked(biases, shape, dtype)


def _add(*terms):
    live = [t for t in terms if t is not None]
    return sum(live[1:], live[0]) if live else None


def _relu_jvp(x, tx):
    """``relu`` of a stacked layer and its tangent (None: zero), sharing one mask."""
    mask = x > 0
    return jnp.where(mask, x, 0), None if tx is None else jnp.where(mask, tx, 0)


def _muladd_mlp_jvp(relu_inputs, primals, tangents):
    inputs, weights, biases = primals
    t_inputs, t_weights, t_biases = tangents
    shape, dtype = inputs[0].shape, inputs[0].dtype
    x = jnp.stack(inputs).reshape(len(inputs), -1)
    tx = _stacked(t_inputs, shape, dtype)
    if relu_inputs:
        x, tx = _relu_jvp(x, tx)
    for layer, (w, b, tw, tb) in enumerate(zip(weights, biases, t_weights, t_biases, strict=True)):
        pre = w.T @ x + _stacked_bias(b, shape, dtype)
        tx = _add(
            None if tx is None else w.T @ tx,
            None if _is_zero(tw) else tw.T @ x,
            _stacked_bias(tb, shape, dtype),
        )
        x, tx = _relu_jvp(pre, tx) if layer < len(weights) - 1 else (pre, tx)
    fan_out = x.shape[0]
    t_out = jnp.zeros_like(x) if tx is None else jnp.broadcast_to(tx, x.shape)
    return tuple(x.reshape(fan_out, *shape)), tuple(t_out.reshape(fan_out, *shape))


muladd_mlp.defjvp(_muladd_mlp_jvp, symbolic_zeros=True)
