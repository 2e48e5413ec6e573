"""Ground truth for the shapes learned optimizers have: every constant is drawn at random.

Sign-SGD, Lion, clipping at thresholds from 1e-3 to 10, Adam at gradient scales from 1e-4 to 1
and a momentum whose state is stored in a rotated, padded basis: the fits must recover the
mechanism and its constants, and say nothing bold about mechanisms that are absent.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import interpret


def _stats(scale):
    g = scale * jax.random.normal(jax.random.key(0), (400,))
    return interpret.gradient_stats(g)


@pytest.mark.parametrize("seed", range(3))
def test_sign_sgd_is_sign_like_and_distills_to_sign(seed):
    rng = np.random.default_rng(seed)
    lr, scale = 10 ** rng.uniform(-4, -1), 10 ** rng.uniform(-4, 0)
    tx = optax.chain(optax.scale_by_sign(), optax.scale(-lr))
    shape = interpret.update_shape(tx, _stats(scale))
    assert shape.kind == "sign"
    np.testing.assert_allclose(shape.jump, lr, rtol=1e-5)
    np.testing.assert_allclose(shape.sign_fraction, 1.0, rtol=1e-5)
    d = interpret.distill(tx, gradient_scale=scale)
    assert d.mechanisms == ("sign",) and d.r2 > 0.999
    np.testing.assert_allclose(d.learning_rate, lr, rtol=1e-3)


@pytest.mark.parametrize("seed", range(3))
def test_lion_distills_to_the_sign_of_a_momentum_mix(seed):
    rng = np.random.default_rng(seed)
    lr, b1, b2 = 10 ** rng.uniform(-4, -2), rng.uniform(0.8, 0.95), rng.choice([0.9, 0.95, 0.99])
    tx = optax.lion(lr, b1=b1, b2=float(b2))
    d = interpret.distill(tx, gradient_scale=10 ** rng.uniform(-3, 0))
    assert "output sign" in d.mechanisms and "momentum" in d.mechanisms
    assert d.r2 > 0.97
    np.testing.assert_allclose(d.learning_rate, lr, rtol=1e-2)
    assert d.ablations["output sign"].r2 < d.r2 - 0.1


@pytest.mark.parametrize("threshold", [1e-3, 3e-2, 0.7, 10.0])
def test_clipping_threshold_from_1e3_to_10(threshold):
    rng = np.random.default_rng(int(threshold * 1000))
    lr = 10 ** rng.uniform(-3, -1)
    t = threshold * rng.uniform(0.8, 1.25)
    tx = optax.chain(optax.clip(t), optax.sgd(lr))
    fit = interpret.fit_clipping(tx, gradients=np.geomspace(t / 100, t * 100, 81))
    assert fit.shape == "hard"
    np.testing.assert_allclose(fit.threshold, t, rtol=2e-2)
    np.testing.assert_allclose(fit.learning_rate, lr, rtol=1e-3)
    shape = interpret.update_shape(tx, _stats(t))
    assert shape.kind == "saturating" and 0.8 * t <= shape.saturation <= 1.1 * t
    assert shape.jump < 1e-3 * lr * t


@pytest.mark.parametrize("scale", [1e-4, 1e-3, 1e-2, 1e-1, 1.0])
def test_adam_adaptation_at_every_gradient_scale(scale):
    rng = np.random.default_rng(int(-np.log10(scale)))
    lr = 10 ** rng.uniform(-4, -2)
    tx = optax.adam(lr, b2=float(rng.uniform(0.9, 0.97)), eps=1e-12)
    fit = interpret.lr_adaptation(
        tx, np.geomspace(scale / 10, scale * 10, 5), input_step=scale / 10, max_recovery_steps=50
    )
    assert fit.r2 > 0.95
    np.testing.assert_allclose(fit.exponent, 1.0, atol=0.1)
    # gradients whose size drifts over two decades, as in training: normalisation shows
    drift = scale * np.geomspace(10, 0.1, 200)[:, None]
    g = drift * np.asarray(jax.random.normal(jax.random.key(1), (200, 32)))
    d = interpret.distill(tx, gradients=g)
    # Adam divides its momentum by the RMS; the chain averages normalised gradients, which
    # is close but not the same: normalisation must be found
    assert "normalise" in d.mechanisms and d.r2 > 0.7


class _RotatedState(NamedTuple):
    h: jax.Array


def _rotated_momentum(lr, beta, pad, seed):
    """SGD with momentum whose state is ``Q [m, p_1..p_pad]``: padding decays, unread."""
    n = pad + 1
    q, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(seed), (n, n)))
    decays = jnp.concatenate([jnp.array([beta]), jnp.linspace(0.2, 0.5, pad)])

    def init_fn(params):
        return _RotatedState(jax.tree.map(lambda p: jnp.zeros(p.shape + (n,)), params))

    def update_fn(g, state, params=None):
        z = state.h @ q  # back to [m, padding]
        drive = jnp.concatenate([jnp.ones(1), 0.3 * jnp.ones(pad)])  # padding is driven too
        z = decays * z + g[..., None] * drive
        return -lr * z[..., 0], _RotatedState(z @ q.T)

    return optax.GradientTransformation(init_fn, update_fn)


@pytest.mark.parametrize("seed", range(3))
def test_momentum_in_a_rotated_padded_basis(seed):
    rng = np.random.default_rng(seed)
    lr, beta, pad = 10 ** rng.uniform(-3, -1), rng.uniform(0.6, 0.97), int(rng.integers(1, 5))
    tx = _rotated_momentum(lr, beta, pad, seed)
    modes = interpret.momentum_modes(tx, _stats(1e-2))
    np.testing.assert_allclose(modes.betas[0], beta, rtol=1e-4)
    np.testing.assert_allclose(modes.alphas[0], lr, rtol=1e-3)
    np.testing.assert_allclose(modes.direct, lr, rtol=1e-4)
    np.testing.assert_allclose(modes.contributions[1:], 0.0, atol=1e-6 * lr)
    assert modes.impulse_r2 > 0.999
    d = interpret.distill(tx, gradient_scale=1e-2)
    assert d.mechanisms == ("momentum",) and d.r2 > 0.999
    np.testing.assert_allclose(d.betas, [beta], rtol=1e-3)


@pytest.mark.parametrize("seed", range(2))
def test_modes_of_an_update_normalised_by_a_vanishing_state(seed):
    """RMS normalisation without eps has no finite Jacobian at g* = 0: the modes are read at
    the fixed point of the 5% gradient quantile instead, and its decay is found there."""
    rng = np.random.default_rng(seed)
    decay, scale = rng.uniform(0.8, 0.99), 10 ** rng.uniform(-4, -1)
    tx = optax.chain(optax.scale_by_rms(decay=decay, eps=0.0), optax.scale(-0.1))
    stats = _stats(scale)
    modes = interpret.momentum_modes(tx, stats, horizon=50)
    assert modes.input == stats.low > 0
    np.testing.assert_allclose(modes.betas[0], decay, rtol=1e-4)
    assert np.all(np.isfinite(modes.alphas)) and np.isfinite(modes.direct)
    assert interpret.momentum_modes(optax.sgd(0.1, momentum=0.9), stats).input == 0.0


def test_heavy_ball_optimum_of_the_paper_task():
    hb = interpret.heavy_ball_optimum(1e-3, 1.0)
    np.testing.assert_allclose([hb.beta, hb.alpha], [0.881, 3.76], atol=2e-3)
    with pytest.raises(ValueError, match="low, high"):
        interpret.heavy_ball_optimum(1.0, 0.1)
