"""Per-tensor step-size adaptation (`architectures/_step_adaptation.py`) and MLPLOpt's option."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_lopt
from interpret import secant_step as SS
from optax_lopt.architectures import _step_adaptation as SA


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ([1.0, 2.0], [2.0, 4.0], 1.0),
        ([1.0, 2.0], [-3.0, -6.0], -1.0),
        ([1.0, 0.0], [0.0, 5.0], 0.0),
        ([0.0, 0.0], [1.0, 1.0], 0.0),
        ([3.0, 4.0], [4.0, 3.0], 24.0 / 25.0),
    ],
)
def test_cosine_known_values(a, b, expected):
    got = SA.cosine(jnp.asarray(a), jnp.asarray(b))
    chex.assert_trees_all_close(got, jnp.float32(expected), atol=1e-6)


def test_cosine_of_a_tiny_gradient_is_still_a_cosine():
    # Squares of 1e-20 underflow in float32; the products with an O(1) vector do not.
    g = jnp.asarray([3e-20, 4e-20])
    u = jnp.asarray([-4.0, -3.0])
    chex.assert_trees_all_close(SA.cosine(g, u), jnp.float32(-24.0 / 25.0), atol=1e-6)


def _run_adapt(grads, rate, decay, limit):
    """Scales after feeding ``grads`` in turn, each step's update ``-g`` (Adam-like)."""
    params = {"w": jnp.zeros(3)}
    state = SA.init(params)
    scales = []
    for g in grads:
        g = {"w": jnp.asarray(g)}
        _, state = SA.adapt(state, g, jax.tree.map(jnp.negative, g), rate, decay, limit)
        scales.append(float(state.log_scales["w"]))
    return np.asarray(scales)


def test_agreeing_steps_grow_the_scale_linearly_up_to_the_limit():
    scales = _run_adapt([[1.0, 2.0, 3.0]] * 8, rate=0.25, decay=0.0, limit=1.0)
    # The first step has no previous one (cosine 0); then every step agrees fully (c = -1).
    np.testing.assert_allclose(scales, [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0], atol=1e-6)


def test_oscillating_steps_shrink_the_scale_and_decay_pulls_it_back():
    flip = [[1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]] * 3
    scales = _run_adapt(flip, rate=0.1, decay=0.5, limit=5.0)
    # s_t = 0.5 * s_{t-1} - 0.1 * 1 from step 2 on: a fixed point at -0.2.
    expected = [0.0]
    for _ in range(5):
        expected.append(0.5 * expected[-1] - 0.1)
    np.testing.assert_allclose(scales, expected, atol=1e-6)


def test_updates_are_scaled_by_exp_of_the_new_scale():
    state = SA.StepAdaptationState({"w": jnp.float32(0.5)}, {"w": jnp.asarray([-1.0, 0.0])})
    g = {"w": jnp.asarray([1.0, 0.0])}
    u = {"w": jnp.asarray([-2.0, 3.0])}
    scaled, new = SA.adapt(state, g, u, rate=0.1, decay=0.0, limit=4.0)
    chex.assert_trees_all_close(new.log_scales["w"], jnp.float32(0.6), atol=1e-6)
    chex.assert_trees_all_close(scaled["w"], u["w"] * np.exp(0.6), rtol=1e-6)
    chex.assert_trees_all_close(new.previous_updates, scaled)


def _ill_conditioned_loss(p):
    return 0.5 * jnp.sum(jnp.logspace(0, 2, 10) * p["w"] ** 2)


def _final_loss(lopt, steps=300):
    tx = lopt.transform(lopt.init(jax.random.key(0)))
    params = {"w": jnp.full(10, 3.0)}

    def step(carry, _):
        p, s = carry
        u, s = tx.update(jax.grad(_ill_conditioned_loss)(p), s, p)
        return (optax.apply_updates(p, u), s), None

    (params, state), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
    return float(_ill_conditioned_loss(params)), state


