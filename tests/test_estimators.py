"""Tests for the gradient estimators against known answers."""

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_lopt
from optax_lopt import meta, tasks
from optax_lopt.meta import _common

LOPT = optax_lopt.LearnableSGDM(learning_rate=0.1, momentum=0.5)
THETA = LOPT.init(jax.random.key(0))
CURVATURE = (1.0, 0.1)


@dataclasses.dataclass(frozen=True)
class _FixedQuadratic(tasks.TaskFamily):
    """One deterministic 2-d quadratic: every 'instance' is the same task."""

    num_steps: int = 12

    def sample_data(self, key):
        del key
        return {"x0": jnp.array([1.0, -2.0])}

    def init_params(self, data, key):
        del key
        return data["x0"]

    def loss_fn(self, data, params, key):
        del data, key
        return 0.5 * jnp.sum(jnp.asarray(CURVATURE) * params**2)


FIXED = _FixedQuadratic()


def _exact_meta_loss(theta, horizon):
    """mean_t f(x_t) / f(x_0) of SGD with momentum on the fixed quadratic, by hand."""
    lr = jnp.exp(theta["log_learning_rate"])
    beta = jax.nn.sigmoid(theta["momentum_logit"])
    loss = functools.partial(FIXED.loss_fn, None, key=None)
    x = jnp.array([1.0, -2.0])
    m = jnp.zeros(2)
    f0 = loss(x)
    total = 0.0
    for _ in range(horizon):
        f, g = jax.value_and_grad(loss)(x)
        total = total + f / f0
        m = beta * m + g
        x = x - lr * m
    return total / horizon


def _smoothed_gradient(theta, horizon, sigma, num=4096):
    noise = _common.sample_noise(theta, jax.random.key(99), num, sigma)
    thetas = jax.tree.map(lambda t, e: t + e, theta, noise)
    grads = jax.vmap(jax.grad(_exact_meta_loss), (0, None))(thetas, horizon)
    return jax.tree.map(lambda g: jnp.mean(g, 0), grads)


def _vec(tree):
    return np.array([tree["log_learning_rate"], tree["momentum_logit"]], np.float64)


def _rel_err(estimate, truth):
    return np.linalg.norm(_vec(estimate) - _vec(truth)) / np.linalg.norm(_vec(truth))


