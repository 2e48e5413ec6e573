"""Tests for optax_lopt.tasks.unseen: known optima, spectra, initial losses, disjointness."""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optax_lopt import evaluation, tasks
from optax_lopt.tasks import unseen


def _sample(fam, n, key):
    keys = jax.random.split(key, n)
    batch = jax.vmap(fam.sample)(keys)
    return batch, jax.vmap(lambda t, k: t.init(k))(batch, keys)


@functools.partial(jax.jit, static_argnums=0)
def _initial_losses(fam, key):
    """One instance's data and its training and validation losses at the initial params."""
    k_task, k_init, k_loss = jax.random.split(key, 3)
    task = fam.sample(k_task)
    params = task.init(k_init)
    return task.data, task.loss(params, k_loss), task.validation_loss(params, k_loss)


def _first(tree):
    return jax.tree.map(lambda x: x[0], tree)


@pytest.mark.parametrize("condition", [1e2, 1e4])
def test_quadratic_spectrum_spans_the_condition_number_and_optimum_is_zero(condition):
    fam = tasks.IllConditionedQuadratic(dim=100, condition=condition)
    batch, params = _sample(fam, 2, jax.random.key(0))
    task, x0 = _first(batch), params[0]
    eig = np.linalg.eigvalsh(np.asarray(task.data["hessian"], np.float64))
    assert eig.max() == pytest.approx(1.0, rel=1e-4)
    assert eig.max() / eig.min() == pytest.approx(condition, rel=2e-2)
    np.testing.assert_allclose(np.sort(eig), np.logspace(-math.log10(condition), 0, 100), rtol=2e-2)
    key = jax.random.key(1)
    assert float(task.loss(task.data["x_star"], key)) == pytest.approx(0.0, abs=1e-8)
    assert float(task.loss(x0, key)) > 0.1
    chex.assert_trees_all_close(jax.hessian(task.loss)(x0, key), task.data["hessian"], atol=1e-5)
    chex.assert_trees_all_close(x0, task.data["x0"])
    # Instances differ in their eigenbasis, not in their spectrum.
    assert not np.allclose(batch.data["hessian"][0], batch.data["hessian"][1], atol=1e-3)


@pytest.mark.parametrize("dim", [2, 10, 30])
def test_chained_rosenbrock_is_zero_at_ones_and_positive_elsewhere(dim):
    fam = tasks.ChainedRosenbrock(dim=dim)
    task = fam.sample(jax.random.key(0))
    key = jax.random.key(1)
    assert float(task.loss(jnp.ones(dim), key)) == 0.0
    chex.assert_trees_all_close(jax.grad(task.loss)(jnp.ones(dim), key), jnp.zeros(dim))
    assert float(task.loss(jnp.zeros(dim), key)) == pytest.approx(dim - 1.0)  # (1 - 0)^2 per term
    points = jax.random.uniform(jax.random.key(2), (64, dim), minval=-2.0, maxval=2.0)
    assert np.all(np.asarray(jax.vmap(lambda p: task.loss(p, key))(points)) > 0)
    x0 = task.init(key)
    assert np.all(np.abs(np.asarray(x0)) <= 2.0) and not np.allclose(x0, x0[0])
    if dim == 2:  # the chained form of two coordinates is the paper's Rosenbrock function
        plain = tasks.Rosenbrock().sample(jax.random.key(0))
        assert float(task.loss(x0, key)) == pytest.approx(float(plain.loss(x0, key)), rel=1e-6)


@pytest.mark.parametrize("dataset", sorted(unseen.CLASSIFICATION_DATASETS))
def test_classifier_starts_at_log_num_classes(dataset):
    fam = tasks.BundledClassifier(dataset, hidden=(8,), batch_size=16)
    data, loss, valid = _initial_losses(fam, jax.random.key(0))
    assert float(loss) == pytest.approx(math.log(fam.num_classes), rel=1e-6)
    assert float(valid) == pytest.approx(math.log(fam.num_classes), rel=1e-6)
    # Bootstrap resamples: same seed same draw, another seed another draw.
    chex.assert_trees_all_equal(data, _initial_losses(fam, jax.random.key(0))[0])
    assert not np.array_equal(data["index"], _initial_losses(fam, jax.random.key(1))[0]["index"])