def test_mlp_lopt_adaptation_lengthens_steps_on_an_ill_conditioned_quadratic():
    base, base_state = _final_loss(optax_lopt.MLPLOpt(step_mult=0.01))
    adapted, state = _final_loss(optax_lopt.MLPLOpt(step_mult=0.01, step_adaptation=0.05))
    assert base_state.step_adaptation == ()
    assert float(state.step_adaptation.log_scales["w"]) != 0.0
    # A fixed step of 0.01 from 3.0 cannot reach the minimum in 300 steps; adapted ones can.
    assert base > 1.0
    assert adapted < 1e-2 * base


def test_mlp_lopt_adaptation_keeps_the_update_odd_in_the_gradient():
    lopt = optax_lopt.MLPLOpt(antisymmetric=True, step_adaptation=0.1)
    tx = lopt.transform(lopt.init(jax.random.key(1)))
    params = {"w": jnp.asarray([0.3, -1.0, 2.0])}
    grads = [jnp.asarray([1.0, -2.0, 0.5]), jnp.asarray([0.7, -1.5, 0.2])]
    s_pos, s_neg = tx.init(params), tx.init(params)
    for g in grads:
        u_pos, s_pos = tx.update({"w": g}, s_pos, params)
        u_neg, s_neg = tx.update({"w": -g}, s_neg, params)
        chex.assert_trees_all_close(u_pos, jax.tree.map(jnp.negative, u_neg), atol=1e-7)
    chex.assert_trees_all_close(s_pos.step_adaptation.log_scales, s_neg.step_adaptation.log_scales)


def test_mlp_lopt_adaptation_rate_is_a_meta_parameter():
    lopt = optax_lopt.MLPLOpt(step_adaptation=0.05)
    theta = lopt.init(jax.random.key(0))
    chex.assert_trees_all_close(theta["adaptation"], jnp.float32(0.0))
    assert "adaptation" not in optax_lopt.MLPLOpt().init(jax.random.key(0))

    def loss(a):
        return _final_loss_theta(lopt, {**theta, "adaptation": a})

    assert float(jax.grad(loss)(jnp.float32(0.0))) != 0.0


def _final_loss_theta(lopt, theta, steps=4):
    tx = lopt.transform(theta)
    params = {"w": jnp.full(10, 3.0)}
    state = tx.init(params)
    for _ in range(steps):
        u, state = tx.update(jax.grad(_ill_conditioned_loss)(params), state, params)
        params = optax.apply_updates(params, u)
    return _ill_conditioned_loss(params)


@pytest.mark.parametrize(
    "field, value",
    [
        ("step_adaptation", -0.1),
        ("adaptation_decay", 1.0),
        ("adaptation_limit", 0.0),
        ("adaptation_granularity", "layer"),
    ],
)
def test_bad_adaptation_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        optax_lopt.MLPLOpt(**{field: value})


def test_coordinate_granularity_adapts_each_entry_by_its_sign_agreement():
    params = {"w": jnp.zeros(3)}
    state = SA.init(params, "coordinate")
    chex.assert_shape(state.log_scales["w"], (3,))
    # Entry 0 keeps its sign (agrees with the previous step -g), entry 1 flips, entry 2 is 0.
    grads = [jnp.asarray([1.0, 1.0, 0.0]), jnp.asarray([1.0, -1.0, 0.0])] * 2
    for g in grads:
        g = {"w": g}
        _, state = SA.adapt(state, g, jax.tree.map(jnp.negative, g), 0.1, 0.0, 1.0, "coordinate")
    chex.assert_trees_all_close(state.log_scales["w"], jnp.asarray([0.3, -0.3, 0.0]), atol=1e-6)


