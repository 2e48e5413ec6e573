"""LearnableSGDM and LearnableAdam reproduce optax.sgd and optax.adam exactly."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import optax
import pytest

import optax_lopt


def _trajectory(tx, params, grads):
    state, out = tx.init(params), []
    for g in grads:
        u, state = tx.update(g, state, params)
        out.append(u)
    return jnp.stack(out)


@pytest.mark.parametrize("seed", range(3))
def test_learnable_sgdm_matches_optax_sgd(seed):
    k1, k2 = jax.random.split(jax.random.key(seed))
    lr, beta = float(jax.random.uniform(k1, minval=1e-3, maxval=1.0)), 0.3 + 0.2 * seed
    lopt = optax_lopt.LearnableSGDM(learning_rate=lr, momentum=beta)
    grads = jax.random.normal(k2, (6, 5))
    ours = _trajectory(lopt.transform(lopt.init(k1)), jnp.zeros(5), grads)
    chex.assert_trees_all_close(
        ours, _trajectory(optax.sgd(lr, momentum=beta), jnp.zeros(5), grads), rtol=1e-5
    )


@pytest.mark.parametrize("seed", range(3))
def test_learnable_adam_matches_optax_adam(seed):
    k1, k2 = jax.random.split(jax.random.key(seed))
    lr = float(jax.random.uniform(k1, minval=1e-4, maxval=1e-1))
    lopt = optax_lopt.LearnableAdam(learning_rate=lr, b1=0.8, b2=0.99, eps=1e-6)
    grads = jax.random.normal(k2, (6, 5))
    ours = _trajectory(lopt.transform(lopt.init(k1)), jnp.zeros(5), grads)
    theirs = _trajectory(optax.adam(lr, b1=0.8, b2=0.99, eps=1e-6), jnp.zeros(5), grads)
    chex.assert_trees_all_close(ours, theirs, rtol=1e-4)


def test_meta_gradient_flows_to_learning_rate():
    """d(loss after one step)/d(log lr) of f(x) = x^2/2 from x=1 is -lr (1 - lr)."""
    lopt = optax_lopt.LearnableSGDM(learning_rate=0.1, momentum=0.5)

    def loss_after_step(theta):
        tx = lopt.transform(theta)
        x = jnp.asarray(1.0)
        u, _ = tx.update(x, tx.init(x), x)
        return 0.5 * (x + u) ** 2

    grad = jax.grad(loss_after_step)(lopt.init(jax.random.key(0)))
    chex.assert_trees_all_close(grad["log_learning_rate"], -0.1 * 0.9, rtol=1e-5)


@pytest.mark.parametrize(
    "cls, kwargs, argument",
    [
        (optax_lopt.LearnableSGDM, {"momentum": 1.0}, "momentum"),
        (optax_lopt.LearnableSGDM, {"learning_rate": 0.0}, "learning_rate"),
        (optax_lopt.LearnableAdam, {"b2": -0.1}, "b2"),
        (optax_lopt.LearnableAdam, {"eps": 0.0}, "eps"),
        (optax_lopt.LearnableSGDM, {"learning_rate": float("inf")}, "learning_rate"),
        (optax_lopt.LearnableSGDM, {"momentum": "0.9"}, "momentum"),
        (optax_lopt.LearnableAdam, {"b1": None}, "b1"),
        (optax_lopt.LearnableAdam, {"learning_rate": True}, "learning_rate"),
    ],
)
def test_bad_arguments_are_named(cls, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        cls(**kwargs)