def test_full_bptt_is_the_exact_gradient():
    est = meta.FullBPTT(LOPT, FIXED, num_tasks=2, horizon=12)
    grad, state, metrics = jax.jit(est.meta_gradient)(
        THETA, est.init(THETA, jax.random.key(0)), jax.random.key(1)
    )
    exact = jax.grad(_exact_meta_loss)(THETA, 12)
    chex.assert_trees_all_close(grad, exact, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(metrics["meta_loss"], _exact_meta_loss(THETA, 12), rtol=1e-5)
    assert int(state.iteration) == 1
    # Rematerialisation changes memory, not the answer.
    plain = meta.FullBPTT(LOPT, FIXED, num_tasks=2, horizon=12, remat=False)
    grad_plain, _, _ = jax.jit(plain.meta_gradient)(THETA, state, jax.random.key(1))
    chex.assert_trees_all_close(grad_plain, grad, rtol=1e-6)


def test_truncated_bptt_with_whole_truncation_matches_full():
    est = meta.TruncatedBPTT(LOPT, FIXED, num_tasks=2, truncation_length=12, horizon=12)
    state = est.init(THETA, jax.random.key(0))
    state = state._replace(step=jnp.zeros_like(state.step))
    grad, _, _ = jax.jit(est.meta_gradient)(THETA, state, jax.random.key(1))
    chex.assert_trees_all_close(grad, jax.grad(_exact_meta_loss)(THETA, 12), rtol=1e-4)


def test_es_approaches_smoothed_gradient_as_samples_grow():
    sigma = 0.1
    truth = _smoothed_gradient(THETA, 12, sigma)
    errors = {}
    for n in (8, 2048):
        est = meta.ES(LOPT, FIXED, num_tasks=n, horizon=12, sigma=sigma)
        run = jax.jit(est.meta_gradient)
        state = est.init(THETA, jax.random.key(0))
        errors[n] = np.mean(
            [_rel_err(run(THETA, state, jax.random.key(k))[0], truth) for k in range(4)]
        )
    assert errors[2048] < 0.1
    assert errors[2048] < errors[8] / 4


def _average_gradient(est, num_calls, warmup):
    state = est.init(THETA, jax.random.key(0))

    @jax.jit
    def run(state, key):
        def body(carry, k):
            state, total = carry
            grad, state, _ = est.meta_gradient(THETA, state, k)
            return (state, jax.tree.map(jnp.add, total, grad)), None

        zero = jax.tree.map(jnp.zeros_like, THETA)
        (state, total), _ = jax.lax.scan(body, (state, zero), jax.random.split(key, num_calls))
        return state, total

    state, _ = run(state, jax.random.key(1)) if warmup else (state, None)
    _, total = run(state, jax.random.key(2))
    return jax.tree.map(lambda t: t / num_calls, total)


def test_pes_unbiased_where_truncated_es_is_biased():
    # Horizon 12, truncations of 3 with staggered starts: resets fall inside truncations.
    sigma = 0.01
    truth = _smoothed_gradient(THETA, 12, sigma)
    kwargs = dict(num_tasks=256, truncation_length=3, horizon=12, sigma=sigma)
    pes = _average_gradient(meta.PES(LOPT, FIXED, **kwargs), num_calls=40, warmup=True)
    tes = _average_gradient(meta.TruncatedES(LOPT, FIXED, **kwargs), num_calls=40, warmup=True)
    assert _rel_err(pes, truth) < 0.15, (pes, truth)
    assert _rel_err(tes, truth) > 0.3, (tes, truth)


def test_pes_accumulator_resets_with_its_task():
    est = meta.PES(LOPT, FIXED, num_tasks=16, truncation_length=3, horizon=4, sigma=0.01)
    run = jax.jit(est.meta_gradient)
    state = est.init(THETA, jax.random.key(0))
    seen = set()
    for k in range(4):
        key = jax.random.key(10 + k)
        noise = _common.sample_noise(THETA, jax.random.split(key)[0], 16, 0.01)
        step_before = np.asarray(state.runs.step)
        _, new_state, _ = run(THETA, state, key)
        for i in range(16):
            steps_left = 4 - step_before[i]
            for name in THETA:
                old = state.accumulator[name][i]
                new = new_state.accumulator[name][i]
                eps = noise[name][i]
                if steps_left > 3:
                    np.testing.assert_allclose(new, old + eps, rtol=1e-6)
                    seen.add("carry")
                elif steps_left == 3:
                    np.testing.assert_allclose(new, 0.0)
                    seen.add("reset at last step")
                else:
                    np.testing.assert_allclose(new, eps, rtol=1e-6)
                    seen.add("reset inside")
        state = new_state
    assert seen == {"carry", "reset at last step", "reset inside"}


@pytest.mark.parametrize(
    "learning_rate, num_tasks, truncation, bound",
    [
        # Smooth inner dynamics: backpropagation is ~10x less noisy than ES; weights estimated
        # from finitely many tasks cost the hybrid a few percent over the better part.
        (0.1, 128, 5, 1.1),
        # Near the edge of stability: both parts are noisy, and the hybrid beats both.
        (2.9, 32, 20, 0.9),
    ],
)
def test_hybrid_variance_no_worse_than_better_part(learning_rate, num_tasks, truncation, bound):
    lopt = optax_lopt.LearnableSGDM(learning_rate=learning_rate, momentum=0.5)
    theta = lopt.init(jax.random.key(0))
    family = tasks.Quadratic(dim=4, curvature_range=(0.5, 1.0), num_steps=40)
    est = meta.Hybrid(lopt, family, num_tasks=num_tasks, truncation_length=truncation, sigma=0.05)

    def parts(key):
        # Fresh tasks and inner states each time: the variance includes task sampling.
        k_init, k_grad = jax.random.split(key)
        return est.gradient_components(theta, est.init(theta, k_init), k_grad)[0]

    keys = jax.random.split(jax.random.key(0), 256)
    samples = jax.jit(lambda keys: jax.lax.map(parts, keys))(keys)
    variances = {
        name: np.var(_vec(samples[name]).T, axis=0, ddof=1)
        for name in ("reparameterization", "es", "hybrid")
    }
    better = np.minimum(variances["reparameterization"], variances["es"])
    assert np.all(variances["hybrid"] <= bound * better), variances


@pytest.mark.parametrize("name", ["full_bptt", "truncated_bptt", "es", "truncated_es", "pes"])
def test_divergent_inner_runs_give_finite_gradients(name):
    family = tasks.Quadratic(dim=4, curvature_range=(1.0, 1.0), num_steps=20)
    kwargs = {"truncation_length": 10} if "truncation_length" in meta.estimator_fields(name) else {}
    est = meta.estimator(name, LOPT, family, num_tasks=4, **kwargs)
    theta = {**THETA, "log_learning_rate": jnp.asarray(jnp.log(1e4), jnp.float32)}
    grad, state, metrics = jax.jit(est.meta_gradient)(
        theta, est.init(theta, jax.random.key(0)), jax.random.key(1)
    )
    assert float(metrics["nonfinite_fraction"]) > 0
    for leaf in jax.tree.leaves((grad, state, metrics)):
        assert np.all(np.isfinite(leaf))


@pytest.mark.parametrize("name", meta.estimator_names())
def test_every_estimator_contract(name):
    family = tasks.Quadratic(dim=3, num_steps=8)
    kwargs = {"truncation_length": 4} if "truncation_length" in meta.estimator_fields(name) else {}
    est = meta.estimator(name, LOPT, family, num_tasks=4, **kwargs)
    assert isinstance(est, meta.GradientEstimator)
    state = est.init(THETA, jax.random.key(0))
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(theta, state, key):
        return est.meta_gradient(theta, state, key)

    for k in range(3):
        grad, state, metrics = step(THETA, state, jax.random.key(k))
    chex.assert_trees_all_equal_shapes_and_dtypes(grad, THETA)
    assert metrics["meta_loss"].shape == ()
    assert 0.0 < float(metrics["meta_loss"]) < 2.0
    # Same key, same answer.
    again = step(THETA, est.init(THETA, jax.random.key(0)), jax.random.key(0))[0]
    first = step(THETA, est.init(THETA, jax.random.key(0)), jax.random.key(0))[0]
    chex.assert_trees_all_equal(again, first)


def test_mlp_lopt_pes():
    lopt = optax_lopt.MLPLOpt()
    theta = lopt.init(jax.random.key(0))
    est = meta.PES(lopt, tasks.Quadratic(num_steps=20), num_tasks=2, truncation_length=5)

    @jax.jit
    def run(key):
        return est.meta_gradient(theta, est.init(theta, key), jax.random.fold_in(key, 1))

    grad, _, metrics = run(jax.random.key(0))
    chex.assert_trees_all_equal_shapes(grad, theta)
    assert np.isfinite(float(metrics["meta_loss"]))
    assert any(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(grad))


def test_bad_arguments_are_named():
    family = tasks.Quadratic()
    with pytest.raises(ValueError, match="name"):
        meta.estimator("reinforce", LOPT, family)
    with pytest.raises(ValueError, match="kwargs"):
        meta.estimator("full_bptt", LOPT, family, truncation_length=5)
    with pytest.raises(ValueError, match="sigma"):
        meta.PES(LOPT, family, sigma=-1.0)
    with pytest.raises(ValueError, match="num_tasks"):
        meta.TruncatedES(LOPT, family, num_tasks=0)
    with pytest.raises(ValueError, match="num_tasks"):
        meta.Hybrid(LOPT, family, num_tasks=1)
    with pytest.raises(ValueError, match="meta_loss"):
        meta.PES(LOPT, family, meta_loss="best")
    with pytest.raises(ValueError, match="lopt"):
        meta.PES("adam", family)
    with pytest.raises(ValueError, match="family"):
        meta.PES(LOPT, "quadratic")


def test_estimator_fields_are_declared_once_and_queried():
    for name in meta.estimator_names():
        fields = meta.estimator_fields(name)
        assert {"num_tasks", "horizon", "meta_loss", "loss_clip"} <= set(fields), name
    assert "truncation_length" not in meta.estimator_fields("full_bptt")
    assert "truncation_length" not in meta.estimator_fields("es")
    assert "sigma" not in meta.estimator_fields("truncated_bptt")
    for name in ("pes", "truncated_es", "hybrid"):
        assert {"truncation_length", "sigma"} <= set(meta.estimator_fields(name)), name
    with pytest.raises(ValueError, match="pes"):
        meta.estimator_fields("pesx")


def test_numpy_integers_are_accepted_like_the_trainer_accepts_them():
    family = tasks.Quadratic()
    est = meta.PES(LOPT, family, num_tasks=np.int64(4), truncation_length=np.int32(5))
    assert est.num_tasks == 4 and type(est.num_tasks) is int
    assert type(est.truncation_length) is int
    assert est == meta.PES(LOPT, family, num_tasks=4, truncation_length=5)
    with pytest.raises(ValueError, match="num_tasks"):
        meta.PES(LOPT, family, num_tasks=True)
