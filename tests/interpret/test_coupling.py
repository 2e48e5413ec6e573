import jax
import numpy as np
import optax
import pytest

import interpret


def _gradients(key=0, shape=(60, 16)):
    return np.asarray(0.1 * jax.random.normal(jax.random.key(key), shape))


@pytest.mark.parametrize(
    "tx",
    [
        optax.adam(1e-2),
        optax.sgd(0.1, momentum=0.9),
        interpret.adapt_step_by_agreement(optax.sgd(0.1), rate=0.2),
        interpret.adapt_step_by_secant(optax.sgd(0.1), rate=0.5),
    ],
    ids=["adam", "momentum", "agreement per coordinate", "secant per coordinate"],
)
def test_component_wise_optimizers_have_r2_one(tx):
    c = interpret.coupling(tx, _gradients())
    assert c.component_wise and c.r2 == pytest.approx(1.0, abs=1e-6), c
    assert c.num_coordinates == 16


@pytest.mark.parametrize(
    "tx",
    [
        interpret.adapt_step_by_agreement(optax.sgd(0.1), rate=0.2, granularity="tensor"),
        interpret.adapt_step_by_secant(optax.sgd(0.1), rate=0.5, granularity="tensor"),
        optax.chain(optax.clip_by_global_norm(0.05), optax.sgd(0.1)),
    ],
    ids=["agreement per tensor", "secant per tensor", "global-norm clip"],
)
def test_optimizers_that_read_whole_tensors_are_not_component_wise(tx):
    c = interpret.coupling(tx, _gradients())
    assert not c.component_wise and c.r2 < 0.95, c


@pytest.mark.parametrize("shape", [(60,), (1, 8), (60, 1), (4, 5, 6)])
def test_bad_gradients_are_named(shape):
    with pytest.raises(ValueError, match="gradients"):
        interpret.coupling(optax.sgd(0.1), np.ones(shape))
    with pytest.raises(ValueError, match="non-finite"):
        interpret.coupling(optax.sgd(0.1), np.full((5, 3), np.nan))
