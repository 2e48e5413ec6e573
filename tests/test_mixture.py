"""Tests for the mixture of per-family estimators."""

import chex
import jax
import optax
import pytest

import optax_lopt
from optax_lopt import meta, tasks

LOPT = optax_lopt.LearnableSGDM(learning_rate=0.05, momentum=0.5)
THETA = LOPT.init(jax.random.key(0))


def _components():
    quad = meta.TruncatedBPTT(LOPT, tasks.family("quadratic", dim=4, num_steps=20), 4, 5)
    lin = meta.TruncatedBPTT(LOPT, tasks.family("linear_regression", num_steps=20), 4, 5)
    return quad, lin


def test_gradient_is_the_weighted_mean_of_the_components():
    quad, lin = _components()
    mix = meta.Mixture([quad, lin], weights=[3.0, 1.0], names=["quad", "lin"])
    key = jax.random.key(1)
    state = mix.init(THETA, key)
    grad, _, metrics = mix.meta_gradient(THETA, state, jax.random.key(2))

    g_quad, _, m_quad = quad.meta_gradient(
        THETA,
        quad.init(THETA, jax.random.fold_in(key, 0)),
        jax.random.fold_in(jax.random.key(2), 0),
    )
    g_lin, _, m_lin = lin.meta_gradient(
        THETA, lin.init(THETA, jax.random.fold_in(key, 1)), jax.random.fold_in(jax.random.key(2), 1)
    )
    expected = jax.tree.map(lambda a, b: 0.75 * a + 0.25 * b, g_quad, g_lin)
    chex.assert_trees_all_close(grad, expected, rtol=1e-5)
    chex.assert_trees_all_close(
        metrics["meta_loss"], 0.75 * m_quad["meta_loss"] + 0.25 * m_lin["meta_loss"], rtol=1e-5
    )
    chex.assert_trees_all_close(metrics["quad/meta_loss"], m_quad["meta_loss"])


def test_meta_trainer_lowers_the_mixed_meta_loss():
    mix = meta.Mixture(_components())
    trainer = meta.MetaTrainer(mix, optax.adam(3e-2), theta=THETA, seed=0, progress=False)
    state = trainer.init_state()
    losses = []
    for _ in range(30):
        state, metrics = trainer.step(state)
        losses.append(float(metrics["meta_loss"]))
    assert sum(losses[-5:]) < 0.9 * sum(losses[:5]), losses
    assert any(k.startswith("0_Quadratic/") for k in metrics)


def test_bad_arguments_are_named():
    quad, lin = _components()
    with pytest.raises(ValueError, match="estimators"):
        meta.Mixture([])
    with pytest.raises(ValueError, match="weights"):
        meta.Mixture([quad, lin], weights=[1.0])
    with pytest.raises(ValueError, match="weights"):
        meta.Mixture([quad, lin], weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="names"):
        meta.Mixture([quad, lin], names=["a", "a"])
