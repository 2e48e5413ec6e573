import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import interpret


def test_distilled_momentum_sgd_is_the_same_optimizer():
    tx = optax.sgd(0.07, momentum=0.6)
    d = interpret.distill(tx, adaptation_gradients=(0.1, 1.0))
    assert d.description == "trace(0.6) -> scale(-0.07)"
    assert d.adaptation_decay is None
    g = jax.random.normal(jax.random.key(0), (20, 3))
    s1, s2 = tx.init(jnp.zeros(3)), d.tx.init(jnp.zeros(3))
    for gi in g:
        u1, s1 = tx.update(gi, s1)
        u2, s2 = d.tx.update(gi, s2)
        chex.assert_trees_all_close(u1, u2, rtol=1e-4, atol=1e-7)


def test_distill_clipping_schedule_and_adaptation():
    schedule = optax.linear_schedule(0.1, 0.01, 30)
    tx = optax.chain(optax.clip(0.5), optax.sgd(schedule, momentum=0.5))
    d = interpret.distill(tx, schedule_steps=30, adaptation_gradients=None)
    assert d.description.startswith("clip(0.5")
    assert "trace(0.5)" in d.description and "schedule[30 steps]" in d.description
    g = 2 * jax.random.normal(jax.random.key(1), (30, 4))
    s1, s2 = tx.init(jnp.zeros(4)), d.tx.init(jnp.zeros(4))
    for gi in g:
        u1, s1 = tx.update(gi, s1)
        u2, s2 = d.tx.update(gi, s2)
        chex.assert_trees_all_close(u1, u2, rtol=2e-2, atol=1e-6)
    rms = interpret.distill(optax.rmsprop(0.01, decay=0.9), adaptation_gradients=(0.01, 0.1, 1.0))
    assert "scale_by_power_rms(exponent=1" in rms.description
    assert 0.5 < rms.adaptation_decay < 1


def test_scale_by_power_rms_matches_rmsprop_normalisation_and_ignores_nan():
    tx = interpret.scale_by_power_rms(1.0, 0.9, eps=0.0)
    state = tx.init(jnp.zeros(2))
    u, state = tx.update(jnp.array([2.0, -3.0]), state)
    np.testing.assert_allclose(u, [1.0, -1.0], rtol=1e-5)  # bias-corrected first step
    u, state = tx.update(jnp.array([jnp.nan, 1.0]), state)
    assert np.all(np.isfinite(state.nu)) and np.all(np.isfinite(u))
    with pytest.raises(ValueError, match="decay"):
        interpret.scale_by_power_rms(1.0, 1.5)


def test_advantage_kept_compares_against_tuned_adam():
    curvature = jnp.array([0.01, 0.1, 1.0, 10.0])
    loss_fn = lambda p: 0.5 * jnp.sum(curvature * p**2)  # noqa: E731
    params = jnp.ones(4)
    newton = optax.GradientTransformation(
        lambda p: optax.EmptyState(), lambda g, s, p=None: (-g / curvature, s)
    )
    result = interpret.advantage_kept(
        newton, newton, loss_fn, params, 50, adam_learning_rates=[0.01, 0.1]
    )
    assert result.original_loss < 1e-10 < result.adam_loss
    np.testing.assert_allclose(result.fraction, 1.0, rtol=1e-6)
    assert result.adam_learning_rate in (0.01, 0.1)
    worse = interpret.advantage_kept(
        newton, optax.sgd(1e-4), loss_fn, params, 50, adam_learning_rates=[0.01, 0.1]
    )
    assert worse.fraction < 0.0
    bad = interpret.advantage_kept(optax.sgd(1e-5), newton, loss_fn, params, 50)
    assert math.isnan(bad.fraction)
    with pytest.raises(ValueError, match="distilled"):
        interpret.advantage_kept(newton, None, loss_fn, params, 10)
