"""Tests for optax_lopt.tasks.synthetic_supervised: initial losses, data, training, checks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optax_lopt import evaluation, tasks


def _instance(fam, seed=0):
    task = fam.sample(jax.random.key(seed))
    return task, task.init(jax.random.key(seed + 1))


@pytest.mark.parametrize("num_classes", [2, 5])
def test_softmax_starts_at_log_classes_and_adam_trains_it(num_classes):
    fam = tasks.GaussianSoftmax(num_classes=num_classes, dim=8, num_points=128)
    task, params = _instance(fam)
    key = jax.random.key(2)
    assert float(task.loss(params, key)) == pytest.approx(math.log(num_classes), rel=1e-6)
    assert float(task.validation_loss(params, key)) == pytest.approx(
        math.log(num_classes), rel=1e-6
    )
    losses = evaluation.run_on_instances(optax.adam(0.1), fam, jax.random.split(key, 2), 200)
    assert float(jnp.max(losses[:, -1])) < 0.3 * math.log(num_classes)


def test_softmax_features_stay_within_the_spread_and_labels_are_balanced():
    fam = tasks.GaussianSoftmax(dim=32, num_classes=4, num_points=4000, feature_spread=3.0)
    data = fam.sample(jax.random.key(0)).data
    labels = np.asarray(data["labels"])
    np.testing.assert_array_equal(np.bincount(labels), [1000] * 4)
    # Within a class the noise is unit Gaussian times the feature's scale.
    x = np.asarray(data["inputs"])
    within = np.stack([x[labels == c].std(0) for c in range(4)]).mean(0)
    assert within.min() > 1 / 3.0 * 0.9 and within.max() < 3.0 * 1.1
    assert within.max() / within.min() > 2.0  # the scales do differ


def test_softmax_minibatches_follow_the_loss_key():
    fam = tasks.GaussianSoftmax(batch_size=8, num_points=64)
    task, params = _instance(fam)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(4), len(leaves))
    params = treedef.unflatten(
        [jax.random.normal(k, p.shape) for k, p in zip(keys, leaves, strict=True)]
    )
    one, again, other = (task.loss(params, jax.random.key(k)) for k in (5, 5, 6))
    assert float(one) == float(again) and float(one) != float(other)


def test_teacher_regression_starts_at_one_and_adam_fits_it():
    fam = tasks.TeacherRegression()
    task, params = _instance(fam)
    key = jax.random.key(3)
    # Standardised targets and a zero output layer: the initial loss is exactly 1.
    assert float(task.loss(params, key)) == pytest.approx(1.0, rel=1e-5)
    losses = evaluation.run_on_instances(optax.adam(1e-2), fam, jax.random.split(key, 2), 300)
    assert float(jnp.max(losses[:, -1])) < 0.05


def test_teacher_regression_instances_differ_in_their_teacher():
    fam = tasks.TeacherRegression()
    a, b = (fam.sample(jax.random.key(k)).data["targets"] for k in (0, 1))
    assert not np.allclose(np.asarray(a), np.asarray(b), atol=0.1)


@pytest.mark.parametrize(
    "build, field",
    [
        (lambda: tasks.GaussianSoftmax(feature_spread=0.5), "feature_spread"),
        (lambda: tasks.GaussianSoftmax(separation=0.0), "separation"),
        (lambda: tasks.GaussianSoftmax(batch_size=0), "batch_size"),
        (lambda: tasks.TeacherRegression(hidden=()), "hidden"),
        (lambda: tasks.TeacherRegression(noise=-1.0), "noise"),
    ],
)
def test_bad_arguments_name_the_field(build, field):
    with pytest.raises(ValueError, match=field):
        build()


def test_registered_by_name():
    assert tasks.family("gaussian_softmax", dim=4) == tasks.GaussianSoftmax(dim=4)
    assert tasks.family("teacher_regression", noise=0.0) == tasks.TeacherRegression(noise=0.0)
