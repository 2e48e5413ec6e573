"""A small recurrent (GRU) component-wise optimizer written for these tests.

It stands in for a learned optimizer: a GRU cell per coordinate fed with the gradient, a linear
readout, random weights. Its dynamics are nonlinear and its state is several-dimensional, so the
tools must work without any closed form.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
import pytest


class GRUState(NamedTuple):
    hidden: Any


def gru_optimizer(hidden_size: int, seed: int = 0, lr: float = 0.1) -> optax.GradientTransformation:
    """A component-wise GRU optimizer with random weights: ``u = -lr * (readout . h')``."""
    keys = jax.random.split(jax.random.key(seed), 4)
    w_in = jax.random.normal(keys[0], (3, hidden_size))
    w_h = jax.random.normal(keys[1], (3, hidden_size, hidden_size)) * 0.9 / jnp.sqrt(hidden_size)
    bias = jnp.zeros((3, hidden_size)).at[0].set(1.0)  # lean towards remembering
    readout = jax.random.normal(keys[2], (hidden_size,)) / jnp.sqrt(hidden_size)

    def cell(h, g):
        x = jnp.tanh(g)[..., None]
        z = jax.nn.sigmoid(x * w_in[0] + h @ w_h[0] + bias[0])
        r = jax.nn.sigmoid(x * w_in[1] + h @ w_h[1] + bias[1])
        n = jnp.tanh(x * w_in[2] + (r * h) @ w_h[2] + bias[2])
        return z * h + (1 - z) * n

    def init_fn(params):
        return GRUState(jax.tree.map(lambda p: jnp.zeros(p.shape + (hidden_size,)), params))

    def update_fn(updates, state, params=None):
        del params
        hidden = jax.tree.map(cell, state.hidden, updates)
        new_updates = jax.tree.map(lambda h: -lr * (h @ readout), hidden)
        return new_updates, GRUState(hidden)

    return optax.GradientTransformation(init_fn, update_fn)


@pytest.fixture
def make_gru():
    return gru_optimizer


@pytest.fixture(scope="session")
def gru_fixed_points():
    """A small GRU optimizer, its system and its fixed points for g* in linspace(-1, 1, 9)."""
    import interpret

    tx = gru_optimizer(8, seed=1)
    system = interpret.scalar_system(tx)
    inputs = jnp.linspace(-1.0, 1.0, 9)
    return tx, system, interpret.fixed_points(system, inputs)
