"""Meta-losses: how a truncation's inner losses become one number per inner run.

Every meta-loss works on per-step values ``v_t`` computed from the training loss ``f_t`` at the
params *before* inner update ``t`` (so ``f_0`` is the loss at initialisation), normalised by
the initial training loss ``f_init`` of the current inner trajectory (a constant: no gradient
flows through it; it is floored at ``1e-12``, so the normalised meta-losses assume positive
losses). Values that are not finite, or above ``clip``, count as ``clip``: an inner run that
diverges gives a large but finite meta-loss, and no gradient flows through clipped steps.

- ``"mean_normalized"``: ``mean_t f_t / f_init`` over the unroll: the paper's meta-objective.
- ``"log_mean_normalized"``: ``log`` of that mean (floored at ``1e-12``).
- ``"final"``: ``f_T / f_init`` at the last step of the unroll.
- ``"validation"``: ``mean_t g_t / f_init``, with ``g_t`` the validation loss.

For estimators that split a truncation at a task reset (PES), :meth:`MetaLoss.reduce` takes a
mask of steps; a segment of ``m`` of the ``T`` steps contributes ``sum_mask v / T`` for the mean
losses (the contributions add up to the whole truncation's value), ``(m / T) log(mean_mask v)``
for ``"log_mean_normalized"`` (exact when nothing resets), and the last step's value if the
segment holds it for ``"final"``.

References:
  Metz et al., "Understanding and correcting pathologies in the training of learned
  optimizers", arXiv 1810.10180.
  Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
  mechanisms", arXiv 2011.02159.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

META_LOSS_NAMES = ("mean_normalized", "log_mean_normalized", "final", "validation")
LOSS_CLIP = 1e3
"""The default ``clip`` of every meta-loss (and of the estimators' ``loss_clip``)."""
_FLOOR = 1e-12


@dataclasses.dataclass(frozen=True)
class MetaLoss:
    """A named meta-loss (see the module docstring for the definitions).

    Args:
      name: one of ``META_LOSS_NAMES``.
      clip: per-step normalised values above this, or not finite, count as ``clip``.
    """

    name: str = "mean_normalized"
    clip: float = LOSS_CLIP

    def __post_init__(self) -> None:
        if self.name not in META_LOSS_NAMES:
            raise ValueError(
                f"meta_loss: expected one of {list(META_LOSS_NAMES)}, got {self.name!r}."
            )
        if not self.clip > 0:
            raise ValueError(f"clip: expected a positive number, got {self.clip!r}.")

    @property
    def needs_validation(self) -> bool:
        """Whether the unroll must evaluate the validation loss at every step."""
        return self.name == "validation"

    def step_value(
        self, loss: jax.Array, initial_loss: jax.Array, validation_loss: jax.Array | None = None
    ) -> jax.Array:
        """The clipped, normalised per-step value ``v_t``.

        Args:
          loss: training loss before the update.
          initial_loss: the trajectory's initial training loss (treated as a constant).
          validation_loss: validation loss before the update (``"validation"`` only).

        Returns:
          A finite array of ``loss``'s shape.
        """
        numerator = validation_loss if self.needs_validation else loss
        if numerator is None:
            raise ValueError("validation_loss: the 'validation' meta-loss needs it, got None.")
        denominator = jnp.maximum(jax.lax.stop_gradient(initial_loss), _FLOOR)
        value = numerator / denominator
        ok = jnp.isfinite(value) & (value <= self.clip)
        return jnp.where(ok, value, self.clip)

    def reduce(self, values: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """Reduces per-step values over the leading (time) axis.

        Args:
          values: ``[T, ...]`` per-step values from :meth:`step_value`.
          mask: optional ``[T, ...]`` booleans (broadcastable to ``values``) selecting a
            segment of the truncation.

        Returns:
          ``values.shape[1:]``: the (segment's contribution to the) meta-loss.
        """
        num_steps = values.shape[0]
        if mask is None:
            mask = jnp.ones_like(values, dtype=bool)
        mask = jnp.broadcast_to(mask, values.shape)
        weights = mask.astype(values.dtype)
        if self.name == "final":
            return weights[-1] * values[-1]
        total = jnp.sum(weights * values, axis=0)
        if self.name == "log_mean_normalized":
            count = jnp.sum(weights, axis=0)
            mean = total / jnp.maximum(count, 1.0)
            return (count / num_steps) * jnp.log(jnp.maximum(mean, _FLOOR))
        return total / num_steps


def meta_loss(name: str, clip: float = LOSS_CLIP) -> MetaLoss:
    """Returns the `MetaLoss` called ``name`` (one of ``META_LOSS_NAMES``)."""
    return MetaLoss(name, clip)
