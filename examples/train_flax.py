r"""Train a small flax NNX MLP with a learned optimizer through ``nnx.Optimizer``.

The loss goes to the optimizer as ``value=`` (optax's name), which ``nnx.Optimizer.update``
forwards to ``tx.update``. Data: two interleaved half-moons generated in JAX.

  python examples/train_flax.py --optimizer=LearnableAdam --num_steps=300
  python examples/train_flax.py --optimizer=MLPLOpt
  python examples/train_flax.py --load=/path/written/by/optax_lopt.save

``--optimizer`` takes any exported architecture name (see ``optax_lopt.architecture_names()``),
initialised from ``--seed``; ``--load`` takes a directory written by ``optax_lopt.save``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax
from absl import app, flags
from flax import nnx

import optax_lopt

FLAGS = flags.FLAGS


class MLP(nnx.Module):
    """Two tanh hidden layers and a logit output."""

    def __init__(self, hidden: int, *, rngs: nnx.Rngs):
        self.layer1 = nnx.Linear(2, hidden, rngs=rngs)
        self.layer2 = nnx.Linear(hidden, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(jnp.tanh(self.layer2(jnp.tanh(self.layer1(x)))))[..., 0]


def make_moons(key: jax.Array, num_points: int = 512, noise: float = 0.1):
    """Two interleaved half-circles with Gaussian noise; labels 0 and 1."""
    k_angle, k_noise = jax.random.split(key)
    angle = jax.random.uniform(k_angle, (num_points,), maxval=math.pi)
    label = jnp.arange(num_points) % 2
    upper = jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)
    lower = jnp.stack([1.0 - jnp.cos(angle), 0.5 - jnp.sin(angle)], axis=-1)
    x = jnp.where(label[:, None] == 0, upper, lower)
    return x + noise * jax.random.normal(k_noise, x.shape), label.astype(jnp.float32)


def train(tx: optax.GradientTransformation, num_steps: int, seed: int = 0) -> list[float]:
    """Trains the MLP on generated moons with ``tx``; returns the loss at every step."""
    data_key, model_key = jax.random.split(jax.random.key(seed))
    x, y = make_moons(data_key)
    model = MLP(32, rngs=nnx.Rngs(model_key))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        def loss_fn(model):
            return optax.sigmoid_binary_cross_entropy(model(x), y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads, value=loss)
        return loss

    return [float(step(model, optimizer)) for _ in range(num_steps)]


def define_flags() -> None:
    """Defines the command-line flags (only when run as a script, so that importing
    this module in tests or notebooks defines no global absl flags)."""
    flags.DEFINE_string("optimizer", "LearnableAdam", "Architecture class name.")
    flags.DEFINE_string("load", None, "Directory written by optax_lopt.save (overrides).")
    flags.DEFINE_integer("num_steps", 300, "Training steps.")
    flags.DEFINE_integer("seed", 0, "Random seed.")
    flags.DEFINE_integer("print_every", 50, "Print the loss every N steps.")


def main(argv):
    del argv
    if FLAGS.load:
        lopt, theta = optax_lopt.load(FLAGS.load)
    else:
        lopt = optax_lopt.architecture(FLAGS.optimizer)()
        theta = lopt.init(jax.random.key(FLAGS.seed))
    print(f"Training a flax NNX MLP on two moons with {lopt}")
    losses = train(lopt.transform(theta), FLAGS.num_steps, FLAGS.seed)
    for i in range(0, len(losses), FLAGS.print_every):
        print(f"step {i:5d}  loss {losses[i]:.4f}")
    print(f"final loss {losses[-1]:.4f} (initial {losses[0]:.4f})")


if __name__ == "__main__":
    define_flags()
    app.run(main)
