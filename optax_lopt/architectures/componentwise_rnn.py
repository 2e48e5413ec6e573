"""The component-wise recurrent learned optimizer of the reverse-engineering paper.

One recurrent cell with shared weights runs independently on every parameter coordinate: its
input is that coordinate's (preprocessed) gradient, its hidden state is that coordinate's
optimizer state, and a linear readout of the hidden state, times a fixed output scale, is the
coordinate's update. This is the optimizer whose mechanisms (momentum, gradient clipping,
learning-rate schedules and adaptation) the paper reverse-engineers, and the one
``interpret`` reads most naturally: its one-coordinate state is exactly the hidden vector.

References:
  Maheswaranathan, Sussillo, Metz, Sun, Sohl-Dickstein, "Reverse engineering learned
  optimizers reveals known and novel mechanisms", arXiv 2011.02159.
  Andrychowicz et al., "Learning to learn by gradient descent by gradient descent",
  arXiv 1606.04474 (coordinate-wise recurrent optimizers).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from optax_lopt import _checks, _numerics
from optax_lopt.architectures import _features as F
from optax_lopt.architectures._cells import CELLS
from optax_lopt.base import LearnedOptimizer, MetaParams

PREPROCESSING = ("raw", "scaled", "log1p-sign")


class ComponentwiseRNNState(NamedTuple):
    """State of `ComponentwiseRNN`.

    Attributes:
      carry: a tuple with one pytree per carried array of the cell (one for GRU and vanilla
        RNN, hidden and cell state for LSTM); each pytree has the params' structure, with
        leaves of shape ``param.shape + (hidden_size,)``.
    """

    carry: tuple[Any, ...]


def _preprocess(g: jax.Array, kind: str, input_scale: float) -> jax.Array:
    """Per-coordinate input features, shape ``g.shape + (num_inputs,)``."""
    if kind == "raw":
        return g[..., None]
    if kind == "scaled":
        return (input_scale * g)[..., None]
    return jnp.stack([jnp.log1p(input_scale * jnp.abs(g)), jnp.sign(g)], axis=-1)


@dataclasses.dataclass(frozen=True)
class ComponentwiseRNN(LearnedOptimizer):
    """A recurrent cell per parameter coordinate, with shared weights (arXiv 2011.02159).

    For each coordinate with gradient ``g`` and hidden state ``h``:
    ``h' = cell(h, preprocess(g))`` and ``update = output_scale * (h' @ W + b)``.
    The readout ``W, b`` is initialised to zero, so an untrained optimizer leaves the
    parameters unchanged; the initial hidden state is learned (``theta["initial_state"]``).
    The loss (``value=``) is not an input of this architecture and is ignored.

    Args:
      hidden_size: units of the recurrent cell (the paper used 256; 32 runs fast on a CPU).
      cell: ``"gru"`` (default, as in the paper), ``"lstm"`` or ``"rnn"`` (vanilla tanh).
      preprocessing: how a gradient becomes the cell's input. ``"raw"``: ``g`` itself;
        ``"scaled"``: ``input_scale * g``; ``"log1p-sign"``: the pair
        ``(log(1 + input_scale * |g|), sign(g))``, which compresses gradients spanning many
        decades.
      input_scale: the factor on the gradient in ``"scaled"`` and ``"log1p-sign"``
        preprocessing (unused by ``"raw"``). With ``"log1p-sign"``, pick it so typical
        gradients times ``input_scale`` are of order one or more: ``log1p`` of a much smaller
        number is nearly zero, which leaves the cell only the sign.
      output_scale: fixed factor on the readout, so readout weights of order one give
        updates of order ``output_scale``.

    Outliers: the hidden state of every cell is bounded (``|h| <= 1``: GRU and vanilla RNN
    states are tanh-bounded averages, an LSTM's output is ``o * tanh(c)``), so however large
    a gradient, no step exceeds ``output_scale * (sum(|W|) + |b|)`` (``theta["readout"]``),
    the architecture's bound; gradients beyond +/- 1e18 enter as +/- 1e18 and non-finite
    entries as 0. How fast the state forgets a spike is the learned cell's own memory; with
    ``"log1p-sign"`` a spike of 1e30 enters as ``log1p(1e18 * input_scale)`` (about 41 at
    scale 1), bounded. There is no other guard, so a meta-trained ``theta`` behaves exactly
    as it was trained.

    ``params`` only sets the updates' dtype (``params=None``: the gradients'); gradients
    whose tree or leaf shapes are not those of the state raise a ValueError naming the first
    mismatching leaf.

    References:
      Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and
      novel mechanisms", arXiv 2011.02159.
    """

    hidden_size: int = 32
    cell: str = "gru"
    preprocessing: str = "raw"
    input_scale: float = 1.0
    output_scale: float = 0.1

    def __post_init__(self) -> None:
        F.check_fields(
            self,
            {
                "hidden_size": _checks.positive_int,
                "cell": lambda n, v: _checks.one_of(n, v, sorted(CELLS)),
                "preprocessing": lambda n, v: _checks.one_of(n, v, PREPROCESSING),
                "input_scale": _checks.positive,
                "output_scale": _checks.positive,
            },
        )

    @property
    def num_inputs(self) -> int:
        """Number of input features per coordinate."""
        return 2 if self.preprocessing == "log1p-sign" else 1

    def init(self, key: chex.PRNGKey) -> MetaParams:
        cell = CELLS[self.cell]
        return {
            "cell": cell.init(key, self.num_inputs, self.hidden_size),
            "initial_state": jnp.zeros((cell.num_carries, self.hidden_size), jnp.float32),
            "readout": {
                "w": jnp.zeros((self.hidden_size,), jnp.float32),
                "b": jnp.zeros((), jnp.float32),
            },
        }

    def transform(self, theta: MetaParams) -> optax.GradientTransformationExtraArgs:
        cell = CELLS[self.cell]
        hidden = self.hidden_size

        def init_fn(params):
            def start(p, k):
                dtype = _numerics.compute_dtype(p.dtype)
                h0 = theta["initial_state"][k].astype(dtype)
                return jnp.broadcast_to(h0, tuple(p.shape) + (hidden,))

            carry = tuple(
                jax.tree.map(lambda p, k=k: start(p, k), params) for k in range(cell.num_carries)
            )
            return ComponentwiseRNNState(carry=carry)

        def leaf_step(g, *carry):
            dtype = carry[0].dtype
            g = _numerics.clean_gradient(g).astype(dtype)
            x = _preprocess(g, self.preprocessing, self.input_scale).reshape(-1, self.num_inputs)
            weights = jax.tree.map(lambda w: w.astype(dtype), theta["cell"])
            flat = tuple(c.reshape(-1, hidden) for c in carry)
            new = cell.step(weights, flat, x)
            readout = new[0] @ theta["readout"]["w"].astype(dtype) + theta["readout"]["b"]
            update = (self.output_scale * readout).reshape(g.shape)
            return (update,) + tuple(
                n.reshape(c.shape).astype(dtype) for n, c in zip(new, carry, strict=True)
            )

        def update_fn(updates, state, params=None, *, value=None, **extra_args):
            del value, extra_args
            F.check_tree(updates, state.carry[0], "state", trailing=1)
            if params is not None:
                F.check_tree(updates, params, "params")
            leaves, treedef = jax.tree.flatten(updates)
            carry_leaves = [treedef.flatten_up_to(c) for c in state.carry]
            outs = [
                leaf_step(g, *c)
                for g, c in zip(leaves, zip(*carry_leaves, strict=True), strict=True)
            ]
            new_updates = treedef.unflatten([o[0] for o in outs])
            carry = tuple(
                treedef.unflatten([o[k + 1] for o in outs]) for k in range(cell.num_carries)
            )
            reference = updates if params is None else params
            return _numerics.cast_like(new_updates, reference), ComponentwiseRNNState(tuple(carry))

        return optax.GradientTransformationExtraArgs(init_fn, update_fn)
