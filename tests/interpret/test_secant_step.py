import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import interpret
from interpret import secant_step as SS


def _run(tx, gradient_fn, x, steps):
    """Steps ``x`` with ``tx`` on ``gradient_fn``; returns the iterates, updates and states."""
    state, xs, us, states = tx.init(x), [x], [], []
    for _ in range(steps):
        u, state = tx.update(gradient_fn(x), state, x)
        x = x + u
        xs.append(x), us.append(u), states.append(state)
    return xs, us, states


@pytest.mark.parametrize(
    "a, b, expected",
    [
        (-1.0, -0.5, np.log(2.0)),  # the line minimum is twice the step
        (-1.0, 0.0, 0.0),  # the step landed on it
        (-1.0, 1.0, np.log(0.5)),  # overshot: half the step
        (-1.0, -0.9, SS.SECANT_GROWTH),  # ten times: growth is clipped
        (-1.0, 20.0, -SS.SECANT_SHRINK),  # 1/21: shrinking is clipped harder
        (1.0, 0.5, 0.0),  # not a descent step: no evidence
        (-1.0, -2.0, 0.0),  # no positive curvature: no evidence
        (-1.0, np.nan, 0.0),
        (0.0, 0.0, 0.0),  # the first step
    ],
)
def test_secant_log_multiplier_known_values(a, b, expected):
    got = SS.secant_log_multiplier(jnp.float32(a), jnp.float32(b))
    chex.assert_trees_all_close(got, jnp.float32(expected), atol=1e-6)


@pytest.mark.parametrize(
    "a, b, growth, expected",
    [
        (-1.0, -2.0, 1.0, 0.5),  # the slope got steeper: evidence for a longer step
        (-1.0, -2.0, 0.2, 0.2),  # at most the growth bound
        (-1.0, -1.0, 1.0, 0.0),  # a constant gradient is still no evidence
        (-1.0, -0.5, 1.0, np.log(2.0)),  # a line minimum ahead: unchanged
        (-1.0, 1.0, 1.0, np.log(0.5)),  # an overshoot: unchanged
        (1.0, 2.0, 1.0, 0.0),  # not a descent step: no evidence
        (-1.0, -np.inf, 1.0, 0.0),
    ],
)
def test_steepening_makes_a_steeper_slope_evidence_for_a_longer_step(a, b, growth, expected):
    got = SS.secant_log_multiplier(jnp.float32(a), jnp.float32(b), growth, steepening=0.5)
    chex.assert_trees_all_close(got, jnp.float32(expected), atol=1e-6)


def test_per_coordinate_line_search_lands_on_the_minimum_of_a_diagonal_quadratic():
    # f = sum h_i x_i^2 / 2 under SGD(eta): the first step's secant is 1 / (h_i eta) per
    # coordinate (5 and 20 here), taken whole at the second update, so the second step lands
    # every coordinate on its minimum 0; one scale per tensor cannot do both.
    h, eta = jnp.array([2.0, 0.5]), 0.1
    tx = interpret.adapt_step_by_secant(optax.sgd(eta), rate=0.5)
    xs, _, states = _run(tx, lambda x: h * x, jnp.array([1.0, -3.0]), 2)
    chex.assert_trees_all_close(states[1].log_scale, jnp.log(1.0 / (h * eta)), rtol=1e-5)
    chex.assert_trees_all_close(xs[2], jnp.zeros(2), atol=1e-5)
    tensor = interpret.adapt_step_by_secant(optax.sgd(eta), rate=0.5, granularity="tensor")
    xs, _, states = _run(tensor, lambda x: h * x, jnp.array([1.0, -3.0]), 2)
    chex.assert_shape(states[1].log_scale, ())
    assert float(jnp.max(jnp.abs(xs[2]))) > 0.1


def test_the_first_evidence_is_taken_whole_and_growth_is_slow_past_the_first_steps():
    # u_t = -1 and g_t = 0.9 ** t: every secant says the line minimum is m = 10 times the step.
    # s takes log 10 whole at the first evidence, then rate * log 10 per step while growth is
    # bounded by SECANT_SHRINK, then rate * SECANT_GROWTH per step.
    steps, rate = 14, 0.5
    g = 0.9 ** np.arange(steps, dtype=np.float64)[:, None]
    s = interpret.secant_log_scales(g, -np.ones_like(g), rate, 0.0, limit=30.0)[:, 0]
    growth = np.diff(s, prepend=0.0)
    expected = np.zeros(steps)
    expected[SS.SECANT_LINE_SEARCH_COUNT] = np.log(10.0)
    expected[SS.SECANT_LINE_SEARCH_COUNT + 1 : SS.SECANT_EARLY_STEPS] = rate * np.log(10.0)
    expected[SS.SECANT_EARLY_STEPS :] = rate * SS.SECANT_GROWTH
    np.testing.assert_allclose(growth, expected, rtol=1e-6, atol=1e-9)


