"""Ground truth: the fits recover the known constants of hand-designed optimizers."""

import math
import os

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import interpret


def test_fit_momentum_recovers_beta_and_lr_over_random_constants():
    rng = np.random.default_rng(0)
    betas = np.concatenate([[0.0, 0.99], rng.uniform(0.0, 0.99, 14)])
    lrs = 10 ** rng.uniform(-4, 0, betas.size)
    for beta, lr in zip(betas, lrs, strict=True):
        fit = interpret.fit_momentum(optax.sgd(float(lr), momentum=float(beta)))
        assert abs(fit.beta - beta) < 0.005, (beta, fit)
        assert abs(fit.learning_rate / lr - 1) < 0.01, (lr, fit)
        assert fit.r2 > 0.999


def test_fit_momentum_of_adam_is_approximate():
    fit = interpret.fit_momentum(optax.adam(0.01))
    assert 0.5 < fit.beta < 0.95 and fit.r2 < 0.99


def test_fit_clipping_recovers_threshold_over_random_constants():
    rng = np.random.default_rng(1)
    for t, lr in zip(10 ** rng.uniform(-2, 2, 12), 10 ** rng.uniform(-3, 0, 12), strict=True):
        tx = optax.chain(optax.clip(float(t)), optax.sgd(float(lr)))
        fit = interpret.fit_clipping(tx)
        assert abs(fit.threshold / t - 1) < 0.05, (t, fit.threshold)
        assert abs(fit.learning_rate / lr - 1) < 0.01
        assert fit.shape == "hard" and fit.r2 > 0.99


def test_fit_clipping_with_momentum_and_soft_clipping():
    fit = interpret.fit_clipping(optax.chain(optax.clip(0.7), optax.sgd(0.1, momentum=0.9)))
    assert abs(fit.threshold / 0.7 - 1) < 0.05 and fit.shape == "hard"
    soft = optax.GradientTransformation(
        lambda p: optax.EmptyState(), lambda g, s, p=None: (-0.2 * 1.5 * jnp.tanh(g / 1.5), s)
    )
    fit = interpret.fit_clipping(soft)
    assert abs(fit.threshold / 1.5 - 1) < 0.05 and fit.shape == "soft"


@pytest.mark.parametrize("momentum", [None, 0.0, 0.9])
def test_plain_sgd_reports_no_clipping(momentum):
    fit = interpret.fit_clipping(optax.sgd(0.3, momentum=momentum))
    assert math.isinf(fit.threshold) and fit.shape == "none"
    assert abs(fit.learning_rate - 0.3) < 1e-6


def test_ascending_update_has_no_clipping_fit():
    fit = interpret.fit_clipping(optax.sgd(-0.05))
    assert fit.shape == "none" and math.isinf(fit.threshold)
    assert math.isnan(fit.saturation) and math.isnan(fit.r2)
    assert abs(fit.learning_rate + 0.05) < 1e-6


SCHEDULES = {
    "constant": optax.constant_schedule(0.1),
    "linear": optax.linear_schedule(0.5, 0.01, 40),
    "cosine": optax.cosine_decay_schedule(0.2, 60, alpha=0.1),
    "warmup_cosine": optax.warmup_cosine_decay_schedule(0.0, 1.0, 10, 60, end_value=0.05),
    "exponential": optax.exponential_decay(0.3, 5, 0.8, staircase=True),
    "piecewise": optax.piecewise_constant_schedule(0.1, {15: 0.5, 30: 0.1}),
}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("momentum", [None, 0.9])
def test_fit_schedule_recovers_optax_schedules(name, momentum):
    schedule = SCHEDULES[name]
    fit = interpret.fit_schedule(optax.sgd(schedule, momentum=momentum), 60, num_samples=2)
    expected = np.array([schedule(t) for t in range(60)])
    np.testing.assert_allclose(fit.learning_rates, expected, rtol=0.02, atol=1e-7)
    peak = expected.max()
    assert fit.warmup_steps == int(np.argmax(expected >= 0.99 * peak))
    assert abs(fit.decay - expected[-1] / peak) < 0.02


@pytest.mark.parametrize(
    "tx", [optax.rmsprop(0.01, decay=0.9), optax.adam(0.01, b1=0.9, b2=0.99)], ids=["rms", "adam"]
)
def test_adaptive_optimizers_have_lr_inversely_proportional_to_gradient(tx):
    gradients = np.array([0.01, 0.1, 1.0, 10.0])
    fit = interpret.lr_adaptation(tx, gradients, max_recovery_steps=3000)
    np.testing.assert_allclose(fit.exponent, 1.0, atol=0.01)
    products = fit.learning_rates * fit.gradients  # lr ~ c / |g*|
    np.testing.assert_allclose(products, products[0], rtol=0.02)
    assert fit.r2 > 0.999
    assert 0 < fit.recovery_time < 3000


def test_rmsprop_recovery_time_matches_closed_form():
    d, small, large, burst = 0.9, 0.01, 10.0, 10
    fit = interpret.lr_adaptation(optax.rmsprop(0.01, decay=d), [small, large], burst_steps=burst)
    # nu after the burst, then nu_j = d^j (nu - small^2) + small^2; the slope at g = 0 is
    # -lr / sqrt(d nu), so half of it is regained when nu_j <= 4 small^2.
    nu = d**burst * small**2 + (1 - d**burst) * large**2
    expected = math.ceil(math.log(3 * small**2 / (nu - small**2)) / math.log(d))
    assert abs(fit.recovery_time - expected) <= 1, (fit.recovery_time, expected)
    np.testing.assert_allclose(fit.recovery_curve[0], small / np.sqrt(nu), rtol=1e-3)


def test_momentum_sgd_has_no_lr_adaptation():
    fit = interpret.lr_adaptation(optax.sgd(0.05, momentum=0.9), [0.01, 0.1, 1.0, 10.0])
    np.testing.assert_allclose(fit.learning_rates, 0.05, rtol=1e-5)
    assert abs(fit.exponent) < 0.01 and fit.recovery_time == 0.0


def test_an_update_that_grows_with_the_gradient_has_no_power_law(tmp_path):
    # sgd(-0.05) ascends: u = +0.05 g, so -du/dg = -0.05 at every fixed point.
    fit = interpret.lr_adaptation(optax.sgd(-0.05, momentum=0.5), [0.1, 1.0, 10.0])
    np.testing.assert_allclose(fit.learning_rates, -0.05, rtol=1e-5)
    assert np.isnan(fit.exponent) and np.isnan(fit.r2)
    path = interpret.plot_lr_adaptation(fit, tmp_path / "ascent.png")
    assert os.path.getsize(path) > 2000


def test_fit_bad_inputs():
    with pytest.raises(ValueError, match="num_steps"):
        interpret.fit_momentum(optax.sgd(0.1), num_steps=2)
    with pytest.raises(ValueError, match="gradient_scale"):
        interpret.fit_momentum(optax.sgd(0.1), gradient_scale=0.0)
    with pytest.raises(ValueError, match="gradients"):
        interpret.fit_clipping(optax.sgd(0.1), gradients=[-1.0, 1.0])
    with pytest.raises(ValueError, match="num_steps"):
        interpret.fit_schedule(optax.sgd(0.1), 0)
    with pytest.raises(ValueError, match="gradients"):
        interpret.lr_adaptation(optax.sgd(0.1), [1.0])
