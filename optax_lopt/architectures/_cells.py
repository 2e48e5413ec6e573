"""Recurrent cells applied in batch to one hidden state per parameter coordinate.

Each cell is a pair of pure functions over plain dicts of arrays, so a cell's weights are
ordinary meta-parameters: ``init(key, num_inputs, hidden_size) -> weights`` and
``step(weights, carry, x) -> carry`` where ``x`` is ``(N, num_inputs)`` and ``carry`` is a
tuple of ``(N, hidden_size)`` arrays (one for GRU and vanilla RNN, two for LSTM). The output
read by the optimizer is always ``carry[0]``.

References:
  Cho et al., "Learning Phrase Representations using RNN Encoder-Decoder for Statistical
  Machine Translation", arXiv 1406.1078 (GRU).
  Hochreiter, Schmidhuber, "Long Short-Term Memory", Neural Computation 1997 (LSTM).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp


def _dense(key: jax.Array, fan_in: int, fan_out: int) -> jax.Array:
    return jax.random.normal(key, (fan_in, fan_out), jnp.float32) / jnp.sqrt(fan_in)


def _gru_init(key, num_inputs, hidden_size):
    kx, kh = jax.random.split(key)
    return {
        "wx": _dense(kx, num_inputs, 3 * hidden_size),
        "wh": _dense(kh, hidden_size, 3 * hidden_size),
        "b": jnp.zeros((3 * hidden_size,), jnp.float32),
    }


def _gru_step(w, carry, x):
    (h,) = carry
    hidden = h.shape[-1]
    gx = x @ w["wx"] + w["b"]
    gh = h @ w["wh"][:, : 2 * hidden]
    r = jax.nn.sigmoid(gx[..., :hidden] + gh[..., :hidden])
    z = jax.nn.sigmoid(gx[..., hidden : 2 * hidden] + gh[..., hidden:])
    n = jnp.tanh(gx[..., 2 * hidden :] + (r * h) @ w["wh"][:, 2 * hidden :])
    return ((1.0 - z) * n + z * h,)


def _lstm_init(key, num_inputs, hidden_size):
    kx, kh = jax.random.split(key)
    # Forget-gate bias of 1 (Jozefowicz et al., 2015) so memory persists at initialisation.
    b = jnp.zeros((4 * hidden_size,), jnp.float32).at[hidden_size : 2 * hidden_size].set(1.0)
    return {
        "wx": _dense(kx, num_inputs, 4 * hidden_size),
        "wh": _dense(kh, hidden_size, 4 * hidden_size),
        "b": b,
    }


def _lstm_step(w, carry, x):
    h, c = carry
    i, f, g, o = jnp.split(x @ w["wx"] + h @ w["wh"] + w["b"], 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return (jax.nn.sigmoid(o) * jnp.tanh(c), c)


def _vanilla_init(key, num_inputs, hidden_size):
    kx, kh = jax.random.split(key)
    return {
        "wx": _dense(kx, num_inputs, hidden_size),
        "wh": _dense(kh, hidden_size, hidden_size),
        "b": jnp.zeros((hidden_size,), jnp.float32),
    }


def _vanilla_step(w, carry, x):
    (h,) = carry
    return (jnp.tanh(x @ w["wx"] + h @ w["wh"] + w["b"]),)


class Cell(NamedTuple):
    """A recurrent cell: weight initialiser, step function, number of carried arrays."""

    init: Callable
    step: Callable
    num_carries: int


CELLS: dict[str, Cell] = {
    "gru": Cell(_gru_init, _gru_step, 1),
    "lstm": Cell(_lstm_init, _lstm_step, 2),
    "rnn": Cell(_vanilla_init, _vanilla_step, 1),
}
"""Cells by name: ``"gru"`` (default of `ComponentwiseRNN`), ``"lstm"``, ``"rnn"``."""