def test_a_linear_loss_is_no_evidence():
    # a constant gradient has no curvature along any step: s only decays from 0, stays 0
    tx = interpret.adapt_step_by_secant(optax.sgd(0.1), rate=0.5, decay=0.1)
    _, _, states = _run(tx, lambda x: jnp.ones(1), jnp.array([1.0]), 5)
    chex.assert_trees_all_close(states[-1].log_scale, jnp.zeros(1))


@pytest.mark.parametrize("steepening", [0.0, np.log(2.0)])
def test_the_replay_reproduces_the_rule_on_noisy_gradients(steepening):
    key = jax.random.key(0)
    noise = jax.random.normal(key, (60, 3))
    tx = interpret.adapt_step_by_secant(
        optax.sgd(0.05, momentum=0.9), rate=0.4, decay=0.02, steepening=steepening
    )
    state, x, gs, us, ss = tx.init(jnp.zeros(3)), jnp.ones(3), [], [], []
    for t in range(60):
        g = jnp.array([1.0, 3.0, 0.3]) * x + 0.3 * noise[t]
        u, state = tx.update(g, state, x)
        x = x + u
        gs.append(g), us.append(u), ss.append(state.log_scale)
    replay = interpret.secant_log_scales(
        np.array(gs), np.array(us), 0.4, 0.02, steepening=steepening
    )
    np.testing.assert_allclose(replay, np.array(ss), atol=1e-4)
    assert np.ptp(replay) > 1.0  # the rule moved: the comparison is not of zeros
    if steepening:  # and the steeper slopes moved it: without them the replay differs
        plain = interpret.secant_log_scales(np.array(gs), np.array(us), 0.4, 0.02)
        assert np.max(np.abs(plain - replay)) > 0.1


def test_non_finite_gradients_never_reach_the_state():
    tx = interpret.adapt_step_by_secant(optax.sgd(0.1), rate=0.5)
    grads = [jnp.array([1.0, 2.0]), jnp.array([jnp.nan, 1.0]), jnp.array([jnp.inf, 0.5])]
    state = tx.init(jnp.zeros(2))
    for g in grads:
        _, state = tx.update(g, state)
    chex.assert_tree_all_finite((state.log_scale, state.previous, state.previous_slope))


@pytest.mark.parametrize(
    "kwargs, name",
    [({"rate": 0.0}, "rate"), ({"rate": 0.5, "decay": 1.0}, "decay"),
     ({"rate": 0.5, "limit": -1.0}, "limit"), ({"rate": 0.5, "granularity": "row"}, "granularity"),
     ({"rate": 0.5, "steepening": -0.1}, "steepening")],
)  # fmt: skip
def test_bad_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        interpret.adapt_step_by_secant(optax.sgd(0.1), **kwargs)
    if name in ("rate", "decay", "limit", "steepening"):
        with pytest.raises(ValueError, match=name):
            interpret.secant_log_scales(np.ones((3, 1)), np.ones((3, 1)), **{"rate": 0.5,
                                        "decay": 0.0, **kwargs})  # fmt: skip


@pytest.mark.parametrize("steepening", [0.0, np.log(2.0)])
def test_distill_finds_the_secant_rule_of_an_adapted_momentum_sgd(steepening):
    tx = interpret.adapt_step_by_secant(
        optax.sgd(0.05, momentum=0.8), rate=0.3, decay=0.01, steepening=steepening
    )
    d = interpret.distill(tx)
    assert "step adaptation" in d.mechanisms and "momentum" in d.mechanisms, d.description
    assert d.spec.adaptation_rule == "secant", d.description
    assert d.spec.adaptation_steepening == pytest.approx(steepening), d.description
    assert d.spec.adaptation == pytest.approx((0.3, 0.01)) and d.r2 > 0.999
    assert d.ablations["step adaptation"].r2 < d.r2 - 0.05
    g = jax.random.normal(jax.random.key(1), (40, 3))
    state_ours, state_theirs = d.tx.init(jnp.zeros(3)), tx.init(jnp.zeros(3))
    for t in range(40):
        ours, state_ours = d.tx.update(g[t], state_ours)
        theirs, state_theirs = tx.update(g[t], state_theirs)
        chex.assert_trees_all_close(ours, theirs, rtol=2e-3, atol=1e-6)
