"""ComponentwiseRNN: known answers for hand-set weights, initial state, validation."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import optax
import pytest

import optax_lopt
from optax_lopt.architectures.componentwise_rnn import _preprocess


def test_untrained_optimizer_does_nothing():
    lopt = optax_lopt.ComponentwiseRNN()
    tx = lopt.transform(lopt.init(jax.random.key(0)))
    params = {"w": jnp.ones((3, 2))}
    updates, _ = tx.update({"w": jnp.full((3, 2), 5.0)}, tx.init(params), params)
    chex.assert_trees_all_equal(updates, {"w": jnp.zeros((3, 2))})


@pytest.mark.parametrize("seed", range(5))
def test_linear_vanilla_rnn_is_momentum_sgd(seed):
    """h' = tanh(g + beta h) is h' = beta h + g for small g: SGD with momentum beta."""
    kb, kl, kg = jax.random.split(jax.random.key(seed), 3)
    beta = float(jax.random.uniform(kb, minval=0.0, maxval=0.95))
    lr = float(jax.random.uniform(kl, minval=0.01, maxval=1.0))
    lopt = optax_lopt.ComponentwiseRNN(hidden_size=1, cell="rnn", output_scale=0.1)
    theta = lopt.init(jax.random.key(0))
    theta["cell"] = {"wx": jnp.ones((1, 1)), "wh": jnp.full((1, 1), beta), "b": jnp.zeros(1)}
    theta["readout"] = {"w": jnp.asarray([-lr / 0.1]), "b": jnp.zeros(())}
    tx, sgd = lopt.transform(theta), optax.sgd(lr, momentum=beta)
    params = jnp.zeros(4)
    state, sgd_state = tx.init(params), sgd.init(params)
    for g in 1e-5 * jax.random.normal(kg, (20, 4)):
        u, state = tx.update(g, state, params)
        expected, sgd_state = sgd.update(g, sgd_state, params)
        chex.assert_trees_all_close(u, expected, rtol=1e-4, atol=1e-12)


def test_learned_initial_state_is_broadcast_per_coordinate():
    lopt = optax_lopt.ComponentwiseRNN(hidden_size=3, cell="lstm")
    theta = lopt.init(jax.random.key(0))
    theta["initial_state"] = jnp.asarray([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    state = lopt.transform(theta).init({"a": jnp.zeros((2, 5))})
    chex.assert_shape(state.carry[0]["a"], (2, 5, 3))
    chex.assert_trees_all_equal(state.carry[1]["a"][1, 4], jnp.asarray([4.0, 5.0, 6.0]))


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("raw", [[-2.0], [0.0], [1e6]]),
        ("scaled", [[-6.0], [0.0], [3e6]]),
        ("log1p-sign", [[jnp.log(7.0), -1.0], [0.0, 0.0], [jnp.log1p(3e6), 1.0]]),
    ],
)
def test_preprocessing_features(kind, expected):
    g = jnp.asarray([-2.0, 0.0, 1e6])
    features = _preprocess(g, kind, input_scale=3.0)
    chex.assert_trees_all_close(features, jnp.asarray(expected), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"hidden_size": 0}, "hidden_size"),
        ({"cell": "transformer"}, "cell"),
        ({"preprocessing": "log"}, "preprocessing"),
        ({"output_scale": -1.0}, "output_scale"),
        ({"input_scale": 0.0}, "input_scale"),
        ({"input_scale": float("inf")}, "input_scale"),
        ({"input_scale": True}, "input_scale"),
        ({"output_scale": float("nan")}, "output_scale"),
        ({"hidden_size": True}, "hidden_size"),
        ({"hidden_size": 2.0}, "hidden_size"),
        ({"cell": ["gru"]}, "cell"),
    ],
)
def test_bad_arguments_are_named(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        optax_lopt.ComponentwiseRNN(**kwargs)


def test_config_is_hashable_and_comparable():
    a = optax_lopt.ComponentwiseRNN(hidden_size=8)
    assert hash(a) == hash(optax_lopt.ComponentwiseRNN(hidden_size=8))
    assert a != optax_lopt.ComponentwiseRNN(hidden_size=16)