def test_mlp_lopt_coordinate_adaptation_beats_a_fixed_step_on_the_quadratic():
    base, _ = _final_loss(optax_lopt.MLPLOpt(step_mult=0.01))
    lopt = optax_lopt.MLPLOpt(
        step_mult=0.01, step_adaptation=0.05, adaptation_granularity="coordinate"
    )
    adapted, state = _final_loss(lopt)
    chex.assert_shape(state.step_adaptation.log_scales["w"], (10,))
    assert adapted < 1e-2 * base


def test_cosine_has_a_finite_derivative_at_a_zero_vector():
    # interpret linearises the one-coordinate system at g = 0, through this cosine.
    for a in (jnp.zeros(1), jnp.zeros(3)):
        grad = jax.grad(lambda x: SA.cosine(x, jnp.ones_like(x)))(a)
        chex.assert_tree_all_finite(grad)


@pytest.mark.parametrize(
    "granularity, start, expected",
    # per entry: no evidence from the NaN entry, agreement +1 from the other
    [("tensor", 0.3, 0.3), ("coordinate", [0.3, 0.3], [0.3, 0.2])],
)
def test_a_non_finite_previous_step_leaves_the_scales_finite(granularity, start, expected):
    start = jnp.asarray(start, jnp.float32)
    state = SA.StepAdaptationState({"w": start}, {"w": jnp.asarray([jnp.nan, 1.0])})
    g = {"w": jnp.asarray([1.0, 2.0])}
    updates = {"w": jnp.asarray([jnp.inf, 2.0])}
    _, new = SA.adapt(state, g, updates, rate=0.1, decay=0.0, limit=4.0, granularity=granularity)
    chex.assert_trees_all_close(new.log_scales["w"], jnp.asarray(expected, jnp.float32))
    # a non-finite update is not kept as the next step's evidence either
    chex.assert_tree_all_finite(new.previous_updates)


def test_secant_rule_finds_the_newton_step_of_a_one_dimensional_quadratic():
    # f = h x^2 / 2 and the update -eta * g: the best scale is 1 / (h * eta) = 5, and the
    # secant measures it exactly, so s reaches log(5) and x reaches the minimum 0.
    h, eta = 2.0, 0.1
    params = {"x": jnp.ones(1)}
    state = SA.init(params, rule="secant")
    x = params["x"]
    for _ in range(12):
        g = {"x": h * x}
        u, state = SA.adapt(state, g, {"x": -eta * g["x"]}, 1.0, 0.0, 4.6, rule="secant")
        x = x + u["x"]
    chex.assert_trees_all_close(state.log_scales["x"], jnp.float32(np.log(5.0)), atol=1e-4)
    assert abs(float(x[0])) < 1e-6


@pytest.mark.parametrize(
    "count, expected",
    [
        (0, np.log(20.0)),  # early: growth bounded as shrinking is, log 20 < SECANT_SHRINK
        (SS.SECANT_EARLY_STEPS - 1, np.log(20.0)),
        (SS.SECANT_EARLY_STEPS, SS.SECANT_GROWTH),  # past the window: the slow bound
        (None, SS.SECANT_GROWTH),  # without a count: always the slow bound
    ],
)
def test_secant_growth_is_fast_only_in_the_first_steps(count, expected):
    # f = h x^2 / 2, a first step 20 times too short (eta = 1 / (20 h)); at rate 1 and no
    # decay, s moves by the clipped log m of that step.
    h, eta = 2.0, 1.0 / 40.0
    params = {"x": jnp.ones(1)}
    state = SA.init(params, rule="secant")
    g = {"x": h * params["x"]}
    u, state = SA.adapt(state, g, {"x": -eta * g["x"]}, 1.0, 0.0, 4.6, rule="secant", count=count)
    g = {"x": h * (params["x"] + u["x"])}
    _, state = SA.adapt(state, g, {"x": -eta * g["x"]}, 1.0, 0.0, 4.6, rule="secant", count=count)
    chex.assert_trees_all_close(state.log_scales["x"], jnp.float32(expected), atol=1e-4)


