"""The examples' importable functions do what their scripts promise."""

from __future__ import annotations

import jax
from _examples import load_example

import optax_lopt

train_flax = load_example("train_flax")


def test_train_flax_loss_falls_with_a_learned_optimizer():
    lopt = optax_lopt.LearnableAdam(learning_rate=1e-2)
    losses = train_flax.train(lopt.transform(lopt.init(jax.random.key(0))), 100, seed=0)
    assert losses[-1] < 0.5 * losses[0]


def test_train_flax_with_untrained_rnn_leaves_loss_unchanged():
    lopt = optax_lopt.ComponentwiseRNN(hidden_size=4)
    losses = train_flax.train(lopt.transform(lopt.init(jax.random.key(0))), 5, seed=0)
    assert losses[0] == losses[-1]


def test_linen_train_state_idiom_from_readme():
    """README's idiom: call tx.update with value= and replace the TrainState's fields."""
    import flax.linen as nn
    import jax.numpy as jnp
    import optax
    from flax.training import train_state

    model = nn.Dense(1)
    x = jnp.linspace(-1, 1, 16)[:, None]
    y = 3.0 * x
    lopt = optax_lopt.LearnableSGDM(learning_rate=0.5)
    state = train_state.TrainState.create(
        apply_fn=model.apply,
        params=model.init(jax.random.key(0), x),
        tx=lopt.transform(lopt.init(jax.random.key(1))),
    )

    def loss_fn(params):
        return jnp.mean((state.apply_fn(params, x) - y) ** 2)

    first = float(loss_fn(state.params))
    for _ in range(150):
        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params, value=loss)
        state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            opt_state=opt_state,
        )
    assert float(loss_fn(state.params)) < 1e-3 * first
