"""Per-parameter feature helpers shared by the MLP-based learned optimizers.

Everything here works on one parameter leaf at a time and is written so that XLA fuses the
features and the small per-parameter network into as few passes over memory as possible:

* accumulators (momenta, second moments, Adafactor-style factored second moments) are
  updated with plain elementwise arithmetic;
* features are made scale-free with per-tensor scalars that come from the small
  second-moment statistics (bias-corrected momenta and second moments, the tensor's RMS
  gradient read off the factored column vector), so the only full reduction is the
  parameter's RMS and XLA reads each state array about once;
* the per-parameter MLP is applied by :func:`elementwise_mlp` as explicit multiply-adds of
  scalar weights with whole feature arrays. With a handful of features and hidden units this
  fuses into a single elementwise loop and never materialises a ``(num_params, features)``
  matrix, which on a CPU is several times faster than a ``dot`` with such a thin inner
  dimension;
* per-step quantities that are the same for every coordinate of a tensor (step embedding,
  loss features, per-tensor context) enter the MLP through its first-layer bias, so they cost
  nothing per coordinate.

References:
  Metz et al., "Understanding and correcting pathologies in the training of learned
  optimizers", arXiv 1810.10180.
  Shazeer, Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
  arXiv 1804.04235.
  Metz et al., "Practical tradeoffs between memory, compute, and performance in learned
  optimizers", arXiv 2203.11860.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from optax_lopt import _checks, _numerics
from optax_lopt.architectures._dense import muladd_dense, muladd_mlp, relu_chain

FEATURE_LIMIT = 1e15
"""Features are clipped to this magnitude before normalisation, so that the mean of their
squares over a tensor of up to ~1e8 entries stays finite in float32."""

SECOND_MOMENT_EPS = 1e-30
"""Added to squared gradients in second-moment accumulators (as in Adafactor)."""

RSQRT_EPS = 1e-16
"""Added to second moments before ``rsqrt``: ``1 / sqrt(v + 1e-16)``, i.e. eps 1e-8 on the
root second moment, as in Adam."""

_NORM_EPS = 1e-30

SOLO_SIZE = 16384
"""Leaves with at least this many entries run the per-coordinate network on their own (see
:func:`mlp_updates`); smaller leaves are concatenated."""

DOT_MAX_SIZE = 1
"""Feature arrays of at most this many entries go through the MLP as one ``dot`` per layer.