@pytest.mark.parametrize(
    "second_count, limit, expected",
    [
        (SS.SECANT_LINE_SEARCH_COUNT, 4.6, np.log(50.0)),  # the whole log m, past SECANT_SHRINK
        (SS.SECANT_LINE_SEARCH_COUNT, 3.5, 3.5),  # bounded by the limit only
        (SS.SECANT_LINE_SEARCH_COUNT + 1, 4.6, 0.5 * SS.SECANT_SHRINK),  # rate 0.5, early bound
    ],
)
def test_secant_takes_the_first_evidence_whole(second_count, limit, expected):
    # f = h x^2 / 2 and a first step 50 times too short (eta = 1 / (50 h)), at rate 0.5 and
    # no decay: at the second update (count 1) s moves to the line minimum, log 50; at any
    # later update by rate * clip(log m).
    h, eta = 2.0, 1.0 / 100.0
    params = {"x": jnp.ones(1)}
    state = SA.init(params, rule="secant")
    g = {"x": h * params["x"]}
    first, state = SA.adapt(state, g, {"x": -eta * g["x"]}, 0.5, 0.0, limit, rule="secant", count=0)
    x = params["x"] + first["x"]
    g = {"x": h * x}
    second, state = SA.adapt(
        state, g, {"x": -eta * g["x"]}, 0.5, 0.0, limit, rule="secant", count=second_count
    )
    chex.assert_trees_all_close(state.log_scales["x"], jnp.float32(expected), atol=1e-4)
    if expected == np.log(50.0):
        # the scale is the line minimum's, so the second step lands on the quadratic's minimum
        chex.assert_trees_all_close(x + second["x"], jnp.zeros(1), atol=1e-5)


@pytest.mark.parametrize("rule", ["agreement", "secant"])
def test_shortening_decay_pulls_only_short_steps_back_faster(rule):
    # No evidence (the previous update is zero), so s only decays: by 0.01 above 0, by the
    # shortening decay 0.1 below it.
    params = {"long": jnp.zeros(2), "short": jnp.zeros(2)}
    state = SA.init(params, rule=rule)
    state = state._replace(log_scales={"long": jnp.float32(1.0), "short": jnp.float32(-1.0)})
    g = {"long": jnp.ones(2), "short": jnp.ones(2)}
    _, new = SA.adapt(state, g, g, 0.5, 0.01, 4.6, rule=rule, shortening_decay=0.1)
    chex.assert_trees_all_close(new.log_scales, {"long": 0.99, "short": -0.9})
    _, same = SA.adapt(state, g, g, 0.5, 0.01, 4.6, rule=rule)
    chex.assert_trees_all_close(same.log_scales, {"long": 0.99, "short": -0.99})


def test_secant_rule_lengthens_steps_faster_than_the_agreement_rule():
    lopt = optax_lopt.MLPLOpt(step_mult=0.01, step_adaptation=0.05)
    agreement, _ = _final_loss(lopt, steps=100)
    lopt = optax_lopt.MLPLOpt(step_mult=0.01, step_adaptation=0.5, adaptation_rule="secant")
    secant, state = _final_loss(lopt, steps=100)
    assert float(state.step_adaptation.log_scales["w"]) > 1.0
    # In 100 steps from a loss of about 1,000 it gets 100 times closer than agreement does.
    assert secant < 0.01 * agreement


def test_secant_state_keeps_the_slope_of_the_last_update():
    params = {"w": jnp.zeros(2)}
    state = SA.init(params, rule="secant")
    g = {"w": jnp.asarray([1.0, 2.0])}
    u = {"w": jnp.asarray([-1.0, jnp.nan])}
    _, state = SA.adapt(state, g, u, 0.5, 0.0, 4.6, rule="secant")
    # No evidence on the first step (s stays 0); the NaN entry is not kept, nor in the slope.
    chex.assert_trees_all_close(state.log_scales["w"], jnp.float32(0.0))
    chex.assert_trees_all_close(state.previous_slopes["w"], jnp.float32(-1.0))
    chex.assert_tree_all_finite(state.previous_updates)


