"""The examples' importable functions do what their scripts promise."""

from __future__ import annotations

import os
import sys

import jax

import optax_lopt

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))

import train_flax  # noqa: E402


def test_train_flax_loss_falls_with_a_learned_optimizer():
    lopt = optax_lopt.LearnableAdam(learning_rate=1e-2)
    losses = train_flax.train(lopt.transform(lopt.init(jax.random.key(0))), num_steps=100)
    assert losses[-1] < 0.5 * losses[0]


def test_train_flax_with_untrained_rnn_leaves_loss_unchanged():
    lopt = optax_lopt.ComponentwiseRNN(hidden_size=4)
    losses = train_flax.train(lopt.transform(lopt.init(jax.random.key(0))), num_steps=5)
    assert losses[0] == losses[-1]
