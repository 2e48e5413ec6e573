"""`FactoredMLPLOpt`: a cheap per-parameter MLP learned optimizer for large models.

A tiny MLP (one hidden layer of width 4 by default) runs on every coordinate. Its second-moment
features come from Adafactor-style factored accumulators (a row and a column vector per
matrix), so the state is the momenta plus a sliver: about ``len(momentum_decays)`` times the
parameters. Features and MLP are written as scalar-weight multiply-adds on whole arrays, so
XLA computes them, the MLP and the update in one fused elementwise pass per tensor; this is
what keeps the step within a small multiple of Adam's on models with millions of parameters.

References:
  Metz, Freeman, Harrison, Maheswaranathan, Sohl-Dickstein, "Practical tradeoffs between
  memory, compute, and performance in learned optimizers", arXiv 2203.11860.
  Shazeer, Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
  arXiv 1804.04235.
  Metz et al., "Understanding and correcting pathologies in the training of learned
  optimizers", arXiv 1810.10180.
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
from optax_lopt.base import LearnedOptimizer, MetaParams


class FactoredMLPLOptState(NamedTuple):
    """State of `FactoredMLPLOpt`.

    Attributes:
      count: number of updates taken (int32 scalar).
      momenta: one params-shaped tree per momentum decay.
      factored: one tree per factored decay; each leaf is a `FactoredMoment` (row and column
        means of ``g**2`` for matrices, the full moment for vectors and scalars).
    """

    count: jax.Array
    momenta: tuple[Any, ...]
    factored: tuple[Any, ...]


def _init_factored_tree(params: Any) -> Any:
    return jax.tree.map(F.init_factored, params)


def _update_factored_tree(tree: Any, grads: Any, decay: float) -> Any:
    return jax.tree.map(
        lambda fac, g: F.update_factored(fac, g, decay),
        tree,
        grads,
        is_leaf=lambda x: isinstance(x, F.FactoredMoment),
    )


@dataclasses.dataclass(frozen=True)
class FactoredMLPLOpt(LearnedOptimizer):
    """A width-4 per-parameter MLP on momenta and factored second moments (arXiv 2203.11860).

    Features per coordinate, all scale-free (``s`` is the tensor's root-mean-square gradient,
    read off the factored moment's column vector): ``p / rms(p)``, ``g / s``, bias-corrected
    momenta ``m_k / s`` at ``momentum_decays`` and, for each factored decay, the bias-corrected
    Adafactor estimate ``r = 1/sqrt(v_hat + eps)`` as ``r * s``, ``g * r`` and ``m_k * r``. A
    step embedding enters through the first layer's bias. A ReLU MLP (``hidden_sizes``, default
    one layer of 4) plus a linear skip readout gives direction ``d`` and magnitude ``e``;
    the update is ``-step_mult * d * exp(exp_mult * e)``.

    The skip readout starts as the feature ``m * r`` of the momentum decay nearest 0.9, so an
    untrained optimizer is close to Adafactor with momentum (per-tensor normalised) at
    learning rate ``step_mult``. State: ``len(momentum_decays)`` params-shaped trees plus
    row/column vectors. The loss (``value=``) is not an input and is ignored.

    Args:
      hidden_sizes: widths of the hidden ReLU layers (default ``(4,)``).
      momentum_decays: EMA decays of the momentum features.
      factored_decays: EMA decays of the factored second moments (may be empty).
      step_mult: scale of the update.
      exp_mult: scale of the magnitude in the exponent.
      output_scale: initial scale of the MLP's output layer relative to LeCun-normal.
      spike_clip: the outlier guard, on by default: before anything reads it, each gradient
        entry is clipped to ``spike_clip`` times its running RMS ``sqrt(v_ij)`` (floored by the
        tensor's; ``v`` the bias-corrected factored estimate of the slowest factored decay so
        far; see ``_features.spike_clip``), so a spike neither sets the tensor's RMS ``s`` for
        thousands of steps nor makes the other coordinates' features huge. Gradients within
        ``spike_clip`` running RMSs pass exactly; the first step (no history) is never
        clipped; without factored decays there is no guard. A spike across a whole tensor
        is then scaled to its running RMS norm, as in `MLPLOpt` (``_features.surge_clip``).
        ``None`` turns it off.

    Without ``params`` the parameter feature is zero, as if every parameter were 0. Gradients
    whose tree or leaf shapes are not those of the state (and of ``params``) raise a
    ValueError naming the first mismatching leaf.

    References:
      Metz et al., "Practical tradeoffs between memory, compute, and performance in learned
      optimizers", arXiv 2203.11860.
      Shazeer, Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
      arXiv 1804.04235.
    """

    hidden_sizes: tuple[int, ...] = (4,)
    momentum_decays: tuple[float, ...] = (0.9, 0.99, 0.999)
    factored_decays: tuple[float, ...] = (0.999,)
    step_mult: float = 1e-3
    exp_mult: float = 1e-3
    output_scale: float = 0.1
    spike_clip: float | None = F.SPIKE_CLIP

    def __post_init__(self) -> None:
        F.check_fields(
            self,
            {
                "hidden_sizes": _checks.positive_ints,
                "momentum_decays": _checks.decay_rates,
                "factored_decays": lambda n, v: _checks.decay_rates(n, v, allow_empty=True),
                "step_mult": _checks.positive,
                "exp_mult": _checks.non_negative,
                "output_scale": _checks.non_negative,
                "spike_clip": F.optional(_checks.positive),
            },
        )

    @property
    def num_inputs(self) -> int:
        """Number of per-coordinate features."""
        return F.num_features(len(self.momentum_decays), len(self.factored_decays))

    def init(self, key: chex.PRNGKey) -> MetaParams:
        k_mlp, k_time = jax.random.split(key)
        first = self.hidden_sizes[0] if self.hidden_sizes else 2
        time = F.init_dense(k_time, len(F.DEFAULT_TIMESCALES), first)
        index = F.adam_feature_index(self.momentum_decays, len(self.factored_decays))
        return {
            "mlp": F.init_mlp(k_mlp, self.num_inputs, self.hidden_sizes, 2, self.output_scale),
            "skip": F.init_skip(self.num_inputs, index),
            "time": {"w": time["w"]},
        }

    def transform(self, theta: MetaParams) -> optax.GradientTransformationExtraArgs:
        decays = self.momentum_decays
        fdecays = self.factored_decays

        def init_fn(params):
            return FactoredMLPLOptState(
                count=jnp.zeros((), jnp.int32),
                momenta=F.init_momenta(params, decays),
                factored=tuple(_init_factored_tree(params) for _ in fdecays),
            )

        def update_fn(updates, state, params=None, *, value=None, **extra_args):
            del value, extra_args
            F.check_tree(updates, state.momenta[0], "state")
            if params is not None:
                F.check_tree(updates, params, "params")
            grads = jax.tree.map(_numerics.clean_gradient, updates)
            grads = F.spike_clip_factored(
                grads, state.factored, fdecays, state.count, self.spike_clip
            )
            count = optax.safe_increment(state.count)
            momenta = F.update_momenta(state.momenta, grads, decays)
            factored = tuple(
                _update_factored_tree(tree, grads, d)
                for tree, d in zip(state.factored, fdecays, strict=True)
            )
            time_bias = F.step_embedding(count) @ theta["time"]["w"]

            ps = jax.tree.map(jnp.zeros_like, grads) if params is None else params
            treedef = jax.tree.structure(grads)
            m_leaves = [treedef.flatten_up_to(m) for m in momenta]
            f_leaves = [treedef.flatten_up_to(f) for f in factored]
            m_corr = [F.bias_correction(d, count) for d in decays]
            f_corr = [F.bias_correction(d, count) for d in fdecays]
            features = []
            for i, (g, p) in enumerate(
                zip(treedef.flatten_up_to(grads), treedef.flatten_up_to(ps), strict=True)
            ):
                dtype = m_leaves[0][i].dtype
                ms = [lm[i] * c.astype(dtype) for lm, c in zip(m_leaves, m_corr, strict=True)]
                g = g.astype(dtype)
                p = jnp.asarray(p).astype(dtype)
                facs = [lf[i] for lf in f_leaves]
                rs = [F.factored_rsqrt(f, g.shape, c) for f, c in zip(facs, f_corr, strict=True)]
                if facs:
                    msg = F.factored_mean(facs[0], g.shape, f_corr[0])
                else:
                    msg = F.mean_square(g)
                feats, _ = F.build_features(p, g, ms, rs, msg)
                features.append(feats)
            new_updates = treedef.unflatten(
                F.mlp_updates(features, theta, time_bias, self.step_mult, self.exp_mult)
            )
            reference = updates if params is None else params
            return _numerics.cast_like(new_updates, reference), FactoredMLPLOptState(
                count, momenta, factored
            )

        return optax.GradientTransformationExtraArgs(init_fn, update_fn)