def _noisy_quadratic_scales(steepening, noise, steps=300):
    """The secant rule's ``s`` per step on ``|x|^2 / 2`` with gradient noise, SGD(0.01) steps."""
    x = jnp.full(10, 10.0)
    state = SA.init({"w": x}, rule="secant")
    rng = np.random.default_rng(0)
    scales = []
    for t in range(steps):
        g = {"w": x + jnp.asarray(noise * rng.standard_normal(10), jnp.float32)}
        u = {"w": -0.01 * g["w"]}
        u, state = SA.adapt(
            state, g, u, 0.5, 0.01, 4.6, rule="secant", count=t, steepening=steepening
        )
        x = x + u["w"]
        scales.append(state.log_scales["w"])
    return jnp.stack(scales)


def test_steepening_counters_the_downward_drift_of_the_scale_under_noise():
    # Without noise every slope flattens along the step (positive curvature): nothing changes.
    chex.assert_trees_all_close(
        _noisy_quadratic_scales(0.69, 0.0), _noisy_quadratic_scales(0.0, 0.0)
    )
    # With noise, a slope difference that reads as negative curvature now lengthens the step
    # instead of being dropped, so the scale settles higher (1.59 against 1.48 here).
    plain = jnp.mean(_noisy_quadratic_scales(0.0, 1.0)[50:])
    steepened = jnp.mean(_noisy_quadratic_scales(0.69, 1.0)[50:])
    assert float(steepened) > float(plain) + 0.05


@pytest.mark.parametrize("rule", ["agreement", "secant"])
def test_mlp_lopt_adaptation_rules_keep_the_update_odd(rule):
    lopt = optax_lopt.MLPLOpt(antisymmetric=True, step_adaptation=0.3, adaptation_rule=rule)
    tx = lopt.transform(lopt.init(jax.random.key(1)))
    params = {"w": jnp.asarray([0.3, -1.0, 2.0])}
    s_pos, s_neg = tx.init(params), tx.init(params)
    for g in (jnp.asarray([1.0, -2.0, 0.5]), jnp.asarray([0.7, -1.5, 0.2]), jnp.ones(3)):
        u_pos, s_pos = tx.update({"w": g}, s_pos, params, value=1.0)
        u_neg, s_neg = tx.update({"w": -g}, s_neg, params, value=1.0)
        chex.assert_trees_all_close(u_pos, jax.tree.map(jnp.negative, u_neg), atol=1e-7)


@pytest.mark.parametrize(
    "config, field",
    [
        ({"adaptation_rule": "bold"}, "adaptation_rule"),
        ({"adaptation_rule": "secant", "adaptation_granularity": "coordinate"}, "adaptation_rule"),
        ({"loss_bound": 1.0}, "loss_bound"),
        ({"step_adaptation": 0.1, "loss_bound": -1.0}, "loss_bound"),
        ({"adaptation_shortening_decay": 0.1}, "adaptation_shortening_decay"),
        ({"step_adaptation": 0.1, "adaptation_steepening": 0.5}, "adaptation_steepening"),
        ({"adaptation_rule": "secant", "adaptation_steepening": 0.5}, "adaptation_steepening"),
        (
            {"step_adaptation": 0.1, "adaptation_rule": "secant", "adaptation_steepening": 0.0},
            "adaptation_steepening",
        ),
        (
            {"step_adaptation": 0.1, "adaptation_shortening_decay": 1.0},
            "adaptation_shortening_decay",
        ),
    ],
)
def test_bad_secant_and_bound_settings_name_the_field(config, field):
    with pytest.raises(ValueError, match=field):
        optax_lopt.MLPLOpt(**config)
