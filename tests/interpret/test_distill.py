import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import interpret


def _same_updates(tx1, tx2, g, rtol, atol):
    s1, s2 = tx1.init(jnp.zeros(g.shape[1])), tx2.init(jnp.zeros(g.shape[1]))
    for gi in g:
        u1, s1 = tx1.update(gi, s1)
        u2, s2 = tx2.update(gi, s2)
        chex.assert_trees_all_close(u1, u2, rtol=rtol, atol=atol)


def test_distilled_momentum_sgd_is_the_same_optimizer():
    tx = optax.sgd(0.07, momentum=0.6)
    d = interpret.distill(tx)
    assert d.mechanisms == ("momentum",) and d.r2 > 0.9999
    np.testing.assert_allclose(d.betas, [0.6], rtol=1e-4)
    _same_updates(tx, d.tx, jax.random.normal(jax.random.key(0), (20, 3)), 1e-3, 1e-7)
    assert d.ablations["momentum"].r2 < 0.9


def test_distill_clipping_schedule_and_momentum():
    schedule = optax.linear_schedule(0.1, 0.01, 30)
    tx = optax.chain(optax.clip(0.5), optax.sgd(schedule, momentum=0.5))
    d = interpret.distill(tx, schedule_steps=30)
    assert d.mechanisms == ("clipping", "momentum", "schedule"), d.description
    assert d.description.startswith("clip(0.5")
    np.testing.assert_allclose(d.schedule, np.linspace(1.0, 0.1, 31)[:30], rtol=2e-2)
    _same_updates(tx, d.tx, 2 * jax.random.normal(jax.random.key(1), (30, 4)), 2e-2, 1e-6)
    for mechanism in d.mechanisms:
        assert d.ablations[mechanism].r2 < d.r2 - 0.05, mechanism


def test_distill_bad_inputs():
    with pytest.raises(ValueError, match="gradients"):
        interpret.distill(optax.sgd(0.1), gradients=np.full((10, 2), np.nan))
    with pytest.raises(ValueError, match="gradient_scale"):
        interpret.distill(optax.sgd(0.1), gradient_scale=-1.0)
    with pytest.raises(ValueError, match="betas, weights"):
        interpret.scale_by_modes([0.5, 1.0], [1.0, 1.0])


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