def test_bundled_split_is_standardised_and_held_out():
    train_x, train_y, valid_x, valid_y = tasks.bundled_split("breast_cancer")
    chex.assert_shape([train_x, valid_x], [(455, 30), (114, 30)])
    chex.assert_shape([train_y, valid_y], [(455,), (114,)])
    np.testing.assert_allclose(train_x.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(train_x.std(0), 1.0, rtol=1e-4)
    assert set(np.unique(train_y)) == {0, 1}
    digits_x = tasks.bundled_split("digits")[0]
    stds = digits_x.std(0)
    assert np.all((np.abs(stds - 1.0) < 1e-4) | (stds < 1e-6))  # constant border pixels
    train_x, train_y, _, _ = tasks.bundled_split("diabetes")
    assert train_y.dtype == np.float32
    assert train_y.mean() == pytest.approx(0.0, abs=1e-5)
    assert train_y.std() == pytest.approx(1.0, rel=1e-4)


def test_regressor_and_autoencoder_start_from_a_zero_prediction():
    fam = tasks.BundledRegressor("diabetes", hidden=(16,))
    data, loss, _ = _initial_losses(fam, jax.random.key(0))
    _, train_y, _, _ = tasks.bundled_split("diabetes")
    expected = float(np.mean(np.square(train_y[np.asarray(data["index"])])))
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert 0.7 < expected < 1.3
    fam = tasks.DigitsAutoencoder(hidden=(16,), code_size=4, batch_size=None)
    data, loss, _ = _initial_losses(fam, jax.random.key(0))
    pixels = fam._split[0][np.asarray(data["index"])]
    assert float(loss) == pytest.approx(float(np.mean(np.square(pixels))), rel=1e-5)
    chex.assert_shape(pixels, (1438, 64))  # 1797 images, 359 held out


SMALL = {
    "classifier_linear": tasks.BundledClassifier("wine"),
    "classifier_mlp": tasks.BundledClassifier("breast_cancer", hidden=(16, 16), batch_size=32),
    "regressor": tasks.BundledRegressor("diabetes", hidden=(16,)),
    "autoencoder": tasks.DigitsAutoencoder(hidden=(16,), code_size=4, batch_size=32),
    "quadratic": tasks.IllConditionedQuadratic(dim=20, condition=1e3),
    "rosenbrock": tasks.ChainedRosenbrock(dim=5),
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_a_few_adam_steps_lower_every_family_loss(name):
    fam = SMALL[name]
    keys = jax.random.split(jax.random.key(0), 2)
    losses = jax.jit(lambda k: evaluation.run_on_instances(optax.adam(1e-2), fam, k, 40))(keys)
    losses = np.asarray(losses)
    assert np.all(np.isfinite(losses))
    assert np.all(losses[:, -5:].mean(1) < 0.9 * losses[:, 0]), losses[:, [0, -1]]


@pytest.mark.slow
def test_a_few_adam_steps_lower_every_suite_problem():
    for name, fam in tasks.unseen_suite().items():
        keys = jax.random.split(jax.random.key(0), 2)
        losses = jax.jit(lambda k, f=fam: evaluation.run_on_instances(optax.adam(1e-2), f, k, 40))
        losses = np.asarray(losses(keys))
        assert np.all(losses[:, -5:].mean(1) < 0.9 * losses[:, 0]), (name, losses[:, [0, -1]])


@pytest.mark.parametrize(
    "make, argument",
    [
        (lambda: tasks.BundledClassifier("mnist"), "dataset"),
        (lambda: tasks.BundledClassifier("diabetes"), "dataset"),
        (lambda: tasks.BundledRegressor("iris"), "dataset"),
        (lambda: tasks.BundledClassifier("wine", hidden=(0,)), "hidden"),
        (lambda: tasks.BundledClassifier("wine", hidden=16), "hidden"),
        (lambda: tasks.BundledClassifier("wine", batch_size=0), "batch_size"),
        (lambda: tasks.BundledRegressor(num_steps=-1), "num_steps"),
        (lambda: tasks.DigitsAutoencoder(code_size=0), "code_size"),
        (lambda: tasks.IllConditionedQuadratic(condition=0.5), "condition"),
        (lambda: tasks.IllConditionedQuadratic(dim=2.5), "dim"),
        (lambda: tasks.ChainedRosenbrock(dim=1), "dim"),
        (lambda: tasks.family("sklearn_classifier", dataset="cifar"), "dataset"),
        (lambda: tasks.bundled_split("mnist"), "dataset"),
    ],
)
def test_bad_arguments_name_the_argument(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()


def test_checked_values_are_normalised():
    fam = tasks.BundledClassifier("wine", hidden=[np.int64(8)], batch_size=np.int64(4))
    assert fam.hidden == (8,) and type(fam.batch_size) is int
    assert fam == tasks.BundledClassifier("wine", hidden=(8,), batch_size=4)
    assert tasks.BundledClassifier("wine", hidden=[]).hidden == ()
    assert tasks.family("rosenbrock_chained", dim=np.int64(3)) == tasks.ChainedRosenbrock(3)
    registered = {
        "sklearn_classifier": tasks.BundledClassifier,
        "sklearn_regressor": tasks.BundledRegressor,
        "digits_mlp_autoencoder": tasks.DigitsAutoencoder,
        "ill_conditioned_quadratic": tasks.IllConditionedQuadratic,
        "rosenbrock_chained": tasks.ChainedRosenbrock,
    }
    for name, cls in registered.items():
        assert type(tasks.family(name)) is cls


def _base_family(fam):
    return fam.base if isinstance(fam, tasks.Reparameterized) else fam


def test_unseen_suite_is_disjoint_from_the_general_mixes():
    # GENERAL_WIDE_MIX is the training mix of the shipped general and holds GENERAL_MIX, so
    # checking it checks both.
    mix_components = tasks.GENERAL_WIDE_MIX
    assert set(tasks.GENERAL_MIX) < set(mix_components)
    suite = tasks.unseen_suite()
    assert len(suite) >= 12
    mix = [c.build() for c in mix_components]
    mix_names = {c.name for c in mix_components} | {c.family for c in mix_components}
    assert not set(suite) & mix_names
    mix_types = {type(_base_family(f)) for f in mix}
    suite_types = {type(f) for f in suite.values()}
    assert not suite_types & mix_types, suite_types & mix_types
    assert {tasks.BundledClassifier, tasks.DigitsConv, tasks.ChainedRosenbrock} <= suite_types
    assert all(f.num_steps == 1000 for f in suite.values())
