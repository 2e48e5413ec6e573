"""Tests for optax_lopt.tasks: distributions, known optima, vmappability, masking."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optax_lopt import tasks


@functools.partial(jax.jit, static_argnums=(0, 1))
def _sample(fam, n, key):
    keys = jax.random.split(key, n)
    batch = jax.vmap(fam.sample)(keys)
    return batch, jax.vmap(lambda t, k: t.init(k))(batch, keys)


def _batch(fam, n=3, seed=0):
    return _sample(fam, n, jax.random.key(seed))


@pytest.mark.parametrize(
    "name", [n for n in tasks.family_names() if not n.startswith("digits")]
)  # the digits families have their own (slower) test below
def test_every_family_vmaps_and_is_seeded(name):
    fam = tasks.family(name)
    assert fam.num_steps == (100 if name == "quadratic" else 200)
    batch, params = _batch(fam)
    keys = jax.random.split(jax.random.key(1), 3)
    both = jax.jit(jax.vmap(lambda t, p, k: (t.loss(p, k), t.validation_loss(p, k))))
    loss, valid = both(batch, params, keys)
    chex.assert_shape([loss, valid], (3,))
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(valid))
    batch2, _ = _batch(fam)
    chex.assert_trees_all_close(batch.data, batch2.data)
    # Instances differ from one another.
    first = jax.tree.leaves(batch.data)[0]
    assert not np.allclose(first[0], first[1])


def test_linear_regression_distribution_and_optimum():
    fam = tasks.family("linear_regression")
    assert fam.dim == 5
    batch, params = _batch(fam, n=64)
    hessian = batch.data["hessian"]
    chex.assert_shape(hessian, (64, 5, 5))
    chex.assert_trees_all_close(hessian, jnp.swapaxes(hessian, 1, 2), atol=1e-6)
    eig = np.linalg.eigvalsh(np.asarray(hessian, np.float64))
    assert eig.min() >= 1e-3 * 0.99 and eig.max() <= 1.0 * 1.01
    # log-uniform: about half the eigenvalues below the geometric midpoint sqrt(1e-3).
    assert 0.35 < np.mean(eig < np.sqrt(1e-3)) < 0.65
    task = jax.tree.map(lambda x: x[0], batch)
    key = jax.random.key(0)
    assert float(task.loss(task.data["x_star"], key)) == pytest.approx(0.0, abs=1e-10)
    chex.assert_trees_all_close(jax.hessian(task.loss)(params[0], key), hessian[0], atol=1e-5)
    chex.assert_trees_all_close(params[0], task.data["x0"])


def test_rosenbrock_known_values_and_start_box():
    fam = tasks.Rosenbrock()
    task = fam.sample(jax.random.key(0))
    key = jax.random.key(0)
    assert float(task.loss(jnp.array([1.0, 1.0]), key)) == 0.0
    assert float(task.loss(jnp.array([0.0, 0.0]), key)) == 1.0
    assert float(task.loss(jnp.array([-1.0, 1.0]), key)) == 4.0
    _, starts = _batch(fam, n=2000)
    starts = np.asarray(starts)
    assert starts[:, 0].min() >= -2 and starts[:, 0].max() <= 2
    assert starts[:, 1].min() >= -1 and starts[:, 1].max() <= 3
    np.testing.assert_allclose(starts.mean(0), [0.0, 1.0], atol=0.1)


def test_quadratic_optimum_and_unbiased_noise():
    fam = tasks.Quadratic(noise_scale=1.0)
    task = fam.sample(jax.random.key(0))
    c = task.data["center"]
    x = task.init(jax.random.key(1))
    chex.assert_shape(x, (10,))
    a = task.data["curvature"]
    assert np.all((a >= 1e-2 * 0.999) & (a <= 1.0))
    keys = jax.random.split(jax.random.key(2), 20000)
    grads = jax.vmap(jax.grad(task.loss), (None, 0))(x, keys)
    chex.assert_trees_all_close(jnp.mean(grads, 0), a * (x - c), atol=0.05)
    noiseless = tasks.Quadratic().sample(jax.random.key(0))
    assert float(noiseless.loss(c, keys[0])) == 0.0


def test_two_moons_data_and_loss_definition():
    fam = tasks.family("two_moons")
    task = fam.sample(jax.random.key(0))
    x, y = task.data["inputs"], task.data["labels"]
    chex.assert_shape(x, (1024, 2))
    assert float(jnp.mean(y)) == 0.5
    # Points lie within noise of the two unit half circles.
    outer = jnp.abs(jnp.linalg.norm(x[y == 0], axis=1) - 1.0)
    inner = jnp.abs(jnp.linalg.norm(x[y == 1] - jnp.array([1.0, 0.5]), axis=1) - 1.0)
    assert float(jnp.mean(outer)) < 0.15 and float(jnp.mean(inner)) < 0.15
    other = fam.sample(jax.random.key(1))
    assert not np.allclose(x, other.data["inputs"])
    params = _init(task, jax.random.key(3))
    shapes = jax.tree.map(jnp.shape, params)
    assert shapes["Dense_0"]["kernel"] == (2, 32)
    assert shapes["Dense_1"]["kernel"] == (32, 32)
    assert shapes["Dense_2"]["kernel"] == (32, 1)
    h = jnp.tanh(x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
    h = jnp.tanh(h @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"])
    logits = (h @ params["Dense_2"]["kernel"] + params["Dense_2"]["bias"])[:, 0]
    norm = jnp.sqrt(sum(jnp.sum(p**2) for p in jax.tree.leaves(params)))
    expected = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, y)) + 5e-3 * norm
    np.testing.assert_allclose(task.loss(params, jax.random.key(0)), expected, rtol=1e-5)


@jax.jit
def _init(task, key):
    return task.init(key)


def _train(task, steps, lr):
    return _train_jit(task, steps, lr)


@jax.jit(static_argnums=(1, 2))
def _train_jit(task, steps, lr):
    params = task.init(jax.random.key(0))
    tx = optax.adam(lr)
    opt_state = tx.init(params)

    def step(carry, k):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(task.loss)(params, k)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    (params, _), losses = jax.lax.scan(
        step, (params, opt_state), jax.random.split(jax.random.key(1), steps)
    )
    return params, losses


def test_two_moons_trains():
    task = tasks.family("two_moons").sample(jax.random.key(0))
    params, losses = _train(task, 200, 0.03)
    assert float(losses[0]) > 0.5
    assert float(jax.jit(task.validation_loss)(params, jax.random.key(0))) < 0.25


@pytest.mark.parametrize("name", ["digits_mlp", "digits_conv"])
def test_digits_masking_and_training(name):
    assert tasks.family(name).num_steps == 200
    fam = tasks.family(name, num_steps=20, batch_sizes=(16, 32))
    batch, _ = _batch(fam, n=32)
    chex.assert_trees_all_close(batch.data, _batch(fam, n=32)[0].data)
    sizes = np.asarray(batch.data["batch_size"])
    assert set(sizes) <= {16, 32} and len(set(sizes)) > 1
    widths = np.asarray(batch.data["masks"][0].sum(-1)).astype(int)
    choices = {16, 32, 64} if name == "digits_mlp" else {8, 16, 32}
    assert set(widths) <= choices and len(set(widths)) > 1
    # Pick a task whose first layer is narrower than the maximum.
    index = int(np.argmin(widths))
    task = jax.tree.map(lambda x: x[index], batch)
    params = _init(task, jax.random.key(0))
    grads = jax.jit(jax.grad(task.loss))(params, jax.random.key(1))
    kernel_grad = grads["Dense_0" if name == "digits_mlp" else "_Conv3x3_0"]["kernel"]
    assert np.all(np.asarray(kernel_grad)[..., widths[index] :] == 0.0)
    assert np.any(np.asarray(kernel_grad)[..., : widths[index]] != 0.0)
    # The validation loss uses the fixed split and ignores its key.
    valid = jax.jit(task.validation_loss)
    v1 = valid(params, jax.random.key(0))
    assert float(v1) == float(valid(params, jax.random.key(5)))
    params, losses = _train(task, 30, 0.02)
    assert float(valid(params, jax.random.key(0))) < 0.8 * float(v1)


def test_reparameterized_same_function_scaled_gradients():
    base = tasks.Quadratic()
    fam = tasks.reparameterize(base, (0.1, 10.0))
    assert fam.num_steps == base.num_steps
    task = fam.sample(jax.random.key(0))
    s = task.data["scales"]
    assert 0.1 <= float(s) <= 10.0
    base_task = tasks.Task(base, task.data["base"])
    key = jax.random.key(1)
    p = task.init(key)
    chex.assert_trees_all_close(p * s, base_task.init(key), rtol=1e-6)
    np.testing.assert_allclose(task.loss(p, key), base_task.loss(p * s, key), rtol=1e-6)
    chex.assert_trees_all_close(
        jax.grad(task.loss)(p, key), s * jax.grad(base_task.loss)(p * s, key), rtol=1e-5
    )
    moons = tasks.family("two_moons", reparameterize=True, num_points=64)
    batch, params = _batch(moons, n=2)
    scales = jax.tree.leaves(batch.data["scales"])
    assert len(scales) == 6 and all(x.shape == (2,) for x in scales)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="name"):
        tasks.family("mnist")
    with pytest.raises(ValueError, match="kwargs"):
        tasks.family("quadratic", width=3)
    with pytest.raises(ValueError, match="dim"):
        tasks.Quadratic(dim=0)
    with pytest.raises(ValueError, match="eigenvalue_range"):
        tasks.LinearRegression(eigenvalue_range=(1.0, 0.1))
    with pytest.raises(ValueError, match="batch_sizes"):
        tasks.DigitsMLP(batch_sizes=())
    with pytest.raises(ValueError, match="base"):
        tasks.Reparameterized("quadratic")


FAMILY_INT_FIELDS = [
    (tasks.LinearRegression, "dim"),
    (tasks.Quadratic, "dim"),
    (tasks.Rosenbrock, "num_steps"),
    (tasks.TwoMoons, "num_points"),
    (tasks.DigitsMLP, "num_layers"),
    (tasks.DigitsConv, "num_steps"),
]


@pytest.mark.parametrize("cls, field", FAMILY_INT_FIELDS)
def test_numpy_integers_are_accepted_and_stored_as_int(cls, field):
    fam = cls(**{field: np.int64(5)})
    value = getattr(fam, field)
    assert value == 5 and type(value) is int
    assert fam == cls(**{field: 5}) and hash(fam) == hash(cls(**{field: 5}))
    assert repr(fam) == repr(cls(**{field: 5}))  # The tuning cache keys on the repr.


@pytest.mark.parametrize("cls, field", FAMILY_INT_FIELDS)
@pytest.mark.parametrize("bad", [True, "10", 2.0, 0, None])
def test_int_fields_refuse_bools_strings_floats(cls, field, bad):
    with pytest.raises(ValueError, match=rf"^{field}: expected a positive integer, got {bad!r}"):
        cls(**{field: bad})


def test_family_by_name_checks_values_the_same_way():
    assert tasks.family("quadratic", dim=np.int32(3)).dim == 3
    with pytest.raises(ValueError, match=r"^num_steps: expected a positive integer, got '10'"):
        tasks.family("rosenbrock", num_steps="10")
    with pytest.raises(ValueError, match=r"^dim: expected a positive integer, got True"):
        tasks.family("linear_regression", dim=True)
    with pytest.raises(ValueError, match=r"^name: expected one of 'digits_conv', .*got 'mnist'"):
        tasks.family("mnist")


def test_ranges_and_choices_accept_numpy_numbers_and_lists():
    fam = tasks.Quadratic(curvature_range=[np.float32(0.5), np.int64(2)], noise_scale=np.int8(1))
    assert fam.curvature_range == (0.5, 2.0) and type(fam.curvature_range[1]) is float
    assert fam.noise_scale == 1.0 and type(fam.noise_scale) is float
    hash(fam)  # Lists are stored as tuples, so the family stays hashable.
    moons = tasks.TwoMoons(hidden_sizes=[np.int64(8)], l2=np.float64(0.0))
    assert moons.hidden_sizes == (8,) and type(moons.hidden_sizes[0]) is int
    fam = tasks.family("quadratic", reparameterize=[np.float32(0.5), 2])
    assert fam.scale_range == (0.5, 2.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"curvature_range": (1.0, float("inf"))}, r"^curvature_range: expected a pair"),
        ({"curvature_range": (True, 2.0)}, r"^curvature_range: expected a pair"),
        ({"curvature_range": ("0.1", 1.0)}, r"^curvature_range: expected a pair"),
        ({"curvature_range": (1.0,)}, r"^curvature_range: expected a pair"),
        ({"noise_scale": -1.0}, r"^noise_scale: expected a finite non-negative number"),
        ({"noise_scale": "0"}, r"^noise_scale: expected a finite non-negative number"),
    ],
)
def test_quadratic_refuses_bad_ranges_and_noise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tasks.Quadratic(**kwargs)


def test_choices_refuse_bools_and_strings():
    with pytest.raises(ValueError, match=r"^hidden_sizes\[0\]: expected a positive integer"):
        tasks.TwoMoons(hidden_sizes=(True, 4))
    with pytest.raises(ValueError, match=r"^widths: expected a non-empty tuple of positive"):
        tasks.DigitsMLP(widths="16")
    with pytest.raises(ValueError, match=r"^reparameterize: expected True, False or a pair"):
        tasks.family("quadratic", reparameterize=1.0)
