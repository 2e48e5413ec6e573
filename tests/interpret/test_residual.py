"""interpret.unexplained names the behaviour a distilled chain misses (known answers)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import interpret


def rprop_like(learning_rate: float) -> optax.GradientTransformation:
    """Step ``-lr * sign(g) * run`` where ``run`` counts the steps the sign has held (<= 10)."""

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return (zeros, zeros)

    def update(updates, state, params=None):
        del params
        previous, run = state
        sign = jax.tree.map(jnp.sign, updates)
        run = jax.tree.map(
            lambda s, p, r: jnp.where(s == p, jnp.minimum(r + 1, 10), 1.0), sign, previous, run
        )
        steps = jax.tree.map(lambda s, r: -learning_rate * s * r, sign, run)
        return steps, (sign, run)

    return optax.GradientTransformation(init, update)


def magnitude_step(learning_rate: float, threshold: float) -> optax.GradientTransformation:
    """Sign descent whose step triples for gradients above ``threshold``."""

    def update(updates, state, params=None):
        del params
        steps = jax.tree.map(
            lambda g: -learning_rate * jnp.sign(g) * (1 + 2 * (jnp.abs(g) > threshold)), updates
        )
        return steps, state

    return optax.GradientTransformation(lambda p: optax.EmptyState(), update)


def _persistent_gradients(seed: int, steps: int = 120, k: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    g = np.zeros((steps, k))
    g[0] = rng.normal(size=k)
    for t in range(1, steps):
        g[t] = 0.85 * g[t - 1] + 0.5 * rng.normal(size=k)
    return g * 10.0 ** rng.uniform(-3, 0)


@pytest.mark.parametrize("seed", [0, 1])
def test_rprop_like_growth_is_named(seed):
    lr = float(10.0 ** np.random.default_rng(seed).uniform(-3, -1))
    d = interpret.distill(rprop_like(lr), gradients=_persistent_gradients(seed), ablate=False)
    top = max(d.unexplained, key=d.unexplained.get)
    assert top == "agreement run", d.unexplained
    assert d.unexplained[top] > 0.3


@pytest.mark.parametrize("seed", [0, 1])
def test_magnitude_dependence_is_named(seed):
    g = _persistent_gradients(seed)
    threshold = float(np.median(np.abs(g)))
    lr = float(10.0 ** np.random.default_rng(seed).uniform(-3, -1))
    d = interpret.distill(magnitude_step(lr, threshold), gradients=g, ablate=False)
    top = max(d.unexplained, key=d.unexplained.get)
    assert top == "gradient magnitude", d.unexplained
    assert d.unexplained[top] > 0.3


def test_nothing_to_explain_when_the_chain_is_exact():
    g = _persistent_gradients(3)
    d = interpret.distill(optax.sgd(0.01, momentum=0.9), gradients=g, ablate=False)
    assert d.r2 > 0.999
    zeros = dict.fromkeys(interpret.RESIDUAL_FEATURES, 0.0)
    chex.assert_trees_all_close(d.unexplained, zeros)  # the chain's rounding explains nothing
    u = np.asarray(g)
    chex.assert_trees_all_close(interpret.unexplained(g, u, u), zeros)


def test_candidate_features_known_values():
    g = np.array([[1.0], [2.0], [-1.0], [-4.0], [-4.0]])
    f = interpret.candidate_features(g)
    np.testing.assert_allclose(f["sign agreement"][:, 0], [0, 1, 0, -1, -1])
    np.testing.assert_allclose(f["agreement run"][:, 0], [1, 2, -1, -2, -3])
    np.testing.assert_allclose(f["magnitude trend"][:, 0], [0, np.log(2), np.log(2), -np.log(4), 0])


def test_unexplained_names_its_arguments():
    with pytest.raises(ValueError, match="gradients, updates, fitted"):
        interpret.unexplained(np.zeros((3, 2)), np.zeros((3, 2)), np.zeros((3, 3)))


def test_residual_locations_find_an_early_transient():
    """A residual put only in the first tenth of the steps is found there, with its shares."""
    rng = np.random.default_rng(3)
    g = rng.normal(size=(100, 8))
    u = -0.1 * g
    fitted = u.copy()
    fitted[:10] += rng.normal(scale=0.05, size=(10, 8))
    where = interpret.residual_locations(g, u, fitted)
    assert list(where) == list(interpret.RESIDUAL_LOCATIONS)
    share, fraction = where["first 10% of steps"]
    np.testing.assert_allclose([share, fraction], [1.0, 0.1])
    assert where["last half of steps"][0] == 0.0


def test_residual_locations_find_misses_at_large_gradients():
    rng = np.random.default_rng(4)
    g = rng.normal(size=(200, 8))
    u = -0.1 * np.clip(g, -1.0, 1.0)  # clipped: the linear fit misses the large gradients
    fitted = -0.1 * g
    share, fraction = interpret.residual_locations(g, u, fitted)["largest 10% of |g|"]
    assert fraction == pytest.approx(0.1, abs=0.01)
    assert share > 0.6