The multiply-add form runs faster per step at every size, but its graph grows with
``fan_in * fan_out`` and compiles several times slower. One-entry arrays are the
one-coordinate systems that `interpret` linearises, iterates and differentiates many times,
each a fresh compilation, so there the ``dot`` is the better trade. Both forms agree up to
float rounding."""

DEFAULT_TIMESCALES = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0, 30000.0)
"""Timescales of :func:`step_embedding`, in steps."""


# ----------------------------------------------------------------------------- validation


def optional(check: Any) -> Any:
    """``check`` as a field check that lets None through (`optax_lopt._checks.optional`)."""
    return lambda name, value: _checks.optional(check, name, value)


def check_fields(config: Any, checks: dict[str, Any]) -> None:
    """Runs ``checks[field](field, value)`` on fields of a frozen dataclass, storing the result.

    Every check comes from `optax_lopt._checks` (or is built on it), so all architectures
    accept and refuse the same values with the same words; storing the normalised value turns
    NumPy scalars into Python numbers, which keeps the config hashable and JSON-able.
    """
    for field, check in checks.items():
        object.__setattr__(config, field, check(field, getattr(config, field)))


def check_tree(updates: Any, reference: Any, what: str, trailing: int = 0) -> None:
    """Raises a ValueError unless ``updates`` has the tree structure and leaf shapes of
    ``reference``.

    One check shared by every architecture's ``update``: gradients of another model (a
    different tree, or a leaf of another shape) would otherwise fail deep inside jax with a
    message that names no leaf, or silently broadcast.

    Args:
      updates: the gradients passed to ``update``.
      reference: a params-structured tree (part of the optimizer's state, or the params).
      what: how the error calls ``reference``: ``"state"`` or ``"params"``.
      trailing: number of trailing axes of each reference leaf that are not the parameter's
        (e.g. the hidden units of a per-coordinate recurrent state).

    Raises:
      ValueError: naming "updates", ``what`` and the first mismatching leaf path.
    """
    got = jax.tree_util.tree_flatten_with_path(updates)[0]
    want = jax.tree_util.tree_flatten_with_path(reference)[0]
    got_paths = [jax.tree_util.keystr(k) for k, _ in got]
    want_paths = [jax.tree_util.keystr(k) for k, _ in want]
    if got_paths != want_paths:
        for i in range(max(len(got_paths), len(want_paths))):
            a = got_paths[i] if i < len(got_paths) else None
            b = want_paths[i] if i < len(want_paths) else None
            if a != b:
                break
        where = (
            f"updates has {a!r} where the {what} has {b!r}"
            if a and b
            else (
                f"updates lacks the {what}'s leaf {b!r}"
                if b
                else f"updates has an extra leaf {a!r}"
            )
        )
        raise ValueError(
            f"updates: expected the tree structure of the {what} this optimizer was "
            f"initialised with ({len(want_paths)} leaves), got {len(got_paths)} leaves; "
            f"first mismatch: {where}."
        )
    for (path, g), (_, r) in zip(got, want, strict=True):
        shape = tuple(jnp.shape(r))
        shape = shape[: len(shape) - trailing] if trailing else shape
        if tuple(jnp.shape(g)) != shape:
            raise ValueError(
                f"updates: expected leaf {jax.tree_util.keystr(path)} to have the shape {shape} "
                f"of the {what}, got shape {tuple(jnp.shape(g))}."
            )


# ----------------------------------------------------------------------------- accumulators


def ema(old: jax.Array, new: jax.Array, decay: float) -> jax.Array:
    """Exponential moving average ``decay * old + (1 - decay) * new``, in ``old``'s dtype."""
    return (decay * old + (1.0 - decay) * new).astype(old.dtype)


def init_momenta(params: Any, decays: Sequence[float]) -> tuple[Any, ...]:
    """One params-shaped tree of zeros (compute dtype) per momentum decay."""
    return tuple(jax.tree.map(_numerics.zeros_for, params) for _ in decays)


def update_momenta(momenta: tuple[Any, ...], grads: Any, decays: Sequence[float]) -> tuple:
    """EMAs of the gradient, one tree per decay (``m <- d m + (1 - d) g``)."""
    return tuple(
        jax.tree.map(lambda m, g, d=d: ema(m, g, d), tree, grads)
        for tree, d in zip(momenta, decays, strict=True)
    )


class FactoredMoment(NamedTuple):
    """Adafactor-style second moment of one parameter leaf.

    For leaves of rank >= 2, ``row`` holds the mean of ``g**2`` over the last axis (shape
    ``p.shape[:-1]``) and ``col`` the mean over the second-to-last axis (shape
    ``p.shape[:-2] + p.shape[-1:]``). For leaves of rank < 2 the moment is kept in full:
    ``row`` has the leaf's shape and ``col`` is an unused scalar.
    """

    row: jax.Array
    col: jax.Array


def _is_factored(shape: tuple[int, ...]) -> bool:
    return len(shape) >= 2


def init_factored(p: Any) -> FactoredMoment:
    """Zero `FactoredMoment` for a leaf (array or ``jax.ShapeDtypeStruct``)."""
    shape = tuple(p.shape)
    dtype = _numerics.compute_dtype(p.dtype)
    if _is_factored(shape):
        return FactoredMoment(
            row=jnp.zeros(shape[:-1], dtype), col=jnp.zeros(shape[:-2] + shape[-1:], dtype)
        )
    return FactoredMoment(row=jnp.zeros(shape, dtype), col=jnp.zeros((), dtype))


def update_factored(state: FactoredMoment, g: jax.Array, decay: float) -> FactoredMoment:
    """Accumulates ``g**2 + eps`` into the factored moment with EMA ``decay``."""
    g2 = jnp.square(g.astype(state.row.dtype)) + SECOND_MOMENT_EPS
    if _is_factored(g.shape):
        return FactoredMoment(
            row=ema(state.row, jnp.mean(g2, axis=-1), decay),
            col=ema(state.col, jnp.mean(g2, axis=-2), decay),
        )
    return FactoredMoment(row=ema(state.row, g2, decay), col=state.col)


def factored_rsqrt(
    state: FactoredMoment, shape: tuple[int, ...], correction: Any = 1.0
) -> jax.Array:
    """``1 / sqrt(v_hat + eps)`` with ``v_hat`` the rank-one Adafactor estimate of ``g**2``.

    ``v_hat[..., i, j] = c * row[..., i] * col[..., j] / mean(row[..., :])`` for factored
    leaves, ``c * row`` for the others, with ``c`` the bias ``correction``.
    """
    if _is_factored(shape):
        row_mean = jnp.maximum(jnp.mean(state.row, axis=-1, keepdims=True), _NORM_EPS)
        # rsqrt(r_i c_j / mean(r)) = rsqrt(r_i / mean(r)) * rsqrt(c_j): a rank-one outer
        # product of two small vectors, broadcast inside the fused elementwise pass.
        r = jax.lax.rsqrt(state.row / row_mean + RSQRT_EPS)
        c = jax.lax.rsqrt(correction * state.col + RSQRT_EPS)
        return r[..., :, None] * c[..., None, :]
    return jax.lax.rsqrt(correction * state.row + RSQRT_EPS)


def factored_mean(state: FactoredMoment, shape: tuple[int, ...], correction: Any = 1.0):
    """Mean of ``v_hat`` over the tensor, from the small vectors only (no pass over it)."""
    if _is_factored(shape):
        return correction * mean(state.col)
    return correction * mean(state.row)


def factored_v_hat(
    state: FactoredMoment, shape: tuple[int, ...], correction: Any = 1.0
) -> jax.Array:
    """The full ``v_hat`` of :func:`factored_rsqrt` (without eps), of the leaf's ``shape``."""
    if _is_factored(shape):
        row_mean = jnp.maximum(jnp.mean(state.row, axis=-1, keepdims=True), _NORM_EPS)
        return correction * (state.row / row_mean)[..., :, None] * state.col[..., None, :]
    return correction * state.row


def bias_correction(decay: float, count: jax.Array) -> jax.Array:
    """``1 / (1 - decay**t)``: undoes the zero initialisation of an EMA after ``t`` steps."""
    t = jnp.maximum(count.astype(jnp.float32), 1.0)
    return 1.0 / (1.0 - jnp.asarray(decay, jnp.float32) ** t)


SPIKE_CLIP = 10.0
"""Default of the architectures' ``spike_clip``: gradient entries beyond 10 running RMSs are
clipped."""

_SEEN = 10 * SECOND_MOMENT_EPS


def spike_clip(g: jax.Array, v_hat: jax.Array, limit: float | None) -> jax.Array:
    """Clips the gradient entries that are spikes against the history, leaving others exact.

    Entry ``i`` is clipped to ``+/- limit * sqrt(max(v_hat_i, mean(v_hat)))``: ``limit``
    times its running root-mean-square gradient, floored by the tensor's, so a coordinate
    whose own history is near zero (sparse rows, units that were dead, a zero crossing) may
    still take an ordinary step. Where the tensor has no history yet (the first step, or only
    zero gradients so far) nothing is clipped. A clipped entry adds at most
    ``limit**2 * (1 - decay) * v_hat_i`` to an EMA of ``g**2`` with ``decay``, so one spike
    at step ``t`` raises the bias-corrected second moment at most
    ``1 + limit**2 * (1 - decay) / (1 - decay**(t + 1))``-fold (about ``1 + limit**2 / t``
    early in training, ``1 + limit**2 * (1 - decay)`` late), instead of holding it, and every
    feature scaled by it, for thousands of steps. This is SPAM's spike-aware clipping, with the
    threshold on the bias-corrected moment and floored per tensor.

    Args:
      g: the cleaned gradient of one leaf.
      v_hat: the bias-corrected second moment before this step (``g``'s shape).
      limit: how many running RMSs an entry may reach; None: no clip.

    Returns:
      ``g``, clipped.

    References:
      Huang et al., "SPAM: Spike-Aware Adam with Momentum Reset for Stable LLM Training",
      arXiv 2501.06842.
    """
    if limit is None:
        return g
    tensor = mean(v_hat)
    bound = (limit * jnp.sqrt(jnp.maximum(v_hat, tensor))).astype(g.dtype)
    return jnp.where(tensor > _SEEN, jnp.clip(g, -bound, bound), g)


SURGE_RATIO = 25.0
"""A guarded gradient whose squared norm exceeds this many times its running mean (its norm
five times its running RMS norm) is a surge: see :func:`surge_clip`."""

SURGE_WARMUP = 10
"""Steps of history before any gradient counts as a surge: a running moment of a handful of
gradients is no history, and gradients several times the first ones are ordinary early
training (an autoencoder's second and third steps, say)."""


def surge_clip(raw: jax.Array, guarded: jax.Array, v_hat: jax.Array, count: jax.Array) -> jax.Array:
    """Scales a spike across the tensor, which :func:`spike_clip` can only clip, to its history.

    ``spike_clip`` bounds each entry by ``limit`` running RMSs, which is enough for a spike in
    a few entries. A spike in every entry comes through it as a gradient ``limit`` times its
    running norm in the spike's direction, and the momenta keep that for as long as they
    remember: for tens of steps the update points partly along the spike, and an optimizer
    that adapts its step length reads those steps as overshooting and shrinks the step far
    more than the spike was worth. Where the guard changed some entry, the guarded gradient's
    squared norm is more than ``SURGE_RATIO`` times its running mean ``sum(v_hat)``, and the
    moment has seen ``SURGE_WARMUP`` steps, the gradient is rescaled to the running RMS norm
    ``sqrt(sum(v_hat))``: the step keeps the spike's direction and the size of an ordinary
    gradient. A spike in one entry of many, clipped to ``limit`` RMSs, is not a surge.

    Args:
      raw: the cleaned gradient of one leaf, before ``spike_clip``.
      guarded: the same after it.
      v_hat: the bias-corrected second moment before this step (``raw``'s shape).
      count: the number of steps ``v_hat`` has seen.

    Returns:
      ``guarded``, rescaled where it is a surge.
    """
    g32 = jnp.asarray(guarded, jnp.float32)
    fired = jnp.any(raw != guarded) & (count >= SURGE_WARMUP)
    squared, history = jnp.sum(jnp.square(g32)), jnp.sum(jnp.asarray(v_hat, jnp.float32))
    surge = fired & (squared > SURGE_RATIO * history)
    scale = jnp.sqrt(history / jnp.where(surge, squared, 1.0))
    return jnp.where(surge, g32 * scale, g32).astype(guarded.dtype)


def outlier_guard(
    g: jax.Array, v_hat: jax.Array, limit: float | None, count: jax.Array
) -> jax.Array:
    """The MLP architectures' outlier guard: :func:`spike_clip`, then :func:`surge_clip`.

    Args:
      g: the cleaned gradient of one leaf.
      v_hat: the bias-corrected second moment before this step (``g``'s shape).
      limit: ``spike_clip``'s limit; None: no guard at all.
      count: the number of steps ``v_hat`` has seen.
    """
    if limit is None:
        return g
    return surge_clip(g, spike_clip(g, v_hat, limit), v_hat, count)


def spike_clip_factored(
    grads: Any, factored: Sequence[Any], decays: Sequence[float], count: jax.Array, limit: Any
) -> Any:
    """:func:`outlier_guard` of every leaf against the factored moment of the slowest decay.

    ``factored`` holds one tree of `FactoredMoment` leaves per decay in ``decays`` (state
    before this step, ``count`` steps taken). Without decays (or ``limit`` None) ``grads``
    is returned as it is.
    """
    if limit is None or not decays:
        return grads
    k = max(range(len(decays)), key=lambda i: decays[i])
    correction = bias_correction(decays[k], count)
    return jax.tree.map(
        lambda g, fac: outlier_guard(
            g, factored_v_hat(fac, g.shape, correction).astype(g.dtype), limit, count
        ),
        grads,
        factored[k],
        is_leaf=lambda x: isinstance(x, FactoredMoment),
    )


# ----------------------------------------------------------------------------- features


def step_embedding(count: jax.Array, timescales: Sequence[float] = DEFAULT_TIMESCALES):
    """``tanh(t / timescale)`` for each timescale: a float32 vector describing the step ``t``.

    References:
      Metz et al., "Tasks, stability, architecture, and compute: Training more effective
      learned optimizers, and using them to train themselves", arXiv 2009.11243.
    """
    t = count.astype(jnp.float32)
    return jnp.tanh(t / jnp.asarray(timescales, jnp.float32))


def anneal_factor(count: jax.Array, after: int | None, power: float) -> jax.Array:
    """``min(1, (after / t) ** power)`` at step ``t = count``: 1 until ``after``, then decaying.

    A learned optimizer meta-trained on horizons of at most ``after`` steps knows nothing of
    later steps; multiplying its updates by this factor past that point gives the step sizes
    a Robbins-Monro decay (for ``0.5 < power <= 1`` their sum diverges and the sum of their
    squares does not), so a long run settles at a minimum instead of circling it. ``None``
    turns it off (the factor is 1).
    """
    if after is None:
        return jnp.ones((), jnp.float32)
    t = jnp.maximum(count.astype(jnp.float32), 1.0)
    return jnp.minimum(1.0, (float(after) / t) ** power)


def mean(x: jax.Array) -> jax.Array:
    """Mean over all axes, scaled before summing (no overflow for finite entries); 0 if empty."""
    return jnp.sum(x * (1.0 / max(x.size, 1)))


def mean_square(x: jax.Array) -> jax.Array:
    """Mean of ``x**2`` over all axes; 0 for an empty array (no NaN)."""
    return mean(jnp.square(x))


def normalize(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Divides a feature by its root-mean-square over the tensor.

    Returns:
      ``(x / rms(x), rms(x))``; ``x`` is first clipped to ``+/- FEATURE_LIMIT`` so the mean
      of squares stays finite.
    """
    x = jnp.clip(x, -FEATURE_LIMIT, FEATURE_LIMIT)
    ms = mean_square(x)
    # eps inside the square root keeps its derivative finite at 0 (meta-gradients).
    return x * jax.lax.rsqrt(ms + _NORM_EPS), jnp.sqrt(ms + _NORM_EPS)


def build_features(
    p: jax.Array,
    g: jax.Array,
    momenta: Sequence[jax.Array],
    rsqrts: Sequence[jax.Array],
    mean_square_grad: jax.Array,
    momentum_stats: bool = False,
    limit: float = FEATURE_LIMIT,
) -> tuple[list[jax.Array], list[jax.Array]]:
    """Per-coordinate features from the parameter, gradient, momenta and second moments.

    With ``s = sqrt(mean_square_grad)`` (the tensor's root-mean-square gradient, estimated
    from the second moment) the features are, in order: ``p / rms(p)``, ``g / s``, each
    bias-corrected momentum ``m_k / s``, then for each inverse root second moment ``r``
    (bias-corrected, full or factored): ``r * s``, ``g * r`` and ``m_k * r`` for every ``k``.
    All are scale-free; only ``p`` needs a reduction over the tensor, ``s`` comes from the
    (small) second-moment statistics, so XLA reads each state array once. All but ``p / rms(p)``
    are clipped to ``+/- limit`` (by default ``FEATURE_LIMIT``, a finiteness guard only).

    Args:
      p: the parameter (zeros when params are not given).
      g: the cleaned gradient.
      momenta: the bias-corrected momenta of this leaf.
      rsqrts: ``1 / sqrt(v_hat + eps)`` for each second-moment accumulator of this leaf.
      mean_square_grad: a per-tensor estimate of the mean of ``g**2`` (scalar).
      momentum_stats: also return ``rms(m_k) / s`` for each momentum (one reduction each).
      limit: clip the gradient, momentum and second-moment features to this magnitude.

    Returns:
      ``(features, stats)``: the features and per-tensor statistics ``[rms(p), s]`` (plus
      the momentum statistics when asked), used by hierarchical models.
    """
    inv_s = jax.lax.rsqrt(mean_square_grad + _NORM_EPS).astype(g.dtype)
    s = jnp.sqrt(mean_square_grad + _NORM_EPS).astype(g.dtype)
    p_n, p_rms = normalize(p)
    raw = [g * inv_s, *(m * inv_s for m in momenta)]
    for r in rsqrts:
        raw += [r * s, g * r, *(m * r for m in momenta)]
    feats = [p_n] + [jnp.clip(x, -limit, limit) for x in raw]
    stats = [p_rms, s]
    if momentum_stats:
        stats += [jnp.sqrt(mean_square(m) + _NORM_EPS) * inv_s for m in momenta]
    return feats, stats


def num_features(num_momenta: int, num_second_moments: int) -> int:
    """Length of the feature list of :func:`build_features`."""
    return 2 + num_momenta + num_second_moments * (2 + num_momenta)


def adam_feature_index(momentum_decays: Sequence[float], num_second_moments: int) -> int:
    """Index in :func:`build_features` of the Adam-like direction ``m * r``.

    Uses the momentum whose decay is closest to 0.9 and the first second moment; without
    second moments, that momentum itself.
    """
    k = min(range(len(momentum_decays)), key=lambda i: abs(momentum_decays[i] - 0.9))
    if num_second_moments == 0:
        return 2 + k
    return 2 + len(momentum_decays) + 2 + k


def init_skip(num_inputs: int, index: int) -> dict:
    """Linear skip readout ``(num_inputs, 2)`` whose direction is feature ``index``.

    With it an untrained optimizer moves along that (normalised) feature with step
    ``step_mult``; the MLP's output layer starts small, so it only perturbs that direction.
    """
    w = jnp.zeros((num_inputs, 2), jnp.float32).at[index, 0].set(1.0)
    return {"w": w}


# ----------------------------------------------------------------------------- networks


def init_dense(key: chex.PRNGKey, fan_in: int, fan_out: int, scale: float = 1.0) -> dict:
    """A dense layer ``{"w": (fan_in, fan_out), "b": (fan_out,)}``, LeCun-normal times scale."""
    w = jax.random.normal(key, (fan_in, fan_out), jnp.float32) * (scale / max(fan_in, 1) ** 0.5)
    return {"w": w, "b": jnp.zeros((fan_out,), jnp.float32)}


def init_mlp(
    key: chex.PRNGKey,
    num_inputs: int,
    hidden_sizes: Sequence[int],
    num_outputs: int,
    output_scale: float,
) -> list[dict]:
    """Dense layers of a ReLU MLP; the last layer's weights are scaled by ``output_scale``."""
    sizes = [num_inputs, *hidden_sizes, num_outputs]
    keys = jax.random.split(key, len(sizes) - 1)
    layers = []
    for i, (k, a, b) in enumerate(zip(keys, sizes[:-1], sizes[1:], strict=True)):
        scale = output_scale if i == len(sizes) - 2 else 1.0
        layers.append(init_dense(k, a, b, scale))
    return layers


def elementwise_dense(
    inputs: Sequence[jax.Array], w: jax.Array, b: Sequence[Any]
) -> list[jax.Array]:
    """``outputs[j] = b[j] + sum_i inputs[i] * w[i, j]`` on whole arrays.

    ``b`` is a ``(fan_out,)`` array or a sequence of ``fan_out`` arrays broadcastable to the
    inputs (per-coordinate biases). Written as scalar-times-array multiply-adds so that XLA
    fuses a chain of such layers, with the feature computations, into one elementwise loop
    (`muladd_dense`, whose derivative stays one contraction per layer); inputs of at most
    `DOT_MAX_SIZE` entries use one ``dot`` instead (see there).
    """
    fan_in, fan_out = w.shape
    if fan_in != len(inputs):
        raise ValueError(f"w: expected {len(inputs)} input rows, got shape {w.shape}.")
    dtype = inputs[0].dtype
    if inputs[0].size <= DOT_MAX_SIZE:
        out = jnp.stack(inputs, axis=-1) @ w.astype(dtype)
        return [out[..., j] + jnp.asarray(b[j]).astype(dtype) for j in range(fan_out)]
    biases = tuple(jnp.asarray(b[j]).astype(dtype) for j in range(fan_out))
    return list(muladd_dense(tuple(inputs), w.astype(dtype), biases))


def elementwise_mlp(
    inputs: Sequence[jax.Array],
    layers: Sequence[dict],
    first_bias: Sequence[Any] | None = None,
    relu_inputs: bool = False,
) -> list[jax.Array]:
    """Applies a ReLU MLP coordinate-wise to a list of same-shape feature arrays.

    Inputs of more than `DOT_MAX_SIZE` entries go through `muladd_mlp` (multiply-adds that
    fuse into one loop, derivatives on stacked layers); smaller ones through one ``dot`` per
    layer (`elementwise_dense`).

    Args:
      inputs: features, each of the same shape.
      layers: dense layers as built by :func:`init_mlp`.
      first_bias: optional terms added to the first layer's bias: a ``(fan_out,)`` array
        (per-step terms such as the step embedding) or ``fan_out`` arrays broadcastable to
        the inputs (per-tensor context laid out per coordinate).
      relu_inputs: the inputs are pre-activations: apply ``relu`` to them first.

    Returns:
      The output arrays (one per output unit), each of the inputs' shape.
    """
    dtype = inputs[0].dtype
    biases = []
    for i, layer in enumerate(layers):
        b = [layer["b"][j] for j in range(layer["b"].shape[0])]
        if i == 0 and first_bias is not None:
            b = [b[j] + first_bias[j] for j in range(len(b))]
        biases.append(tuple(jnp.asarray(x).astype(dtype) for x in b))
    weights = tuple(layer["w"].astype(dtype) for layer in layers)
    if inputs[0].size > DOT_MAX_SIZE:
        return list(muladd_mlp(tuple(inputs), weights, tuple(biases), relu_inputs))
    return list(relu_chain(inputs, weights, biases, relu_inputs, dense=elementwise_dense))


def _per_coordinate(values: Sequence[Any], sizes: Sequence[int], dtype: Any) -> jax.Array:
    """Lays per-leaf scalars out along the concatenated coordinates of those leaves."""
    if len(values) == 1:
        return jnp.asarray(values[0]).astype(dtype)
    return jnp.concatenate([jnp.full((n,), v, dtype) for v, n in zip(values, sizes, strict=True)])


def mlp_updates(
    features: Sequence[Sequence[jax.Array]],
    net: dict,
    first_bias: Any,
    step_mult: Any,
    exp_mult: float,
    odd_features: Sequence[int] = (),
) -> list[jax.Array]:
    """Updates of every leaf: one MLP pass over all coordinates, direction * exp(magnitude).

    Leaves with at least ``SOLO_SIZE`` entries each get their own copy of the network, which
    XLA fuses with the features into one elementwise loop over the leaf (the fast path; a
    concatenation would break that fusion). The smaller leaves of each dtype are flattened and
    concatenated and share one copy, so compile time grows with the number of large tensors
    only, not with the number of leaves.

    Args:
      features: per leaf, its list of normalised features (see :func:`build_features`).
      net: ``{"mlp": layers, "skip": {"w": (num_features, 2)}}``.
      first_bias: added to the MLP's first-layer bias: None, one ``(fan_out,)`` array for
        all leaves, or a list with one ``(fan_out,)`` array per leaf.
      step_mult: overall step scale: a number, or a list with one scalar per leaf.
      exp_mult: scale of the magnitude in the exponent.
      odd_features: if not empty, the indices of the features that change sign with the
        gradient: the update is then made odd, ``(u(f) - u(f')) / 2`` with ``f'`` the
        features with those flipped (see :func:`_odd_update`, which shares the first layer
        between the two evaluations).

    Returns:
      One update per leaf, of the leaf's shape and its features' dtype.
    """
    groups: dict[Any, list[int]] = {}
    for i, feats in enumerate(features):
        solo = i if feats[0].size >= SOLO_SIZE else None
        groups.setdefault((jnp.dtype(feats[0].dtype), solo), []).append(i)
    results: list[Any] = [None] * len(features)
    for (dtype, _), idx in groups.items():
        sizes = [features[i][0].size for i in idx]
        flat = _concatenated(features, idx)
        bias = _group_bias(first_bias, idx, sizes, dtype)
        step = (
            _per_coordinate([step_mult[i] for i in idx], sizes, dtype)
            if isinstance(step_mult, (list, tuple))
            else step_mult
        )
        if odd_features:
            update = _odd_update(flat, net, bias, step, exp_mult, odd_features)
        else:
            direction, magnitude = elementwise_mlp(flat, net["mlp"], bias)
            skip_dir, skip_mag = elementwise_dense(flat, net["skip"]["w"], jnp.zeros((2,), dtype))
            update = direction_magnitude_step(
                direction + skip_dir, magnitude + skip_mag, step, exp_mult
            )
        shapes = [features[i][0].shape for i in idx]
        for i, u in zip(idx, _split_flat(update, sizes, shapes), strict=True):
            results[i] = u
    return results


def _odd_update(
    flat: Sequence[jax.Array],
    net: dict,
    first_bias: Any,
    step_mult: Any,
    exp_mult: float,
    odd_features: Sequence[int],
) -> jax.Array:
    """``(u(f) - u(f')) / 2``, ``f'`` being ``flat`` with the features ``odd_features`` negated.

    The first layer and the skip readout are linear, so their pre-activations at ``f`` and
    ``f'`` are ``a + c`` and ``a - c``, with ``a`` the contribution of the features that keep
    their sign (plus the biases) and ``c`` that of the flipped ones: one pass over the
    first-layer weights instead of two, the layer that holds most of the network's
    multiply-adds. The layers after it run twice. Equal to evaluating the network on ``f``
    and on ``f'`` up to rounding.
    """
    layers = net["mlp"]
    first, skip_w = layers[0], net["skip"]["w"]
    hidden = first["w"].shape[1]
    w = jnp.concatenate([first["w"], skip_w.astype(first["w"].dtype)], axis=1)
    odd = sorted(set(odd_features))
    even = [k for k in range(len(flat)) if k not in odd]
    b = first["b"]
    biases = [b[j] if first_bias is None else b[j] + first_bias[j] for j in range(hidden)]
    zero = jnp.zeros((), flat[0].dtype)
    kept = elementwise_dense([flat[k] for k in even], w[np.asarray(even)], biases + [zero] * 2)
    flipped = elementwise_dense([flat[k] for k in odd], w[np.asarray(odd)], [zero] * (hidden + 2))
    updates = []
    for sign in (1.0, -1.0):
        pre = [a + sign * c for a, c in zip(kept, flipped, strict=True)]
        direction, magnitude = elementwise_mlp(pre[:hidden], layers[1:], relu_inputs=True)
        updates.append(
            direction_magnitude_step(
                direction + pre[hidden], magnitude + pre[hidden + 1], step_mult, exp_mult
            )
        )
    return 0.5 * (updates[0] - updates[1])


def _concatenated(features: Sequence[Sequence[jax.Array]], idx: Sequence[int]) -> list[jax.Array]:
    """Each feature of the leaves ``idx``, flattened and concatenated over those leaves."""
    if len(idx) == 1:
        return [f.reshape(-1) for f in features[idx[0]]]
    return [
        jnp.concatenate([features[i][k].reshape(-1) for i in idx])
        for k in range(len(features[idx[0]]))
    ]


def _group_bias(first_bias: Any, idx: Sequence[int], sizes: Sequence[int], dtype: Any) -> Any:
    """``first_bias`` for the leaves ``idx``: per coordinate when it is given per leaf."""
    if not isinstance(first_bias, (list, tuple)):
        return first_bias
    fan_out = first_bias[idx[0]].shape[0]
    return [_per_coordinate([first_bias[i][j] for i in idx], sizes, dtype) for j in range(fan_out)]


def _split_flat(
    flat: jax.Array, sizes: Sequence[int], shapes: Sequence[tuple[int, ...]]
) -> list[jax.Array]:
    """Cuts a concatenation of leaves of ``sizes`` entries back into arrays of ``shapes``."""
    offsets = [0]
    for n in sizes:
        offsets.append(offsets[-1] + n)
    return [flat[offsets[k] : offsets[k + 1]].reshape(shape) for k, shape in enumerate(shapes)]


def direction_magnitude_step(
    direction: jax.Array, magnitude: jax.Array, step_mult: Any, exp_mult: float
) -> jax.Array:
    """The update ``-step_mult * direction * exp(exp_mult * magnitude)``.

    The exponent is clipped to +/- 20 so the update stays finite.

    References:
      Metz et al., "Understanding and correcting pathologies in the training of learned
      optimizers", arXiv 1810.10180.
    """
    scale = jnp.exp(jnp.clip(exp_mult * magnitude, -20.0, 20.0))
    return -step_mult * direction * scale
