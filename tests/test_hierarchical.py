"""HierarchicalLOpt: per-tensor LSTM, loss features, per-parameter MLP."""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import optax
import pytest

import optax_lopt
from optax_lopt.architectures import hierarchical


def _params():
    return {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.asarray([0.5, -0.5])}


def _grads(seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {"w": jax.random.normal(k1, (3, 4)), "b": jax.random.normal(k2, (2,))}


def _perturbed(lopt, seed=0):
    theta = lopt.init(jax.random.key(seed))
    leaves, treedef = jax.tree.flatten(theta)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    return jax.tree.unflatten(
        treedef,
        [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)],
    )


def test_loss_features_known_values():
    decays = (0.5,)
    tracker = hierarchical._init_tracker(1)
    feats, tracker = hierarchical.loss_features(tracker, 2.0, decays)
    # First loss: no history yet, only the presence flag.
    chex.assert_trees_all_close(feats, jnp.asarray([0.0, 0.0, 1.0]))
    chex.assert_trees_all_close((tracker.ema, tracker.minimum), (jnp.asarray([2.0]), 2.0))
    feats, tracker = hierarchical.loss_features(tracker, 1.0, decays)
    expected = jnp.asarray([math.tanh((1.0 - 2.0) / 2.0), math.tanh((1.0 - 2.0) / 2.0), 1.0])
    chex.assert_trees_all_close(feats, expected, rtol=1e-5)
    chex.assert_trees_all_close((tracker.ema, tracker.minimum), (jnp.asarray([1.5]), 1.0))
    # A missing, zero or non-finite loss leaves the history unchanged.
    for missing in (None, 0.0, jnp.nan):
        feats, same = hierarchical.loss_features(tracker, missing, decays)
        chex.assert_trees_all_close(feats, jnp.zeros(3))
        chex.assert_trees_all_close(same, tracker)


def test_validation_value_reaches_the_update_and_is_optional():
    lopt = optax_lopt.HierarchicalLOpt(lstm_hidden_size=8, hidden_sizes=(4,))
    tx = lopt.transform(_perturbed(lopt))
    params, grads = _params(), _grads()
    update = jax.jit(tx.update)
    state = tx.init(params)
    _, state = update(grads, state, params, value=2.0, validation_value=3.0)
    plain, _ = update(grads, state, params, value=1.0)
    with_val, s2 = update(grads, state, params, value=1.0, validation_value=1.0)
    assert not jnp.allclose(plain["w"], with_val["w"])
    assert float(s2.validation_loss.minimum) == 1.0
    other_loss, _ = update(grads, state, params, value=4.0)
    assert not jnp.allclose(plain["w"], other_loss["w"])


def test_non_scalar_losses_raise_naming_the_argument():
    lopt = optax_lopt.HierarchicalLOpt(lstm_hidden_size=4, hidden_sizes=(2,))
    tx = lopt.transform(lopt.init(jax.random.key(0)))
    params = _params()
    with pytest.raises(ValueError, match="validation_value"):
        tx.update(_grads(), tx.init(params), params, validation_value=jnp.ones(2))
    with pytest.raises(ValueError, match="value"):
        tx.update(_grads(), tx.init(params), params, value=jnp.ones(3))


def test_log_lr_readout_scales_each_step():
    lopt = optax_lopt.HierarchicalLOpt(lstm_hidden_size=8, hidden_sizes=(4,))
    theta = lopt.init(jax.random.key(0))
    doubled = {**theta, "log_lr": {**theta["log_lr"], "b": jnp.asarray(math.log(2.0))}}
    params, grads = _params(), _grads()
    tx1, tx2 = lopt.transform(theta), lopt.transform(doubled)
    base, _ = jax.jit(tx1.update)(grads, tx1.init(params), params, value=1.0)
    twice, _ = jax.jit(tx2.update)(grads, tx2.init(params), params, value=1.0)
    chex.assert_trees_all_close(twice, jax.tree.map(lambda u: 2.0 * u, base), rtol=1e-5)


def test_lstm_state_is_per_tensor_and_evolves():
    lopt = optax_lopt.HierarchicalLOpt(lstm_hidden_size=6, hidden_sizes=(4,))
    tx = lopt.transform(lopt.init(jax.random.key(0)))
    params = _params()
    state = tx.init(params)
    chex.assert_shape((state.lstm_hidden["w"], state.lstm_cell["b"]), ((6,), (6,)))
    _, new = jax.jit(tx.update)(_grads(), state, params, value=1.0)
    assert float(jnp.abs(new.lstm_hidden["w"]).max()) > 0
    assert not jnp.allclose(new.lstm_hidden["w"], new.lstm_hidden["b"])
    assert int(new.count) == 1


def test_default_untrained_optimizer_descends_a_quadratic():
    lopt = optax_lopt.HierarchicalLOpt()
    tx = lopt.transform(lopt.init(jax.random.key(0)))
    target = jax.random.uniform(jax.random.key(1), (3, 5), minval=-0.1, maxval=0.1)
    loss = lambda p: jnp.sum((p["w"] - target) ** 2) + jnp.sum(p["b"] ** 2)

    @jax.jit
    def step(p, s):
        value, g = jax.value_and_grad(loss)(p)
        u, s = tx.update(g, s, p, value=value, validation_value=value)
        return optax.apply_updates(p, u), s

    params = {"w": jnp.zeros((3, 5)), "b": jnp.full((2,), 0.1)}
    state = tx.init(params)
    first = float(loss(params))
    for _ in range(300):
        params, state = step(params, state)
    assert float(loss(params)) < 0.05 * first


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"lstm_hidden_size": 0}, "lstm_hidden_size"),
        ({"hidden_sizes": ()}, "hidden_sizes"),
        ({"loss_decays": (0.9, 1.5)}, "loss_decays"),
        ({"exp_mult": "big"}, "exp_mult"),
        ({"lstm_hidden_size": True}, "lstm_hidden_size"),
        ({"spike_clip": float("inf")}, "spike_clip"),
    ],
)
def test_bad_config_names_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        optax_lopt.HierarchicalLOpt(**kwargs)


@pytest.mark.parametrize("name", ["MLPLOpt", "FactoredMLPLOpt", "HierarchicalLOpt"])
def test_save_load_roundtrip(name, tmp_path):
    lopt = optax_lopt.architecture(name)(hidden_sizes=(3,))
    theta = lopt.init(jax.random.key(5))
    optax_lopt.save(tmp_path / "lopt", lopt, theta)
    loaded, loaded_theta = optax_lopt.load(tmp_path / "lopt")
    assert loaded == lopt
    chex.assert_trees_all_equal(loaded_theta, theta)
