r"""Train a small flax NNX MLP with a learned optimizer through ``nnx.Optimizer``.

The loss goes to the optimizer as ``value=`` (optax's name), which ``nnx.Optimizer.update``
forwards to ``tx.update``. Data: two interleaved half-moons generated in JAX
(``optax_lopt.tasks.make_moons``).

  python examples/train_flax.py --optimizer=LearnableAdam --num_steps=300
  python examples/train_flax.py --optimizer=MLPLOpt
  python examples/train_flax.py --load=/path/written/by/optax_lopt.save

``--optimizer`` takes any exported architecture name (see ``optax_lopt.architecture_names()``),
initialised from ``--seed``; ``--load`` takes a directory written by ``optax_lopt.save``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from absl import app
from flax import nnx

import optax_lopt
from optax_lopt.meta.config_flags import config_from_flags, define_flags, setting

NUM_POINTS, NOISE, HIDDEN = 512, 0.1, 32
"""The data set (points, noise std) and the MLP's width."""


@dataclasses.dataclass(frozen=True)
class Config:
    """The script's settings; the flags are generated from it."""

    optimizer: str = setting(
        "LearnableAdam", "Architecture class name.", choices=optax_lopt.architecture_names()
    )
    load: str | None = setting(None, "Directory written by optax_lopt.save (overrides).")
    num_steps: int = setting(300, "Training steps.")
    seed: int = setting(0, "Random seed.")
    print_every: int = setting(50, "Print the loss every N steps.")


class MLP(nnx.Module):
    """Two tanh hidden layers and a logit output."""

    def __init__(self, hidden: int, *, rngs: nnx.Rngs):
        self.layer1 = nnx.Linear(2, hidden, rngs=rngs)
        self.layer2 = nnx.Linear(hidden, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(jnp.tanh(self.layer2(jnp.tanh(self.layer1(x)))))[..., 0]


def train(tx: optax.GradientTransformation, num_steps: int, seed: int) -> list[float]:
    """Trains the MLP on generated moons with ``tx``; returns the loss at every step."""
    data_key, model_key = jax.random.split(jax.random.key(seed))
    x, y = optax_lopt.tasks.make_moons(data_key, NUM_POINTS, NOISE)
    model = MLP(HIDDEN, rngs=nnx.Rngs(model_key))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        def loss_fn(model):
            return optax.sigmoid_binary_cross_entropy(model(x), y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads, value=loss)
        return loss

    return [float(step(model, optimizer)) for _ in range(num_steps)]


def main(argv):
    del argv
    config = config_from_flags(Config)
    if config.load:
        lopt, theta = optax_lopt.load(config.load)
    else:
        lopt = optax_lopt.architecture(config.optimizer)()
        theta = lopt.init(jax.random.key(config.seed))
    print(f"Training a flax NNX MLP on two moons with {lopt}")
    losses = train(lopt.transform(theta), config.num_steps, config.seed)
    for i in range(0, len(losses), config.print_every):
        print(f"step {i:5d}  loss {losses[i]:.4f}")
    print(f"final loss {losses[-1]:.4f} (initial {losses[0]:.4f})")


if __name__ == "__main__":
    define_flags(Config)
    app.run(main)
